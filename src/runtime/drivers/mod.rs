//! `canx-core` protocol engines wrapped as [`Driven`](super::Driven) engines:
//! the bus's receive thread feeds them frames and timeouts and sends what
//! they produce; finished events go to a bounded [`EventQueue`](super::EventQueue)
//! that the application (the Python binding) drains.
//!
//! Each driver adds what a sans-IO engine with fixed capacities lacks on a
//! PC: a bounded queue in front of the engine (messages waiting for a free
//! engine slot), back-pressure against the application's event queue, and
//! owned event values (bodies copied out of the engine's buffers).

pub mod canx_proto;
pub mod megasquirt;
pub mod reliable;

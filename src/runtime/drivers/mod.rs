//! Engines the bus's receive thread drives ([`Driven`](super::Driven)):
//! `canx-core` protocol engines wrapped for the runtime, and the runtime's
//! own timer engine (`periodic`, python-can's `send_periodic`).
//!
//! A protocol driver adds what a sans-IO engine with fixed capacities lacks
//! on a PC: a bounded queue in front of the engine (messages waiting for a
//! free engine slot), back-pressure against the application's event queue,
//! and owned event values (bodies copied out of the engine's buffers);
//! finished events go to a bounded [`EventQueue`](super::EventQueue) that the
//! application (the Python binding) drains. What every engine needs lives
//! once in [`host`] (`Hosted<E, Adapter>`, one `Driven` impl); reliable
//! delivery and CAN-X are hosted, J1939 and MegaSquirt still implement
//! `Driven` by hand.

pub mod canx_proto;
pub mod host;
pub mod isotp;
pub mod j1939;
pub mod megasquirt;
pub mod periodic;
pub mod reliable;

pub use periodic::{Periodic, PeriodicTask};

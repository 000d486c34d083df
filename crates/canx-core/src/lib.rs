//! # canx-core
//!
//! The portable heart of canx: CAN frames, filters, time, and the sans-IO
//! protocol engines. `#![no_std]`, no heap, no `unsafe`, no clock reads and no
//! I/O, so the very same code runs behind the Python package on a PC and on a
//! Cortex-M or RISC-V microcontroller through the `embedded-can` traits.
//!
//! ## Layers (each may depend only on those above it)
//! - [`time`]: [`Instant`]/[`Duration`] in microseconds, supplied by the driver.
//! - [`frame`]: classic, FD and error frames over `embedded_can::Id`.
//! - [`filter`]: acceptance filters with Linux raw-socket semantics, canio
//!   `Match`, candump filter syntax.
//! - [`canx_proto`]: CAN-X (easyIPC over CAN 2.0B): identifier codec,
//!   envelope sender and reassembling receiver (`docs/protocols/can-x.md`).
//! - [`reliable`]: reliable delivery (ACK, timeout, retry): the canio guide's
//!   sender-ack/listener-ack protocol byte for byte, and a general mode with
//!   sequence numbers, duplicate suppression and backoff.
//! - [`megasquirt`]: MegaSquirt CAN: header codec, table server, client, broadcast decoders.
//! - [`j1939`]: SAE J1939 engines (TP/ETP, address claim, requests, DM1, codecs, `Ecu`).
//! - [`gs_usb`]: the gs_usb (candleLight) USB protocol codec and Linux's
//!   bit-timing calculation over a controller's limits.
//! - [`slcan`]: the slcan (Lawicel serial-line CAN) line codec and dialects.
//! - [`isotp`]: ISO-TP (ISO 15765-2): N_PCI codec, addressing, `Channel` (one N_AI's sender and receiver).
//! - [`log`]: candump `.log` lines and can-utils frame text (`cansend` syntax).
//! - [`driver`]: pumps any set of engines over an `embedded_can` controller
//!   (`nb` or `blocking`) with a caller-supplied clock, plus an in-memory bus.
//! - the protocol engines ([`canx_proto`], [`reliable`], [`megasquirt`], [`isotp`],
//!   [`j1939`]) are state machines with `handle_frame(now, &frame)`,
//!   `handle_timeout(now)`, `poll_transmit(now)`, `poll_event()` and
//!   `poll_timeout() -> Option<Instant>`.
//!
//! ## Features
//! - `std` (off by default, implies `alloc`): conversions to
//!   `std::time::Duration`. The engines never need it; the runtime crate
//!   turns it on.
//! - `alloc` (off by default): [`managed::ManagedSlice`] can also own a
//!   `Box<[T]>`, so an engine with large buffers (J1939 ETP) can be held
//!   without a borrow. Without it every buffer is borrowed and the crate
//!   never touches a heap.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod canx_proto;
pub mod driver;
pub mod filter;
pub mod frame;
pub mod gs_usb;
pub mod isotp;
pub mod j1939;
pub mod log;
pub mod managed;
pub mod megasquirt;
pub mod reliable;
mod ring;
pub mod slcan;
#[cfg(test)]
mod test_support;
pub mod time;

pub use filter::{Filter, FilterError, FilterItem, FilterSet};
pub use frame::{BusState, CanFrame, ErrorFrame, ExtendedId, FdFrame, Frame, FrameError, Id, StandardId};
pub use time::{Duration, Instant};

//! SAE J1939: identifiers, NAME, transport protocol, address claim,
//! requests, diagnostics and typed codecs, as sans-IO engines.
//!
//! Sources: J1939-21 (data link: identifier, request, acknowledgment, TP),
//! J1939-81 (network management: NAME, address claim), J1939-73 (DM1..DM11),
//! J1939-71 (EEC1, ET1, VIN), and the Linux kernel stack (`net/can/j1939/`),
//! whose wire behaviour wins where summaries differ (see each module).
//!
//! ## Modules
//! - [`id`]: [`Pgn`] and the 29-bit identifier codec [`J1939Id`].
//! - [`name`]: the 64-bit [`Name`].
//! - [`transport`]: TP (BAM and RTS/CTS, 9..1785 bytes), many sessions at once.
//! - [`etp`]: extended TP (1786 bytes up to caller-provided buffer sizes,
//!   destination-specific, with DPO).
//! - [`address_claim`]: J1939-81 claim, contention, Cannot Claim, Commanded
//!   Address and the live NAME <-> address table.
//! - [`request`]: Request (PGN 59904) and Acknowledgment (PGN 59392) codecs.
//! - [`ecu`]: [`Ecu`], one controller application (address claim + requests
//!   + transport for one NAME); several may share a bus.
//! - [`dm`] and [`codecs`]: DM1/DM2 codec, EEC1, ET1, VIN.
//!
//! Every engine follows the crate's shape: `handle_frame(now, &frame)`,
//! `handle_timeout(now)`, `poll_transmit(now)`, `poll_event()`,
//! `poll_timeout()`. Queues are bounded and count what they drop. Engines
//! take every bus frame and ignore what is not theirs; do not feed an
//! engine its own transmitted frames back (loopback echoes).
//!
//! ## Reassembled data
//! Events are small `Copy` values. A completed TP/ETP reception is an event
//! with a [`SessionHandle`] and the metadata (PGN, SA, DA, priority,
//! length); its bytes stay in the session buffer and are read with
//! `received_data(handle)` until the next `poll_event()` call.
//!
//! ## Example: two ECUs, a request answered by BAM
//! ```
//! use canx_core::j1939::{Ecu, EcuConfig, EcuEvent, Name, Pgn, Responder};
//! use canx_core::{Frame, Instant};
//!
//! let mut engine: Ecu<'_, 4> = Ecu::new(EcuConfig::new(Name::from_u64(10), 0x00)).unwrap();
//! let mut tool: Ecu<'_, 4> = Ecu::new(EcuConfig::new(Name::from_u64(20), 0xF9)).unwrap();
//! engine.register(Pgn::VEHICLE_IDENTIFICATION, Responder::Data(b"1M8GDM9AXKP042788*")).unwrap();
//! let mut now = Instant::ZERO;
//! engine.start(now);
//! tool.start(now);
//! let mut vin = None;
//! for step in 0..200 {
//!     // A two-node "bus": everything one sends, the other receives.
//!     while let Some(f) = engine.poll_transmit(now) { tool.handle_frame(now, &Frame::Can(f)); }
//!     while let Some(f) = tool.poll_transmit(now) { engine.handle_frame(now, &Frame::Can(f)); }
//!     while let Some(ev) = tool.poll_event() {
//!         if let EcuEvent::Received(r) = ev {
//!             vin = tool.received_data(r.handle).map(|d| d.to_vec());
//!         }
//!     }
//!     while engine.poll_event().is_some() {}
//!     if step == 30 {  // after the 250 ms claim wait
//!         tool.request(now, Pgn::VEHICLE_IDENTIFICATION, 0xFF).unwrap(); // global: BAM
//!     }
//!     now = now + canx_core::Duration::from_millis(10);
//!     engine.handle_timeout(now);
//!     tool.handle_timeout(now);
//! }
//! assert_eq!(vin.as_deref(), Some(&b"1M8GDM9AXKP042788*"[..]));
//! ```

pub mod address_claim;
pub mod codecs;
pub mod dm;
pub mod ecu;
pub mod etp;
pub mod id;
pub mod name;
pub mod request;
pub mod transport;

#[doc(hidden)]
pub mod fuzz;

#[cfg(test)]
mod sim_tests;

pub(crate) use crate::ring::Ring;
pub use address_claim::{AddressClaimer, AddressTable, ClaimConfig, ClaimEvent, ClaimState, TableEvent, FULL_TABLE};
pub use ecu::{Ecu, EcuConfig, EcuError, EcuEvent, RequestOutcome, Responder};
pub use etp::{Etp, EtpConfig};
pub use id::{IdError, J1939Id, Pgn, DEFAULT_PRIORITY, GLOBAL_ADDRESS, NULL_ADDRESS};
pub use name::{Name, NameError, NameFields};
pub use transport::{AbortReason, SessionHandle, Transport, TransportConfig, TransportEvent, Turnaround};

/// xorshift32: the engines' deterministic pseudo-random source, seeded by
/// the caller (never 0).
#[derive(Clone, Copy, Debug)]
pub(crate) struct XorShift32(u32);

impl XorShift32 {
    pub(crate) const fn new(seed: u32) -> Self {
        XorShift32(if seed == 0 { 0x9E37_79B9 } else { seed })
    }
    pub(crate) fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }
}

//! The native runtime: backends (SocketCAN, virtual bus: [`backend`]), one
//! receive thread per bus, bounded listener queues. No Python here;
//! `crate::py` binds it.
//!
//! Frame flow: backend `recv_batch` (a `recvmmsg` batch from the kernel, or a
//! batch from the virtual channel's inbox) -> receive thread updates
//! statistics and bus state -> every listener whose [`ListenerFilter`]
//! accepts the frame gets it in its bounded queue (full queue: the frame is
//! dropped and counted) -> the Python side pops from the queue with the GIL
//! released.

pub mod backend;
pub mod bus;
pub mod drivers;
pub mod engine;
pub mod events;
pub mod faults;
pub mod listener;
pub mod queue;

#[cfg(target_os = "linux")]
pub use backend::{bcm, socketcan};
pub use backend::{udp_multicast, virtual_bus};

use std::fmt;

pub use backend::{
    available_channel_details, available_channels, Backend, BusConfig, Capabilities, Channel, PeerHints, PeriodicSender,
};
pub use bus::{Bus, BusStats, StateInfo};
pub use engine::{Clock, Driven, EngineHandle, EngineRef, ManualClock};
pub use events::EventQueue;
pub use faults::{Direction, FaultAction, FaultCounts, FaultMatch, RuleStatus};
pub use listener::{DropPolicy, Listener, ListenerFilter, Notify};

use canx_core::Frame;

/// Where a received frame comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Another node on the bus.
    Bus,
    /// Another socket on this host sent it (SocketCAN marks these with
    /// `MSG_DONTROUTE`: a vcan peer, a kernel ISO-TP socket, another
    /// process). Everything but engine timing treats it as [`Origin::Bus`].
    Host,
    /// This bus's own socket sent it (loopback / own-message receive, or an
    /// injected error frame).
    Own,
    /// Another engine attached to this bus sent it: the runtime's local echo
    /// (engines only; listeners never see these).
    Sibling,
}

/// A received frame with its metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RxFrame {
    pub frame: Frame,
    /// Receive time, seconds since the Unix epoch (kernel `SO_TIMESTAMPNS` on
    /// SocketCAN, the sender's clock on the virtual bus, the send time for
    /// [`Origin::Sibling`]).
    pub timestamp: f64,
    /// Who sent it.
    pub origin: Origin,
}

impl RxFrame {
    /// `true` if this bus's socket sent the frame (loopback / own-message
    /// receive): python-can's `is_rx == False`, canio's own message.
    pub fn own(&self) -> bool {
        self.origin == Origin::Own
    }
}

/// Errors of the runtime. Mapped to Python exceptions in one place:
/// `crate::py::errors`.
#[derive(Debug)]
pub enum Error {
    /// The channel name or interface is not understood.
    BadChannel(String),
    /// The operating system refused (no such device, no permission, no CAN
    /// support in the kernel...). `context` says what was being done.
    Os { context: String, source: std::io::Error },
    /// The interface went down or away.
    InterfaceDown(String),
    /// The controller is bus-off and auto_restart is off.
    BusOff,
    /// The bus is in listen-only mode.
    Silent,
    /// The transmit queue stayed full for the whole send timeout.
    SendTimeout,
    /// The frame cannot go on this bus (an FD frame on a classic socket).
    Unsupported(String),
    /// The bus was shut down.
    Closed,
    /// The receive thread stopped after repeated backend errors (the last
    /// one's text): the bus neither receives nor drives its engines any more.
    ReceiveThreadStopped(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadChannel(s) => write!(f, "{s}"),
            Error::Os { context, source } => write!(f, "{context}: {source}"),
            Error::InterfaceDown(s) => write!(f, "interface {s} is down"),
            Error::BusOff => f.write_str("the bus is off (BUS_OFF); call restart() or use auto_restart=True"),
            Error::Silent => f.write_str("the bus is silent (listen-only): sending is disabled"),
            Error::SendTimeout => f.write_str("send timed out: the transmit queue stayed full"),
            Error::Unsupported(s) => write!(f, "{s}"),
            Error::Closed => f.write_str("the bus has been shut down"),
            Error::ReceiveThreadStopped(s) => {
                write!(f, "the receive thread stopped after repeated backend errors ({s}); open the bus again")
            }
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Seconds since the Unix epoch, now.
pub fn epoch_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod stress_tests;

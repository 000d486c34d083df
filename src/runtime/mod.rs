//! The native runtime: backends (SocketCAN, virtual bus), one receive thread
//! per bus, bounded listener queues. No Python here; `crate::py` binds it.
//!
//! Frame flow: backend `recv_batch` (a `recvmmsg` batch from the kernel, or a
//! batch from the virtual channel's inbox) -> receive thread updates
//! statistics and bus state -> every listener whose [`ListenerFilter`]
//! accepts the frame gets it in its bounded queue (full queue: the frame is
//! dropped and counted) -> the Python side pops from the queue with the GIL
//! released.

pub mod bcm;
pub mod bus;
pub mod drivers;
pub mod engine;
pub mod events;
pub mod listener;
pub mod socketcan;
pub mod virtual_bus;

use std::fmt;

pub use bus::{Bus, BusConfig, BusStats, StateInfo};
pub use engine::{Driven, EngineHandle, EngineRef};
pub use events::EventQueue;
pub use listener::{DropPolicy, Listener, ListenerFilter, Notify};

use canx_core::Frame;

/// A received frame with its metadata.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RxFrame {
    pub frame: Frame,
    /// Receive time, seconds since the Unix epoch (kernel `SO_TIMESTAMPNS` on
    /// SocketCAN, the sender's clock on the virtual bus).
    pub timestamp: f64,
    /// `true` if this node sent the frame (loopback / own-message receive).
    pub own: bool,
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

/// Where a bus goes: parsed from `channel=` and `interface=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    SocketCan(String),
    Virtual(String),
}

impl Target {
    /// `channel`: `"vcan0"`, `"can0"` (SocketCAN), `"virtual:name"` (virtual);
    /// `interface`: `None`, `"socketcan"` or `"virtual"`.
    pub fn parse(channel: &str, interface: Option<&str>) -> Result<Target> {
        let (iface, name) = match channel.split_once(':') {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, channel),
        };
        let kind = match (interface, iface) {
            (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => {
                return Err(Error::BadChannel(format!(
                    "channel {channel:?} names interface {b:?} but interface={a:?} was given"
                )))
            }
            (Some(a), _) | (None, Some(a)) => a.to_ascii_lowercase(),
            (None, None) => "socketcan".to_string(),
        };
        if name.is_empty() {
            return Err(Error::BadChannel(format!("empty channel name in {channel:?}")));
        }
        match kind.as_str() {
            "socketcan" => {
                if name.len() >= libc::IFNAMSIZ || name.contains('/') || name.contains(char::is_whitespace) {
                    return Err(Error::BadChannel(format!("{name:?} is not a network interface name")));
                }
                Ok(Target::SocketCan(name.to_string()))
            }
            "virtual" => Ok(Target::Virtual(name.to_string())),
            other => {
                Err(Error::BadChannel(format!("unknown interface {other:?}: canx knows \"socketcan\" and \"virtual\"")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parse() {
        assert_eq!(Target::parse("vcan0", None).unwrap(), Target::SocketCan("vcan0".into()));
        assert_eq!(Target::parse("virtual:x", None).unwrap(), Target::Virtual("x".into()));
        assert_eq!(Target::parse("x", Some("virtual")).unwrap(), Target::Virtual("x".into()));
        assert!(Target::parse("virtual:x", Some("socketcan")).is_err());
        assert!(Target::parse("pcan:x", None).is_err());
        assert!(Target::parse("virtual:", None).is_err());
        assert!(Target::parse("averyveryverylongname", None).is_err());
    }
}

#[cfg(test)]
mod runtime_tests;

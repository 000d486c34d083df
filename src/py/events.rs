//! The events of the native protocol engines as Python sees them: frozen
//! classes with named fields (`canx._canx.*Event`), one per event kind,
//! instead of positional tuples. The Python modules (`canx.reliable`,
//! `canx.canxproto`, `canx.j1939`, `canx.megasquirt`) turn them into their
//! public classes by field name, so a field order can no longer drift
//! silently; `_canx.pyi` types every field and stubtest checks it.
//!
//! Each class is immutable, compares equal field by field, has a
//! `repr` like a dataclass, `__match_args__` for `match`, and a class
//! attribute `kind` (the tag of the tuples they replace).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

/// Payload bytes of an event: `bytes` in Python.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data(pub Vec<u8>);

impl<'py> IntoPyObject<'py> for &Data {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;
    fn into_pyobject(self, py: Python<'py>) -> Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}

macro_rules! event_class {
    ($(#[$doc:meta])* $name:ident = $kind:literal { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[pyclass(frozen, get_all, eq, module = "canx._canx")]
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $(pub $field: $ty,)*
        }

        #[pymethods]
        impl $name {
            /// The event's kind, as the tuples of earlier versions named it.
            #[classattr]
            fn kind() -> &'static str {
                $kind
            }

            #[classattr]
            fn __match_args__(py: Python<'_>) -> PyResult<Bound<'_, PyTuple>> {
                PyTuple::new(py, [$(stringify!($field)),*] as [&str; _])
            }

            #[allow(unused_variables)]
            fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
                #[allow(unused_mut)]
                let mut parts: Vec<String> = Vec::new();
                $(parts.push(format!("{}={}", stringify!($field), slf.getattr(stringify!($field))?.repr()?));)*
                Ok(format!("{}({})", stringify!($name), parts.join(", ")))
            }
        }
    };
}

// --- reliable delivery (canx.reliable)

event_class!(
    /// A reliable or guide send finished: `delivered` after `tries` frames;
    /// `count` is the guide counter (0 for a reliable sender).
    ReliableOutcomeEvent = "outcome" { ticket: u64, delivered: bool, tries: u32, count: u32 }
);
event_class!(
    /// A reliable message received (in order, once): data id, sequence number,
    /// payload, receive time (s since the epoch).
    ReliableMessageEvent = "message" { id: u32, extended: bool, seq: u8, data: Data, timestamp: f64 }
);
event_class!(
    /// A guide message received: its counter and sender time (ms).
    GuideMessageEvent = "guide" { count: u32, now_ms: u32, timestamp: f64 }
);
event_class!(
    /// A frame on a protocol id that the receiver could not use, and why.
    MalformedEvent = "malformed" { id: u32, extended: bool, reason: String }
);

// --- CAN-X (canx.canxproto)

event_class!(
    /// A complete CAN-X message: direction bit (0 to the device, 1 from it),
    /// device, stream, priority, message id, body, receive time.
    CanxMessageEvent = "message" { direction: u8, device: u8, stream: u16, priority: u8, msg_id: u8, body: Data, timestamp: f64 }
);
event_class!(
    /// A CAN-X receive error: the key, the envelope's msg_id (None for a
    /// stray frame), the reason's name and a readable text.
    CanxErrorEvent = "error" { direction: u8, device: u8, stream: u16, msg_id: Option<u8>, reason: String, text: String }
);

// --- J1939 (canx.j1939)

event_class!(
    /// A J1939 message (single frame, TP or ETP, given by `via`).
    J1939MessageEvent = "message" {
        pgn: u32,
        source: u8,
        destination: u8,
        priority: u8,
        data: Data,
        timestamp: f64,
        via: &'static str,
    }
);
event_class!(
    /// A Request (PGN 59904) for a PGN without a registered response.
    J1939RequestEvent = "request" { pgn: u32, requester: u8, is_global: bool, timestamp: f64 }
);
event_class!(
    /// A Request this ECU sent ended: `outcome` is "answered", "ack",
    /// "aborted" or "timeout"; `code` the Acknowledgment control or abort
    /// reason; `data` the answer of a single-frame reply.
    J1939RequestDoneEvent = "request_done" {
        pgn: u32,
        destination: u8,
        outcome: &'static str,
        code: u8,
        source: u8,
        data: Option<Data>,
    }
);
event_class!(
    /// This ECU claimed `address`.
    J1939ClaimedEvent = "claimed" { address: u8 }
);
event_class!(
    /// This ECU lost `address` to the NAME `winner`.
    J1939LostEvent = "lost" { address: u8, winner: u64 }
);
event_class!(
    /// This ECU could not claim any address.
    J1939CannotClaimEvent = "cannot_claim" {}
);
event_class!(
    /// A send this ECU made finished (`size` bytes).
    J1939SentEvent = "sent" { pgn: u32, destination: u8, size: u32 }
);
event_class!(
    /// A TP/ETP session ended with Connection Abort (J1939-21 reason code).
    J1939AbortedEvent = "aborted" { pgn: u32, source: u8, destination: u8, reason: u8, by_peer: bool, transmit: bool }
);

// --- MegaSquirt server (canx.megasquirt)

event_class!(
    /// A table write (MSG_CMD, MSG_RSP or MSG_BURNACK) from node `from_id`.
    MegasquirtWriteEvent = "write" { from_id: u8, msg: &'static str, var_blk: u8, var_offset: u16, data: Data }
);
event_class!(
    /// MSG_BURN for table `var_blk`.
    MegasquirtBurnEvent = "burn" { from_id: u8, msg: &'static str, var_blk: u8 }
);
event_class!(
    /// MSG_XSUB for table `var_blk` at `var_offset`.
    MegasquirtXsubEvent = "xsub" { from_id: u8, msg: &'static str, var_blk: u8, var_offset: u16 }
);
event_class!(
    /// MSG_SPND: suspend (True) or resume.
    MegasquirtSuspendEvent = "suspend" { from_id: u8, msg: &'static str, suspend: bool }
);
event_class!(
    /// MSG_FWD: bytes to forward.
    MegasquirtForwardEvent = "forward" { from_id: u8, msg: &'static str, data: Data }
);
event_class!(
    /// A message type the server does not handle.
    MegasquirtUnhandledEvent = "unhandled" { from_id: u8, msg: &'static str, var_blk: u8, var_offset: u16, data: Data }
);
event_class!(
    /// A request the server refused, and why.
    MegasquirtRefusedEvent = "refused" { from_id: u8, msg: &'static str, var_blk: u8, var_offset: u16, reason: String }
);

// --- ISO-TP (canx.isotp)

event_class!(
    /// An ISO-TP message received (N_USData.indication with N_OK, ISO
    /// 15765-2:2016 §8.2): its bytes, whether it came functionally
    /// addressed (N_TAtype), the time its last frame arrived (s since the epoch).
    IsotpMessageEvent = "message" { data: Data, functional: bool, timestamp: f64 }
);
event_class!(
    /// An ISO-TP error: `direction` "tx" (a send failed, `ticket` names it)
    /// or "rx"; `n_result` the standard's name (`"N_TIMEOUT_Bs"`, ...) or
    /// None for an N_PDU ignored by Table 23, whose kind (`"SF"`, `"FF"`,
    /// `"CF"`, `"FC"`) `pdu` gives (for N_UNEXP_PDU: the N_PDU that
    /// interrupted the reception).
    IsotpErrorEvent = "error" {
        direction: &'static str,
        n_result: Option<&'static str>,
        pdu: Option<&'static str>,
        ticket: Option<u64>,
        functional: bool,
        timestamp: f64,
    }
);

/// Adds every event class to `canx._canx`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ReliableOutcomeEvent>()?;
    m.add_class::<ReliableMessageEvent>()?;
    m.add_class::<GuideMessageEvent>()?;
    m.add_class::<MalformedEvent>()?;
    m.add_class::<CanxMessageEvent>()?;
    m.add_class::<CanxErrorEvent>()?;
    m.add_class::<J1939MessageEvent>()?;
    m.add_class::<J1939RequestEvent>()?;
    m.add_class::<J1939RequestDoneEvent>()?;
    m.add_class::<J1939ClaimedEvent>()?;
    m.add_class::<J1939LostEvent>()?;
    m.add_class::<J1939CannotClaimEvent>()?;
    m.add_class::<J1939SentEvent>()?;
    m.add_class::<J1939AbortedEvent>()?;
    m.add_class::<MegasquirtWriteEvent>()?;
    m.add_class::<MegasquirtBurnEvent>()?;
    m.add_class::<MegasquirtXsubEvent>()?;
    m.add_class::<MegasquirtSuspendEvent>()?;
    m.add_class::<MegasquirtForwardEvent>()?;
    m.add_class::<MegasquirtUnhandledEvent>()?;
    m.add_class::<MegasquirtRefusedEvent>()?;
    m.add_class::<IsotpMessageEvent>()?;
    m.add_class::<IsotpErrorEvent>()?;
    Ok(())
}

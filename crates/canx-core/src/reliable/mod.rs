//! Reliable delivery over CAN: acknowledgement, timeout and retry, sans-IO.
//!
//! Two modes:
//!
//! - [`compat`]: the "sender-ack" / "listener-ack" programs of the Adafruit
//!   Learn guide "Using canio with CircuitPython", page "Reliable
//!   transmission" (`FeatherCAN_CircuitPython/{sender,listener}-ack/code.py`
//!   in `adafruit/Adafruit_Learning_System_Guides`), byte for byte, so either
//!   engine interoperates with the unmodified programs.
//! - [`general`]: engine-managed sequence numbers, duplicate suppression,
//!   configurable data id -> ACK id mapping, timeout with backoff, a retry
//!   limit, several messages in flight to different peers, and an outcome
//!   event per message.
//!
//! ## General mode wire format (canx's own design)
//!
//! | frame | identifier | data |
//! | --- | --- | --- |
//! | data | the data id (standard or extended, chosen per message) | `[seq, payload 0..=7 bytes]` |
//! | ACK | [`AckMapping`] of the data id | `[0xAC, seq]` (exactly 2 bytes) |
//!
//! `seq` is a `u8` counted per data id by the sender (+1 mod 256 per new
//! message, the same `seq` on every resend). A sender has at most one message
//! in flight per data id (stop-and-wait per peer). The receiver remembers the
//! last [`RECENT`] (4) `seq` values it delivered per data id: a frame whose
//! `seq` is among them is a duplicate (a resend, or a late copy): dropped,
//! counted, and still ACKed. Anything else is delivered once and ACKed.
//! With a [`AckMapping::Fixed`] id the ACK does not name the data id, so a
//! sender refuses a message whose (ACK id, seq) equals one in flight.
//!
//! Limits, stated plainly: a sender that restarts its counters and lands on
//! one of the last 4 `seq` values of the receiver's record loses that message
//! (ACKed, not delivered); start senders at a varying
//! [`general::ReliableSenderConfig::initial_seq`] to make that unlikely. A
//! receiver that forgot a data id (peer table full: least recently used
//! entry evicted, or a restart) delivers a late duplicate again.

use core::fmt;

use crate::frame::{make_id, Id};
use crate::time::Duration;

pub mod compat;
pub mod fuzzing;
pub mod general;
#[cfg(test)]
mod tests;

pub use compat::{CompatEvent, CompatListener, CompatListenerConfig, CompatSender, CompatSenderConfig};
pub use general::{ReliableEvent, ReliableReceiver, ReliableReceiverConfig, ReliableSender, ReliableSenderConfig};

/// First byte of a general-mode ACK.
pub const ACK_MARKER: u8 = 0xAC;
/// Largest payload of a general-mode data frame, bytes (byte 0 is `seq`).
pub const MAX_PAYLOAD: usize = 7;

/// Which identifier carries the ACK of a data identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMapping {
    /// Data id + n, same kind (the canio guide uses 0x408 -> 0x409: `Offset(1)`).
    Offset(u32),
    /// One fixed identifier for every ACK.
    Fixed(Id),
}

impl AckMapping {
    /// The ACK id for `data`; `None` when data id + n does not fit the kind.
    pub fn ack_id(&self, data: Id) -> Option<Id> {
        match *self {
            AckMapping::Fixed(id) => Some(id),
            AckMapping::Offset(n) => {
                let (raw, ext) = match data {
                    Id::Standard(s) => (u32::from(s.as_raw()), false),
                    Id::Extended(e) => (e.as_raw(), true),
                };
                make_id(raw.checked_add(n)?, ext).ok()
            }
        }
    }
}

impl Default for AckMapping {
    fn default() -> Self {
        AckMapping::Offset(1)
    }
}

/// Opaque handle of one message given to a sender; outcome events carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Handle(pub u32);

/// How long to wait for an ACK and how often to try (general and compat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait this long for the ACK after the first transmission.
    pub timeout: Duration,
    /// Resends after the first transmission; `None` = forever (as the guide).
    pub retries: Option<u32>,
    /// Each resend waits `multiplier` times longer than the previous one
    /// (1 = fixed timeout, as the guide).
    pub multiplier: u32,
    /// Upper bound of the wait after backoff.
    pub max_timeout: Duration,
}

impl RetryPolicy {
    /// The wait after transmission number `tries` (1 = first).
    pub fn timeout_for(&self, tries: u32) -> Duration {
        let mut t = self.timeout;
        for _ in 1..tries {
            if t >= self.max_timeout {
                break;
            }
            t = t.saturating_mul(self.multiplier.max(1));
        }
        if t > self.max_timeout {
            self.max_timeout.max(self.timeout)
        } else {
            t
        }
    }

    /// `true` when a message sent `tries` times may be sent once more.
    pub fn may_resend(&self, tries: u32) -> bool {
        self.retries.is_none_or(|r| tries <= r)
    }
}

impl Default for RetryPolicy {
    /// 100 ms, 3 resends, doubling, at most 1 s.
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_millis(100),
            retries: Some(3),
            multiplier: 2,
            max_timeout: Duration::from_secs(1),
        }
    }
}

/// Counters of a reliable-delivery engine; a sender fills the first group, a
/// receiver the second. They only grow (wrapping at `u32::MAX`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Sender: first transmissions.
    pub sent: u32,
    /// Sender: retransmissions.
    pub resent: u32,
    /// Sender: messages acknowledged.
    pub acknowledged: u32,
    /// Sender: messages given up after the retry limit.
    pub failed: u32,
    /// Sender: ACKs that matched nothing in flight (late, duplicated or for
    /// another node).
    pub stale_acks: u32,
    /// Receiver: messages delivered to the application.
    pub delivered: u32,
    /// Receiver: duplicates (resends already delivered) dropped, still ACKed.
    pub duplicates_dropped: u32,
    /// Receiver: ACK frames handed out by `poll_transmit`.
    pub ack_sent: u32,
    /// Receiver: frames dropped unACKed because the event or ACK queue was
    /// full (the sender will resend them).
    pub dropped_no_room: u32,
    /// Receiver: peers forgotten to make room in the peer table.
    pub peers_evicted: u32,
    /// Both: malformed frames on an id this engine owns (reported as events).
    pub malformed: u32,
}

/// Why a send was refused (a caller error; nothing was queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// More than 7 payload bytes (general mode).
    PayloadTooLong,
    /// All in-flight slots are busy (poll events to free finished ones).
    NoFreeSlot,
    /// A message to this data id is already in flight.
    PeerBusy,
    /// The sequence table holds `PEERS` other data ids.
    PeerTableFull,
    /// The ACK mapping gives no valid identifier for this data id.
    NoAckId,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::PayloadTooLong => "payload longer than 7 bytes",
            SendError::NoFreeSlot => "no free in-flight slot",
            SendError::PeerBusy => "a message to this id is already in flight",
            SendError::PeerTableFull => "sequence table full",
            SendError::NoAckId => "the ACK mapping gives no valid id for this data id",
        })
    }
}

impl core::error::Error for SendError {}

/// Why a received frame was rejected (untrusted input; reported as an event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameFault {
    /// Data frame with a length the format does not allow (`len` bytes).
    BadLength { len: u8 },
    /// ACK whose first byte is not [`ACK_MARKER`].
    BadMarker { byte: u8 },
}

impl fmt::Display for FrameFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameFault::BadLength { len } => write!(f, "unexpected data length {len}"),
            FrameFault::BadMarker { byte } => write!(f, "ACK marker {byte:#04x}, expected 0xac"),
        }
    }
}

impl core::error::Error for FrameFault {}

/// A malformed frame report: the identifier (the key) and the reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed {
    pub id: Id,
    pub reason: FrameFault,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Id::Standard(s) => write!(f, "frame {:03X}: {}", s.as_raw(), self.reason),
            Id::Extended(e) => write!(f, "frame {:08X}: {}", e.as_raw(), self.reason),
        }
    }
}

pub(crate) fn bump(c: &mut u32) {
    *c = c.wrapping_add(1);
}

/// How many recently delivered sequence numbers (or counts) a receiver
/// remembers per peer to recognise duplicates.
pub const RECENT: usize = 4;

/// The last [`RECENT`] values delivered for one peer: a frame whose value is
/// among them is a duplicate. Exact matches only (no "behind" window), so a
/// restarted sender whose counter starts again at 0 is not mistaken for old
/// traffic unless it hits one of the last few values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recent {
    vals: [u32; RECENT],
    len: u8,
    next: u8,
}

impl Recent {
    pub(crate) fn contains(&self, v: u32) -> bool {
        self.vals.iter().take(usize::from(self.len)).any(|x| *x == v)
    }
    pub(crate) fn insert(&mut self, v: u32) {
        let i = usize::from(self.next) % RECENT;
        self.vals[i] = v;
        self.next = ((i + 1) % RECENT) as u8;
        if usize::from(self.len) < RECENT {
            self.len += 1;
        }
    }
}

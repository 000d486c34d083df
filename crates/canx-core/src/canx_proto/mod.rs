//! CAN eXtended (CAN-X): the easyIPC transport over CAN 2.0B, as canx defines
//! it in `docs/protocols/can-x.md` (the specification this module follows;
//! section names below refer to it).
//!
//! - [`CanxId`]: the 29-bit identifier codec (priority, direction, device id,
//!   stream id, sequence number, continue bit), `can-x.md` "Identifier".
//! - [`Sender`]: turns bodies of 0..=2032 bytes into frames (single frame or
//!   envelope), numbering frames per (direction, device, stream), several
//!   streams in flight at once, `can-x.md` "Messages".
//! - [`Receiver`]: reassembles envelopes for many keys at once and enforces
//!   every rule of `can-x.md` "Receiver rules", reporting each broken rule as
//!   an [`ErrorEvent`] naming the key and the reason.
//! - [`Endpoint`]: both behind the common engine shape.
//!
//! Both are sans-IO: frames and the current [`Instant`] go in, frames,
//! events and deadlines come out. No heap: capacities are const generics.
//!
//! ## Wire format in one table (all from `can-x.md` "Messages")
//!
//! | message | frames |
//! | --- | --- |
//! | body <= 7 bytes | one frame, continue = 0, data `[msg_id, body..]` |
//! | body 8..=2032 bytes | head `[msg_id, 0x00, 0x00, N, body[0..4]]` (continue = 0), then `body[4..]`, `01 00` (tail PID = 1) and the CRC-16 (LE) in 8-byte frames (continue = 1) |
//!
//! ## Decision where the specification is ambiguous
//! A single frame with a 7-byte body has DLC 8, exactly like an envelope head,
//! so a body starting `00 00 n` with `n >= 2` would read as a head declaring
//! `n` frames. canx resolves it on both sides: the receiver reads a DLC-8
//! first frame as a head iff `data[1..3] == [0, 0]` and `data[3] >= 2`; the
//! sender sends such a 7-byte body as a 2-frame envelope (which every
//! receiver of this module accepts: envelope bodies of 4..=7 bytes are
//! decoded even though the sender only produces them in this one case).

use core::fmt;

use crc::{Algorithm, Crc, NoTable};

use crate::frame::{ExtendedId, Id};
use crate::time::Duration;
#[cfg(doc)]
use crate::time::Instant;

mod endpoint;
pub mod fuzzing;
mod receiver;
mod sender;
#[cfg(test)]
pub(crate) mod tests;

pub use endpoint::Endpoint;
pub use receiver::{ErrorEvent, Event, Message, Receiver, ReceiverConfig, ReceiverStats, RxError};
pub use sender::{SendError, Sender, SenderConfig, SenderStats};

/// Largest body of one message, bytes: `8 * 255 - 8` (`can-x.md` "Messages").
pub const MAX_BODY: usize = 2032;
/// Largest body sent as a single frame, bytes (`can-x.md` "Messages").
pub const MAX_SINGLE_BODY: usize = 7;
/// Largest number of frames of an envelope, head included.
pub const MAX_FRAMES: usize = 255;
/// The CRC of an envelope: CRC-16/IBM-3740 (CCITT-FALSE), check value 0x29B1.
pub const DEFAULT_CRC: &Algorithm<u16> = &crc::CRC_16_IBM_3740;
/// Default reassembly timeout: 1 s (`can-x.md` "Receiver rules").
pub const DEFAULT_REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest stream id (10 bits).
pub const MAX_STREAM: u16 = 0x3FF;
/// Largest priority (2 bits, 0 = highest).
pub const MAX_PRIORITY: u8 = 3;
/// Sequence numbers count modulo this (7 bits).
pub const SEQ_MODULO: u8 = 128;

/// Parameter id of an envelope head (`can-x.md` "Messages").
pub const PID_HEAD: u16 = 0;
/// Parameter id of an envelope tail.
pub const PID_TAIL: u16 = 1;

/// Bit layout of the identifier (`can-x.md` "Identifier").
mod field {
    pub const PRIORITY_SHIFT: u32 = 27;
    pub const DIRECTION_SHIFT: u32 = 26;
    pub const DEVICE_SHIFT: u32 = 18;
    pub const STREAM_SHIFT: u32 = 8;
    pub const SEQ_SHIFT: u32 = 1;
    pub const PRIORITY_MASK: u32 = 0x3;
    pub const DEVICE_MASK: u32 = 0xFF;
    pub const STREAM_MASK: u32 = 0x3FF;
    pub const SEQ_MASK: u32 = 0x7F;
}

/// Why identifier fields were rejected (a caller error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// Priority above 3.
    PriorityOutOfRange,
    /// Stream id above 1023.
    StreamOutOfRange,
    /// Sequence number above 127.
    SequenceOutOfRange,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FieldError::PriorityOutOfRange => "CAN-X priority must be 0-3",
            FieldError::StreamOutOfRange => "CAN-X stream id must be 0-1023",
            FieldError::SequenceOutOfRange => "CAN-X sequence number must be 0-127",
        })
    }
}

impl core::error::Error for FieldError {}

/// Direction bit of the identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// 0: sent to the device.
    ToDevice,
    /// 1: sent by the device.
    FromDevice,
}

impl Direction {
    fn bit(self) -> u32 {
        match self {
            Direction::ToDevice => 0,
            Direction::FromDevice => 1,
        }
    }
}

/// The reassembly key and sequence-number scope: (direction, device id,
/// stream id) (`can-x.md` "Identifier" and "Receiver rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    direction: Direction,
    device: u8,
    stream: u16,
}

impl Key {
    /// Errors: [`FieldError::StreamOutOfRange`] for a stream id above 1023.
    pub const fn new(direction: Direction, device: u8, stream: u16) -> Result<Key, FieldError> {
        if stream > MAX_STREAM {
            return Err(FieldError::StreamOutOfRange);
        }
        Ok(Key { direction, device, stream })
    }
    pub const fn direction(&self) -> Direction {
        self.direction
    }
    pub const fn device(&self) -> u8 {
        self.device
    }
    /// Stream id, 0..=1023.
    pub const fn stream(&self) -> u16 {
        self.stream
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = match self.direction {
            Direction::ToDevice => "to",
            Direction::FromDevice => "from",
        };
        write!(f, "{d} device {} stream {}", self.device, self.stream)
    }
}

/// A CAN-X identifier, decoded (`can-x.md` "Identifier"). Every 29-bit value
/// is a valid `CanxId`, so [`CanxId::unpack`] never fails.
///
/// | bits | field |
/// | --- | --- |
/// | 28..27 | priority (0 = highest) |
/// | 26 | direction |
/// | 25..18 | device id |
/// | 17..8 | stream id |
/// | 7..1 | sequence number |
/// | 0 | continue |
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CanxId {
    priority: u8,
    key: Key,
    seq: u8,
    cont: bool,
}

impl CanxId {
    /// Errors: [`FieldError::PriorityOutOfRange`] above 3,
    /// [`FieldError::SequenceOutOfRange`] above 127.
    pub const fn new(priority: u8, key: Key, seq: u8, cont: bool) -> Result<CanxId, FieldError> {
        if priority > MAX_PRIORITY {
            return Err(FieldError::PriorityOutOfRange);
        }
        if seq >= SEQ_MODULO {
            return Err(FieldError::SequenceOutOfRange);
        }
        Ok(CanxId { priority, key, seq, cont })
    }
    pub const fn priority(&self) -> u8 {
        self.priority
    }
    pub const fn key(&self) -> Key {
        self.key
    }
    /// Sequence number, 0..=127.
    pub const fn seq(&self) -> u8 {
        self.seq
    }
    /// `false` on the first frame of a message, `true` on a following frame.
    pub const fn cont(&self) -> bool {
        self.cont
    }

    /// The 29-bit raw identifier.
    pub fn to_raw(&self) -> u32 {
        (u32::from(self.priority) << field::PRIORITY_SHIFT)
            | (self.key.direction.bit() << field::DIRECTION_SHIFT)
            | (u32::from(self.key.device) << field::DEVICE_SHIFT)
            | (u32::from(self.key.stream) << field::STREAM_SHIFT)
            | (u32::from(self.seq) << field::SEQ_SHIFT)
            | u32::from(self.cont)
    }

    /// Decodes the low 29 bits of `raw` (higher bits are ignored).
    pub fn from_raw(raw: u32) -> CanxId {
        let direction =
            if (raw >> field::DIRECTION_SHIFT) & 1 == 1 { Direction::FromDevice } else { Direction::ToDevice };
        CanxId {
            priority: ((raw >> field::PRIORITY_SHIFT) & field::PRIORITY_MASK) as u8,
            key: Key {
                direction,
                device: ((raw >> field::DEVICE_SHIFT) & field::DEVICE_MASK) as u8,
                stream: ((raw >> field::STREAM_SHIFT) & field::STREAM_MASK) as u16,
            },
            seq: ((raw >> field::SEQ_SHIFT) & field::SEQ_MASK) as u8,
            cont: raw & 1 == 1,
        }
    }

    /// The extended identifier carrying these fields.
    pub fn pack(&self) -> ExtendedId {
        // to_raw() never sets bits above 28 (fields are validated).
        ExtendedId::new(self.to_raw()).unwrap_or(ExtendedId::ZERO)
    }

    /// Decodes an extended identifier.
    pub fn unpack(id: ExtendedId) -> CanxId {
        CanxId::from_raw(id.as_raw())
    }

    /// Decodes any identifier; `None` for a standard (11-bit) one, which is
    /// never CAN-X (CAN-X is CAN 2.0B, extended identifiers only).
    pub fn from_id(id: Id) -> Option<CanxId> {
        match id {
            Id::Extended(e) => Some(CanxId::unpack(e)),
            Id::Standard(_) => None,
        }
    }
}

/// CRC of an envelope with the given algorithm: over `msg_id` followed by
/// the body (`can-x.md` "Messages", tail).
pub fn envelope_crc(algorithm: &'static Algorithm<u16>, msg_id: u8, body: &[u8]) -> u16 {
    let crc = Crc::<u16, NoTable>::new(algorithm);
    let mut digest = crc.digest();
    digest.update(&[msg_id]);
    digest.update(body);
    digest.finalize()
}

/// `true` when `body` travels as an envelope: above 7 bytes, and for the one
/// 7-byte case a receiver would take for an envelope head (see the module doc).
pub fn uses_envelope(body: &[u8]) -> bool {
    match body {
        [0, 0, n, _, _, _, _] => *n >= 2,
        _ => body.len() > MAX_SINGLE_BODY,
    }
}

/// Number of frames a body takes: 1 for a single frame, else
/// `ceil((len + 8) / 8)` (head overhead 4 bytes, tail 4 bytes).
pub fn frame_count(body: &[u8]) -> usize {
    if uses_envelope(body) {
        (body.len() + 8).div_ceil(8)
    } else {
        1
    }
}

/// Data bytes of frame `index` (0-based) of a message; `None` past the
/// last frame. `crc` is [`envelope_crc`] of the message (unused for a single
/// frame). The identifier (sequence number, continue bit) is the caller's.
pub fn encode_frame(msg_id: u8, body: &[u8], crc: u16, index: usize, out: &mut [u8; 8]) -> Option<usize> {
    if !uses_envelope(body) {
        if index != 0 {
            return None;
        }
        out[0] = msg_id;
        out[1..=body.len()].copy_from_slice(body);
        return Some(1 + body.len());
    }
    let n = frame_count(body);
    if index >= n || n > MAX_FRAMES {
        return None;
    }
    let total = body.len() + 8;
    let start = index * 8;
    let end = (start + 8).min(total);
    let head = [msg_id, 0, 0, n as u8];
    let [crc_lo, crc_hi] = crc.to_le_bytes();
    let tail = [1, 0, crc_lo, crc_hi];
    for (o, k) in out.iter_mut().zip(start..end) {
        *o = if k < 4 {
            head[k]
        } else if k < 4 + body.len() {
            body[k - 4]
        } else {
            tail[k - 4 - body.len()]
        };
    }
    Some(end - start)
}

//! The CAN-X receiver: frames in, messages and error events out
//! (`can-x.md` "Receiver rules").

use core::fmt;

use crc::Algorithm;

use super::{envelope_crc, CanxId, Direction, Key, DEFAULT_CRC, DEFAULT_REASSEMBLY_TIMEOUT, MAX_BODY, SEQ_MODULO};
use crate::frame::Frame;
use crate::ring::Ring;
use crate::time::{Duration, Instant};

/// Bytes an envelope carries after its 4 header bytes: body + 4 tail bytes.
const BUF: usize = MAX_BODY + 4;

/// Why the receiver discarded a message or a frame (`can-x.md` "Receiver rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// A following frame's sequence number is not previous + 1 (mod 128).
    BadSequence { expected: u8, got: u8 },
    /// The envelope ended (a frame shorter than 8 bytes, or an empty last
    /// frame) after `received` frames while its head declared `declared`.
    FrameCountMismatch { declared: u8, received: u8 },
    /// The frames after the head carry fewer than the 4 tail bytes
    /// (PID + CRC) the envelope needs.
    Truncated,
    /// The tail parameter id is not 1.
    BadTailPid { pid: u16 },
    /// The CRC in the tail (`received`) is not the CRC of msg_id + body
    /// (`computed`).
    CrcMismatch { received: u16, computed: u16 },
    /// A new first frame arrived on a key with an open envelope; the open
    /// envelope was discarded.
    Superseded,
    /// No frame for the reassembly timeout; the envelope was discarded.
    Timeout,
    /// A following frame (continue = 1) with no open envelope on its key.
    Stray,
    /// All `SLOTS` reassembly buffers are busy; the new envelope was refused.
    NoFreeSlot,
    /// A first frame with no data (no msg_id).
    Empty,
}

impl fmt::Display for RxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RxError::BadSequence { expected, got } => write!(f, "bad sequence number {got}, expected {expected}"),
            RxError::FrameCountMismatch { declared, received } => {
                write!(f, "envelope ended after {received} frames, head declared {declared}")
            }
            RxError::Truncated => f.write_str("envelope too short for its tail"),
            RxError::BadTailPid { pid } => write!(f, "tail PID {pid}, expected 1"),
            RxError::CrcMismatch { received, computed } => {
                write!(f, "CRC mismatch: received {received:#06x}, computed {computed:#06x}")
            }
            RxError::Superseded => f.write_str("open envelope discarded by a new head"),
            RxError::Timeout => f.write_str("reassembly timeout"),
            RxError::Stray => f.write_str("stray continue frame"),
            RxError::NoFreeSlot => f.write_str("no free reassembly slot, envelope refused"),
            RxError::Empty => f.write_str("first frame without msg_id"),
        }
    }
}

impl core::error::Error for RxError {}

/// An error event: which key, which message (when known) and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorEvent {
    pub key: Key,
    /// The msg_id of the envelope concerned; `None` for a stray frame.
    pub msg_id: Option<u8>,
    pub reason: RxError,
}

impl fmt::Display for ErrorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CAN-X {}: {}", self.key, self.reason)?;
        if let Some(m) = self.msg_id {
            write!(f, " (msg_id {m:#04x})")?;
        }
        Ok(())
    }
}

/// A delivered message, borrowing its body from the receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub key: Key,
    pub priority: u8,
    pub msg_id: u8,
    /// 0..=2032 bytes.
    pub body: &'a [u8],
}

/// What [`Receiver::poll_event`] returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Message(Message<'a>),
    Error(ErrorEvent),
}

/// Receiver parameters.
#[derive(Clone, Copy, Debug)]
pub struct ReceiverConfig {
    /// Discard an envelope after this long without a frame; default 1 s.
    pub reassembly_timeout: Duration,
    /// CRC of envelopes; default [`DEFAULT_CRC`].
    pub crc: &'static Algorithm<u16>,
    /// Accept only this direction (`None`: both). Others are ignored.
    pub direction: Option<Direction>,
    /// Accept only this device id (`None`: all). Others are ignored.
    pub device: Option<u8>,
    /// Envelopes reassembled at once, at most (default `usize::MAX`: every
    /// slot). A head arriving while this many are open is refused like one
    /// finding no free slot, so memory or fairness limits below `SLOTS` hold
    /// on a board as on a PC.
    pub max_open: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            reassembly_timeout: DEFAULT_REASSEMBLY_TIMEOUT,
            crc: DEFAULT_CRC,
            direction: None,
            device: None,
            max_open: usize::MAX,
        }
    }
}

/// Counters of a [`Receiver`]; they only grow (wrapping at `u32::MAX`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// CAN-X frames processed.
    pub frames: u32,
    /// Frames ignored: standard id, remote, FD, error frames, filtered out.
    pub ignored: u32,
    /// Messages queued for delivery.
    pub delivered: u32,
    /// Error events raised (including those dropped for lack of room).
    pub errors: u32,
    /// Envelopes refused because all slots were busy.
    pub refused: u32,
    /// Events dropped because the event queue was full (a dropped message
    /// is counted here, not in `delivered`).
    pub events_dropped: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Reassembling.
    Open,
    /// Complete, waiting in the event queue.
    Ready,
    /// Lent to the application by the last `poll_event`.
    Lent,
}

#[derive(Clone, Copy)]
struct Slot {
    state: SlotState,
    key: Key,
    priority: u8,
    msg_id: u8,
    declared: u8,
    received: u8,
    last_seq: u8,
    deadline: Instant,
    /// Bytes in `buf` (the body and, while open, the tail).
    len: u16,
    buf: [u8; BUF],
}

impl Slot {
    const FREE: Slot = Slot {
        state: SlotState::Free,
        key: Key { direction: Direction::ToDevice, device: 0, stream: 0 },
        priority: 0,
        msg_id: 0,
        declared: 0,
        received: 0,
        last_seq: 0,
        deadline: Instant::ZERO,
        len: 0,
        buf: [0; BUF],
    };
}

#[derive(Clone, Copy, Debug)]
enum Queued {
    Single { key: Key, priority: u8, msg_id: u8, len: u8, data: [u8; 7] },
    Envelope { slot: usize },
    Error(ErrorEvent),
}

/// The CAN-X receiver (`can-x.md` "Receiver rules").
///
/// - `SLOTS`: envelopes reassembled at once, each with its own
///   2036-byte buffer (body + tail). A head arriving when all slots are busy
///   (or [`ReceiverConfig::max_open`] envelopes are open) is refused, counted ([`ReceiverStats::refused`]) and reported
///   ([`RxError::NoFreeSlot`]); its following frames are then reported as
///   [`RxError::Stray`]. A completed envelope keeps its slot until the
///   application has polled its event.
/// - `EVENTS`: event queue length; when full, new events are dropped and
///   counted ([`ReceiverStats::events_dropped`]).
///
/// Single-frame messages need no slot. Memory: about `SLOTS * 2.05 KiB`.
///
/// Sequence numbers are checked within an envelope only (each following
/// frame = previous + 1 mod 128), as the rules ask; the first frame of a
/// message is not checked against the previous message, so a lost or doubled
/// single frame goes unnoticed (CAN-X has no acknowledgement; use
/// [`crate::reliable`] where delivery must be confirmed).
pub struct Receiver<const SLOTS: usize = 4, const EVENTS: usize = 16> {
    config: ReceiverConfig,
    slots: [Slot; SLOTS],
    events: Ring<Queued, EVENTS>,
    single: [u8; 7],
    stats: ReceiverStats,
}

impl<const SLOTS: usize, const EVENTS: usize> fmt::Debug for Receiver<SLOTS, EVENTS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("config", &self.config)
            .field("open", &self.open_envelopes())
            .field("events", &self.events.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<const SLOTS: usize, const EVENTS: usize> Default for Receiver<SLOTS, EVENTS> {
    fn default() -> Self {
        Receiver::new(ReceiverConfig::default())
    }
}

impl<const SLOTS: usize, const EVENTS: usize> Receiver<SLOTS, EVENTS> {
    pub fn new(config: ReceiverConfig) -> Self {
        Receiver {
            config,
            slots: [Slot::FREE; SLOTS],
            events: Ring::new(),
            single: [0; 7],
            stats: ReceiverStats::default(),
        }
    }

    pub fn stats(&self) -> ReceiverStats {
        self.stats
    }

    /// Envelopes being reassembled (never more than `SLOTS`).
    pub fn open_envelopes(&self) -> usize {
        self.slots.iter().filter(|s| s.state == SlotState::Open).count()
    }

    /// Slots in any use (open, waiting for `poll_event`, or lent); at most `SLOTS`.
    pub fn busy_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.state != SlotState::Free).count()
    }

    /// Frees the slot whose body the previous `poll_event` lent out.
    fn reclaim(&mut self) {
        for s in self.slots.iter_mut() {
            if s.state == SlotState::Lent {
                s.state = SlotState::Free;
            }
        }
    }

    fn push(&mut self, q: Queued) {
        if let Err(q) = self.events.push(q) {
            self.stats.events_dropped = self.stats.events_dropped.wrapping_add(1);
            if let Queued::Envelope { slot } = q {
                if let Some(s) = self.slots.get_mut(slot) {
                    s.state = SlotState::Free;
                }
            }
        }
    }

    fn error(&mut self, key: Key, msg_id: Option<u8>, reason: RxError) {
        self.stats.errors = self.stats.errors.wrapping_add(1);
        self.push(Queued::Error(ErrorEvent { key, msg_id, reason }));
    }

    /// Discards open slot `i` with `reason`.
    fn discard(&mut self, i: usize, reason: RxError) {
        let Some(s) = self.slots.get_mut(i) else { return };
        s.state = SlotState::Free;
        let (key, msg_id) = (s.key, s.msg_id);
        self.error(key, Some(msg_id), reason);
    }

    fn expire(&mut self, now: Instant) {
        for i in 0..SLOTS {
            if self.slots[i].state == SlotState::Open && self.slots[i].deadline <= now {
                self.discard(i, RxError::Timeout);
            }
        }
    }

    /// Feed every received frame. Frames that are not CAN-X data frames for
    /// this receiver (standard ids, remote, FD and error frames, directions
    /// or devices filtered out by the config) are ignored and counted. Never
    /// panics; a broken rule becomes an [`Event::Error`]. Timeouts due at
    /// `now` are handled first.
    pub fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        self.reclaim();
        self.expire(now);
        let Frame::Can(f) = frame else {
            self.stats.ignored = self.stats.ignored.wrapping_add(1);
            return;
        };
        let Some(id) = CanxId::from_id(f.id()).filter(|_| !f.is_remote()) else {
            self.stats.ignored = self.stats.ignored.wrapping_add(1);
            return;
        };
        let key = id.key();
        if self.config.direction.is_some_and(|d| d != key.direction)
            || self.config.device.is_some_and(|d| d != key.device)
        {
            self.stats.ignored = self.stats.ignored.wrapping_add(1);
            return;
        }
        self.stats.frames = self.stats.frames.wrapping_add(1);
        let data = f.data();
        let open = self.slots.iter().position(|s| s.state == SlotState::Open && s.key == key);
        if id.cont() {
            match open {
                Some(i) => self.follow(now, i, id.seq(), data),
                None => self.error(key, None, RxError::Stray),
            }
            return;
        }
        if let Some(i) = open {
            self.discard(i, RxError::Superseded);
        }
        match data {
            [] => self.error(key, None, RxError::Empty),
            [msg_id, 0, 0, n, b0, b1, b2, b3] if *n >= 2 => {
                let free = self.slots.iter().position(|s| s.state == SlotState::Free);
                let Some(i) = free.filter(|_| self.open_envelopes() < self.config.max_open) else {
                    self.stats.refused = self.stats.refused.wrapping_add(1);
                    self.error(key, Some(*msg_id), RxError::NoFreeSlot);
                    return;
                };
                let s = &mut self.slots[i];
                s.state = SlotState::Open;
                s.key = key;
                s.priority = id.priority();
                s.msg_id = *msg_id;
                s.declared = *n;
                s.received = 1;
                s.last_seq = id.seq();
                s.deadline = now + self.config.reassembly_timeout;
                s.buf[..4].copy_from_slice(&[*b0, *b1, *b2, *b3]);
                s.len = 4;
            }
            [msg_id, body @ ..] => {
                let mut d = [0u8; 7];
                let len = body.len().min(7);
                d[..len].copy_from_slice(&body[..len]);
                self.stats.delivered = self.stats.delivered.wrapping_add(1);
                self.push(Queued::Single { key, priority: id.priority(), msg_id: *msg_id, len: len as u8, data: d });
            }
        }
    }

    /// A following frame for open slot `i`.
    fn follow(&mut self, now: Instant, i: usize, seq: u8, data: &[u8]) {
        let s = &mut self.slots[i];
        let expected = (s.last_seq + 1) % SEQ_MODULO;
        if seq != expected {
            self.discard(i, RxError::BadSequence { expected, got: seq });
            return;
        }
        let (declared, received) = (s.declared, s.received.saturating_add(1));
        let last = received >= declared;
        if data.is_empty() || (data.len() < 8 && !last) {
            self.discard(i, RxError::FrameCountMismatch { declared, received });
            return;
        }
        let start = usize::from(s.len);
        let Some(dst) = s.buf.get_mut(start..start + data.len()) else {
            self.discard(i, RxError::FrameCountMismatch { declared, received });
            return;
        };
        dst.copy_from_slice(data);
        s.len += data.len() as u16;
        s.received = received;
        s.last_seq = seq;
        s.deadline = now + self.config.reassembly_timeout;
        if last {
            self.complete(i);
        }
    }

    /// Checks the tail of complete slot `i` and queues it or discards it.
    fn complete(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let total = usize::from(s.len);
        if total < 8 {
            self.discard(i, RxError::Truncated);
            return;
        }
        let body_len = total - 4;
        let pid = u16::from_le_bytes([s.buf[body_len], s.buf[body_len + 1]]);
        if pid != super::PID_TAIL {
            self.discard(i, RxError::BadTailPid { pid });
            return;
        }
        let received = u16::from_le_bytes([s.buf[body_len + 2], s.buf[body_len + 3]]);
        let computed = envelope_crc(self.config.crc, s.msg_id, &s.buf[..body_len]);
        if received != computed {
            self.discard(i, RxError::CrcMismatch { received, computed });
            return;
        }
        s.len = body_len as u16;
        s.state = SlotState::Ready;
        self.stats.delivered = self.stats.delivered.wrapping_add(1);
        self.push(Queued::Envelope { slot: i });
    }

    /// Discards envelopes that got no frame for the reassembly timeout
    /// (each reported as [`RxError::Timeout`]). Call when
    /// [`Receiver::poll_timeout`] is due; extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.reclaim();
        self.expire(now);
    }

    /// The earliest reassembly deadline, `None` with no envelope open.
    /// Changes after `handle_frame` and `handle_timeout`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().filter(|s| s.state == SlotState::Open).map(|s| s.deadline).min()
    }

    /// The next event, oldest first; call after `handle_frame` and
    /// `handle_timeout` until it returns `None`. A [`Message`] borrows its
    /// body from the receiver: it stays valid until the next call on the
    /// receiver, which reclaims its slot (copy the body out to keep it).
    pub fn poll_event(&mut self) -> Option<Event<'_>> {
        self.reclaim();
        match self.events.pop()? {
            Queued::Error(e) => Some(Event::Error(e)),
            Queued::Single { key, priority, msg_id, len, data } => {
                self.single = data;
                let body = self.single.get(..usize::from(len)).unwrap_or(&[]);
                Some(Event::Message(Message { key, priority, msg_id, body }))
            }
            Queued::Envelope { slot } => {
                let s = self.slots.get_mut(slot)?;
                s.state = SlotState::Lent;
                let s = &self.slots[slot];
                let body = s.buf.get(..usize::from(s.len)).unwrap_or(&[]);
                Some(Event::Message(Message { key: s.key, priority: s.priority, msg_id: s.msg_id, body }))
            }
        }
    }
}

//! The CAN-X sender: bodies in, frames out (`can-x.md` "Messages").

use core::fmt;

use crc::Algorithm;

use super::{
    encode_frame, envelope_crc, frame_count, CanxId, FieldError, Key, DEFAULT_CRC, MAX_BODY, MAX_PRIORITY, SEQ_MODULO,
};
use crate::frame::CanFrame;
use crate::time::Instant;

/// Why [`Sender::send`] refused a message (a caller error; nothing was queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// The body is longer than [`MAX_BODY`] (2032) bytes.
    BodyTooLong,
    /// Priority above 3.
    PriorityOutOfRange,
    /// All `SLOTS` message slots hold unsent messages; poll_transmit first.
    QueueFull,
    /// All `KEYS` sequence counters belong to keys with unsent messages.
    KeyTableFull,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::BodyTooLong => "CAN-X body longer than 2032 bytes",
            SendError::PriorityOutOfRange => "CAN-X priority must be 0-3",
            SendError::QueueFull => "CAN-X transmit queue full",
            SendError::KeyTableFull => "CAN-X sequence table full of busy keys",
        })
    }
}

impl core::error::Error for SendError {}

impl From<FieldError> for SendError {
    fn from(_: FieldError) -> Self {
        SendError::PriorityOutOfRange
    }
}

/// Sender parameters.
#[derive(Clone, Copy, Debug)]
pub struct SenderConfig {
    /// CRC of envelopes; default [`DEFAULT_CRC`] (CRC-16/IBM-3740).
    pub crc: &'static Algorithm<u16>,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig { crc: DEFAULT_CRC }
    }
}

/// Counters of a [`Sender`]; they only grow (wrapping at `u32::MAX`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Messages accepted by `send`.
    pub queued: u32,
    /// Messages whose last frame left through `poll_transmit`.
    pub sent: u32,
    /// Frames returned by `poll_transmit`.
    pub frames: u32,
    /// `send` calls refused with `QueueFull` or `KeyTableFull`.
    pub refused: u32,
    /// Idle keys whose sequence counter was forgotten to make room for a new
    /// key (that key restarts at sequence 0 next time).
    pub keys_evicted: u32,
}

#[derive(Clone, Copy, Debug)]
struct SeqEntry {
    key: Key,
    next_seq: u8,
    last_used: u32,
}

#[derive(Clone, Copy)]
struct TxSlot {
    used: bool,
    order: u32,
    priority: u8,
    key: Key,
    msg_id: u8,
    crc: u16,
    len: u16,
    next: u16,
    total: u16,
    body: [u8; MAX_BODY],
}

impl TxSlot {
    const EMPTY: TxSlot = TxSlot {
        used: false,
        order: 0,
        priority: 0,
        key: Key { direction: super::Direction::ToDevice, device: 0, stream: 0 },
        msg_id: 0,
        crc: 0,
        len: 0,
        next: 0,
        total: 0,
        body: [0; MAX_BODY],
    };
}

/// The CAN-X sender (`can-x.md` "Messages", "Identifier").
///
/// - `SLOTS`: messages queued at once (each holds a copy of its body in a
///   2032-byte array; no heap). Several keys are served at once, round-robin
///   within the best (lowest) priority; messages of one key leave in order.
/// - `KEYS`: sequence counters kept, one per (direction, device, stream).
///   The sequence number counts +1 mod 128 for every frame of a key, across
///   messages (`can-x.md` "Identifier"). When the table is full, the least
///   recently used key with nothing queued is forgotten (counted in
///   [`SenderStats::keys_evicted`]).
///
/// Sequence numbers are assigned when a frame leaves `poll_transmit`.
pub struct Sender<const SLOTS: usize = 4, const KEYS: usize = 16> {
    config: SenderConfig,
    slots: [TxSlot; SLOTS],
    seqs: [Option<SeqEntry>; KEYS],
    order: u32,
    tick: u32,
    rr: usize,
    stats: SenderStats,
}

impl<const SLOTS: usize, const KEYS: usize> fmt::Debug for Sender<SLOTS, KEYS> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("config", &self.config)
            .field("queued", &self.queued())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<const SLOTS: usize, const KEYS: usize> Default for Sender<SLOTS, KEYS> {
    fn default() -> Self {
        Sender::new(SenderConfig::default())
    }
}

impl<const SLOTS: usize, const KEYS: usize> Sender<SLOTS, KEYS> {
    pub fn new(config: SenderConfig) -> Self {
        Sender {
            config,
            slots: [TxSlot::EMPTY; SLOTS],
            seqs: [None; KEYS],
            order: 0,
            tick: 0,
            rr: 0,
            stats: SenderStats::default(),
        }
    }

    /// Queues one message: `msg_id` and a body of 0..=2032 bytes (copied) for
    /// `key` with `priority` 0..=3 (0 = highest). Call [`Sender::poll_transmit`]
    /// afterwards. Errors: see [`SendError`]; a refused message is counted in
    /// [`SenderStats::refused`] when it is refused for lack of room.
    pub fn send(&mut self, priority: u8, key: Key, msg_id: u8, body: &[u8]) -> Result<(), SendError> {
        if body.len() > MAX_BODY {
            return Err(SendError::BodyTooLong);
        }
        if priority > MAX_PRIORITY {
            return Err(SendError::PriorityOutOfRange);
        }
        let Some(slot) = self.slots.iter().position(|s| !s.used) else {
            self.stats.refused = self.stats.refused.wrapping_add(1);
            return Err(SendError::QueueFull);
        };
        if self.seq_entry(key).is_none() {
            self.stats.refused = self.stats.refused.wrapping_add(1);
            return Err(SendError::KeyTableFull);
        }
        let crc = envelope_crc(self.config.crc, msg_id, body);
        let s = &mut self.slots[slot];
        s.used = true;
        s.order = self.order;
        self.order = self.order.wrapping_add(1);
        s.priority = priority;
        s.key = key;
        s.msg_id = msg_id;
        s.crc = crc;
        s.len = body.len() as u16;
        s.next = 0;
        s.total = frame_count(body) as u16;
        s.body[..body.len()].copy_from_slice(body);
        self.stats.queued = self.stats.queued.wrapping_add(1);
        Ok(())
    }

    /// The index of `key`'s sequence counter, creating it (and evicting an
    /// idle key if needed); `None` when every entry belongs to a busy key.
    fn seq_entry(&mut self, key: Key) -> Option<usize> {
        self.tick = self.tick.wrapping_add(1);
        let tick = self.tick;
        if let Some(i) = self.seqs.iter().position(|e| e.is_some_and(|e| e.key == key)) {
            if let Some(e) = self.seqs[i].as_mut() {
                e.last_used = tick;
            }
            return Some(i);
        }
        let fresh = SeqEntry { key, next_seq: 0, last_used: tick };
        if let Some(i) = self.seqs.iter().position(|e| e.is_none()) {
            self.seqs[i] = Some(fresh);
            return Some(i);
        }
        let slots = &self.slots;
        let victim = self
            .seqs
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.map(|e| (i, e)))
            .filter(|(_, e)| !slots.iter().any(|s| s.used && s.key == e.key))
            .max_by_key(|(_, e)| tick.wrapping_sub(e.last_used))
            .map(|(i, _)| i)?;
        self.seqs[victim] = Some(fresh);
        self.stats.keys_evicted = self.stats.keys_evicted.wrapping_add(1);
        Some(victim)
    }

    /// The next frame to put on the bus, or `None` when nothing is queued.
    /// Call after every [`Sender::send`] and whenever the bus can take a
    /// frame, until it returns `None`. `now` is unused (CAN-X has no sender
    /// timers) and taken for the common engine shape.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<CanFrame> {
        let idx = self.pick()?;
        let (key, priority) = (self.slots[idx].key, self.slots[idx].priority);
        let Some(e) = self.seqs.iter_mut().flatten().find(|e| e.key == key) else {
            // Unreachable: a busy key is never evicted. Drop the message
            // rather than send it with a wrong sequence number.
            self.slots[idx].used = false;
            return None;
        };
        let seq = e.next_seq;
        e.next_seq = (seq + 1) % SEQ_MODULO;
        let s = &mut self.slots[idx];
        let mut data = [0u8; 8];
        let body = &s.body[..usize::from(s.len)];
        let Some(len) = encode_frame(s.msg_id, body, s.crc, usize::from(s.next), &mut data) else {
            // Unreachable (`send` validated the body): free the slot, never stall.
            s.used = false;
            return None;
        };
        let cont = s.next > 0;
        s.next += 1;
        if s.next >= s.total {
            s.used = false;
            self.stats.sent = self.stats.sent.wrapping_add(1);
        }
        self.rr = (idx + 1) % SLOTS.max(1);
        self.stats.frames = self.stats.frames.wrapping_add(1);
        let id = CanxId::new(priority, key, seq, cont).ok()?.pack();
        CanFrame::new(id, &data[..len]).ok()
    }

    /// Picks the slot to serve: only the oldest message of each key is
    /// eligible; lowest priority value first, round-robin from `rr` among equals.
    fn pick(&self) -> Option<usize> {
        let mut best: Option<(u8, usize, usize)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            if !s.used {
                continue;
            }
            let older =
                self.slots.iter().any(|o| o.used && o.key == s.key && (o.order.wrapping_sub(s.order) as i32) < 0);
            if older {
                continue;
            }
            let dist = (i + SLOTS - self.rr) % SLOTS;
            let cand = (s.priority, dist, i);
            if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                best = Some(cand);
            }
        }
        best.map(|b| b.2)
    }

    /// Messages queued and not completely sent.
    pub fn queued(&self) -> usize {
        self.slots.iter().filter(|s| s.used).count()
    }

    /// `true` when nothing is left to send.
    pub fn is_idle(&self) -> bool {
        self.queued() == 0
    }

    pub fn stats(&self) -> SenderStats {
        self.stats
    }

    /// The next sequence number `key` would use (0 for an unknown key).
    pub fn next_seq(&self, key: Key) -> u8 {
        self.seqs.iter().flatten().find(|e| e.key == key).map_or(0, |e| e.next_seq)
    }
}

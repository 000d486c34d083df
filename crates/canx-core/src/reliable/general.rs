//! General-mode reliable delivery: sequence numbers, duplicate suppression,
//! ACK id mapping, timeout with backoff, retry limit, several peers in
//! flight. Wire format: see the [module doc](super).

use core::fmt;

use super::{
    bump, AckMapping, FrameFault, Handle, Malformed, Recent, RetryPolicy, SendError, Stats, ACK_MARKER, MAX_PAYLOAD,
};
use crate::filter::Filter;
use crate::frame::{CanFrame, Frame, Id};
use crate::ring::Ring;
use crate::time::Instant;

/// Events of the general-mode engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReliableEvent {
    /// Sender: the message was ACKed after `tries` transmissions.
    Delivered { handle: Handle, tries: u32 },
    /// Sender: no ACK after `tries` transmissions (retry limit reached).
    Failed { handle: Handle, tries: u32 },
    /// Receiver: a new message from data id `id`.
    Message { id: Id, seq: u8, len: u8, data: [u8; MAX_PAYLOAD] },
    /// Either: a malformed frame on an id the engine owns.
    Malformed(Malformed),
}

impl ReliableEvent {
    /// The payload of a [`ReliableEvent::Message`] (0..=7 bytes); empty otherwise.
    pub fn payload(&self) -> &[u8] {
        match self {
            ReliableEvent::Message { len, data, .. } => data.get(..usize::from(*len)).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Parameters of a [`ReliableSender`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReliableSenderConfig {
    /// Where ACKs of each data id arrive; default data id + 1.
    pub ack: AckMapping,
    /// Timeout, backoff and retry limit; default 100 ms, x2, at most 1 s, 3 resends.
    pub policy: RetryPolicy,
    /// First `seq` of every data id (default 0). A varying value (e.g. from
    /// a boot counter) keeps a restarted sender clear of the receiver's record.
    pub initial_seq: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Free,
    InFlight,
    /// Finished (`true` = delivered), waiting for `poll_event`.
    Done(bool),
}

#[derive(Clone, Copy, Debug)]
struct TxSlot {
    state: SlotState,
    handle: Handle,
    id: Id,
    ack_id: Id,
    seq: u8,
    len: u8,
    payload: [u8; MAX_PAYLOAD],
    tries: u32,
    deadline: Instant,
    due: bool,
    done_order: u32,
}

impl TxSlot {
    const FREE: TxSlot = TxSlot {
        state: SlotState::Free,
        handle: Handle(0),
        id: Id::Standard(crate::frame::StandardId::ZERO),
        ack_id: Id::Standard(crate::frame::StandardId::ZERO),
        seq: 0,
        len: 0,
        payload: [0; MAX_PAYLOAD],
        tries: 0,
        deadline: Instant::ZERO,
        due: false,
        done_order: 0,
    };
}

/// The general-mode sender. `SLOTS`: messages in flight (plus finished ones
/// whose outcome was not polled yet); `PEERS`: data ids with a sequence
/// counter (never evicted: a full table refuses new ids).
///
/// Outcomes are never dropped: a finished message keeps its slot until
/// [`ReliableSender::poll_event`] returns its outcome.
pub struct ReliableSender<const SLOTS: usize = 4, const PEERS: usize = 8> {
    config: ReliableSenderConfig,
    slots: [TxSlot; SLOTS],
    seqs: [Option<(Id, u8)>; PEERS],
    next_handle: u32,
    done_counter: u32,
    rr: usize,
    malformed: Ring<Malformed, 4>,
    stats: Stats,
}

impl<const S: usize, const P: usize> fmt::Debug for ReliableSender<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableSender").field("config", &self.config).field("stats", &self.stats).finish()
    }
}

impl<const S: usize, const P: usize> Default for ReliableSender<S, P> {
    fn default() -> Self {
        ReliableSender::new(ReliableSenderConfig::default())
    }
}

impl<const SLOTS: usize, const PEERS: usize> ReliableSender<SLOTS, PEERS> {
    pub fn new(config: ReliableSenderConfig) -> Self {
        ReliableSender {
            config,
            slots: [TxSlot::FREE; SLOTS],
            seqs: [None; PEERS],
            next_handle: 0,
            done_counter: 0,
            rr: 0,
            malformed: Ring::new(),
            stats: Stats::default(),
        }
    }

    /// Queues `payload` (0..=7 bytes) for data id `id` and returns its
    /// handle; its outcome comes as [`ReliableEvent::Delivered`] or
    /// [`ReliableEvent::Failed`]. Call `poll_transmit` next. Errors:
    /// [`SendError::PayloadTooLong`], [`SendError::NoAckId`],
    /// [`SendError::PeerBusy`] (a message to `id` in flight, or with a fixed
    /// ACK id the same seq in flight elsewhere), [`SendError::NoFreeSlot`],
    /// [`SendError::PeerTableFull`].
    pub fn send(&mut self, id: Id, payload: &[u8]) -> Result<Handle, SendError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SendError::PayloadTooLong);
        }
        let ack_id = self.config.ack.ack_id(id).ok_or(SendError::NoAckId)?;
        if self.slots.iter().any(|s| s.state == SlotState::InFlight && s.id == id) {
            return Err(SendError::PeerBusy);
        }
        let slot = self.slots.iter().position(|s| s.state == SlotState::Free).ok_or(SendError::NoFreeSlot)?;
        let entry = match self.seqs.iter().position(|e| e.is_some_and(|e| e.0 == id)) {
            Some(i) => i,
            None => self.seqs.iter().position(|e| e.is_none()).ok_or(SendError::PeerTableFull)?,
        };
        let seq = self.seqs[entry].map_or(self.config.initial_seq, |e| e.1);
        if self.slots.iter().any(|s| s.state == SlotState::InFlight && s.ack_id == ack_id && s.seq == seq) {
            return Err(SendError::PeerBusy);
        }
        self.seqs[entry] = Some((id, seq.wrapping_add(1)));
        let handle = Handle(self.next_handle);
        self.next_handle = self.next_handle.wrapping_add(1);
        let mut data = [0u8; MAX_PAYLOAD];
        data[..payload.len()].copy_from_slice(payload);
        self.slots[slot] = TxSlot {
            state: SlotState::InFlight,
            handle,
            id,
            ack_id,
            seq,
            len: payload.len() as u8,
            payload: data,
            tries: 0,
            deadline: Instant::ZERO,
            due: true,
            done_order: 0,
        };
        Ok(handle)
    }

    /// Messages in flight (not yet finished).
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.state == SlotState::InFlight).count()
    }

    /// Feed every received frame. Frames on no in-flight ACK id are ignored;
    /// `[0xAC, seq]` completes the message with that ACK id and seq; a
    /// duplicate or late ACK is counted ([`Stats::stale_acks`]); any other
    /// shape is reported as [`ReliableEvent::Malformed`].
    pub fn handle_frame(&mut self, _now: Instant, frame: &Frame) {
        let Frame::Can(f) = frame else { return };
        if f.is_remote() || !self.slots.iter().any(|s| s.state == SlotState::InFlight && s.ack_id == f.id()) {
            return;
        }
        let reason = match f.data() {
            [ACK_MARKER, seq] => {
                let hit = self
                    .slots
                    .iter()
                    .position(|s| s.state == SlotState::InFlight && s.ack_id == f.id() && s.seq == *seq);
                match hit {
                    Some(i) => {
                        self.finish(i, true);
                        bump(&mut self.stats.acknowledged);
                    }
                    None => bump(&mut self.stats.stale_acks),
                }
                return;
            }
            [b, _] => FrameFault::BadMarker { byte: *b },
            d => FrameFault::BadLength { len: d.len() as u8 },
        };
        bump(&mut self.stats.malformed);
        let _ = self.malformed.push(Malformed { id: f.id(), reason });
    }

    fn finish(&mut self, i: usize, delivered: bool) {
        let s = &mut self.slots[i];
        s.state = SlotState::Done(delivered);
        s.due = false;
        s.done_order = self.done_counter;
        self.done_counter = self.done_counter.wrapping_add(1);
    }

    /// Call when [`ReliableSender::poll_timeout`] is due: each message whose
    /// ACK wait ended is scheduled for a resend, or fails after the retry
    /// limit. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..SLOTS {
            let s = &mut self.slots[i];
            if s.state != SlotState::InFlight || s.due || s.deadline > now {
                continue;
            }
            if self.config.policy.may_resend(s.tries) {
                s.due = true;
            } else {
                self.finish(i, false);
                bump(&mut self.stats.failed);
            }
        }
    }

    /// The next data frame (first transmission or resend), round-robin over
    /// messages; call after `send` and `handle_timeout` until `None`. Each
    /// message's ACK timer starts at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        let n = SLOTS;
        let i = (0..n)
            .map(|k| (self.rr + k) % n)
            .find(|&i| self.slots[i].state == SlotState::InFlight && self.slots[i].due)?;
        self.rr = (i + 1) % n;
        let s = &mut self.slots[i];
        s.due = false;
        s.tries = s.tries.saturating_add(1);
        s.deadline = now + self.config.policy.timeout_for(s.tries);
        if s.tries == 1 {
            bump(&mut self.stats.sent);
        } else {
            bump(&mut self.stats.resent);
        }
        let mut data = [0u8; 8];
        data[0] = s.seq;
        let len = usize::from(s.len);
        data[1..=len].copy_from_slice(&s.payload[..len]);
        CanFrame::new(s.id, &data[..=len]).ok()
    }

    /// The earliest ACK deadline of the messages in flight; `None` when none
    /// waits (a message due for `poll_transmit` has no deadline yet).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().filter(|s| s.state == SlotState::InFlight && !s.due).map(|s| s.deadline).min()
    }

    /// Outcomes in the order the messages finished, then malformed-frame
    /// reports. Call after `handle_frame` and `handle_timeout` until `None`;
    /// a finished message's slot is free again once its outcome is returned.
    pub fn poll_event(&mut self) -> Option<ReliableEvent> {
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.state, SlotState::Done(_)))
            .min_by_key(|(_, s)| s.done_order.wrapping_sub(self.done_counter))
            .map(|(i, _)| i);
        if let Some(i) = oldest {
            let s = &mut self.slots[i];
            let ev = match s.state {
                SlotState::Done(true) => ReliableEvent::Delivered { handle: s.handle, tries: s.tries },
                _ => ReliableEvent::Failed { handle: s.handle, tries: s.tries },
            };
            s.state = SlotState::Free;
            return Some(ev);
        }
        self.malformed.pop().map(ReliableEvent::Malformed)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

/// Parameters of a [`ReliableReceiver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReliableReceiverConfig {
    /// Data frames this receiver owns (a canio `Match`, a candump filter).
    /// It must not match the ACK ids.
    pub accept: Filter,
    /// Where ACKs go; must agree with the senders'. Default data id + 1.
    pub ack: AckMapping,
}

#[derive(Clone, Copy, Debug)]
struct Peer {
    id: Id,
    recent: Recent,
    last_used: u32,
}

/// The general-mode receiver. `PEERS`: data ids whose recent `seq` values are
/// remembered (least recently used forgotten first, counted in
/// [`Stats::peers_evicted`]); `EVENTS` and `ACKS`: queue lengths. When a queue
/// is full, a data frame is dropped unACKed (counted in
/// [`Stats::dropped_no_room`]) and the sender resends it: no message is
/// ACKed without being delivered.
pub struct ReliableReceiver<const PEERS: usize = 8, const EVENTS: usize = 16, const ACKS: usize = 8> {
    config: ReliableReceiverConfig,
    peers: [Option<Peer>; PEERS],
    tick: u32,
    events: Ring<ReliableEvent, EVENTS>,
    acks: Ring<CanFrame, ACKS>,
    stats: Stats,
}

impl<const P: usize, const E: usize, const A: usize> fmt::Debug for ReliableReceiver<P, E, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableReceiver").field("config", &self.config).field("stats", &self.stats).finish()
    }
}

impl<const PEERS: usize, const EVENTS: usize, const ACKS: usize> ReliableReceiver<PEERS, EVENTS, ACKS> {
    pub fn new(config: ReliableReceiverConfig) -> Self {
        ReliableReceiver {
            config,
            peers: [None; PEERS],
            tick: 0,
            events: Ring::new(),
            acks: Ring::new(),
            stats: Stats::default(),
        }
    }

    /// Feed every received frame. Data frames matching `accept` are ACKed
    /// (`[0xAC, seq]` on the mapped id), duplicates included, and delivered
    /// once ([`ReliableEvent::Message`]); an empty one is reported as
    /// [`ReliableEvent::Malformed`]. Other frames are ignored.
    pub fn handle_frame(&mut self, _now: Instant, frame: &Frame) {
        let Frame::Can(f) = frame else { return };
        if f.is_remote() || !self.config.accept.matches(frame) {
            return;
        }
        let id = f.id();
        let Some((&seq, payload)) = f.data().split_first() else {
            bump(&mut self.stats.malformed);
            let m = ReliableEvent::Malformed(Malformed { id, reason: FrameFault::BadLength { len: 0 } });
            if self.events.push(m).is_err() {
                bump(&mut self.stats.dropped_no_room);
            }
            return;
        };
        let Some(ack) = self.config.ack.ack_id(id).and_then(|a| CanFrame::new(a, &[ACK_MARKER, seq]).ok()) else {
            return;
        };
        if self.acks.len() >= ACKS {
            bump(&mut self.stats.dropped_no_room);
            return;
        }
        self.tick = self.tick.wrapping_add(1);
        let known = self.peers.iter().position(|p| p.is_some_and(|p| p.id == id));
        if known.is_some_and(|i| self.peers[i].is_some_and(|p| p.recent.contains(u32::from(seq)))) {
            bump(&mut self.stats.duplicates_dropped);
        } else {
            if self.events.len() >= EVENTS {
                bump(&mut self.stats.dropped_no_room);
                return;
            }
            let mut data = [0u8; MAX_PAYLOAD];
            let len = payload.len().min(MAX_PAYLOAD);
            data[..len].copy_from_slice(&payload[..len]);
            let _ = self.events.push(ReliableEvent::Message { id, seq, len: len as u8, data });
            bump(&mut self.stats.delivered);
            let i = known.unwrap_or_else(|| self.free_peer());
            if let Some(slot) = self.peers.get_mut(i) {
                let mut p = slot.unwrap_or(Peer { id, recent: Recent::default(), last_used: 0 });
                if p.id != id {
                    p = Peer { id, recent: Recent::default(), last_used: 0 };
                }
                p.recent.insert(u32::from(seq));
                *slot = Some(p);
            }
        }
        if let Some(i) = self.peers.iter().position(|p| p.is_some_and(|p| p.id == id)) {
            if let Some(p) = self.peers[i].as_mut() {
                p.last_used = self.tick;
            }
        }
        let _ = self.acks.push(ack);
    }

    /// A free peer entry, evicting the least recently used one if needed
    /// (`usize::MAX` when `PEERS` is 0).
    fn free_peer(&mut self) -> usize {
        if let Some(i) = self.peers.iter().position(|p| p.is_none()) {
            return i;
        }
        let tick = self.tick;
        let victim = self
            .peers
            .iter()
            .enumerate()
            .max_by_key(|(_, p)| p.map_or(0, |p| tick.wrapping_sub(p.last_used)))
            .map_or(usize::MAX, |(i, _)| i);
        if victim != usize::MAX {
            bump(&mut self.stats.peers_evicted);
            self.peers[victim] = None;
        }
        victim
    }

    /// No timers: a no-op, present for the common engine shape.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// Always `None` (no timers).
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next ACK frame; call after `handle_frame` until `None`.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<CanFrame> {
        let f = self.acks.pop()?;
        bump(&mut self.stats.ack_sent);
        Some(f)
    }

    /// The next delivered message or malformed-frame report; call after
    /// `handle_frame` until `None`.
    pub fn poll_event(&mut self) -> Option<ReliableEvent> {
        self.events.pop()
    }

    /// Data ids currently remembered (at most `PEERS`).
    pub fn peers(&self) -> usize {
        self.peers.iter().flatten().count()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

impl<const SLOTS: usize, const PEERS: usize> crate::driver::Events for ReliableSender<SLOTS, PEERS> {
    type Event<'a> = ReliableEvent;
    fn poll_event(&mut self) -> Option<ReliableEvent> {
        ReliableSender::poll_event(self)
    }
}

impl<const PEERS: usize, const EVENTS: usize, const ACKS: usize> crate::driver::Events
    for ReliableReceiver<PEERS, EVENTS, ACKS>
{
    type Event<'a> = ReliableEvent;
    fn poll_event(&mut self) -> Option<ReliableEvent> {
        ReliableReceiver::poll_event(self)
    }
}

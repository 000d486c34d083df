//! The canio guide's ACK protocol, byte for byte (Adafruit Learn guide
//! "Using canio with CircuitPython", page "Reliable transmission";
//! `FeatherCAN_CircuitPython/sender-ack/code.py` and `listener-ack/code.py`).
//!
//! | frame | identifier | data |
//! | --- | --- | --- |
//! | data | standard 0x408 | `struct.pack("<II", count, now_ms)`: count (u32 LE), then ms (u32 LE) |
//! | ACK | standard 0x409 | `struct.pack("<I", count)`: the first 4 data bytes echoed |
//!
//! As in the guide: the sender resends the *same* 8 bytes (same `now_ms`)
//! whenever no ACK with its count arrives within the receive timeout, and the
//! listener ACKs every 8-byte 0x408 frame it receives, duplicates included.
//! `now_ms` is `now` in ms truncated to 32 bits (the guide:
//! `(time.monotonic_ns() // 1_000_000) & 0xffffffff`).
//!
//! Deliberate differences that do not show on the bus with the guide's
//! programs: the sender ignores (counts) an ACK with another count or length
//! instead of resending at once; it can stop after a retry limit (`None` =
//! forever, as the guide); the listener delivers a count once (the guide
//! prints every copy) and reports malformed frames as events.

use core::fmt;

use super::{bump, FrameFault, Malformed, Recent, RetryPolicy, SendError, Stats};
use crate::frame::{CanFrame, Frame, Id, StandardId};
use crate::ring::Ring;
use crate::time::{Duration, Instant};

/// The guide's data identifier, standard 0x408.
pub const GUIDE_DATA_ID: u16 = 0x408;
/// The guide's ACK identifier, standard 0x409.
pub const GUIDE_ACK_ID: u16 = 0x409;

fn std_id(raw: u16) -> Id {
    Id::Standard(StandardId::new(raw).unwrap_or(StandardId::ZERO))
}

/// Events of the compat engines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompatEvent {
    /// Sender: the ACK for `count` arrived after `tries` transmissions.
    Delivered { count: u32, tries: u32 },
    /// Sender: no ACK for `count` after `tries` transmissions (retry limit).
    Failed { count: u32, tries: u32 },
    /// Listener: a new message (the guide's `count, now_ms = struct.unpack("<II", data)`).
    Received { count: u32, now_ms: u32 },
    /// Either: a frame on the engine's receive id with the wrong shape.
    Malformed(Malformed),
}

/// Parameters of a [`CompatSender`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompatSenderConfig {
    /// Data frames go out on this id; the guide: standard 0x408.
    pub data_id: Id,
    /// ACKs are expected on this id; the guide: standard 0x409.
    pub ack_id: Id,
    /// The guide: `listener.receive()` timeout 0.1 s, resend forever
    /// (`retries: None`), no backoff (`multiplier: 1`).
    pub policy: RetryPolicy,
}

impl Default for CompatSenderConfig {
    fn default() -> Self {
        CompatSenderConfig {
            data_id: std_id(GUIDE_DATA_ID),
            ack_id: std_id(GUIDE_ACK_ID),
            policy: RetryPolicy {
                timeout: Duration::from_millis(100),
                retries: None,
                multiplier: 1,
                max_timeout: Duration::from_millis(100),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    count: u32,
    data: [u8; 8],
    tries: u32,
    deadline: Instant,
    due: bool,
}

/// The guide's `sender-ack` program as a sans-IO engine: one message in
/// flight at a time.
#[derive(Debug)]
pub struct CompatSender {
    config: CompatSenderConfig,
    next_count: u32,
    inflight: Option<InFlight>,
    outcome: Option<CompatEvent>,
    malformed: Ring<Malformed, 4>,
    stats: Stats,
}

impl Default for CompatSender {
    fn default() -> Self {
        CompatSender::new(CompatSenderConfig::default())
    }
}

impl CompatSender {
    /// A sender whose first count is 0 (as the guide).
    pub fn new(config: CompatSenderConfig) -> Self {
        CompatSender {
            config,
            next_count: 0,
            inflight: None,
            outcome: None,
            malformed: Ring::new(),
            stats: Stats::default(),
        }
    }

    /// Sends the next message, `count` then `now_ms` = `now` in ms (low 32
    /// bits), and returns its count. Errors: [`SendError::NoFreeSlot`] while
    /// a message is in flight or its outcome has not been polled.
    pub fn send(&mut self, now: Instant) -> Result<u32, SendError> {
        let count = self.next_count;
        self.send_values(count, now.total_millis() as u32)?;
        Ok(count)
    }

    /// Sends a message with the given values; the next [`CompatSender::send`]
    /// continues at `count + 1`. Same errors as `send`.
    pub fn send_values(&mut self, count: u32, now_ms: u32) -> Result<(), SendError> {
        if self.inflight.is_some() || self.outcome.is_some() {
            return Err(SendError::NoFreeSlot);
        }
        let mut data = [0u8; 8];
        data[..4].copy_from_slice(&count.to_le_bytes());
        data[4..].copy_from_slice(&now_ms.to_le_bytes());
        self.inflight = Some(InFlight { count, data, tries: 0, deadline: Instant::ZERO, due: true });
        self.next_count = count.wrapping_add(1);
        Ok(())
    }

    /// The count of the message in flight, if any.
    pub fn in_flight(&self) -> Option<u32> {
        self.inflight.map(|f| f.count)
    }

    /// Feed every received frame; only data frames on `ack_id` are looked at.
    /// A 4-byte ACK whose count matches completes the message; another count
    /// is counted in [`Stats::stale_acks`]; another length is reported.
    pub fn handle_frame(&mut self, _now: Instant, frame: &Frame) {
        let Frame::Can(f) = frame else { return };
        if f.id() != self.config.ack_id || f.is_remote() {
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(f.data()) else {
            bump(&mut self.stats.malformed);
            let _ = self.malformed.push(Malformed { id: f.id(), reason: FrameFault::BadLength { len: f.dlc() } });
            return;
        };
        let ack = u32::from_le_bytes(bytes);
        match self.inflight {
            Some(m) if m.count == ack => {
                self.inflight = None;
                bump(&mut self.stats.acknowledged);
                self.outcome = Some(CompatEvent::Delivered { count: m.count, tries: m.tries });
            }
            _ => bump(&mut self.stats.stale_acks),
        }
    }

    /// Call when [`CompatSender::poll_timeout`] is due: schedules a resend,
    /// or gives up after the retry limit. Extra calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(m) = self.inflight.as_mut() else { return };
        if m.due || m.deadline > now {
            return;
        }
        if self.config.policy.may_resend(m.tries) {
            m.due = true;
        } else {
            let (count, tries) = (m.count, m.tries);
            self.inflight = None;
            bump(&mut self.stats.failed);
            self.outcome = Some(CompatEvent::Failed { count, tries });
        }
    }

    /// The data frame to send (first transmission or resend), or `None`.
    /// Call after `send` and `handle_timeout`; the ACK timer starts at `now`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        let m = self.inflight.as_mut().filter(|m| m.due)?;
        m.due = false;
        m.tries = m.tries.saturating_add(1);
        m.deadline = now + self.config.policy.timeout_for(m.tries);
        if m.tries == 1 {
            bump(&mut self.stats.sent);
        } else {
            bump(&mut self.stats.resent);
        }
        CanFrame::new(self.config.data_id, &m.data).ok()
    }

    /// When the ACK wait of the message in flight ends; `None` when idle or
    /// a (re)send is waiting for `poll_transmit`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.inflight.filter(|m| !m.due).map(|m| m.deadline)
    }

    /// The outcome of the last message (once), then malformed-frame reports.
    /// Call after `handle_frame` and `handle_timeout` until `None`; the next
    /// `send` needs the outcome polled.
    pub fn poll_event(&mut self) -> Option<CompatEvent> {
        self.outcome.take().or_else(|| self.malformed.pop().map(CompatEvent::Malformed))
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

/// Parameters of a [`CompatListener`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompatListenerConfig {
    /// The guide: `canio.Match(0x408)`.
    pub data_id: Id,
    /// The guide: ACK on `canio.Message(id=0x409, ...)`.
    pub ack_id: Id,
}

impl Default for CompatListenerConfig {
    fn default() -> Self {
        CompatListenerConfig { data_id: std_id(GUIDE_DATA_ID), ack_id: std_id(GUIDE_ACK_ID) }
    }
}

/// The guide's `listener-ack` program as a sans-IO engine. `ACKS`: ACK
/// frames waiting for `poll_transmit`; `EVENTS`: events waiting for
/// `poll_event`. When either queue is full the data frame is dropped
/// unACKed (counted in [`Stats::dropped_no_room`]) and the sender resends.
pub struct CompatListener<const ACKS: usize = 8, const EVENTS: usize = 8> {
    config: CompatListenerConfig,
    recent: Recent,
    acks: Ring<[u8; 4], ACKS>,
    events: Ring<CompatEvent, EVENTS>,
    stats: Stats,
}

impl<const A: usize, const E: usize> fmt::Debug for CompatListener<A, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompatListener").field("config", &self.config).field("stats", &self.stats).finish()
    }
}

impl<const A: usize, const E: usize> Default for CompatListener<A, E> {
    fn default() -> Self {
        CompatListener::new(CompatListenerConfig::default())
    }
}

impl<const ACKS: usize, const EVENTS: usize> CompatListener<ACKS, EVENTS> {
    pub fn new(config: CompatListenerConfig) -> Self {
        CompatListener {
            config,
            recent: Recent::default(),
            acks: Ring::new(),
            events: Ring::new(),
            stats: Stats::default(),
        }
    }

    /// Feed every received frame; only data frames on `data_id` are looked
    /// at. An 8-byte frame is ACKed (its first 4 bytes echoed), duplicates
    /// included, and delivered once per count ([`CompatEvent::Received`]);
    /// any other length is reported ([`CompatEvent::Malformed`]) and not
    /// ACKed (the guide: "Unusual message length").
    pub fn handle_frame(&mut self, _now: Instant, frame: &Frame) {
        let Frame::Can(f) = frame else { return };
        if f.id() != self.config.data_id || f.is_remote() {
            return;
        }
        let Ok(bytes) = <[u8; 8]>::try_from(f.data()) else {
            bump(&mut self.stats.malformed);
            let m = CompatEvent::Malformed(Malformed { id: f.id(), reason: FrameFault::BadLength { len: f.dlc() } });
            if self.events.push(m).is_err() {
                bump(&mut self.stats.dropped_no_room);
            }
            return;
        };
        let [c0, c1, c2, c3, m0, m1, m2, m3] = bytes;
        let count = u32::from_le_bytes([c0, c1, c2, c3]);
        if self.acks.len() >= ACKS {
            bump(&mut self.stats.dropped_no_room);
            return;
        }
        if self.recent.contains(count) {
            bump(&mut self.stats.duplicates_dropped);
        } else {
            if self.events.len() >= EVENTS {
                bump(&mut self.stats.dropped_no_room);
                return;
            }
            let _ = self.events.push(CompatEvent::Received { count, now_ms: u32::from_le_bytes([m0, m1, m2, m3]) });
            self.recent.insert(count);
            bump(&mut self.stats.delivered);
        }
        let _ = self.acks.push([c0, c1, c2, c3]);
    }

    /// No timers: a no-op, present for the common engine shape.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// Always `None` (no timers).
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next ACK frame; call after `handle_frame` until `None`.
    pub fn poll_transmit(&mut self, _now: Instant) -> Option<CanFrame> {
        let data = self.acks.pop()?;
        bump(&mut self.stats.ack_sent);
        CanFrame::new(self.config.ack_id, &data).ok()
    }

    /// The next event; call after `handle_frame` until `None`.
    pub fn poll_event(&mut self) -> Option<CompatEvent> {
        self.events.pop()
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }
}

impl crate::driver::Events for CompatSender {
    type Event<'a> = CompatEvent;
    fn poll_event(&mut self) -> Option<CompatEvent> {
        CompatSender::poll_event(self)
    }
}

impl<const ACKS: usize, const EVENTS: usize> crate::driver::Events for CompatListener<ACKS, EVENTS> {
    type Event<'a> = CompatEvent;
    fn poll_event(&mut self) -> Option<CompatEvent> {
        CompatListener::poll_event(self)
    }
}

//! Reliable delivery (`canx_core::reliable`) driven by a bus's receive thread.
//!
//! Four drivers, one per core engine:
//!
//! | driver | core engine | sends | receives |
//! | --- | --- | --- | --- |
//! | [`SenderDriver`] | `ReliableSender` (general mode) | data `[seq, payload..]` | ACK `[0xAC, seq]` |
//! | [`ReceiverDriver`] | `ReliableReceiver` (general mode) | ACK | data |
//! | [`GuideSenderDriver`] | `CompatSender` (canio guide `sender-ack`) | 0x408 `<II count, now_ms>` | 0x409 `<I count>` |
//! | [`GuideListenerDriver`] | `CompatListener` (canio guide `listener-ack`) | 0x409 | 0x408 |
//!
//! Receivers ACK in the receive thread, in the same round as the data frame
//! arrived: no application code runs between a data frame and its ACK.
//!
//! Senders accept a message at once and give it a *ticket*; a message whose
//! peer is busy (one message in flight per data id, the core's
//! stop-and-wait rule) or that finds every engine slot busy waits in the
//! driver's FIFO. Every accepted message ends with exactly one
//! [`Event::Outcome`]. The number of accepted messages whose outcome the
//! application has not taken yet is bounded (`max_outstanding`), and the
//! event queue is sized so that outcomes are never dropped.
//!
//! Receivers never ACK a frame they cannot deliver: when the application's
//! event queue is full the data frame is dropped unACKed (counted in
//! `dropped_no_room`) and the sender's resend brings it again.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use canx_core::filter::Filter;
use canx_core::frame::{id_is_extended, id_raw, CanFrame};
use canx_core::reliable::{
    AckMapping, CompatEvent, CompatListener, CompatListenerConfig, CompatSender, CompatSenderConfig, Handle,
    ReliableEvent, ReliableReceiver, ReliableReceiverConfig, ReliableSender, ReliableSenderConfig, RetryPolicy,
    SendError, Stats, MAX_PAYLOAD,
};
use canx_core::{Frame, Id, Instant};

use crate::runtime::engine::Driven;
use crate::runtime::{EventQueue, RxFrame};

/// Messages in flight at once in a general-mode sender (core slots).
pub const SENDER_SLOTS: usize = 64;
/// Data ids a general-mode sender keeps a sequence counter for (never
/// forgotten: the core's rule; a further id is refused).
pub const SENDER_PEERS: usize = 1024;
/// Data ids a general-mode receiver remembers recent `seq` values of
/// (least recently used forgotten first).
pub const RECEIVER_PEERS: usize = 256;

/// An event for the application.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Sender: the message with `ticket` was ACKed (`delivered`) or given up,
    /// after `tries` transmissions. `count` is the guide count (guide sender
    /// only, else 0).
    Outcome { ticket: u64, delivered: bool, tries: u32, count: u32 },
    /// General receiver: a new message (duplicates are not reported).
    Message { id: Id, seq: u8, data: Vec<u8>, timestamp: f64 },
    /// Guide listener: a new message, `struct.unpack("<II", data)`.
    GuideMessage { count: u32, now_ms: u32, timestamp: f64 },
    /// A frame on an id the engine owns with the wrong shape.
    Malformed { id: Id, reason: String },
}

/// Why a driver refused a message (nothing was queued).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A caller error reported by the core (payload too long, no ACK id...).
    Invalid(SendError),
    /// `max_outstanding` messages have no collected outcome yet.
    TooManyOutstanding,
    /// The sequence table holds [`SENDER_PEERS`] data ids already.
    PeerTableFull,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Invalid(e) => write!(f, "{e}"),
            Refused::TooManyOutstanding => {
                f.write_str("too many messages whose outcome has not been collected (max_outstanding)")
            }
            Refused::PeerTableFull => {
                write!(f, "the sender already keeps sequence numbers for {SENDER_PEERS} data ids")
            }
        }
    }
}

/// Shared between a sender driver and its application: messages accepted
/// whose outcome the application has not taken from the queue yet.
#[derive(Debug, Default)]
pub struct Outstanding(AtomicUsize);

impl Outstanding {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
    /// The application took one outcome.
    pub fn taken(&self) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
    fn accepted(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Driver counters beyond the core's [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames the bus refused to send (bus off, interface down); the engine's
    /// timers resend or give up as usual.
    pub send_failed: u64,
    /// Messages waiting in the driver's FIFO for a free engine slot or peer.
    pub waiting: usize,
    /// Receivers: data frames dropped unACKed because the application's event
    /// queue was full (the sender resends them).
    pub app_queue_full: u64,
}

fn malformed(m: canx_core::reliable::Malformed) -> Event {
    Event::Malformed { id: m.id, reason: m.reason.to_string() }
}

// ------------------------------------------------------------------ general sender

#[derive(Clone, Copy, Debug)]
struct Waiting {
    ticket: u64,
    id: Id,
    len: u8,
    payload: [u8; MAX_PAYLOAD],
}

/// The general-mode sender.
pub struct SenderDriver {
    core: Box<ReliableSender<SENDER_SLOTS, SENDER_PEERS>>,
    ack: AckMapping,
    waiting: VecDeque<Waiting>,
    known_ids: HashSet<Id>,
    tickets: HashMap<Handle, u64>,
    next_ticket: u64,
    max_outstanding: usize,
    outstanding: Arc<Outstanding>,
    events: Arc<EventQueue<Event>>,
    stats: DriverStats,
}

impl std::fmt::Debug for SenderDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderDriver").field("stats", &self.stats).finish()
    }
}

impl SenderDriver {
    /// `max_outstanding`: messages accepted and not yet collected (>= 1).
    pub fn new(config: ReliableSenderConfig, max_outstanding: usize) -> Self {
        let max_outstanding = max_outstanding.max(1);
        SenderDriver {
            core: Box::new(ReliableSender::new(config)),
            ack: config.ack,
            waiting: VecDeque::new(),
            known_ids: HashSet::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            max_outstanding,
            outstanding: Arc::new(Outstanding::default()),
            // Outcomes are bounded by max_outstanding; room for malformed reports too.
            events: Arc::new(EventQueue::new(max_outstanding + 256)),
            stats: DriverStats::default(),
        }
    }

    pub fn events(&self) -> Arc<EventQueue<Event>> {
        self.events.clone()
    }
    pub fn outstanding(&self) -> Arc<Outstanding> {
        self.outstanding.clone()
    }

    /// Accepts `payload` (0..=7 bytes) for data id `id`; returns its ticket.
    /// The outcome comes as [`Event::Outcome`] with that ticket.
    pub fn send(&mut self, id: Id, payload: &[u8]) -> Result<u64, Refused> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Refused::Invalid(SendError::PayloadTooLong));
        }
        if self.ack.ack_id(id).is_none() {
            return Err(Refused::Invalid(SendError::NoAckId));
        }
        if self.outstanding.get() >= self.max_outstanding {
            return Err(Refused::TooManyOutstanding);
        }
        if !self.known_ids.contains(&id) {
            if self.known_ids.len() >= SENDER_PEERS {
                return Err(Refused::PeerTableFull);
            }
            self.known_ids.insert(id);
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let mut w = Waiting { ticket, id, len: payload.len() as u8, payload: [0; MAX_PAYLOAD] };
        w.payload[..payload.len()].copy_from_slice(payload);
        self.outstanding.accepted();
        self.waiting.push_back(w);
        self.submit_waiting();
        Ok(ticket)
    }

    /// Moves waiting messages into the core, in order per data id.
    fn submit_waiting(&mut self) {
        let mut blocked: HashSet<Id> = HashSet::new();
        let mut i = 0;
        while i < self.waiting.len() {
            let w = self.waiting[i];
            if blocked.contains(&w.id) {
                i += 1;
                continue;
            }
            match self.core.send(w.id, &w.payload[..usize::from(w.len)]) {
                Ok(h) => {
                    self.tickets.insert(h, w.ticket);
                    self.waiting.remove(i);
                }
                Err(SendError::NoFreeSlot) => break,
                Err(SendError::PeerBusy) => {
                    blocked.insert(w.id);
                    i += 1;
                }
                Err(_) => {
                    // Validated in `send`; never expected. Fail the message, never stall.
                    self.waiting.remove(i);
                    self.events.push(Event::Outcome { ticket: w.ticket, delivered: false, tries: 0, count: 0 });
                }
            }
        }
        self.stats.waiting = self.waiting.len();
    }

    fn drain(&mut self) {
        let mut freed = false;
        while let Some(ev) = self.core.poll_event() {
            match ev {
                ReliableEvent::Delivered { handle, tries } | ReliableEvent::Failed { handle, tries } => {
                    freed = true;
                    let delivered = matches!(ev, ReliableEvent::Delivered { .. });
                    if let Some(ticket) = self.tickets.remove(&handle) {
                        self.events.push(Event::Outcome { ticket, delivered, tries, count: 0 });
                    }
                }
                ReliableEvent::Malformed(m) => self.events.push(malformed(m)),
                ReliableEvent::Message { .. } => {}
            }
        }
        if freed && !self.waiting.is_empty() {
            self.submit_waiting();
        }
    }

    pub fn stats(&self) -> (Stats, DriverStats) {
        (self.core.stats(), self.stats)
    }

    /// Messages in the core (in flight) plus those waiting in the FIFO.
    pub fn pending(&self) -> usize {
        self.core.in_flight() + self.waiting.len()
    }
}

impl Driven for SenderDriver {
    fn handle_frame(&mut self, now: Instant, rx: &RxFrame) {
        if rx.own() {
            return;
        }
        self.core.handle_frame(now, &rx.frame);
        self.drain();
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        self.drain();
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        self.core.poll_transmit(now).map(Frame::Can)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
    fn flush_events(&mut self) {}
    fn filters(&self) -> Option<Vec<Filter>> {
        match self.ack {
            AckMapping::Fixed(id) => Some(vec![id_filter(id)]),
            // ACK ids follow the data ids, which are not known in advance.
            AckMapping::Offset(_) => None,
        }
    }
    fn send_failed(&mut self, _frame: &Frame, _error: &crate::runtime::Error) {
        self.stats.send_failed += 1;
    }
}

/// A filter that passes exactly `id` (data and remote frames).
pub fn id_filter(id: Id) -> Filter {
    Filter::canio_match(id_raw(id), None, id_is_extended(id)).unwrap_or(Filter::ACCEPT_ALL)
}

// ------------------------------------------------------------------ general receiver

type Rx = ReliableReceiver<RECEIVER_PEERS, 16, 8>;

/// The general-mode receiver: ACKs natively, delivers each message once.
/// One core receiver per accept filter (a frame goes to the first filter
/// that matches it).
pub struct ReceiverDriver {
    cores: Vec<Box<Rx>>,
    filters: Vec<Filter>,
    acks: VecDeque<CanFrame>,
    events: Arc<EventQueue<Event>>,
    capacity: usize,
    stats: DriverStats,
}

impl std::fmt::Debug for ReceiverDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverDriver").field("filters", &self.filters).field("stats", &self.stats).finish()
    }
}

impl ReceiverDriver {
    /// `accept`: data frames this receiver owns (must not match ACK ids);
    /// `queue_size`: application event queue length.
    pub fn new(accept: &[Filter], ack: AckMapping, queue_size: usize) -> Self {
        let capacity = queue_size.max(1);
        ReceiverDriver {
            cores: accept.iter().map(|f| Box::new(Rx::new(ReliableReceiverConfig { accept: *f, ack }))).collect(),
            filters: accept.to_vec(),
            acks: VecDeque::new(),
            events: Arc::new(EventQueue::new(capacity)),
            capacity,
            stats: DriverStats::default(),
        }
    }

    pub fn events(&self) -> Arc<EventQueue<Event>> {
        self.events.clone()
    }

    /// The core counters summed over the filters.
    pub fn stats(&self) -> (Stats, DriverStats) {
        let mut s = Stats::default();
        for c in &self.cores {
            let c = c.stats();
            s.delivered = s.delivered.wrapping_add(c.delivered);
            s.duplicates_dropped = s.duplicates_dropped.wrapping_add(c.duplicates_dropped);
            s.ack_sent = s.ack_sent.wrapping_add(c.ack_sent);
            s.dropped_no_room = s.dropped_no_room.wrapping_add(c.dropped_no_room);
            s.peers_evicted = s.peers_evicted.wrapping_add(c.peers_evicted);
            s.malformed = s.malformed.wrapping_add(c.malformed);
        }
        (s, self.stats)
    }
}

impl Driven for ReceiverDriver {
    fn handle_frame(&mut self, now: Instant, rx: &RxFrame) {
        if rx.own() {
            return;
        }
        let Some(i) = self.filters.iter().position(|f| f.matches(&rx.frame)) else { return };
        if self.events.len() >= self.capacity {
            // No ACK without delivery: the sender resends.
            self.stats.app_queue_full += 1;
            return;
        }
        let core = &mut self.cores[i];
        core.handle_frame(now, &rx.frame);
        while let Some(ack) = core.poll_transmit(now) {
            self.acks.push_back(ack);
        }
        while let Some(ev) = core.poll_event() {
            match ev {
                ReliableEvent::Message { id, seq, .. } => {
                    let data = ev.payload().to_vec();
                    self.events.push(Event::Message { id, seq, data, timestamp: rx.timestamp });
                }
                ReliableEvent::Malformed(m) => self.events.push(malformed(m)),
                _ => {}
            }
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Frame> {
        self.acks.pop_front().map(Frame::Can)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn flush_events(&mut self) {}
    fn filters(&self) -> Option<Vec<Filter>> {
        Some(self.filters.clone())
    }
    fn send_failed(&mut self, _frame: &Frame, _error: &crate::runtime::Error) {
        self.stats.send_failed += 1;
    }
}

// ------------------------------------------------------------------ guide sender

#[derive(Clone, Copy, Debug)]
struct GuideWaiting {
    ticket: u64,
    count: u32,
    now_ms: u32,
}

/// The canio guide's `sender-ack` (one message in flight at a time; more
/// wait in order).
pub struct GuideSenderDriver {
    core: CompatSender,
    ack_id: Id,
    waiting: VecDeque<GuideWaiting>,
    current: Option<u64>,
    next_count: u32,
    next_ticket: u64,
    max_outstanding: usize,
    outstanding: Arc<Outstanding>,
    events: Arc<EventQueue<Event>>,
    stats: DriverStats,
}

impl std::fmt::Debug for GuideSenderDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuideSenderDriver").field("stats", &self.stats).finish()
    }
}

impl GuideSenderDriver {
    pub fn new(config: CompatSenderConfig, first_count: u32, max_outstanding: usize) -> Self {
        let max_outstanding = max_outstanding.max(1);
        GuideSenderDriver {
            core: CompatSender::new(config),
            ack_id: config.ack_id,
            waiting: VecDeque::new(),
            current: None,
            next_count: first_count,
            next_ticket: 0,
            max_outstanding,
            outstanding: Arc::new(Outstanding::default()),
            events: Arc::new(EventQueue::new(max_outstanding + 256)),
            stats: DriverStats::default(),
        }
    }

    pub fn events(&self) -> Arc<EventQueue<Event>> {
        self.events.clone()
    }
    pub fn outstanding(&self) -> Arc<Outstanding> {
        self.outstanding.clone()
    }

    /// Accepts a message with `count` (default: the previous count + 1,
    /// starting at `first_count`) and `now_ms`; returns (ticket, count).
    pub fn send(&mut self, count: Option<u32>, now_ms: u32) -> Result<(u64, u32), Refused> {
        if self.outstanding.get() >= self.max_outstanding {
            return Err(Refused::TooManyOutstanding);
        }
        let count = count.unwrap_or(self.next_count);
        self.next_count = count.wrapping_add(1);
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.outstanding.accepted();
        self.waiting.push_back(GuideWaiting { ticket, count, now_ms });
        self.submit_waiting();
        Ok((ticket, count))
    }

    fn submit_waiting(&mut self) {
        if self.current.is_some() {
            return;
        }
        if let Some(w) = self.waiting.front().copied() {
            if self.core.send_values(w.count, w.now_ms).is_ok() {
                self.waiting.pop_front();
                self.current = Some(w.ticket);
            }
        }
        self.stats.waiting = self.waiting.len();
    }

    fn drain(&mut self) {
        while let Some(ev) = self.core.poll_event() {
            match ev {
                CompatEvent::Delivered { count, tries } | CompatEvent::Failed { count, tries } => {
                    let delivered = matches!(ev, CompatEvent::Delivered { .. });
                    if let Some(ticket) = self.current.take() {
                        self.events.push(Event::Outcome { ticket, delivered, tries, count });
                    }
                }
                CompatEvent::Malformed(m) => self.events.push(malformed(m)),
                CompatEvent::Received { .. } => {}
            }
        }
        self.submit_waiting();
    }

    pub fn stats(&self) -> (Stats, DriverStats) {
        (self.core.stats(), self.stats)
    }
}

impl Driven for GuideSenderDriver {
    fn handle_frame(&mut self, now: Instant, rx: &RxFrame) {
        if rx.own() {
            return;
        }
        self.core.handle_frame(now, &rx.frame);
        self.drain();
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.core.handle_timeout(now);
        self.drain();
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        self.core.poll_transmit(now).map(Frame::Can)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.core.poll_timeout()
    }
    fn flush_events(&mut self) {}
    fn filters(&self) -> Option<Vec<Filter>> {
        Some(vec![id_filter(self.ack_id)])
    }
    fn send_failed(&mut self, _frame: &Frame, _error: &crate::runtime::Error) {
        self.stats.send_failed += 1;
    }
}

// ------------------------------------------------------------------ guide listener

/// The canio guide's `listener-ack`: ACKs every 8-byte data frame natively,
/// delivers each count once.
pub struct GuideListenerDriver {
    core: CompatListener<8, 8>,
    data_id: Id,
    acks: VecDeque<CanFrame>,
    events: Arc<EventQueue<Event>>,
    capacity: usize,
    stats: DriverStats,
}

impl std::fmt::Debug for GuideListenerDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuideListenerDriver").field("stats", &self.stats).finish()
    }
}

impl GuideListenerDriver {
    pub fn new(config: CompatListenerConfig, queue_size: usize) -> Self {
        let capacity = queue_size.max(1);
        GuideListenerDriver {
            core: CompatListener::new(config),
            data_id: config.data_id,
            acks: VecDeque::new(),
            events: Arc::new(EventQueue::new(capacity)),
            capacity,
            stats: DriverStats::default(),
        }
    }

    pub fn events(&self) -> Arc<EventQueue<Event>> {
        self.events.clone()
    }

    pub fn stats(&self) -> (Stats, DriverStats) {
        (self.core.stats(), self.stats)
    }
}

impl Driven for GuideListenerDriver {
    fn handle_frame(&mut self, now: Instant, rx: &RxFrame) {
        if rx.own() || rx.frame.id() != Some(self.data_id) {
            return;
        }
        if self.events.len() >= self.capacity {
            self.stats.app_queue_full += 1;
            return;
        }
        self.core.handle_frame(now, &rx.frame);
        while let Some(ack) = self.core.poll_transmit(now) {
            self.acks.push_back(ack);
        }
        while let Some(ev) = self.core.poll_event() {
            match ev {
                CompatEvent::Received { count, now_ms } => {
                    self.events.push(Event::GuideMessage { count, now_ms, timestamp: rx.timestamp })
                }
                CompatEvent::Malformed(m) => self.events.push(malformed(m)),
                _ => {}
            }
        }
    }
    fn handle_timeout(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Option<Frame> {
        self.acks.pop_front().map(Frame::Can)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn flush_events(&mut self) {}
    fn filters(&self) -> Option<Vec<Filter>> {
        Some(vec![id_filter(self.data_id)])
    }
    fn send_failed(&mut self, _frame: &Frame, _error: &crate::runtime::Error) {
        self.stats.send_failed += 1;
    }
}

/// The guide's retry policy with the given timeout and retry limit (no backoff).
pub fn guide_policy(timeout: canx_core::Duration, retries: Option<u32>) -> RetryPolicy {
    RetryPolicy { timeout, retries, multiplier: 1, max_timeout: timeout }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use canx_core::frame::make_id;
    use parking_lot::Mutex;

    use super::*;
    use crate::runtime::{Bus, BusConfig, Target};

    fn open(name: &str) -> Bus {
        Bus::open(BusConfig::new(Target::Virtual(name.into()))).unwrap()
    }

    fn wait<E>(q: &EventQueue<E>) -> E {
        q.recv_timeout(Duration::from_secs(3)).expect("event")
    }

    #[test]
    fn general_round_trip_with_queueing_per_peer() {
        let a = open("drv-rel");
        let b = open("drv-rel");
        let id = make_id(0x123, false).unwrap();
        let rx = Arc::new(Mutex::new(ReceiverDriver::new(&[id_filter(id)], AckMapping::Offset(1), 64)));
        let rx_events = rx.lock().events();
        let _hr = b.attach(rx.clone());
        let tx = Arc::new(Mutex::new(SenderDriver::new(ReliableSenderConfig::default(), 16)));
        let tx_events = tx.lock().events();
        let outstanding = tx.lock().outstanding();
        let h = a.attach(tx.clone());
        // Three messages to one peer: one in flight, two wait in the driver.
        let tickets: Vec<u64> = (0..3u8).map(|i| tx.lock().send(id, &[i, 0xEE]).unwrap()).collect();
        h.kick();
        for (i, t) in tickets.iter().enumerate() {
            match wait(&tx_events) {
                Event::Outcome { ticket, delivered, tries, .. } => {
                    assert_eq!((ticket, delivered, tries), (*t, true, 1));
                    outstanding.taken();
                }
                e => panic!("unexpected {e:?}"),
            }
            match wait(&rx_events) {
                Event::Message { seq, data, .. } => {
                    assert_eq!(seq, i as u8);
                    assert_eq!(data, vec![i as u8, 0xEE]);
                }
                e => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(rx.lock().stats().0.ack_sent, 3);
        assert_eq!(outstanding.get(), 0);
        assert!(matches!(tx.lock().send(id, &[0; 8]), Err(Refused::Invalid(SendError::PayloadTooLong))));
    }

    #[test]
    fn general_failure_after_retries_and_outstanding_limit() {
        let a = open("drv-rel-fail");
        let _b = open("drv-rel-fail");
        let policy = RetryPolicy {
            timeout: canx_core::Duration::from_millis(10),
            retries: Some(2),
            multiplier: 2,
            max_timeout: canx_core::Duration::from_millis(50),
        };
        let tx = Arc::new(Mutex::new(SenderDriver::new(ReliableSenderConfig { policy, ..Default::default() }, 2)));
        let events = tx.lock().events();
        let h = a.attach(tx.clone());
        let id = make_id(0x200, false).unwrap();
        let t0 = tx.lock().send(id, b"x").unwrap();
        let _t1 = tx.lock().send(make_id(0x300, false).unwrap(), b"y").unwrap();
        assert_eq!(tx.lock().send(id, b"z"), Err(Refused::TooManyOutstanding));
        h.kick();
        match wait(&events) {
            Event::Outcome { ticket, delivered, tries, .. } => assert_eq!((ticket, delivered, tries), (t0, false, 3)),
            e => panic!("unexpected {e:?}"),
        }
        let (s, _) = tx.lock().stats();
        assert!(s.resent >= 2, "{s:?}");
    }

    #[test]
    fn guide_sender_against_guide_listener() {
        let a = open("drv-guide");
        let b = open("drv-guide");
        let l = Arc::new(Mutex::new(GuideListenerDriver::new(CompatListenerConfig::default(), 16)));
        let l_events = l.lock().events();
        let _hl = b.attach(l.clone());
        let cfg = CompatSenderConfig {
            policy: guide_policy(canx_core::Duration::from_millis(100), Some(5)),
            ..Default::default()
        };
        let s = Arc::new(Mutex::new(GuideSenderDriver::new(cfg, 7, 8)));
        let s_events = s.lock().events();
        let h = a.attach(s.clone());
        assert_eq!(s.lock().send(None, 1234).unwrap(), (0, 7));
        assert_eq!(s.lock().send(None, 1235).unwrap(), (1, 8));
        h.kick();
        for c in [7u32, 8] {
            assert!(matches!(wait(&s_events), Event::Outcome { delivered: true, count, tries: 1, .. } if count == c));
            assert!(matches!(wait(&l_events), Event::GuideMessage { count, .. } if count == c));
        }
    }
}

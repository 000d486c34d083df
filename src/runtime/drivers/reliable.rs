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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use canx_core::driver::{Engine, Events};
use canx_core::filter::Filter;
use canx_core::frame::{id_is_extended, id_raw, CanFrame};
use canx_core::reliable::{
    AckMapping, CompatEvent, CompatListener, CompatListenerConfig, CompatSender, CompatSenderConfig, Handle,
    ReliableEvent, ReliableReceiver, ReliableReceiverConfig, ReliableSender, ReliableSenderConfig, RetryPolicy,
    SendError, Stats, MAX_PAYLOAD,
};
use canx_core::{Frame, Id, Instant};

use super::host::{Accept, Adapter, Backlog, HostStats, Hosted, Offer};
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
pub struct ReliableDriverStats {
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

type SenderCore = ReliableSender<SENDER_SLOTS, SENDER_PEERS>;

/// The general-mode sender: the core sender hosted with [`SenderAdapter`].
pub type SenderDriver = Hosted<SenderCore, SenderAdapter>;

/// Tickets, the per-peer backlog and the outstanding bound of a general sender.
#[derive(Debug)]
pub struct SenderAdapter {
    ack: AckMapping,
    backlog: Backlog<Waiting>,
    /// Backlog entries may fit now (a slot freed, a message queued).
    dirty: bool,
    known_ids: HashSet<Id>,
    tickets: HashMap<Handle, u64>,
    next_ticket: u64,
    max_outstanding: usize,
    outstanding: Arc<Outstanding>,
}

impl Adapter<SenderCore> for SenderAdapter {
    type Event = Event;
    fn event(&mut self, ev: ReliableEvent, _at: f64, out: &EventQueue<Event>) {
        match ev {
            ReliableEvent::Delivered { handle, tries } | ReliableEvent::Failed { handle, tries } => {
                self.dirty = true;
                let delivered = matches!(ev, ReliableEvent::Delivered { .. });
                if let Some(ticket) = self.tickets.remove(&handle) {
                    out.push(Event::Outcome { ticket, delivered, tries, count: 0 });
                }
            }
            ReliableEvent::Malformed(m) => out.push(malformed(m)),
            ReliableEvent::Message { .. } => {}
        }
    }
    fn refill(&mut self, core: &mut SenderCore, out: &EventQueue<Event>) {
        if !std::mem::take(&mut self.dirty) {
            return;
        }
        let tickets = &mut self.tickets;
        self.backlog.feed(
            |w| w.id,
            |w| match core.send(w.id, &w.payload[..usize::from(w.len)]) {
                Ok(h) => {
                    tickets.insert(h, w.ticket);
                    Offer::Done
                }
                Err(SendError::NoFreeSlot) => Offer::Full,
                Err(SendError::PeerBusy) => Offer::Busy,
                Err(_) => {
                    // Validated in `send`; never expected. Fail the message, never stall.
                    out.push(Event::Outcome { ticket: w.ticket, delivered: false, tries: 0, count: 0 });
                    Offer::Done
                }
            },
        );
    }
    fn filters(&self) -> Option<Vec<Filter>> {
        match self.ack {
            AckMapping::Fixed(id) => Some(vec![id_filter(id)]),
            // ACK ids follow the data ids, which are not known in advance.
            AckMapping::Offset(_) => None,
        }
    }
}

impl SenderDriver {
    pub fn new(config: ReliableSenderConfig, max_outstanding: usize) -> Self {
        let max_outstanding = max_outstanding.max(1);
        let adapter = SenderAdapter {
            ack: config.ack,
            backlog: Backlog::default(),
            dirty: false,
            known_ids: HashSet::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            max_outstanding,
            outstanding: Arc::new(Outstanding::default()),
        };
        // Outcomes are bounded by max_outstanding; room for malformed reports too.
        Hosted::host(Box::new(ReliableSender::new(config)), adapter, max_outstanding + 256)
    }

    pub fn outstanding(&self) -> Arc<Outstanding> {
        self.adapter.outstanding.clone()
    }

    pub fn send(&mut self, id: Id, payload: &[u8]) -> Result<u64, Refused> {
        let a = &mut self.adapter;
        if payload.len() > MAX_PAYLOAD {
            return Err(Refused::Invalid(SendError::PayloadTooLong));
        }
        if a.ack.ack_id(id).is_none() {
            return Err(Refused::Invalid(SendError::NoAckId));
        }
        if a.outstanding.get() >= a.max_outstanding {
            return Err(Refused::TooManyOutstanding);
        }
        if !a.known_ids.contains(&id) {
            if a.known_ids.len() >= SENDER_PEERS {
                return Err(Refused::PeerTableFull);
            }
            a.known_ids.insert(id);
        }
        let ticket = a.next_ticket;
        a.next_ticket += 1;
        let mut w = Waiting { ticket, id, len: payload.len() as u8, payload: [0; MAX_PAYLOAD] };
        w.payload[..payload.len()].copy_from_slice(payload);
        a.outstanding.accepted();
        self.with(|_, a, _| {
            a.backlog.push(w);
            a.dirty = true;
        });
        Ok(ticket)
    }

    pub fn stats(&self) -> (Stats, ReliableDriverStats) {
        (self.engine.stats(), driver_stats(self.host_stats(), self.adapter.backlog.len()))
    }

    pub fn pending(&self) -> usize {
        self.engine.in_flight() + self.adapter.backlog.len()
    }
}

fn driver_stats(h: HostStats, waiting: usize) -> ReliableDriverStats {
    ReliableDriverStats { send_failed: h.send_failed, waiting, app_queue_full: h.declined }
}

pub fn id_filter(id: Id) -> Filter {
    Filter::canio_match(id_raw(id), None, id_is_extended(id)).unwrap_or(Filter::ACCEPT_ALL)
}

// ------------------------------------------------------------------ general receiver

type Rx = ReliableReceiver<RECEIVER_PEERS, 16, 8>;

/// One core receiver per accept filter; a frame goes to the first whose
/// filter matches.
#[derive(Debug)]
pub struct Receivers {
    cores: Vec<(Filter, Box<Rx>)>,
}

impl Engine for Receivers {
    fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        if let Some((_, c)) = self.cores.iter_mut().find(|(f, _)| f.matches(frame)) {
            c.handle_frame(now, frame);
        }
    }
    fn handle_timeout(&mut self, now: Instant) {
        for (_, c) in self.cores.iter_mut() {
            c.handle_timeout(now);
        }
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        self.cores.iter_mut().find_map(|(_, c)| c.poll_transmit(now))
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.cores.iter().fold(None, |acc, (_, c)| canx_core::time::earliest(acc, c.poll_timeout()))
    }
}

impl Events for Receivers {
    type Event<'a> = ReliableEvent;
    fn poll_event(&mut self) -> Option<ReliableEvent> {
        self.cores.iter_mut().find_map(|(_, c)| c.poll_event())
    }
}

/// The general-mode receiver: [`Receivers`] hosted with [`ReceiverAdapter`].
pub type ReceiverDriver = Hosted<Receivers, ReceiverAdapter>;

/// No ACK without room; messages copied out.
#[derive(Debug)]
pub struct ReceiverAdapter {
    filters: Vec<Filter>,
}

impl Adapter<Receivers> for ReceiverAdapter {
    type Event = Event;
    const EAGER_TX: bool = true;
    fn accept(&mut self, rx: &RxFrame, room: bool) -> Accept {
        if !self.filters.iter().any(|f| f.matches(&rx.frame)) {
            Accept::Ignore
        } else if room {
            Accept::Take
        } else {
            // No ACK without delivery: the sender resends.
            Accept::Decline
        }
    }
    fn event(&mut self, ev: ReliableEvent, at: f64, out: &EventQueue<Event>) {
        match ev {
            ReliableEvent::Message { id, seq, .. } => {
                let data = ev.payload().to_vec();
                out.push(Event::Message { id, seq, data, timestamp: at });
            }
            ReliableEvent::Malformed(m) => out.push(malformed(m)),
            _ => {}
        }
    }
    fn filters(&self) -> Option<Vec<Filter>> {
        Some(self.filters.clone())
    }
}

impl ReceiverDriver {
    pub fn new(accept: &[Filter], ack: AckMapping, queue_size: usize) -> Self {
        let cores =
            accept.iter().map(|f| (*f, Box::new(Rx::new(ReliableReceiverConfig { accept: *f, ack })))).collect();
        Hosted::host(Box::new(Receivers { cores }), ReceiverAdapter { filters: accept.to_vec() }, queue_size)
    }

    pub fn stats(&self) -> (Stats, ReliableDriverStats) {
        let mut s = Stats::default();
        for (_, c) in &self.engine.cores {
            let c = c.stats();
            s.delivered = s.delivered.wrapping_add(c.delivered);
            s.duplicates_dropped = s.duplicates_dropped.wrapping_add(c.duplicates_dropped);
            s.ack_sent = s.ack_sent.wrapping_add(c.ack_sent);
            s.dropped_no_room = s.dropped_no_room.wrapping_add(c.dropped_no_room);
            s.peers_evicted = s.peers_evicted.wrapping_add(c.peers_evicted);
            s.malformed = s.malformed.wrapping_add(c.malformed);
        }
        (s, driver_stats(self.host_stats(), 0))
    }
}

// ------------------------------------------------------------------ guide sender

#[derive(Clone, Copy, Debug)]
struct GuideWaiting {
    ticket: u64,
    count: u32,
    now_ms: u32,
}

/// The canio guide sender: one message in flight, the rest in a backlog.
pub type GuideSenderDriver = Hosted<CompatSender, GuideSenderAdapter>;

#[derive(Debug)]
pub struct GuideSenderAdapter {
    ack_id: Id,
    backlog: Backlog<GuideWaiting>,
    current: Option<u64>,
    next_count: u32,
    next_ticket: u64,
    max_outstanding: usize,
    outstanding: Arc<Outstanding>,
}

impl Adapter<CompatSender> for GuideSenderAdapter {
    type Event = Event;
    fn event(&mut self, ev: CompatEvent, _at: f64, out: &EventQueue<Event>) {
        match ev {
            CompatEvent::Delivered { count, tries } | CompatEvent::Failed { count, tries } => {
                let delivered = matches!(ev, CompatEvent::Delivered { .. });
                if let Some(ticket) = self.current.take() {
                    out.push(Event::Outcome { ticket, delivered, tries, count });
                }
            }
            CompatEvent::Malformed(m) => out.push(malformed(m)),
            CompatEvent::Received { .. } => {}
        }
    }
    fn refill(&mut self, core: &mut CompatSender, _out: &EventQueue<Event>) {
        let current = &mut self.current;
        self.backlog.feed(
            |_| (),
            |w| {
                if current.is_some() || core.send_values(w.count, w.now_ms).is_err() {
                    return Offer::Full;
                }
                *current = Some(w.ticket);
                Offer::Done
            },
        );
    }
    fn filters(&self) -> Option<Vec<Filter>> {
        Some(vec![id_filter(self.ack_id)])
    }
}

impl GuideSenderDriver {
    pub fn new(config: CompatSenderConfig, first_count: u32, max_outstanding: usize) -> Self {
        let max_outstanding = max_outstanding.max(1);
        let adapter = GuideSenderAdapter {
            ack_id: config.ack_id,
            backlog: Backlog::default(),
            current: None,
            next_count: first_count,
            next_ticket: 0,
            max_outstanding,
            outstanding: Arc::new(Outstanding::default()),
        };
        Hosted::host(Box::new(CompatSender::new(config)), adapter, max_outstanding + 256)
    }

    pub fn outstanding(&self) -> Arc<Outstanding> {
        self.adapter.outstanding.clone()
    }

    pub fn send(&mut self, count: Option<u32>, now_ms: u32) -> Result<(u64, u32), Refused> {
        let a = &mut self.adapter;
        if a.outstanding.get() >= a.max_outstanding {
            return Err(Refused::TooManyOutstanding);
        }
        let count = count.unwrap_or(a.next_count);
        a.next_count = count.wrapping_add(1);
        let ticket = a.next_ticket;
        a.next_ticket += 1;
        a.outstanding.accepted();
        self.with(|_, a, _| a.backlog.push(GuideWaiting { ticket, count, now_ms }));
        Ok((ticket, count))
    }

    pub fn stats(&self) -> (Stats, ReliableDriverStats) {
        (self.engine.stats(), driver_stats(self.host_stats(), self.adapter.backlog.len()))
    }
}

// ------------------------------------------------------------------ guide listener

/// The canio guide listener: no ACK without room.
pub type GuideListenerDriver = Hosted<CompatListener<8, 8>, GuideListenerAdapter>;

#[derive(Debug)]
pub struct GuideListenerAdapter {
    data_id: Id,
}

impl Adapter<CompatListener<8, 8>> for GuideListenerAdapter {
    type Event = Event;
    const EAGER_TX: bool = true;
    fn accept(&mut self, rx: &RxFrame, room: bool) -> Accept {
        match (rx.frame.id() == Some(self.data_id), room) {
            (false, _) => Accept::Ignore,
            (true, true) => Accept::Take,
            (true, false) => Accept::Decline,
        }
    }
    fn event(&mut self, ev: CompatEvent, at: f64, out: &EventQueue<Event>) {
        match ev {
            CompatEvent::Received { count, now_ms } => out.push(Event::GuideMessage { count, now_ms, timestamp: at }),
            CompatEvent::Malformed(m) => out.push(malformed(m)),
            _ => {}
        }
    }
    fn filters(&self) -> Option<Vec<Filter>> {
        Some(vec![id_filter(self.data_id)])
    }
}

impl GuideListenerDriver {
    pub fn new(config: CompatListenerConfig, queue_size: usize) -> Self {
        let adapter = GuideListenerAdapter { data_id: config.data_id };
        Hosted::host(Box::new(CompatListener::new(config)), adapter, queue_size)
    }

    pub fn stats(&self) -> (Stats, ReliableDriverStats) {
        (self.engine.stats(), driver_stats(self.host_stats(), 0))
    }
}

pub fn guide_policy(timeout: canx_core::Duration, retries: Option<u32>) -> RetryPolicy {
    RetryPolicy { timeout, retries, multiplier: 1, max_timeout: timeout }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use canx_core::frame::make_id;
    use parking_lot::Mutex;

    use super::*;
    use crate::runtime::{Bus, BusConfig};

    fn open(name: &str) -> Bus {
        Bus::open(BusConfig::virtual_bus(name)).unwrap()
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

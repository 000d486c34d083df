//! The engine host: one [`Driven`] implementation for every `canx-core`
//! engine.
//!
//! A core engine implements [`Engine`] (frames in, timers, frames out) and
//! [`Events`] (what it reports, possibly borrowing the engine). What the
//! runtime adds on a PC is the same for every engine and lives here once:
//!
//! - the application's bounded [`EventQueue`] (full: dropped and counted);
//! - the own-frame policy: the socket's loopback copies ([`Origin::Own`](crate::runtime::Origin::Own))
//!   never reach the engine; frames of the bus's other engines
//!   ([`Origin::Sibling`](crate::runtime::Origin::Sibling)) do, as on a real bus;
//! - back-pressure: [`Adapter::accept`] may decline a frame, e.g. a receiver
//!   without room in the application's queue ("no ACK without room");
//!   declined frames are counted ([`HostStats::declined`]);
//! - the ACK queue: with [`Adapter::EAGER_TX`] the frames an engine answers
//!   with are taken out right after each received frame, so a small ACK ring
//!   in the engine never overflows within one receive batch;
//! - a per-round send budget ([`Adapter::TX_PER_ROUND`]): an engine that
//!   used it keeps its next frame back in the ACK queue and asks for the
//!   next round at once, so the engines of one bus take turns (64 J1939
//!   ECUs each answering a CTS must not send 255 DTs one window after
//!   another, or the last receivers' T2 expires);
//! - [`HostStats::send_failed`]: frames the bus refused;
//! - a [`Backlog`] (FIFO) an adapter keeps in front of the engine's fixed
//!   slots, refilled after every round of events ([`Adapter::refill`]).
//!
//! The [`Adapter`] is the per-protocol part: it turns each borrowed engine
//! event into owned application events, keeps what the application needs
//! beyond the engine (tickets, a backlog) and names the frames the engine
//! needs from the kernel. Two hooks give it the engine itself where a
//! protocol needs that: [`Adapter::settle`] after each event (the event's
//! borrow has ended: J1939 copies a reassembled message out of its session
//! buffer and answers requests natively) and [`Adapter::feed`] (how a frame
//! enters the engine: J1939 chooses a CTS turnaround per frame).

use std::collections::VecDeque;
use std::sync::Arc;

use canx_core::driver::{Engine, Events};
use canx_core::{Filter, Frame, Instant};

use crate::runtime::engine::Driven;
use crate::runtime::{epoch_now, EventQueue, PeerHints, RxFrame};

/// The per-protocol part of a hosted engine (see the module doc).
pub trait Adapter<E: Engine + Events>: Send {
    /// The owned event the application reads.
    type Event: Send + 'static;
    /// Take the engine's transmit frames right after each received frame
    /// (an ACK queue in front of the engine's own small one).
    const EAGER_TX: bool = false;
    /// Frames sent per receive-thread round (the budget is renewed at every
    /// `handle_timeout`), so a long transfer does not starve reception.
    const TX_PER_ROUND: usize = usize::MAX;
    /// Turns one engine event into owned events pushed on `out`. `at`: epoch
    /// seconds of the frame that caused it (now, for a timer).
    fn event(&mut self, ev: E::Event<'_>, at: f64, out: &EventQueue<Self::Event>);
    /// Called after each [`Adapter::event`], once the event's borrow of the
    /// engine has ended and before the next event is polled: finishes what
    /// needs the engine itself (J1939: copy a reassembled message out of its
    /// session buffer, which stays valid until the next `poll_event`; answer
    /// a request natively). Default: nothing.
    fn settle(&mut self, _engine: &mut E, _at: f64, _out: &EventQueue<Self::Event>) {}
    /// Hands an accepted frame to the engine. Default:
    /// [`Engine::handle_frame`]; an adapter may pick another entry point of
    /// its engine (J1939: `handle_frame_from` with a CTS turnaround chosen
    /// from the frame's origin).
    fn feed(&mut self, engine: &mut E, now: Instant, rx: &RxFrame) {
        engine.handle_frame(now, &rx.frame);
    }
    /// What the engine may ask about its bus ([`Driven::attached`]).
    fn attached(&mut self, _hints: PeerHints) {}
    /// Whether the engine takes `rx` now (the own-frame policy was applied
    /// before). `room`: the application's queue has room. Default: take it.
    fn accept(&mut self, _rx: &RxFrame, _room: bool) -> Accept {
        Accept::Take
    }
    /// After a round of events and before the engine is asked for a frame
    /// (an engine slot may be free again): moves backlog entries into the
    /// engine.
    fn refill(&mut self, _engine: &mut E, _out: &EventQueue<Self::Event>) {}
    /// The time a frame about to be taken from the engine is stamped with:
    /// the round's `now` by default. An engine that paces its frames from
    /// the time it handed the previous one out (ISO-TP's STmin) gets a
    /// fresh reading of the bus clock, so a round that started earlier
    /// (a slow batch, a descheduled thread) cannot shorten the gap.
    fn tx_time(&self, now: Instant) -> Instant {
        now
    }
    /// Frames the engine produced were handed to the backend at `at` ([`Driven::sent`]).
    fn sent(&mut self, _at: Instant) {}
    /// `poll_transmit` gave out a frame; [`Adapter::sent`] or
    /// [`Adapter::failed`] follows once the backend took it or refused it.
    fn taken(&mut self, _frame: &Frame) {}
    /// A frame given out could not be sent ([`Driven::send_failed`]); the
    /// engine may want to know which (J1939 re-sends its address claim).
    fn failed(&mut self, _engine: &mut E, _frame: &Frame, _now: Instant) {}
    /// While `Some(t)`, the engine is not asked for a frame before `t` (bus
    /// clock) and the host's deadline is no earlier than `t`: ISO-TP keeps
    /// STmin from the moment the previous CF was actually sent.
    fn hold(&self) -> Option<Instant> {
        None
    }
    /// More to send than the round's budget allowed: the host asks to be
    /// run again at once.
    fn pending(&self, _engine: &E) -> bool {
        false
    }
    /// Frames the engine needs from the kernel (`None`: every frame).
    fn filters(&self) -> Option<Vec<Filter>> {
        None
    }
}

/// What [`Adapter::accept`] decides for a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accept {
    /// The engine gets it.
    Take,
    /// Not the engine's business (not counted).
    Ignore,
    /// The engine would act on it but may not now (counted in
    /// [`HostStats::declined`]); e.g. no ACK without room.
    Decline,
}

/// Counters every hosted engine has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Frames the bus refused to send (bus off, interface down, timeout);
    /// the engine's timers resend or give up as usual.
    pub send_failed: u64,
    /// Frames the adapter declined ([`Adapter::accept`]), e.g. data frames
    /// left unACKed because the application's queue was full.
    pub declined: u64,
}

/// A core engine and its adapter, driven by a bus's receive thread.
pub struct Hosted<E, A: Adapter<E>>
where
    E: Engine + Events,
{
    pub(crate) engine: Box<E>,
    pub(crate) adapter: A,
    events: Arc<EventQueue<A::Event>>,
    capacity: usize,
    /// Classic or FD frames ([`Engine::poll_transmit_frame`]: ISO-TP sends FD).
    acks: VecDeque<Frame>,
    budget: usize,
    stats: HostStats,
}

impl<E: Engine + Events, A: Adapter<E>> std::fmt::Debug for Hosted<E, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosted").field("stats", &self.stats).field("queued", &self.events.len()).finish()
    }
}

impl<E: Engine + Events, A: Adapter<E>> Hosted<E, A> {
    /// Hosts `engine` with an application queue of `queue` events (at least 1).
    pub fn host(engine: Box<E>, adapter: A, queue: usize) -> Self {
        let capacity = queue.max(1);
        Hosted {
            engine,
            adapter,
            events: Arc::new(EventQueue::new(capacity)),
            capacity,
            acks: VecDeque::new(),
            budget: A::TX_PER_ROUND,
            stats: HostStats::default(),
        }
    }

    /// The application's end of the event queue.
    pub fn events(&self) -> Arc<EventQueue<A::Event>> {
        self.events.clone()
    }

    pub fn host_stats(&self) -> HostStats {
        self.stats
    }

    /// Runs an application operation on the engine and adapter, then moves
    /// the events it caused out (and refills the engine from the backlog).
    pub fn with<R>(&mut self, op: impl FnOnce(&mut E, &mut A, &EventQueue<A::Event>) -> R) -> R {
        let r = op(&mut self.engine, &mut self.adapter, &self.events);
        self.drain(None);
        r
    }

    /// Hands the engine's events to the adapter, stamped `at` (epoch
    /// seconds; `None`: the time of the first event, read only if there is
    /// one, as this runs every round).
    fn drain(&mut self, at: Option<f64>) {
        let mut at = at;
        loop {
            // `let else`, not `while let`: the event's borrow of the engine
            // must end before `settle` takes the engine.
            let Some(ev) = self.engine.poll_event() else { break };
            let at = *at.get_or_insert_with(epoch_now);
            self.adapter.event(ev, at, &self.events);
            self.adapter.settle(&mut self.engine, at, &self.events);
        }
        self.adapter.refill(&mut self.engine, &self.events);
    }
}

impl<E, A> Driven for Hosted<E, A>
where
    E: Engine + Events + Send,
    A: Adapter<E>,
{
    fn handle_frame(&mut self, now: Instant, rx: &RxFrame) {
        if rx.own() {
            return;
        }
        let room = self.events.len() < self.capacity;
        match self.adapter.accept(rx, room) {
            Accept::Take => {}
            Accept::Ignore => return,
            Accept::Decline => {
                self.stats.declined += 1;
                return;
            }
        }
        self.adapter.feed(&mut self.engine, now, rx);
        if A::EAGER_TX {
            while let Some(f) = self.engine.poll_transmit_frame(now) {
                self.acks.push_back(f);
            }
        }
        self.drain(Some(rx.timestamp));
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.budget = A::TX_PER_ROUND;
        self.engine.handle_timeout(now);
        self.drain(None);
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<Frame> {
        let now = self.adapter.tx_time(now);
        if self.budget == 0 {
            // Spent: keep the engine's next frame (if any) for the next
            // round, so that `poll_timeout` asks for that round at once.
            if self.acks.is_empty()
                && !self.adapter.pending(&self.engine)
                && self.adapter.hold().is_none_or(|t| now >= t)
            {
                self.adapter.refill(&mut self.engine, &self.events);
                if let Some(f) = self.engine.poll_transmit_frame(now) {
                    self.acks.push_back(f);
                }
            }
            return None;
        }
        let f = match self.acks.pop_front() {
            Some(f) => f,
            None => {
                if self.adapter.hold().is_some_and(|t| now < t) {
                    return None;
                }
                self.adapter.refill(&mut self.engine, &self.events);
                self.engine.poll_transmit_frame(now)?
            }
        };
        self.adapter.taken(&f);
        self.budget -= 1;
        Some(f)
    }
    fn renew_budget(&mut self) -> bool {
        if self.budget == 0 && (!self.acks.is_empty() || self.adapter.pending(&self.engine)) {
            self.budget = A::TX_PER_ROUND;
            return true;
        }
        false
    }
    fn poll_timeout(&self) -> Option<Instant> {
        // More to send: come back at once (after a look at received frames).
        // Instant::ZERO is due on any bus clock (the wait saturates at zero).
        let more = (!self.acks.is_empty() || self.adapter.pending(&self.engine)).then_some(Instant::ZERO);
        let engine = self.engine.poll_timeout();
        let engine = match self.adapter.hold() {
            Some(h) => engine.map(|t| t.max(h)),
            None => engine,
        };
        canx_core::time::earliest(engine, more)
    }
    /// Events the engine raised while sending (a completion on its last
    /// frame) leave in the same round.
    fn flush_events(&mut self) {
        self.drain(None);
    }
    fn filters(&self) -> Option<Vec<Filter>> {
        self.adapter.filters()
    }
    fn send_failed(&mut self, frame: &Frame, _error: &crate::runtime::Error, now: Instant) {
        self.adapter.failed(&mut self.engine, frame, now);
        self.stats.send_failed += 1;
    }
    fn attached(&mut self, hints: PeerHints) {
        self.adapter.attached(hints);
    }
    fn sent(&mut self, _count: usize, at: Instant) {
        self.adapter.sent(at);
    }
}

/// What the engine said to one backlog entry ([`Backlog::feed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// The engine took it (or refused it for good: the caller reported
    /// that); it leaves the backlog.
    Done,
    /// The engine is full: stop feeding.
    Full,
    /// Not now for this entry's key; later entries of other keys may go
    /// (entries of the same key keep their order).
    Busy,
}

/// A FIFO in front of an engine's fixed slots.
#[derive(Debug)]
pub struct Backlog<T> {
    items: VecDeque<T>,
}

impl<T> Default for Backlog<T> {
    fn default() -> Self {
        Backlog { items: VecDeque::new() }
    }
}

impl<T> Backlog<T> {
    pub fn push(&mut self, t: T) {
        self.items.push_back(t);
    }
    pub fn len(&self) -> usize {
        self.items.len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Offers entries in order until the engine is full. An entry whose key
    /// is [`Offer::Busy`] blocks the later entries of that key only.
    pub fn feed<K: PartialEq>(&mut self, key: impl Fn(&T) -> K, mut offer: impl FnMut(&T) -> Offer) {
        let mut blocked: Vec<K> = Vec::new();
        let mut i = 0;
        while i < self.items.len() {
            let k = key(&self.items[i]);
            if blocked.contains(&k) {
                i += 1;
                continue;
            }
            match offer(&self.items[i]) {
                Offer::Done => {
                    self.items.remove(i);
                }
                Offer::Full => break,
                Offer::Busy => {
                    blocked.push(k);
                    i += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_keeps_key_order_and_stops_when_full() {
        let mut b: Backlog<(u8, u32)> = Backlog::default();
        for e in [(1, 10), (1, 11), (2, 20), (3, 30), (2, 21)] {
            b.push(e);
        }
        let mut taken = vec![];
        // Key 1 busy; take key 2 and 3 entries until two were taken.
        b.feed(
            |e| e.0,
            |e| {
                if e.0 == 1 {
                    Offer::Busy
                } else if taken.len() == 2 {
                    Offer::Full
                } else {
                    taken.push(e.1);
                    Offer::Done
                }
            },
        );
        assert_eq!(taken, [20, 30]);
        assert_eq!(b.items.iter().map(|e| e.1).collect::<Vec<_>>(), [10, 11, 21]);
    }
}

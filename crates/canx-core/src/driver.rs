//! The embedded driver: pumps any set of canx engines over an
//! `embedded_can` controller with a caller-supplied clock.
//!
//! Every canx engine is sans-IO; something has to move frames between it and
//! a CAN controller and tell it the time. On a PC that is the runtime crate
//! (sockets and threads); on a microcontroller it is [`Driver`], which needs
//! nothing but a HAL's [`embedded_can::nb::Can`] (or
//! [`embedded_can::blocking::Can`]) implementation and the current
//! [`Instant`] from a board timer.
//!
//! ## One poll ([`Driver::poll`])
//! 1. **Receive**: read frames until the controller has none
//!    (`WouldBlock`) or [`DriverConfig::rx_budget`] frames were read; each
//!    goes to every engine ([`Engine::handle_frame`]).
//! 2. **Timers**: every engine whose [`Engine::poll_timeout`] is due gets
//!    [`Engine::handle_timeout`].
//! 3. **Transmit**: the driver's queue (`TXQ` frames) goes to the
//!    controller; when its mailboxes are full (`nb::Error::WouldBlock`) the
//!    frame stays at the head of the queue and is tried again on the next
//!    poll (back-pressure). While the queue has room, frames are pulled from
//!    the engines round-robin, one per engine per round, so a chatty engine
//!    cannot starve the others; a frame an engine did not hand over stays in
//!    that engine's own bounded queue. A frame the controller hands back
//!    (`Ok(Some(frame))`: a lower-priority frame displaced from a mailbox,
//!    as `bxcan` does) goes back to the head of the queue.
//! 4. Returns the next instant to poll at: the earliest engine deadline, or
//!    `now` while frames wait for a mailbox (poll again when a mailbox
//!    frees: a transmit-complete interrupt or the next tick).
//!
//! Poll after every receive interrupt, at the returned instant, and after
//! every call into an engine's API (a `send`, a `request`, ...). Engine
//! events are not touched: after `poll`, drain each engine's `poll_event()`
//! as its module documents.
//!
//! ## Errors never panic
//! Controller errors become counters ([`DriverStats`]) and
//! [`DriverEvent`]s (a bounded queue of `EVQ`; what does not fit is counted
//! in [`DriverStats::dropped_events`]). A receive error (overrun, bus error)
//! is counted and reading goes on; a transmit error drops that one frame
//! (counted) so a bus-off controller cannot wedge the queue; the engines'
//! own timeouts and retries then do what the protocol says.
//!
//! ## Local echo
//! With [`DriverConfig::local_echo`] (default on), a frame pulled from one
//! engine is also given to the driver's *other* engines, as SocketCAN loops
//! a socket's frames back to the other sockets of the host: two J1939 CAs
//! sharing one controller then see each other's address claims. An engine
//! never gets its own frame back (the engines' rule, see [`crate::j1939`]).
//! The echo happens when the driver queues the frame, before it is on the
//! bus. Engine indices are positions in the `engines` slice, so pass the same
//! engines in the same order to every poll.
//!
//! ## Test double
//! [`mem`] is an in-memory bus of `NODES` controllers, each with a limited
//! mailbox count, arbitration by identifier, receive overruns and injected
//! errors: the host tests and the qemu firmware (qemu emulates no CAN
//! controller) run the very same driver over it.
//!
//! ```
//! use core::cell::RefCell;
//! use canx_core::driver::{mem::{MemBus, MemPort}, Driver, Engine};
//! use canx_core::reliable::{CompatListener, CompatSender, CompatEvent};
//! use canx_core::{Duration, Instant};
//!
//! // Two nodes on an in-memory bus, one mailbox each.
//! let bus: RefCell<MemBus<2, 1, 8>> = RefCell::new(MemBus::new());
//! let mut a: Driver<_, 4> = Driver::new(MemPort::new(&bus, 0));
//! let mut b: Driver<_, 4> = Driver::new(MemPort::new(&bus, 1));
//! let mut sender = CompatSender::default();
//! let mut listener: CompatListener = CompatListener::default();
//! let mut now = Instant::ZERO;
//! sender.send(now).unwrap();
//! for _ in 0..10 {
//!     a.poll(now, &mut [&mut sender as &mut dyn Engine]);
//!     b.poll(now, &mut [&mut listener as &mut dyn Engine]);
//!     bus.borrow_mut().deliver_all();
//!     now += Duration::from_millis(1);
//! }
//! assert!(matches!(listener.poll_event(), Some(CompatEvent::Received { count: 0, .. })));
//! assert!(matches!(sender.poll_event(), Some(CompatEvent::Delivered { count: 0, tries: 1 })));
//! ```

use core::fmt;

use embedded_can::ErrorKind;

use crate::frame::{CanFrame, Frame};
use crate::time::{earliest, Instant};

pub mod mem;
#[cfg(test)]
mod tests;

/// The common shape of every canx engine, as the driver sees it. Each
/// method is the engine's own method of the same name (see the engine's
/// docs for what it does); events stay engine-specific and are read from
/// the engine directly.
pub trait Engine {
    /// Feeds one received bus frame.
    fn handle_frame(&mut self, now: Instant, frame: &Frame);
    /// Runs expired timers; extra calls are harmless.
    fn handle_timeout(&mut self, now: Instant);
    /// The next frame to send, if any.
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame>;
    /// The next deadline, if any.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The next frame to send, classic or CAN FD. Hosts that can send FD
    /// frames (the runtime) call this instead of `poll_transmit`; engines
    /// that speak only classic CAN keep this default.
    fn poll_transmit_frame(&mut self, now: Instant) -> Option<Frame> {
        self.poll_transmit(now).map(Frame::Can)
    }
}

/// The events half of an engine: what it reports to its application.
/// Each engine module implements it next to the engine. An event may borrow
/// the engine (a reassembled CAN-X message points into its slot) until the
/// next call, hence the lifetime; a host copies what it keeps.
pub trait Events {
    /// One event, possibly borrowing the engine.
    type Event<'a>
    where
        Self: 'a;
    /// The next event, if any (the engine's own `poll_event`).
    fn poll_event(&mut self) -> Option<Self::Event<'_>>;
}

impl<E: Engine + ?Sized> Engine for &mut E {
    fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        (**self).handle_frame(now, frame)
    }
    fn handle_timeout(&mut self, now: Instant) {
        (**self).handle_timeout(now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        (**self).poll_transmit(now)
    }
    fn poll_timeout(&self) -> Option<Instant> {
        (**self).poll_timeout()
    }
    fn poll_transmit_frame(&mut self, now: Instant) -> Option<Frame> {
        (**self).poll_transmit_frame(now)
    }
}

/// Implements [`Engine`] by forwarding to the type's inherent methods of
/// the same names (every engine of the core has them).
macro_rules! forward_engine {
    ($([$($gen:tt)*] $ty:ty;)*) => {$(
        impl<$($gen)*> Engine for $ty {
            fn handle_frame(&mut self, now: Instant, frame: &Frame) {
                <$ty>::handle_frame(self, now, frame)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$ty>::handle_timeout(self, now)
            }
            fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
                <$ty>::poll_transmit(self, now)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }
        }
    )*};
}

forward_engine! {
    ['a, const S: usize, const R: usize, const E: usize, const T: usize] crate::j1939::Ecu<'a, S, R, E, T>;
    [const S: usize, const Q: usize] crate::j1939::Transport<S, Q>;
    ['a, const S: usize, const Q: usize] crate::j1939::Etp<'a, S, Q>;
    [const T: usize] crate::j1939::AddressClaimer<T>;
    [] crate::reliable::CompatSender;
    [const A: usize, const E: usize] crate::reliable::CompatListener<A, E>;
    [const S: usize, const P: usize] crate::reliable::ReliableSender<S, P>;
    [const P: usize, const E: usize, const A: usize] crate::reliable::ReliableReceiver<P, E, A>;
    [const TS: usize, const K: usize, const RS: usize, const E: usize] crate::canx_proto::Endpoint<TS, K, RS, E>;
    [T: crate::megasquirt::Tables, const TXQ: usize, const EVQ: usize] crate::megasquirt::Server<T, TXQ, EVQ>;
    [const OPS: usize, const BUF: usize] crate::megasquirt::Client<OPS, BUF>;
    [T: crate::megasquirt::Tables, const TXQ: usize, const EVQ: usize, const OPS: usize, const BUF: usize, const N: usize, const RAWQ: usize]
        crate::megasquirt::Node<T, TXQ, EVQ, OPS, BUF, N, RAWQ>;
}

/// ISO-TP sends CAN FD frames too, so its inherent `poll_transmit` returns
/// a [`Frame`]: the classic `poll_transmit` hands out classic frames only.
/// A channel configured for FD on a classic-only controller sends nothing
/// and its N_As/N_Ar timers report `N_TIMEOUT_A`.
impl Engine for crate::isotp::Channel<'_> {
    fn handle_frame(&mut self, now: Instant, frame: &Frame) {
        crate::isotp::Channel::handle_frame(self, now, frame)
    }
    fn handle_timeout(&mut self, now: Instant) {
        crate::isotp::Channel::handle_timeout(self, now)
    }
    fn poll_transmit(&mut self, now: Instant) -> Option<CanFrame> {
        if self.config().fd {
            return None;
        }
        match crate::isotp::Channel::poll_transmit(self, now) {
            Some(Frame::Can(f)) => Some(f),
            _ => None,
        }
    }
    fn poll_timeout(&self) -> Option<Instant> {
        crate::isotp::Channel::poll_timeout(self)
    }
    fn poll_transmit_frame(&mut self, now: Instant) -> Option<Frame> {
        crate::isotp::Channel::poll_transmit(self, now)
    }
}

/// Settings of a [`Driver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// Give each frame pulled from one engine to the driver's other engines
    /// (see the module doc). Default `true`.
    pub local_echo: bool,
    /// Most frames read from the controller in one poll, so one poll takes
    /// bounded time on a flooded bus. Default 32.
    pub rx_budget: u16,
    /// Most frames handed to the controller in one poll. Default 64.
    pub tx_budget: u16,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { local_echo: true, rx_budget: 32, tx_budget: 64 }
    }
}

/// What went wrong in the driver or the controller (never a panic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverEvent {
    /// The controller reported an error on receive (overrun, bus error, ...).
    ReceiveError(ErrorKind),
    /// The controller refused a frame with an error; the frame was dropped.
    TransmitError(ErrorKind),
    /// A received frame canx cannot represent (a remote frame asking for
    /// more than 8 bytes), or a canx frame the controller's frame type
    /// refused; the frame was dropped.
    Unconvertible { transmit: bool },
}

impl fmt::Display for DriverEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriverEvent::ReceiveError(k) => write!(f, "receive error: {k}"),
            DriverEvent::TransmitError(k) => write!(f, "transmit error (frame dropped): {k}"),
            DriverEvent::Unconvertible { transmit: true } => f.write_str("controller refused a frame format"),
            DriverEvent::Unconvertible { transmit: false } => f.write_str("received a frame canx cannot represent"),
        }
    }
}

/// Counters of a [`Driver`]; they only grow (saturating at `u32::MAX`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames read from the controller and given to the engines.
    pub received: u32,
    /// Frames the controller accepted.
    pub transmitted: u32,
    /// Transmit attempts refused with `WouldBlock` (mailboxes full).
    pub would_block: u32,
    /// Frames the controller handed back from a mailbox (requeued).
    pub displaced: u32,
    /// Receive errors reported by the controller.
    pub receive_errors: u32,
    /// Transmit errors reported by the controller (each dropped a frame).
    pub transmit_errors: u32,
    /// Frames dropped because one side could not represent them.
    pub unconvertible: u32,
    /// Frames given to other engines of this driver (local echo).
    pub echoed: u32,
    /// Driver events dropped because the event queue was full.
    pub dropped_events: u32,
}

fn bump(c: &mut u32) {
    *c = c.saturating_add(1);
}

/// A bounded double-ended queue of frames on a fixed array.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FrameQueue<const N: usize> {
    items: [Option<CanFrame>; N],
    head: usize,
    len: usize,
}

impl<const N: usize> FrameQueue<N> {
    pub(crate) const fn new() -> Self {
        FrameQueue { items: [None; N], head: 0, len: 0 }
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub(crate) fn is_full(&self) -> bool {
        self.len >= N
    }
    /// Appends; gives the frame back when full.
    pub(crate) fn push_back(&mut self, f: CanFrame) -> Result<(), CanFrame> {
        if self.is_full() {
            return Err(f);
        }
        self.items[(self.head + self.len) % N] = Some(f);
        self.len += 1;
        Ok(())
    }
    /// Puts a frame before the head; gives it back when full.
    pub(crate) fn push_front(&mut self, f: CanFrame) -> Result<(), CanFrame> {
        if self.is_full() {
            return Err(f);
        }
        self.head = (self.head + N - 1) % N;
        self.items[self.head] = Some(f);
        self.len += 1;
        Ok(())
    }
    pub(crate) fn front(&self) -> Option<&CanFrame> {
        if self.len == 0 {
            return None;
        }
        self.items[self.head].as_ref()
    }
    pub(crate) fn pop_front(&mut self) -> Option<CanFrame> {
        if self.len == 0 {
            return None;
        }
        let f = self.items[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        f
    }
}

/// A device frame as a canx frame; `None` for a remote frame asking for more
/// than 8 bytes or an invalid length.
pub fn to_canx<F: embedded_can::Frame>(f: &F) -> Option<CanFrame> {
    if f.is_remote_frame() {
        CanFrame::new_remote(f.id(), f.dlc()).ok()
    } else {
        CanFrame::new(f.id(), f.data()).ok()
    }
}

/// A canx frame as a device frame; `None` when the device type refuses it.
pub fn to_device<F: embedded_can::Frame>(f: &CanFrame) -> Option<F> {
    if f.is_remote() {
        F::new_remote(f.id(), usize::from(f.dlc()))
    } else {
        F::new(f.id(), f.data())
    }
}

/// What one transmit attempt did.
enum TxOutcome {
    Sent,
    /// Sent; the controller handed this older frame back (or `None`: one
    /// canx cannot represent).
    Displaced(Option<CanFrame>),
    Blocked,
    Failed(ErrorKind),
    Unconvertible,
}

/// Pumps engines over one CAN controller `CAN`. `TXQ` (at least 1): frames
/// waiting for a mailbox (20 bytes each); `EVQ`: [`DriverEvent`]s waiting for
/// [`Driver::poll_event`].
pub struct Driver<CAN, const TXQ: usize = 8, const EVQ: usize = 4> {
    can: CAN,
    config: DriverConfig,
    queue: FrameQueue<TXQ>,
    events: crate::ring::Ring<DriverEvent, EVQ>,
    stats: DriverStats,
    next_engine: usize,
}

impl<CAN, const TXQ: usize, const EVQ: usize> fmt::Debug for Driver<CAN, TXQ, EVQ> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("config", &self.config)
            .field("queued", &self.queue.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<CAN, const TXQ: usize, const EVQ: usize> Driver<CAN, TXQ, EVQ> {
    /// A driver with the default [`DriverConfig`].
    pub fn new(can: CAN) -> Self {
        Self::with_config(can, DriverConfig::default())
    }

    /// Refuses `Driver<_, 0>` at compile time: a driver that can queue
    /// nothing could never send.
    const NONEMPTY_QUEUE: () = assert!(TXQ > 0, "Driver needs TXQ >= 1");

    pub fn with_config(can: CAN, config: DriverConfig) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::NONEMPTY_QUEUE;
        Driver {
            can,
            config,
            queue: FrameQueue::new(),
            events: crate::ring::Ring::new(),
            stats: DriverStats::default(),
            next_engine: 0,
        }
    }

    pub fn config(&self) -> &DriverConfig {
        &self.config
    }
    pub fn stats(&self) -> DriverStats {
        self.stats
    }
    /// Frames waiting for a mailbox.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }
    /// The next driver event (controller errors, dropped frames).
    pub fn poll_event(&mut self) -> Option<DriverEvent> {
        self.events.pop()
    }
    pub fn can(&self) -> &CAN {
        &self.can
    }
    /// The controller, e.g. to change filters or read error counters.
    pub fn can_mut(&mut self) -> &mut CAN {
        &mut self.can
    }
    /// Gives the controller back (queued frames are lost).
    pub fn release(self) -> CAN {
        self.can
    }

    /// Feeds a frame received outside the driver (an interrupt handler's
    /// queue, a blocking receive) to every engine.
    pub fn handle_received<F: embedded_can::Frame>(
        &mut self,
        now: Instant,
        frame: &F,
        engines: &mut [&mut dyn Engine],
    ) {
        match to_canx(frame) {
            Some(f) => {
                bump(&mut self.stats.received);
                let f = Frame::Can(f);
                for e in engines.iter_mut() {
                    e.handle_frame(now, &f);
                }
            }
            None => {
                bump(&mut self.stats.unconvertible);
                self.event(DriverEvent::Unconvertible { transmit: false });
            }
        }
    }

    fn event(&mut self, e: DriverEvent) {
        if !self.events.push_counted(e) {
            bump(&mut self.stats.dropped_events);
        }
    }

    fn run_timers(now: Instant, engines: &mut [&mut dyn Engine]) {
        for e in engines.iter_mut() {
            if e.poll_timeout().is_some_and(|t| t <= now) {
                e.handle_timeout(now);
            }
        }
    }

    /// Pulls frames from the engines round-robin (one per engine per turn,
    /// resuming after the engine served last) while the queue has room;
    /// returns how many.
    fn fill(&mut self, now: Instant, engines: &mut [&mut dyn Engine]) -> usize {
        let n = engines.len();
        let mut pulled = 0;
        let mut idle = 0;
        while idle < n && !self.queue.is_full() {
            let i = self.next_engine % n;
            self.next_engine = (i + 1) % n;
            let Some(f) = engines[i].poll_transmit(now) else {
                idle += 1;
                continue;
            };
            idle = 0;
            pulled += 1;
            // Room was checked above, so this cannot fail.
            let _ = self.queue.push_back(f);
            if self.config.local_echo && n > 1 {
                let echo = Frame::Can(f);
                for (j, other) in engines.iter_mut().enumerate() {
                    if j != i {
                        other.handle_frame(now, &echo);
                    }
                }
                bump(&mut self.stats.echoed);
            }
        }
        pulled
    }

    /// Hands queued frames to the controller until it blocks, the queue is
    /// empty or the budget is spent; returns `true` when it stopped early.
    fn flush(&mut self, budget: &mut u16, mut send: impl FnMut(&mut CAN, &CanFrame) -> TxOutcome) -> bool {
        // Every iteration pops a frame or stops, except a displacement, which
        // puts one back: bound the loop so a controller that keeps handing
        // frames back cannot spin forever.
        let mut spins = 2 * TXQ + 2;
        while let Some(f) = self.queue.front().copied() {
            if *budget == 0 || spins == 0 {
                return true;
            }
            spins -= 1;
            match send(&mut self.can, &f) {
                TxOutcome::Blocked => {
                    bump(&mut self.stats.would_block);
                    return true;
                }
                outcome => {
                    self.queue.pop_front();
                    match outcome {
                        TxOutcome::Sent => {
                            *budget -= 1;
                            bump(&mut self.stats.transmitted);
                        }
                        TxOutcome::Displaced(back) => {
                            *budget -= 1;
                            bump(&mut self.stats.transmitted);
                            bump(&mut self.stats.displaced);
                            match back {
                                // One frame was just popped, so there is room.
                                Some(b) => {
                                    let _ = self.queue.push_front(b);
                                }
                                None => {
                                    bump(&mut self.stats.unconvertible);
                                    self.event(DriverEvent::Unconvertible { transmit: false });
                                }
                            }
                        }
                        TxOutcome::Failed(kind) => {
                            bump(&mut self.stats.transmit_errors);
                            self.event(DriverEvent::TransmitError(kind));
                        }
                        TxOutcome::Unconvertible => {
                            bump(&mut self.stats.unconvertible);
                            self.event(DriverEvent::Unconvertible { transmit: true });
                        }
                        TxOutcome::Blocked => {}
                    }
                }
            }
        }
        false
    }

    /// Timers, then transmit, then the next deadline (steps 2-4 of the module doc).
    fn finish_poll(
        &mut self,
        now: Instant,
        engines: &mut [&mut dyn Engine],
        mut send: impl FnMut(&mut CAN, &CanFrame) -> TxOutcome,
    ) -> Option<Instant> {
        Self::run_timers(now, engines);
        let mut budget = self.config.tx_budget;
        let mut blocked = self.flush(&mut budget, &mut send);
        while !blocked && budget > 0 {
            if self.fill(now, engines) == 0 {
                break;
            }
            blocked = self.flush(&mut budget, &mut send);
        }
        // Top the queue up even when blocked, so frames wait here (not
        // in the engines' smaller queues) for the next mailbox.
        self.fill(now, engines);
        let mut next = engines.iter().fold(None, |acc, e| earliest(acc, e.poll_timeout()));
        if !self.queue.is_empty() {
            next = earliest(next, Some(now));
        }
        next
    }
}

impl<CAN: embedded_can::nb::Can, const TXQ: usize, const EVQ: usize> Driver<CAN, TXQ, EVQ> {
    /// One pass over controller and engines (see the module doc); returns
    /// when to poll next at the latest (`None`: only on the next frame).
    pub fn poll(&mut self, now: Instant, engines: &mut [&mut dyn Engine]) -> Option<Instant> {
        use embedded_can::Error as _;
        for _ in 0..self.config.rx_budget {
            match self.can.receive() {
                Ok(f) => self.handle_received(now, &f, engines),
                Err(nb::Error::WouldBlock) => break,
                Err(nb::Error::Other(e)) => {
                    bump(&mut self.stats.receive_errors);
                    self.event(DriverEvent::ReceiveError(e.kind()));
                }
            }
        }
        self.finish_poll(now, engines, |can, f| {
            let Some(df) = to_device::<CAN::Frame>(f) else { return TxOutcome::Unconvertible };
            match can.transmit(&df) {
                Ok(None) => TxOutcome::Sent,
                Ok(Some(back)) => TxOutcome::Displaced(to_canx(&back)),
                Err(nb::Error::WouldBlock) => TxOutcome::Blocked,
                Err(nb::Error::Other(e)) => TxOutcome::Failed(e.kind()),
            }
        })
    }
}

impl<CAN: embedded_can::blocking::Can, const TXQ: usize, const EVQ: usize> Driver<CAN, TXQ, EVQ> {
    /// [`Driver::poll`] for a blocking controller: timers and transmit
    /// (each frame with a blocking `transmit`), but no receive, because a
    /// blocking receive waits for a frame. Receive with
    /// [`Driver::receive_blocking`] (e.g. in its own task) or feed frames
    /// with [`Driver::handle_received`].
    pub fn poll_blocking(&mut self, now: Instant, engines: &mut [&mut dyn Engine]) -> Option<Instant> {
        use embedded_can::Error as _;
        self.finish_poll(now, engines, |can, f| {
            let Some(df) = to_device::<CAN::Frame>(f) else { return TxOutcome::Unconvertible };
            match can.transmit(&df) {
                Ok(()) => TxOutcome::Sent,
                Err(e) => TxOutcome::Failed(e.kind()),
            }
        })
    }

    /// Waits for one frame and gives it to every engine, stamped with
    /// `clock()` read after it arrived; an error becomes a
    /// [`DriverEvent::ReceiveError`].
    pub fn receive_blocking(&mut self, clock: impl FnOnce() -> Instant, engines: &mut [&mut dyn Engine]) {
        use embedded_can::Error as _;
        match self.can.receive() {
            Ok(f) => self.handle_received(clock(), &f, engines),
            Err(e) => {
                bump(&mut self.stats.receive_errors);
                self.event(DriverEvent::ReceiveError(e.kind()));
            }
        }
    }
}

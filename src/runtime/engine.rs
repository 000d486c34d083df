//! Driving sans-IO protocol engines from a bus's receive thread.
//!
//! A [`Driven`] engine is a `canx-core` state machine wrapped for the
//! runtime: the receive thread feeds it every received frame, calls
//! `handle_timeout` when its deadline passes, sends what it wants to send and
//! lets it move finished events to its application queue. The receive thread
//! waits no longer than the earliest engine deadline, so timers fire on time
//! without a thread per engine. Application calls (send a message, answer a
//! request) lock the engine, change it, and [`EngineHandle::kick`] it: the
//! frames it queued go out from the calling thread at once (no hand-over to
//! the receive thread, which costs a thread wake-up per message), then the
//! receive thread is woken to honour the engine's new deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use canx_core::{Filter, Frame, Instant};
use parking_lot::Mutex;

use super::backend::PeerHints;
use super::RxFrame;

/// The system clock for engines: microseconds since the first call in this
/// process (monotonic). A bus reads its [`Clock`] instead; this is
/// [`Clock::System`].
pub fn now() -> Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(std::time::Instant::now);
    Instant::from_micros(e.elapsed().as_micros() as u64)
}

/// The clock a bus gives its engines ([`super::BusConfig::clock`]): the
/// times passed to `handle_frame`, `handle_timeout` and `poll_transmit`, and
/// what the receive thread's deadline wait is measured against. A plain enum
/// (one branch per read, no dynamic call): the read is on the hot path.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The process's monotonic clock ([`now`]).
    #[default]
    System,
    /// Time that moves only when a test advances it (deterministic tests;
    /// quinn-proto's `Pair` is the model).
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// The process's monotonic clock (the default).
    pub fn system() -> Clock {
        Clock::System
    }

    /// A manual clock starting at `start`, and the handle that advances it.
    pub fn manual(start: Instant) -> (Clock, Arc<ManualClock>) {
        let m = Arc::new(ManualClock { micros: AtomicU64::new(start.total_micros()) });
        (Clock::Manual(m.clone()), m)
    }

    /// Now, on this clock.
    #[inline]
    pub fn now(&self) -> Instant {
        match self {
            Clock::System => now(),
            Clock::Manual(m) => m.now(),
        }
    }
}

/// A clock a test sets and advances ([`Clock::manual`]). Advancing it wakes
/// nobody: a test on a manual clock steps its bus ([`super::Bus::step`]).
#[derive(Debug)]
pub struct ManualClock {
    micros: AtomicU64,
}

impl ManualClock {
    /// The time it was last set to.
    pub fn now(&self) -> Instant {
        Instant::from_micros(self.micros.load(Ordering::SeqCst))
    }

    /// Moves time forward by `d`.
    pub fn advance(&self, d: canx_core::Duration) {
        self.micros.fetch_add(d.total_micros(), Ordering::SeqCst);
    }
}

/// A protocol engine as the receive thread drives it.
pub trait Driven: Send {
    /// A frame arrived (own frames too, marked `rx.own`; most engines skip them).
    fn handle_frame(&mut self, now: Instant, rx: &RxFrame);
    /// Time passed; act on expired timers. Extra calls are harmless.
    fn handle_timeout(&mut self, now: Instant);
    /// The next frame to send, or None when there is nothing to send now.
    fn poll_transmit(&mut self, now: Instant) -> Option<Frame>;
    /// The earliest deadline, if any.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Moves finished events to the application's queue. Called after every
    /// round of frames and timeouts.
    fn flush_events(&mut self);
    /// Frames the engine needs from the kernel (`None`: every frame).
    fn filters(&self) -> Option<Vec<Filter>> {
        None
    }
    /// A frame it produced could not be sent (bus off, interface down, a
    /// transmit queue that stayed full); `now` is the bus clock.
    fn send_failed(&mut self, _frame: &Frame, _error: &super::Error, _now: Instant) {}
    /// `count` frames it produced were handed to the backend; `at` is the
    /// bus clock read after the send returned (ISO-TP paces its next CF
    /// from it, as the kernel paces from the echo).
    fn sent(&mut self, _count: usize, _at: Instant) {}
    /// Called once by [`super::Bus::attach`], before the first frame: what
    /// the engine may ask about its bus (including the bus's clock, for
    /// changes made from the application: [`PeerHints::now`]).
    fn attached(&mut self, _hints: PeerHints) {}
    /// The engine stopped at its per-round send budget with more to send:
    /// renews the budget and returns true. The receive thread asks only when
    /// the engine is alone on its bus (nobody to take turns with), so a lone
    /// J1939 ECU sends a 255-DT window in full `send_many` batches.
    /// Default: false (no budget).
    fn renew_budget(&mut self) -> bool {
        false
    }
}

/// A shared engine.
pub type EngineRef = Arc<Mutex<dyn Driven>>;

/// Sends what a (locked) engine wants to send now and moves its events out.
pub(crate) type Flush = Arc<dyn Fn(&mut dyn Driven) + Send + Sync>;

/// What an application holds to poke its engine's bus.
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) engine: EngineRef,
    pub(crate) wake: Arc<dyn Fn() + Send + Sync>,
    /// Sends what the (locked) engine wants to send now and moves its
    /// events out; nothing once the bus is shut down.
    pub(crate) flush: Flush,
    /// The bus's clock.
    pub(crate) clock: Clock,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineHandle")
    }
}

impl EngineHandle {
    /// Now, on the bus's clock: the time to give the engine for changes
    /// made from the application (start a timer, send a message).
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Runs `op` on the engine, sends the frames it queued from this
    /// thread, then wakes the receive thread so the engine's new deadline is
    /// honoured.
    pub fn with<R>(&self, op: impl FnOnce(&mut dyn Driven) -> R) -> R {
        let r = {
            let mut g = self.engine.lock();
            let r = op(&mut *g);
            (self.flush)(&mut *g);
            r
        };
        (self.wake)();
        r
    }

    /// After a change made with the engine unlocked again: sends the frames
    /// it queued from this thread and wakes the receive thread. Must not be
    /// called with the engine locked.
    pub fn kick(&self) {
        (self.flush)(&mut *self.engine.lock());
        (self.wake)();
    }
}

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

use std::sync::{Arc, OnceLock};

use canx_core::{Filter, Frame, Instant};
use parking_lot::Mutex;

use super::backend::PeerHints;
use super::RxFrame;

/// The runtime's clock for engines: microseconds since the first call in
/// this process (monotonic).
pub fn now() -> Instant {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let e = EPOCH.get_or_init(std::time::Instant::now);
    Instant::from_micros(e.elapsed().as_micros() as u64)
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
    /// A frame it produced could not be sent (bus off, interface down).
    fn send_failed(&mut self, _frame: &Frame, _error: &super::Error) {}
    /// Called once by [`super::Bus::attach`], before the first frame: what
    /// the engine may ask about its bus.
    fn attached(&mut self, _hints: PeerHints) {}
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
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineHandle")
    }
}

impl EngineHandle {
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

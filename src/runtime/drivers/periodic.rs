//! Periodic transmission (python-can `send_periodic`) as a native timer on
//! the bus's receive thread: no Python runs per frame and no extra thread.
//! It runs where the backend does not offload periodic sends itself
//! ([`Backend::periodic`](crate::runtime::Backend::periodic): on SocketCAN
//! the kernel's broadcast manager, [`bcm`](crate::runtime::bcm), keeps the
//! timer); [`PeriodicSender`](crate::runtime::PeriodicSender) picks one.
//!
//! The task sends its frames in turn, one every `period`, from the moment it
//! is started; deadlines advance by whole periods from the start (no drift).
//! If the thread falls behind by more than one period (a stalled machine),
//! it sends one frame when it wakes and skips the missed slots (no burst),
//! staying on the original grid. Time is the bus's clock
//! ([`BusConfig::clock`](crate::runtime::BusConfig::clock)). Accuracy: the
//! receive thread waits until the deadline (SocketCAN: `ppoll` with a
//! nanosecond timeout; the virtual bus: a timed receive on its inbox
//! channel), so jitter is the OS wake-up latency, typically tens of
//! microseconds.

use std::sync::Arc;

use canx_core::{Duration, Filter, Frame, Instant};
use parking_lot::Mutex;

use crate::runtime::engine::{self, Driven, EngineHandle};
use crate::runtime::{Bus, Error, RxFrame};

/// The timer state machine (sans-IO: time comes in as arguments).
#[derive(Debug)]
pub struct Periodic {
    frames: Vec<Frame>,
    index: usize,
    period: Duration,
    /// Next send; `None` while stopped.
    next: Option<Instant>,
    /// No sends at or after this instant.
    end: Option<Instant>,
    pending: Option<Frame>,
    sent: u64,
    failed: u64,
    last_error: Option<String>,
}

impl Periodic {
    /// A stopped task sending `frames` in turn every `period` (> 0).
    pub fn new(frames: Vec<Frame>, period: Duration) -> Periodic {
        Periodic {
            frames,
            index: 0,
            period,
            next: None,
            end: None,
            pending: None,
            sent: 0,
            failed: 0,
            last_error: None,
        }
    }

    /// (Re)starts: the first frame goes out at `now`, the task ends after
    /// `duration` (None: runs until stopped).
    pub fn start(&mut self, now: Instant, duration: Option<Duration>) {
        self.index = 0;
        self.next = Some(now);
        self.end = duration.and_then(|d| now.checked_add(d));
    }

    pub fn stop(&mut self) {
        self.next = None;
        self.pending = None;
    }

    /// Replaces the frames (python-can `modify_data`); the sequence position
    /// is kept if it still exists, else it restarts at the first frame.
    pub fn set_frames(&mut self, frames: Vec<Frame>) {
        if self.index >= frames.len() {
            self.index = 0;
        }
        self.frames = frames;
    }

    pub fn is_running(&self) -> bool {
        self.next.is_some()
    }
    /// Frames handed to the bus.
    pub fn sent(&self) -> u64 {
        self.sent
    }
    /// Frames the bus refused (bus off, interface down), and the last reason.
    pub fn failed(&self) -> (u64, Option<String>) {
        (self.failed, self.last_error.clone())
    }
}

impl Driven for Periodic {
    fn handle_frame(&mut self, _now: Instant, _rx: &RxFrame) {}

    fn handle_timeout(&mut self, now: Instant) {
        let Some(next) = self.next else { return };
        if let Some(end) = self.end {
            if now >= end {
                self.stop();
                return;
            }
        }
        if now < next || self.frames.is_empty() {
            return;
        }
        self.pending = Some(self.frames[self.index % self.frames.len()]);
        self.index = (self.index + 1) % self.frames.len();
        let mut n = next + self.period;
        if n <= now {
            // More than a period late: skip the missed slots, keep the phase.
            let late = (now - next).total_micros();
            let p = self.period.total_micros().max(1);
            n = next + Duration::from_micros((late / p + 1) * p);
        }
        self.next = Some(n);
    }

    fn poll_transmit(&mut self, _now: Instant) -> Option<Frame> {
        let f = self.pending.take();
        if f.is_some() {
            self.sent += 1;
        }
        f
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match (self.next, self.end) {
            (Some(n), Some(e)) => Some(if e < n { e } else { n }),
            (n, _) => n,
        }
    }

    fn flush_events(&mut self) {}

    fn filters(&self) -> Option<Vec<Filter>> {
        Some(Vec::new())
    }

    fn send_failed(&mut self, _frame: &Frame, error: &Error, _now: Instant) {
        self.sent = self.sent.saturating_sub(1);
        self.failed += 1;
        self.last_error = Some(error.to_string());
    }
}

/// A running [`Periodic`] attached to a bus.
#[derive(Debug)]
pub struct PeriodicTask {
    engine: Arc<Mutex<Periodic>>,
    handle: Option<EngineHandle>,
}

impl PeriodicTask {
    /// Attaches a task to `bus` and starts it.
    pub fn start(bus: &Bus, frames: Vec<Frame>, period: Duration, duration: Option<Duration>) -> PeriodicTask {
        let mut p = Periodic::new(frames, period);
        p.start(bus.clock().now(), duration);
        let engine = Arc::new(Mutex::new(p));
        let handle = bus.attach(engine.clone());
        PeriodicTask { engine, handle: Some(handle) }
    }

    /// Attaches a stopped task to `bus` ([`PeriodicTask::restart`] starts it).
    pub fn attach(bus: &Bus, frames: Vec<Frame>, period: Duration) -> PeriodicTask {
        let engine = Arc::new(Mutex::new(Periodic::new(frames, period)));
        let handle = bus.attach(engine.clone());
        PeriodicTask { engine, handle: Some(handle) }
    }

    /// Runs `op` on the timer, then wakes the receive thread.
    pub fn with<R>(&self, op: impl FnOnce(&mut Periodic) -> R) -> R {
        let r = op(&mut self.engine.lock());
        if let Some(h) = &self.handle {
            h.kick();
        }
        r
    }

    /// Reads the timer without waking the receive thread.
    pub fn peek<R>(&self, op: impl FnOnce(&Periodic) -> R) -> R {
        op(&self.engine.lock())
    }

    /// Restarts a stopped task (first frame now).
    pub fn restart(&self, duration: Option<Duration>) {
        let now = self.handle.as_ref().map_or_else(engine::now, EngineHandle::now);
        self.with(|p| p.start(now, duration));
    }

    /// Stops sending (the task stays attached and can be restarted).
    pub fn stop(&self) {
        self.with(|p| p.stop());
    }

    /// Stops and detaches the task from `bus`.
    pub fn detach(&mut self, bus: &Bus) {
        self.engine.lock().stop();
        if let Some(h) = self.handle.take() {
            bus.detach(&h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use canx_core::frame::make_id;
    use canx_core::CanFrame;

    fn f(b: u8) -> Frame {
        Frame::Can(CanFrame::new(make_id(0x123, false).unwrap(), &[b]).unwrap())
    }
    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Steps a virtual clock in 1 ms ticks, collecting (time ms, data byte) of every send.
    fn run(p: &mut Periodic, from: u64, to: u64) -> Vec<(u64, u8)> {
        let mut out = vec![];
        for ms in from..to {
            p.handle_timeout(t(ms));
            while let Some(fr) = p.poll_transmit(t(ms)) {
                out.push((ms, fr.data()[0]));
            }
        }
        out
    }

    #[test]
    fn sends_in_turn_every_period_until_duration() {
        let mut p = Periodic::new(vec![f(1), f(2), f(3)], Duration::from_millis(10));
        assert_eq!(p.poll_timeout(), None, "stopped until started");
        p.start(t(100), Some(Duration::from_millis(55)));
        assert_eq!(p.poll_timeout(), Some(t(100)));
        let got = run(&mut p, 90, 200);
        assert_eq!(got, vec![(100, 1), (110, 2), (120, 3), (130, 1), (140, 2), (150, 3)]);
        assert!(!p.is_running());
        assert_eq!(p.sent(), 6);
    }

    #[test]
    fn modify_stop_restart_and_late_wakeups() {
        let mut p = Periodic::new(vec![f(1)], Duration::from_millis(10));
        p.start(t(0), None);
        assert_eq!(run(&mut p, 0, 25), vec![(0, 1), (10, 1), (20, 1)]);
        p.set_frames(vec![f(9)]);
        assert_eq!(run(&mut p, 25, 35), vec![(30, 9)]);
        // A 35 ms stall: one send at wake-up, then back on the 10 ms grid.
        p.handle_timeout(t(75));
        assert_eq!(p.poll_transmit(t(75)).map(|x| x.data()[0]), Some(9));
        assert_eq!(p.poll_timeout(), Some(t(80)));
        p.stop();
        assert_eq!(run(&mut p, 76, 120), vec![]);
        p.start(t(200), None);
        assert_eq!(run(&mut p, 200, 215), vec![(200, 9), (210, 9)]);
        assert_eq!(p.sent(), 7);
        p.send_failed(&f(9), &Error::BusOff, Instant::ZERO);
        assert_eq!(p.failed(), (1, Some(Error::BusOff.to_string())));
        assert_eq!(p.sent(), 6, "a refused frame is not counted as sent");
    }
}

//! Test faults on a bus: drop or delay the next N frames matching a filter.
//!
//! A rule belongs to one [`super::Bus`] and works on every backend, because
//! it sits in the bus's own paths, not in a driver:
//!
//! - [`Direction::Rx`]: frames this bus *receives* from its backend. A
//!   dropped frame never reaches the bus's listeners or engines (as if the
//!   wire lost it on the way in); a delayed one reaches them `delay` later
//!   (on the bus clock), after frames that arrived in between.
//! - [`Direction::Tx`]: frames this bus *sends* (`Bus::send` and every
//!   attached engine). A dropped frame is never handed to the backend: the
//!   sender sees success, other nodes on the channel never see it. A delayed
//!   one is handed to the backend `delay` later by the receive round (a
//!   failed late send is counted in [`FaultCounts::late_send_failed`]). The
//!   bus's own other engines (local echo) see the frame when it was sent.
//!
//! Error frames never match. Each frame is checked against the rules in the
//! order they were added; the first rule that matches and still has a count
//! left takes it. Bounded: at most [`MAX_RULES`] rules, at most
//! [`HELD_CAPACITY`] delayed frames held per bus (a frame that would be held
//! beyond that passes undelayed and is counted in
//! [`FaultCounts::held_overflow`]), delays of at most [`MAX_DELAY`].
//! Thread-safe: one mutex, taken only while a rule or a held frame exists
//! (an atomic flag keeps the fast path lock-free).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use canx_core::frame::{id_is_extended, id_raw};
use canx_core::time::Duration as CoreDuration;
use canx_core::{Frame, Instant};
use parking_lot::Mutex;

use super::{Error, Result, RxFrame};

/// Most rules on one bus at a time.
pub const MAX_RULES: usize = 64;
/// Most delayed frames held by one bus.
pub const HELD_CAPACITY: usize = 4096;
/// Longest delay a rule may ask for.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// Which frames a rule sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Frames the bus receives from its backend.
    Rx,
    /// Frames the bus (or an engine on it) sends.
    Tx,
}

/// What a rule does to a frame it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    Drop,
    /// Delivered (rx) or sent (tx) this much later on the bus clock.
    Delay(std::time::Duration),
}

/// Which frames a rule takes: `(frame_id & mask) == (id & mask)`, and the
/// identifier kind if `extended` is given. `mask` 0 takes every frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultMatch {
    pub id: u32,
    pub mask: u32,
    pub extended: Option<bool>,
}

impl FaultMatch {
    /// Every data or remote frame.
    pub const ANY: FaultMatch = FaultMatch { id: 0, mask: 0, extended: None };

    fn matches(&self, f: &Frame) -> bool {
        let Some(id) = f.id() else { return false };
        if let Some(ext) = self.extended {
            if id_is_extended(id) != ext {
                return false;
            }
        }
        (id_raw(id) & self.mask) == (self.id & self.mask)
    }
}

/// One rule's progress.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleStatus {
    /// Frames the rule has taken so far.
    pub taken: u64,
    /// Frames it will still take (0: done; the rule is then removed).
    pub remaining: u64,
}

/// A bus's fault totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub dropped: u64,
    pub delayed: u64,
    /// Frames a rule would have delayed but the held queue was full.
    pub held_overflow: u64,
    /// Delayed tx frames whose late send failed.
    pub late_send_failed: u64,
}

struct Rule {
    id: u64,
    direction: Direction,
    matcher: FaultMatch,
    action: FaultAction,
    taken: u64,
    remaining: u64,
}

struct Held {
    due: Instant,
    direction: Direction,
    frame: RxFrame,
}

#[derive(Default)]
struct Inner {
    rules: Vec<Rule>,
    held: Vec<Held>,
    next_id: u64,
    /// Status of finished rules, so a test can read it after the rule went.
    done: Vec<(u64, RuleStatus)>,
}

/// The fault rules and held frames of one bus.
#[derive(Default)]
pub struct Faults {
    active: AtomicBool,
    inner: Mutex<Inner>,
    dropped: AtomicU64,
    delayed: AtomicU64,
    held_overflow: AtomicU64,
    pub(crate) late_send_failed: AtomicU64,
}

/// What to do with one frame.
pub(crate) enum Verdict {
    Pass,
    Dropped,
    Held,
}

impl Faults {
    /// Adds a rule taking the next `count` matching frames; returns its id.
    /// Errors: [`Error::Unsupported`] for a count of 0, a delay over
    /// [`MAX_DELAY`], or more than [`MAX_RULES`] rules.
    pub fn add(&self, direction: Direction, matcher: FaultMatch, action: FaultAction, count: u64) -> Result<u64> {
        if count == 0 {
            return Err(Error::Unsupported("a fault rule needs a count of at least 1".into()));
        }
        if let FaultAction::Delay(d) = action {
            if d > MAX_DELAY {
                return Err(Error::Unsupported(format!(
                    "a fault delay is at most {} s, not {:.3} s",
                    MAX_DELAY.as_secs(),
                    d.as_secs_f64()
                )));
            }
        }
        let mut g = self.inner.lock();
        if g.rules.len() >= MAX_RULES {
            return Err(Error::Unsupported(format!("at most {MAX_RULES} fault rules per bus")));
        }
        g.next_id += 1;
        let id = g.next_id;
        g.rules.push(Rule { id, direction, matcher, action, taken: 0, remaining: count });
        self.active.store(true, Ordering::SeqCst);
        Ok(id)
    }

    /// A rule's progress (also after it finished); `None` for an unknown id
    /// or a rule removed by [`Faults::clear`].
    pub fn status(&self, id: u64) -> Option<RuleStatus> {
        let g = self.inner.lock();
        if let Some(r) = g.rules.iter().find(|r| r.id == id) {
            return Some(RuleStatus { taken: r.taken, remaining: r.remaining });
        }
        g.done.iter().find(|(i, _)| *i == id).map(|(_, s)| *s)
    }

    /// Removes every rule; held frames are released at once (`flush` true:
    /// delivered or sent at the next receive round) or discarded.
    pub fn clear(&self, flush: bool) {
        let mut g = self.inner.lock();
        g.rules.clear();
        g.done.clear();
        if flush {
            for h in g.held.iter_mut() {
                h.due = Instant::ZERO;
            }
        } else {
            g.held.clear();
        }
        self.active.store(!g.held.is_empty(), Ordering::SeqCst);
    }

    pub fn counts(&self) -> FaultCounts {
        FaultCounts {
            dropped: self.dropped.load(Ordering::Relaxed),
            delayed: self.delayed.load(Ordering::Relaxed),
            held_overflow: self.held_overflow.load(Ordering::Relaxed),
            late_send_failed: self.late_send_failed.load(Ordering::Relaxed),
        }
    }

    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Applies the rules of `direction` to one frame.
    pub(crate) fn check(&self, direction: Direction, frame: &RxFrame, now: Instant) -> Verdict {
        let mut g = self.inner.lock();
        let Some(i) = g.rules.iter().position(|r| r.direction == direction && r.matcher.matches(&frame.frame)) else {
            return Verdict::Pass;
        };
        let action = g.rules[i].action;
        let verdict = match action {
            FaultAction::Drop => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Verdict::Dropped
            }
            FaultAction::Delay(d) => {
                if g.held.len() >= HELD_CAPACITY {
                    self.held_overflow.fetch_add(1, Ordering::Relaxed);
                    Verdict::Pass
                } else {
                    let due = now.checked_add(CoreDuration::from_micros(d.as_micros() as u64)).unwrap_or(now);
                    g.held.push(Held { due, direction, frame: *frame });
                    self.delayed.fetch_add(1, Ordering::Relaxed);
                    Verdict::Held
                }
            }
        };
        let r = &mut g.rules[i];
        r.taken += 1;
        r.remaining -= 1;
        if r.remaining == 0 {
            let (id, st) = (r.id, RuleStatus { taken: r.taken, remaining: 0 });
            g.rules.remove(i);
            if g.done.len() >= MAX_RULES {
                g.done.remove(0);
            }
            g.done.push((id, st));
        }
        self.active.store(!g.rules.is_empty() || !g.held.is_empty(), Ordering::SeqCst);
        verdict
    }

    /// Keeps in `batch` the received frames that pass the rx rules.
    pub(crate) fn filter_rx(&self, batch: &mut Vec<RxFrame>, now: Instant) {
        batch.retain(|f| matches!(self.check(Direction::Rx, f, now), Verdict::Pass));
    }

    /// Moves the held frames due at `now` of `direction` to `out`, in the
    /// order they were held.
    pub(crate) fn take_due(&self, direction: Direction, now: Instant, out: &mut Vec<RxFrame>) {
        let mut g = self.inner.lock();
        if g.held.is_empty() {
            return;
        }
        let mut i = 0;
        while i < g.held.len() {
            if g.held[i].direction == direction && g.held[i].due <= now {
                out.push(g.held.remove(i).frame);
            } else {
                i += 1;
            }
        }
        self.active.store(!g.rules.is_empty() || !g.held.is_empty(), Ordering::SeqCst);
    }

    /// When the earliest held frame is due.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.inner.lock().held.iter().map(|h| h.due).min()
    }
}

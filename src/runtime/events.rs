//! Bounded event queues from engines to the application.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::listener::{Notify, Readiness};
use super::queue::BoundedQueue;

/// Default capacity of an engine's event queue.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// A bounded queue of engine events. A full queue drops the new event and
/// counts it (`dropped`); nothing blocks the receive thread.
///
/// Readiness (for asyncio's `loop.add_reader`): after [`Self::set_notify`]
/// the queue signals the [`Notify`] when it goes from empty to non-empty,
/// and [`Self::try_recv`] clears it when it takes the last event. Readiness
/// may be spurious (an event taken by a blocking `recv_timeout`, a
/// [`Self::wake`]), never missing while an event is queued.
#[derive(Debug)]
pub struct EventQueue<E> {
    queue: BoundedQueue<E>,
    dropped: AtomicU64,
    notify: Readiness,
}

impl<E> EventQueue<E> {
    pub fn new(capacity: usize) -> Self {
        EventQueue { queue: BoundedQueue::new(capacity), dropped: AtomicU64::new(0), notify: Readiness::default() }
    }
    /// Called from the receive thread. Never blocks.
    pub fn push(&self, e: E) {
        match self.queue.try_push(e) {
            Ok(len) => self.notify.pushed(len),
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    pub fn recv_timeout(&self, t: Duration) -> Option<E> {
        self.queue.pop_timeout(t)
    }
    /// Takes an event without waiting; with a notify set, clears it when
    /// the queue is (now) empty.
    pub fn try_recv(&self) -> Option<E> {
        let e = self.queue.try_pop();
        self.rearm();
        e
    }
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
    /// Events lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The readiness notify: the one given by `set_notify`, else a new
    /// one made now (`Notify::new`'s error where the platform has none).
    /// Signals at once if events are queued.
    pub fn notify(&self) -> std::io::Result<Arc<Notify>> {
        self.notify.get_or_make(|| !self.queue.is_empty())
    }

    /// Signals `n` whenever this queue goes from empty to non-empty (set
    /// once; later calls are ignored). Signals at once if events are queued.
    pub fn set_notify(&self, n: Arc<Notify>) {
        self.notify.set(n, || !self.queue.is_empty());
    }

    /// Makes the notify readable without an event (closing, shutting
    /// down): a waiter wakes, takes nothing and looks at why.
    pub fn wake(&self) {
        self.notify.wake();
    }

    /// Clears the notify if the queue is empty (it stays readable while
    /// events are queued). Cheap when no notify is set.
    pub fn rearm(&self) {
        self.notify.rearm(|| self.queue.is_empty());
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn readable(n: &Notify) -> bool {
        let mut p = libc::pollfd { fd: n.raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn notify_follows_the_queue() {
        let q = EventQueue::new(4);
        q.push(1u8);
        let n = q.notify().unwrap();
        assert!(readable(&n), "set on a non-empty queue: readable at once");
        q.push(2);
        assert_eq!(q.try_recv(), Some(1));
        assert!(readable(&n), "still one queued");
        assert_eq!(q.try_recv(), Some(2));
        assert!(!readable(&n), "empty: cleared");
        assert_eq!(q.try_recv(), None);
        for i in 0..6 {
            q.push(i);
        }
        assert_eq!(q.dropped(), 2);
        assert!(readable(&n));
        while q.try_recv().is_some() {}
        assert!(!readable(&n));
        q.wake();
        assert!(readable(&n), "wake: spurious readiness");
        assert_eq!(q.try_recv(), None);
        assert!(!readable(&n));
    }

    /// The first `notify()` races a push from another thread (a socket-like
    /// `select` on `fileno()` right after a message arrives): whatever the
    /// order, a queued item leaves the descriptor readable. Before the fix
    /// `notify()` looked at the queue before installing the notify, and a
    /// push in between signalled nothing (~6% of `test_socket_like` runs in
    /// a release build waited in vain). The pusher spins on a flag (no
    /// futex wake-up delay) and then a growing number of iterations, so the
    /// push lands at every point of `notify()`.
    #[test]
    fn first_notify_racing_a_push_never_misses_it() {
        use std::sync::atomic::AtomicBool;
        let mut missed = 0;
        for i in 0..3000u32 {
            let q = Arc::new(EventQueue::new(4));
            let go = Arc::new(AtomicBool::new(false));
            let pusher = {
                let (q, go) = (q.clone(), go.clone());
                std::thread::spawn(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    for _ in 0..(i % 300) * 4 {
                        std::hint::spin_loop();
                    }
                    q.push(1u8);
                })
            };
            std::thread::sleep(Duration::from_micros(50)); // the pusher is spinning
            go.store(true, Ordering::Release);
            let n = q.notify().unwrap();
            pusher.join().unwrap();
            if !q.is_empty() && !readable(&n) {
                missed += 1;
            }
        }
        assert_eq!(missed, 0, "a queued item with an unreadable notify");
    }
}

//! Bounded event queues from engines to the application.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

/// Default capacity of an engine's event queue.
pub const DEFAULT_EVENT_CAPACITY: usize = 4096;

/// A bounded queue of engine events. A full queue drops the new event and
/// counts it (`dropped`); nothing blocks the receive thread.
#[derive(Debug)]
pub struct EventQueue<E> {
    tx: Sender<E>,
    rx: Receiver<E>,
    dropped: AtomicU64,
}

impl<E> EventQueue<E> {
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = bounded(capacity.max(1));
        EventQueue { tx, rx, dropped: AtomicU64::new(0) }
    }
    /// Called from the receive thread. Never blocks.
    pub fn push(&self, e: E) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(e) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn recv_timeout(&self, t: Duration) -> Option<E> {
        self.rx.recv_timeout(t).ok()
    }
    pub fn try_recv(&self) -> Option<E> {
        self.rx.try_recv().ok()
    }
    pub fn len(&self) -> usize {
        self.rx.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
    /// Events lost because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

//! Listener queues: bounded, filtered, counting what they drop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use canx_core::{Filter, Frame};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::RxFrame;

/// What a listener accepts: data/remote filters (any of them; none = all),
/// error frames, own frames.
#[derive(Clone, Debug, Default)]
pub struct ListenerFilter {
    pub filters: Vec<Filter>,
    /// Deliver error frames too.
    pub error_frames: bool,
}

impl ListenerFilter {
    pub fn accepts(&self, frame: &Frame) -> bool {
        if frame.is_error() {
            return self.error_frames;
        }
        self.filters.is_empty() || self.filters.iter().any(|f| f.matches(frame))
    }
}

/// What a full queue gives up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DropPolicy {
    /// Keep what is queued, drop the arriving frame (like a hardware FIFO
    /// overrun and like a full kernel socket buffer). The default.
    #[default]
    DropNewest,
    /// Drop the oldest queued frame to make room (a "latest values" view).
    DropOldest,
}

/// One listener: a bounded queue fed by the receive thread.
#[derive(Debug)]
pub struct Listener {
    pub(crate) filter: ListenerFilter,
    tx: Sender<RxFrame>,
    rx: Receiver<RxFrame>,
    policy: DropPolicy,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl Listener {
    pub fn new(filter: ListenerFilter, capacity: usize, policy: DropPolicy) -> Self {
        let (tx, rx) = bounded(capacity.max(1));
        Listener { filter, tx, rx, policy, dropped: AtomicU64::new(0), closed: AtomicBool::new(false) }
    }

    /// Called by the receive thread. Never blocks.
    pub(crate) fn offer(&self, f: &RxFrame) {
        if !self.filter.accepts(&f.frame) {
            return;
        }
        match self.tx.try_send(*f) {
            Ok(()) => {}
            Err(TrySendError::Full(f)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if self.policy == DropPolicy::DropOldest {
                    let _ = self.rx.try_recv();
                    let _ = self.tx.try_send(f);
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Waits up to `timeout` for a frame.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<RxFrame> {
        match self.rx.recv_timeout(timeout) {
            Ok(f) => Some(f),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    pub fn try_recv(&self) -> Option<RxFrame> {
        self.rx.try_recv().ok()
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.rx.capacity().unwrap_or(0)
    }
    /// Frames dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

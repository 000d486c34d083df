//! Listener queues: bounded, filtered, counting what they drop.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
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
    notify: OnceLock<Arc<Notify>>,
}

/// A file descriptor that is readable while frames are queued (for
/// `select`/`epoll` users such as python-can's asyncio Notifier): an
/// eventfd the receive thread signals when a listener queue goes from empty
/// to non-empty; the reader calls [`Listener::rearm`] after taking frames.
/// Readiness may be spurious (a reader must tolerate an empty queue), never
/// missing while a frame is queued.
#[derive(Debug)]
pub struct Notify {
    fd: OwnedFd,
}

impl Notify {
    pub fn new() -> std::io::Result<Notify> {
        // SAFETY: eventfd has no memory arguments; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Notify { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }
    /// Makes the descriptor readable.
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64; a full counter (EAGAIN) is still readable.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
    /// Makes the descriptor unreadable (until the next signal).
    pub fn clear(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64; EAGAIN (already clear) is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Listener {
    pub fn new(filter: ListenerFilter, capacity: usize, policy: DropPolicy) -> Self {
        let (tx, rx) = bounded(capacity.max(1));
        Listener {
            filter,
            tx,
            rx,
            policy,
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            notify: OnceLock::new(),
        }
    }

    /// Signals `n` whenever this queue goes from empty to non-empty (set
    /// once; later calls are ignored). Signals at once if frames are queued.
    pub fn set_notify(&self, n: Arc<Notify>) {
        if self.notify.set(n).is_ok() && !self.rx.is_empty() {
            if let Some(n) = self.notify.get() {
                n.signal();
            }
        }
    }

    /// After taking frames: clears the notify descriptor if the queue is
    /// empty (it stays readable while frames are queued). Cheap when no
    /// notify is set.
    pub fn rearm(&self) {
        if let Some(n) = self.notify.get() {
            if self.rx.is_empty() {
                n.clear();
                // A frame may have arrived between the check and the clear.
                if !self.rx.is_empty() {
                    n.signal();
                }
            }
        }
    }

    /// Called by the receive thread. Never blocks.
    pub(crate) fn offer(&self, f: &RxFrame) {
        if !self.filter.accepts(&f.frame) {
            return;
        }
        match self.tx.try_send(*f) {
            Ok(()) => {
                if let Some(n) = self.notify.get() {
                    if self.rx.len() == 1 {
                        n.signal();
                    }
                }
            }
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
        // A readiness waiter wakes, finds the listener closed and says so.
        if let Some(n) = self.notify.get() {
            n.signal();
        }
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

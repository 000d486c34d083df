//! Listener queues: bounded, filtered, counting what they drop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::queue::BoundedQueue;
use canx_core::{Filter, Frame};

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
    queue: BoundedQueue<RxFrame>,
    policy: DropPolicy,
    dropped: AtomicU64,
    closed: AtomicBool,
    notify: Readiness,
}

/// A file descriptor that is readable while frames are queued (for
/// `select`/`epoll` users such as python-can's asyncio Notifier): the
/// receive thread signals it when a listener queue goes from empty to
/// non-empty; the reader calls [`Listener::rearm`] after taking frames.
/// Readiness may be spurious (a reader must tolerate an empty queue), never
/// missing while a frame is queued.
///
/// Linux: an eventfd. Other unix (macOS, BSD): a non-blocking socket pair,
/// readable end exposed. Windows: [`Notify::new`] fails with
/// [`std::io::ErrorKind::Unsupported`] (no descriptor `select` can wait on;
/// python-can then sees `fileno()` raise NotImplementedError).
#[derive(Debug)]
pub struct Notify {
    #[cfg(target_os = "linux")]
    fd: std::os::fd::OwnedFd,
    #[cfg(all(unix, not(target_os = "linux")))]
    pair: SocketPair,
}

impl Notify {
    /// Errors: the OS refused a descriptor; `Unsupported` on Windows.
    pub fn new() -> std::io::Result<Notify> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::FromRawFd;
            // SAFETY: eventfd has no memory arguments; the result is checked.
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: fd is a fresh descriptor we own.
            Ok(Notify { fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) } })
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        {
            Ok(Notify { pair: SocketPair::new()? })
        }
        #[cfg(not(unix))]
        {
            Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "no readiness descriptor on this platform (fileno needs unix)",
            ))
        }
    }
    /// Makes the descriptor readable.
    pub fn signal(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64; a full counter (EAGAIN) is still readable.
            unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        self.pair.signal();
    }
    /// Makes the descriptor unreadable (until the next signal).
    pub fn clear(&self) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let mut v: u64 = 0;
            // SAFETY: reads 8 bytes into a valid u64; EAGAIN (already clear) is fine.
            unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        self.pair.clear();
    }
    /// The descriptor to wait on (readable while signalled).
    #[cfg(unix)]
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            self.fd.as_raw_fd()
        }
        #[cfg(not(target_os = "linux"))]
        self.pair.raw_fd()
    }
}

/// The portable unix readiness pair: `signal` writes a byte into one end
/// (a full buffer is still readable), `clear` drains the other end, whose
/// descriptor is the one to wait on. Used off Linux; compiled on every unix
/// so that its test runs on Linux too.
#[cfg(unix)]
#[derive(Debug)]
#[cfg_attr(target_os = "linux", allow(dead_code))]
struct SocketPair {
    read: std::os::unix::net::UnixStream,
    write: std::os::unix::net::UnixStream,
}

#[cfg(unix)]
#[cfg_attr(target_os = "linux", allow(dead_code))]
impl SocketPair {
    fn new() -> std::io::Result<SocketPair> {
        let (read, write) = std::os::unix::net::UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        Ok(SocketPair { read, write })
    }
    fn signal(&self) {
        use std::io::Write;
        // WouldBlock: the buffer is full, so the read end is readable anyway.
        let _ = (&self.write).write(&[1]);
    }
    fn clear(&self) {
        use std::io::Read;
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
    }
    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.read.as_raw_fd()
    }
}

/// The readiness side of a bounded queue (a [`Listener`] or an
/// [`super::EventQueue`]): an optional [`Notify`], signalled on the queue's
/// empty -> non-empty edge and cleared by the reader once the queue is
/// empty. Readiness may be spurious, never missing while an item is queued.
#[derive(Debug, Default)]
pub(crate) struct Readiness(OnceLock<Arc<Notify>>);

impl Readiness {
    /// Sets the notify (once; later calls are ignored), then signals it if
    /// `queued()` says items wait. `queued` is asked only after the notify
    /// is in place: a push that came before it found no notify to signal,
    /// and this check sees that push's item (checking first would lose it).
    pub(crate) fn set(&self, n: Arc<Notify>, queued: impl Fn() -> bool) {
        let _ = self.0.set(n);
        if queued() {
            self.wake();
        }
    }
    /// The notify, made now if there is none yet (`Notify::new`'s error
    /// where the platform has none); signalled at once if `queued()` (asked
    /// after it is in place, as in [`Self::set`]).
    pub(crate) fn get_or_make(&self, queued: impl Fn() -> bool) -> std::io::Result<Arc<Notify>> {
        if let Some(n) = self.0.get() {
            return Ok(n.clone());
        }
        let n = Arc::new(Notify::new()?);
        self.set(n.clone(), queued);
        // Another thread may have set one first: that one is the notify.
        Ok(self.0.get().cloned().unwrap_or(n))
    }
    /// After a push that left `len` items queued: signals on the edge only
    /// (the descriptor stays readable until a reader empties the queue).
    pub(crate) fn pushed(&self, len: usize) {
        if len <= 1 {
            self.wake();
        }
    }
    /// Makes the descriptor readable without an item (closing): a waiter
    /// wakes, takes nothing and looks at why.
    pub(crate) fn wake(&self) {
        if let Some(n) = self.0.get() {
            n.signal();
        }
    }
    /// After taking items: clears the descriptor if `is_empty()` (it stays
    /// readable while items are queued). Cheap when no notify is set.
    pub(crate) fn rearm(&self, is_empty: impl Fn() -> bool) {
        if let Some(n) = self.0.get() {
            if is_empty() {
                n.clear();
                // An item may have arrived between the check and the clear.
                if !is_empty() {
                    n.signal();
                }
            }
        }
    }
}

impl Listener {
    pub fn new(filter: ListenerFilter, capacity: usize, policy: DropPolicy) -> Self {
        Listener {
            filter,
            queue: BoundedQueue::new(capacity),
            policy,
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            notify: Readiness::default(),
        }
    }

    /// Signals `n` whenever this queue goes from empty to non-empty (set
    /// once; later calls are ignored). Signals at once if frames are queued.
    pub fn set_notify(&self, n: Arc<Notify>) {
        self.notify.set(n, || !self.queue.is_empty());
    }

    /// After taking frames: clears the notify descriptor if the queue is
    /// empty (it stays readable while frames are queued). Cheap when no
    /// notify is set.
    pub fn rearm(&self) {
        self.notify.rearm(|| self.queue.is_empty());
    }

    /// Called by the receive thread. Never blocks.
    pub(crate) fn offer(&self, f: &RxFrame) {
        if !self.filter.accepts(&f.frame) {
            return;
        }
        match self.queue.try_push(*f) {
            Ok(len) => self.notify.pushed(len),
            Err(f) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                if self.policy == DropPolicy::DropOldest {
                    let _ = self.queue.try_pop();
                    let _ = self.queue.try_push(f);
                }
            }
        }
    }

    /// Waits up to `timeout` for a frame.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<RxFrame> {
        self.queue.pop_timeout(timeout)
    }

    pub fn try_recv(&self) -> Option<RxFrame> {
        self.queue.try_pop()
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
    /// Frames dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        // A readiness waiter wakes, finds the listener closed and says so.
        self.notify.wake();
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    /// Whether `fd` is readable now, without blocking.
    #[cfg(target_os = "linux")]
    fn readable(fd: std::os::fd::RawFd) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    /// The socket-pair Notify used off Linux behaves like the eventfd one:
    /// readable after any number of signals, unreadable after one clear.
    #[cfg(target_os = "linux")]
    #[test]
    fn socket_pair_readiness() {
        let p = super::SocketPair::new().unwrap();
        assert!(!readable(p.raw_fd()));
        p.signal();
        assert!(readable(p.raw_fd()));
        for _ in 0..100_000 {
            p.signal(); // far more than the socket buffer holds: never blocks
        }
        assert!(readable(p.raw_fd()));
        p.clear();
        assert!(!readable(p.raw_fd()));
        p.clear();
        assert!(!readable(p.raw_fd()));
    }

    #[cfg(not(unix))]
    #[test]
    fn notify_is_unsupported_without_unix() {
        let e = super::Notify::new().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    }
}

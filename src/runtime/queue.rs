//! A bounded multi-producer queue whose memory follows what is queued.
//!
//! `crossbeam_channel::bounded(n)` allocates and initialises all `n` slots
//! up front: with the default 65,536-frame listener and J1939 event queues
//! that was several MB of resident memory per listener or ECU, idle or not
//! (128 ECUs: 470 MB). [`BoundedQueue`] is a `VecDeque` under a
//! `parking_lot` mutex with a condvar: its buffer grows as items arrive
//! (doubling) and shrinks back to a few slots when a reader empties it; a
//! push onto `capacity` queued items is refused and handed back. Measured
//! against crossbeam's unbounded list channel with the bound checked on
//! push (`benches/instructions.py`): fewer instructions per frame.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Capacity kept by an emptied queue; a burst's larger buffer is given
/// back when the queue drains.
const KEEP: usize = 64;

/// See the module doc.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    items: Mutex<VecDeque<T>>,
    ready: Condvar,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        BoundedQueue { items: Mutex::new(VecDeque::new()), ready: Condvar::new(), capacity: capacity.max(1) }
    }
    /// Queues `item`, or hands it back when `capacity` items are queued.
    /// Never blocks (but for the lock, held only to move one item).
    /// On success returns the number queued after the push.
    pub fn try_push(&self, item: T) -> Result<usize, T> {
        let mut q = self.items.lock();
        if q.len() >= self.capacity {
            return Err(item);
        }
        q.push_back(item);
        let len = q.len();
        drop(q);
        if len == 1 {
            self.ready.notify_one();
        }
        Ok(len)
    }
    /// The oldest item, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        Self::take(&mut self.items.lock())
    }
    /// The oldest item, waiting up to `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        let deadline = Instant::now().checked_add(timeout);
        let mut q = self.items.lock();
        loop {
            if let Some(item) = Self::take(&mut q) {
                // Another waiter may be parked on an item queued meanwhile.
                if !q.is_empty() {
                    self.ready.notify_one();
                }
                return Some(item);
            }
            match deadline {
                Some(d) => {
                    if self.ready.wait_until(&mut q, d).timed_out() {
                        return Self::take(&mut q);
                    }
                }
                None => self.ready.wait(&mut q),
            }
        }
    }
    fn take(q: &mut VecDeque<T>) -> Option<T> {
        let item = q.pop_front();
        if q.is_empty() && q.capacity() > KEEP {
            q.shrink_to(KEEP);
        }
        item
    }
    pub fn len(&self) -> usize {
        self.items.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.items.lock().is_empty()
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::BoundedQueue;

    #[test]
    fn refuses_at_capacity_and_keeps_order() {
        let q = BoundedQueue::new(3);
        assert_eq!(q.try_push(1), Ok(1));
        assert_eq!(q.try_push(2), Ok(2));
        assert_eq!(q.try_push(3), Ok(3));
        assert_eq!(q.try_push(4), Err(4));
        assert_eq!(q.len(), 3);
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.try_push(5), Ok(3));
        let rest: Vec<_> = std::iter::from_fn(|| q.try_pop()).collect();
        assert_eq!(rest, [2, 3, 5]);
        assert!(q.is_empty());
        assert_eq!(BoundedQueue::<u8>::new(0).capacity(), 1);
    }

    /// Concurrent producers: every item is either queued or handed back,
    /// and the queue never holds more than its capacity.
    #[test]
    fn concurrent_producers_lose_nothing() {
        let q = std::sync::Arc::new(BoundedQueue::new(1000));
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let q = q.clone();
                std::thread::spawn(move || (0..1000).filter(|i| q.try_push(p * 1000 + i).is_err()).count())
            })
            .collect();
        let refused: usize = producers.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(q.len(), 1000);
        assert_eq!(q.len() + refused, 4000);
    }
}

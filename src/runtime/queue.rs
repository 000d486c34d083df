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
    /// Queues the items of `items` in order, as many as fit (the rest are
    /// dropped), leaving `items` empty; wakes a waiter once for the batch.
    /// Never blocks (but for the lock). Returns how many were dropped.
    pub fn push_many(&self, items: &mut Vec<T>) -> usize {
        let mut q = self.items.lock();
        let was_empty = q.is_empty();
        let room = self.capacity.saturating_sub(q.len()).min(items.len());
        let dropped = items.len() - room;
        q.extend(items.drain(..room));
        let pushed = room > 0;
        drop(q);
        items.clear();
        if was_empty && pushed {
            self.ready.notify_one();
        }
        dropped
    }
    /// The oldest item, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        Self::take(&mut self.items.lock())
    }
    /// The oldest item, waiting up to `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        let mut first = None;
        self.pop_batch(timeout, 1, |item| {
            first = Some(item);
            true
        });
        first
    }
    /// Waits up to `timeout` for an item, then hands the queued items,
    /// oldest first, to `take` under one lock: at most `max`, and no more
    /// after `take` returns false (that item is taken too). A receive
    /// thread's batch. Returns how many were taken.
    pub fn pop_batch(&self, timeout: Duration, max: usize, mut take: impl FnMut(T) -> bool) -> usize {
        let deadline = Instant::now().checked_add(timeout);
        let mut q = self.items.lock();
        while q.is_empty() {
            match deadline {
                Some(d) => {
                    if self.ready.wait_until(&mut q, d).timed_out() {
                        break;
                    }
                }
                None => self.ready.wait(&mut q),
            }
        }
        let mut n = 0;
        while n < max {
            let Some(item) = q.pop_front() else { break };
            n += 1;
            if !take(item) {
                break;
            }
        }
        if q.is_empty() {
            if q.capacity() > KEEP {
                q.shrink_to(KEEP);
            }
        } else if n > 0 {
            // Another waiter may be parked on an item queued meanwhile.
            self.ready.notify_one();
        }
        n
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
    use std::time::Duration;

    #[test]
    fn pop_batch_takes_at_most_max_and_stops_when_asked() {
        let q = BoundedQueue::new(10);
        for i in 0..6 {
            q.try_push(i).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(
            q.pop_batch(Duration::ZERO, 4, |i| {
                got.push(i);
                true
            }),
            4
        );
        assert_eq!(got, [0, 1, 2, 3]);
        assert_eq!(
            q.pop_batch(Duration::ZERO, 10, |i| {
                got.push(i);
                i != 4
            }),
            1
        );
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert_eq!(q.pop_timeout(Duration::ZERO), Some(5));
        assert_eq!(q.pop_batch(Duration::from_millis(20), 10, |_| true), 0, "times out empty");
    }

    #[test]
    fn a_waiter_wakes_for_an_item_pushed_later() {
        let q = std::sync::Arc::new(BoundedQueue::new(4));
        let q2 = q.clone();
        let t = std::thread::spawn(move || q2.pop_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        q.try_push(7u8).unwrap();
        assert_eq!(t.join().unwrap(), Some(7));
    }

    #[test]
    fn push_many_keeps_order_drops_the_rest_and_wakes() {
        let q = std::sync::Arc::new(BoundedQueue::new(5));
        let q2 = q.clone();
        let waiter = std::thread::spawn(move || q2.pop_timeout(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(50));
        let mut batch = vec![1, 2, 3];
        assert_eq!(q.push_many(&mut batch), 0);
        assert!(batch.is_empty());
        assert_eq!(waiter.join().unwrap(), Some(1));
        let mut batch = vec![4, 5, 6, 7, 8];
        assert_eq!(q.push_many(&mut batch), 2, "room for 3 of 5");
        assert!(batch.is_empty());
        let mut got = Vec::new();
        while let Some(i) = q.try_pop() {
            got.push(i);
        }
        assert_eq!(got, [2, 3, 4, 5, 6]);
        assert_eq!(q.push_many(&mut Vec::new()), 0);
    }

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

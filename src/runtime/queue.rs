//! A bounded multi-producer queue whose memory follows what is queued.
//!
//! `crossbeam_channel::bounded(n)` allocates and initialises all `n` slots
//! up front: with the default 65,536-frame listener and J1939 event queues
//! that was several MB of resident memory per listener or ECU, idle or not
//! (128 ECUs: 470 MB). [`BoundedQueue`] is crossbeam's unbounded (linked
//! blocks of 31 slots, allocated as items arrive, freed as they leave)
//! with the bound enforced on push: a push onto `capacity` queued items is
//! refused and handed back. With one producer (the receive thread, the
//! case everywhere in canx) the bound is exact; with `p` concurrent
//! producers the queue may hold up to `p - 1` items more.

use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, Sender};

/// See the module doc.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    capacity: usize,
}

impl<T> BoundedQueue<T> {
    /// A queue holding at most `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, rx) = unbounded();
        BoundedQueue { tx, rx, capacity: capacity.max(1) }
    }
    /// Queues `item`, or hands it back when `capacity` items are queued.
    /// Never blocks. On success returns the number queued after the push.
    pub fn try_push(&self, item: T) -> Result<usize, T> {
        let len = self.rx.len();
        if len >= self.capacity {
            return Err(item);
        }
        // The receiver lives in `self`: the channel cannot be disconnected.
        self.tx.send(item).map_err(|e| e.into_inner())?;
        Ok(len + 1)
    }
    /// The oldest item, without waiting.
    pub fn try_pop(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }
    /// The oldest item, waiting up to `timeout` for one.
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        self.rx.recv_timeout(timeout).ok()
    }
    pub fn len(&self) -> usize {
        self.rx.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
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
    /// and the queue never holds more than capacity + producers - 1.
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
        assert!(q.len() <= 1000 + 3, "{}", q.len());
        assert_eq!(q.len() + refused, 4000);
    }
}

//! A bounded FIFO of `Copy` items on a fixed array (no heap): the event and
//! transmit queues of every engine.

#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring<T: Copy, const N: usize> {
    items: [Option<T>; N],
    head: usize,
    len: usize,
    dropped: u32,
}

impl<T: Copy, const N: usize> Ring<T, N> {
    pub(crate) const fn new() -> Self {
        Ring { items: [None; N], head: 0, len: 0, dropped: 0 }
    }

    /// Appends `item`; gives it back when the ring is full.
    pub(crate) fn push(&mut self, item: T) -> Result<(), T> {
        if self.len >= N {
            return Err(item);
        }
        let at = (self.head + self.len) % N;
        self.items[at] = Some(item);
        self.len += 1;
        Ok(())
    }

    /// Appends `item`; when full, drops it, counts it ([`Ring::dropped`]) and returns `false`.
    pub(crate) fn push_counted(&mut self, item: T) -> bool {
        match self.push(item) {
            Ok(()) => true,
            Err(_) => {
                self.dropped = self.dropped.saturating_add(1);
                false
            }
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= N
    }

    /// Items refused by [`Ring::push_counted`].
    pub(crate) fn dropped(&self) -> u32 {
        self.dropped
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        item
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Room left, items.
    pub(crate) fn free(&self) -> usize {
        N - self.len
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    #[test]
    fn fifo_and_bounded() {
        let mut r: Ring<u8, 2> = Ring::new();
        assert_eq!(r.push(1), Ok(()));
        assert_eq!(r.push(2), Ok(()));
        assert_eq!(r.push(3), Err(3));
        assert_eq!(r.pop(), Some(1));
        assert_eq!(r.push(4), Ok(()));
        assert_eq!(r.pop(), Some(2));
        assert_eq!(r.pop(), Some(4));
        assert_eq!(r.pop(), None);
        assert_eq!(r.len(), 0);
        assert_eq!(r.free(), 2);
        assert!(r.push_counted(7) && r.push_counted(8) && !r.push_counted(9));
        assert!(r.is_full());
        assert_eq!(r.dropped(), 1);
        let mut z: Ring<u8, 0> = Ring::new();
        assert_eq!(z.push(1), Err(1));
        assert_eq!(z.pop(), None);
    }
}

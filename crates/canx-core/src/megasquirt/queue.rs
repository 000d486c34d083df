//! A fixed-capacity FIFO (no heap) used for transmit and event queues.

#[derive(Debug)]
pub(crate) struct Ring<T: Copy, const N: usize> {
    buf: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Ring<T, N> {
    pub(crate) const fn new() -> Self {
        Ring { buf: [None; N], head: 0, len: 0 }
    }

    pub(crate) fn free(&self) -> usize {
        N - self.len
    }

    /// Appends; gives the item back when full.
    pub(crate) fn push(&mut self, item: T) -> Result<(), T> {
        if self.len >= N {
            return Err(item);
        }
        let idx = (self.head + self.len) % N;
        self.buf[idx] = Some(item);
        self.len += 1;
        Ok(())
    }

    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.buf[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        item
    }
}

#[cfg(test)]
mod tests {
    use super::Ring;

    #[test]
    fn fifo_and_bounds() {
        let mut r: Ring<u8, 3> = Ring::new();
        assert_eq!(r.pop(), None);
        for i in 0..3 {
            r.push(i).unwrap();
        }
        assert_eq!(r.push(9), Err(9));
        assert_eq!(r.pop(), Some(0));
        r.push(3).unwrap();
        assert_eq!((r.pop(), r.pop(), r.pop(), r.pop()), (Some(1), Some(2), Some(3), None));
        let mut z: Ring<u8, 0> = Ring::new();
        assert_eq!(z.push(1), Err(1));
        assert_eq!(z.pop(), None);
    }
}

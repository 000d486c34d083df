//! Storage an engine either borrows or owns (smoltcp's `ManagedSlice`).
//!
//! Engines whose buffers are too large for a fixed array (J1939 ETP messages
//! up to 117 MB) take a [`ManagedSlice`]: on a microcontroller a `&'a mut [T]`
//! into a `static` or stack buffer, so the core stays heap-free; with the
//! `alloc` feature also a `Box<[T]>` the engine owns, so a PC runtime can
//! hold an `Engine<'static>` without borrowing from itself.

use core::fmt;
use core::ops::{Deref, DerefMut};

#[cfg(feature = "alloc")]
use alloc::boxed::Box;

/// A slice that is either borrowed for `'a` or (feature `alloc`) owned.
pub enum ManagedSlice<'a, T: 'a> {
    /// Caller storage, e.g. a `static mut` array handed out once at start-up.
    Borrowed(&'a mut [T]),
    /// Heap storage the holder owns and frees.
    #[cfg(feature = "alloc")]
    Owned(Box<[T]>),
}

impl<T> fmt::Debug for ManagedSlice<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            ManagedSlice::Borrowed(_) => "Borrowed",
            #[cfg(feature = "alloc")]
            ManagedSlice::Owned(_) => "Owned",
        };
        write!(f, "ManagedSlice::{kind}(len {})", self.len())
    }
}

impl<'a, T> From<&'a mut [T]> for ManagedSlice<'a, T> {
    fn from(s: &'a mut [T]) -> Self {
        ManagedSlice::Borrowed(s)
    }
}

impl<'a, T, const N: usize> From<&'a mut [T; N]> for ManagedSlice<'a, T> {
    fn from(s: &'a mut [T; N]) -> Self {
        ManagedSlice::Borrowed(&mut s[..])
    }
}

#[cfg(feature = "alloc")]
impl<T> From<Box<[T]>> for ManagedSlice<'_, T> {
    fn from(b: Box<[T]>) -> Self {
        ManagedSlice::Owned(b)
    }
}

#[cfg(feature = "alloc")]
impl<T> From<alloc::vec::Vec<T>> for ManagedSlice<'_, T> {
    fn from(v: alloc::vec::Vec<T>) -> Self {
        ManagedSlice::Owned(v.into_boxed_slice())
    }
}

impl<T> Deref for ManagedSlice<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            ManagedSlice::Borrowed(s) => s,
            #[cfg(feature = "alloc")]
            ManagedSlice::Owned(b) => b,
        }
    }
}

impl<T> DerefMut for ManagedSlice<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            ManagedSlice::Borrowed(s) => s,
            #[cfg(feature = "alloc")]
            ManagedSlice::Owned(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_reads_and_writes_through() {
        let mut buf = [0u8; 4];
        {
            let mut m: ManagedSlice<'_, u8> = (&mut buf[..]).into();
            m[1] = 7;
            assert_eq!(m.len(), 4);
            assert!(format!("{m:?}").starts_with("ManagedSlice::Borrowed"));
        }
        assert_eq!(buf, [0, 7, 0, 0]);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn owned_is_static() {
        fn keep(m: ManagedSlice<'static, u8>) -> ManagedSlice<'static, u8> {
            m
        }
        let mut m = keep(std::vec![1u8, 2, 3].into());
        m[2] = 9;
        assert_eq!(&m[..], &[1, 2, 9]);
        assert!(format!("{m:?}").starts_with("ManagedSlice::Owned"));
    }
}

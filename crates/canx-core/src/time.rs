//! Time as the engines see it: microseconds, supplied by the caller.
//!
//! The core never reads a clock. Every engine entry point takes the current
//! [`Instant`] and reports its next deadline as an `Option<Instant>`, so the
//! same engine runs on a PC (driven by `std::time::Instant`), on a board
//! (driven by a hardware timer) and in tests (driven by a virtual clock).

use core::fmt;
use core::ops::{Add, AddAssign, Sub};

/// A point in time, in microseconds since an arbitrary epoch chosen by the driver.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    micros: u64,
}

/// A span of time in microseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration {
    micros: u64,
}

impl Instant {
    /// The epoch of the driver's clock.
    pub const ZERO: Instant = Instant { micros: 0 };

    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }
    pub const fn from_millis(millis: u64) -> Self {
        Instant { micros: millis.saturating_mul(1000) }
    }
    pub const fn total_micros(self) -> u64 {
        self.micros
    }
    pub const fn total_millis(self) -> u64 {
        self.micros / 1000
    }
    /// `self - earlier`, or zero if `earlier` is later than `self`.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration { micros: self.micros.saturating_sub(earlier.micros) }
    }
    pub const fn checked_add(self, d: Duration) -> Option<Instant> {
        match self.micros.checked_add(d.micros) {
            Some(micros) => Some(Instant { micros }),
            None => None,
        }
    }
}

impl Duration {
    pub const ZERO: Duration = Duration { micros: 0 };
    pub const MAX: Duration = Duration { micros: u64::MAX };

    pub const fn from_micros(micros: u64) -> Self {
        Duration { micros }
    }
    pub const fn from_millis(millis: u64) -> Self {
        Duration { micros: millis.saturating_mul(1000) }
    }
    pub const fn from_secs(secs: u64) -> Self {
        Duration { micros: secs.saturating_mul(1_000_000) }
    }
    pub const fn total_micros(self) -> u64 {
        self.micros
    }
    pub const fn total_millis(self) -> u64 {
        self.micros / 1000
    }
    pub const fn saturating_mul(self, n: u32) -> Duration {
        Duration { micros: self.micros.saturating_mul(n as u64) }
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at the end of time instead of overflowing.
    fn add(self, d: Duration) -> Instant {
        Instant { micros: self.micros.saturating_add(d.micros) }
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero.
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, o: Duration) -> Duration {
        Duration { micros: self.micros.saturating_add(o.micros) }
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.micros / 1_000_000, self.micros % 1_000_000)
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.micros % 1000 == 0 {
            write!(f, "{}ms", self.micros / 1000)
        } else {
            write!(f, "{}us", self.micros)
        }
    }
}

#[cfg(feature = "std")]
impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        std::time::Duration::from_micros(d.micros)
    }
}

#[cfg(feature = "std")]
impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Duration { micros: u64::try_from(d.as_micros()).unwrap_or(u64::MAX) }
    }
}

/// Returns the earlier of two optional deadlines (`None` means "no deadline").
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Instant::from_millis(5);
        assert_eq!(t + Duration::from_millis(3), Instant::from_millis(8));
        assert_eq!(Instant::from_millis(3) - t, Duration::ZERO);
        assert_eq!(Instant::from_micros(u64::MAX) + Duration::from_secs(1), Instant::from_micros(u64::MAX));
        assert_eq!(earliest(Some(t), None), Some(t));
        assert_eq!(earliest(Some(t), Some(Instant::ZERO)), Some(Instant::ZERO));
        assert_eq!(earliest(None, None), None);
    }
}

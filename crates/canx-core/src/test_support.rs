//! Helpers shared by the engines' simulation tests (test builds only).

/// splitmix64: a small, seedable PRNG with no dependencies; the same seed
/// gives the same run on every machine.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 0..n (0 for n = 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// `true` with probability `p` / 100.
    pub(crate) fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
    /// `true` with probability `p` / 1000.
    pub(crate) fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}

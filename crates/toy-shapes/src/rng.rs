//! SplitMix64, the toy world's pseudo-random generator: tiny, fully specified (Steele, Lea and
//! Flood, "Fast splittable pseudorandom number generators", 2014; the constants of Java's
//! `SplittableRandom`) and independent of any crate version, so a data set is the same bytes on
//! every machine and in every future build.

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

/// The SplitMix64 output function (a bijection of u64).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

    /// A generator whose first state is `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The generator of one item of a keyed stream: the keys are folded in one after another,
    /// each through the output function (`state = mix(state ^ key)`), so that (seed, split,
    /// index) triples that differ in any key give unrelated streams (no hashing of the keys'
    /// bytes, no dependence on a hasher's version).
    pub fn keyed(keys: &[u64]) -> Self {
        let mut state = 0x6A09_E667_F3BC_C908; // an arbitrary odd start (sqrt(2)'s fraction)
        for &k in keys {
            state = mix(state ^ k).wrapping_add(Self::GAMMA);
        }
        Self { state }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(Self::GAMMA);
        mix(self.state)
    }

    /// A uniform integer in `0..n` (`0 < n <= 2^32`), by Lemire's multiply-shift of the top 32
    /// bits (bias below n / 2^32: nil for the small `n` used here).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0 && n as u64 <= 1 << 32);
        ((self.next_u64() >> 32).wrapping_mul(n as u64) >> 32) as usize
    }

    /// A uniform f32 in [0, 1) (24 random bits).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// A uniform f32 in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        2.0 * self.unit() - 1.0
    }

    /// One element of `items` (non-empty), uniformly.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The first outputs of SplitMix64 seeded with 0 (as java.util.SplittableRandom(0) with
        // its default gamma, and the reference C code by Vigna).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_stays_in_range_and_reaches_every_value() {
        let mut r = SplitMix64::new(7);
        let mut seen = [0usize; 5];
        for _ in 0..1000 {
            seen[r.below(5)] += 1;
        }
        // 1000 draws over 5 values: each expected 200; below 150 would be a 5-sigma deviation.
        assert!(seen.iter().all(|&c| c > 150), "{seen:?}");
    }
}

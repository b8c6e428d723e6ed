//! Seeded randomness that gives the same stream on every machine.
//!
//! PCG64 (value-stable across `rand_pcg` releases) supplies the bits; the conversions to
//! integers and floats below use only integer arithmetic and exact float scaling, and the
//! transcendental functions of the samplers come from the `libm` crate, so no platform math
//! library can change a generated batch.

use rand_core::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// The generator every workload stream uses.
pub struct StreamRng(Pcg64Mcg);

impl StreamRng {
    /// A stream for one purpose, keyed by a seed and up to three stream coordinates (batch
    /// index, table index, ...). Streams with different keys are independent.
    pub fn new(seed: u64, a: u64, b: u64) -> StreamRng {
        let key = mix(mix(mix(seed ^ 0x6a09_e667_f3bc_c908) ^ a) ^ b.rotate_left(17));
        StreamRng(Pcg64Mcg::seed_from_u64(key))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, n)` by Lemire's multiply-shift with rejection: exact, no modulo bias.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = (self.next_u64() as u128) * (n as u128);
        if (m as u64) < n {
            // Only a low half below n can fall in the biased zone; the threshold costs a
            // division, so it is computed on this rare path only.
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = (self.next_u64() as u128) * (n as u128);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed bijection on `u64`.
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded bijection on `[0, n)`: a four-round Feistel network on the smallest even-bit
/// power of two that covers `n`, with cycle walking to stay inside the range. It scatters hot
/// ranks through a table in O(1) memory, where a stored permutation of a 40M-row table would
/// take 160 MB.
#[derive(Clone, Debug)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    pub fn new(n: u64, seed: u64) -> Permutation {
        assert!(n > 0, "a permutation needs a non-empty range");
        let bits = 64 - (n - 1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let mut keys = [0u64; 4];
        for (i, k) in keys.iter_mut().enumerate() {
            *k = mix(seed ^ (i as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f));
        }
        Permutation { n, half_bits, keys }
    }

    /// The image of `x`, for `x < n`.
    #[inline]
    pub fn apply(&self, x: u64) -> u64 {
        debug_assert!(x < self.n);
        if self.n == 1 {
            return 0;
        }
        let mut y = x;
        loop {
            y = self.feistel(y);
            if y < self.n {
                return y;
            }
        }
    }

    #[inline]
    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let mut l = x >> self.half_bits;
        let mut r = x & mask;
        for k in self.keys {
            let f = mix(r ^ k) & mask;
            let nl = r;
            r = l ^ f;
            l = nl;
        }
        (l << self.half_bits) | r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_bijection() {
        for n in [1u64, 2, 3, 7, 64, 1000, 4097] {
            let p = Permutation::new(n, 42);
            let mut seen = vec![false; n as usize];
            for x in 0..n {
                let y = p.apply(x);
                assert!(y < n);
                assert!(!seen[y as usize], "n={n}: {y} hit twice");
                seen[y as usize] = true;
            }
        }
    }

    #[test]
    fn permutation_scatters_consecutive_ranks() {
        // Hot ranks 0..100 of a large table must not stay packed at its start.
        let p = Permutation::new(1_000_000, 9);
        let low = (0..100).filter(|&x| p.apply(x) < 10_000).count();
        assert!(low < 10, "{low} of 100 hot ranks landed in the first 1% of rows");
    }

    #[test]
    fn streams_are_reproducible_and_independent() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = StreamRng::new(1, 2, 3);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = StreamRng::new(1, 2, 3);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mut other = StreamRng::new(1, 2, 4);
        assert_ne!(a[0], other.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut r = StreamRng::new(0, 0, 0);
        let mut hits = [0u32; 7];
        for _ in 0..7000 {
            hits[r.below(7) as usize] += 1;
        }
        assert!(hits.iter().all(|&h| h > 800), "{hits:?}");
    }
}

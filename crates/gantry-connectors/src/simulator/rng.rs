//! Small deterministic PRNG (SplitMix64) and a stable string hash, so the
//! simulator's output depends only on its seed and topic names, never on the
//! Rust version or platform.

/// SplitMix64 generator. Not cryptographic; statistically fine for a demo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one machine: the plant seed mixed with a stable hash
    /// of the machine's topic, so adding a machine does not perturb others.
    pub(crate) fn for_stream(seed: u64, name: &str) -> Self {
        let mut mixer = Rng::new(seed ^ fnv1a(name));
        Rng::new(mixer.next_u64())
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[-1, 1)`.
    pub(crate) fn symmetric(&mut self) -> f64 {
        self.next_f64() * 2.0 - 1.0
    }

    /// Uniform integer in `[lo, hi]`; returns `lo` if the range is empty.
    pub(crate) fn range_u64(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        // Modulo bias is below 2^-40 for the spans used here.
        lo + self.next_u64() % span
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Picks an element of a non-empty slice; `None` if it is empty.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        let last = u64::try_from(items.len()).ok()?.checked_sub(1)?;
        let idx = usize::try_from(self.range_u64(0, last)).ok()?;
        items.get(idx)
    }

    /// Index chosen with probability proportional to `weights`.
    pub(crate) fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return 0;
        }
        let mut roll = self.range_u64(0, total - 1);
        for (i, &w) in weights.iter().enumerate() {
            let w = u64::from(w);
            if roll < w {
                return i;
            }
            roll -= w;
        }
        weights.len().saturating_sub(1)
    }
}

/// 64-bit FNV-1a: tiny and stable, unlike `DefaultHasher`.
pub(crate) fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_vector() {
        // First outputs for seed 1234567 from the published reference code.
        let mut rng = Rng::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn fnv1a_matches_reference_vector() {
        assert_eq!(fnv1a(""), 0xCBF2_9CE4_8422_2325);
        assert_eq!(fnv1a("a"), 0xAF63_DC4C_8601_EC8C);
    }

    #[test]
    fn streams_differ_by_name_and_seed() {
        let a = Rng::for_stream(1, "line-1/filler").next_u64();
        let b = Rng::for_stream(1, "line-1/capper").next_u64();
        let c = Rng::for_stream(2, "line-1/filler").next_u64();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, Rng::for_stream(1, "line-1/filler").next_u64());
    }

    #[test]
    fn helpers_stay_in_range() {
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 3];
        for _ in 0..10_000 {
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
            let s = rng.symmetric();
            assert!((-1.0..1.0).contains(&s));
            let r = rng.range_u64(10, 12);
            assert!((10..=12).contains(&r));
            seen[rng.weighted(&[1, 0, 3])] += 1;
        }
        assert_eq!(seen[1], 0);
        // weight 3 vs 1: expect roughly 7500 / 2500
        assert!((7_000..8_000).contains(&seen[2]), "{seen:?}");
        assert_eq!(rng.range_u64(5, 5), 5);
        assert_eq!(rng.range_u64(6, 5), 6);
        assert_eq!(rng.pick::<u8>(&[]), None);
        assert_eq!(rng.weighted(&[]), 0);
    }
}

//! Random numbers.
//!
//! * [`SplitMix64`]: a small sequential generator for initialisation and the data order.
//! * [`sample_uniform`]: the counter-based generator every sampler uses (CPU, naive GPU, incremental GPU), so that
//!   all of them draw exactly the same numbers. It is a stateless hash of `(seed, image, pixel)`:
//!
//!   ```text
//!   key  = pcg(seed_lo ^ pcg(seed_hi ^ 0x9E3779B9))
//!   bits = pcg(pcg(key ^ pcg(image)) ^ pixel)
//!   u    = (bits >> 8) / 2^24          // 24 bits: exact in f32, u in [0, 1)
//!   x    = 1 if u < p else 0
//!   ```
//!
//!   where `pcg` is the PCG-RXS-M-XS 32-bit output hash (Jarzynski & Olano, "Hash Functions for GPU Rendering",
//!   2020). `shaders/sample.wgsl` implements the same function; a test compares them.

/// SplitMix64 (Steele, Lea & Flood 2014): a fast, well-mixed 64-bit sequence.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift reduction; the bias is below 2^-32 for the sizes used here.
        ((self.next_u64() >> 32) * n) >> 32
    }
}

/// A permutation of 0..n (Fisher–Yates), fixed by `seed`: the data order of one epoch.
pub fn permutation(n: usize, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// PCG-RXS-M-XS 32-bit hash.
pub fn pcg(x: u32) -> u32 {
    let state = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// The 32-bit key that the samplers derive from a 64-bit seed.
pub fn sample_key(seed: u64) -> u32 {
    pcg(seed as u32 ^ pcg((seed >> 32) as u32 ^ 0x9E37_79B9))
}

/// The key of training step `step` (1-based) of a run seeded `seed`, from which dropout draws its masks.
pub fn dropout_key(seed: u64, step: u64) -> u32 {
    sample_key(seed ^ 0xD509_0D7E ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The uniform draw for `pixel` (raster index) of sample `image`; dropout draws with (vec4 index, lane) instead.
pub fn sample_uniform(key: u32, image: u32, pixel: u32) -> f32 {
    let bits = pcg(pcg(key ^ pcg(image)) ^ pixel);
    (bits >> 8) as f32 * (1.0 / 16_777_216.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniforms_look_uniform() {
        let key = sample_key(7);
        let n = 100_000;
        let mean: f64 = (0..n)
            .map(|i| sample_uniform(key, i / 784, i % 784) as f64)
            .sum::<f64>()
            / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert_ne!(sample_uniform(key, 0, 1), sample_uniform(key, 1, 0));
        assert_ne!(sample_uniform(sample_key(8), 0, 0), sample_uniform(key, 0, 0));
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = permutation(1000, 3);
        assert_ne!(p[..10], (0..10).collect::<Vec<u32>>()[..]);
        p.sort();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }
}

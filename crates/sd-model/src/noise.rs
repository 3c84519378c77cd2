//! Seeded Gaussian noise that is the same on every backend and machine: SplitMix64 bits turned
//! into normals by the Box–Muller transform in f64.

use burn::prelude::*;

/// A small deterministic generator (SplitMix64) with a Gaussian sampler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoiseRng {
    state: u64,
    spare: Option<u64>,
}

impl NoiseRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in (0, 1] with 53 random bits.
    pub fn uniform_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A generator for the stream identified by `ids` under `seed` (each combination gives an
    /// independent, reproducible stream: no state needs saving to resume).
    pub fn derive(seed: u64, ids: &[u64]) -> Self {
        let mut h = Self::new(seed);
        let mut state = h.next_u64();
        for &id in ids {
            let mut g = Self::new(state ^ id.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            state = g.next_u64();
        }
        Self::new(state)
    }

    /// One standard normal value.
    pub fn normal(&mut self) -> f64 {
        if let Some(bits) = self.spare.take() {
            return f64::from_bits(bits);
        }
        let r = (-2.0 * self.uniform_open0().ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * self.uniform_open0();
        self.spare = Some((r * theta.sin()).to_bits());
        r * theta.cos()
    }

    /// `n` standard normal values as f32.
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }

    /// A standard normal tensor of `shape` on `device`.
    pub fn tensor<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        device: &B::Device,
    ) -> Tensor<B, D> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(self.normals(n), shape), device)
    }
}

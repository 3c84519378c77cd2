//! Timestep embeddings: diffusers `Timesteps` (sinusoidal features) and `TimestepEmbedding`
//! (`linear_1`, SiLU, `linear_2`).

use burn::module::Module;
use burn::nn::Linear;
use burn::prelude::*;

use crate::nn::{linear, silu};

/// Sinusoidal features of per-sample timesteps, as diffusers' `get_timestep_embedding` with
/// `flip_sin_to_cos` and `downscale_freq_shift`: `[B] -> [B, dim]`.
pub fn timestep_features<B: Backend>(
    timesteps: Tensor<B, 1>,
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let device = timesteps.device();
    // exp(-ln(10000) * i / (half - shift)), computed in f32 as diffusers does.
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = -(10000f32.ln()) * i as f32 / (half as f64 - freq_shift) as f32;
            exponent.exp()
        })
        .collect();
    let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &device);
    let [b] = timesteps.dims();
    let args = timesteps.reshape([b, 1]) * freqs.reshape([1, half]);
    let (first, second) = if flip_sin_to_cos {
        (args.clone().cos(), args.sin())
    } else {
        (args.clone().sin(), args.cos())
    };
    let emb = Tensor::cat(vec![first, second], 1);
    if dim % 2 == 1 {
        // diffusers zero-pads odd widths.
        let zeros = Tensor::zeros([b, 1], &device);
        Tensor::cat(vec![emb, zeros], 1)
    } else {
        emb
    }
}

/// diffusers `TimestepEmbedding`: `linear_1` → SiLU → `linear_2`.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn new(in_dim: usize, time_embed_dim: usize, device: &B::Device) -> Self {
        Self {
            linear_1: linear(in_dim, time_embed_dim, true, device),
            linear_2: linear(time_embed_dim, time_embed_dim, true, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2.forward(silu(self.linear_1.forward(x)))
    }
}

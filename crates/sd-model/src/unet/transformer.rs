//! diffusers `Transformer2DModel` and `BasicTransformerBlock`: self-attention, cross-attention to
//! the text embeddings and a GEGLU feed-forward, around a GroupNorm and 1×1 projections.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, GroupNorm, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::gelu;

use lora_group::LoraLinear;

use crate::nn::{Attention, group_norm, layer_norm, linear};

/// diffusers `GEGLU`: `proj` to twice the inner width; `hidden * gelu(gate)`.
#[derive(Module, Debug)]
pub struct Geglu<B: Backend> {
    pub proj: Linear<B>,
}

impl<B: Backend> Geglu<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.proj.forward(x);
        let [hidden, gate] = h.chunk(2, 2).try_into().expect("chunk(2) gives two halves");
        hidden * gelu(gate)
    }
}

/// diffusers `FeedForward` with `activation_fn="geglu"`: `net.0` (GEGLU), `net.1` (Dropout),
/// `net.2` (Linear).
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub net: (Geglu<B>, Dropout, Linear<B>),
}

impl<B: Backend> FeedForward<B> {
    pub fn new(dim: usize, device: &B::Device) -> Self {
        let inner = 4 * dim;
        Self {
            net: (
                Geglu {
                    proj: linear(dim, 2 * inner, true, device),
                },
                DropoutConfig::new(0.0).init(),
                linear(inner, dim, true, device),
            ),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.2.forward(self.net.0.forward(x))
    }
}

/// diffusers `BasicTransformerBlock` (norm_type "layer_norm", eps 1e-5, no attention bias).
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: Attention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    pub fn new(
        dim: usize,
        heads: usize,
        head_dim: usize,
        cross_attention_dim: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            norm1: layer_norm(dim, 1e-5, device),
            attn1: Attention::new(dim, dim, heads, head_dim, false, device),
            norm2: layer_norm(dim, 1e-5, device),
            attn2: Attention::new(dim, cross_attention_dim, heads, head_dim, false, device),
            norm3: layer_norm(dim, 1e-5, device),
            ff: FeedForward::new(dim, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>, context: &Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward(x.clone()), Some(context.clone()))
            + x;
        self.ff.forward(self.norm3.forward(x.clone())) + x
    }
}

/// diffusers `Transformer2DModel` as SD 1.x uses it: GroupNorm (eps 1e-6), `proj_in`, the
/// transformer blocks over the H·W positions, `proj_out`, residual. `proj_in`/`proj_out` are
/// LoRA-capable Linear layers over channels: the 1×1 convolutions of SD 1.x checkpoints
/// (`[o, i, 1, 1]`) and the Linear layers of `use_linear_projection` ones (`[o, i]`) are the
/// same map and load alike.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: LoraLinear<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: LoraLinear<B>,
}

impl<B: Backend> Transformer2DModel<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        channels: usize,
        heads: usize,
        head_dim: usize,
        layers: usize,
        cross_attention_dim: usize,
        groups: usize,
        linear_projection: bool,
        device: &B::Device,
    ) -> Self {
        let inner = heads * head_dim;
        let proj = |i: usize, o: usize| {
            let l = linear(i, o, true, device);
            if linear_projection {
                LoraLinear::new(l)
            } else {
                LoraLinear::conv1x1(l)
            }
        };
        Self {
            norm: group_norm(groups, channels, 1e-6, device),
            proj_in: proj(channels, inner),
            transformer_blocks: (0..layers)
                .map(|_| {
                    BasicTransformerBlock::new(inner, heads, head_dim, cross_attention_dim, device)
                })
                .collect(),
            proj_out: proj(inner, channels),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let seq = crate::nn::group_norm_nchw(&self.norm, x)
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let mut seq = self.proj_in.forward(seq);
        for block in &self.transformer_blocks {
            seq = block.forward(seq, context);
        }
        self.proj_out
            .forward(seq)
            .swap_dims(1, 2)
            .reshape([b, c, h, w])
            + residual
    }
}

//! diffusers `UNet2DConditionModel` for the SD 1.x family, read from `unet/config.json`, with a
//! per-sample timestep tensor.

mod blocks;
mod embeddings;
mod lora;
mod transformer;

pub use blocks::{CrossAttn, DownBlock, MidBlock, UpBlock};
pub use embeddings::{TimestepEmbedding, timestep_features};
pub use transformer::{BasicTransformerBlock, FeedForward, Geglu, Transformer2DModel};

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Activation, DownBlockType, MidBlockType, OneOrMany, UpBlockType, read_config};
use crate::nn::{conv2d, group_norm};

/// The fields of diffusers' `UNet2DConditionModel` config that SD 1.x uses; other values of the
/// options that change the architecture are rejected when the model is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Latent channels in (default 4).
    pub in_channels: usize,
    /// Latent channels out (default 4).
    pub out_channels: usize,
    /// Per level: `CrossAttnDownBlock2D` or `DownBlock2D`.
    pub down_block_types: Vec<DownBlockType>,
    /// Per level, deepest first: `UpBlock2D` or `CrossAttnUpBlock2D`.
    pub up_block_types: Vec<UpBlockType>,
    /// `UNetMidBlock2DCrossAttn` (default).
    pub mid_block_type: Option<MidBlockType>,
    /// Channels per level (SD 1.5: 320, 640, 1280, 1280).
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (default 2; up blocks have one more).
    pub layers_per_block: OneOrMany,
    /// Transformer blocks per attention (default 1).
    pub transformer_layers_per_block: OneOrMany,
    /// In SD 1.x this is the number of heads (diffusers' historical naming); default 8.
    pub attention_head_dim: OneOrMany,
    /// When set, the number of heads (overrides `attention_head_dim`).
    pub num_attention_heads: Option<OneOrMany>,
    /// Width of the text embeddings (SD 1.5: 768).
    pub cross_attention_dim: usize,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: usize,
    /// GroupNorm/resnet epsilon (default 1e-5).
    pub norm_eps: f64,
    /// Sinusoidal embedding order (default true: cos first).
    pub flip_sin_to_cos: bool,
    /// Sinusoidal embedding frequency shift (default 0).
    pub freq_shift: f64,
    /// Map the input from [0, 1] to [-1, 1] first (default false).
    pub center_input_sample: bool,
    /// Must be 1 (default).
    pub downsample_padding: usize,
    /// Must be 1 (default).
    pub mid_block_scale_factor: f64,
    /// SiLU (default; the only one SD 1.x uses).
    pub act_fn: Activation,
    /// Must be "positional" (default).
    pub time_embedding_type: String,
    /// Must be "default" (default).
    pub resnet_time_scale_shift: String,
    /// Must be null (default).
    pub class_embed_type: Option<String>,
    /// Must be null (default).
    pub addition_embed_type: Option<String>,
    /// Must be false (default).
    pub only_cross_attention: bool,
    /// Must be false (default).
    pub dual_cross_attention: bool,
    /// Linear instead of 1×1-conv projections (same map; accepted).
    pub use_linear_projection: bool,
    /// Upcast attention to f32 (we compute attention in f32 already; accepted).
    pub upcast_attention: bool,
    /// Latent size the model was trained at (informational).
    pub sample_size: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        Self {
            in_channels: 4,
            out_channels: 4,
            down_block_types: vec![
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::CrossAttnDownBlock2D,
                DownBlockType::DownBlock2D,
            ],
            up_block_types: vec![
                UpBlockType::UpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
                UpBlockType::CrossAttnUpBlock2D,
            ],
            mid_block_type: Some(MidBlockType::UNetMidBlock2DCrossAttn),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: OneOrMany::One(2),
            transformer_layers_per_block: OneOrMany::One(1),
            attention_head_dim: OneOrMany::One(8),
            num_attention_heads: None,
            cross_attention_dim: 1280,
            norm_num_groups: 32,
            norm_eps: 1e-5,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            center_input_sample: false,
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            act_fn: Activation::Silu,
            time_embedding_type: "positional".into(),
            resnet_time_scale_shift: "default".into(),
            class_embed_type: None,
            addition_embed_type: None,
            only_cross_attention: false,
            dual_cross_attention: false,
            use_linear_projection: false,
            upcast_attention: false,
            sample_size: 64,
        }
    }
}

impl UNetConfig {
    /// Stable Diffusion 1.5: runwayml/stable-diffusion-v1-5 `unet/config.json`.
    pub fn sd15() -> Self {
        Self {
            cross_attention_dim: 768,
            ..Self::default()
        }
    }

    /// The parity fixture's tiny UNet (tools/parity/make_fixtures.py): the real key set with
    /// widths (8, 16, 32, 32), 4 groups and a non-square cross-attention width of 24.
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![8, 16, 32, 32],
            norm_num_groups: 4,
            cross_attention_dim: 24,
            sample_size: 16,
            ..Self::default()
        }
    }

    /// Reads `config.json` (unknown fields are ignored, as diffusers does).
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_config(path)?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Rejects what this implementation does not build, naming the field.
    pub fn validate(&self) -> Result<()> {
        let levels = self.block_out_channels.len();
        if levels == 0 {
            bail!("block_out_channels is empty");
        }
        if self.down_block_types.len() != levels || self.up_block_types.len() != levels {
            bail!(
                "down_block_types ({}) and up_block_types ({}) must have one entry per \
                 block_out_channels ({levels})",
                self.down_block_types.len(),
                self.up_block_types.len()
            );
        }
        let checks: [(&str, bool); 8] = [
            (
                "time_embedding_type must be \"positional\"",
                self.time_embedding_type == "positional",
            ),
            (
                "resnet_time_scale_shift must be \"default\"",
                self.resnet_time_scale_shift == "default",
            ),
            (
                "class_embed_type must be null",
                self.class_embed_type.is_none(),
            ),
            (
                "addition_embed_type must be null",
                self.addition_embed_type.is_none(),
            ),
            (
                "only_cross_attention must be false",
                !self.only_cross_attention,
            ),
            (
                "dual_cross_attention must be false",
                !self.dual_cross_attention,
            ),
            ("downsample_padding must be 1", self.downsample_padding == 1),
            (
                "mid_block_scale_factor must be 1",
                self.mid_block_scale_factor == 1.0,
            ),
        ];
        for (msg, ok) in checks {
            if !ok {
                bail!("unsupported config: {msg}");
            }
        }
        use crate::config::{MAX_LAYERS, MAX_WIDTH, check_range};
        check_range("block_out_channels length", levels, 1, 16)?;
        for &c in &self.block_out_channels {
            check_range("block_out_channels entry", c, 1, MAX_WIDTH)?;
        }
        check_range("norm_num_groups", self.norm_num_groups, 1, MAX_WIDTH)?;
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)?;
        check_range("out_channels", self.out_channels, 1, MAX_WIDTH)?;
        check_range(
            "cross_attention_dim",
            self.cross_attention_dim,
            1,
            MAX_WIDTH,
        )?;
        for (field, v) in [
            ("layers_per_block", &self.layers_per_block),
            (
                "transformer_layers_per_block",
                &self.transformer_layers_per_block,
            ),
        ] {
            for n in v.expand(levels, field)? {
                check_range(field, n, 1, MAX_LAYERS)?;
            }
        }
        let heads = self.heads()?;
        for (i, (&c, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if h == 0 || c % h != 0 {
                bail!("block_out_channels[{i}] = {c} is not divisible by {h} attention heads");
            }
            if c % self.norm_num_groups != 0 {
                bail!(
                    "block_out_channels[{i}] = {c} is not divisible by norm_num_groups = {}",
                    self.norm_num_groups
                );
            }
        }
        self.layers_per_block.expand(levels, "layers_per_block")?;
        self.transformer_layers_per_block
            .expand(levels, "transformer_layers_per_block")?;
        Ok(())
    }

    /// Heads per level (`num_attention_heads`, else `attention_head_dim`, as diffusers).
    pub fn heads(&self) -> Result<Vec<usize>> {
        let n = self.block_out_channels.len();
        match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads"),
            None => self.attention_head_dim.expand(n, "attention_head_dim"),
        }
    }

    /// Builds the model with freshly initialised (lazy) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<UNet2DConditionModel<B>> {
        self.validate()?;
        let n = self.block_out_channels.len();
        let ch = &self.block_out_channels;
        let heads = self.heads()?;
        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let tlayers = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;
        let temb = ch[0] * 4;
        let (groups, eps) = (self.norm_num_groups, self.norm_eps);
        let attn = |i: usize| CrossAttn {
            heads: heads[i],
            transformer_layers: tlayers[i],
            cross_attention_dim: self.cross_attention_dim,
            linear_projection: self.use_linear_projection,
        };
        let down_blocks = (0..n)
            .map(|i| {
                let input = if i == 0 { ch[0] } else { ch[i - 1] };
                let a = (self.down_block_types[i] == DownBlockType::CrossAttnDownBlock2D)
                    .then(|| attn(i));
                DownBlock::new(
                    input,
                    ch[i],
                    layers[i],
                    temb,
                    groups,
                    eps,
                    a,
                    i + 1 < n,
                    device,
                )
            })
            .collect();
        let mid_block = self
            .mid_block_type
            .as_ref()
            .map(|_| MidBlock::new(ch[n - 1], temb, groups, eps, attn(n - 1), device));
        let up_blocks = (0..n)
            .map(|i| {
                let r = n - 1 - i; // level in down-block order
                let out = ch[r];
                let prev = if i == 0 { ch[n - 1] } else { ch[r + 1] };
                let input = ch[r.saturating_sub(1)];
                let a =
                    (self.up_block_types[i] == UpBlockType::CrossAttnUpBlock2D).then(|| attn(r));
                UpBlock::new(
                    input,
                    out,
                    prev,
                    layers[r] + 1,
                    temb,
                    groups,
                    eps,
                    a,
                    i + 1 < n,
                    device,
                )
            })
            .collect();
        Ok(UNet2DConditionModel {
            conv_in: conv2d(self.in_channels, ch[0], 3, 1, 1, device),
            time_embedding: TimestepEmbedding::new(ch[0], temb, device),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(groups, ch[0], eps, device),
            conv_out: conv2d(ch[0], self.out_channels, 3, 1, 1, device),
            time_proj_dim: ch[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            center_input_sample: self.center_input_sample,
        })
    }
}

/// diffusers `UNet2DConditionModel` (SD 1.x block types). Field names are checkpoint keys.
#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub time_embedding: TimestepEmbedding<B>,
    pub down_blocks: Vec<DownBlock<B>>,
    pub mid_block: Option<MidBlock<B>>,
    pub up_blocks: Vec<UpBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    /// Width of the sinusoidal timestep features (`block_out_channels[0]`).
    pub time_proj_dim: usize,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub center_input_sample: bool,
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// Latent channels in (SD 1.x: 4).
    pub fn in_channels(&self) -> usize {
        self.conv_in.weight.lazy_shape()[1]
    }

    /// Predicts the noise (or v) for `sample` [B, 4, h, w] at per-sample `timesteps` [B] with
    /// text embeddings `context` [B, 77, D].
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timesteps: Tensor<B, 1>,
        context: Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let _span = tracing::trace_span!("unet").entered();
        let sample = if self.center_input_sample {
            sample * 2.0 - 1.0
        } else {
            sample
        };
        let t = timestep_features(
            timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
        );
        let temb = self.time_embedding.forward(t);
        let mut x = self.conv_in.forward(sample);
        let mut skips = vec![x.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            let _span = tracing::trace_span!("down_blocks", i).entered();
            x = block.forward(x, &temb, &context, &mut skips);
        }
        if let Some(mid) = &self.mid_block {
            let _span = tracing::trace_span!("mid_block").entered();
            x = mid.forward(x, &temb, &context);
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            let _span = tracing::trace_span!("up_blocks", i).entered();
            let size = skips.len().checked_sub(block.resnets.len() + 1).map(|i| {
                let [_, _, h, w] = skips[i].dims();
                [h, w]
            });
            x = block.forward(x, &temb, &context, &mut skips, size);
        }
        self.conv_out
            .forward(crate::nn::group_norm_silu(&self.conv_norm_out, x))
    }
}

//! diffusers `AutoencoderKL`: the encoder (to the mean and log-variance of the latent Gaussian)
//! and the decoder, read from `vae/config.json`.

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::GroupNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Activation, VaeDownBlockType, VaeUpBlockType, read_config};
use crate::nn::{Attention, Downsample2D, ResnetBlock2D, Upsample2D, conv2d, group_norm};

/// VAE GroupNorm/resnet epsilon (fixed in diffusers' Encoder/Decoder).
const EPS: f64 = 1e-6;

/// The fields of diffusers' `AutoencoderKL` config that SD 1.x uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Image channels in (default 3).
    pub in_channels: usize,
    /// Image channels out (default 3).
    pub out_channels: usize,
    /// Must all be `DownEncoderBlock2D`.
    pub down_block_types: Vec<VaeDownBlockType>,
    /// Must all be `UpDecoderBlock2D`.
    pub up_block_types: Vec<VaeUpBlockType>,
    /// Channels per level (SD 1.5: 128, 256, 512, 512).
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more); default 2 (SD 1.5).
    pub layers_per_block: usize,
    /// Latent channels (default 4).
    pub latent_channels: usize,
    /// GroupNorm groups (default 32).
    pub norm_num_groups: usize,
    /// Latent scaling factor (SD 1.5: 0.18215).
    pub scaling_factor: f64,
    /// Latent shift (SD 3 / Flux only; must be null).
    pub shift_factor: Option<f64>,
    /// 1×1 conv after the encoder (default true).
    pub use_quant_conv: bool,
    /// 1×1 conv before the decoder (default true).
    pub use_post_quant_conv: bool,
    /// Must be true (the SD 1.x VAE).
    pub mid_block_add_attention: bool,
    /// SiLU (the only one SD 1.x uses).
    pub act_fn: Activation,
    /// Image size the model was trained at (informational).
    pub sample_size: usize,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![VaeDownBlockType::DownEncoderBlock2D; 4],
            up_block_types: vec![VaeUpBlockType::UpDecoderBlock2D; 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            latent_channels: 4,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
            act_fn: Activation::Silu,
            sample_size: 512,
        }
    }
}

impl VaeConfig {
    /// Stable Diffusion 1.5: runwayml/stable-diffusion-v1-5 `vae/config.json`.
    pub fn sd15() -> Self {
        Self::default()
    }

    /// The parity fixture's tiny VAE (tools/parity/make_fixtures.py).
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![8, 16, 32, 32],
            norm_num_groups: 4,
            sample_size: 32,
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
        let n = self.block_out_channels.len();
        if n == 0 {
            bail!("block_out_channels is empty");
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            bail!(
                "down_block_types and up_block_types must have one entry per block_out_channels ({n})"
            );
        }
        if self.shift_factor.is_some() {
            bail!("unsupported config: shift_factor must be null");
        }
        use crate::config::{MAX_LAYERS, MAX_WIDTH, check_range};
        check_range("block_out_channels length", n, 1, 16)?;
        for &c in &self.block_out_channels {
            check_range("block_out_channels entry", c, 1, MAX_WIDTH)?;
        }
        check_range("norm_num_groups", self.norm_num_groups, 1, MAX_WIDTH)?;
        check_range("in_channels", self.in_channels, 1, MAX_WIDTH)?;
        check_range("out_channels", self.out_channels, 1, MAX_WIDTH)?;
        check_range("latent_channels", self.latent_channels, 1, MAX_WIDTH)?;
        check_range("layers_per_block", self.layers_per_block, 1, MAX_LAYERS)?;
        if !(self.scaling_factor.is_finite() && self.scaling_factor > 0.0) {
            bail!(
                "scaling_factor must be a positive number, got {}",
                self.scaling_factor
            );
        }
        if !self.mid_block_add_attention {
            bail!("unsupported config: mid_block_add_attention must be true");
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| *c % self.norm_num_groups != 0)
        {
            bail!(
                "block_out_channels entry {c} is not divisible by norm_num_groups = {}",
                self.norm_num_groups
            );
        }
        Ok(())
    }

    /// Builds the model with freshly initialised (lazy) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<AutoencoderKL<B>> {
        self.validate()?;
        let ch = &self.block_out_channels;
        let n = ch.len();
        let g = self.norm_num_groups;
        let top = ch[n - 1];
        let latent = self.latent_channels;
        let encoder = Encoder {
            conv_in: conv2d(self.in_channels, ch[0], 3, 1, 1, device),
            down_blocks: (0..n)
                .map(|i| {
                    let input = if i == 0 { ch[0] } else { ch[i - 1] };
                    EncoderBlock {
                        resnets: (0..self.layers_per_block)
                            .map(|j| {
                                let inp = if j == 0 { input } else { ch[i] };
                                ResnetBlock2D::new(inp, ch[i], None, g, EPS, device)
                            })
                            .collect(),
                        downsamplers: if i + 1 < n {
                            vec![Downsample2D::asymmetric(ch[i], device)]
                        } else {
                            Vec::new()
                        },
                    }
                })
                .collect(),
            mid_block: VaeMidBlock::new(top, g, device),
            conv_norm_out: group_norm(g, top, EPS, device),
            conv_out: conv2d(top, 2 * latent, 3, 1, 1, device),
        };
        let decoder = Decoder {
            conv_in: conv2d(latent, top, 3, 1, 1, device),
            mid_block: VaeMidBlock::new(top, g, device),
            up_blocks: (0..n)
                .map(|i| {
                    let r = n - 1 - i;
                    let prev = if i == 0 { top } else { ch[r + 1] };
                    DecoderBlock {
                        resnets: (0..self.layers_per_block + 1)
                            .map(|j| {
                                let inp = if j == 0 { prev } else { ch[r] };
                                ResnetBlock2D::new(inp, ch[r], None, g, EPS, device)
                            })
                            .collect(),
                        upsamplers: if i + 1 < n {
                            vec![Upsample2D::new(ch[r], device)]
                        } else {
                            Vec::new()
                        },
                    }
                })
                .collect(),
            conv_norm_out: group_norm(g, ch[0], EPS, device),
            conv_out: conv2d(ch[0], self.out_channels, 3, 1, 1, device),
        };
        Ok(AutoencoderKL {
            encoder,
            decoder,
            quant_conv: self
                .use_quant_conv
                .then(|| conv2d(2 * latent, 2 * latent, 1, 1, 0, device)),
            post_quant_conv: self
                .use_post_quant_conv
                .then(|| conv2d(latent, latent, 1, 1, 0, device)),
            scaling_factor: self.scaling_factor,
        })
    }
}

/// diffusers `UNetMidBlock2D` as the VAE uses it: resnet, spatial attention, resnet.
#[derive(Module, Debug)]
pub struct VaeMidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Attention<B>>,
}

impl<B: Backend> VaeMidBlock<B> {
    fn new(channels: usize, groups: usize, device: &B::Device) -> Self {
        Self {
            resnets: (0..2)
                .map(|_| ResnetBlock2D::new(channels, channels, None, groups, EPS, device))
                .collect(),
            attentions: vec![Attention::spatial(channels, groups, EPS, device)],
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward_spatial(x);
            x = resnet.forward(x, None);
        }
        x
    }
}

/// diffusers `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct EncoderBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

/// diffusers `UpDecoderBlock2D`.
#[derive(Module, Debug)]
pub struct DecoderBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

/// diffusers `Encoder` (double_z).
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<EncoderBlock<B>>,
    pub mid_block: VaeMidBlock<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Encoder<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let _span = tracing::trace_span!("vae.encoder").entered();
        let mut x = self.conv_in.forward(x);
        for (i, block) in self.down_blocks.iter().enumerate() {
            let _span = tracing::trace_span!("down_blocks", i).entered();
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            for down in &block.downsamplers {
                x = down.forward(x);
            }
        }
        let x = self.mid_block.forward(x);
        self.conv_out
            .forward(crate::nn::group_norm_silu(&self.conv_norm_out, x))
    }
}

/// diffusers `Decoder`.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: VaeMidBlock<B>,
    pub up_blocks: Vec<DecoderBlock<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
}

impl<B: Backend> Decoder<B> {
    pub fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let _span = tracing::trace_span!("vae.decoder").entered();
        let x = self.conv_in.forward(z);
        let mut x = {
            let _span = tracing::trace_span!("mid_block").entered();
            self.mid_block.forward(x)
        };
        for (i, block) in self.up_blocks.iter().enumerate() {
            let _span = tracing::trace_span!("up_blocks", i).entered();
            for resnet in &block.resnets {
                x = resnet.forward(x, None);
            }
            for up in &block.upsamplers {
                x = up.forward(x, None);
            }
        }
        self.conv_out
            .forward(crate::nn::group_norm_silu(&self.conv_norm_out, x))
    }
}

/// diffusers `AutoencoderKL`. Field names are checkpoint keys.
#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
    /// Latents are multiplied by this after encoding (and divided before decoding).
    pub scaling_factor: f64,
}

/// The latent distribution of an image: a diagonal Gaussian.
#[derive(Debug, Clone)]
pub struct LatentDist<B: Backend> {
    /// [B, latent, h, w]
    pub mean: Tensor<B, 4>,
    /// Log-variance, clamped to [-30, 20] as diffusers does.
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> AutoencoderKL<B> {
    /// The downsampling factor from images to latents: 2^(levels − 1) (SD 1.x: 8).
    pub fn scale_factor(&self) -> usize {
        1 << self.encoder.down_blocks.len().saturating_sub(1)
    }

    /// Images in [-1, 1] [B, 3, H, W] → the latent Gaussian (unscaled latents).
    pub fn encode(&self, image: Tensor<B, 4>) -> LatentDist<B> {
        let h = self.encoder.forward(image);
        let h = match &self.quant_conv {
            Some(conv) => conv.forward(h),
            None => h,
        };
        let [mean, logvar] = h.chunk(2, 1).try_into().expect("chunk(2) gives two halves");
        LatentDist {
            mean,
            logvar: logvar.clamp(-30.0, 20.0),
        }
    }

    /// Unscaled latents [B, latent, h, w] → images [B, 3, 8h, 8w] (≈ [-1, 1], not clamped).
    pub fn decode(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(z),
            None => z,
        };
        self.decoder.forward(z)
    }

    /// Scaled latents (as the UNet sees them) → images: `decode(latents / scaling_factor)`.
    pub fn decode_latents(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        self.decode(latents / self.scaling_factor)
    }
}

//! The UNet's down, mid and up blocks (CrossAttnDownBlock2D / DownBlock2D,
//! UNetMidBlock2DCrossAttn, UpBlock2D / CrossAttnUpBlock2D). A plain block is the same struct with
//! no attentions, so that module paths stay exactly the checkpoint keys.

use burn::module::Module;
use burn::prelude::*;

use super::transformer::Transformer2DModel;
use crate::nn::{Downsample2D, ResnetBlock2D, Upsample2D};

/// Shape of the attention part of a block (None for plain blocks).
#[derive(Debug, Clone, Copy)]
pub struct CrossAttn {
    pub heads: usize,
    pub transformer_layers: usize,
    pub cross_attention_dim: usize,
    /// `use_linear_projection` (Linear proj_in/proj_out in checkpoints; else 1×1 convs).
    pub linear_projection: bool,
}

fn transformer<B: Backend>(
    channels: usize,
    attn: CrossAttn,
    groups: usize,
    device: &B::Device,
) -> Transformer2DModel<B> {
    Transformer2DModel::new(
        channels,
        attn.heads,
        channels / attn.heads,
        attn.transformer_layers,
        attn.cross_attention_dim,
        groups,
        attn.linear_projection,
        device,
    )
}

/// `CrossAttnDownBlock2D` (with attentions) or `DownBlock2D` (without).
#[derive(Module, Debug)]
pub struct DownBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

impl<B: Backend> DownBlock<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        layers: usize,
        temb_ch: usize,
        groups: usize,
        eps: f64,
        attn: Option<CrossAttn>,
        downsample: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..layers)
                .map(|j| {
                    let i = if j == 0 { in_ch } else { out_ch };
                    ResnetBlock2D::new(i, out_ch, Some(temb_ch), groups, eps, device)
                })
                .collect(),
            attentions: match attn {
                Some(a) => (0..layers)
                    .map(|_| transformer(out_ch, a, groups, device))
                    .collect(),
                None => Vec::new(),
            },
            downsamplers: if downsample {
                vec![Downsample2D::new(out_ch, device)]
            } else {
                Vec::new()
            },
        }
    }

    /// Returns the block's output and pushes every intermediate state onto `skips`.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        skips: &mut Vec<Tensor<B, 4>>,
    ) -> Tensor<B, 4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(x, context);
            }
            skips.push(x.clone());
        }
        for down in &self.downsamplers {
            x = down.forward(x);
            skips.push(x.clone());
        }
        x
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, (attention, resnet) × layers.
#[derive(Module, Debug)]
pub struct MidBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
}

impl<B: Backend> MidBlock<B> {
    pub fn new(
        channels: usize,
        temb_ch: usize,
        groups: usize,
        eps: f64,
        attn: CrossAttn,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..2)
                .map(|_| ResnetBlock2D::new(channels, channels, Some(temb_ch), groups, eps, device))
                .collect(),
            attentions: vec![transformer(channels, attn, groups, device)],
        }
    }

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(x, context);
            x = resnet.forward(x, Some(temb));
        }
        x
    }
}

/// `CrossAttnUpBlock2D` (with attentions) or `UpBlock2D` (without).
#[derive(Module, Debug)]
pub struct UpBlock<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub attentions: Vec<Transformer2DModel<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpBlock<B> {
    /// `in_ch`: channels of the deepest skip connection this block receives; `prev_ch`: channels
    /// of the incoming hidden state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        prev_ch: usize,
        layers: usize,
        temb_ch: usize,
        groups: usize,
        eps: f64,
        attn: Option<CrossAttn>,
        upsample: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            resnets: (0..layers)
                .map(|j| {
                    let skip = if j == layers - 1 { in_ch } else { out_ch };
                    let input = if j == 0 { prev_ch } else { out_ch };
                    ResnetBlock2D::new(input + skip, out_ch, Some(temb_ch), groups, eps, device)
                })
                .collect(),
            attentions: match attn {
                Some(a) => (0..layers)
                    .map(|_| transformer(out_ch, a, groups, device))
                    .collect(),
                None => Vec::new(),
            },
            upsamplers: if upsample {
                vec![Upsample2D::new(out_ch, device)]
            } else {
                Vec::new()
            },
        }
    }

    /// Consumes this block's skip connections from the end of `skips`; `size` is the spatial size
    /// to upsample to (that of the next skip connection).
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        skips: &mut Vec<Tensor<B, 4>>,
        size: Option<[usize; 2]>,
    ) -> Tensor<B, 4> {
        for (j, resnet) in self.resnets.iter().enumerate() {
            let skip = skips
                .pop()
                .expect("one skip connection per up-block resnet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(j) {
                x = attn.forward(x, context);
            }
        }
        for up in &self.upsamplers {
            x = up.forward(x, size);
        }
        x
    }
}

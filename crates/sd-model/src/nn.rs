//! Building blocks shared by the UNet and the VAE: constructors with diffusers' defaults,
//! ResnetBlock2D, Attention, Upsample2D and Downsample2D, each named as its checkpoint keys.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::prelude::*;
use burn::tensor::activation;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use lora_group::LoraLinear;

/// A `k`×`k` convolution with symmetric zero padding `pad`.
pub fn conv2d<B: Backend>(
    in_ch: usize,
    out_ch: usize,
    k: usize,
    stride: usize,
    pad: usize,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([in_ch, out_ch], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

/// A Linear layer (`bias` as in the checkpoint).
pub fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

/// An affine GroupNorm.
pub fn group_norm<B: Backend>(
    groups: usize,
    channels: usize,
    eps: f64,
    device: &B::Device,
) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(eps)
        .init(device)
}

/// `GroupNorm::forward` for an [N, C, H, W] input. On burn-flex (f32) a fused kernel
/// (`crate::flex`: f64 statistics, one output pass; 3x faster at the VAE's sizes); on LibTorch
/// torch's `group_norm` (`crate::tch_ops`, f32 accumulation, under autodiff too); elsewhere the
/// same operations in the same order as Burn's forward (bit-identical results, gradients
/// included), except that the affine step runs through `per_channel` rather than a broadcast
/// from [1, C, 1, 1], which made burn's GroupNorm 80x slower than PyTorch's on CPU.
pub fn group_norm_nchw<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    group_norm_act(norm, x, false)
}

/// `silu(group_norm_nchw(norm, x))`, in one pass on burn-flex.
pub fn group_norm_silu<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    group_norm_act(norm, x, true)
}

/// SiLU; on burn-flex (f32) a vectorised multi-threaded kernel (5x faster than burn-flex's at
/// the VAE's sizes).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    crate::flex::silu(&x).unwrap_or_else(|| activation::silu(x))
}

fn group_norm_act<B: Backend>(norm: &GroupNorm<B>, x: Tensor<B, 4>, act: bool) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    assert_eq!(
        c, norm.num_channels,
        "GroupNorm expects {} channels, got {c}",
        norm.num_channels
    );
    let params = match (&norm.gamma, &norm.beta) {
        (Some(gamma), Some(beta)) if norm.affine => Some([gamma.val(), beta.val()]),
        _ => None,
    };
    let groups = norm.num_groups;
    if let Some(y) = crate::flex::group_norm(&x, groups, norm.epsilon, params.as_ref(), act) {
        return y;
    }
    #[cfg(feature = "tch")]
    if let Some(gb) = &params {
        let args = crate::tch_ops::GroupNormArgs {
            groups,
            eps: norm.epsilon,
            silu: act,
        };
        if let Some(y) = crate::tch_ops::group_norm(&x, gb, args) {
            return y;
        }
    }
    let len = c / groups * h * w;
    let x = x.reshape([n, groups, len]);
    let mean = x.clone().sum_dim(2) / len as f64;
    let x = x.sub(mean);
    let var = x.clone().square().sum_dim(2) / len as f64;
    let x = x
        .div(var.add_scalar(norm.epsilon).sqrt())
        .reshape([n, c, h, w]);
    let y = match params {
        Some(gb) => per_channel(x, gb, |x, [g, b]| x.mul(g).add(b)),
        None => x,
    };
    if act { activation::silu(y) } else { y }
}

/// Applies `f(rows, per_row)` to an [N, C, H, W] tensor seen as [N·C, H·W] rows, with each of
/// `vs` (per-channel vectors [C]) repeated to one value per row, [N·C, 1]: the same values as a
/// broadcast from [1, C, 1, 1], which burn-flex runs some 35x slower (21 ms against 0.6 ms on
/// [2, 320, 64, 64], 2 cores; `examples/profile_unet_ops.rs`).
pub fn per_channel<B: Backend, const K: usize>(
    x: Tensor<B, 4>,
    vs: [Tensor<B, 1>; K],
    f: impl FnOnce(Tensor<B, 2>, [Tensor<B, 2>; K]) -> Tensor<B, 2>,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let rows = vs.map(|v| v.reshape([1, c]).repeat_dim(0, n).reshape([n * c, 1]));
    f(x.reshape([n * c, h * w]), rows).reshape([n, c, h, w])
}

/// An affine LayerNorm.
pub fn layer_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

/// Nearest-neighbour upsampling to `[h, w]`, as `F.interpolate(mode="nearest")`: an exact 2×
/// copy of each pixel when the size doubles, index `floor(dst * in / out)` otherwise.
pub fn upsample_nearest<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if size == [2 * h, 2 * w] {
        // Burn's nearest kernel: for an exact doubling it copies each pixel to a 2x2 block
        // (bit-identical to the reshape/expand form, which is 10-20x slower on burn-flex).
        let options = InterpolateOptions::new(InterpolateMode::Nearest);
        return interpolate(x, size, options);
    }
    let device = x.device();
    let rows: Vec<i64> = (0..size[0]).map(|i| (i * h / size[0]) as i64).collect();
    let cols: Vec<i64> = (0..size[1]).map(|j| (j * w / size[1]) as i64).collect();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [size[0]]), &device);
    let cols = Tensor::<B, 1, Int>::from_data(TensorData::new(cols, [size[1]]), &device);
    x.select(2, rows).select(3, cols)
}

/// diffusers `ResnetBlock2D` (time_embedding_norm "default", output_scale_factor 1).
#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    /// Projection of the time embedding; absent in the VAE.
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    /// 1×1 convolution when the channel count changes.
    pub conv_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock2D<B> {
    /// A block from `in_ch` to `out_ch` channels; `temb_ch` is the time-embedding width (None in
    /// the VAE).
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        temb_ch: Option<usize>,
        groups: usize,
        eps: f64,
        device: &B::Device,
    ) -> Self {
        Self {
            norm1: group_norm(groups, in_ch, eps, device),
            conv1: conv2d(in_ch, out_ch, 3, 1, 1, device),
            time_emb_proj: temb_ch.map(|t| linear(t, out_ch, true, device)),
            norm2: group_norm(groups, out_ch, eps, device),
            conv2: conv2d(out_ch, out_ch, 3, 1, 1, device),
            conv_shortcut: (in_ch != out_ch).then(|| conv2d(in_ch, out_ch, 1, 1, 0, device)),
        }
    }

    /// `x` [B, C, H, W]; `temb` [B, T] (the raw time embedding; SiLU is applied here).
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let mut h = self.conv1.forward(group_norm_silu(&self.norm1, x.clone()));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(silu(temb.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(group_norm_silu(&self.norm2, h));
        let x = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        x + h
    }
}

/// diffusers `Attention`: multi-head attention with `to_q`, `to_k`, `to_v` and `to_out.0` (each a
/// LoRA-capable Linear); with a `group_norm` and a residual connection when used as the VAE's
/// spatial attention.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// GroupNorm applied to the spatial input (VAE only).
    pub group_norm: Option<GroupNorm<B>>,
    pub to_q: LoraLinear<B>,
    pub to_k: LoraLinear<B>,
    pub to_v: LoraLinear<B>,
    /// `to_out.0` (the ModuleList's Linear; its Dropout has no weights).
    pub to_out: Vec<LoraLinear<B>>,
    /// Number of heads.
    pub heads: usize,
}

impl<B: Backend> Attention<B> {
    /// Attention from `query_dim` (keys/values from `context_dim`) with `heads` heads of
    /// `head_dim`; `qkv_bias` as diffusers' `bias` argument.
    pub fn new(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        device: &B::Device,
    ) -> Self {
        let inner = heads * head_dim;
        Self {
            group_norm: None,
            to_q: LoraLinear::new(linear(query_dim, inner, qkv_bias, device)),
            to_k: LoraLinear::new(linear(context_dim, inner, qkv_bias, device)),
            to_v: LoraLinear::new(linear(context_dim, inner, qkv_bias, device)),
            to_out: vec![LoraLinear::new(linear(inner, query_dim, true, device))],
            heads,
        }
    }

    /// The VAE's single-head spatial attention over `channels` with a GroupNorm.
    pub fn spatial(channels: usize, groups: usize, eps: f64, device: &B::Device) -> Self {
        let mut attn = Self::new(channels, channels, 1, channels, true, device);
        attn.group_norm = Some(group_norm(groups, channels, eps, device));
        attn
    }

    /// `x` [B, N, Dq], `context` [B, M, Dc] (None: self-attention) → [B, N, Dq].
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let context = context.unwrap_or_else(|| x.clone());
        let q = self.split_heads(self.to_q.forward(x));
        let k = self.split_heads(self.to_k.forward(context.clone()));
        let v = self.split_heads(self.to_v.forward(context));
        let out = crate::attention::scaled_dot_product(q, k, v);
        let [b, h, n, d] = out.dims();
        let out = out.swap_dims(1, 2).reshape([b, n, h * d]);
        self.to_out[0].forward(out)
    }

    /// Visits `to_q`, `to_k`, `to_v`, `to_out.0` with their paths under `prefix`.
    pub fn visit_lora(&self, prefix: &str, f: &mut dyn FnMut(&str, &LoraLinear<B>)) {
        f(&format!("{prefix}.to_q"), &self.to_q);
        f(&format!("{prefix}.to_k"), &self.to_k);
        f(&format!("{prefix}.to_v"), &self.to_v);
        f(&format!("{prefix}.to_out.0"), &self.to_out[0]);
    }

    /// As [`visit_lora`](Self::visit_lora), mutably.
    pub fn visit_lora_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
        f(&format!("{prefix}.to_q"), &mut self.to_q);
        f(&format!("{prefix}.to_k"), &mut self.to_k);
        f(&format!("{prefix}.to_v"), &mut self.to_v);
        f(&format!("{prefix}.to_out.0"), &mut self.to_out[0]);
    }

    /// The VAE attention block: GroupNorm, attention over the H·W positions, residual.
    pub fn forward_spatial(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => group_norm_nchw(norm, x.clone()),
            None => x.clone(),
        };
        let seq = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.forward(seq, None);
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }

    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, n, inner] = x.dims();
        x.reshape([b, n, self.heads, inner / self.heads])
            .swap_dims(1, 2)
    }
}

/// diffusers `Upsample2D`: nearest 2× (or to the skip connection's size), then a 3×3 conv.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv2d(channels, channels, 3, 1, 1, device),
        }
    }

    /// Upsamples to `size` (default: twice the input).
    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([2 * h, 2 * w]);
        self.conv.forward(upsample_nearest(x, size))
    }
}

/// diffusers `Downsample2D`: a 3×3 stride-2 conv; padding 1 in the UNet, and in the VAE padding 0
/// after a (0, 1, 0, 1) zero pad (right and bottom only).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Downsample2D<B> {
    /// The UNet's downsampler (symmetric padding 1).
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: conv2d(channels, channels, 3, 2, 1, device),
        }
    }

    /// The VAE encoder's downsampler (zero pad right and bottom by one).
    pub fn asymmetric(channels: usize, device: &B::Device) -> Self {
        Self {
            conv: Conv2dConfig::new([channels, channels], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
                .init(device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.conv.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuAutodiff;
    use burn::tensor::Distribution;

    /// The generic path (every backend but burn-flex; here the autodiff one) must not change a
    /// single bit: same ops, same order as burn's forward (random affine parameters, so gamma and
    /// beta matter; batch 1 and 2). The flex kernel is checked in `crate::flex`.
    #[test]
    fn group_norm_nchw_equals_burns_forward_bit_for_bit() {
        let d = Default::default();
        for n in [1, 2] {
            let mut gn = group_norm::<CpuAutodiff>(4, 12, 1e-6, &d);
            gn.gamma = Some(burn::module::Param::from_tensor(Tensor::random(
                [12],
                Distribution::Normal(1.0, 0.5),
                &d,
            )));
            gn.beta = Some(burn::module::Param::from_tensor(Tensor::random(
                [12],
                Distribution::Normal(0.0, 0.5),
                &d,
            )));
            let x =
                Tensor::<CpuAutodiff, 4>::random([n, 12, 5, 7], Distribution::Normal(0.3, 2.0), &d);
            let ours = group_norm_nchw(&gn, x.clone()).into_data();
            let burns = gn.forward(x).into_data();
            assert_eq!(
                ours.to_vec::<f32>().unwrap(),
                burns.to_vec::<f32>().unwrap()
            );
        }
    }

    /// Gradients with respect to the input and to gamma/beta flow as through burn's forward.
    #[test]
    fn group_norm_nchw_gradients_equal_burns() {
        let d = Default::default();
        let gn = group_norm::<CpuAutodiff>(2, 6, 1e-5, &d);
        let x0 = Tensor::<CpuAutodiff, 4>::random([2, 6, 3, 4], Distribution::Default, &d);
        let w = Tensor::<CpuAutodiff, 4>::random([2, 6, 3, 4], Distribution::Default, &d);
        let grads = |ours: bool| {
            let x = x0.clone().require_grad();
            let y = if ours {
                group_norm_nchw(&gn, x.clone())
            } else {
                gn.forward(x.clone())
            };
            let g = (y * w.clone()).sum().backward();
            let gx = x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
            let gg = gn.gamma.as_ref().unwrap().val().grad(&g).unwrap();
            (gx, gg.into_data().to_vec::<f32>().unwrap())
        };
        let (a, b) = (grads(true), grads(false));
        assert_eq!(a.0, b.0, "input gradient");
        // Summing over the repeated batch may order the additions differently: 1 ulp-level.
        for (u, v) in a.1.iter().zip(&b.1) {
            assert!(
                (u - v).abs() <= 1e-5 * v.abs().max(1.0),
                "gamma gradient {u} vs {v}"
            );
        }
    }
}

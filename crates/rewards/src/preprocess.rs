//! Differentiable CLIP preprocessing of generated images: [-1, 1] → [0, 1], torchvision's
//! antialiased bilinear `Resize(224)` (as matrices, so gradients flow), a centre crop for
//! non-square images, and normalisation with the CLIP constants.

use burn::prelude::*;
use sd_model::nn::per_channel;

/// OpenAI CLIP's per-channel mean.
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP's per-channel standard deviation (the constants as published; f32 rounds them).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// The interpolation weights [output, input] of PyTorch's antialiased bilinear resize
/// (`F.interpolate(mode="bilinear", antialias=True, align_corners=False)`): a triangle filter
/// stretched by the downscale factor, each row normalised to sum to 1 (for upscaling it is plain
/// bilinear interpolation).
pub fn aa_bilinear_weights(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    let mut w = vec![0f32; output * input];
    for i in 0..output {
        let center = scale * (i as f64 + 0.5);
        let xmin = ((center - support + 0.5).trunc() as i64).max(0) as usize;
        let xmax = ((center + support + 0.5).trunc() as i64).min(input as i64) as usize;
        let row: Vec<f64> = (xmin..xmax)
            .map(|j| {
                let x = (j as f64 - center + 0.5) * invscale;
                (1.0 - x.abs()).max(0.0)
            })
            .collect();
        let total: f64 = row.iter().sum();
        for (k, v) in row.iter().enumerate() {
            w[i * input + xmin + k] = if total > 0.0 { (v / total) as f32 } else { 0.0 };
        }
    }
    w
}

/// Applies a linear map along each spatial axis: `mh` [h', H] · x · `mwᵀ` [W, w'] for x
/// [B, C, H, W] (differentiable: two matrix products). `mh` and `mw` are row-major.
pub fn separable<B: Backend>(
    x: Tensor<B, 4>,
    mh: Vec<f32>,
    mw: Vec<f32>,
    size: [usize; 2],
) -> Tensor<B, 4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let rw = Tensor::<B, 2>::from_data(TensorData::new(mw, [size[1], w]), &device);
    let rh = Tensor::<B, 2>::from_data(TensorData::new(mh, [size[0], h]), &device);
    let x = x.matmul(rw.transpose().unsqueeze::<4>().expand([b, c, w, size[1]]));
    rh.unsqueeze::<4>().expand([b, c, size[0], h]).matmul(x)
}

/// Resizes images [B, C, H, W] to `[h, w]` with antialiased bilinear interpolation.
pub fn resize<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    separable(
        x,
        aa_bilinear_weights(h, size[0]),
        aa_bilinear_weights(w, size[1]),
        size,
    )
}

/// The size torchvision's `Resize(n)` gives: the shorter side becomes `n`, the longer
/// `int(n * long / short)`.
pub fn shorter_side_size(h: usize, w: usize, n: usize) -> [usize; 2] {
    if h <= w {
        [n, (n * w) / h]
    } else {
        [(n * h) / w, n]
    }
}

/// torchvision's `CenterCrop(n)` for an image at least `n` on each side: offsets
/// `int(round((size - n) / 2.0))` with Python's `round`, half to even (a margin of 149 starts at
/// 74, not 75).
pub fn center_crop<B: Backend>(x: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let top = ((h - n) as f64 / 2.0).round_ties_even() as usize;
    let left = ((w - n) as f64 / 2.0).round_ties_even() as usize;
    x.narrow(2, top, n).narrow(3, left, n)
}

/// Subtracts the CLIP mean and divides by the CLIP standard deviation, per channel.
pub fn normalize<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let device = x.device();
    let mean = Tensor::<B, 1>::from_floats(CLIP_MEAN, &device);
    let std = Tensor::<B, 1>::from_floats(CLIP_STD, &device);
    per_channel(x, [mean, std], |x, [m, s]| (x - m) / s)
}

/// AlignProp's preprocessing of decoded images [B, 3, H, W] in [-1, 1] for a CLIP tower of input
/// size `n`: `clamp(x / 2 + 0.5, 0, 1)`, `Resize(n)`, a centre crop when the image is not square
/// (square images, as SD generates, need none), `Normalize(CLIP mean, std)`.
pub fn clip_preprocess<B: Backend>(images: Tensor<B, 4>, n: usize) -> Tensor<B, 4> {
    let [_, _, h, w] = images.dims();
    let x = (images / 2.0 + 0.5).clamp(0.0, 1.0);
    let x = resize(x, shorter_side_size(h, w, n));
    let x = if h == w { x } else { center_crop(x, n) };
    normalize(x)
}

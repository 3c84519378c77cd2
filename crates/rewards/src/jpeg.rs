//! A differentiable JPEG codec (Reich et al. 2024, as `kornia.enhance.jpeg_codec_differentiable`
//! implements it) and the compressibility reward R = −mean((x − JPEG(x))²) on images in [0, 1].
//!
//! The codec: replicate-pad to a multiple of 16; RGB → YCbCr (×255); chroma subsampled by a 3×3
//! Gaussian blur (σ 0.5, reflect border) and a 2× bilinear downscale; 8×8 DCT of each block minus
//! 128; quantisation by the IJG tables scaled by quality with kornia's smooth floor and clipping,
//! and polynomial rounding `round(v) + (v − round(v))³` (its gradient is 3(v − round v)²);
//! dequantisation, inverse DCT, 2× bilinear chroma upsampling, YCbCr → RGB clamped to [0, 1], and
//! the crop back to the input size. Every step is a tensor op, so gradients reach the image.

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::Reward;
use crate::preprocess::separable;

/// The IJG luminance quantisation table (JPEG standard, Annex K).
pub const QT_Y: [f32; 64] = [
    16., 11., 10., 16., 24., 40., 51., 61., 12., 12., 14., 19., 26., 58., 60., 55., 14., 13., 16.,
    24., 40., 57., 69., 56., 14., 17., 22., 29., 51., 87., 80., 62., 18., 22., 37., 56., 68., 109.,
    103., 77., 24., 35., 55., 64., 81., 104., 113., 92., 49., 64., 78., 87., 103., 121., 120.,
    101., 72., 92., 95., 98., 112., 100., 103., 99.,
];

/// The IJG chrominance quantisation table.
pub const QT_C: [f32; 64] = [
    17., 18., 24., 47., 99., 99., 99., 99., 18., 21., 26., 66., 99., 99., 99., 99., 24., 26., 56.,
    99., 99., 99., 99., 99., 47., 66., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99.,
    99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99., 99.,
    99., 99., 99., 99., 99., 99., 99.,
];

/// kornia's smooth floor: `floor(x) + (x − 0.5 − floor(x))³`.
fn poly_floor(x: f32) -> f32 {
    let f = x.floor();
    f + (x - 0.5 - f).powi(3)
}

/// kornia's smooth clipping to [lo, hi] (exponential approach, scale 0.02).
fn soft_clip(x: f32, lo: f32, hi: f32) -> f32 {
    let scale = 0.02f32;
    let x = if x - hi > 0.0 {
        -scale * ((-(x - hi)).exp() - 1.0) + hi
    } else {
        x
    };
    if x - lo < 0.0 {
        scale * ((x - lo).exp() - 1.0) + lo
    } else {
        x
    }
}

/// The quantisation table of `base` at `quality` (0–100; 0 acts as 1, as libjpeg), computed as
/// kornia does in f32.
pub fn scaled_table(base: &[f32; 64], quality: f32) -> [f32; 64] {
    let q = if quality == 0.0 { 1.0 } else { quality };
    let scale = poly_floor(if q < 50.0 {
        5000.0 / q
    } else {
        200.0 - 2.0 * q
    });
    base.map(|t| poly_floor(soft_clip((t * scale + 50.0) / 100.0, 1.0, 255.0)))
}

/// Block-diagonal 8-point DCT basis over `n` pixels: M[8a + u, 8a + x] = cos((2x + 1)uπ/16), so
/// that `M · X · Mᵀ` holds every 8×8 block's (unscaled) DCT.
fn dct_blocks(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; n * n];
    for a in 0..n / 8 {
        for u in 0..8 {
            for x in 0..8 {
                let v = ((2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / 16.0).cos();
                m[(8 * a + u) * n + 8 * a + x] = v as f32;
            }
        }
    }
    m
}

fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = m[r * cols + c];
        }
    }
    t
}

/// kornia's chroma subsampling along one axis of length `n` (even): a 3-tap Gaussian (σ 0.5,
/// reflect border), then a 2× bilinear downscale (the mean of each pixel pair). [n/2, n].
fn chroma_down(n: usize) -> Vec<f32> {
    let g = [(-2.0f64).exp(), 1.0, (-2.0f64).exp()];
    let total: f64 = g.iter().sum();
    let reflect = |i: i64| -> usize {
        let n = n as i64;
        (if i < 0 {
            -i
        } else if i >= n {
            2 * n - 2 - i
        } else {
            i
        }) as usize
    };
    let mut blur = vec![0f64; n * n];
    for i in 0..n {
        for (k, w) in g.iter().enumerate() {
            blur[i * n + reflect(i as i64 + k as i64 - 1)] += w / total;
        }
    }
    let mut out = vec![0f32; n / 2 * n];
    for j in 0..n / 2 {
        for c in 0..n {
            out[j * n + c] = (0.5 * (blur[2 * j * n + c] + blur[(2 * j + 1) * n + c])) as f32;
        }
    }
    out
}

/// 2× bilinear upsampling (align_corners false, edges clamped) along an axis of length `n`:
/// [2n, n].
fn chroma_up(n: usize) -> Vec<f32> {
    let mut m = vec![0f32; 2 * n * n];
    for i in 0..2 * n {
        let src = ((i as f64 + 0.5) / 2.0 - 0.5).max(0.0);
        let i0 = src.floor() as usize;
        let i1 = (i0 + 1).min(n - 1);
        let l = (src - i0 as f64) as f32;
        m[i * n + i0] += 1.0 - l;
        m[i * n + i1] += l;
    }
    m
}

/// Replicate-pads [B, C, H, W] on the bottom and right to `[h, w]`.
fn pad_replicate<B: Backend>(x: Tensor<B, 4>, h: usize, w: usize) -> Tensor<B, 4> {
    let [_, _, h0, w0] = x.dims();
    if (h0, w0) == (h, w) {
        return x;
    }
    let device = x.device();
    let rows: Vec<i64> = (0..h).map(|i| i.min(h0 - 1) as i64).collect();
    let cols: Vec<i64> = (0..w).map(|i| i.min(w0 - 1) as i64).collect();
    let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [h]), &device);
    let cols = Tensor::<B, 1, Int>::from_data(TensorData::new(cols, [w]), &device);
    x.select(2, rows).select(3, cols)
}

/// One plane [B, 1, H, W] (×255 scale) through DCT, quantisation with `table`, dequantisation and
/// inverse DCT.
fn code_plane<B: Backend>(x: Tensor<B, 4>, table: &[f32; 64]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let device = x.device();
    let (mh, mw) = (dct_blocks(h), dct_blocks(w));
    // DCT coefficients with kornia's normalisation: 0.25 · α_u α_v, α_0 = 1/√2.
    let alpha = |u: usize| {
        if u == 0 {
            std::f32::consts::FRAC_1_SQRT_2
        } else {
            1.0
        }
    };
    let norm: Vec<f32> = (0..h * w)
        .map(|i| 0.25 * alpha((i / w) % 8) * alpha(i % w % 8))
        .collect();
    let tiled: Vec<f32> = (0..h * w)
        .map(|i| table[((i / w) % 8) * 8 + i % w % 8])
        .collect();
    let norm =
        Tensor::<B, 2>::from_data(TensorData::new(norm, [h, w]), &device).reshape([1, 1, h, w]);
    let qt =
        Tensor::<B, 2>::from_data(TensorData::new(tiled, [h, w]), &device).reshape([1, 1, h, w]);
    let coef = separable(x - 128.0, mh.clone(), mw.clone(), [h, w]) * norm.clone();
    let v = coef / qt.clone();
    let r = v.clone().detach().round();
    let d = v - r.clone();
    let quantized = r + d.clone() * d.clone() * d;
    let coef = quantized * qt;
    // Inverse: 0.25 · Mᵀ (α α ∘ C) M + 128; `norm` already holds 0.25 · α α.
    separable(
        coef * norm,
        transpose(&mh, h, h),
        transpose(&mw, w, w),
        [h, w],
    ) + 128.0
}

/// kornia's `jpeg_codec_differentiable(images, quality)` for RGB images [B, 3, H, W] in [0, 1].
pub fn jpeg_codec<B: Backend>(images: Tensor<B, 4>, quality: f32) -> Tensor<B, 4> {
    let [_, _, h0, w0] = images.dims();
    let (h, w) = (h0.div_ceil(16) * 16, w0.div_ceil(16) * 16);
    let x = pad_replicate(images, h, w);
    let r = x.clone().narrow(1, 0, 1);
    let g = x.clone().narrow(1, 1, 1);
    let bl = x.narrow(1, 2, 1);
    let y = r.clone() * 0.299 + g * 0.587 + bl.clone() * 0.114;
    let cb = ((bl - y.clone()) * 0.564 + 0.5) * 255.0;
    let cr = ((r - y.clone()) * 0.713 + 0.5) * 255.0;
    let y = y * 255.0;
    let (hc, wc) = (h / 2, w / 2);
    let sub = |c: Tensor<B, 4>| separable(c, chroma_down(h), chroma_down(w), [hc, wc]);
    let (cb, cr) = (sub(cb), sub(cr));
    let qy = scaled_table(&QT_Y, quality);
    let qc = scaled_table(&QT_C, quality);
    let y = code_plane(y, &qy) / 255.0;
    let up = |c: Tensor<B, 4>| separable(c, chroma_up(hc), chroma_up(wc), [h, w]);
    let cb = up(code_plane(cb, &qc)) / 255.0 - 0.5;
    let cr = up(code_plane(cr, &qc)) / 255.0 - 0.5;
    let r = y.clone() + cr.clone() * 1.4025245442;
    let g = y.clone() - cr * 0.7144034731 - cb.clone() * 0.3443401356;
    let bl = y + cb * 1.7730496454;
    let rgb = Tensor::cat(vec![r, g, bl], 1).clamp(0.0, 1.0);
    rgb.narrow(2, 0, h0).narrow(3, 0, w0)
}

/// The compressibility reward: `−mean_{c,h,w}((x − JPEG_q(x))²)` with `x = clamp(img / 2 + 0.5)`.
#[derive(Debug, Clone)]
pub struct Compressibility {
    /// JPEG quality of the differentiable codec (default 80).
    pub quality: f32,
}

impl Default for Compressibility {
    fn default() -> Self {
        Self { quality: 80.0 }
    }
}

impl Compressibility {
    /// A reward at `quality` (0–100).
    pub fn new(quality: f32) -> Result<Self> {
        if !(0.0..=100.0).contains(&quality) {
            bail!("JPEG quality must be in [0, 100], got {quality}");
        }
        Ok(Self { quality })
    }
}

impl<B: Backend> Reward<B> for Compressibility {
    fn name(&self) -> &str {
        "compress"
    }

    fn score(&self, images: Tensor<B, 4>, _prompts: &[String]) -> Result<Tensor<B, 1>> {
        let [b, c, h, w] = images.dims();
        if c != 3 {
            bail!(
                "compress: expected RGB images [B, 3, H, W], got {:?}",
                images.dims()
            );
        }
        let x = (images / 2.0 + 0.5).clamp(0.0, 1.0);
        let diff = x.clone() - jpeg_codec(x, self.quality);
        Ok((diff.clone() * diff)
            .reshape([b, c * h * w])
            .mean_dim(1)
            .reshape([b])
            .neg())
    }
}

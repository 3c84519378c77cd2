//! CPU kernels for the burn-flex backend where its ops are far slower than PyTorch's at Stable
//! Diffusion's shapes: SiLU and GroupNorm (+ SiLU) here, attention in `crate::attention`; with
//! the vectorised `exp` and the tensor conversions they share.
//!
//! Each is used only when the backend is `burn_flex::Flex` and the tensor is f32 (autodiff
//! backends and CUDA keep Burn's ops, so gradients are unchanged; attention under autodiff is
//! `crate::attention_grad`'s op, whose forward on flex is this kernel). Work is split over rayon's
//! pool in pieces whose arithmetic does not depend on the thread count or the CPU's vector width:
//! results are the same bits on any number of threads. At [1, 128, 512, 512] (the VAE decoder's
//! last level) on 2 cores, burn-flex takes 324 ms for a SiLU and 174 ms for a GroupNorm where
//! PyTorch takes 61 and 54 ms (`examples/profile_unet_ops.rs`, `tools/bench/profile_ops.py`).

use std::any::{Any, TypeId};

use burn::prelude::*;
use burn::tensor::{Bytes, DType, TensorPrimitive};
use burn_flex::{Flex, FlexTensor, Layout};
use rayon::prelude::*;

/// Elements per rayon task of the elementwise kernels.
const CHUNK: usize = 1 << 15;

/// Lanes of the vectorised loops (their sums are always taken in this grouping, whatever the
/// instruction set, so results do not depend on the CPU's vector width).
pub(crate) const LANES: usize = 16;

/// `t` as a `U` when `T` is `U` (checked by type id), else `None`.
pub(crate) fn cast<T: 'static, U: 'static>(t: T) -> Option<U> {
    (Box::new(t) as Box<dyn Any>)
        .downcast::<U>()
        .ok()
        .map(|u| *u)
}

/// The flex tensor behind `t` when `B` is burn-flex and `t` is f32 (a cheap shared handle).
pub(crate) fn tensor<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<FlexTensor> {
    if TypeId::of::<B>() != TypeId::of::<Flex>() || t.dtype() != DType::F32 {
        return None;
    }
    cast(t.clone().into_primitive().tensor())
}

/// A `B` tensor of `values` laid out as `layout` (`B` must be burn-flex).
pub(crate) fn from_f32<B: Backend, const D: usize>(
    values: Vec<f32>,
    layout: Layout,
) -> Option<Tensor<B, D>> {
    let t = FlexTensor::new(Bytes::from_elems(values), layout, DType::F32);
    Some(Tensor::from_primitive(TensorPrimitive::Float(cast(t)?)))
}

/// Compiles `fn $name` three times (AVX-512, AVX2, baseline) and runs the best the CPU has. The
/// arithmetic is the same in all three (Rust never fuses a·b + c on its own), so the results are
/// too.
macro_rules! vectorised {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub(crate) fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F.
                    return unsafe { avx512($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// The largest element of `row` (NaNs ignored, as `f32::max`).
pub(crate) fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    acc.iter().fold(tail, |a, &x| a.max(x))
}

vectorised! {
    /// Replaces each x of `row` by exp(x − `shift`) and returns their sum.
    fn exp_shifted(row: &mut [f32], shift: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (a, x) in acc.iter_mut().zip(c.iter_mut()) {
                *x = exp(*x - shift);
                *a += *x;
            }
        }
        let mut tail = 0f32;
        for x in chunks.into_remainder() {
            *x = exp(*x - shift);
            tail += *x;
        }
        acc.iter().sum::<f32>() + tail
    }
}

vectorised! {
    /// `out[i] = silu(x[i] · scale + shift)` (`silu` false: without the SiLU).
    fn affine(x: &[f32], out: &mut [f32], scale: f32, shift: f32, silu: bool) {
        if silu {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = silu_f32(v * scale + shift);
            }
        } else {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v * scale + shift;
            }
        }
    }
}

vectorised! {
    /// Σ (x − `center`) and Σ (x − `center`)², accumulated in f64.
    fn moments(x: &[f32], center: f64) -> (f64, f64) {
        let mut s = [0f64; LANES];
        let mut s2 = [0f64; LANES];
        let mut chunks = x.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                let d = c[i] as f64 - center;
                s[i] += d;
                s2[i] += d * d;
            }
        }
        let (mut t, mut t2) = (0f64, 0f64);
        for &v in chunks.remainder() {
            let d = v as f64 - center;
            t += d;
            t2 += d * d;
        }
        (s.iter().sum::<f64>() + t, s2.iter().sum::<f64>() + t2)
    }
}

/// x·σ(x) = x / (1 + e⁻ˣ).
#[inline(always)]
fn silu_f32(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// eˣ in f32 without branches (so loops over it vectorise), within 2 ulp of the exact value for
/// x ≥ −87.33 (tested); 0 below, NaN for NaN, e⁸⁸ for x ≥ 88 (softmax feeds x ≤ 0, SiLU −x
/// where e⁸⁸ already makes the result 0 in f32). Cody–Waite reduction x = n·ln 2 + r,
/// |r| ≤ ln 2 / 2, Cephes' degree-7 polynomial for eʳ, 2ⁿ built in the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
    const SHIFTER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MIN: f32 = -87.336_54;
    let xc = x.clamp(MIN, 88.0);
    let t = xc * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = p * r * r + r + 1.0;
    let two_n =
        f32::from_bits(((t.to_bits() as i32 - SHIFTER.to_bits() as i32 + 127) << 23) as u32);
    let y = er * two_n;
    if x.is_nan() {
        x
    } else if x < MIN {
        0.0
    } else {
        y
    }
}

/// SiLU of `x`, when `B` is burn-flex and `x` f32.
pub(crate) fn silu<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
    let x = tensor(x)?.to_contiguous();
    let shape = x.layout().shape().clone();
    let input = x.storage::<f32>();
    let mut out = vec![0f32; input.len()];
    out.par_chunks_mut(CHUNK)
        .zip(input.par_chunks(CHUNK))
        .for_each(|(o, i)| affine(i, o, 1.0, 0.0, true));
    from_f32(out, Layout::contiguous(shape))
}

/// GroupNorm of an [N, C, H, W] `x` with `groups` groups, `eps`, optional per-channel `gamma`
/// and `beta` ([C]), followed by SiLU when `silu`; when `B` is burn-flex and all are f32.
/// Statistics in f64 over each group (PyTorch's biased variance) in one pass, then one pass
/// writing x·scale + shift per channel.
pub(crate) fn group_norm<B: Backend>(
    x: &Tensor<B, 4>,
    groups: usize,
    eps: f64,
    affine_params: Option<&[Tensor<B, 1>; 2]>,
    silu: bool,
) -> Option<Tensor<B, 4>> {
    let [n, c, h, w] = x.dims();
    if groups == 0 || c % groups != 0 || n * c * h * w == 0 {
        return None;
    }
    let x = tensor(x)?.to_contiguous();
    let params = match affine_params {
        Some([g, b]) => Some([tensor(g)?.to_contiguous(), tensor(b)?.to_contiguous()]),
        None => None,
    };
    let input = x.storage::<f32>();
    let group_len = c / groups * h * w;
    let stats: Vec<(f64, f64)> = input
        .par_chunks(group_len)
        .map(|g| {
            // Moments about the group's first value: one pass, and no cancellation worth the
            // name in f64 (the shift is a sample, so |mean − shift| is of the order of the spread).
            let center = g[0] as f64;
            let (s, s2) = moments(g, center);
            let len = group_len as f64;
            let var = (s2 / len - (s / len).powi(2)).max(0.0);
            (center + s / len, 1.0 / (var + eps).sqrt())
        })
        .collect();
    let (gamma, beta) = match &params {
        Some([g, b]) => (Some(g.storage::<f32>()), Some(b.storage::<f32>())),
        None => (None, None),
    };
    let mut out = vec![0f32; input.len()];
    out.par_chunks_mut(h * w)
        .zip(input.par_chunks(h * w))
        .enumerate()
        .for_each(|(nc, (o, i))| {
            let ch = nc % c;
            let (mean, rstd) = stats[(nc / c) * groups + ch / (c / groups)];
            let scale = rstd * gamma.map_or(1.0, |g| g[ch] as f64);
            let shift = beta.map_or(0.0, |b| b[ch] as f64) - mean * scale;
            affine(i, o, scale as f32, shift as f32, silu);
        });
    from_f32(out, Layout::contiguous([n, c, h, w].into()))
}

/// The largest |a − b| (test helper).
#[cfg(test)]
pub(crate) fn max_abs_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    (a - b).abs().max().into_scalar().elem()
}

/// `f` run on a rayon pool of `threads` threads (test helper for thread-count independence).
#[cfg(test)]
pub(crate) fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("rayon pool")
        .install(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use burn::tensor::Distribution;

    #[test]
    fn exp_is_within_two_ulp_and_handles_the_edges() {
        // 2 ulp of f32 is 2·2⁻²³ ≈ 2.4e-7 relative: the reduction and the polynomial each add
        // about half an ulp, the final product one rounding.
        let mut worst = 0f64;
        for i in 0..=2_000_000 {
            let x = -87.3 + 87.3 * 1.02 * (i as f64 / 2_000_000.0);
            let x = x.min(1.5) as f32;
            let exact = (x as f64).exp();
            worst = worst.max(((exp(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn vectorised_loops_equal_their_scalar_definitions() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 6.0)
            .collect();
        let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        assert_eq!(row_max(&row), max);
        let mut shifted = row.clone();
        let sum = exp_shifted(&mut shifted, max);
        let mut scalar = row.clone();
        scalar.iter_mut().for_each(|x| *x = exp(*x - max));
        // Same elementwise arithmetic whatever the vector width: bit-identical values.
        assert_eq!(shifted, scalar);
        let exact: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
        assert!(
            ((sum as f64) - exact).abs() / exact < 1e-6,
            "{sum} vs {exact}"
        );
        let mut out = vec![0f32; row.len()];
        affine(&row, &mut out, 0.5, 0.25, true);
        let scalar: Vec<f32> = row.iter().map(|&x| silu_f32(x * 0.5 + 0.25)).collect();
        assert_eq!(out, scalar);
        let (s, s2) = moments(&row, 1.0);
        let exact: (f64, f64) = row.iter().fold((0.0, 0.0), |(a, b), &x| {
            (a + (x as f64 - 1.0), b + (x as f64 - 1.0).powi(2))
        });
        assert!((s - exact.0).abs() < 1e-12 && (s2 - exact.1).abs() < 1e-12);
    }

    #[test]
    fn silu_matches_burns() {
        let d = Default::default();
        Cpu::seed(&d, 11);
        // Odd size (a partial last chunk), values far into both tails.
        let x = Tensor::<Cpu, 3>::random([3, 70, 333], Distribution::Normal(0.0, 30.0), &d);
        let ours = silu(&x).expect("flex f32");
        let burns = burn::tensor::activation::silu(x.clone());
        // |silu(x)| ≤ |x| ≲ 150: relative 2-ulp exp plus the division give ≲ 4e-7·|x|.
        let diff = max_abs_diff(ours.clone(), burns.clone());
        assert!(diff < 1e-4, "max |diff| {diff:e}");
        let rel: f32 = ((ours - burns.clone()).abs() / (burns.abs() + 1e-3))
            .max()
            .into_scalar()
            .elem();
        assert!(rel < 1e-5, "max relative diff {rel:e}");
        // Other backends are left to Burn.
        assert!(silu(&Tensor::<CpuAutodiff, 3>::from_inner(x)).is_none());
    }

    #[test]
    fn group_norm_matches_burns() {
        let d = Default::default();
        Cpu::seed(&d, 5);
        for (n, groups, c, affine, act) in [
            (2, 4, 12, true, false),
            (1, 3, 12, true, true),
            (2, 2, 6, false, false),
        ] {
            let mut gn = crate::nn::group_norm::<Cpu>(groups, c, 1e-6, &d);
            if affine {
                gn.gamma = Some(burn::module::Param::from_tensor(Tensor::random(
                    [c],
                    Distribution::Normal(1.0, 0.5),
                    &d,
                )));
                gn.beta = Some(burn::module::Param::from_tensor(Tensor::random(
                    [c],
                    Distribution::Normal(0.0, 0.5),
                    &d,
                )));
            } else {
                gn.gamma = None;
                gn.beta = None;
                gn.affine = false;
            }
            // A large mean relative to the spread: the centred variance must not cancel.
            let x = Tensor::<Cpu, 4>::random([n, c, 9, 13], Distribution::Normal(50.0, 2.0), &d);
            let params = gn
                .gamma
                .as_ref()
                .map(|g| [g.val(), gn.beta.as_ref().unwrap().val()]);
            let ours = group_norm(&x, groups, gn.epsilon, params.as_ref(), act).expect("flex f32");
            let mut burns = gn.forward(x);
            if act {
                burns = burn::tensor::activation::silu(burns);
            }
            // Normalised values are O(1) (× gamma ≲ 3): burn's f32 statistics over 351–1053
            // elements of mean 50 are good to ~1e-5 relative, ours (f64) to f32 rounding.
            let diff = max_abs_diff(ours, burns);
            assert!(diff < 5e-5, "n {n} groups {groups}: max |diff| {diff:e}");
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let d = Default::default();
        Cpu::seed(&d, 2);
        let x = Tensor::<Cpu, 4>::random([2, 8, 100, 90], Distribution::Normal(0.0, 3.0), &d);
        let run = |threads: usize| {
            on_threads(threads, || {
                let a = silu(&x).unwrap().into_data();
                let b = group_norm(&x, 4, 1e-5, None, true).unwrap().into_data();
                (a, b)
            })
        };
        assert_eq!(run(1), run(3));
    }
}

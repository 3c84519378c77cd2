//! Scaled dot-product attention: Burn's `attention` op, except on the flex CPU backend in f32,
//! where a multi-threaded flash-attention kernel replaces burn-flex's single-threaded one.
//!
//! burn-flex 0.21 walks the (batch, head) pairs one after the other, with `gemm` told not to use
//! threads and a scalar `exp` per score: at SD 1.5's 64×64 self-attention (batch 2, 8 heads,
//! 4096 tokens of 40) it takes 1.8 s on 2 cores where PyTorch's SDPA takes 0.32 s. The kernel
//! here splits the work into blocks of query rows run on rayon's pool, computes the scores of a
//! block against tiles of keys with `gemm` (no full score matrix, as flash attention), keeps the
//! running maximum and sum per row (online softmax), and evaluates `exp` with a polynomial that
//! vectorises. Each output element is computed by one task in a fixed order, so results do not
//! depend on the number of threads. Under ril's autodiff backends the whole attention is one
//! autodiff op (`crate::attention_grad`): this forward on the inner backend and a blocked
//! backward that never holds the full score matrix.

use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn_flex::{FlexTensor, Layout};
use rayon::prelude::*;

use crate::flex::{self, exp_shifted, row_max};

/// Query rows per task. With [`BLOCK_KV`] the score tile is 256 KiB, within a core's L2; at SD
/// 1.5's 64×64 self-attention on 2 cores 128×512 took 0.34–0.35 s, 64×256 0.37–0.43 s, 32×256
/// 0.46 s, 256×512 0.32 s (fewer tasks than threads on smaller inputs).
const BLOCK_Q: usize = 128;
/// Key/value rows per tile.
const BLOCK_KV: usize = 512;

/// softmax(q kᵀ / √d) v for `q` [B, H, N, D], `k` [B, H, M, D], `v` [B, H, M, Dv] → [B, H, N, Dv],
/// as `burn::tensor::module::attention` with no mask, bias or causal masking.
pub fn scaled_dot_product<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    if let Some(out) = flex_attention(&q, &k, &v) {
        return out;
    }
    if shapes_agree(&q, &k, &v)
        && let Some(out) = crate::attention_grad::dispatch(&q, &k, &v)
    {
        return out;
    }
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

/// Whether `q` [B, H, N, D], `k` [B, H, M, D] and `v` [B, H, M, Dv] fit together, with no
/// empty dimension.
pub(crate) fn shapes_agree<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> bool {
    let [b, h, n, d] = q.dims();
    let [kb, kh, m, kd] = k.dims();
    let [vb, vh, vm, dv] = v.dims();
    [kb, kh, kd] == [b, h, d] && [vb, vh, vm] == [b, h, m] && ![b, h, n, m, d, dv].contains(&0)
}

/// The kernel's result when `B` is burn-flex and all three are f32 with matching shapes; `None`
/// otherwise (the caller then uses Burn's op).
fn flex_attention<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    if !shapes_agree(q, k, v) {
        return None;
    }
    let [b, h, n, d] = q.dims();
    let [_, _, m, dv] = v.dims();
    let (q, k, v) = (
        Strided::new(flex::tensor(q)?),
        Strided::new(flex::tensor(k)?),
        Strided::new(flex::tensor(v)?),
    );
    let (q, k, v) = (q.view(), k.view(), v.view());
    if !(q.holds([b, h, n, d]) && k.holds([b, h, m, d]) && v.holds([b, h, m, dv])) {
        return None;
    }
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let out = flash(&q, &k, &v, [b, h, n, m, d, dv], scale);
    // Stored as [B, N, H, Dv] (what the caller's swap_dims(1, 2) + reshape wants, for free),
    // presented as [B, H, N, Dv].
    let layout = Layout::new(
        [b, h, n, dv].into(),
        vec![(n * h * dv) as isize, dv as isize, (h * dv) as isize, 1],
        0,
    );
    flex::from_f32(out, layout)
}

/// A 4-D f32 flex tensor whose last dimension is contiguous (copied to be so when it is not).
struct Strided(FlexTensor);

impl Strided {
    fn new(t: FlexTensor) -> Self {
        let layout = t.layout();
        let ok = layout.strides()[3] == 1 && layout.strides().iter().all(|&s| s >= 0);
        Self(if ok { t } else { t.to_contiguous() })
    }

    fn view(&self) -> View<'_> {
        let layout = self.0.layout();
        let s = layout.strides();
        View {
            data: self.0.storage::<f32>(),
            offset: layout.start_offset(),
            stride: [s[0] as usize, s[1] as usize, s[2] as usize],
        }
    }
}

/// Element (b, h, i, j) of a 4-D tensor is `data[offset + b·stride[0] + h·stride[1] +
/// i·stride[2] + j]`.
struct View<'a> {
    data: &'a [f32],
    offset: usize,
    stride: [usize; 3],
}

impl View<'_> {
    /// Whether the buffer holds every element of a `dims`-shaped tensor (the raw `gemm` calls
    /// rely on it).
    fn holds(&self, [b, h, rows, width]: [usize; 4]) -> bool {
        let last = self.offset
            + (b - 1) * self.stride[0]
            + (h - 1) * self.stride[1]
            + (rows - 1) * self.stride[2]
            + width;
        last <= self.data.len()
    }

    /// Row `i` of head (`b`, `h`) onwards.
    fn rows(&self, b: usize, h: usize, i: usize) -> &[f32] {
        &self.data[self.offset + b * self.stride[0] + h * self.stride[1] + i * self.stride[2]..]
    }
}

/// The attention of `q`, `k`, `v` (dims `[b, h, n, m, d, dv]`, which their buffers hold) into a
/// new [B, N, H, Dv] buffer.
fn flash(q: &View, k: &View, v: &View, dims: [usize; 6], scale: f32) -> Vec<f32> {
    let [b, h, n, m, d, dv] = dims;
    let mut out = vec![0f32; b * n * h * dv];
    out.par_chunks_mut(n * h * dv)
        .enumerate()
        .for_each(|(bi, out_b)| {
            out_b
                .par_chunks_mut(BLOCK_Q * h * dv)
                .enumerate()
                .for_each(|(blk, out_blk)| {
                    let rows = out_blk.len() / (h * dv);
                    let mut scores = vec![0f32; rows * BLOCK_KV];
                    for hi in 0..h {
                        let q_rows = q.rows(bi, hi, blk * BLOCK_Q);
                        let task = Task {
                            q: q_rows,
                            q_rs: q.stride[2],
                            k: k.rows(bi, hi, 0),
                            k_rs: k.stride[2],
                            v: v.rows(bi, hi, 0),
                            v_rs: v.stride[2],
                            rows,
                            m,
                            d,
                            dv,
                            scale,
                        };
                        // This head's columns of the block's output rows (row stride h·dv).
                        task.run(&mut out_blk[hi * dv..], h * dv, &mut scores);
                    }
                });
        });
    out
}

/// One head's attention for a block of query rows.
struct Task<'a> {
    q: &'a [f32],
    q_rs: usize,
    k: &'a [f32],
    k_rs: usize,
    v: &'a [f32],
    v_rs: usize,
    rows: usize,
    m: usize,
    d: usize,
    dv: usize,
    scale: f32,
}

impl Task<'_> {
    /// Writes row r's `dv` outputs at `out[r·out_rs..]`; `scores` holds `rows·BLOCK_KV`.
    fn run(&self, out: &mut [f32], out_rs: usize, scores: &mut [f32]) {
        let (rows, dv) = (self.rows, self.dv);
        debug_assert!(out.len() >= (rows - 1) * out_rs + dv);
        let mut max = vec![f32::NEG_INFINITY; rows];
        let mut sum = vec![0f32; rows];
        for kv0 in (0..self.m).step_by(BLOCK_KV) {
            let bk = BLOCK_KV.min(self.m - kv0);
            let s = &mut scores[..rows * bk];
            // SAFETY: q holds `rows` rows of `d` at stride q_rs, k and v hold rows kv0..kv0+bk
            // at their strides (checked by `View::holds`), `s` is rows·bk.
            unsafe {
                gemm::gemm(
                    rows,
                    bk,
                    self.d,
                    s.as_mut_ptr(),
                    1,
                    bk as isize,
                    false,
                    self.q.as_ptr(),
                    1,
                    self.q_rs as isize,
                    self.k.as_ptr().add(kv0 * self.k_rs),
                    self.k_rs as isize,
                    1,
                    0.0,
                    self.scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for r in 0..rows {
                let row = &mut s[r * bk..(r + 1) * bk];
                let new_max = max[r].max(row_max(row));
                if new_max == f32::NEG_INFINITY {
                    row.fill(0.0);
                    continue;
                }
                let tile_sum = exp_shifted(row, new_max);
                if kv0 > 0 {
                    let correction = (max[r] - new_max).exp();
                    out[r * out_rs..r * out_rs + dv]
                        .iter_mut()
                        .for_each(|o| *o *= correction);
                    sum[r] *= correction;
                }
                sum[r] += tile_sum;
                max[r] = new_max;
            }
            // SAFETY: as above; `out` holds `rows` rows of dv at stride out_rs (debug-asserted,
            // guaranteed by the chunking in `flash`).
            unsafe {
                gemm::gemm(
                    rows,
                    dv,
                    bk,
                    out.as_mut_ptr(),
                    1,
                    out_rs as isize,
                    kv0 > 0,
                    s.as_ptr(),
                    1,
                    bk as isize,
                    self.v.as_ptr().add(kv0 * self.v_rs),
                    1,
                    self.v_rs as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        for r in 0..rows {
            let inv = 1.0 / sum[r];
            out[r * out_rs..r * out_rs + dv]
                .iter_mut()
                .for_each(|o| *o *= inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use crate::flex::{max_abs_diff, on_threads};
    use burn::tensor::Distribution;

    /// q [B, H, N, D], k [B, H, M, D], v [B, H, M, Dv] from a seeded normal; `sharp` scales q so
    /// the softmax is peaked (the online max must rescale earlier tiles correctly).
    fn inputs<B: Backend>([b, h, n, m, d, dv]: [usize; 6], sharp: f64) -> [Tensor<B, 4>; 3] {
        let device = Default::default();
        B::seed(&device, 7);
        let dist = Distribution::Normal(0.0, 1.0);
        [
            Tensor::random([b, h, n, d], dist, &device) * sharp,
            Tensor::random([b, h, m, d], dist, &device),
            Tensor::random([b, h, m, dv], dist, &device),
        ]
    }

    #[test]
    fn kernel_matches_burns_attention() {
        // Shapes: query rows not a multiple of BLOCK_Q, keys spanning several BLOCK_KV tiles with
        // a short last one, cross-attention with 77 keys, one query, the VAE's single wide head.
        for (dims, sharp) in [
            ([2, 3, 130, 1100, 40, 40], 1.0),
            ([2, 3, 130, 1100, 40, 40], 8.0),
            ([1, 2, 70, 77, 16, 24], 1.0),
            ([1, 1, 1, 300, 8, 8], 1.0),
            ([1, 1, 100, 100, 128, 128], 0.5),
        ] {
            let [q, k, v] = inputs::<Cpu>(dims, sharp);
            let fast = scaled_dot_product(q.clone(), k.clone(), v.clone());
            assert_eq!(fast.dims(), [dims[0], dims[1], dims[2], dims[5]]);
            let reference = attention(q, k, v, None, None, AttentionModuleOptions::default());
            // Outputs are convex combinations of v (|v| ≲ 4): f32 sums of up to 1100 terms in a
            // different order, and an exp within 2 ulp, differ by ~1e-6; 2e-5 leaves margin
            // while any indexing or rescaling bug gives errors of order 0.1.
            let diff = max_abs_diff(fast.clone(), reference.clone());
            assert!(diff < 2e-5, "{dims:?} sharp {sharp}: max |diff| {diff:e}");
            // The strided result behaves as any tensor (swap + reshape as Attention does).
            let [b, h, n, dv] = fast.dims();
            let flat = fast.swap_dims(1, 2).reshape([b, n, h * dv]);
            let flat_ref = reference.swap_dims(1, 2).reshape([b, n, h * dv]);
            assert!(max_abs_diff(flat, flat_ref) < 2e-5);
        }
    }

    #[test]
    fn strided_inputs_are_read_in_place_and_correctly() {
        // As Attention::split_heads hands them over: [B, N, H, D] memory viewed as [B, H, N, D].
        let device = Default::default();
        Cpu::seed(&device, 3);
        let dist = Distribution::Normal(0.0, 1.0);
        let qkv: Vec<Tensor<Cpu, 4>> = (0..3)
            .map(|_| Tensor::random([2, 90, 4, 8], dist, &device).swap_dims(1, 2))
            .collect();
        let fast = scaled_dot_product(qkv[0].clone(), qkv[1].clone(), qkv[2].clone());
        let [q, k, v] = [0, 1, 2].map(|i| qkv[i].clone());
        let reference = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let diff = max_abs_diff(fast, reference);
        assert!(diff < 2e-5, "max |diff| {diff:e}");
    }

    #[test]
    fn result_does_not_depend_on_the_thread_count() {
        let [q, k, v] = inputs::<Cpu>([2, 2, 200, 300, 40, 40], 2.0);
        let run = |threads: usize| {
            on_threads(threads, || {
                scaled_dot_product(q.clone(), k.clone(), v.clone()).into_data()
            })
        };
        assert_eq!(run(1), run(3));
    }

    /// Under autodiff the forward is this kernel (inside `attention_grad`'s op) and gradients
    /// reach the inputs; tests/attention_grad.rs compares those gradients with Burn's.
    #[test]
    fn autodiff_backend_agrees_with_the_kernel() {
        let [q, k, v] = inputs::<Cpu>([1, 2, 50, 300, 8, 8], 1.0);
        let fast = scaled_dot_product(q.clone(), k.clone(), v.clone());
        let [qa, ka, va] =
            [q, k, v].map(|t| Tensor::<CpuAutodiff, 4>::from_inner(t).require_grad());
        let out = scaled_dot_product(qa.clone(), ka, va);
        let grads = out.clone().sum().backward();
        assert!(qa.grad(&grads).is_some());
        // The same kernel on the same inputs: the same bits (Burn's op would differ by ~1e-7).
        assert_eq!(fast.into_data(), out.inner().into_data());
    }
}

//! Attention under autodiff as one op: the inner backend's fused forward, and a backward that
//! recomputes the scores block by block of query rows instead of keeping them.
//!
//! Burn 0.21's autodiff backend computes `attention` unfused (burn-autodiff's `ModuleOps`
//! calls `attention_fallback`), so every attention layer keeps its [B, H, N, M] scores and
//! probabilities until the backward pass: at SD 1.5's 64×64 self-attention (batch 2, 8 heads,
//! 4096 tokens) that is 1 GiB per matrix in f32, and one 512×512 training step needed more than
//! 21.6 GB. Here the forward runs [`crate::attention::scaled_dot_product`] on the inner backend
//! (the flash kernel on flex, torch's SDPA on burn-tch, burn-cuda's op on CUDA) and keeps only
//! q, k, v and the output. The backward walks blocks of query rows; each block holds complete
//! score rows, so its softmax needs no saved statistics:
//!
//! ```text
//! P = softmax(Qb Kᵀ · s)        dV += Pᵀ dOb
//! dP = dOb Vᵀ                    D = rowsum(dOb ∘ Ob)     (= rowsum(P ∘ dP))
//! dS = P ∘ (dP − D)              dQb = dS K · s           dK += dSᵀ Qb · s
//! ```
//!
//! The extra memory is a few [B, H, rows, M] tiles of one block at a time (rows chosen so a
//! tile holds about [`TILE_ELEMS`] values), at the price of computing Q Kᵀ a second time.
//! Everything is written with Burn tensor ops on the inner backend, so it runs on every backend;
//! on LibTorch the backward is torch's own fused one instead (`torch_grads`).
//! Models stay generic over `B: Backend`: `dispatch` recognises at run time (by type id, as
//! `crate::flex` does for the flex kernels) the autodiff backends ril runs on.

use std::any::TypeId;

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorPrimitive};

use crate::flex::cast;

/// Values in one [B, H, rows, M] score tile of the backward (16 MiB in f32). Three or four
/// tiles are alive at once (P, dP, dS and a temporary), so the backward's extra memory stays
/// near 64 MiB at any sequence length. At SD 1.5's 64×64 self-attention (B·H = 16, M = 4096)
/// this is 64 query rows per block, 64 blocks per layer; smaller tiles would mean more, smaller
/// kernel launches on GPUs, larger ones more memory for no fewer FLOPs.
pub const TILE_ELEMS: usize = 1 << 22;

/// Query rows per backward block for `q` [B, H, N, D] against `m` keys: as many as keep one
/// score tile within [`TILE_ELEMS`], at least 1 and at most N.
pub fn block_rows(dims: [usize; 4], m: usize) -> usize {
    let [b, h, n, _] = dims;
    (TILE_ELEMS / (b * h * m).max(1)).clamp(1, n.max(1))
}

/// The op's result when `B` is one of ril's autodiff backends (any of [`crate::backend`]'s
/// inner backends under `Autodiff` with `NoCheckpointing` or `BalancedCheckpointing`); `None`
/// otherwise (the caller then uses Burn's op).
pub(crate) fn dispatch<B: Backend>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    type Route<B> = fn(&Tensor<B, 4>, &Tensor<B, 4>, &Tensor<B, 4>) -> Option<Tensor<B, 4>>;
    let routes: &[Route<B>] = &[
        routed::<B, crate::backend::Cpu, NoCheckpointing>,
        routed::<B, crate::backend::Cpu, BalancedCheckpointing>,
        #[cfg(feature = "tch")]
        routed::<B, crate::backend::Tch, NoCheckpointing>,
        #[cfg(feature = "tch")]
        routed::<B, crate::backend::Tch, BalancedCheckpointing>,
        #[cfg(feature = "tch")]
        routed::<B, crate::backend::TchBf16, NoCheckpointing>,
        #[cfg(feature = "tch")]
        routed::<B, crate::backend::TchBf16, BalancedCheckpointing>,
        #[cfg(feature = "cuda")]
        routed::<B, crate::backend::Cuda, NoCheckpointing>,
        #[cfg(feature = "cuda")]
        routed::<B, crate::backend::Cuda, BalancedCheckpointing>,
        #[cfg(feature = "cuda")]
        routed::<B, crate::backend::CudaBf16, NoCheckpointing>,
        #[cfg(feature = "cuda")]
        routed::<B, crate::backend::CudaBf16, BalancedCheckpointing>,
    ];
    routes.iter().find_map(|route| route(q, k, v))
}

/// [`attention`] when `B` is `Autodiff<X, C>`, else `None`.
fn routed<B: Backend, X: Backend, C: CheckpointStrategy>(
    q: &Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
) -> Option<Tensor<B, 4>> {
    if TypeId::of::<B>() != TypeId::of::<Autodiff<X, C>>() {
        return None;
    }
    let [q, k, v] = [q, k, v].map(|t| cast::<_, Tensor<Autodiff<X, C>, 4>>(t.clone()));
    let (q, k, v) = (q?, k?, v?);
    let rows = block_rows(q.dims(), k.dims()[2]);
    cast(attention(q, k, v, rows))
}

/// softmax(q kᵀ / √d) v for `q` [B, H, N, D], `k` [B, H, M, D], `v` [B, H, M, Dv] as one
/// autodiff op whose backward handles `rows` query rows at a time (clamped to 1..=N). Shapes
/// that do not fit together (or have an empty dimension) go to Burn's `attention`, which says
/// what is wrong.
pub fn attention<X: Backend, C: CheckpointStrategy>(
    q: Tensor<Autodiff<X, C>, 4>,
    k: Tensor<Autodiff<X, C>, 4>,
    v: Tensor<Autodiff<X, C>, 4>,
    rows: usize,
) -> Tensor<Autodiff<X, C>, 4> {
    if !crate::attention::shapes_agree(&q, &k, &v) {
        let options = burn::tensor::ops::AttentionModuleOptions::default();
        return burn::tensor::module::attention(q, k, v, None, None, options);
    }
    let [q, k, v] = [q, k, v].map(|t| t.into_primitive().tensor());
    let forward = |q: FloatTensor<X>, k: FloatTensor<X>, v: FloatTensor<X>| {
        let [q, k, v] =
            [q, k, v].map(|t| Tensor::<X, 4>::from_primitive(TensorPrimitive::Float(t)));
        crate::attention::scaled_dot_product(q, k, v)
            .into_primitive()
            .tensor()
    };
    let op = AttentionBackward { rows };
    let out = match op
        .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            // Through the checkpointer, so a strategy that recomputes q, k or v may do so.
            let ids = [&q, &k, &v].map(|t| prep.checkpoint(t));
            let out = forward(q.primitive, k.primitive, v.primitive);
            prep.finish((ids, out.clone()), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(q.primitive, k.primitive, v.primitive)),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The backward step; its state is the checkpointed q, k, v and the forward's output.
#[derive(Debug)]
struct AttentionBackward {
    rows: usize,
}

impl<X: Backend> Backward<X, 3> for AttentionBackward {
    type State = ([NodeId; 3], FloatTensor<X>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let _span = tracing::trace_span!("attention_backward").entered();
        let ([q_id, k_id, v_id], out) = ops.state;
        let wrap = |t: FloatTensor<X>| Tensor::<X, 4>::from_primitive(TensorPrimitive::Float(t));
        let q = wrap(ckpt.retrieve_node_output(q_id));
        let k = wrap(ckpt.retrieve_node_output(k_id));
        let v = wrap(ckpt.retrieve_node_output(v_id));
        let d_out = wrap(grads.consume::<X>(&ops.node));
        let [pq, pk, pv] = ops.parents;
        let want = [pq.is_some(), pk.is_some(), pv.is_some()];
        let torch = torch_grads(&q, &k, &v, &d_out, want);
        let [dq, dk, dv] =
            torch.unwrap_or_else(|| blocked_grads(q, k, v, wrap(out), d_out, want, self.rows));
        for (parent, grad) in [(pq, dq), (pk, dk), (pv, dv)] {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<X>(node.id, grad.into_primitive().tensor());
            }
        }
    }
}

/// The gradients of q, k, v (each only where `want` says so) given the output `out` and its
/// gradient `d_out`, computed `rows` query rows at a time. The arithmetic is in f32 whatever the
/// tensors' dtype (softmax and the sums over blocks would lose too much in bf16); the results
/// come back in their tensor's dtype.
fn blocked_grads<X: Backend>(
    q: Tensor<X, 4>,
    k: Tensor<X, 4>,
    v: Tensor<X, 4>,
    out: Tensor<X, 4>,
    d_out: Tensor<X, 4>,
    want: [bool; 3],
    rows: usize,
) -> [Option<Tensor<X, 4>>; 3] {
    if want == [false; 3] {
        return [None, None, None];
    }
    let dtypes = [q.dtype(), k.dtype(), v.dtype()];
    let f32 = |t: Tensor<X, 4>| {
        if t.dtype() == DType::F32 {
            t
        } else {
            t.cast(DType::F32)
        }
    };
    let (q, k, v, out, d_out) = (f32(q), f32(k), f32(v), f32(out), f32(d_out));
    let [_, _, n, d] = q.dims();
    let rows = rows.clamp(1, n.max(1));
    let scale = 1.0 / (d as f64).sqrt();
    let [want_q, want_k, want_v] = want;
    let need_ds = want_q || want_k;
    // D = rowsum(dO ∘ O), [B, H, N, 1]: O(N·Dv) here instead of a product over each tile.
    let delta = need_ds.then(|| (d_out.clone() * out).sum_dim(3));
    let k_t = k.clone().swap_dims(2, 3);
    let v_t = v.swap_dims(2, 3);
    let (mut dq_blocks, mut dk, mut dv) = (Vec::new(), None, None);
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        // Scaled here, [B, H, rows, D], rather than the scores, [B, H, rows, M].
        let q_b = q.clone().narrow(2, start, len) * scale;
        let d_out_b = d_out.clone().narrow(2, start, len);
        let p = softmax(q_b.clone().matmul(k_t.clone()), 3);
        if want_v {
            let term = p.clone().swap_dims(2, 3).matmul(d_out_b.clone());
            dv = Some(accumulate(dv, term));
        }
        let Some(delta) = &delta else { continue };
        let d_p = d_out_b.matmul(v_t.clone());
        let d_s = p * (d_p - delta.clone().narrow(2, start, len));
        if want_k {
            // dSᵀ (Qb · s): the scale is already in q_b.
            let term = d_s.clone().swap_dims(2, 3).matmul(q_b);
            dk = Some(accumulate(dk, term));
        }
        if want_q {
            dq_blocks.push(d_s.matmul(k.clone()));
        }
    }
    let dq = (!dq_blocks.is_empty()).then(|| Tensor::cat(dq_blocks, 2) * scale);
    let back = |t: Option<Tensor<X, 4>>, dtype: DType| {
        t.map(|t| {
            if dtype == DType::F32 {
                t
            } else {
                t.cast(dtype)
            }
        })
    };
    [
        back(dq, dtypes[0]),
        back(dk, dtypes[1]),
        back(dv, dtypes[2]),
    ]
}

/// On LibTorch (`X`'s float tensors are burn-tch's): the gradients from torch's own
/// scaled-dot-product-attention backward (the flash or memory-efficient kernels on CUDA, the
/// fused kernel on the CPU device), through torch's autograd on this op alone: q, k, v as fresh
/// leaves, the forward once more, and the backward of Σ out ∘ d_out, whose gradient with respect
/// to out is d_out. Torch keeps its softmax statistics in f32 in bf16 too; the blocked backward
/// above would take hundreds of small kernels per layer at the paper's batch sizes (64 query
/// rows per block at batch 1, 8 at batch 8). `None` on other backends.
#[cfg(feature = "tch")]
fn torch_grads<X: Backend>(
    q: &Tensor<X, 4>,
    k: &Tensor<X, 4>,
    v: &Tensor<X, 4>,
    d_out: &Tensor<X, 4>,
    want: [bool; 3],
) -> Option<[Option<Tensor<X, 4>>; 3]> {
    use burn_tch::TchTensor;
    if TypeId::of::<FloatTensor<X>>() != TypeId::of::<TchTensor>() {
        return None;
    }
    let torch = |t: &Tensor<X, 4>| cast::<_, TchTensor>(t.clone().into_primitive().tensor());
    let (q, k, v, d_out) = (torch(q)?, torch(k)?, torch(v)?, torch(d_out)?);
    let inputs = [&q.tensor, &k.tensor, &v.tensor];
    let mut grads = crate::tch_ops::vjp(&inputs, &want, &d_out.tensor, |t| {
        tch::Tensor::scaled_dot_product_attention(
            &t[0],
            &t[1],
            &t[2],
            None::<tch::Tensor>,
            0.0,
            false,
            None,
            false,
        )
    })
    .into_iter();
    let mut next = |w: bool| -> Option<Option<Tensor<X, 4>>> {
        let g = grads.next()?;
        if !w {
            return Some(None);
        }
        let g: FloatTensor<X> = cast(TchTensor::new(g?))?;
        Some(Some(Tensor::from_primitive(TensorPrimitive::Float(g))))
    };
    Some([next(want[0])?, next(want[1])?, next(want[2])?])
}

/// Without LibTorch there is no torch backward to take.
#[cfg(not(feature = "tch"))]
fn torch_grads<X: Backend>(
    _: &Tensor<X, 4>,
    _: &Tensor<X, 4>,
    _: &Tensor<X, 4>,
    _: &Tensor<X, 4>,
    _: [bool; 3],
) -> Option<[Option<Tensor<X, 4>>; 3]> {
    None
}

/// `sum + term` (`term` when there is no sum yet).
fn accumulate<X: Backend>(sum: Option<Tensor<X, 4>>, term: Tensor<X, 4>) -> Tensor<X, 4> {
    match sum {
        Some(sum) => sum + term,
        None => term,
    }
}

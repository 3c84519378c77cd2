//! LibTorch's own kernels where Burn 0.21 decomposes an op on burn-tch: GroupNorm (+ SiLU) as
//! torch's `group_norm`, in inference and under autodiff, and the torch-autograd
//! vector-Jacobian product that this module's and `attention_grad`'s autodiff ops take their
//! backward from.
//!
//! Burn's GroupNorm is some nine elementwise passes (mean, centring, variance, ...), each a
//! kernel and, under autodiff, a saved tensor, with its statistics in the tensor's dtype (bf16
//! under the bf16 backend). torch's `group_norm` is one fused kernel accumulating in f32
//! (STYLE.md §6), the op diffusers runs. Under autodiff the op keeps only its inputs and
//! recomputes the forward inside its backward through torch's autograd.

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
use burn::tensor::TensorPrimitive;
use burn_tch::TchTensor;

use crate::backend::{Tch, TchBf16};
use crate::flex::cast;

/// The gradients of `forward` at `inputs` (those `want` names) for the output gradient `d_out`,
/// through torch's autograd: the inputs as fresh leaves, the forward once more, then the
/// backward of Σ out ∘ d_out (whose gradient with respect to out is d_out, exactly).
pub(crate) fn vjp(
    inputs: &[&tch::Tensor],
    want: &[bool],
    d_out: &tch::Tensor,
    forward: impl FnOnce(&[tch::Tensor]) -> tch::Tensor,
) -> Vec<Option<tch::Tensor>> {
    if !want.iter().any(|&w| w) {
        return want.iter().map(|_| None).collect();
    }
    tch::with_grad(|| {
        let leaves: Vec<tch::Tensor> = inputs
            .iter()
            .zip(want)
            .map(|(t, &w)| t.detach().set_requires_grad(w))
            .collect();
        let out = forward(&leaves);
        let loss = (&out * d_out).sum(out.kind());
        let wanted: Vec<&tch::Tensor> = leaves
            .iter()
            .zip(want)
            .filter_map(|(t, &w)| w.then_some(t))
            .collect();
        let mut grads = tch::Tensor::run_backward(&[loss], &wanted, false, false).into_iter();
        want.iter()
            .map(|&w| if w { grads.next() } else { None })
            .collect()
    })
}

/// GroupNorm's settings (and whether SiLU follows).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupNormArgs {
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
}

impl GroupNormArgs {
    fn torch(self, x: &tch::Tensor, gamma: &tch::Tensor, beta: &tch::Tensor) -> tch::Tensor {
        let y = x.group_norm(self.groups as i64, Some(gamma), Some(beta), self.eps, true);
        if self.silu { y.silu() } else { y }
    }
}

/// `silu?(group_norm(x) · gamma + beta)` for `x` [N, C, H, W] through torch's kernel when `B`
/// is a LibTorch backend ril runs on, with or without autodiff; `None` otherwise.
pub(crate) fn group_norm<B: Backend>(
    x: &Tensor<B, 4>,
    [gamma, beta]: &[Tensor<B, 1>; 2],
    args: GroupNormArgs,
) -> Option<Tensor<B, 4>> {
    type Route<B> =
        fn(&Tensor<B, 4>, &Tensor<B, 1>, &Tensor<B, 1>, GroupNormArgs) -> Option<Tensor<B, 4>>;
    let routes: &[Route<B>] = &[
        inner::<B, Tch>,
        inner::<B, TchBf16>,
        tracked::<B, Tch, NoCheckpointing>,
        tracked::<B, Tch, BalancedCheckpointing>,
        tracked::<B, TchBf16, NoCheckpointing>,
        tracked::<B, TchBf16, BalancedCheckpointing>,
    ];
    routes.iter().find_map(|route| route(x, gamma, beta, args))
}

/// The op on the inner backend `X` (no autodiff) when `B` is `X`.
fn inner<B: Backend, X: Backend<FloatTensorPrimitive = TchTensor>>(
    x: &Tensor<B, 4>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    args: GroupNormArgs,
) -> Option<Tensor<B, 4>> {
    if TypeId::of::<B>() != TypeId::of::<X>() {
        return None;
    }
    let x: Tensor<X, 4> = cast(x.clone())?;
    let gamma: Tensor<X, 1> = cast(gamma.clone())?;
    let beta: Tensor<X, 1> = cast(beta.clone())?;
    let [x, gamma, beta] = [
        x.into_primitive().tensor(),
        gamma.into_primitive().tensor(),
        beta.into_primitive().tensor(),
    ];
    let y = TchTensor::new(args.torch(&x.tensor, &gamma.tensor, &beta.tensor));
    cast(Tensor::<X, 4>::from_primitive(TensorPrimitive::Float(y)))
}

/// The op under `Autodiff<X, C>` when `B` is that backend: torch's forward on the inner
/// tensors, and a backward that keeps x, gamma and beta (through the checkpointer) only.
fn tracked<B: Backend, X: Backend<FloatTensorPrimitive = TchTensor>, C: CheckpointStrategy>(
    x: &Tensor<B, 4>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    args: GroupNormArgs,
) -> Option<Tensor<B, 4>> {
    if TypeId::of::<B>() != TypeId::of::<Autodiff<X, C>>() {
        return None;
    }
    let x: Tensor<Autodiff<X, C>, 4> = cast(x.clone())?;
    let gamma: Tensor<Autodiff<X, C>, 1> = cast(gamma.clone())?;
    let beta: Tensor<Autodiff<X, C>, 1> = cast(beta.clone())?;
    let x = x.into_primitive().tensor();
    let gamma = gamma.into_primitive().tensor();
    let beta = beta.into_primitive().tensor();
    let forward = |x: &TchTensor, g: &TchTensor, b: &TchTensor| {
        TchTensor::new(args.torch(&x.tensor, &g.tensor, &b.tensor))
    };
    let op = GroupNormBackward { args };
    let out = match op
        .prepare::<C>([x.node.clone(), gamma.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let ids = [&x, &gamma, &beta].map(|t| prep.checkpoint(t));
            let out = forward(&x.primitive, &gamma.primitive, &beta.primitive);
            prep.finish(ids, out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(&x.primitive, &gamma.primitive, &beta.primitive))
        }
    };
    cast(Tensor::<Autodiff<X, C>, 4>::from_primitive(
        TensorPrimitive::Float(out),
    ))
}

/// The backward step; its state is the checkpointed x, gamma and beta.
#[derive(Debug)]
struct GroupNormBackward {
    args: GroupNormArgs,
}

impl<X: Backend<FloatTensorPrimitive = TchTensor>> Backward<X, 3> for GroupNormBackward {
    type State = [NodeId; 3];

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, ckpt: &mut Checkpointer) {
        let _span = tracing::trace_span!("group_norm_backward").entered();
        let [x, gamma, beta] = ops
            .state
            .map(|id| ckpt.retrieve_node_output::<TchTensor>(id));
        let d_out = grads.consume::<X>(&ops.node);
        let want: Vec<bool> = ops.parents.iter().map(Option::is_some).collect();
        let args = self.args;
        let inputs = [&x.tensor, &gamma.tensor, &beta.tensor];
        let g = vjp(&inputs, &want, &d_out.tensor, |t| {
            args.torch(&t[0], &t[1], &t[2])
        });
        for (parent, grad) in ops.parents.into_iter().zip(g) {
            if let (Some(node), Some(grad)) = (parent, grad) {
                grads.register::<X>(node.id, TchTensor::new(grad));
            }
        }
    }
}

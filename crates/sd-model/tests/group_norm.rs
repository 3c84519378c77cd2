//! `sd_model::nn::group_norm_nchw` and `group_norm_silu` (burn-flex's fused kernel by default,
//! torch's `group_norm` with the `tch` feature, CI runs this file both ways) against Burn's own
//! `GroupNorm` module under autodiff: the same outputs and the same gradients of the input,
//! gamma and beta, at a UNet shape (32 groups) and a VAE-like one.
//!
//! Tolerance (rtol 1e-4, floor 1e-5 of the largest magnitude, as tests/parity.rs): all sides
//! compute in f32 from the same inputs, but the statistics are accumulated in another order (in
//! f64 on flex, in one fused pass in torch, in several passes in Burn), which moves each value
//! by about 1e-6 relative over 1,000-4,000 elements per group; a wrong group split, a missing
//! epsilon or a gradient that skips the mean's term gives errors of order 1e-2 or more.

mod common;

use burn::module::Param;
use burn::nn::{GroupNorm, GroupNormConfig};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::silu;
use common::{AD, assert_close, values};
use sd_model::nn::{group_norm_nchw, group_norm_silu};

type Outputs = (Vec<f32>, [Vec<f32>; 3]);

/// Output and gradients of x, gamma, beta for the loss Σ f(norm, x) ∘ proj.
fn run(
    [n, c, h, w]: [usize; 4],
    groups: usize,
    f: impl Fn(&GroupNorm<AD>, Tensor<AD, 4>) -> Tensor<AD, 4>,
) -> Outputs {
    let device = Default::default();
    AD::seed(&device, 7);
    let dist = Distribution::Normal(0.0, 1.0);
    let x = (Tensor::<AD, 4>::random([n, c, h, w], dist, &device) * 2.0 + 0.5).require_grad();
    let proj = Tensor::<AD, 4>::random([n, c, h, w], dist, &device);
    let mut norm = GroupNormConfig::new(groups, c)
        .with_epsilon(1e-5)
        .init::<AD>(&device);
    norm.gamma = Some(Param::from_tensor(Tensor::random([c], dist, &device) + 1.0));
    norm.beta = Some(Param::from_tensor(Tensor::random([c], dist, &device)));
    let out = f(&norm, x.clone());
    let grads = (out.clone() * proj).sum().backward();
    let gamma = norm.gamma.as_ref().unwrap().val();
    let beta = norm.beta.as_ref().unwrap().val();
    (
        values(out),
        [
            values(x.grad(&grads).expect("d/dx")),
            values(gamma.grad(&grads).expect("d/dgamma")),
            values(beta.grad(&grads).expect("d/dbeta")),
        ],
    )
}

fn compare(name: &str, got: &Outputs, want: &Outputs) {
    assert_close(&format!("{name} out"), &got.0, &want.0, 1e-4, 1e-5);
    for (which, (g, w)) in ["x", "gamma", "beta"].iter().zip(got.1.iter().zip(&want.1)) {
        assert_close(&format!("{name} d/d{which}"), g, w, 1e-4, 1e-5);
    }
}

#[test]
fn group_norm_and_its_gradients_match_burns_module() {
    for (dims, groups) in [([2, 64, 16, 16], 32), ([1, 32, 40, 24], 8)] {
        let name = format!("{dims:?} / {groups}");
        let want = run(dims, groups, |n, x| n.forward(x));
        compare(&name, &run(dims, groups, group_norm_nchw), &want);
        let want = run(dims, groups, |n, x| silu(n.forward(x)));
        compare(
            &format!("{name} + silu"),
            &run(dims, groups, group_norm_silu),
            &want,
        );
    }
}

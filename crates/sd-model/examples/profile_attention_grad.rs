//! Times attention forward + backward under autodiff at SD 1.5's shapes (512x512, CFG batch 2,
//! 8 heads of 40) on the CPU backend: `sd_model::attention_grad`'s op against Burn's unfused
//! attention, to see what the blocked backward's recomputation of the scores costs:
//! `cargo run --profile test -p sd-model --example profile_attention_grad` (the 64×64 level's
//! unfused run needs about 5 GiB).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use sd_model::attention::scaled_dot_product;
use sd_model::backend::{Cpu, CpuAutodiff};

type Ad = CpuAutodiff;

/// Median seconds of 3 runs of forward + backward of Σ attn(q, k, v) ∘ proj, after a warm-up.
fn time(
    inputs: &[Tensor<Cpu, 4>; 4],
    attn: fn(Tensor<Ad, 4>, Tensor<Ad, 4>, Tensor<Ad, 4>) -> Tensor<Ad, 4>,
) -> f64 {
    let run = || {
        let [q, k, v] =
            [0, 1, 2].map(|i| Tensor::<Ad, 4>::from_inner(inputs[i].clone()).require_grad());
        let s = Instant::now();
        let out = attn(q.clone(), k, v);
        let grads = (out * Tensor::from_inner(inputs[3].clone()))
            .sum()
            .backward();
        let _ = q.grad(&grads).map(|g| g.into_data());
        s.elapsed().as_secs_f64()
    };
    run();
    let mut t: Vec<f64> = (0..3).map(|_| run()).collect();
    t.sort_by(f64::total_cmp);
    t[1]
}

fn unfused(q: Tensor<Ad, 4>, k: Tensor<Ad, 4>, v: Tensor<Ad, 4>) -> Tensor<Ad, 4> {
    attention(q, k, v, None, None, AttentionModuleOptions::default())
}

fn main() {
    let device = Default::default();
    let dist = Distribution::Normal(0.0, 1.0);
    for (name, n, m) in [
        ("self 32x32 (1024 tokens)", 1024, 1024),
        ("cross 64x64 (77 keys)", 4096, 77),
        ("self 64x64 (4096 tokens)", 4096, 4096),
    ] {
        let shape = |rows: usize| [2, 8, rows, 40];
        let inputs = [shape(n), shape(m), shape(m), shape(n)]
            .map(|s| Tensor::<Cpu, 4>::random(s, dist, &device));
        let op = time(&inputs, scaled_dot_product);
        let burn = time(&inputs, unfused);
        println!(
            "{name:28} op {:8.1} ms   Burn unfused {:8.1} ms",
            op * 1e3,
            burn * 1e3
        );
    }
}

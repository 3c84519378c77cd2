use burn::nn::conv::Conv2dConfig;
use burn::prelude::*;
use sd_model::backend::{Cpu, CpuAutodiff};
use std::time::Instant;
fn main() {
    let dev = Default::default();
    for (b, c, s) in [
        (16usize, 32usize, 64usize),
        (16, 16, 64),
        (32, 64, 8),
        (32, 128, 4),
    ] {
        let conv = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<Cpu>(&dev);
        let x = Tensor::<Cpu, 4>::random(
            [b, c, s, s],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let _ = conv.forward(x.clone()).into_data();
        let t = Instant::now();
        for _ in 0..3 {
            let _ = conv.forward(x.clone()).into_data();
        }
        let fwd = t.elapsed().as_secs_f64() / 3.0;
        let conv_ad = Conv2dConfig::new([c, c], [3, 3])
            .with_padding(burn::nn::PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init::<CpuAutodiff>(&dev);
        let xa = Tensor::<CpuAutodiff, 4>::random(
            [b, c, s, s],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        )
        .require_grad();
        let t = Instant::now();
        for _ in 0..3 {
            let y = conv_ad.forward(xa.clone());
            let g = y.sum().backward();
            let _ = xa.grad(&g).unwrap().into_data();
        }
        let fb = t.elapsed().as_secs_f64() / 3.0;
        let gflop = (b * s * s * 9 * c * c * 2) as f64 / 1e9;
        println!(
            "b{b} c{c} s{s}: {gflop:.3} GFLOP fwd {:.1} ms ({:.1} GFLOP/s), fwd+bwd {:.1} ms ({:.1} GFLOP/s)",
            fwd * 1e3,
            gflop / fwd,
            fb * 1e3,
            3.0 * gflop / fb
        );
    }
}

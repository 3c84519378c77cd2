//! Times the building blocks of the tiny VAE decoder on the CPU backend, to find which op makes
//! the decode slow: `cargo run --release -p sd-model --example profile_ops`.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::activation::silu;
use sd_model::backend::Cpu;
use sd_model::nn::{conv2d, group_norm, upsample_nearest};

fn time(name: &str, mut f: impl FnMut()) {
    f();
    let s = Instant::now();
    for _ in 0..20 {
        f();
    }
    println!(
        "{name:40} {:8.3} ms",
        s.elapsed().as_secs_f64() * 1e3 / 20.0
    );
}

fn main() {
    let device = Default::default();
    for (c, hw) in [(8usize, 64usize), (16, 32), (32, 16), (32, 8), (128, 64)] {
        let x =
            Tensor::<Cpu, 4>::random([2, c, hw, hw], burn::tensor::Distribution::Default, &device);
        let gn = group_norm::<Cpu>(4, c, 1e-6, &device);
        let conv = conv2d::<Cpu>(c, c, 3, 1, 1, &device);
        time(&format!("group_norm [2,{c},{hw},{hw}]"), || {
            let _ = gn.forward(x.clone()).into_data();
        });
        time(&format!("conv3x3 [2,{c},{hw},{hw}]"), || {
            let _ = conv.forward(x.clone()).into_data();
        });
        time(&format!("silu [2,{c},{hw},{hw}]"), || {
            let _ = silu(x.clone()).into_data();
        });
        time(&format!("upsample2x [2,{c},{hw},{hw}]"), || {
            let _ = upsample_nearest(x.clone(), [2 * hw, 2 * hw]).into_data();
        });
        time(&format!("interpolate nearest [2,{c},{hw},{hw}]"), || {
            let o = burn::tensor::ops::InterpolateOptions::new(
                burn::tensor::ops::InterpolateMode::Nearest,
            );
            let _ = burn::tensor::module::interpolate(x.clone(), [2 * hw, 2 * hw], o).into_data();
        });
        let a = upsample_nearest(x.clone(), [2 * hw, 2 * hw]);
        let o =
            burn::tensor::ops::InterpolateOptions::new(burn::tensor::ops::InterpolateMode::Nearest);
        let b = burn::tensor::module::interpolate(x.clone(), [2 * hw, 2 * hw], o);
        assert_eq!(
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap()
        );
    }
}

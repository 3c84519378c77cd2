//! Times the UNet's heaviest building blocks at SD 1.5 shapes (512x512, CFG batch 2) on the CPU
//! backend, to find which op makes the real-size UNet slower than PyTorch:
//! `cargo run --release -p sd-model --example profile_unet_ops` (tools/bench/profile_ops.py
//! times the same ops in PyTorch).

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use sd_model::attention::scaled_dot_product;
use sd_model::backend::Cpu;
use sd_model::nn::{conv2d, group_norm, group_norm_nchw, linear};

fn time(name: &str, gflop: f64, mut f: impl FnMut()) {
    f();
    let reps = 3;
    let s = Instant::now();
    for _ in 0..reps {
        f();
    }
    let t = s.elapsed().as_secs_f64() / reps as f64;
    println!("{name:44} {:9.1} ms {:7.1} GFLOP/s", t * 1e3, gflop / t);
}

/// [B, H, N, D] → [B, N, H·D], as `Attention::forward` hands the heads to `to_out`.
fn to_tokens(x: Tensor<Cpu, 4>) -> Tensor<Cpu, 3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

fn main() {
    let d = Default::default();
    let rand = |shape: [usize; 4]| Tensor::<Cpu, 4>::random(shape, Distribution::Default, &d);
    let x = rand([2, 320, 64, 64]);
    let conv = conv2d::<Cpu>(320, 320, 3, 1, 1, &d);
    time(
        "conv3x3 320->320 [2,320,64,64]",
        2.0 * 2.0 * 320.0 * 320.0 * 9.0 * 4096.0 / 1e9,
        || {
            let _ = conv.forward(x.clone()).into_data();
        },
    );
    let gn = group_norm::<Cpu>(32, 320, 1e-5, &d);
    time("group_norm 32 groups [2,320,64,64]", 0.0, || {
        let _ = gn.forward(x.clone()).into_data();
    });
    time("group_norm_nchw (sd_model::nn)", 0.0, || {
        let _ = group_norm_nchw(&gn, x.clone()).into_data();
    });
    let g = Tensor::<Cpu, 4>::ones([1, 320, 1, 1], &d);
    let xv = rand([1, 128, 256, 256]);
    let gnv = group_norm::<Cpu>(32, 128, 1e-6, &d);
    time("group_norm [1,128,256,256] (VAE decoder)", 0.0, || {
        let _ = gnv.forward(xv.clone()).into_data();
    });
    time("group_norm_nchw [1,128,256,256]", 0.0, || {
        let _ = group_norm_nchw(&gnv, xv.clone()).into_data();
    });
    time("  x * [1,320,1,1] (GroupNorm's affine step)", 0.0, || {
        let _ = (x.clone() * g.clone()).into_data();
    });
    let g4 = Tensor::<Cpu, 4>::ones([2, 320, 1, 1], &d);
    time("  x * [2,320,1,1]", 0.0, || {
        let _ = (x.clone() * g4.clone()).into_data();
    });
    let tokens = Tensor::<Cpu, 3>::random([2, 4096, 320], Distribution::Default, &d);
    let lin = linear::<Cpu>(320, 320, false, &d);
    time(
        "linear 320->320 [2,4096,320]",
        2.0 * 2.0 * 4096.0 * 320.0 * 320.0 / 1e9,
        || {
            let _ = lin.forward(tokens.clone()).into_data();
        },
    );
    let (q, k, v) = (
        rand([2, 8, 4096, 40]),
        rand([2, 8, 4096, 40]),
        rand([2, 8, 4096, 40]),
    );
    let gf = 2.0 * 2.0 * 2.0 * 8.0 * 4096.0 * 4096.0 * 40.0 / 1e9;
    time("self-attention 8 heads, 4096 x 4096, d 40", gf, || {
        let o = AttentionModuleOptions::default();
        let _ = attention(q.clone(), k.clone(), v.clone(), None, None, o).into_data();
    });
    time("  the same as matmul + softmax + matmul", gf, || {
        let s = q.clone().matmul(k.clone().swap_dims(2, 3)) * (1.0 / 40f64.sqrt());
        let p = burn::tensor::activation::softmax(s, 3);
        let _ = p.matmul(v.clone()).into_data();
    });
    let s = q.clone().matmul(k.clone().swap_dims(2, 3));
    time("  Q K^T alone", gf / 2.0, || {
        let _ = q.clone().matmul(k.clone().swap_dims(2, 3)).into_data();
    });
    time("  softmax alone [2,8,4096,4096]", 0.0, || {
        let _ = burn::tensor::activation::softmax(s.clone(), 3).into_data();
    });
    time("  P V alone", gf / 2.0, || {
        let _ = s.clone().matmul(v.clone()).into_data();
    });
    time("  sd_model::attention, output as [B,N,H*D]", gf, || {
        let _ = to_tokens(scaled_dot_product(q.clone(), k.clone(), v.clone())).into_data();
    });
    let (kc, vc) = (rand([2, 8, 77, 40]), rand([2, 8, 77, 40]));
    let gf = 2.0 * 2.0 * 2.0 * 8.0 * 4096.0 * 77.0 * 40.0 / 1e9;
    time("cross-attention 8 heads, 4096 x 77, d 40", gf, || {
        let o = AttentionModuleOptions::default();
        let _ = attention(q.clone(), kc.clone(), vc.clone(), None, None, o).into_data();
    });
    time("  sd_model::attention, output as [B,N,H*D]", gf, || {
        let _ = to_tokens(scaled_dot_product(q.clone(), kc.clone(), vc.clone())).into_data();
    });
    let qv = rand([1, 1, 4096, 512]);
    let gf = 2.0 * 2.0 * 4096.0 * 4096.0 * 512.0 / 1e9;
    time("VAE attention 1 head, 4096 x 4096, d 512", gf, || {
        let o = AttentionModuleOptions::default();
        let _ = attention(qv.clone(), qv.clone(), qv.clone(), None, None, o).into_data();
    });
    time("  sd_model::attention, output as [B,N,H*D]", gf, || {
        let _ = to_tokens(scaled_dot_product(qv.clone(), qv.clone(), qv.clone())).into_data();
    });
    // The VAE decoder's last level (512x512, 128 channels) and its 128x128 level (512 channels).
    let xv = rand([1, 128, 512, 512]);
    let conv = conv2d::<Cpu>(128, 128, 3, 1, 1, &d);
    let gf = 2.0 * 128.0 * 128.0 * 9.0 * 512.0 * 512.0 / 1e9;
    time("conv3x3 128->128 [1,128,512,512]", gf, || {
        let _ = conv.forward(xv.clone()).into_data();
    });
    let x5 = rand([1, 512, 128, 128]);
    let conv = conv2d::<Cpu>(512, 512, 3, 1, 1, &d);
    let gf = 2.0 * 512.0 * 512.0 * 9.0 * 128.0 * 128.0 / 1e9;
    time("conv3x3 512->512 [1,512,128,128]", gf, || {
        let _ = conv.forward(x5.clone()).into_data();
    });
    let gn = group_norm::<Cpu>(32, 128, 1e-6, &d);
    time("group_norm_nchw [1,128,512,512]", 0.0, || {
        let _ = group_norm_nchw(&gn, xv.clone()).into_data();
    });
    time("silu [1,128,512,512] (burn)", 0.0, || {
        let _ = burn::tensor::activation::silu(xv.clone()).into_data();
    });
    time("silu [1,128,512,512] (sd_model::nn)", 0.0, || {
        let _ = sd_model::nn::silu(xv.clone()).into_data();
    });
    time("group_norm_silu [1,128,512,512]", 0.0, || {
        let _ = sd_model::nn::group_norm_silu(&gn, xv.clone()).into_data();
    });
    time("add [1,128,512,512]", 0.0, || {
        let _ = (xv.clone() + xv.clone()).into_data();
    });
    let x2 = rand([1, 128, 256, 256]);
    time("nearest 2x [1,128,256,256] -> 512", 0.0, || {
        let _ = sd_model::nn::upsample_nearest(x2.clone(), [512, 512]).into_data();
    });
}

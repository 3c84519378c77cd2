//! Plain bilinear resizing (`F.interpolate(mode="bilinear", align_corners=False)`, no
//! antialias), as pytorch-fid resizes to 299, as two weight matrices.

use burn::prelude::*;

/// Bilinear weights [output, input]: source x = (i + 0.5)·in/out − 0.5 clamped at 0, between
/// floor(x) and the next pixel (clamped at the edge).
pub fn bilinear_weights(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f64 / output as f64;
    let mut w = vec![0f32; output * input];
    for i in 0..output {
        let src = ((i as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src.floor() as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let l = (src - i0 as f64) as f32;
        w[i * input + i0] += 1.0 - l;
        w[i * input + i1] += l;
    }
    w
}

/// Resizes [B, C, H, W] to `size` bilinearly.
pub fn bilinear<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    rewards::preprocess::separable(
        x,
        bilinear_weights(h, size[0]),
        bilinear_weights(w, size[1]),
        size,
    )
}

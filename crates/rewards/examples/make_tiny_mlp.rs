//! Writes configs/tiny/aesthetic-mlp-random.safetensors: an MLP with the LAION predictor's
//! architecture (768 → 1024 → 128 → 64 → 16 → 1) and seeded random weights in f16, so that the
//! tiny presets run the aesthetic reward with no download. Its scores mean nothing; the real
//! MLP is sac+logos+ava1-l14-linearMSE.pth. Run: `cargo run -p rewards --example make_tiny_mlp`.

use std::collections::HashMap;

use sd_model::noise::NoiseRng;

fn main() -> anyhow::Result<()> {
    let layers = [
        (0, 768, 1024),
        (2, 1024, 128),
        (4, 128, 64),
        (6, 64, 16),
        (7, 16, 1),
    ];
    let mut rng = NoiseRng::new(20261126);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, d_in, d_out) in layers {
        // PyTorch's default Linear init scale: U(-1/√in, 1/√in).
        let bound = 1.0 / (d_in as f64).sqrt();
        let mut draw = |n: usize| -> Vec<u8> {
            (0..n)
                .flat_map(|_| {
                    let v = ((2.0 * rng.uniform_open0() - 1.0) * bound) as f32;
                    burn::tensor::f16::from_f32(v).to_le_bytes()
                })
                .collect()
        };
        tensors.push((
            format!("layers.{i}.weight"),
            vec![d_out, d_in],
            draw(d_out * d_in),
        ));
        tensors.push((format!("layers.{i}.bias"), vec![d_out], draw(d_out)));
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let mut meta = HashMap::new();
    meta.insert(
        "note".to_string(),
        "seeded random weights with the LAION aesthetic MLP's shapes; not a trained model"
            .to_string(),
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/tiny/aesthetic-mlp-random.safetensors");
    safetensors::serialize_to_file(views, Some(meta), &path)?;
    println!("wrote {}", path.display());
    Ok(())
}

//! Writes a LoRA file with ril (a task on the tiny UNet's layers matching PATTERN, default the
//! cross-attention keys and values; rank 4, alpha 8, random non-zero weights) and the UNet output
//! with it on the parity inputs, for tools/parity/check_ril_lora.py to load in diffusers and
//! compare: `cargo run -p sd-model --example export_lora -- OUT_DIR [PATTERN]`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::module::Param;
use burn::prelude::*;
use lora_group::{LoraModel, Targets, export_task, push_task};
use sd_model::backend::Cpu;
use sd_model::load::SafetensorsFile;
use sd_model::noise::NoiseRng;
use sd_model::pipeline::load_unet;

fn main() -> Result<()> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: export_lora OUT_DIR")?,
    );
    std::fs::create_dir_all(&out)?;
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let device = Default::default();
    let mut unet = load_unet::<Cpu>(&fixtures.join("tiny-sd/unet"), &device)?;
    let pattern = std::env::args()
        .nth(2)
        .unwrap_or_else(|| r".*attn2\.to_(k|v)".into());
    let targets = Targets::pattern(&pattern)?;
    let (task, layers) = push_task(&mut unet, &targets, 4, 8.0)?;
    let mut rng = NoiseRng::new(7);
    unet.visit_lora_mut(&mut |_, layer| {
        for pair in &mut layer.lora {
            let [o, r] = pair.lora_B.val().dims();
            pair.lora_B = Param::from_tensor(rng.tensor::<Cpu, 2>([o, r], &device) * 0.1);
        }
    });
    export_task(&unet, task, "unet", &out.join("ril_lora.safetensors"))?;
    let r = SafetensorsFile::open(&fixtures.join("reference/unet.safetensors"))?;
    let t: Vec<f32> = r.read_i64("timestep")?.iter().map(|&t| t as f32).collect();
    let y = unet.forward(
        r.tensor("sample", &device)?,
        Tensor::from_data(TensorData::new(t, [2]), &device),
        r.tensor("encoder_hidden_states", &device)?,
    );
    let values: Vec<f32> = y.into_data().convert::<f32>().into_vec().expect("f32");
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 4, 16, 16], &bytes)?;
    safetensors::serialize_to_file([("out", view)], None, &out.join("ril_out.safetensors"))?;
    println!("task {task}: {layers} layers -> {}", out.display());
    Ok(())
}

//! Writing a trained pipeline as a diffusers folder (model_index.json, scheduler/, tokenizer/,
//! text_encoder/, unet/, vae/) that `ril sample` and diffusers' `StableDiffusionPipeline.
//! from_pretrained` both load; the folder is assembled beside its final name and renamed into
//! place, so a crash never leaves half a pipeline.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use burn::prelude::*;
use sd_model::clip::ClipTextModel;
use sd_model::ddim::DdimConfig;
use sd_model::save::{save_module, save_module_with, unet_file_shape};
use sd_model::tokenizer::ClipTokenizer;
use sd_model::unet::UNet2DConditionModel;
use sd_model::vae::AutoencoderKL;
use serde_json::{Value, json};

use crate::config::Models;

/// The diffusers version whose config layout the files follow (the parity fixtures' version).
const DIFFUSERS_VERSION: &str = "0.42.1";

/// Writes the pipeline folder `dir` (replacing an older one only once the new one is complete).
#[allow(clippy::too_many_arguments)]
pub fn write_pipeline<B: Backend>(
    dir: &Path,
    models: &Models,
    scheduler: &DdimConfig,
    tokenizer_dir: &Path,
    tokenizer: &ClipTokenizer,
    vae: &AutoencoderKL<B>,
    unet: &UNet2DConditionModel<B>,
    text: &ClipTextModel<B>,
) -> Result<()> {
    lora_group::io::write_dir_atomic(dir, |tmp| {
        fill_pipeline(
            tmp,
            models,
            scheduler,
            tokenizer_dir,
            tokenizer,
            vae,
            unet,
            text,
        )
    })
}

/// The pipeline folder's files, written into `tmp`.
#[allow(clippy::too_many_arguments)]
fn fill_pipeline<B: Backend>(
    tmp: &Path,
    models: &Models,
    scheduler: &DdimConfig,
    tokenizer_dir: &Path,
    tokenizer: &ClipTokenizer,
    vae: &AutoencoderKL<B>,
    unet: &UNet2DConditionModel<B>,
    text: &ClipTextModel<B>,
) -> Result<()> {
    for sub in ["scheduler", "tokenizer", "text_encoder", "unet", "vae"] {
        let d = tmp.join(sub);
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    write_json(&tmp.join("model_index.json"), &model_index())?;
    let mut sched = serde_json::to_value(scheduler)?;
    diffusers_class(&mut sched, "DDIMScheduler");
    write_json(&tmp.join("scheduler/scheduler_config.json"), &sched)?;
    crate::vocab::copy(tokenizer_dir, &tmp.join("tokenizer"))?;

    let mut unet_config = serde_json::to_value(&models.unet)?;
    diffusers_class(&mut unet_config, "UNet2DConditionModel");
    write_json(&tmp.join("unet/config.json"), &unet_config)?;
    save_module_with(
        unet,
        &tmp.join("unet/diffusion_pytorch_model.safetensors"),
        "",
        &meta,
        &unet_file_shape(models.unet.use_linear_projection),
    )?;

    let mut vae_config = serde_json::to_value(&models.vae)?;
    diffusers_class(&mut vae_config, "AutoencoderKL");
    write_json(&tmp.join("vae/config.json"), &vae_config)?;
    save_module(
        vae,
        &tmp.join("vae/diffusion_pytorch_model.safetensors"),
        "",
        &meta,
    )?;

    let mut text_config = serde_json::to_value(&models.text)?;
    if let Value::Object(map) = &mut text_config {
        let extra = json!({
            "architectures": ["CLIPTextModel"],
            "model_type": "clip_text_model",
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
            "projection_dim": models.text.hidden_size,
            "attention_dropout": 0.0,
            "dropout": 0.0,
            "initializer_factor": 1.0,
            "initializer_range": 0.02,
            "torch_dtype": "float32",
        });
        if let Value::Object(extra) = extra {
            map.extend(extra);
        }
    }
    write_json(&tmp.join("text_encoder/config.json"), &text_config)?;
    // transformers' CLIPTextModel keys start with `text_model.`.
    save_module(
        text,
        &tmp.join("text_encoder/model.safetensors"),
        "text_model.",
        &meta,
    )
}

fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": DIFFUSERS_VERSION,
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
        "safety_checker": [null, null],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
}

fn diffusers_class(v: &mut Value, class: &str) {
    if let Value::Object(map) = v {
        map.insert("_class_name".into(), json!(class));
        map.insert("_diffusers_version".into(), json!(DIFFUSERS_VERSION));
    }
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    lora_group::io::write_atomic(path, text.as_bytes())
}

/// Writes the new folder `out` as a whole (`lora_group::io::write_dir_atomic`), refusing an
/// `out` that exists and is not an empty folder: a trained model never replaces another.
pub fn write_new_dir(out: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if out.exists() && std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()) {
        anyhow::bail!("{} exists and is not an empty folder", out.display());
    }
    lora_group::io::write_dir_atomic(out, fill)
}

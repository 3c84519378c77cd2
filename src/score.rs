//! `ril score`: scores every image of a folder with a reward, in file-name order.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use rewards::Reward;
use rewards::aesthetic::Aesthetic;
use rewards::hps::Hps;
use rewards::images::{image_files, load_images};
use rewards::jpeg::Compressibility;
use rewards::openclip::OpenClipConfig;

pub const USAGE: &str = "\
usage: ril score --reward aesthetic|hps|compress --images DIR [--prompts FILE] [--weights PATH]
                 [--quality Q] [--clip DIR_OR_FILE] [--tokenizer DIR] [--model-config FILE]
                 [--out FILE]

  aesthetic  --weights: the LAION MLP (sac+logos+ava1-l14-linearMSE.pth or .safetensors);
             --clip: openai/clip-vit-large-patch14 as a transformers folder, weights file or hub id
             (default openai/clip-vit-large-patch14)
  hps        --weights: HPS_v2_compressed.pt (or a safetensors state dict); --prompts: one line per
             image; --tokenizer: a CLIP tokenizer folder (e.g. an SD 1.5 tokenizer/);
             --model-config: an open_clip model config JSON (default ViT-H-14)
  compress   --quality: JPEG quality of the differentiable codec (default 80)
  Prints one line per image and the mean; --out writes them as JSON.";

/// Options of `ril score`.
#[derive(Debug, Default)]
pub struct ScoreArgs {
    pub reward: String,
    pub images: PathBuf,
    pub prompts: Option<PathBuf>,
    pub weights: Option<PathBuf>,
    pub quality: f32,
    pub clip: String,
    pub tokenizer: Option<PathBuf>,
    pub model_config: Option<PathBuf>,
    pub out: Option<PathBuf>,
}

pub fn parse(args: &[String]) -> Result<ScoreArgs> {
    let mut a = ScoreArgs {
        quality: 80.0,
        clip: "openai/clip-vit-large-patch14".into(),
        ..Default::default()
    };
    let mut f = ril::args::Flags::new(args, USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--reward" => a.reward = f.value(flag)?,
            "--images" => a.images = f.value(flag)?.into(),
            "--prompts" => a.prompts = Some(f.value(flag)?.into()),
            "--weights" => a.weights = Some(f.value(flag)?.into()),
            "--quality" => a.quality = f.parse(flag)?,
            "--clip" => a.clip = f.value(flag)?,
            "--tokenizer" => a.tokenizer = Some(f.value(flag)?.into()),
            "--model-config" => a.model_config = Some(f.value(flag)?.into()),
            "--out" => a.out = Some(f.value(flag)?.into()),
            other => return Err(f.unknown(other)),
        }
    }
    if !matches!(a.reward.as_str(), "aesthetic" | "hps" | "compress") {
        bail!("--reward must be aesthetic, hps or compress\n{USAGE}");
    }
    if a.images.as_os_str().is_empty() {
        bail!("--images DIR is required\n{USAGE}");
    }
    Ok(a)
}

/// Non-blank lines of a prompts file.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect())
}

fn required<'a>(v: &'a Option<PathBuf>, flag: &str, reward: &str) -> Result<&'a PathBuf> {
    v.as_ref()
        .with_context(|| format!("--reward {reward} needs {flag}\n{USAGE}"))
}

pub fn run<B: Backend>(a: &ScoreArgs, device: &B::Device) -> Result<()> {
    let files = image_files(&a.images)?;
    let prompts = match &a.prompts {
        Some(p) => read_prompts(p)?,
        None => Vec::new(),
    };
    let reward: Box<dyn Reward<B>> = match a.reward.as_str() {
        "aesthetic" => {
            let mlp = required(&a.weights, "--weights", "aesthetic")?;
            let clip = sd_model::hub::resolve_repo(&a.clip, &["config.json", "model.safetensors"])?;
            Box::new(Aesthetic::load(&clip, mlp, device)?)
        }
        "hps" => {
            let weights = required(&a.weights, "--weights", "hps")?;
            let tokenizer = required(&a.tokenizer, "--tokenizer", "hps")?;
            if prompts.len() != files.len() {
                bail!(
                    "--reward hps needs one prompt per image: {} images in {}, {} prompts",
                    files.len(),
                    a.images.display(),
                    prompts.len()
                );
            }
            let config = match &a.model_config {
                Some(p) => OpenClipConfig::from_file(p)?,
                None => OpenClipConfig::vit_h14(),
            };
            Box::new(Hps::load(&config, weights, tokenizer, device)?)
        }
        _ => Box::new(Compressibility::new(a.quality)?),
    };
    const BATCH: usize = 8;
    let mut scores = Vec::with_capacity(files.len());
    for (i, chunk) in files.chunks(BATCH).enumerate() {
        let images = load_images::<B>(chunk, device)?;
        let p = if prompts.is_empty() {
            &[][..]
        } else {
            &prompts[i * BATCH..i * BATCH + chunk.len()]
        };
        let s: Vec<f32> = reward
            .score(images, p)?
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32");
        scores.extend(s);
    }
    let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len() as f64;
    let mut rows = Vec::new();
    for (f, s) in files.iter().zip(&scores) {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        println!("{name}\t{s:.6}");
        rows.push(serde_json::json!({ "image": name, "score": s }));
    }
    println!("mean\t{mean:.6}");
    if let Some(out) = &a.out {
        let json = serde_json::json!({ "reward": a.reward, "scores": rows, "mean": mean });
        let text = serde_json::to_string_pretty(&json).expect("JSON");
        lora_group::io::write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}

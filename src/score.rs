//! `ril score`: scores every image of a folder with a reward, in file-name order; images of
//! different sizes are batched by size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use rewards::Reward;
use rewards::aesthetic::Aesthetic;
use rewards::config::RewardKind;
use rewards::hps::Hps;
use rewards::images::{image_files, load_images};
use rewards::jpeg::Compressibility;
use rewards::openclip::OpenClipConfig;
use sd_model::backend::BackendKind;

use crate::cli::{one_of, text};

/// The rewards `--reward` offers (joint tuning's weighted sum is for `ril train` only).
const REWARDS: [RewardKind; 3] = [RewardKind::Aesthetic, RewardKind::Hps, RewardKind::Compress];

/// Scores every image of a folder with a reward.
///
/// Prints one line per image in file-name order, then the mean. aesthetic: AlignProp's differentiable LAION predictor (CLIP ViT-L/14 embedding + MLP); hps:
/// HPSv2 (open_clip ViT-H-14 image-text cosine); compress: -mean((x - JPEG(x))^2). Images may
/// have different sizes (each size is scored in its own batches).
#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// The reward.
    #[arg(long, value_name = "REWARD", value_parser = one_of(&REWARDS, RewardKind::name))]
    pub reward: RewardKind,
    /// The image folder (PNG, JPEG, ...; hidden files skipped).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// hps: one prompt line per image, in file-name order.
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// aesthetic: the LAION MLP (sac+logos+ava1-l14-linearMSE.pth or .safetensors); hps:
    /// HPS_v2_compressed.pt (or a safetensors state dict).
    #[arg(long, value_name = "PATH")]
    pub weights: Option<PathBuf>,
    /// compress: JPEG quality of the differentiable codec (0-100).
    #[arg(long, value_name = "Q", default_value_t = 80.0)]
    pub quality: f32,
    /// aesthetic: openai/clip-vit-large-patch14 as a transformers folder, weights file or hub id.
    #[arg(long, value_name = "DIR_OR_FILE", default_value = "openai/clip-vit-large-patch14",
          value_parser = text())]
    pub clip: String,
    /// hps: a CLIP tokenizer folder (e.g. an SD 1.5 tokenizer/).
    #[arg(long, value_name = "DIR")]
    pub tokenizer: Option<PathBuf>,
    /// hps: an open_clip model config JSON [default: ViT-H-14].
    #[arg(long, value_name = "FILE")]
    pub model_config: Option<PathBuf>,
    /// Also write {"reward", "scores": [{"image", "score"}], "mean"} as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// The backend: cpu (burn-flex), cuda (`--features cuda`), tch-cpu or tch-cuda (LibTorch,
    /// `--features tch`).
    #[arg(long, value_name = "BACKEND", default_value_t = BackendKind::Cpu,
          value_parser = crate::cli::one_of(&BackendKind::ALL, BackendKind::name))]
    pub backend: BackendKind,
}

impl ScoreArgs {
    /// The files each reward needs.
    pub fn validate(&self) -> Result<(), String> {
        match self.reward {
            RewardKind::Aesthetic => self.required(&self.weights, "--weights").map(drop),
            RewardKind::Hps => self
                .required(&self.weights, "--weights")
                .and(self.required(&self.tokenizer, "--tokenizer"))
                .map(drop),
            RewardKind::Compress | RewardKind::Joint => Ok(()),
        }
    }

    /// The value of `flag`, which the reward needs.
    fn required<'a>(&self, v: &'a Option<PathBuf>, flag: &str) -> Result<&'a PathBuf, String> {
        v.as_ref()
            .ok_or_else(|| format!("--reward {} needs {flag}", self.reward.name()))
    }
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

pub fn run<B: Backend>(a: &ScoreArgs, device: &B::Device) -> Result<()> {
    let files = image_files(&a.images)?;
    let prompts = match &a.prompts {
        Some(p) => read_prompts(p)?,
        None => Vec::new(),
    };
    let required = |v, flag| a.required(v, flag).map_err(anyhow::Error::msg);
    let reward: Box<dyn Reward<B>> = match a.reward {
        RewardKind::Aesthetic => {
            let mlp = required(&a.weights, "--weights")?;
            let clip = sd_model::hub::resolve_repo(&a.clip, &["config.json", "model.safetensors"])?;
            Box::new(Aesthetic::load(&clip, mlp, device)?)
        }
        RewardKind::Hps => {
            let weights = required(&a.weights, "--weights")?;
            let tokenizer = required(&a.tokenizer, "--tokenizer")?;
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
        RewardKind::Compress => Box::new(Compressibility::new(a.quality)?),
        RewardKind::Joint => bail!("--reward joint: not a single reward (see `ril train`)"),
    };
    let scores = score_by_size(&*reward, &files, &prompts, device)?;
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
        let json = serde_json::json!({ "reward": a.reward.name(), "scores": rows, "mean": mean });
        let text = serde_json::to_string_pretty(&json).expect("JSON");
        lora_group::io::write_atomic(out, text.as_bytes())?;
    }
    Ok(())
}

/// Scores `files` (with `prompts[i]` for `files[i]`, or no prompts) in batches of up to 8
/// images of one size: the files are grouped by (width, height) and each group is scored in
/// turn. The scores come back in the order of `files`.
pub fn score_by_size<B: Backend>(
    reward: &dyn Reward<B>,
    files: &[PathBuf],
    prompts: &[String],
    device: &B::Device,
) -> Result<Vec<f32>> {
    const BATCH: usize = 8;
    let mut by_size: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let size = image::image_dimensions(f)
            .with_context(|| format!("{} is not a readable image", f.display()))?;
        by_size.entry(size).or_default().push(i);
    }
    let mut scores = vec![f32::NAN; files.len()];
    for chunk in by_size.values().flat_map(|group| group.chunks(BATCH)) {
        let batch: Vec<PathBuf> = chunk.iter().map(|&i| files[i].clone()).collect();
        let p: Vec<String> = if prompts.is_empty() {
            Vec::new()
        } else {
            chunk.iter().map(|&i| prompts[i].clone()).collect()
        };
        let s: Vec<f32> = reward
            .score(load_images::<B>(&batch, device)?, &p)?
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32");
        for (&i, s) in chunk.iter().zip(s) {
            scores[i] = s;
        }
    }
    Ok(scores)
}

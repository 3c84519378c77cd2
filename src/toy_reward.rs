//! `ril toy-reward`: trains one of the toy world's reward or metric models from a TOML config
//! (the aesthetic reward, pretrain::toy_aesthetic; the HPS reward or the metric CLIP,
//! pretrain::toy_clip) and reports how well it does on held-out images.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use pretrain::toy_aesthetic::AestheticTrainConfig;
use pretrain::toy_clip::{ClipTrainConfig, ToyModelConfig, Trained};
use sd_model::backend::CpuAutodiff;

/// Trains a toy reward or metric model (CPU) and evaluates it on held-out images.
///
/// With a config that sets `layout` (configs/toy/hps.toml, configs/toy/clip-metric.toml): a CLIP
/// trained contrastively on toy images and captions (README, "Toy rewards"). layout = "open_clip"
/// writes DIR/open_clip_model.safetensors, DIR/open_clip_config.json and DIR/tokenizer/, the HPS
/// reward's files (`ril score --reward hps --weights DIR/open_clip_model.safetensors
/// --model-config DIR/open_clip_config.json --tokenizer DIR/tokenizer`); layout = "transformers"
/// writes a transformers CLIPModel folder, the metric CLIP of `ril eval --clip-model DIR`.
/// Otherwise (configs/toy/aesthetic.toml): the aesthetic reward's architecture learning the toy
/// world's beauty, written as DIR/clip/ (a CLIPVisionModelWithProjection folder) and
/// DIR/mlp.safetensors (`ril score --reward aesthetic --clip DIR/clip --weights
/// DIR/mlp.safetensors`). Both also write DIR/train.toml (a copy of --config) and DIR/heldout.json
/// (the held-out figures and the scores of the first images).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ToyRewardArgs {
    /// The training config (TOML), e.g. configs/toy/aesthetic.toml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The folder to write (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(a: &ToyRewardArgs) -> Result<()> {
    let config = ToyModelConfig::from_file(&a.config).context("--config")?;
    // Refused now rather than after the training.
    crate::cli::refuse_occupied(&a.out)?;
    let toml_bytes =
        std::fs::read(&a.config).with_context(|| format!("cannot read {}", a.config.display()))?;
    match config {
        ToyModelConfig::Aesthetic(c) => aesthetic(a, &c, toml_bytes),
        ToyModelConfig::Clip(c) => clip(a, &c, toml_bytes),
    }
}

fn aesthetic(a: &ToyRewardArgs, config: &AestheticTrainConfig, toml_bytes: Vec<u8>) -> Result<()> {
    use pretrain::toy_aesthetic::{evaluate, save, train};
    let device = Default::default();
    let start = Instant::now();
    let trained = train::<CpuAutodiff>(
        config,
        &device,
        crate::cli::step_printer(config.steps, "mse"),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let heldout = evaluate(&trained.model, config.eval_seed, config.eval_count, &device)?;
    save(
        &trained.model,
        &config.tower,
        &a.out,
        &[
            ("train.toml", toml_bytes),
            ("heldout.json", serde_json::to_vec_pretty(&heldout)?),
        ],
    )
    .context("--out")?;
    println!(
        "{}: trained in {seconds:.0} s ({} steps); on {} held-out images (seed {}): RMSE {:.3} \
         (beauty's own spread {:.3}), Pearson r {:.4}",
        a.out.display(),
        config.steps,
        heldout.count,
        heldout.seed,
        heldout.rmse,
        heldout.beauty_std,
        heldout.pearson
    );
    Ok(())
}

fn clip(a: &ToyRewardArgs, config: &ClipTrainConfig, toml_bytes: Vec<u8>) -> Result<()> {
    use pretrain::toy_clip::{evaluate, save, train};
    let device = Default::default();
    let start = Instant::now();
    let run = train::<CpuAutodiff>(
        config,
        &device,
        crate::cli::step_printer(config.steps, "loss"),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let tokenizer = config.load_tokenizer()?;
    let (seed, count) = (config.eval_seed, config.eval_count);
    let heldout = match &run.model {
        Trained::OpenClip(m) => evaluate(m, &tokenizer, seed, count, &device)?,
        Trained::Transformers(m) => evaluate(m, &tokenizer, seed, count, &device)?,
    };
    save(
        &run.model,
        config,
        &a.out,
        &[
            ("train.toml", toml_bytes),
            ("heldout.json", serde_json::to_vec_pretty(&heldout)?),
        ],
    )
    .context("--out")?;
    let attributes: Vec<String> = heldout
        .attribute_preferred
        .iter()
        .map(|(k, v)| format!("{k} {:.1} %", 100.0 * v))
        .collect();
    println!(
        "{}: trained in {seconds:.0} s ({} steps); on {} held-out images (seed {}): own caption \
         first among 64 in {:.1} % (chance 1.6 %), cosine with own caption {:.3} against {:.3} \
         with others; own caption preferred to one with an attribute changed: {}",
        a.out.display(),
        config.steps,
        heldout.count,
        heldout.seed,
        100.0 * heldout.top1,
        heldout.matched_cosine,
        heldout.unmatched_cosine,
        attributes.join(", ")
    );
    Ok(())
}

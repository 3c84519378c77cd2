//! `ril toy-reward`: trains the toy world's aesthetic reward (pretrain::toy_aesthetic) from a
//! TOML config and reports how well it predicts the stated beauty on held-out images.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use pretrain::toy_aesthetic::{AestheticTrainConfig, evaluate, save, train};
use sd_model::backend::CpuAutodiff;

/// Trains the toy aesthetic reward (CPU) and evaluates it on held-out images.
///
/// The aesthetic reward's architecture (a CLIP vision tower and the LAION MLP layout) learns the
/// toy world's beauty (README, "Toy rewards") from the single-object train stream. Writes
/// DIR/clip/ (a transformers CLIPVisionModelWithProjection folder), DIR/mlp.safetensors (the MLP),
/// DIR/train.toml (a copy of --config) and DIR/heldout.json (held-out RMSE, correlation and the
/// scores of the first images): `ril score --reward aesthetic --clip DIR/clip --weights
/// DIR/mlp.safetensors` uses them.
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
    let config = AestheticTrainConfig::from_file(&a.config).context("--config")?;
    // Refused now rather than after the training.
    crate::cli::refuse_occupied(&a.out)?;
    let device = Default::default();
    let start = Instant::now();
    let trained = train::<CpuAutodiff>(
        &config,
        &device,
        crate::cli::step_printer(config.steps, "mse"),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let heldout = evaluate(&trained.model, config.eval_seed, config.eval_count, &device)?;
    let toml_bytes =
        std::fs::read(&a.config).with_context(|| format!("cannot read {}", a.config.display()))?;
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

//! `ril eval`: generates the eval prompts' images with a model (plus LoRA files) from the same
//! noise as every other model, and scores them.

use std::path::PathBuf;

use anyhow::Result;
use burn::prelude::*;
use clap::ArgAction;
use rid_trainer::TrainConfig;
use rid_trainer::config::read_prompts;
use ril_metrics::{EvalSpec, Metric, evaluate};
use sd_model::StableDiffusion;

use crate::cli::{at_least_one, one_of, text};

/// Generates a model's eval images from shared noise and scores them.
///
/// The images of the eval prompts come from the same noise for every model. The model, sampling, seed, reward weights and eval prompts come from the run config. A metric
/// that cannot be computed is reported as skipped with the reason. Writes DIR/results.json and
/// DIR/grid.png.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The run config (TOML).
    #[arg(long, value_name = "RUN.toml")]
    pub config: PathBuf,
    /// A LoRA task file (e.g. RUN/task-0-NAME/lora.safetensors), applied in order (repeatable).
    #[arg(long = "lora", value_name = "FILE")]
    pub loras: Vec<PathBuf>,
    /// The eval prompts, one per line [default: the config's prompts.eval].
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Images per prompt.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one())]
    pub images_per_prompt: usize,
    /// The metrics, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', action = ArgAction::Set,
          default_values = Metric::ALL.map(Metric::name),
          value_parser = one_of(&Metric::ALL, Metric::name))]
    pub metrics: Vec<Metric>,
    /// Images per sampling batch.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = at_least_one())]
    pub batch: usize,
    /// Prompts in DIR/grid.png.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub grid_prompts: usize,
    /// FID: a folder of real images (its statistics are cached in the cache folder, see `ril
    /// fid --help`) or their statistics (FILE.npz, from `ril fid-stats` or pytorch-fid's
    /// --save-stats); needs --fid-weights or --fid-hash-weights.
    #[arg(long, value_name = "DIR|FILE.npz", requires = "fid_inception")]
    pub fid_reference: Option<PathBuf>,
    /// FID: pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth).
    #[arg(long, value_name = "FILE", group = "fid_inception")]
    pub fid_weights: Option<PathBuf>,
    /// FID: deterministic hash weights instead (values comparable only with each other).
    #[arg(long, group = "fid_inception")]
    pub fid_hash_weights: bool,
    /// CLIP score (torchmetrics' definition): a transformers CLIPModel folder or hub id, e.g.
    /// openai/clip-vit-large-patch14.
    #[arg(long, value_name = "DIR_OR_REPO", value_parser = text())]
    pub clip_model: Option<String>,
    /// The output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let config = TrainConfig::from_file(&a.config)?;
    let prompts = read_prompts(a.prompts.as_ref().unwrap_or(&config.prompts.eval))?;
    let s = &config.sampling;
    let spec = EvalSpec {
        prompts,
        images_per_prompt: a.images_per_prompt,
        seed: config.seed,
        steps: s.steps,
        guidance: s.guidance,
        height: s.height,
        width: s.width,
        batch_size: a.batch,
        metrics: a.metrics.clone(),
        grid_prompts: a.grid_prompts,
        // clap makes --fid-reference require --fid-weights or --fid-hash-weights (no weights:
        // the hash weights).
        fid: a
            .fid_reference
            .clone()
            .map(|reference| ril_metrics::eval::FidSpec {
                reference,
                weights: a.fid_weights.clone(),
            }),
        clip_model: a.clip_model.clone(),
    };
    ril::on_backend!(config.model.backend, inner, |B, device| {
        eval::<B>(&config, &a.loras, &spec, &a.out, &device)
    })
}

fn eval<B: Backend>(
    config: &TrainConfig,
    loras: &[PathBuf],
    spec: &EvalSpec,
    out: &std::path::Path,
    device: &B::Device,
) -> Result<()> {
    let dir = sd_model::hub::resolve_model(&config.model.source)?;
    let mut sd = StableDiffusion::<B>::load(&dir, device)?;
    for l in loras {
        lora_group::import_task(&mut sd.unet, l, "unet")?;
    }
    let result = evaluate(&sd, spec, &config.rewards, out, device)?;
    for (m, v) in &result.values {
        println!("{}\t{v:.6}", m.name());
    }
    for (m, why) in &result.skipped {
        println!("{}\tskipped: {why}", m.name());
    }
    Ok(())
}

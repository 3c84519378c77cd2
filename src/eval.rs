//! `ril eval`: generates the eval prompts' images with a model (plus LoRA files) from the same
//! noise as every other model, and scores them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use rid_trainer::TrainConfig;
use rid_trainer::config::read_prompts;
use ril_metrics::{EvalSpec, Metric, evaluate};
use sd_model::StableDiffusion;

pub const USAGE: &str = "\
usage: ril eval --config RUN.toml [--lora FILE ...] [--prompts FILE] [--images-per-prompt N]
                [--metrics LIST] [--batch N] [--grid-prompts N]
                [--fid-reference DIR [--fid-weights FILE | --fid-hash-weights]]
                [--clip-model DIR_OR_REPO] --out DIR

  The model, sampling, seed, reward weights and eval prompts come from the run config; --lora
  applies task files (e.g. RUN/task-0-NAME/lora.safetensors) in order. Metrics: aesthetic, hps,
  png_kb, jpeg_kb, clip_score, fid (default all; a metric that cannot be computed is reported as
  skipped with the reason). FID compares with the real images of --fid-reference (statistics
  cached there) using pytorch-fid's Inception weights (--fid-weights) or deterministic hash
  weights (--fid-hash-weights). CLIP score (torchmetrics' definition) uses a transformers
  CLIPModel folder or hub id (--clip-model, e.g. openai/clip-vit-large-patch14). Writes
  DIR/results.json and DIR/grid.png.";

pub fn run(args: &[String]) -> Result<()> {
    let (mut config, mut out, mut prompts) = (None, None, None);
    let mut loras: Vec<PathBuf> = Vec::new();
    let (mut per_prompt, mut batch, mut grid) = (1usize, 4usize, 4usize);
    let mut metrics = Metric::ALL.to_vec();
    let (mut fid_reference, mut fid_weights, mut fid_hash) = (None, None, false);
    let mut clip_model = None;
    let mut f = ril::args::Flags::new(args, USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--config" => config = Some(PathBuf::from(f.value(flag)?)),
            "--lora" => loras.push(f.value(flag)?.into()),
            "--prompts" => prompts = Some(PathBuf::from(f.value(flag)?)),
            "--images-per-prompt" => per_prompt = f.parse(flag)?,
            "--batch" => batch = f.parse(flag)?,
            "--grid-prompts" => grid = f.parse(flag)?,
            "--metrics" => metrics = Metric::parse_list(&f.value(flag)?)?,
            "--out" => out = Some(PathBuf::from(f.value(flag)?)),
            "--fid-reference" => fid_reference = Some(PathBuf::from(f.value(flag)?)),
            "--fid-weights" => fid_weights = Some(PathBuf::from(f.value(flag)?)),
            "--fid-hash-weights" => fid_hash = true,
            "--clip-model" => clip_model = Some(f.value(flag)?),
            other => return Err(f.unknown(other)),
        }
    }
    let config =
        TrainConfig::from_file(&config.with_context(|| format!("--config is required\n{USAGE}"))?)?;
    let out = out.with_context(|| format!("--out is required\n{USAGE}"))?;
    if per_prompt == 0 || batch == 0 {
        bail!("--images-per-prompt and --batch must be ≥ 1");
    }
    let prompts = read_prompts(prompts.as_ref().unwrap_or(&config.prompts.eval))?;
    let s = &config.sampling;
    let spec = EvalSpec {
        prompts,
        images_per_prompt: per_prompt,
        seed: config.seed,
        steps: s.steps,
        guidance: s.guidance,
        height: s.height,
        width: s.width,
        batch_size: batch,
        metrics,
        grid_prompts: grid,
        fid: match (fid_reference, &fid_weights, fid_hash) {
            (None, _, _) => None,
            (Some(_), None, false) => {
                bail!("--fid-reference needs --fid-weights FILE or --fid-hash-weights")
            }
            (Some(reference), w, _) => Some(ril_metrics::eval::FidSpec {
                reference,
                weights: w.clone(),
            }),
        },
        clip_model,
    };
    match config.model.backend {
        sd_model::backend::BackendKind::Cuda => eval_cuda(&config, &loras, &spec, &out),
        sd_model::backend::BackendKind::Cpu => {
            eval::<sd_model::backend::Cpu>(&config, &loras, &spec, &out, &Default::default())
        }
    }
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

#[cfg(feature = "cuda-base")]
fn eval_cuda(
    config: &TrainConfig,
    loras: &[PathBuf],
    spec: &EvalSpec,
    out: &std::path::Path,
) -> Result<()> {
    eval::<sd_model::backend::Cuda>(config, loras, spec, out, &sd_model::backend::cuda_device()?)
}

#[cfg(not(feature = "cuda-base"))]
fn eval_cuda(_: &TrainConfig, _: &[PathBuf], _: &EvalSpec, _: &std::path::Path) -> Result<()> {
    bail!("this ril was built without CUDA: rebuild with `--features cuda`")
}

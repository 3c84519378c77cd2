//! `ril judge`: trains the toy world's judge (an attribute classifier, toy_shapes::judge) from a
//! TOML config and measures its accuracy on held-out images or on a labelled image folder.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use sd_model::backend::{Cpu, CpuAutodiff};
use toy_shapes::folder::ImageFolder;
use toy_shapes::judge::{Judge, TrainConfig, accuracy, evaluate, train};

/// Trains and evaluates the toy world's judge.
#[derive(Debug, Clone, clap::Args)]
pub struct JudgeArgs {
    #[command(subcommand)]
    pub command: JudgeCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum JudgeCommand {
    Train(JudgeTrainArgs),
    Eval(JudgeEvalArgs),
    Pipeline(JudgePipelineArgs),
}

/// Judges how well a pipeline's images follow their captions.
///
/// Samples one image for each single-object caption 0..COUNT of the held-out stream of --seed
/// (DDIM, eta 0; each image from its own seeded latents), and prints the judge's accuracy per
/// attribute on them beside its accuracy on the real images of the same items and chance.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct JudgePipelineArgs {
    /// A diffusers pipeline folder (e.g. data/toy/pipeline).
    #[arg(long, value_name = "DIR", value_parser = crate::cli::text())]
    pub model: String,
    /// A judge folder (e.g. data/toy/judge).
    #[arg(long, value_name = "DIR")]
    pub judge: PathBuf,
    /// The held-out stream's seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Captions to sample.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = crate::cli::at_least_one())]
    pub count: usize,
    /// Classifier-free guidance scale.
    #[arg(long, value_name = "G", default_value_t = 7.5)]
    pub guidance: f64,
    /// DDIM steps.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = crate::cli::at_least_one())]
    pub steps: usize,
    /// Also write the first images with their captions as a grid (PNG).
    #[arg(long, value_name = "FILE")]
    pub grid: Option<PathBuf>,
    /// Images in the grid.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub grid_count: usize,
    /// Also write the verdicts as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// Trains a judge on the single-object train stream (CPU) and evaluates it on the held-out one.
///
/// Writes DIR/model.safetensors, config.json (the architecture), train.toml (a copy of
/// --config) and heldout.json (the held-out accuracy counts).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct JudgeTrainArgs {
    /// The training config (TOML: seed, steps, batch_size, lr, weight_decay, image_size,
    /// eval_seed, eval_count), e.g. configs/toy/judge.toml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The judge folder to write (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// Prints a judge's accuracy per attribute (and each attribute's chance level).
///
/// Without --images: on items 0..COUNT of the single-object held-out stream of --seed. With
/// --images: on an imagefolder whose lines have single-object `labels` (e.g. generated images
/// with their captions' labels); lines with two objects are skipped and counted.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct JudgeEvalArgs {
    /// A judge folder (written by `ril judge train`).
    #[arg(long, value_name = "DIR")]
    pub judge: PathBuf,
    /// An imagefolder with labels to judge instead of the held-out stream.
    #[arg(long, value_name = "FOLDER")]
    pub images: Option<PathBuf>,
    /// The held-out stream's seed (without --images).
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Held-out images to judge (without --images).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = crate::cli::at_least_one())]
    pub count: usize,
}

pub fn run(a: &JudgeArgs) -> Result<()> {
    match &a.command {
        JudgeCommand::Train(t) => run_train(t),
        JudgeCommand::Eval(e) => run_eval(e),
        JudgeCommand::Pipeline(p) => run_pipeline(p),
    }
}

fn run_train(a: &JudgeTrainArgs) -> Result<()> {
    let config = TrainConfig::from_file(&a.config).context("--config")?;
    // Refused now rather than after the training.
    crate::cli::refuse_occupied(&a.out)?;
    let device = Default::default();
    let start = Instant::now();
    let report = train::<CpuAutodiff>(
        &config,
        &device,
        crate::cli::step_printer(config.steps, "loss"),
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let acc = evaluate(&report.judge, config.eval_seed, config.eval_count, &device)?;
    let heldout = serde_json::json!({
        "split": "heldout",
        "objects": 1,
        "seed": config.eval_seed,
        "count": config.eval_count,
        "accuracy": acc,
    });
    let toml_bytes =
        std::fs::read(&a.config).with_context(|| format!("cannot read {}", a.config.display()))?;
    report
        .judge
        .save(
            &a.out,
            &[
                ("train.toml", toml_bytes),
                ("heldout.json", serde_json::to_vec_pretty(&heldout)?),
            ],
        )
        .context("--out")?;
    println!(
        "{}: trained in {seconds:.0} s ({} steps); held-out accuracy on {} images (seed {}):\n{acc}",
        a.out.display(),
        config.steps,
        acc.n,
        config.eval_seed
    );
    Ok(())
}

fn run_eval(a: &JudgeEvalArgs) -> Result<()> {
    let device = Default::default();
    let judge = Judge::<Cpu>::load(&a.judge, &device).context("--judge")?;
    let Some(dir) = &a.images else {
        let acc = evaluate(&judge, a.seed, a.count, &device)?;
        println!(
            "{}: held-out accuracy on {} images (seed {}):\n{acc}",
            a.judge.display(),
            acc.n,
            a.seed
        );
        return Ok(());
    };
    let folder = ImageFolder::open(dir).context("--images")?;
    let metadata = dir.join(toy_shapes::folder::METADATA);
    let (mut images, mut truth, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    for item in &folder.items {
        let Some(labels) = &item.labels else {
            bail!(
                "--images: {}:{}: no `labels` to judge against",
                metadata.display(),
                item.line
            );
        };
        if labels.objects.len() != 1 {
            skipped += 1;
            continue;
        }
        images.push(item.load_image().context("--images")?);
        truth.push(labels.clone());
    }
    if truth.is_empty() {
        bail!(
            "--images: {}: no single-object item to judge",
            metadata.display()
        );
    }
    let predictions = judge.predict_images(&images, &device);
    let acc = accuracy(&predictions, &truth).map_err(anyhow::Error::msg)?;
    println!(
        "{}: accuracy on {} images of {} ({skipped} with two objects skipped):\n{acc}",
        a.judge.display(),
        acc.n,
        dir.display()
    );
    Ok(())
}

fn run_pipeline(a: &JudgePipelineArgs) -> Result<()> {
    if !a.guidance.is_finite() {
        bail!("--guidance must be finite, got {}", a.guidance);
    }
    let device = Default::default();
    let judge = Judge::<Cpu>::load(&a.judge, &device).context("--judge")?;
    let dir = sd_model::hub::resolve_model(&a.model)?;
    let sd = sd_model::pipeline::StableDiffusion::<Cpu>::load(&dir, &device).context("--model")?;
    let spec = pretrain::follow::FollowSpec {
        seed: a.seed,
        count: a.count,
        guidance: a.guidance,
        steps: a.steps,
        ..Default::default()
    };
    let bar = indicatif::ProgressBar::new(a.count as u64);
    let (verdict, cells) = pretrain::follow::follow(&sd, &judge, spec, &device, |done, _| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    println!(
        "{}: caption following on {} held-out captions (seed {}, guidance {}, {} DDIM steps), judged by {}:\n{verdict}",
        a.model,
        a.count,
        a.seed,
        a.guidance,
        a.steps,
        a.judge.display()
    );
    if let Some(path) = &a.grid {
        let n = a.grid_count.min(cells.len());
        let grid = ril_metrics::figure::captioned_grid(&cells[..n], 4, 2);
        sd_model::pipeline::save_png(&grid, path)?;
        println!("grid: {}", path.display());
    }
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&verdict)? + "\n";
        lora_group::io::write_atomic(path, text.as_bytes())?;
        println!("verdicts: {}", path.display());
    }
    Ok(())
}

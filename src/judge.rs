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
    }
}

fn run_train(a: &JudgeTrainArgs) -> Result<()> {
    let config = TrainConfig::from_file(&a.config).context("--config")?;
    // Refused now rather than after the training.
    if a.out.exists() && std::fs::read_dir(&a.out).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "--out {}: exists and is not an empty folder",
            a.out.display()
        );
    }
    let device = Default::default();
    let start = Instant::now();
    let every = (config.steps / 20).max(1);
    let report = train::<CpuAutodiff>(&config, &device, |step, loss| {
        if step % every == 0 || step + 1 == config.steps {
            eprintln!(
                "step {:>5}/{}  loss {loss:.4}  {:.0} s",
                step + 1,
                config.steps,
                start.elapsed().as_secs_f64()
            );
        }
    })?;
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

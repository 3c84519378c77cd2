//! report.html of a `ril train` run, beside its metrics.jsonl: per task its reward, steps, the
//! mean training reward of its first and last epoch, the last epoch's loss and distillation
//! term and the time it took; the training-reward curve (RUN/plots/train-reward.svg, inline);
//! and the run's configuration, in one self-contained page (ril_metrics::html).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rid_trainer::TrainConfig;
use ril_metrics::html::{markdown, page, svg_figure, text_details};

/// One epoch's lines of metrics.jsonl, summed up.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct EpochSums {
    reward: f64,
    loss: f64,
    distill: f64,
    lines: usize,
}

/// One task's lines of metrics.jsonl.
#[derive(Debug, Default, Clone, PartialEq)]
struct TaskLog {
    seconds: f64,
    epochs: BTreeMap<u64, EpochSums>,
    /// The training reward of each step: (the line's position in the log, reward).
    curve: Vec<(f64, f64)>,
}

impl TaskLog {
    /// The mean of `field` over the first (or the last) epoch's steps.
    fn epoch_mean(&self, last: bool, field: fn(&EpochSums) -> f64) -> Option<f64> {
        let (_, e) = if last {
            self.epochs.iter().next_back()?
        } else {
            self.epochs.iter().next()?
        };
        Some(field(e) / e.lines as f64)
    }
}

/// Reads RUN/metrics.jsonl: each task's lines, summed up per epoch, and its reward curve. A
/// line that does not parse is an error naming the line.
fn read_log(path: &Path) -> Result<BTreeMap<usize, TaskLog>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut tasks: BTreeMap<usize, TaskLog> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a JSON object", path.display(), i + 1))?;
        let field = |name: &str| {
            v[name]
                .as_f64()
                .with_context(|| format!("{} line {}: no number `{name}`", path.display(), i + 1))
        };
        let (reward, loss) = (field("reward_mean")?, field("loss")?);
        let t = tasks.entry(field("task")? as usize).or_default();
        t.seconds += v["time_s"].as_f64().unwrap_or(0.0);
        t.curve.push((i as f64, reward));
        let e = t.epochs.entry(field("epoch")? as u64).or_default();
        e.reward += reward;
        e.loss += loss;
        e.distill += v["distill"].as_f64().unwrap_or(0.0);
        e.lines += 1;
    }
    Ok(tasks)
}

/// Writes RUN/plots/train-reward.svg and RUN/report.html for the finished run of `config` in
/// `run`; returns the report's path.
pub fn write(run: &Path, config: &TrainConfig) -> Result<PathBuf> {
    let tasks = read_log(&run.join("metrics.jsonl"))?;
    let mut table = String::from(
        "| task | name | reward | steps | reward, first epoch | reward, last epoch | loss, last epoch | distill, last epoch | time (s) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for (k, task) in config.tasks.iter().enumerate() {
        let log = tasks.get(&k).cloned().unwrap_or_default();
        let _ = writeln!(
            table,
            "| {k} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            task.name,
            task.reward.name(),
            log.curve.len(),
            num(log.epoch_mean(false, |e| e.reward)),
            num(log.epoch_mean(true, |e| e.reward)),
            num(log.epoch_mean(true, |e| e.loss)),
            num(log.epoch_mean(true, |e| e.distill)),
            log.seconds
        );
    }
    let mut sections = vec![(
        format!(
            "Tasks ({:?}; mean training reward of each epoch's steps, from metrics.jsonl)",
            config.method.kind
        ),
        markdown(&table),
    )];
    let plots = run.join("plots");
    std::fs::create_dir_all(&plots)
        .with_context(|| format!("cannot create {}", plots.display()))?;
    let svg = plots.join("train-reward.svg");
    let series: Vec<(String, Vec<(f64, f64)>)> = config
        .tasks
        .iter()
        .enumerate()
        .map(|(k, t)| {
            (
                format!("task {k} ({})", t.name),
                tasks.get(&k).map(|t| t.curve.clone()).unwrap_or_default(),
            )
        })
        .collect();
    if ril_metrics::plot::chart(
        &svg,
        "training reward of the current task, per step",
        "optimiser step (all tasks)",
        "reward",
        &series,
    )? {
        sections.push((
            "Training reward".to_string(),
            svg_figure(&svg, "the mean reward of each step's batch")?,
        ));
    }
    sections.push((
        "Configuration".to_string(),
        text_details(
            &run.join("config.json"),
            "config.json (its hash and the config)",
        )?,
    ));
    let html = page(&format!("ril: run {}", run.display()), &sections);
    let path = run.join("report.html");
    sd_model::write_atomic(&path, html.as_bytes())?;
    Ok(path)
}

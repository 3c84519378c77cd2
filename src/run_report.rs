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

/// One task's lines of metrics.jsonl, summed up.
#[derive(Debug, Default, Clone, PartialEq)]
struct TaskLog {
    steps: usize,
    seconds: f64,
    /// Per epoch: (reward sum, loss sum, distillation sum, lines).
    epochs: BTreeMap<u64, (f64, f64, f64, usize)>,
}

impl TaskLog {
    fn epoch_mean(&self, last: bool, field: usize) -> Option<f64> {
        let (_, e) = if last {
            self.epochs.iter().next_back()?
        } else {
            self.epochs.iter().next()?
        };
        let sum = [e.0, e.1, e.2][field];
        Some(sum / e.3 as f64)
    }
}

/// Each task's training reward per step: (the line's position in the log, reward).
type Curves = BTreeMap<usize, Vec<(f64, f64)>>;

/// Reads RUN/metrics.jsonl: each task's summary and the training reward per step across tasks.
/// A line that does not parse is an error naming the line.
fn read_log(path: &Path) -> Result<(BTreeMap<usize, TaskLog>, Curves)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut tasks: BTreeMap<usize, TaskLog> = BTreeMap::new();
    let mut curves: Curves = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not a JSON object", path.display(), i + 1))?;
        let field = |name: &str| {
            v[name]
                .as_f64()
                .with_context(|| format!("{} line {}: no number `{name}`", path.display(), i + 1))
        };
        let task = field("task")? as usize;
        let (reward, loss) = (field("reward_mean")?, field("loss")?);
        let t = tasks.entry(task).or_default();
        t.steps += 1;
        t.seconds += v["time_s"].as_f64().unwrap_or(0.0);
        let e = t.epochs.entry(field("epoch")? as u64).or_default();
        e.0 += reward;
        e.1 += loss;
        e.2 += v["distill"].as_f64().unwrap_or(0.0);
        e.3 += 1;
        curves.entry(task).or_default().push((i as f64, reward));
    }
    Ok((tasks, curves))
}

/// Writes RUN/plots/train-reward.svg and RUN/report.html for the finished run of `config` in
/// `run`; returns the report's path.
pub fn write(run: &Path, config: &TrainConfig) -> Result<PathBuf> {
    let (tasks, curves) = read_log(&run.join("metrics.jsonl"))?;
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
            log.steps,
            num(log.epoch_mean(false, 0)),
            num(log.epoch_mean(true, 0)),
            num(log.epoch_mean(true, 1)),
            num(log.epoch_mean(true, 2)),
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
                curves.get(&k).cloned().unwrap_or_default(),
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

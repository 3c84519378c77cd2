//! What a grid runs, as pure functions of the presets' configs: the cells (method × order), the
//! config of each cell and of the single-reward and joint models, the dry-run lines and the Slurm
//! job script.

use std::path::Path;

use anyhow::{Context, Result};
use rid_trainer::TrainConfig;
use rid_trainer::config::{Method, RewardKind};
use sd_model::backend::BackendKind;

use crate::cli::{Preset, name_of};

/// The six orders of aesthetic (A), HPS (H) and compressibility (C).
pub const ORDERS: [&str; 6] = ["AHC", "ACH", "HAC", "HCA", "CAH", "CHA"];

/// The methods of the grid, in the order the grid runs them.
pub const METHODS: [Method; 2] = [Method::Baseline, Method::Rid];

/// The name of a method in cell names and on the command line.
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Rid => "rid",
        Method::Baseline => "baseline",
    }
}

/// The letter of a reward in an order.
pub fn letter(k: RewardKind) -> char {
    match k {
        RewardKind::Aesthetic => 'A',
        RewardKind::Hps => 'H',
        RewardKind::Compress => 'C',
        RewardKind::Joint => 'J',
    }
}

/// One cell of the grid: a method trained on the tasks in one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub method: Method,
    pub order: &'static str,
}

impl Cell {
    /// METHOD-ORDER, the cell's folder and row name (e.g. rid-AHC).
    pub fn id(&self) -> String {
        format!("{}-{}", method_name(self.method), self.order)
    }
}

/// Every cell of `all-orders`: baseline in every order, then RID in every order.
pub fn all_cells() -> Vec<Cell> {
    METHODS
        .iter()
        .flat_map(|&method| ORDERS.iter().map(move |&order| Cell { method, order }))
        .collect()
}

/// The preset's config of `method` under the repository root `root`.
pub fn base_config(root: &Path, preset: Preset, method: Method) -> Result<TrainConfig> {
    let name = match (preset, method) {
        (Preset::Tiny, Method::Rid) => "configs/tiny/rid-ahc.toml",
        (Preset::Tiny, Method::Baseline) => "configs/tiny/baseline-ahc.toml",
        (Preset::Toy, Method::Rid) => "configs/toy/rid.toml",
        (Preset::Toy, Method::Baseline) => "configs/toy/baseline.toml",
        (Preset::Paper, Method::Rid) => "configs/paper/rid.toml",
        (Preset::Paper, Method::Baseline) => "configs/paper/baseline.toml",
    };
    TrainConfig::from_file(&root.join(name))
}

/// The config of one cell: the preset's tasks in the cell's order, output in `dir`/run.
pub fn cell_config(root: &Path, preset: Preset, cell: Cell, dir: &Path) -> Result<TrainConfig> {
    let mut c = base_config(root, preset, cell.method)?;
    let mut tasks = Vec::new();
    for l in cell.order.chars() {
        let t = c
            .tasks
            .iter()
            .find(|t| letter(t.reward) == l)
            .with_context(|| {
                format!(
                    "order {}: no task with reward {l} in the preset",
                    cell.order
                )
            })?;
        tasks.push(t.clone());
    }
    c.tasks = tasks;
    c.output = dir.join("run");
    Ok(c)
}

/// The config of a one-task baseline run, output in `dir`/run: `letter_` A, H or C (a
/// single-reward model for the soup) or J (joint tuning, 0.01 A + 2 H + C, on the first task's
/// settings).
pub fn single_config(
    root: &Path,
    preset: Preset,
    letter_: char,
    dir: &Path,
) -> Result<TrainConfig> {
    let mut config = base_config(root, preset, Method::Baseline)?;
    let mut task = config.tasks[0].clone();
    if letter_ == 'J' {
        task.name = "joint".into();
        task.reward = RewardKind::Joint;
        // The paper tunes the joint reward for 20 epochs; the tiny preset keeps its own length.
        if preset == Preset::Paper {
            task.epochs = 20;
        }
    } else {
        task = config
            .tasks
            .iter()
            .find(|t| letter(t.reward) == letter_)
            .with_context(|| format!("no task with reward {letter_} in the preset"))?
            .clone();
    }
    config.tasks = vec![task];
    config.output = dir.join("run");
    Ok(config)
}

/// Optimiser steps of a whole run (every task's epochs × steps per epoch).
pub fn optimiser_steps(c: &TrainConfig) -> usize {
    c.tasks.iter().map(|t| t.epochs * t.steps_per_epoch).sum()
}

/// The dry-run line of one cell.
pub fn dry_run_line(cell: Cell, c: &TrainConfig) -> String {
    run_line(&cell.id(), c)
}

/// The dry-run line of the grid's run `id` (a cell, `single-A`, `joint`) with config `c`.
pub fn run_line(id: &str, c: &TrainConfig) -> String {
    let images: usize = c
        .tasks
        .iter()
        .map(|t| t.epochs * t.steps_per_epoch * t.batch_size)
        .sum();
    format!(
        "  {}: {} tasks [{}], {} optimiser steps, {images} training images, {} DDIM steps each, {}x{}",
        id,
        c.tasks.len(),
        c.tasks
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(" -> "),
        optimiser_steps(c),
        c.sampling.steps,
        c.sampling.width,
        c.sampling.height
    )
}

/// The grid as a Slurm job array: one cell per array task, all sharing `out`, each running
/// `cargo xtask experiment order` in the repository `root`. It asks for a GPU (`--gres=gpu:1`)
/// only when `backend` runs on one (a CPU-only cluster refuses the gres otherwise); `sbatch`
/// are the user's own `#SBATCH` options (partition, account, time, CPUs, memory), after ril's.
pub fn slurm_script(
    cells: &[Cell],
    preset: Preset,
    backend: BackendKind,
    sbatch: &[String],
    out: &Path,
    root: &Path,
) -> String {
    let list: Vec<String> = cells
        .iter()
        .map(|c| format!("{}:{}", method_name(c.method), c.order))
        .collect();
    let mut directives = vec![
        "--job-name=ril-grid".to_string(),
        format!("--array=0-{}", list.len() - 1),
    ];
    if backend.on_gpu() {
        directives.push("--gres=gpu:1".into());
    }
    directives.push(format!("--output={}/slurm-%A_%a.log", out.display()));
    directives.extend(sbatch.iter().cloned());
    let directives: String = directives
        .iter()
        .map(|d| format!("#SBATCH {d}\n"))
        .collect();
    format!(
        "#!/usr/bin/env bash\n\
         # The grid as a Slurm job array: one cell per array task, all sharing {out}.\n\
         # Submit: sbatch {out}/slurm.sh; then gather: cargo xtask experiment all-orders --preset {preset} --out {out}\n\
         {directives}\
         set -euo pipefail\nCELLS=({cells})\nIFS=: read -r METHOD ORDER <<< \"${{CELLS[$SLURM_ARRAY_TASK_ID]}}\"\n\
         cd {root}\ncargo xtask experiment order \"$ORDER\" --method \"$METHOD\" --preset {preset} --out {out}\n",
        out = out.display(),
        preset = name_of(&preset),
        cells = list.join(" "),
        root = root.display(),
    )
}

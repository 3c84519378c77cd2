//! What is left of a run, read from its folder: whether training is finished, interrupted (resume
//! it) or not started, and which `ril` commands a cell still needs (a finished cell needs none).

use std::path::{Path, PathBuf};
use std::process::Command;

use rid_trainer::TrainConfig;
use rid_trainer::runner::task_dir;

/// Where a run's training stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Training {
    /// Every task wrote its LoRA file and a checkpoint marked done.
    Done,
    /// The run folder holds this run (`config.json`) but a task is unfinished: `ril train
    /// --resume` continues from its checkpoint.
    Interrupted,
    /// Nothing written yet.
    NotStarted,
}

/// Whether task `k` of `config` is finished: its `lora.safetensors` exists and its checkpoint
/// says done (the trainer writes the checkpoint after the LoRA and EMA files, so a LoRA file
/// alone may be from a run killed in between).
pub fn task_done(config: &TrainConfig, k: usize) -> bool {
    let dir = task_dir(&config.output, k, &config.tasks[k].name);
    dir.join("lora.safetensors").is_file()
        && rid_trainer::checkpoint::load::<sd_model::backend::Cpu>(
            &dir.join("checkpoint.safetensors"),
            &Default::default(),
        )
        .map(|c| c.state.done)
        .unwrap_or(false)
}

/// Where the training of `config` stands.
pub fn training(config: &TrainConfig) -> Training {
    if (0..config.tasks.len()).all(|k| task_done(config, k)) {
        Training::Done
    } else if config.output.join("config.json").is_file() {
        Training::Interrupted
    } else {
        Training::NotStarted
    }
}

/// `ril train --config CFG` (with `--resume` for an interrupted run), or None when training is
/// done.
pub fn train_command(ril: &Path, config: &TrainConfig, cfg_path: &Path) -> Option<Command> {
    let state = training(config);
    if state == Training::Done {
        return None;
    }
    let mut cmd = Command::new(ril);
    cmd.args(["train", "--config"]).arg(cfg_path);
    if state == Training::Interrupted {
        cmd.arg("--resume");
    }
    Some(cmd)
}

/// `ril eval --config CFG --out DIR [--lora FILE ...]`, or None when DIR/results.json exists.
pub fn eval_command(ril: &Path, cfg_path: &Path, out: &Path, loras: &[PathBuf]) -> Option<Command> {
    if out.join("results.json").is_file() {
        return None;
    }
    let mut cmd = Command::new(ril);
    cmd.args(["eval", "--config"])
        .arg(cfg_path)
        .arg("--out")
        .arg(out);
    for l in loras {
        cmd.arg("--lora").arg(l);
    }
    Some(cmd)
}

/// The evaluation folder of stage `k` (1-based: the model after task k) of a cell in `dir`.
pub fn stage_dir(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("eval-stage-{k}"))
}

/// The LoRA file of every task of `config`, in task order.
pub fn task_loras(config: &TrainConfig) -> Vec<PathBuf> {
    config
        .tasks
        .iter()
        .enumerate()
        .map(|(k, t)| task_dir(&config.output, k, &t.name).join("lora.safetensors"))
        .collect()
}

/// The `ril` commands a cell in `dir` (config `config` written to `cfg_path`) still needs, in
/// order: training if unfinished, the base model's evaluation into `base` if missing, and each
/// stage's evaluation whose results are missing (stage k with the first k tasks' LoRA files).
pub fn cell_commands(
    ril: &Path,
    config: &TrainConfig,
    cfg_path: &Path,
    dir: &Path,
    base: &Path,
) -> Vec<Command> {
    let loras = task_loras(config);
    let mut cmds: Vec<Command> = train_command(ril, config, cfg_path).into_iter().collect();
    cmds.extend(eval_command(ril, cfg_path, base, &[]));
    for k in 1..=config.tasks.len() {
        cmds.extend(eval_command(ril, cfg_path, &stage_dir(dir, k), &loras[..k]));
    }
    cmds
}

/// A cell's line in the grid status: done (its table is written), started (training began) or
/// pending.
pub fn cell_status(dir: &Path) -> &'static str {
    if dir.join("table2.md").is_file() {
        "done"
    } else if dir.join("run/config.json").is_file() {
        "started"
    } else {
        "pending"
    }
}

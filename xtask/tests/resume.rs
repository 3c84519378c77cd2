//! Resume detection on run folders laid out as `ril train` leaves them: a finished cell needs no
//! `ril` command, a half-done one resumes training (`--resume`) and evaluates only what is
//! missing, a fresh one trains from scratch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rid_trainer::TrainConfig;
use rid_trainer::checkpoint::CheckpointState;
use rid_trainer::config::Method;
use xtask::cli::Preset;
use xtask::experiment::plan::{Cell, cell_config};
use xtask::experiment::resume::{
    Training, cell_commands, cell_status, task_loras, train_command, training,
};

const CELL: Cell = Cell {
    method: Method::Rid,
    order: "HCA",
};

fn config(dir: &Path) -> TrainConfig {
    cell_config(&xtask::root(), Preset::Tiny, CELL, dir).unwrap()
}

/// What `ril train` leaves in task k's folder: the LoRA file, then the checkpoint (`done` once
/// the task is finished). The tensors do not matter to resume detection.
fn write_task(c: &TrainConfig, k: usize, lora: bool, done: bool) {
    let dir = task_loras(c)[k].parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    if lora {
        std::fs::write(dir.join("lora.safetensors"), b"").unwrap();
    }
    let state = CheckpointState {
        task: k,
        step: if done { 4 } else { 1 },
        adam_step: 1,
        done,
        config_hash: c.hash(),
    };
    rid_trainer::checkpoint::save::<sd_model::backend::Cpu>(
        &dir.join("checkpoint.safetensors"),
        &state,
        &BTreeMap::new(),
    )
    .unwrap();
}

/// The marker `ril train` writes when it starts a run.
fn start_run(c: &TrainConfig) {
    std::fs::create_dir_all(&c.output).unwrap();
    std::fs::write(c.output.join("config.json"), b"{}").unwrap();
}

fn write_eval(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("results.json"), b"{}").unwrap();
}

fn args(cmd: &Command) -> Vec<String> {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

struct Cellar {
    dir: PathBuf,
    base: PathBuf,
    config: TrainConfig,
    cfg_path: PathBuf,
}

fn cellar(name: &str) -> Cellar {
    let grid = ril_testkit::scratch(&format!("xtask-resume-{name}"));
    let dir = grid.join(CELL.id());
    let config = config(&dir);
    Cellar {
        base: grid.join("eval-base"),
        cfg_path: dir.join("config.toml"),
        dir,
        config,
    }
}

fn commands(c: &Cellar) -> Vec<Vec<String>> {
    cell_commands(Path::new("ril"), &c.config, &c.cfg_path, &c.dir, &c.base)
        .iter()
        .map(args)
        .collect()
}

#[test]
fn a_fresh_cell_trains_without_resume_then_evaluates_every_stage() {
    let c = cellar("fresh");
    assert_eq!(training(&c.config), Training::NotStarted);
    let cmds = commands(&c);
    let cfg = c.cfg_path.display().to_string();
    assert_eq!(cmds[0], ["train", "--config", &cfg]);
    // Base model, then stage k with the first k tasks' LoRA files.
    assert_eq!(cmds.len(), 1 + 1 + 3);
    let loras: Vec<String> = task_loras(&c.config)
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        cmds[1],
        [
            "eval",
            "--config",
            &cfg,
            "--out",
            &c.base.display().to_string()
        ]
    );
    let stage3 = c.dir.join("eval-stage-3").display().to_string();
    assert_eq!(
        cmds[4],
        [
            "eval", "--config", &cfg, "--out", &stage3, "--lora", &loras[0], "--lora", &loras[1],
            "--lora", &loras[2],
        ]
    );
}

#[test]
fn a_finished_cell_is_skipped() {
    let c = cellar("finished");
    start_run(&c.config);
    for k in 0..3 {
        write_task(&c.config, k, true, true);
    }
    write_eval(&c.base);
    for k in 1..=3 {
        write_eval(&c.dir.join(format!("eval-stage-{k}")));
    }
    assert_eq!(training(&c.config), Training::Done);
    assert!(commands(&c).is_empty(), "{:?}", commands(&c));
}

#[test]
fn a_half_done_cell_resumes_and_evaluates_only_what_is_missing() {
    let c = cellar("half");
    start_run(&c.config);
    // Task 0 finished (and its stage evaluated), task 1 checkpointed mid-way, task 2 not begun.
    write_task(&c.config, 0, true, true);
    write_task(&c.config, 1, false, false);
    write_eval(&c.base);
    write_eval(&c.dir.join("eval-stage-1"));
    assert_eq!(training(&c.config), Training::Interrupted);
    let cmds = commands(&c);
    let cfg = c.cfg_path.display().to_string();
    assert_eq!(cmds[0], ["train", "--config", &cfg, "--resume"]);
    let outs: Vec<&str> = cmds[1..].iter().map(|a| a[4].as_str()).collect();
    let stage = |k: usize| c.dir.join(format!("eval-stage-{k}")).display().to_string();
    assert_eq!(outs, [stage(2), stage(3)]);
    assert_eq!(cell_status(&c.dir), "started");
}

#[test]
fn a_lora_file_without_a_finished_checkpoint_is_not_a_finished_task() {
    // The trainer writes lora.safetensors, then ema.safetensors, then the checkpoint marked done:
    // a run killed in between must resume, not be taken as finished.
    let c = cellar("killed-after-lora");
    start_run(&c.config);
    write_task(&c.config, 0, true, true);
    write_task(&c.config, 1, true, true);
    write_task(&c.config, 2, true, false);
    assert_eq!(training(&c.config), Training::Interrupted);
    let cmd = train_command(Path::new("ril"), &c.config, &c.cfg_path).expect("resume");
    assert_eq!(args(&cmd).last().map(String::as_str), Some("--resume"));
}

#[test]
fn the_status_line_follows_the_cells_files() {
    let c = cellar("status");
    assert_eq!(cell_status(&c.dir), "pending");
    start_run(&c.config);
    assert_eq!(cell_status(&c.dir), "started");
    std::fs::write(c.dir.join("table2.md"), b"").unwrap();
    assert_eq!(cell_status(&c.dir), "done");
}

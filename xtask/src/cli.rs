//! The command line of `cargo xtask` (clap derive): every subcommand and flag with its help, and
//! the closed choices (presets, methods, backends, orders, what to time, what to emit) as types
//! checked while parsing, so the code behind them never matches on strings.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rid_trainer::config::Method;
use sd_model::backend::BackendKind;

use crate::experiment::plan::{METHODS, ORDERS, method_name};

/// Project automation as plain Rust: CI, the benchmarks against PyTorch and the paper's
/// experiment grid.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run .ci/run, the one definition of what CI checks (see that script for its steps).
    Ci,
    /// Time sampling and training steps of the release `ril`, optionally against PyTorch.
    #[command(after_help = "Writes bench/ril-PRESET-BACKEND-REWARD.json, \
        bench/pytorch-PRESET-BACKEND-REWARD.json (with --compare) and bench/report-PRESET-BACKEND-REWARD.md.")]
    Bench(BenchArgs),
    /// The paper's grid: every order of aesthetic (A), HPS (H) and compressibility (C) ×
    /// {baseline, RID}, trained with `ril train`, evaluated after every task, tabulated.
    #[command(after_help = EXPERIMENT_HELP)]
    Experiment(ExperimentArgs),
}

const EXPERIMENT_HELP: &str = "\
Cells are METHOD-ORDER (e.g. rid-AHC). Each cell trains the order with configs/PRESET's values
(tiny: configs/tiny/*-ahc.toml), evaluates the base model once and the model after every task,
and writes DIR/METHOD-ORDER/table2.{md,csv}; the grid writes DIR/results.json and
DIR/table3.{md,csv} (final stage of every cell, forgetting in parentheses, averages per method,
then the base, the three single-reward baseline models, their soup (1/3 each) and joint tuning)
and DIR/table6.md (joint tuning vs RID's average). A finished cell is skipped, an interrupted one
resumes from its checkpoint.

--emit slurm writes DIR/slurm.sh, a job array with one cell per task (each runs
`cargo xtask experiment order ...` on the shared DIR; `--gres=gpu:1` only when the preset's
backend is cuda or tch-cuda; --sbatch adds the cluster's own options); afterwards `all-orders --out DIR` adds
the single-reward, soup and joint models (finished cells are skipped) and writes the tables.";

/// `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to time.
    #[arg(value_enum, default_value_t = What::All)]
    pub what: What,
    /// The shapes to time.
    #[arg(long, value_enum, default_value_t = BenchPreset::Tiny)]
    pub preset: BenchPreset,
    /// Backend of both sides (cuda builds `ril` with --features cuda).
    #[arg(long, default_value = "cpu", value_parser = choice(&BackendKind::ALL, BackendKind::name))]
    pub backend: BackendKind,
    /// Threads of both sides (RAYON_NUM_THREADS for ril, torch's thread count for PyTorch).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: u64,
    /// Timed runs after one warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub reps: u64,
    /// Override the preset's DDIM steps (both sides).
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Override the preset's batch (both sides).
    #[arg(long, value_name = "N")]
    pub batch: Option<u64>,
    /// The training steps' reward (both sides): compress, or aesthetic (CLIP ViT-L/14 + the
    /// LAION MLP) or hps (open_clip ViT-H-14) with random weights at their real shapes.
    #[arg(long, default_value = "compress", value_parser = ["compress", "aesthetic", "hps"])]
    pub reward: String,
    /// Gradient checkpointing of the last step, decode and reward (both sides).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Also run tools/bench/bench.py (needs torch, diffusers, peft, kornia) and print the ratio
    /// ril / PyTorch.
    #[arg(long)]
    pub compare: bool,
    /// Python interpreter of --compare [default: $RIL_PYTHON, else python3].
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

/// What `cargo xtask bench` times (`ril bench --what`, bench.py's `--what`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// A UNet forward with CFG, a VAE decode and a DDIM sampling run.
    Sample,
    /// One baseline and one RID training step.
    TrainStep,
    /// Both.
    All,
}

/// The shapes `cargo xtask bench` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchPreset {
    /// The parity fixture pipeline: batch 2, 64x64, 10 DDIM steps.
    Tiny,
    /// SD 1.5 shapes with random weights: batch 1, 512x512, 50 DDIM steps.
    Sd15,
}

/// `cargo xtask experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    #[command(subcommand)]
    pub command: ExperimentCommand,
}

#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    /// Every order × {baseline, RID}, then the single-reward models, their soup and joint
    /// tuning, and the tables.
    AllOrders(GridArgs),
    /// One cell of the grid: ORDER trained with --method.
    Order(OrderArgs),
    /// Re-render the tables of DIR from its cells' evaluation results.
    Report {
        /// A grid's output folder.
        dir: PathBuf,
    },
}

/// The flags `all-orders` and `order` share.
#[derive(Debug, Args)]
pub struct GridArgs {
    /// The configs to run.
    #[arg(long, value_enum, default_value_t = Preset::Toy)]
    pub preset: Preset,
    /// Output folder [default: runs/grid-PRESET].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print each cell's plan (tasks, optimiser steps, training images, DDIM steps, size) and
    /// stop.
    #[arg(long)]
    pub dry_run: bool,
    /// Write a job script to DIR instead of running the cells.
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// With `--emit slurm`: one more `#SBATCH` line (repeatable), e.g.
    /// `--sbatch=--partition=gpu --sbatch=--time=04:00:00 --sbatch=--account=lab`.
    #[arg(long, value_name = "OPTION", requires = "emit", allow_hyphen_values = true,
          value_parser = sbatch_option)]
    pub sbatch: Vec<String>,
}

/// An sbatch option as it goes after `#SBATCH `: a flag (starting with `-`) on one line.
fn sbatch_option(s: &str) -> Result<String, String> {
    if !s.starts_with('-') || s.len() < 2 {
        return Err(format!(
            "{s:?} is not an sbatch option (they start with '-', e.g. --partition=gpu)"
        ));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(format!("{s:?} has a line break or control character"));
    }
    Ok(s.to_string())
}

/// `cargo xtask experiment order`.
#[derive(Debug, Args)]
pub struct OrderArgs {
    /// The order of the tasks: a permutation of A, H and C (any case).
    #[arg(value_parser = choice(&ORDERS, |o| o), ignore_case = true)]
    pub order: &'static str,
    /// The cell's method.
    #[arg(long, default_value = "rid", value_parser = choice(&METHODS, method_name))]
    pub method: Method,
    #[command(flatten)]
    pub grid: GridArgs,
}

/// The configs of an experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// configs/tiny: the random pipeline of the tests, on the CPU (minutes).
    Tiny,
    /// configs/toy: the toy world's base model, rewards and metrics, on the CPU (under an hour;
    /// the default).
    Toy,
    /// configs/paper: SD 1.5 with the paper's values (needs the weights and a GPU; release
    /// build).
    Paper,
}

/// What `--emit` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// DIR/slurm.sh: a Slurm job array with one cell per task.
    Slurm,
}

/// The name clap parses for `v` (and that xtask passes on to `ril` and bench.py).
pub fn name_of<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .expect("no variant is skipped")
        .get_name()
        .to_string()
}

/// A parser of one of `all`, named by `name` (help lists the names; an unknown one is an error
/// while parsing), for the types of other crates that cannot derive `ValueEnum`.
fn choice<T: Copy + Send + Sync + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(all.iter().map(|&t| name(t))).map(move |s| {
        *all.iter()
            .find(|&&t| name(t).eq_ignore_ascii_case(&s))
            .expect("PossibleValuesParser accepted only these names")
    })
}

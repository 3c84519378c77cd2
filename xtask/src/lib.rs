//! Project automation as plain Rust (`cargo xtask ...`): CI (`.ci/run`), the benchmarks against
//! PyTorch and the paper's experiment grid; a library so that tests reach the command line, the
//! grid's planning, resume detection and report rendering.

pub mod bench;
pub mod cargo;
pub mod cli;
pub mod experiment;
mod plots;

pub use cargo::{root, run_command};

use anyhow::Result;
use cli::{Cli, Command};

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Ci => cargo::run_ci(&root()),
        Command::Bench(args) => bench::run(&args),
        Command::Experiment(args) => experiment::run(args.command),
    }
}

//! Project automation as plain Rust (`cargo xtask ...`): the CI checks and the benchmarks against
//! PyTorch, and the paper's experiment grid.

mod bench;
mod experiment;
mod plots;

use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command>
  ci       run what .ci/run runs: fmt check, clippy (workspace, all targets, -D warnings),
           cargo check --features cuda, and the test command of README.md
  bench       time sampling and training steps (see `cargo xtask bench --help`)
  experiment  the paper's grid: all-orders | order AHC | report DIR (see --help)";

/// Cargo's target folder: $CARGO_TARGET_DIR (relative to the repository root) or ROOT/target.
pub fn target_dir() -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Runs `cmd`; a failure to start or a non-zero exit is an error naming the command.
pub fn run_command(cmd: &mut Command) -> Result<()> {
    let s = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !s.success() {
        bail!("{cmd:?} failed ({s})");
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("cannot run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => {
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            cargo(&["check", "--features", "cuda"])?;
            cargo(&["test", "--workspace"])
        }
        Some("bench") if args.iter().any(|a| a == "--help") => {
            println!("{}", bench::USAGE);
            Ok(())
        }
        Some("bench") => bench::run(&args[1..]),
        Some("experiment") if args.iter().any(|a| a == "--help") => {
            println!("{}", experiment::USAGE);
            Ok(())
        }
        Some("experiment") => experiment::main(&args[1..]),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other}\n{USAGE}"),
    }
}

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

/// Variables `cargo run` sets for the program it runs (besides `CARGO_PKG_*`; the Cargo book's
/// "Environment variables Cargo sets for crates"). Cargo compares the variables a build script
/// declared with `rerun-if-env-changed` against its own environment: ring's build script
/// declares CARGO_MANIFEST_DIR, CARGO_PKG_NAME, CARGO_PKG_VERSION_* and more, so a cargo started
/// with xtask's values reruns ring's build script and rebuilds ring, rustls, ureq, hf-hub and
/// every workspace crate above them; the caller's next `cargo` (without them) then rebuilds them
/// again.
const SET_BY_CARGO_RUN: [&str; 7] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
];

/// `program` with the variables `cargo run` set for xtask removed from its environment, so that
/// a cargo it starts sees the environment of the shell that ran `cargo xtask`.
pub fn caller_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("CARGO_PKG_") || SET_BY_CARGO_RUN.contains(&n.as_ref()) {
            cmd.env_remove(&name);
        }
    }
    cmd
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
    let status = caller_command(env!("CARGO"))
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

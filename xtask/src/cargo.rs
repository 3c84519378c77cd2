//! Running cargo, `.ci/run` and the `ril` binary from inside `cargo xtask` with the environment
//! of the shell that ran `cargo xtask`, not the one `cargo run` gave xtask, so that the `ril`
//! build xtask starts reuses what the caller's own builds compiled.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sd_model::backend::BackendKind;

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

/// Whether `cargo run` set `name` for xtask (so the caller's shell did not).
pub fn set_by_cargo_run(name: &OsStr) -> bool {
    let name = name.to_string_lossy();
    name.starts_with("CARGO_PKG_") || SET_BY_CARGO_RUN.contains(&name.as_ref())
}

/// `program` with the variables `cargo run` set for xtask removed from its environment.
pub fn caller_command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        if set_by_cargo_run(&name) {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

/// Cargo's target folder: $CARGO_TARGET_DIR (relative to the repository root) or ROOT/target.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The cargo feature that builds `backend` into `ril` (none for the CPU backend).
pub fn backend_feature(backend: BackendKind) -> Option<&'static str> {
    match backend {
        BackendKind::Cpu => None,
        BackendKind::Cuda => Some("cuda"),
        BackendKind::TchCpu | BackendKind::TchCuda => Some("tch"),
    }
}

/// The `cargo build` of the `ril` binary: `--release` for an optimised build, and the feature
/// of `backend` ([`backend_feature`]).
pub fn ril_build_command(release: bool, backend: BackendKind) -> Command {
    let mut build = caller_command(env!("CARGO"));
    build.current_dir(root()).args(["build", "--bin", "ril"]);
    if release {
        build.arg("--release");
    }
    if let Some(feature) = backend_feature(backend) {
        build.args(["--features", feature]);
    }
    build
}

/// Builds the `ril` binary (see [`ril_build_command`]) and returns its path.
pub fn build_ril(release: bool, backend: BackendKind) -> Result<PathBuf> {
    run_command(&mut ril_build_command(release, backend))?;
    Ok(target_dir().join(if release { "release/ril" } else { "debug/ril" }))
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

/// `cargo xtask ci`: runs `.ci/run` (CI's one definition) in `root` with the caller's
/// environment.
pub fn run_ci(root: &Path) -> Result<()> {
    run_command(caller_command(root.join(".ci/run")).current_dir(root))
}

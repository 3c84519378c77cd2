//! Helpers shared by the `ril` binary's end-to-end tests.

use std::process::Command;

/// Runs `ril` with `args`: (success, stdout, stderr).
pub fn ril(args: &[&str]) -> (bool, String, String) {
    ril_env(args, &[])
}

/// [`ril`] with extra environment variables.
#[allow(dead_code)]
pub fn ril_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ril"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

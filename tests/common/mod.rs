//! Helpers shared by the `ril` binary's end-to-end tests.

use std::process::Command;

/// Runs `ril` with `args`: (success, stdout, stderr).
pub fn ril(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ril"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

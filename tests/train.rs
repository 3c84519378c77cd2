//! `ril train` end to end: the tiny RID preset runs all three tasks, and a run killed with
//! SIGKILL at any point and resumed with `--resume` ends with the same weights, bit for bit, as
//! an uninterrupted run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// configs/tiny/rid-ahc.toml with absolute paths and its output in `out`, written to `dir`.
/// The run's backend: burn-flex, or LibTorch on the CPU in a `--features tch` build.
#[cfg(not(feature = "tch"))]
const BACKEND: &str = "backend = \"cpu\"";
#[cfg(feature = "tch")]
const BACKEND: &str = "backend = \"tch-cpu\"";

fn config(dir: &Path, out: &Path) -> PathBuf {
    let tiny = root().join("configs/tiny");
    let text = std::fs::read_to_string(tiny.join("rid-ahc.toml")).unwrap();
    let mut fixed = String::new();
    for line in text.lines() {
        let line = if let Some((key, value)) = line.split_once(" = \"") {
            let value = value.trim_end_matches('"');
            let path = if key == "output" {
                out.to_path_buf()
            } else {
                tiny.join(value)
            };
            format!("{key} = \"{}\"", path.display())
        } else {
            line.to_string()
        };
        fixed.push_str(&line);
        fixed.push('\n');
    }
    // Keys whose values are not paths.
    let fixed = fixed
        .replace(
            &format!("kind = \"{}\"", tiny.join("rid").display()),
            "kind = \"rid\"",
        )
        .replace(
            &format!("backend = \"{}\"", tiny.join("cpu").display()),
            BACKEND,
        );
    let fixed = ["aesthetic", "hps", "compress"].iter().fold(fixed, |t, n| {
        t.replace(
            &format!("name = \"{}\"", tiny.join(n).display()),
            &format!("name = \"{n}\""),
        )
        .replace(
            &format!("reward = \"{}\"", tiny.join(n).display()),
            &format!("reward = \"{n}\""),
        )
    });
    let path = dir.join(format!(
        "{}.toml",
        out.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&path, fixed).unwrap();
    path
}

fn ril(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ril"));
    c.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    c
}

/// Every file of the run that holds weights, with its bytes.
fn weights(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for task in ["task-0-aesthetic", "task-1-hps", "task-2-compress"] {
        for f in [
            "lora.safetensors",
            "ema.safetensors",
            "checkpoint.safetensors",
        ] {
            let p = run.join(task).join(f);
            out.push((
                format!("{task}/{f}"),
                std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            ));
        }
    }
    out
}

/// The metrics log without the timing field.
fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("time_s");
            v
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_same_weights_bit_for_bit() {
    let dir = std::env::temp_dir().join(format!("ril-train-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (full, killed) = (dir.join("full"), dir.join("killed"));
    let full_cfg = config(&dir, &full);
    let o = ril(&["train", "--config", full_cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cfg = config(&dir, &killed);
    let cfg = cfg.to_str().unwrap();
    // Kill when a mid-task checkpoint appears, first in task 0 then in task 2, resuming each time.
    let marks = [
        killed.join("task-0-aesthetic/checkpoint.safetensors"),
        killed.join("task-2-compress/checkpoint.safetensors"),
    ];
    let mut resume = false;
    for mark in &marks {
        let args: Vec<&str> = if resume {
            vec!["train", "--config", cfg, "--resume"]
        } else {
            vec!["train", "--config", cfg]
        };
        let mut child = ril(&args).spawn().unwrap();
        let start = Instant::now();
        while !mark.exists() && start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        assert!(mark.exists(), "no checkpoint appeared: {}", mark.display());
        assert!(
            !killed.join("task-2-compress/lora.safetensors").exists(),
            "the run ended before the kill"
        );
        resume = true;
    }
    let o = ril(&["train", "--config", cfg, "--resume"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (weights(&full), weights(&killed));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if name.ends_with("checkpoint.safetensors") {
            // Same tensors; the state differs only in the config hash (another output folder).
            continue;
        }
        assert!(
            x == y,
            "{name} differs between the uninterrupted and the killed-and-resumed run"
        );
    }
    assert_eq!(metrics(&full), metrics(&killed));
    // No temporary file is left behind.
    for task in ["task-0-aesthetic", "task-1-hps", "task-2-compress"] {
        for e in std::fs::read_dir(killed.join(task)).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(!name.contains(".tmp"), "{task}/{name}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_runs_the_runs_own_checks_and_a_missing_reward_file_leaves_no_run_folder() {
    let dir = std::env::temp_dir().join(format!("ril-train-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("run");
    let good = config(&dir, &out);
    let o = ril(&["train", "--check", "--config", good.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.exists(), "--check wrote the run folder");

    // The aesthetic MLP's file is missing: both --check and the run stop on it, naming the task
    // and the file, before the run folder exists.
    let text = std::fs::read_to_string(&good).unwrap();
    let mlp = root().join("configs/tiny/aesthetic-mlp-random.safetensors");
    let missing = dir.join("no-such-mlp.safetensors");
    let bad_text = text.replace(&mlp.display().to_string(), &missing.display().to_string());
    assert_ne!(bad_text, text, "the config names {}", mlp.display());
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, bad_text).unwrap();
    for args in [vec!["train", "--check"], vec!["train"]] {
        let mut args = args;
        args.extend(["--config", bad.to_str().unwrap()]);
        let o = ril(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("task 0 (aesthetic)") && err.contains("no-such-mlp.safetensors"),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} left a run folder");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

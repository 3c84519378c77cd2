//! `ril train` end to end: the tiny RID preset runs all three tasks, and a run killed with
//! SIGKILL at any point and resumed with `--resume` ends with the same weights, bit for bit, as
//! an uninterrupted run; so does one stopped by SIGINT/SIGTERM, failing on a full disk, or
//! finding its newest checkpoint corrupt; a second run on a folder in use is refused; a finished
//! run's report.html shows its tasks, curve and config.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
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

/// An uninterrupted run of the preset, made once per test process for the tests that compare
/// with it (in cargo's scratch folder for integration tests).
fn reference() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("train-reference-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let full = dir.join("full");
        let cfg = config(&dir, &full);
        let o = ril(&["train", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        full
    })
}

/// A `ril` child whose stderr is read on a thread as it comes, so that a run that writes much
/// never blocks on a full pipe.
struct Running {
    child: std::process::Child,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        let mut child = ril(args).spawn().unwrap();
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = std::io::Read::read_to_end(&mut pipe, &mut bytes);
            bytes
        });
        Running { child, stderr }
    }

    /// Waits until `mark` exists. Fails, with the child's stderr, if the child ends first; the
    /// 30-minute bound only keeps a hung run from hanging the suite (the wait is for an event,
    /// not a speed check: a debug build on a loaded 2-core machine reaches task 2 in minutes).
    fn wait_for(&mut self, mark: &Path) {
        let start = Instant::now();
        while !mark.exists() {
            if let Some(status) = self.child.try_wait().unwrap() {
                if mark.exists() {
                    break;
                }
                let err = std::mem::replace(&mut self.stderr, std::thread::spawn(Vec::new));
                let err = err.join().unwrap();
                panic!(
                    "{} did not appear: ril ended ({status}) first:\n{}",
                    mark.display(),
                    String::from_utf8_lossy(&err)
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30 * 60),
                "{} did not appear in 30 minutes",
                mark.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the child to end and returns its end, with the stderr it wrote.
    fn wait(mut self) -> Output {
        let status = self.child.wait().unwrap();
        let stderr = self.stderr.join().unwrap();
        Output {
            status,
            stdout: Vec::new(),
            stderr,
        }
    }
}

/// Runs `ril args`, sends it `signal` (`INT`, `TERM`) once `mark` exists, and returns its end.
fn signal_at(args: &[&str], mark: &Path, signal: &str) -> Output {
    let mut run = Running::spawn(args);
    run.wait_for(mark);
    let sent = Command::new("kill")
        .args(["-s", signal, &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -s {signal} failed");
    run.wait()
}

/// Asserts that no temporary file is left in the run folder or its task folders.
fn assert_no_temp_files(run: &Path) {
    let mut dirs = vec![run.to_path_buf()];
    for e in std::fs::read_dir(run).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            dirs.push(p);
        }
    }
    for d in dirs {
        for e in std::fs::read_dir(&d).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(!name.contains(".tmp"), "{}/{name}", d.display());
        }
    }
}

/// Asserts that `run` ended with the reference run's weights and metrics.
fn assert_same_as_reference(run: &Path) {
    let (a, b) = (weights(reference()), weights(run));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if name.ends_with("checkpoint.safetensors") {
            // Same tensors; the state differs only in the config hash (another output folder).
            continue;
        }
        assert!(
            x == y,
            "{name} differs between the uninterrupted and the interrupted-and-resumed run"
        );
    }
    assert_eq!(metrics(reference()), metrics(run));
    assert_no_temp_files(run);
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

/// The steps of the scalar events in each of the run's TensorBoard files (by name), every
/// record's framing and masked CRC-32C checked; the first record of each is the file version.
fn tensorboard_steps(run: &Path) -> Vec<Vec<i64>> {
    use rid_trainer::tensorboard::masked_crc;
    let mut files: Vec<PathBuf> = std::fs::read_dir(run.join("tb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let b = std::fs::read(f).unwrap();
            let (mut at, mut steps) = (0, Vec::new());
            while at < b.len() {
                let len = u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
                let crc = |r: std::ops::Range<usize>| u32::from_le_bytes(b[r].try_into().unwrap());
                assert_eq!(masked_crc(&b[at..at + 8]), crc(at + 8..at + 12));
                let data = &b[at + 12..at + 12 + len];
                assert_eq!(masked_crc(data), crc(at + 12 + len..at + 16 + len));
                // Event: wall_time (tag 0x09, 8 bytes), then step (tag 0x10, varint) unless 0.
                assert_eq!(data[0], 0x09);
                let mut step = 0u64;
                if data[9] == 0x10 {
                    for (i, byte) in data[10..].iter().enumerate() {
                        step |= u64::from(byte & 0x7f) << (7 * i);
                        if byte & 0x80 == 0 {
                            break;
                        }
                    }
                }
                let is_version = data[9] == 0x1a;
                assert_eq!(is_version, steps.is_empty() && at == 0, "{}", f.display());
                if !is_version {
                    steps.push(step as i64);
                }
                at += 16 + len;
            }
            steps
        })
        .collect()
}

#[test]
fn a_killed_run_resumes_to_the_same_weights_bit_for_bit() {
    let dir = ril_testkit::scratch("train-kill");
    let killed = dir.join("killed");
    reference();
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
        let mut run = Running::spawn(&args);
        run.wait_for(mark);
        run.child.kill().unwrap(); // SIGKILL
        let pid = run.child.id();
        let _ = run.wait();
        assert!(
            !killed.join("task-2-compress/lora.safetensors").exists(),
            "the run ended before the kill"
        );
        // The killed process's lock file stays, naming it; the next run is not blocked by it.
        let lock = std::fs::read_to_string(killed.join("ril.lock")).unwrap();
        assert_eq!(lock.trim(), pid.to_string());
        resume = true;
    }
    let o = ril(&["train", "--config", cfg, "--resume"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_same_as_reference(&killed);
    // TensorBoard: the uninterrupted run wrote one file with one event per step (0, 1, ... on
    // the run's step count across tasks); the killed run one per invocation, each starting
    // where its checkpoint left off and the last ending at the last step.
    let steps = metrics(reference()).len() as i64;
    assert_eq!(
        tensorboard_steps(reference()),
        [(0..steps).collect::<Vec<_>>()]
    );
    let parts = tensorboard_steps(&killed);
    assert_eq!(parts.len(), 3, "{parts:?}");
    assert_eq!(parts[0][0], 0);
    assert!(
        parts[1][0] > 0 && parts[1][0] <= *parts[0].last().unwrap() + 1,
        "{parts:?}"
    );
    assert_eq!(parts[2].last(), Some(&(steps - 1)), "{parts:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_run_on_a_folder_in_use_is_refused_naming_the_folder_and_the_holders_pid() {
    let dir = std::env::temp_dir().join(format!("ril-train-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = dir.join("run");
    std::fs::create_dir_all(&out).unwrap();
    // This test holds the folder's lock, as a running `ril train` does.
    let lock_path = out.join("ril.lock");
    let lock = std::fs::File::create(&lock_path).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(&lock_path, format!("{}\n", std::process::id())).unwrap();
    let cfg = config(&dir, &out);
    for args in [vec!["train"], vec!["train", "--resume"]] {
        let mut args = args;
        args.extend(["--config", cfg.to_str().unwrap()]);
        let o = ril(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("run folder {} is in use", out.display()))
                && err.contains(&format!("pid {}", std::process::id())),
            "{args:?}: {err}"
        );
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["ril.lock"], "{args:?} wrote into the folder");
    }
    drop(lock);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The checkpoint's counters (step, done).
fn checkpoint_state(path: &Path) -> (usize, bool) {
    let c = rid_trainer::checkpoint::load::<burn_flex::Flex>(path, &Default::default())
        .unwrap_or_else(|e| panic!("{e:#}"));
    (c.state.step, c.state.done)
}

/// Flips one bit of the file's last byte (a tensor value).
fn flip_last_bit(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    *bytes.last_mut().unwrap() ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_run_stopped_by_signals_failing_on_a_full_disk_or_with_a_corrupt_checkpoint_resumes_bit_for_bit()
 {
    let dir = ril_testkit::scratch("train-faults");
    let run = dir.join("faults");
    let cfg_path = config(&dir, &run);
    let cfg = cfg_path.to_str().unwrap();
    let resume = ["train", "--config", cfg, "--resume"];
    let (t0, t2) = (run.join("task-0-aesthetic"), run.join("task-2-compress"));
    let (ckpt, prev) = ("checkpoint.safetensors", "checkpoint.prev.safetensors");

    // SIGINT once task 0's first checkpoint (step 2) is written: the run ends the step in
    // progress, writes a checkpoint, and exits with 128 + SIGINT's 2 saying how to resume.
    let o = signal_at(&["train", "--config", cfg], &t0.join(ckpt), "INT");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(
        err.contains("stopped on request in task 0 (aesthetic)")
            && err.contains(&format!("ril train --config {cfg} --resume")),
        "{err}"
    );
    let (step, done) = checkpoint_state(&t0.join(ckpt));
    assert!((2..4).contains(&step) && !done, "step {step}, done {done}");
    // The periodic checkpoint it replaced is kept.
    assert_eq!(checkpoint_state(&t0.join(prev)), (2, false));

    // A full disk (a file-size limit smaller than a checkpoint, larger than the LoRA files and
    // the log): the resumed run fails on the checkpoint naming it; both checkpoints stay as they
    // were and no temporary file is left.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let ckpt_size = size(&t0.join(ckpt));
    let lora_size = size(&reference().join("task-0-aesthetic/lora.safetensors"));
    let limit_kb = (ckpt_size + lora_size) / 2 / 1024;
    assert!(lora_size < limit_kb * 1024 && limit_kb * 1024 < ckpt_size);
    assert!(size(&reference().join("metrics.jsonl")) < limit_kb * 1024);
    let before = [
        std::fs::read(t0.join(ckpt)).unwrap(),
        std::fs::read(t0.join(prev)).unwrap(),
    ];
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {limit_kb}; exec \"$0\" \"$@\""
        ))
        .arg(env!("CARGO_BIN_EXE_ril"))
        .args(resume)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot write {}", t0.join(ckpt).display()))
            && err.contains("File too large"),
        "{err}"
    );
    let after = [
        std::fs::read(t0.join(ckpt)).unwrap(),
        std::fs::read(t0.join(prev)).unwrap(),
    ];
    assert!(before == after, "a checkpoint changed");
    assert_no_temp_files(&run);

    // Resumed, then SIGTERM once task 2's first checkpoint is written.
    let o = signal_at(&resume, &t2.join(ckpt), "TERM");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(143), "{err}");
    assert!(
        err.contains("stopped on request in task 2 (compress)"),
        "{err}"
    );

    // Task 2's newest checkpoint bit-flipped: the resumed run warns, takes the previous one and
    // still ends exactly as the uninterrupted run.
    flip_last_bit(&t2.join(ckpt));
    let o = ril(&resume).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "warning: checkpoint {} is corrupt",
            t2.join(ckpt).display()
        )) && err.contains(&format!(
            "resuming from the previous checkpoint {}",
            t2.join(prev).display()
        )),
        "{err}"
    );
    assert_same_as_reference(&run);

    // Both of task 0's checkpoints corrupt (the newest cut short, the previous bit-flipped): an
    // error naming both.
    let bytes = std::fs::read(t0.join(ckpt)).unwrap();
    std::fs::write(t0.join(ckpt), &bytes[..bytes.len() / 2]).unwrap();
    flip_last_bit(&t0.join(prev));
    let o = ril(&resume).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "checkpoint {} is corrupt",
            t0.join(ckpt).display()
        )) && err.contains(&format!(
            "checkpoint {} is corrupt",
            t0.join(prev).display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_runs_the_runs_own_checks_and_a_missing_reward_file_leaves_no_run_folder() {
    let dir = ril_testkit::scratch("train-check");
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
    // A LoRA rank wider than the tiny UNet's narrowest adapted layer (8 channels), even a huge
    // one, is refused by --check naming the task and the layer, before anything is allocated.
    let wide = dir.join("wide.toml");
    std::fs::write(
        &wide,
        text.replacen(
            "grad_clip = 1.0",
            "grad_clip = 1.0\nlora_rank = 1000000000000",
            1,
        ),
    )
    .unwrap();
    let o = ril(&["train", "--check", "--config", wide.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("task 0 (aesthetic): lora_rank") && err.contains("min(in, out) = 8"),
        "{err}"
    );
    assert!(!out.exists(), "--check left a run folder");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_finished_run_has_a_self_contained_report_with_its_tasks_curve_and_config() {
    let run = reference();
    let html = std::fs::read_to_string(run.join("report.html")).unwrap();
    // One table (the tasks), one row per task with its reward, and the per-step curve inline.
    assert_eq!(html.matches("<table>").count(), 1);
    for name in ["aesthetic", "hps", "compress"] {
        assert!(
            html.contains(&format!("<td>{name}</td><td>{name}</td>")),
            "{name}: {html}"
        );
    }
    assert_eq!(html.matches("<svg").count(), 1);
    assert!(run.join("plots/train-reward.svg").is_file());
    // Every step of metrics.jsonl is counted in the table's steps column.
    let steps: usize = html
        .split("<tr>")
        .skip(2)
        .map(|row| {
            let cells: Vec<&str> = row.split("<td>").collect();
            cells[4].trim_end_matches("</td>").parse::<usize>().unwrap()
        })
        .sum();
    assert_eq!(steps, metrics(run).len());
    // The config, escaped, and nothing fetched from elsewhere.
    assert!(html.contains("config.json") && html.contains("&quot;hash&quot;"));
    for attr in ["src=\"http", "href=\"http", "@import", "url(http"] {
        assert!(!html.contains(attr), "the page fetches something: {attr}");
    }
    let Some(dom) = ril_testkit::render_in_chromium(&run.join("report.html")) else {
        return;
    };
    let n = |name: &str| ril_testkit::dom_number(&dom, name);
    assert_eq!(n("data-tables"), 1);
    assert_eq!(n("data-svgs"), 1, "the curve did not render");
    assert!(n("data-page-width") <= n("data-viewport-width"));
}

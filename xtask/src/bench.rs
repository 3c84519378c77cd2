//! `cargo xtask bench`: builds the release `ril`, runs `ril bench` and, with `--compare`, the
//! PyTorch reference (tools/bench/bench.py) with the same thread count, then writes both JSON
//! records and a Markdown table of the ratios ril / PyTorch under `bench/`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cli::{BenchArgs, name_of};

/// Runs `cargo xtask bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let root = crate::root();
    let out = root.join("bench");
    std::fs::create_dir_all(&out)?;
    let ril_path = crate::cargo::build_ril(true, a.backend)?;
    let (preset, backend, what) = (name_of(&a.preset), a.backend.name(), name_of(&a.what));
    let (threads, reps) = (a.threads.to_string(), a.reps.to_string());
    let tag = format!("{preset}-{backend}-{}", a.reward);
    let ril_json = out.join(format!("ril-{tag}.json"));
    let mut ril = Command::new(ril_path);
    ril.current_dir(&root)
        .env("RAYON_NUM_THREADS", &threads)
        .args([
            "bench",
            "--preset",
            &preset,
            "--backend",
            backend,
            "--what",
            &what,
            "--reps",
            &reps,
        ])
        .args(overrides(a))
        .arg("--json")
        .arg(&ril_json);
    crate::run_command(&mut ril)?;
    let ours = read(&ril_json)?;
    let theirs = if a.compare {
        let python = match &a.python {
            Some(p) => p.clone(),
            None => std::env::var_os("RIL_PYTHON")
                .unwrap_or_else(|| "python3".into())
                .into(),
        };
        let py_json = out.join(format!("pytorch-{tag}.json"));
        let mut py = Command::new(&python);
        py.current_dir(&root)
            .arg("tools/bench/bench.py")
            .args([
                "--preset",
                &preset,
                "--device",
                torch_device(a.backend),
                "--threads",
                &threads,
                "--reps",
                &reps,
                "--what",
                &what,
            ])
            .args(overrides(a))
            .arg("--json")
            .arg(&py_json);
        crate::run_command(&mut py)?;
        Some(read(&py_json)?)
    } else {
        None
    };
    let table = report(&ours, theirs.as_ref(), &machine());
    let md = out.join(format!("report-{tag}.md"));
    std::fs::write(&md, &table).with_context(|| format!("cannot write {}", md.display()))?;
    println!("{table}\n(written to {})", md.display());
    Ok(())
}

/// `--steps N`, `--batch N`, `--reward R` and `--gradient-checkpointing` as given, for both
/// sides.
fn overrides(a: &BenchArgs) -> Vec<String> {
    let mut v = vec!["--reward".to_string(), a.reward.clone()];
    for (flag, value) in [("--steps", a.steps), ("--batch", a.batch)] {
        if let Some(n) = value {
            v.extend([flag.to_string(), n.to_string()]);
        }
    }
    if a.gradient_checkpointing {
        v.push("--gradient-checkpointing".to_string());
    }
    v
}

fn read(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpu}, {} logical cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    )
}

/// A Markdown table: median (min–max) per operation, and ril / PyTorch.
pub fn report(ours: &Value, theirs: Option<&Value>, machine: &str) -> String {
    let mut s = format!(
        "Preset `{}` on `{}` ({} threads; batch {}, {}x{}, {} DDIM steps) — {machine}\n\n",
        ours["preset"].as_str().unwrap_or("?"),
        ours["backend"].as_str().unwrap_or("?"),
        ours["threads"].as_str().unwrap_or("?"),
        ours["batch"],
        ours["size"],
        ours["size"],
        ours["steps"],
    );
    s.push_str("| operation | ril median (min–max) | PyTorch median (min–max) | ril / PyTorch |\n|---|---|---|---|\n");
    let cell = |v: &Value| match v["median_s"].as_f64() {
        Some(m) => format!(
            "{:.1} ms ({:.1}–{:.1})",
            m * 1e3,
            v["min_s"].as_f64().unwrap_or(0.0) * 1e3,
            v["max_s"].as_f64().unwrap_or(0.0) * 1e3
        ),
        None => "–".into(),
    };
    for op in [
        "unet_forward",
        "vae_decode",
        "sample",
        "train_step_baseline",
        "train_step_rid",
    ] {
        let a = &ours["results"][op];
        if a.is_null() {
            continue;
        }
        let b = theirs.map(|t| &t["results"][op]);
        let ratio = match (
            a["median_s"].as_f64(),
            b.and_then(|b| b["median_s"].as_f64()),
        ) {
            (Some(x), Some(y)) => format!("{:.2}", x / y),
            _ => "–".into(),
        };
        s.push_str(&format!(
            "| {op} | {} | {} | {ratio} |\n",
            cell(a),
            b.map(cell).unwrap_or_else(|| "–".into())
        ));
    }
    let rr = |v: &Value| {
        v["results"]["rid_over_baseline"]
            .as_f64()
            .map(|r| format!("{:.3}", r))
            .unwrap_or_else(|| "–".into())
    };
    s.push_str(&format!(
        "\nRID / baseline step time: ril {}, PyTorch {} (the paper: about 1.01).\n",
        rr(ours),
        theirs.map(rr).unwrap_or_else(|| "–".into())
    ));
    s
}

/// The torch device of the PyTorch reference that runs where ril's `backend` runs.
fn torch_device(backend: sd_model::backend::BackendKind) -> &'static str {
    use sd_model::backend::BackendKind;
    match backend {
        BackendKind::Cpu | BackendKind::TchCpu => "cpu",
        BackendKind::Cuda | BackendKind::TchCuda => "cuda",
    }
}

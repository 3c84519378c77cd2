//! `cargo xtask experiment`: the paper's grid — every order of (aesthetic, HPS, compressibility)
//! × {baseline, RID} — trained with `ril train`, evaluated after every task with `ril eval` (the
//! same noise for every model), and reported as tables; resumable (a finished cell is skipped,
//! an interrupted one resumes from its checkpoint).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rid_trainer::TrainConfig;
use rid_trainer::config::{Method, RewardKind};
use ril_metrics::eval::{EvalResult, Metric};
use serde_json::{Value, json};

pub const USAGE: &str = "\
usage: cargo xtask experiment all-orders [--preset tiny|paper] [--out DIR] [--dry-run] [--emit slurm]
       cargo xtask experiment order AHC [--method rid|baseline] [--preset tiny|paper] [--out DIR]
       cargo xtask experiment report DIR

  Cells: METHOD-ORDER (e.g. rid-AHC). Each cell trains the order with configs/PRESET/METHOD.toml's
  values (tiny: configs/tiny/*-ahc.toml), evaluates the base model once and the model after every
  task, and writes DIR/METHOD-ORDER/table2.{md,csv}; the grid writes DIR/results.json and
  DIR/table3.{md,csv} (final stage of every cell, forgetting in parentheses, averages per method,
  then the base, the three single-reward baseline models, their soup (1/3 each) and joint tuning)
  and DIR/table6.md (joint tuning vs RID's average).
  --emit slurm writes DIR/slurm.sh, a job array with one cell per task (each runs
  `cargo xtask experiment order ...` on the shared DIR); afterwards `all-orders --out DIR` adds
  the single-reward, soup and joint models (finished cells are skipped) and writes the tables.";

const ORDERS: [&str; 6] = ["AHC", "ACH", "HAC", "HCA", "CAH", "CHA"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn base_config(preset: &str, method: Method) -> Result<TrainConfig> {
    let name = match (preset, method) {
        ("tiny", Method::Rid) => "configs/tiny/rid-ahc.toml",
        ("tiny", Method::Baseline) => "configs/tiny/baseline-ahc.toml",
        ("paper", Method::Rid) => "configs/paper/rid.toml",
        ("paper", Method::Baseline) => "configs/paper/baseline.toml",
        _ => bail!("unknown preset {preset} (tiny or paper)"),
    };
    TrainConfig::from_file(&root().join(name))
}

fn letter(k: RewardKind) -> char {
    match k {
        RewardKind::Aesthetic => 'A',
        RewardKind::Hps => 'H',
        RewardKind::Compress => 'C',
        RewardKind::Joint => 'J',
    }
}

/// The config of one cell: the base's tasks in `order`, output in `dir`.
fn cell_config(preset: &str, method: Method, order: &str, dir: &Path) -> Result<TrainConfig> {
    let mut c = base_config(preset, method)?;
    let mut tasks = Vec::new();
    for l in order.chars() {
        let t = c
            .tasks
            .iter()
            .find(|t| letter(t.reward) == l)
            .with_context(|| format!("order {order}: no task with reward {l} in the preset"))?;
        tasks.push(t.clone());
    }
    c.tasks = tasks;
    c.output = dir.join("run");
    Ok(c)
}

fn ril_binary(preset: &str, backend: &str) -> Result<PathBuf> {
    let mut build = crate::caller_command(env!("CARGO"));
    build.current_dir(root()).args(["build", "--bin", "ril"]);
    let release = preset == "paper";
    if release {
        build.arg("--release");
    }
    if backend == "cuda" {
        build.args(["--features", "cuda"]);
    }
    crate::run_command(&mut build)?;
    Ok(crate::target_dir().join(if release { "release/ril" } else { "debug/ril" }))
}

fn read_result(dir: &Path) -> Result<EvalResult> {
    let text = std::fs::read_to_string(dir.join("results.json"))
        .with_context(|| format!("no results in {}", dir.display()))?;
    let v: Value = serde_json::from_str(&text)?;
    Ok(serde_json::from_value(v["result"].clone())?)
}

/// Trains and evaluates one cell; returns its stages (name, result).
fn run_cell(
    ril: &Path,
    preset: &str,
    method: Method,
    order: &str,
    out: &Path,
) -> Result<Vec<(String, EvalResult)>> {
    let id = format!("{}-{order}", method_name(method));
    let dir = out.join(&id);
    std::fs::create_dir_all(&dir)?;
    let config = cell_config(preset, method, order, &dir)?;
    let cfg_path = dir.join("config.toml");
    sd_model::write_atomic(&cfg_path, toml::to_string(&config)?.as_bytes())?;
    let done = |k: usize| {
        config
            .output
            .join(format!("task-{k}-{}", config.tasks[k].name))
            .join("lora.safetensors")
            .is_file()
            && rid_trainer::checkpoint::load::<sd_model::backend::Cpu>(
                &config.output.join(format!(
                    "task-{k}-{}/checkpoint.safetensors",
                    config.tasks[k].name
                )),
                &Default::default(),
            )
            .map(|c| c.state.done)
            .unwrap_or(false)
    };
    if !(0..config.tasks.len()).all(done) {
        let mut cmd = Command::new(ril);
        cmd.args(["train", "--config"]).arg(&cfg_path);
        if config.output.join("config.json").is_file() {
            cmd.arg("--resume");
        }
        crate::run_command(&mut cmd)?;
    }
    let base = out.join("eval-base");
    if !base.join("results.json").is_file() {
        crate::run_command(
            Command::new(ril)
                .args(["eval", "--config"])
                .arg(&cfg_path)
                .arg("--out")
                .arg(&base),
        )?;
    }
    let mut stages = vec![("SD".to_string(), read_result(&base)?)];
    let mut loras = Vec::new();
    for (k, t) in config.tasks.iter().enumerate() {
        loras.push(
            config
                .output
                .join(format!("task-{k}-{}/lora.safetensors", t.name)),
        );
        let e = dir.join(format!("eval-stage-{}", k + 1));
        if !e.join("results.json").is_file() {
            let mut cmd = Command::new(ril);
            cmd.args(["eval", "--config"])
                .arg(&cfg_path)
                .arg("--out")
                .arg(&e);
            for l in &loras {
                cmd.arg("--lora").arg(l);
            }
            crate::run_command(&mut cmd)?;
        }
        stages.push((format!("+{}", letter(t.reward)), read_result(&e)?));
    }
    let (md, csv) = ril_metrics::report::stage_table(&stages, &metrics())?;
    sd_model::write_atomic(&dir.join("table2.md"), format!("# {id}\n\n{md}").as_bytes())?;
    sd_model::write_atomic(&dir.join("table2.csv"), csv.as_bytes())?;
    let mut columns = vec![base.join("grid.png")];
    columns.extend((1..=config.tasks.len()).map(|k| dir.join(format!("eval-stage-{k}/grid.png"))));
    stage_grid(&columns, &dir.join("stages.png"))?;
    Ok(stages)
}

/// Trains (if needed) and evaluates a one-task run of the baseline: `letter` A, H or C (a
/// single-reward model for the soup) or J (joint tuning, 0.01 A + 2 H + C). Returns the task
/// file and the final model's result.
fn run_single(
    ril: &Path,
    preset: &str,
    letter_: char,
    out: &Path,
) -> Result<(PathBuf, EvalResult)> {
    let dir = out.join(format!("single-{letter_}"));
    std::fs::create_dir_all(&dir)?;
    let mut config = base_config(preset, Method::Baseline)?;
    let mut task = config.tasks[0].clone();
    if letter_ == 'J' {
        task.name = "joint".into();
        task.reward = RewardKind::Joint;
        // The paper tunes the joint reward for 20 epochs; the tiny preset keeps its own length.
        if preset == "paper" {
            task.epochs = 20;
        }
    } else {
        task = config
            .tasks
            .iter()
            .find(|t| letter(t.reward) == letter_)
            .with_context(|| format!("no task with reward {letter_} in the preset"))?
            .clone();
    }
    config.tasks = vec![task.clone()];
    config.output = dir.join("run");
    let cfg_path = dir.join("config.toml");
    sd_model::write_atomic(&cfg_path, toml::to_string(&config)?.as_bytes())?;
    let lora = config
        .output
        .join(format!("task-0-{}/lora.safetensors", task.name));
    if !lora.is_file() {
        let mut cmd = Command::new(ril);
        cmd.args(["train", "--config"]).arg(&cfg_path);
        if config.output.join("config.json").is_file() {
            cmd.arg("--resume");
        }
        crate::run_command(&mut cmd)?;
    }
    let e = dir.join("eval");
    if !e.join("results.json").is_file() {
        crate::run_command(
            Command::new(ril)
                .args(["eval", "--config"])
                .arg(&cfg_path)
                .arg("--out")
                .arg(&e)
                .arg("--lora")
                .arg(&lora),
        )?;
    }
    Ok((lora, read_result(&e)?))
}

/// The model soup of the three single-reward baseline models (1/3 each), evaluated.
fn run_soup(ril: &Path, loras: &[PathBuf], cfg: &Path, out: &Path) -> Result<EvalResult> {
    let dir = out.join("soup");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("soup.safetensors");
    if !file.is_file() {
        let mut cmd = Command::new(ril);
        cmd.arg("soup");
        for l in loras {
            cmd.arg("--lora").arg(l);
        }
        crate::run_command(cmd.arg("--out").arg(&file))?;
    }
    let e = dir.join("eval");
    if !e.join("results.json").is_file() {
        crate::run_command(
            Command::new(ril)
                .args(["eval", "--config"])
                .arg(cfg)
                .arg("--out")
                .arg(&e)
                .arg("--lora")
                .arg(&file),
        )?;
    }
    read_result(&e)
}

/// The paper's Fig. 5/6 layout: each stage's sample grid (rows = prompts) side by side.
fn stage_grid(columns: &[PathBuf], out: &Path) -> Result<()> {
    let imgs: Vec<image::RgbImage> = columns
        .iter()
        .map(|p| {
            image::open(p)
                .map(|i| i.to_rgb8())
                .with_context(|| format!("cannot read {}", p.display()))
        })
        .collect::<Result<_>>()?;
    let h = imgs.iter().map(|i| i.height()).max().unwrap_or(0);
    let w: u32 = imgs.iter().map(|i| i.width()).sum();
    let mut canvas = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    let mut x = 0;
    for img in &imgs {
        image::imageops::replace(&mut canvas, img, x as i64, 0);
        x += img.width();
    }
    sd_model::pipeline::save_png(&canvas, out)
}

fn metrics() -> Vec<Metric> {
    vec![
        Metric::Aesthetic,
        Metric::Hps,
        Metric::PngKb,
        Metric::JpegKb,
    ]
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Rid => "rid",
        Method::Baseline => "baseline",
    }
}

/// DIR/results.json, table3.{md,csv} from every finished cell's stages, plus the rows of models
/// without a sequence (soup, joint) and table6 (joint vs RID's average).
fn write_grid_report(
    out: &Path,
    cells: &[(String, Vec<(String, EvalResult)>)],
    extra: &[(String, EvalResult)],
) -> Result<()> {
    let ms = metrics();
    let mut md = String::from("| cell |");
    let mut csv = String::from("cell");
    for m in &ms {
        md.push_str(&format!(" {} |", m.name()));
        csv.push_str(&format!(",{0},{0}_forgetting", m.name()));
    }
    md.push_str(&format!("\n|---|{}\n", "---|".repeat(ms.len())));
    csv.push('\n');
    let mut sums: std::collections::BTreeMap<(String, Metric), (f64, f64, usize)> =
        Default::default();
    for (id, stages) in cells {
        md.push_str(&format!("| {id} |"));
        csv.push_str(id);
        for m in &ms {
            let values: Option<Vec<f64>> = stages
                .iter()
                .map(|(_, r)| r.values.get(m).copied())
                .collect();
            match values {
                Some(v) => {
                    let f = ril_metrics::forgetting(&v, m.direction())?;
                    let (last, fl) = (v[v.len() - 1], f[f.len() - 1]);
                    md.push_str(&format!(" {last:.4} ({fl:.4}) |"));
                    csv.push_str(&format!(",{last},{fl}"));
                    let method = id.split('-').next().unwrap_or("").to_string();
                    let e = sums.entry((method, *m)).or_insert((0.0, 0.0, 0));
                    *e = (e.0 + last, e.1 + fl, e.2 + 1);
                }
                None => {
                    md.push_str(" – |");
                    csv.push_str(",,");
                }
            }
        }
        md.push('\n');
        csv.push('\n');
    }
    for method in ["baseline", "rid"] {
        if !sums.keys().any(|(k, _)| k == method) {
            continue;
        }
        md.push_str(&format!("| {method} average |"));
        csv.push_str(&format!("{method}_average"));
        for m in &ms {
            match sums.get(&(method.to_string(), *m)) {
                Some((v, f, n)) => {
                    md.push_str(&format!(" {:.4} ({:.4}) |", v / *n as f64, f / *n as f64));
                    csv.push_str(&format!(",{},{}", v / *n as f64, f / *n as f64));
                }
                None => {
                    md.push_str(" – |");
                    csv.push_str(",,");
                }
            }
        }
        md.push('\n');
        csv.push('\n');
    }
    let mut plain: Vec<(String, &EvalResult)> = Vec::new();
    if let Some((_, stages)) = cells.first() {
        plain.push(("SD 1.x (base)".into(), &stages[0].1));
    }
    for (name, r) in extra {
        plain.push((name.clone(), r));
    }
    let cell_md = |r: &EvalResult, m: &Metric| {
        r.values
            .get(m)
            .map(|v| format!(" {v:.4} |"))
            .unwrap_or_else(|| " – |".into())
    };
    for (name, r) in &plain {
        md.push_str(&format!("| {name} |"));
        csv.push_str(&name.replace(' ', "_"));
        for m in &ms {
            md.push_str(&cell_md(r, m));
            csv.push_str(
                &r.values
                    .get(m)
                    .map(|v| format!(",{v},"))
                    .unwrap_or_else(|| ",,".into()),
            );
        }
        md.push('\n');
        csv.push('\n');
    }
    if let Some((_, joint)) = extra.iter().find(|(n, _)| n == "joint") {
        let mut t6 = String::from("| model |");
        for m in &ms {
            t6.push_str(&format!(" {} |", m.name()));
        }
        t6.push_str(&format!(
            "\n|---|{}\n| joint tuning |",
            "---|".repeat(ms.len())
        ));
        for m in &ms {
            t6.push_str(&cell_md(joint, m));
        }
        t6.push_str("\n| RID (average over orders) |");
        for m in &ms {
            let avg = sums
                .get(&("rid".to_string(), *m))
                .map(|(v, _, n)| format!(" {:.4} |", v / *n as f64));
            t6.push_str(&avg.unwrap_or_else(|| " – |".into()));
        }
        t6.push('\n');
        sd_model::write_atomic(
            &out.join("table6.md"),
            format!("# Joint tuning vs RID\n\n{t6}").as_bytes(),
        )?;
    }
    let results = json!({
        "models": extra.iter().map(|(n, r)| json!({ "model": n, "result": r })).collect::<Vec<_>>(),
        "cells": cells.iter().map(|(id, st)| json!({ "cell": id, "stages": st.iter().map(|(n, r)| json!({"stage": n, "result": r})).collect::<Vec<_>>() })).collect::<Vec<_>>(),
    });
    sd_model::write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    sd_model::write_atomic(
        &out.join("table3.md"),
        format!("# Final stage of every cell (forgetting in parentheses)\n\n{md}").as_bytes(),
    )?;
    sd_model::write_atomic(&out.join("table3.csv"), csv.as_bytes())?;
    crate::plots::write(out, cells, &ms)?;
    println!("{md}");
    Ok(())
}

fn status(out: &Path, cells: &[(Method, &str)]) {
    println!("grid status in {}:", out.display());
    for (m, o) in cells {
        let id = format!("{}-{o}", method_name(*m));
        let dir = out.join(&id);
        let state = if dir.join("table2.md").is_file() {
            "done"
        } else if dir.join("run/config.json").is_file() {
            "started"
        } else {
            "pending"
        };
        println!("  {id:14} {state}");
    }
}

pub fn main(args: &[String]) -> Result<()> {
    let mut it = args.iter();
    let sub = it.next().cloned().unwrap_or_default();
    let mut order = None;
    let (mut preset, mut method, mut dry) = ("tiny".to_string(), None, false);
    let mut emit = None;
    let mut out: Option<PathBuf> = None;
    if sub == "order" {
        order = Some(
            it.next()
                .context("experiment order needs an order such as AHC")?
                .to_uppercase(),
        );
    }
    if sub == "report" {
        let dir = PathBuf::from(it.next().context("experiment report needs DIR")?);
        return report(&dir);
    }
    let mut f = ril::args::Flags::new(it.as_slice(), USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--preset" => preset = f.value(flag)?,
            "--method" => {
                method = Some(match f.value(flag)?.as_str() {
                    "rid" => Method::Rid,
                    "baseline" => Method::Baseline,
                    other => bail!("--method must be rid or baseline, got {other}"),
                })
            }
            "--out" => out = Some(f.value(flag)?.into()),
            "--dry-run" => dry = true,
            "--emit" => emit = Some(f.value(flag)?),
            other => return Err(f.unknown(other)),
        }
    }
    let cells: Vec<(Method, &str)> = match (sub.as_str(), &order) {
        ("all-orders", _) => [Method::Baseline, Method::Rid]
            .iter()
            .flat_map(|m| ORDERS.iter().map(move |o| (*m, *o)))
            .collect(),
        ("order", Some(o)) => {
            if o.len() != 3 || !"AHC".chars().all(|c| o.contains(c)) {
                bail!("an order is a permutation of A, H and C, got {o}");
            }
            let o: &'static str = Box::leak(o.clone().into_boxed_str());
            vec![(method.unwrap_or(Method::Rid), o)]
        }
        _ => bail!("{USAGE}"),
    };
    let out = out.unwrap_or_else(|| root().join(format!("runs/grid-{preset}")));
    std::fs::create_dir_all(&out)?;
    let out = out.canonicalize()?;
    status(&out, &cells);
    if let Some(kind) = emit {
        if kind != "slurm" {
            bail!("--emit supports slurm, got {kind}");
        }
        let list: Vec<String> = cells
            .iter()
            .map(|(m, o)| format!("{}:{o}", method_name(*m)))
            .collect();
        let script = format!(
            "#!/usr/bin/env bash\n\
             # The grid as a Slurm job array: one cell per array task, all sharing {out}.\n\
             # Submit: sbatch {out}/slurm.sh; then gather: cargo xtask experiment all-orders --preset {preset} --out {out}\n\
             #SBATCH --job-name=ril-grid\n#SBATCH --array=0-{last}\n#SBATCH --gres=gpu:1\n#SBATCH --output={out}/slurm-%A_%a.log\n\
             set -euo pipefail\nCELLS=({cells})\nIFS=: read -r METHOD ORDER <<< \"${{CELLS[$SLURM_ARRAY_TASK_ID]}}\"\n\
             cd {root}\ncargo xtask experiment order \"$ORDER\" --method \"$METHOD\" --preset {preset} --out {out}\n",
            out = out.display(),
            preset = preset,
            last = list.len() - 1,
            cells = list.join(" "),
            root = root().display(),
        );
        let path = out.join("slurm.sh");
        sd_model::write_atomic(&path, script.as_bytes())?;
        println!("wrote {}", path.display());
        return Ok(());
    }
    if dry {
        for (m, o) in &cells {
            let c = cell_config(
                &preset,
                *m,
                o,
                &out.join(format!("{}-{o}", method_name(*m))),
            )?;
            let steps: usize = c.tasks.iter().map(|t| t.epochs * t.steps_per_epoch).sum();
            let images: usize = c
                .tasks
                .iter()
                .map(|t| t.epochs * t.steps_per_epoch * t.batch_size)
                .sum();
            println!(
                "  {}-{o}: {} tasks [{}], {steps} optimiser steps, {images} training images, {} DDIM steps each, {}x{}",
                method_name(*m),
                c.tasks.len(),
                c.tasks
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> "),
                c.sampling.steps,
                c.sampling.width,
                c.sampling.height
            );
        }
        return Ok(());
    }
    let backend = base_config(&preset, Method::Rid)?.model.backend.name();
    let ril = ril_binary(&preset, &backend)?;
    let mut results = Vec::new();
    for (m, o) in &cells {
        let t0 = Instant::now();
        let stages = run_cell(&ril, &preset, *m, o, &out)?;
        println!(
            "{}-{o}: done in {:.1} s",
            method_name(*m),
            t0.elapsed().as_secs_f64()
        );
        results.push((format!("{}-{o}", method_name(*m)), stages));
    }
    let mut extra = Vec::new();
    if sub == "all-orders" {
        let mut loras = Vec::new();
        for l in ['A', 'H', 'C'] {
            let (lora, r) = run_single(&ril, &preset, l, &out)?;
            extra.push((format!("single {l}"), r));
            loras.push(lora);
        }
        let cfg = out.join("single-A/config.toml");
        extra.push(("soup".into(), run_soup(&ril, &loras, &cfg, &out)?));
        let (_, joint) = run_single(&ril, &preset, 'J', &out)?;
        extra.push(("joint".into(), joint));
    }
    write_grid_report(&out, &results, &extra)?;
    status(&out, &cells);
    Ok(())
}

/// Re-renders DIR's tables from the cells' evaluation results.
fn report(dir: &Path) -> Result<()> {
    let mut cells = Vec::new();
    for m in [Method::Baseline, Method::Rid] {
        for o in ORDERS {
            let id = format!("{}-{o}", method_name(m));
            let cell = dir.join(&id);
            if !cell.join("table2.md").is_file() {
                continue;
            }
            let mut stages = vec![("SD".to_string(), read_result(&dir.join("eval-base"))?)];
            for (k, l) in o.chars().enumerate() {
                stages.push((
                    format!("+{l}"),
                    read_result(&cell.join(format!("eval-stage-{}", k + 1)))?,
                ));
            }
            let (md, csv) = ril_metrics::report::stage_table(&stages, &metrics())?;
            sd_model::write_atomic(
                &cell.join("table2.md"),
                format!("# {id}\n\n{md}").as_bytes(),
            )?;
            sd_model::write_atomic(&cell.join("table2.csv"), csv.as_bytes())?;
            cells.push((id, stages));
        }
    }
    if cells.is_empty() {
        bail!("{} holds no finished cell", dir.display());
    }
    let mut extra = Vec::new();
    for (name, sub) in [
        ("single A", "single-A/eval"),
        ("single H", "single-H/eval"),
        ("single C", "single-C/eval"),
        ("soup", "soup/eval"),
        ("joint", "single-J/eval"),
    ] {
        if let Ok(r) = read_result(&dir.join(sub)) {
            extra.push((name.to_string(), r));
        }
    }
    write_grid_report(dir, &cells, &extra)
}

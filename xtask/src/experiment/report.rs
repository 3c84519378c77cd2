//! The grid's tables: each cell's stages (table2), the final stage of every cell with forgetting,
//! per-method averages and the models without a sequence (table3), joint tuning vs RID (table6)
//! and results.json, rendered as strings from the results and then written.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use ril_metrics::eval::{EvalResult, Metric};
use serde_json::{Value, json};

use super::plan::{Cell, METHODS, ORDERS, method_name};
use super::resume::stage_dir;

/// A model's stages: (stage name, result), the base model ("SD") first, then "+A", "+H", ...
pub type Stages = Vec<(String, EvalResult)>;

/// The cells of a grid: (cell id, its stages).
pub type Cells = Vec<(String, Stages)>;

/// The models without a sequence: (row name, result).
pub type Models = Vec<(String, EvalResult)>;

/// The metrics of every table: all of `ril eval`'s (a metric a preset does not compute shows
/// as "–").
pub fn metrics() -> Vec<Metric> {
    Metric::ALL.to_vec()
}

/// The `result` of DIR/results.json (as `ril eval` writes it).
pub fn read_result(dir: &Path) -> Result<EvalResult> {
    let text = std::fs::read_to_string(dir.join("results.json"))
        .with_context(|| format!("no results in {}", dir.display()))?;
    let v: Value = serde_json::from_str(&text)?;
    Ok(serde_json::from_value(v["result"].clone())?)
}

/// The evaluation settings an eval folder's results.json records (prompts, grid rows).
pub fn read_spec(dir: &Path) -> Result<ril_metrics::eval::EvalSpec> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no results in {}", dir.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    serde_json::from_value(v["spec"].clone())
        .with_context(|| format!("{}: no readable `spec`", path.display()))
}

/// One cell's table2.md (titled with the cell's id) and table2.csv.
pub fn stage_tables(id: &str, stages: &[(String, EvalResult)]) -> Result<(String, String)> {
    let (md, csv) = ril_metrics::report::stage_table(stages, &metrics())?;
    Ok((format!("# {id}\n\n{md}"), csv))
}

/// Writes a cell's table2.{md,csv} into `dir`.
pub fn write_stage_tables(dir: &Path, id: &str, stages: &[(String, EvalResult)]) -> Result<()> {
    let (md, csv) = stage_tables(id, stages)?;
    sd_model::write_atomic(&dir.join("table2.md"), md.as_bytes())?;
    sd_model::write_atomic(&dir.join("table2.csv"), csv.as_bytes())
}

/// The grid's files as text.
#[derive(Debug, Clone, PartialEq)]
pub struct GridReport {
    /// table3.md's table (the file adds a title).
    pub table3_md: String,
    pub table3_csv: String,
    /// table6.md (title included), when the grid has a joint model.
    pub table6_md: Option<String>,
    pub results: Value,
}

/// The grid's tables from every finished cell's stages and the models without a sequence
/// (`extra`: single-reward models, soup, joint).
pub fn render_grid(
    cells: &[(String, Stages)],
    extra: &[(String, EvalResult)],
) -> Result<GridReport> {
    let ms = metrics();
    let mut md = String::from("| cell |");
    let mut csv = String::from("cell");
    for m in &ms {
        md.push_str(&format!(" {} |", m.name()));
        csv.push_str(&format!(",{0},{0}_forgetting", m.name()));
    }
    md.push_str(&format!("\n|---|{}\n", "---|".repeat(ms.len())));
    csv.push('\n');
    // (method, metric) -> (sum of final values, sum of final forgetting, cells).
    let mut sums: BTreeMap<(String, Metric), (f64, f64, usize)> = Default::default();
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
    for method in METHODS.map(method_name) {
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
        plain.push(("base model".into(), &stages[0].1));
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
    let table6_md = extra.iter().find(|(n, _)| n == "joint").map(|(_, joint)| {
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
        format!("# Joint tuning vs RID\n\n{t6}")
    });
    let results = json!({
        "models": extra.iter().map(|(n, r)| json!({ "model": n, "result": r })).collect::<Vec<_>>(),
        "cells": cells.iter().map(|(id, st)| json!({ "cell": id, "stages": st.iter().map(|(n, r)| json!({"stage": n, "result": r})).collect::<Vec<_>>() })).collect::<Vec<_>>(),
    });
    Ok(GridReport {
        table3_md: md,
        table3_csv: csv,
        table6_md,
        results,
    })
}

/// The cells and models of a grid's results.json (what [`render_grid`] wrote).
pub fn parse_results(v: &Value) -> Result<(Cells, Models)> {
    let list = |key: &str| {
        v[key]
            .as_array()
            .with_context(|| format!("results.json has no list {key:?}"))
    };
    let name = |e: &Value, key: &str| {
        e[key]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("an entry of results.json has no {key:?}"))
    };
    let result =
        |e: &Value| -> Result<EvalResult> { Ok(serde_json::from_value(e["result"].clone())?) };
    let mut cells = Vec::new();
    for c in list("cells")? {
        let stages = c["stages"]
            .as_array()
            .context("a cell of results.json has no stages")?
            .iter()
            .map(|s| Ok((name(s, "stage")?, result(s)?)))
            .collect::<Result<_>>()?;
        cells.push((name(c, "cell")?, stages));
    }
    let models = list("models")?
        .iter()
        .map(|m| Ok((name(m, "model")?, result(m)?)))
        .collect::<Result<_>>()?;
    Ok((cells, models))
}

/// Writes DIR/results.json, table3.{md,csv}, table6.md (with a joint model), the plots and
/// report.html, and prints table3.
pub fn write_grid_report(
    out: &Path,
    cells: &[(String, Stages)],
    extra: &[(String, EvalResult)],
) -> Result<()> {
    let r = render_grid(cells, extra)?;
    if let Some(t6) = &r.table6_md {
        sd_model::write_atomic(&out.join("table6.md"), t6.as_bytes())?;
    }
    sd_model::write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&r.results)?.as_bytes(),
    )?;
    sd_model::write_atomic(
        &out.join("table3.md"),
        format!(
            "# Final stage of every cell (forgetting in parentheses)\n\n{}",
            r.table3_md
        )
        .as_bytes(),
    )?;
    sd_model::write_atomic(&out.join("table3.csv"), r.table3_csv.as_bytes())?;
    let plots = crate::plots::write(out, cells, &metrics())?;
    let ids: Vec<String> = cells.iter().map(|(id, _)| id.clone()).collect();
    super::html::write_grid_report(out, &r.table3_md, r.table6_md.as_deref(), &plots, &ids)?;
    println!("{}", r.table3_md);
    Ok(())
}

/// The models without a sequence: (row name, folder of their evaluation under the grid).
pub const EXTRA_MODELS: [(&str, &str); 5] = [
    ("single A", "single-A/eval"),
    ("single H", "single-H/eval"),
    ("single C", "single-C/eval"),
    ("soup", "soup/eval"),
    ("joint", "single-J/eval"),
];

/// Re-renders DIR's tables and reports from the evaluation results of its finished cells (those
/// with a table2.md) and of whichever models without a sequence it holds.
pub fn rerender(dir: &Path) -> Result<()> {
    let mut cells = Vec::new();
    for method in METHODS {
        for order in ORDERS {
            let id = Cell { method, order }.id();
            let cell = dir.join(&id);
            if !cell.join("table2.md").is_file() {
                continue;
            }
            let mut stages = vec![("SD".to_string(), read_result(&dir.join("eval-base"))?)];
            for (k, l) in order.chars().enumerate() {
                stages.push((format!("+{l}"), read_result(&stage_dir(&cell, k + 1))?));
            }
            write_stage_tables(&cell, &id, &stages)?;
            super::html::write_cell_report(&cell, &id)?;
            cells.push((id, stages));
        }
    }
    if cells.is_empty() {
        bail!("{} holds no finished cell", dir.display());
    }
    let mut extra = Vec::new();
    for (name, sub) in EXTRA_MODELS {
        if let Ok(r) = read_result(&dir.join(sub)) {
            extra.push((name.to_string(), r));
        }
    }
    write_grid_report(dir, &cells, &extra)
}

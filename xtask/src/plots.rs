//! Plots of a grid (SVG, with plotters): each metric across stages for every cell, and the
//! training reward of every cell over its optimiser steps (from the runs' metrics.jsonl).

use std::path::{Path, PathBuf};

use anyhow::Result;
use ril_metrics::eval::{EvalResult, Metric};
use ril_metrics::plot::chart;

/// DIR/plots/stages-METRIC.svg and DIR/plots/train-reward.svg (those with points); returns the
/// paths written, in that order.
pub fn write(
    out: &Path,
    cells: &[(String, Vec<(String, EvalResult)>)],
    metrics: &[Metric],
) -> Result<Vec<PathBuf>> {
    let dir = out.join("plots");
    std::fs::create_dir_all(&dir)?;
    let mut written = Vec::new();
    for m in metrics {
        let series: Vec<(String, Vec<(f64, f64)>)> = cells
            .iter()
            .map(|(id, stages)| {
                let pts = stages
                    .iter()
                    .enumerate()
                    .filter_map(|(i, (_, r))| r.values.get(m).map(|v| (i as f64, *v)))
                    .collect();
                (id.clone(), pts)
            })
            .collect();
        let title = format!("{} after each task (stage 0 = base model)", m.name());
        let path = dir.join(format!("stages-{}.svg", m.name()));
        if chart(&path, &title, "stage", m.name(), &series)? {
            written.push(path);
        }
    }
    let mut series = Vec::new();
    for (id, _) in cells {
        let log = out.join(id).join("run/metrics.jsonl");
        let Ok(text) = std::fs::read_to_string(&log) else {
            continue;
        };
        let pts: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .enumerate()
            .filter_map(|(i, v)| v["reward_mean"].as_f64().map(|r| (i as f64, r)))
            .collect();
        series.push((id.clone(), pts));
    }
    let path = dir.join("train-reward.svg");
    if chart(
        &path,
        "training reward of the current task, per step",
        "optimiser step (all tasks)",
        "reward",
        &series,
    )? {
        written.push(path);
    }
    Ok(written)
}

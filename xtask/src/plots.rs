//! Plots of a grid (SVG, with plotters): each metric across stages for every cell, and the
//! training reward of every cell over its optimiser steps (from the runs' metrics.jsonl).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use ril_metrics::eval::{EvalResult, Metric};

const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 215, 0),
];

/// One chart of `series` (name, points) with a title and axis names, written to `path`; false
/// (nothing written) when the series hold no point.
fn chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<bool> {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Ok(false);
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1.max(x0 + 1e-9), (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(true)
}

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

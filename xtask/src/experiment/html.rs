//! report.html of a grid folder and of each of its cells: the tables with forgetting, plots,
//! stages figures and the configs used, put together from [`ril_metrics::html`]'s pieces.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ril_metrics::html::{markdown, page, png_figure, svg_figure, text_details};

/// The section of one cell's folder: its table2.md, stages.png and config.toml (those present).
pub fn cell_section(dir: &Path, id: &str) -> Result<(String, String)> {
    let mut body = String::new();
    let table = dir.join("table2.md");
    if table.is_file() {
        let md = std::fs::read_to_string(&table)
            .with_context(|| format!("cannot read {}", table.display()))?;
        body.push_str(&markdown(&md));
    }
    let stages = dir.join("stages.png");
    if stages.is_file() {
        body.push_str(&png_figure(
            &stages,
            &format!("{id}: the eval prompts (rows) after each stage (columns)"),
        )?);
    }
    let config = dir.join("config.toml");
    if config.is_file() {
        body.push_str(&text_details(&config, &format!("{id}/config.toml"))?);
    }
    Ok((format!("Cell {id}"), body))
}

/// Writes DIR/report.html for one cell.
pub fn write_cell_report(dir: &Path, id: &str) -> Result<()> {
    let html = page(&format!("ril: cell {id}"), &[cell_section(dir, id)?]);
    sd_model::write_atomic(&dir.join("report.html"), html.as_bytes())
}

/// Writes OUT/report.html for a grid: table 3 (and 6), the SVG `plots`, then each cell's
/// section.
pub fn write_grid_report(
    out: &Path,
    table3_md: &str,
    table6_md: Option<&str>,
    plots: &[PathBuf],
    cells: &[String],
) -> Result<()> {
    let mut sections = vec![(
        "Table 3: the final stage of every cell (forgetting in parentheses)".to_string(),
        markdown(table3_md),
    )];
    if let Some(t6) = table6_md {
        sections.push(("Table 6: joint tuning vs RID".to_string(), markdown(t6)));
    }
    let mut body = String::new();
    for p in plots {
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        body.push_str(&svg_figure(p, &name)?);
    }
    if !body.is_empty() {
        sections.push(("Plots".to_string(), body));
    }
    for id in cells {
        sections.push(cell_section(&out.join(id), id)?);
    }
    let html = page("ril: the reward-sequence grid", &sections);
    sd_model::write_atomic(&out.join("report.html"), html.as_bytes())
}

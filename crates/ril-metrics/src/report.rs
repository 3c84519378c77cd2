//! Report tables: one row per stage of a task sequence (the base model first), each metric's
//! value and, from stage 1 on, its forgetting in parentheses (the paper's Table 2 layout), as
//! Markdown and CSV.

use anyhow::Result;

use crate::eval::{EvalResult, Metric};
use crate::forgetting::forgetting;

/// Markdown and CSV of `stages` (name, result), metrics in `metrics` order. Missing values are
/// shown as "–" (CSV: empty).
pub fn stage_table(
    stages: &[(String, EvalResult)],
    metrics: &[Metric],
) -> Result<(String, String)> {
    let mut md = String::from("| stage |");
    let mut csv = String::from("stage");
    for m in metrics {
        md.push_str(&format!(" {} |", m.name()));
        csv.push_str(&format!(",{0},{0}_forgetting", m.name()));
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(metrics.len()));
    md.push('\n');
    csv.push('\n');
    let mut columns = Vec::new();
    for m in metrics {
        let values: Vec<Option<f64>> = stages
            .iter()
            .map(|(_, r)| r.values.get(m).copied())
            .collect();
        let f = if values.iter().all(Option::is_some) {
            Some(forgetting(
                &values.iter().flatten().copied().collect::<Vec<_>>(),
                m.direction(),
            )?)
        } else {
            None
        };
        columns.push((values, f));
    }
    for (s, (name, _)) in stages.iter().enumerate() {
        md.push_str(&format!("| {name} |"));
        csv.push_str(name);
        for (values, f) in &columns {
            match (values[s], f) {
                (Some(v), Some(f)) if s > 0 => {
                    md.push_str(&format!(" {v:.4} ({:.4}) |", f[s]));
                    csv.push_str(&format!(",{v},{}", f[s]));
                }
                (Some(v), _) => {
                    md.push_str(&format!(" {v:.4} |"));
                    csv.push_str(&format!(",{v},"));
                }
                (None, _) => {
                    md.push_str(" – |");
                    csv.push_str(",,");
                }
            }
        }
        md.push('\n');
        csv.push('\n');
    }
    Ok((md, csv))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(a: f64, png: f64) -> EvalResult {
        let mut e = EvalResult::default();
        e.values.insert(Metric::Aesthetic, a);
        e.values.insert(Metric::PngKb, png);
        e
    }

    #[test]
    fn rows_carry_values_and_forgetting() {
        let stages = vec![
            ("SD".to_string(), r(5.23, 425.0)),
            ("A".into(), r(6.07, 440.0)),
            ("H".into(), r(5.79, 400.0)),
        ];
        let (md, csv) = stage_table(&stages, &[Metric::Aesthetic, Metric::PngKb]).unwrap();
        assert!(
            md.contains("| H | 5.7900 (0.2800) | 400.0000 (-25.0000) |"),
            "{md}"
        );
        assert!(md.contains("| SD | 5.2300 | 425.0000 |"), "{md}");
        let line = csv.lines().nth(3).unwrap();
        assert!(line.starts_with("H,5.79,0.28"), "{csv}");
    }
}

//! The forgetting measure (the paper's Eq. 3): after stage T, the largest drop of a metric
//! against any earlier stage, the base model (stage 0) included.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Whether larger values of a metric are better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Aesthetic, HPS, CLIP score.
    HigherIsBetter,
    /// PNG and JPEG size, FID.
    LowerIsBetter,
}

/// Forgetting of a metric after every stage: `values[i]` is the metric after stage i (0 = the
/// base model). Entry T (T ≥ 1) is `max_{i<T} (a_i − a_T)` when higher is better, else
/// `max_{i<T} (a_T − a_i)`; entry 0 is 0. Negative values mean the metric improved on every
/// earlier stage. Non-finite values are an error naming the stage.
pub fn forgetting(values: &[f64], direction: Direction) -> Result<Vec<f64>> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!("metric value of stage {i} is {}", values[i]);
    }
    Ok((0..values.len())
        .map(|t| {
            (0..t)
                .map(|i| match direction {
                    Direction::HigherIsBetter => values[i] - values[t],
                    Direction::LowerIsBetter => values[t] - values[i],
                })
                .fold(if t == 0 { 0.0 } else { f64::NEG_INFINITY }, f64::max)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_papers_example_baseline_aesthetic_after_hps() {
        // Table 2, baseline A -> H: aesthetic 6.07 after task A, 5.79 after task H (base 5.23):
        // forgetting after H is 6.07 - 5.79 = 0.28.
        let f = forgetting(&[5.23, 6.07, 5.79], Direction::HigherIsBetter).unwrap();
        assert!(close(f[2], 0.28), "{f:?}");
        // After A it only improved on the base: the largest "drop" is negative.
        assert!(close(f[1], 5.23 - 6.07));
    }

    #[test]
    fn lower_is_better_metrics_count_increases() {
        // PNG size in kB: 425 (base) -> 300 (after C) -> 390 (after A): forgetting 90.
        let f = forgetting(&[425.0, 300.0, 390.0], Direction::LowerIsBetter).unwrap();
        assert!(close(f[2], 90.0) && close(f[1], -125.0), "{f:?}");
    }

    #[test]
    fn the_largest_drop_over_all_earlier_stages_counts() {
        let f = forgetting(&[0.25, 0.30, 0.28, 0.20], Direction::HigherIsBetter).unwrap();
        assert!(close(f[3], 0.10) && close(f[2], 0.02), "{f:?}");
        assert!(forgetting(&[1.0, f64::NAN], Direction::HigherIsBetter).is_err());
        assert_eq!(
            forgetting(&[], Direction::HigherIsBetter).unwrap(),
            Vec::<f64>::new()
        );
    }
}

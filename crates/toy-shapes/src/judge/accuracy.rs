//! Per-attribute accuracy of predicted labels against true single-object labels, with the
//! chance level of each attribute (the share of its most frequent true class: what always
//! guessing that class would score on these very labels).

use std::collections::HashMap;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::attributes::Labels;

/// One value per judged attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PerAttribute<T> {
    pub shape: T,
    pub colour: T,
    pub size: T,
    pub position: T,
    pub background: T,
}

impl<T: Copy> PerAttribute<T> {
    /// (attribute name, value) in a fixed order.
    pub fn named(&self) -> [(&'static str, T); 5] {
        [
            ("shape", self.shape),
            ("colour", self.colour),
            ("size", self.size),
            ("position", self.position),
            ("background", self.background),
        ]
    }
}

/// How many of `n` judged images had each attribute right, and the chance level of each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accuracy {
    pub n: usize,
    pub correct: PerAttribute<usize>,
    pub chance: PerAttribute<f64>,
}

impl Accuracy {
    /// The fraction right of each attribute.
    pub fn fraction(&self) -> PerAttribute<f64> {
        let f = |c: usize| c as f64 / self.n.max(1) as f64;
        PerAttribute {
            shape: f(self.correct.shape),
            colour: f(self.correct.colour),
            size: f(self.correct.size),
            position: f(self.correct.position),
            background: f(self.correct.background),
        }
    }

    /// The lowest fraction over the attributes.
    pub fn worst(&self) -> f64 {
        self.fraction()
            .named()
            .iter()
            .map(|(_, v)| *v)
            .fold(1.0, f64::min)
    }
}

impl std::fmt::Display for Accuracy {
    /// One line per attribute: `shape       99.50 %  (995/1000; chance 34.10 %)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let frac = self.fraction();
        for ((name, c), ((_, p), (_, ch))) in self
            .correct
            .named()
            .into_iter()
            .zip(frac.named().into_iter().zip(self.chance.named()))
        {
            writeln!(
                f,
                "{name:<11}{:>7.2} %  ({c}/{}; chance {:.2} %)",
                100.0 * p,
                self.n,
                100.0 * ch
            )?;
        }
        Ok(())
    }
}

/// The share of the most frequent value.
fn majority<T: Eq + Hash>(values: impl Iterator<Item = T>) -> f64 {
    let mut counts = HashMap::new();
    let mut n = 0;
    for v in values {
        *counts.entry(v).or_insert(0usize) += 1;
        n += 1;
    }
    counts.values().copied().max().unwrap_or(0) as f64 / n.max(1) as f64
}

/// Which attributes of a predicted object and background agree with the true ones.
fn agreement(
    pb: crate::attributes::Colour,
    po: &crate::attributes::Object,
    tb: crate::attributes::Colour,
    to: &crate::attributes::Object,
) -> PerAttribute<bool> {
    PerAttribute {
        shape: po.shape == to.shape,
        colour: po.colour == to.colour,
        size: po.size == to.size,
        position: po.position == to.position,
        background: pb == tb,
    }
}

/// The share of the five judged attributes (the first object's and the background) that
/// `prediction` gets right against `truth`, or None when either has no object.
pub fn share_right(prediction: &Labels, truth: &Labels) -> Option<f64> {
    let (po, to) = (prediction.objects.first()?, truth.objects.first()?);
    let right = agreement(prediction.background, po, truth.background, to).named();
    Some(right.iter().filter(|(_, r)| *r).count() as f64 / right.len() as f64)
}

/// Compares `predictions` with `truth` item by item on the first object's attributes and the
/// background. Errors (naming the item) if the lengths differ, the list is empty, or an item
/// of either has no object or a truth item has more than one (the judge reads one object).
pub fn accuracy(predictions: &[Labels], truth: &[Labels]) -> Result<Accuracy, String> {
    if predictions.len() != truth.len() {
        return Err(format!(
            "{} predictions for {} labels",
            predictions.len(),
            truth.len()
        ));
    }
    if truth.is_empty() {
        return Err("no labels to compare".into());
    }
    let mut correct = PerAttribute::<usize>::default();
    for (i, (p, t)) in predictions.iter().zip(truth).enumerate() {
        let (Some(po), [to]) = (p.objects.first(), t.objects.as_slice()) else {
            return Err(format!(
                "item {i}: {} predicted and {} true objects (the judge compares one)",
                p.objects.len(),
                t.objects.len()
            ));
        };
        let right = agreement(p.background, po, t.background, to);
        correct.shape += right.shape as usize;
        correct.colour += right.colour as usize;
        correct.size += right.size as usize;
        correct.position += right.position as usize;
        correct.background += right.background as usize;
    }
    let first = |t: &Labels| t.objects[0];
    let chance = PerAttribute {
        shape: majority(truth.iter().map(|t| first(t).shape)),
        colour: majority(truth.iter().map(|t| first(t).colour)),
        size: majority(truth.iter().map(|t| first(t).size)),
        position: majority(truth.iter().map(|t| first(t).position)),
        background: majority(truth.iter().map(|t| t.background)),
    };
    Ok(Accuracy {
        n: truth.len(),
        correct,
        chance,
    })
}

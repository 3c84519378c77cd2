//! Model soup over LoRA-equipped models sharing one base: `θ = Σ_k c_k θ_k` with Σ c_k = 1, which
//! for a shared base is the base plus `Σ_k c_k Δ_k`, Δ_k being model k's merged update per layer.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use burn::prelude::*;

use crate::LoraModel;

/// Coefficients must be finite and sum to 1 (within 1e-6, for decimal inputs like 1/3).
pub fn check_coefficients(coefficients: &[f64]) -> Result<()> {
    if coefficients.is_empty() {
        bail!("a model soup needs at least one model");
    }
    if let Some(c) = coefficients.iter().find(|c| !c.is_finite()) {
        bail!("soup coefficient {c} is not finite");
    }
    let sum: f64 = coefficients.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        bail!("soup coefficients {coefficients:?} sum to {sum}, not 1");
    }
    Ok(())
}

/// Folds `Σ_k c_k Δ_k` of `models` into the base weights of `target`, a model with the same base
/// weights; its own pairs are dropped, so it ends as a plain model holding the soup's weights.
pub fn soup<B: Backend, M: LoraModel<B>>(
    target: &mut M,
    models: &[&M],
    coefficients: &[f64],
) -> Result<()> {
    check_coefficients(coefficients)?;
    if models.len() != coefficients.len() {
        bail!(
            "{} models but {} soup coefficients",
            models.len(),
            coefficients.len()
        );
    }
    let mut sum: BTreeMap<String, Tensor<B, 2>> = BTreeMap::new();
    for (model, &c) in models.iter().zip(coefficients) {
        model.visit_lora(&mut |path, layer| {
            if let Some(delta) = layer.delta() {
                let scaled = delta * c;
                let entry = match sum.remove(path) {
                    Some(acc) => acc + scaled,
                    None => scaled,
                };
                sum.insert(path.to_string(), entry);
            }
        });
    }
    let mut mismatch = None;
    target.visit_lora_mut(&mut |path, layer| {
        layer.unmerge();
        layer.lora.clear();
        if let Some(delta) = sum.remove(path) {
            if delta.dims() != layer.dims() {
                mismatch.get_or_insert(format!(
                    "layer {path}: soup update {:?} vs layer {:?}",
                    delta.dims(),
                    layer.dims()
                ));
                return;
            }
            layer.add_to_weight(delta);
        }
    });
    if let Some(m) = mismatch {
        bail!("{m}");
    }
    if let Some(path) = sum.keys().next() {
        bail!("soup model layer {path} does not exist in the target model");
    }
    Ok(())
}

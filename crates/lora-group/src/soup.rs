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

/// The model soup of single-run LoRA files as one LoRA file: for every layer, the pairs of all
/// files side by side, each file's `c_k · alpha_k / r_k` folded into its `lora_B` columns, so the
/// file's update is exactly `Σ_k c_k Δ_k` (rank = the largest sum of ranks, zero-padded; alpha =
/// rank, i.e. scale 1). It loads with `ril sample --lora` and diffusers' `load_lora_weights`.
pub fn soup_files(
    files: &[(std::path::PathBuf, f64)],
    prefix: &str,
    out: &std::path::Path,
) -> Result<crate::LoraFileInfo> {
    let coefficients: Vec<f64> = files.iter().map(|(_, c)| *c).collect();
    check_coefficients(&coefficients)?;
    let soup = stack_files(files, prefix)?;
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "ril_soup".to_string(),
        serde_json::json!(
            files
                .iter()
                .map(|(p, c)| (p.display().to_string(), c))
                .collect::<Vec<_>>()
        )
        .to_string(),
    );
    soup.write_peft(prefix, out, &metadata, crate::io::FileDtype::F32)?;
    Ok(crate::LoraFileInfo {
        layers: soup.pairs.len(),
        rank: soup.rank,
        alpha: soup.alpha,
        task: 0,
    })
}

/// The LoRA files `(file, c_k)` as one set of pairs whose update is exactly `Σ_k c_k Δ_k`: per
/// layer the files' pairs side by side, each file's `c_k · alpha_k / r_k` folded into its
/// `lora_B` columns (rank = the largest sum of ranks, zero-padded; alpha = rank, i.e. scale 1).
/// A layer of different sizes in two files is an error naming the file and the layer.
pub fn stack_files(
    files: &[(std::path::PathBuf, f64)],
    prefix: &str,
) -> Result<crate::io::LoraFile> {
    // layer -> [(A rows [r, in], B [out, r], factor)]
    type Part = (Vec<usize>, Vec<f32>, Vec<usize>, Vec<f32>, f64);
    let mut layers: BTreeMap<String, Vec<Part>> = BTreeMap::new();
    let mut conv = std::collections::BTreeSet::new();
    for (path, c) in files {
        let file = crate::io::read_lora(path, prefix)?;
        conv.extend(file.conv.iter().cloned());
        for (layer, (a, b)) in file.pairs {
            let r = a.shape[0];
            let factor = c * file.alpha / r as f64;
            let (sa, sb) = (a.shape.to_vec(), b.shape.to_vec());
            let va: Vec<f32> = a.into_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let vb: Vec<f32> = b.into_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let parts = layers.entry(layer.clone()).or_default();
            if let Some((pa, _, pb, _, _)) = parts.first()
                && (pa[1] != sa[1] || pb[0] != sb[0])
            {
                bail!(
                    "{}: layer `{layer}` is {}x{} here but {}x{} in an earlier file",
                    path.display(),
                    sa[1],
                    sb[0],
                    pa[1],
                    pb[0]
                );
            }
            parts.push((sa, va, sb, vb, factor));
        }
    }
    let rank = layers
        .values()
        .map(|p| p.iter().map(|(sa, ..)| sa[0]).sum::<usize>())
        .max()
        .unwrap_or(0);
    let mut pairs = BTreeMap::new();
    for (layer, parts) in layers {
        let (d_in, d_out) = (parts[0].0[1], parts[0].2[0]);
        let mut a = vec![0f32; rank * d_in];
        let mut b = vec![0f32; d_out * rank];
        let mut row = 0;
        for (sa, va, _, vb, factor) in &parts {
            let r = sa[0];
            a[row * d_in..(row + r) * d_in].copy_from_slice(va);
            for o in 0..d_out {
                for j in 0..r {
                    b[o * rank + row + j] = (vb[o * r + j] as f64 * factor) as f32;
                }
            }
            row += r;
        }
        pairs.insert(
            layer,
            (
                TensorData::new(a, [rank, d_in]),
                TensorData::new(b, [d_out, rank]),
            ),
        );
    }
    Ok(crate::io::LoraFile {
        pairs,
        rank,
        alpha: rank as f64,
        conv,
    })
}

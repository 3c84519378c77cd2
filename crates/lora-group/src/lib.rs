//! LoRA adapter groups for Burn models (the paper's first component): when task t arrives,
//! every targeted layer gains a new low-rank pair, all earlier pairs and the base weights are
//! frozen, and the layer computes `y = W x + Σ_{i≤t} s_i · B_i A_i x`. Pairs are saved and loaded
//! as peft/diffusers LoRA files (and written in the kohya / A1111 layout), merged into the base
//! for inference, and averaged (model soup). The files ril writes carry a SHA-256 of their
//! tensors that it checks when reading them back.

pub mod checksum;
pub mod io;
pub mod kohya;
pub mod layer;
pub mod soup;
pub mod targets;

pub use io::{LoraFileInfo, export_task, import_task};
pub use layer::{LoraLinear, LoraPair};
pub use soup::{soup, soup_files};
pub use targets::Targets;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::prelude::*;

/// A model whose LoRA-capable layers can be listed with their checkpoint paths (e.g.
/// `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`).
pub trait LoraModel<B: Backend>: Module<B> {
    /// Calls `f(path, layer)` for every LoRA-capable layer, in a fixed order.
    fn visit_lora(&self, f: &mut dyn FnMut(&str, &LoraLinear<B>));
    /// As [`visit_lora`](Self::visit_lora), mutably.
    fn visit_lora_mut(&mut self, f: &mut dyn FnMut(&str, &mut LoraLinear<B>));
}

/// The number of tasks that have added pairs (one more than the largest task index).
pub fn task_count<B: Backend, M: LoraModel<B>>(model: &M) -> usize {
    let mut n = 0;
    model.visit_lora(&mut |_, layer| {
        for p in &layer.lora {
            n = n.max(p.task + 1);
        }
    });
    n
}

/// Starts a new task: freezes the whole model (base weights and every existing pair), then adds a
/// trainable pair of `rank` and `alpha` to every layer that `targets` selects. Returns the new task's index and the
/// number of adapted layers; a target that selects no layer is an error.
pub fn push_task<B: Backend, M: LoraModel<B>>(
    model: &mut M,
    targets: &Targets,
    rank: usize,
    alpha: f64,
) -> Result<(usize, usize)> {
    if rank == 0 {
        bail!("LoRA rank must be at least 1");
    }
    if !(alpha.is_finite() && alpha > 0.0) {
        bail!("LoRA alpha must be a positive number, got {alpha}");
    }
    let mut matched = 0;
    // The narrowest adapted layer bounds the rank: a pair wider than min(in, out) adds no
    // expressiveness and, for a huge rank, exhausts memory before the first step.
    let mut narrowest: Option<(usize, String)> = None;
    model.visit_lora(&mut |path, layer| {
        if targets.matches(path) {
            matched += 1;
            let [d_in, d_out] = layer.base.weight.dims();
            let width = d_in.min(d_out);
            if narrowest.as_ref().is_none_or(|(w, _)| width < *w) {
                narrowest = Some((width, path.to_string()));
            }
        }
    });
    if matched == 0 {
        bail!(
            "LoRA target {} matches no layer of the model",
            targets.describe()
        );
    }
    if let Some((width, path)) = narrowest
        && rank > width
    {
        bail!(
            "LoRA rank {rank} is larger than the adapted layer {path} (min(in, out) = {width}); the rank must be at most the narrowest adapted layer's width"
        );
    }
    let task = task_count(model);
    *model = model.clone().no_grad();
    model.visit_lora_mut(&mut |path, layer| {
        layer.unmerge();
        if targets.matches(path) {
            layer.push_task(task, rank, alpha);
        }
    });
    Ok((task, matched))
}

/// Folds every pair into its base weight (for inference).
pub fn merge<B: Backend, M: LoraModel<B>>(model: &mut M) {
    model.visit_lora_mut(&mut |_, layer| layer.merge());
}

/// Undoes [`merge`].
pub fn unmerge<B: Backend, M: LoraModel<B>>(model: &mut M) {
    model.visit_lora_mut(&mut |_, layer| layer.unmerge());
}

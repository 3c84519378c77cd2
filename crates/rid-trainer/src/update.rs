//! The optimiser step of a task: gradients of the task's LoRA pairs gathered over micro-batches,
//! averaged, clipped by global norm, AdamW on the pairs, and the EMA teacher's update.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use lora_group::LoraModel;
use sd_model::UNet2DConditionModel;

use crate::adamw::{AdamW, clip_global_norm};

/// The current task's pairs of a model as named tensors (`{layer}.lora_A` / `.lora_B`).
pub fn task_pairs<Bk: Backend, M: LoraModel<Bk>>(
    model: &M,
    task: usize,
) -> BTreeMap<String, Tensor<Bk, 2>> {
    let mut out = BTreeMap::new();
    model.visit_lora(&mut |path, layer| {
        for p in layer.lora.iter().filter(|p| p.task == task) {
            out.insert(format!("{path}.lora_A"), p.lora_A.val());
            out.insert(format!("{path}.lora_B"), p.lora_B.val());
        }
    });
    out
}

/// Sets the current task's pairs from named tensors (`map` turns a stored tensor into the
/// parameter's value, e.g. marking it trainable).
pub fn set_task_pairs<Bk: Backend, V: Backend, M: LoraModel<Bk>>(
    model: &mut M,
    task: usize,
    values: &BTreeMap<String, Tensor<V, 2>>,
    map: impl Fn(Tensor<V, 2>) -> Tensor<Bk, 2>,
) -> Result<()> {
    let mut problem = None;
    let mut used = 0;
    model.visit_lora_mut(&mut |path, layer| {
        for p in layer.lora.iter_mut().filter(|p| p.task == task) {
            for (name, param) in [("lora_A", &mut p.lora_A), ("lora_B", &mut p.lora_B)] {
                let key = format!("{path}.{name}");
                match values.get(&key) {
                    Some(v) if v.dims() == param.val().dims() => {
                        *param = Param::initialized(param.id, map(v.clone()));
                        used += 1;
                    }
                    Some(v) => {
                        problem.get_or_insert(format!(
                            "tensor {key} has shape {:?}, the model's pair has {:?}",
                            v.dims(),
                            param.val().dims()
                        ));
                    }
                    None => {
                        problem.get_or_insert(format!("checkpoint lacks tensor {key}"));
                    }
                }
            }
        }
    });
    if let Some(p) = problem {
        bail!("{p}");
    }
    if used != values.len() {
        let mut known = std::collections::BTreeSet::new();
        model.visit_lora(&mut |path, _| {
            known.insert(format!("{path}.lora_A"));
            known.insert(format!("{path}.lora_B"));
        });
        if let Some(k) = values.keys().find(|k| !known.contains(*k)) {
            bail!("tensor {k} names no adapted layer of the model");
        }
    }
    Ok(())
}

/// Adds the gradients of task `k`'s pairs in `grads` to `acc` (by name).
pub fn accumulate_grads<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    k: usize,
    grads: &B::Gradients,
    acc: &mut BTreeMap<String, Tensor<B::InnerBackend, 2>>,
) -> Result<()> {
    for (name, p) in task_pairs(unet, k) {
        let g = p
            .grad(grads)
            .with_context(|| format!("no gradient for {name}"))?;
        let sum = match acc.remove(&name) {
            Some(a) => a + g,
            None => g,
        };
        acc.insert(name, sum);
    }
    Ok(())
}

/// The constants of an update.
#[derive(Debug, Clone, Copy)]
pub struct UpdateParams {
    /// Multiplies the accumulated gradients (1 / micro-batches).
    pub grad_scale: f64,
    pub lr: f64,
    pub weight_decay: f64,
    /// Global-norm clip (0: none).
    pub grad_clip: f64,
    /// EMA momentum of the teacher.
    pub ema_momentum: f64,
}

/// Averages and clips `grads`, applies AdamW to task `k`'s pairs of `unet`, then moves the
/// teacher's copy by EMA. Returns the gradient norm before clipping; a non-finite norm is an
/// error (nothing is updated).
pub fn apply_update<B: AutodiffBackend>(
    unet: &mut UNet2DConditionModel<B>,
    teacher: &mut UNet2DConditionModel<B::InnerBackend>,
    adam: &mut AdamW<B::InnerBackend>,
    k: usize,
    grads: BTreeMap<String, Tensor<B::InnerBackend, 2>>,
    p: &UpdateParams,
) -> Result<f64> {
    let names: Vec<String> = grads.keys().cloned().collect();
    let mut gs: Vec<Tensor<B::InnerBackend, 2>> =
        grads.into_values().map(|g| g * p.grad_scale).collect();
    let grad_norm = clip_global_norm(&mut gs, p.grad_clip);
    if !grad_norm.is_finite() {
        bail!("the gradient norm is {grad_norm}");
    }
    let current = task_pairs(unet, k);
    let updates: Vec<_> = names
        .iter()
        .zip(gs)
        .map(|(n, g)| (n.clone(), current[n].clone().inner(), g))
        .collect();
    let new = adam.update(updates, p.lr, p.weight_decay);
    let new: BTreeMap<String, Tensor<B::InnerBackend, 2>> =
        names.iter().cloned().zip(new).collect();
    set_task_pairs(unet, k, &new, |t| Tensor::from_inner(t).require_grad())?;
    // EMA teacher: θ' ← a θ' + (1 − a) θ for this task's pair.
    let a = p.ema_momentum;
    let ema: BTreeMap<String, Tensor<B::InnerBackend, 2>> = task_pairs(teacher, k)
        .into_iter()
        .map(|(n, t)| (n.clone(), t * a + new[&n].clone() * (1.0 - a)))
        .collect();
    set_task_pairs(teacher, k, &ema, |t| t)?;
    Ok(grad_norm)
}

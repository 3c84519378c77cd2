//! The training loop the toy world's small models share (the judge, the toy reward models):
//! AdamW with the learning rate decayed linearly from `lr` to 0, batch `t` = items
//! `t*B .. (t+1)*B` of a stream, and a loss checked finite at every step; and the reading of
//! their TOML configs.

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::generate::{Sample, Spec};

/// Reads a TOML config file of `what` (e.g. "judge config"); errors name the file.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a {what}: {e}", path.display()))
}

/// The optimisation of a [`fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fit {
    /// Optimiser steps.
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate (AdamW), decayed linearly to 0 at the last step.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
}

impl Fit {
    /// Checks the values (errors name the config field).
    pub fn check(&self) -> Result<()> {
        if self.steps == 0 || self.batch_size == 0 {
            bail!("steps and batch_size must be at least 1");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("lr must be a positive number, got {}", self.lr);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!(
                "weight_decay must be a non-negative number, got {}",
                self.weight_decay
            );
        }
        Ok(())
    }
}

/// Trains `model` on `spec`'s stream: each step's `loss(model, batch)` (a one-element tensor) is
/// recorded and minimised; `on_step(step, loss)` follows every step. `what` names the model in
/// the error a non-finite loss gives.
pub fn fit<B, M>(
    mut model: M,
    fit: &Fit,
    spec: &Spec,
    what: &str,
    mut loss: impl FnMut(&M, &[Sample]) -> Result<Tensor<B, 1>>,
    mut on_step: impl FnMut(usize, f32),
) -> Result<(M, Vec<f32>)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let mut optim = AdamWConfig::new()
        .with_weight_decay(fit.weight_decay as f32)
        .init::<B, M>();
    let mut losses = Vec::with_capacity(fit.steps);
    for step in 0..fit.steps {
        let first = (step * fit.batch_size) as u64;
        let samples: Vec<Sample> = (0..fit.batch_size as u64)
            .map(|i| spec.sample(first + i))
            .collect();
        let l = loss(&model, &samples)?;
        let value = l.clone().into_scalar().elem::<f32>();
        if !value.is_finite() {
            bail!("{what} training diverged at step {step} (loss {value}); lower lr");
        }
        losses.push(value);
        let grads = GradientsParams::from_grads(l.backward(), &model);
        let lr = fit.lr * (1.0 - step as f64 / fit.steps as f64);
        model = optim.step(lr, model, grads);
        on_step(step, value);
    }
    Ok((model, losses))
}

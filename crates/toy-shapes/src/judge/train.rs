//! Training the judge on the single-object train stream (AdamW, summed cross-entropy of the five
//! heads, learning rate decayed linearly to zero) and evaluating it on the held-out stream.
//!
//! Reproducible: the initial weights come from the config's seed through SplitMix64 (not from
//! the backend's global generator, which other code may reseed), and batch `t` is items
//! `t*B .. (t+1)*B` of `Spec::new(seed, Train).objects(One)`. On one machine the same config
//! gives the same weights bit for bit (tested); another CPU or thread count may round
//! differently in the backend's matrix products.

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, ModuleMapper, Param};
use burn::nn::loss::CrossEntropyLoss;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use super::{Accuracy, Judge, JudgeConfig, JudgeNet, accuracy, images_to_tensor};
use crate::attributes::Labels;
use crate::fit::{Fit, fit};
use crate::generate::{Objects, Sample, Spec, Split};
use crate::rng::SplitMix64;

/// A judge training run (`configs/toy/judge.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seeds the initial weights and selects the training stream.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate (AdamW), decayed linearly to 0 at the last step.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Side of the images (rendered at this size for training).
    pub image_size: usize,
    /// The held-out evaluation after training: its seed and item count.
    pub eval_seed: u64,
    pub eval_count: usize,
}

impl TrainConfig {
    /// Reads and checks a TOML file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = crate::fit::read_toml(path, "judge config")?;
        config.check().with_context(|| path.display().to_string())?;
        Ok(config)
    }

    pub fn check(&self) -> Result<()> {
        self.fit().check()?;
        if self.eval_count == 0 {
            bail!("eval_count must be at least 1");
        }
        self.judge().check()
    }

    /// The optimisation.
    pub fn fit(&self) -> Fit {
        Fit {
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
        }
    }

    /// The architecture trained.
    pub fn judge(&self) -> JudgeConfig {
        JudgeConfig::new().with_image_size(self.image_size)
    }
}

/// Replaces every float parameter with seeded values: He-uniform (bound sqrt(6 / fan_in)) for
/// convolution kernels [out, in, k, k] and linear weights [in, out], zero for biases.
struct SeededInit(SplitMix64);

impl<B: Backend> ModuleMapper<B> for SeededInit {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let fan_in = match D {
            4 => dims[1] * dims[2] * dims[3],
            2 => dims[0],
            _ => 0,
        };
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if fan_in == 0 {
            vec![0.0; n]
        } else {
            let bound = (6.0 / fan_in as f32).sqrt();
            (0..n).map(|_| bound * self.0.signed()).collect()
        };
        // A tensor made from data does not track gradients: keep the parameter's setting.
        let t = Tensor::from_data(TensorData::new(values, dims), &tensor.device())
            .set_require_grad(tensor.is_require_grad());
        Param::from_mapped_value(id, t, mapper)
    }
}

/// The class indices of each head for a batch of labels.
fn targets<B: Backend>(labels: &[Labels], device: &B::Device) -> [Tensor<B, 1, Int>; 5] {
    let col = |f: &dyn Fn(&Labels) -> usize| {
        let v: Vec<i64> = labels.iter().map(|l| f(l) as i64).collect();
        Tensor::from_data(TensorData::new(v, [labels.len()]), device)
    };
    [
        col(&|l| l.objects[0].shape.index()),
        col(&|l| l.objects[0].colour.index()),
        col(&|l| l.objects[0].size.index()),
        col(&|l| l.objects[0].position.index()),
        col(&|l| l.background.index()),
    ]
}

/// The result of [`train`].
#[derive(Debug)]
pub struct TrainReport<B: Backend> {
    pub judge: Judge<B>,
    /// The training loss (sum of the five heads' mean cross-entropies) at every step.
    pub losses: Vec<f32>,
}

/// Trains a judge as `config` says, calling `on_step(step, loss)` after each step.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    device: &B::Device,
    mut on_step: impl FnMut(usize, f32),
) -> Result<TrainReport<B::InnerBackend>> {
    config.check()?;
    let judge_config = config.judge();
    let net: JudgeNet<B> = judge_config.init(device)?;
    let net = net.map(&mut SeededInit(SplitMix64::keyed(&[
        config.seed,
        0x4A55_4447,
    ])));
    let ce = CrossEntropyLoss::new(None, device);
    let spec = Spec::new(config.seed, Split::Train)
        .objects(Objects::One)
        .size(config.image_size as u32);
    let loss = |net: &JudgeNet<B>, samples: &[Sample]| {
        let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
        let labels: Vec<_> = samples.iter().map(|s| s.labels.clone()).collect();
        let x = images_to_tensor::<B>(&images, config.image_size, device);
        let [t_shape, t_colour, t_size, t_position, t_background] = targets::<B>(&labels, device);
        let l = net.forward(x);
        Ok(ce.forward(l.shape, t_shape)
            + ce.forward(l.colour, t_colour)
            + ce.forward(l.size, t_size)
            + ce.forward(l.position, t_position)
            + ce.forward(l.background, t_background))
    };
    let (net, losses) = fit(net, &config.fit(), &spec, "judge", loss, &mut on_step)?;
    Ok(TrainReport {
        judge: Judge {
            config: judge_config,
            net: net.valid(),
        },
        losses,
    })
}

/// The judge's accuracy on items `0..count` of the single-object held-out stream of `seed`
/// (rendered at 64 pixels, the toy world's size, and resized to the judge's).
pub fn evaluate<B: Backend>(
    judge: &Judge<B>,
    seed: u64,
    count: usize,
    device: &B::Device,
) -> Result<Accuracy> {
    let spec = Spec::new(seed, Split::Heldout).objects(Objects::One);
    let mut predictions = Vec::with_capacity(count);
    let mut truth = Vec::with_capacity(count);
    for start in (0..count).step_by(64) {
        let samples: Vec<_> = (start..count.min(start + 64))
            .map(|i| spec.sample(i as u64))
            .collect();
        let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
        predictions.extend(judge.predict_images(&images, device));
        truth.extend(samples.into_iter().map(|s| s.labels));
    }
    accuracy(&predictions, &truth).map_err(anyhow::Error::msg)
}

//! The toy aesthetic reward: the aesthetic reward's own architecture (a CLIP vision tower whose
//! L2-normalised embedding the LAION MLP layout scores, `rewards::aesthetic::Aesthetic`) trained
//! from scratch to predict the toy world's stated beauty ([`toy_shapes::beauty`]) of
//! single-object images, with AdamW on the squared error. It writes what `ril score --reward
//! aesthetic` reads: a transformers `CLIPVisionModelWithProjection` folder and the MLP file.
//!
//! Reproducible on one machine: the initial weights come from the config's seed through
//! SplitMix64, and batch `t` is items `t*B .. (t+1)*B` of the single-object train stream
//! (the loop is `toy_shapes::fit`, the judge's).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rewards::Reward;
use rewards::aesthetic::{Aesthetic, AestheticMlp};
use rewards::clip_vision::ClipVisionConfig;
use serde::{Deserialize, Serialize};
use toy_shapes::beauty::beauty;
use toy_shapes::fit::{Fit, fit};
use toy_shapes::judge::images_to_tensor;
use toy_shapes::rng::SplitMix64;
use toy_shapes::{Labels, Objects, Sample, Spec, Split};

use crate::seeded::SeededInit;

/// The vision tower's shape (transformers' `CLIPVisionConfig` fields; every one required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub image_size: usize,
    pub patch_size: usize,
    /// The embedding width: 768, the width the LAION MLP layout takes.
    pub projection_dim: usize,
}

impl TowerConfig {
    /// The tower as the reward code builds it (quick_gelu, LayerNorm epsilon 1e-5, as openai CLIP).
    pub fn clip(&self) -> ClipVisionConfig {
        ClipVisionConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            image_size: self.image_size,
            patch_size: self.patch_size,
            projection_dim: self.projection_dim,
            ..ClipVisionConfig::vit_l14()
        }
    }
}

/// A toy aesthetic training run (`configs/toy/aesthetic.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AestheticTrainConfig {
    /// Seeds the initial weights and selects the training stream.
    pub seed: u64,
    /// Optimiser steps.
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate (AdamW), decayed linearly to 0 at the last step.
    pub lr: f64,
    pub weight_decay: f64,
    /// The held-out evaluation after training: its seed and item count.
    pub eval_seed: u64,
    pub eval_count: usize,
    pub tower: TowerConfig,
}

impl AestheticTrainConfig {
    /// Reads and checks a TOML file; errors name the file and field.
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = toy_shapes::fit::read_toml(path, "toy aesthetic config")?;
        config.check().with_context(|| path.display().to_string())?;
        Ok(config)
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

    pub fn check(&self) -> Result<()> {
        self.fit().check()?;
        if self.eval_count == 0 {
            bail!("eval_count must be at least 1");
        }
        let t = &self.tower;
        if t.projection_dim != 768 {
            bail!(
                "tower.projection_dim must be 768 (the LAION MLP's input), got {}",
                t.projection_dim
            );
        }
        if t.patch_size == 0 || !t.image_size.is_multiple_of(t.patch_size) {
            bail!(
                "tower.patch_size ({}) must divide tower.image_size ({})",
                t.patch_size,
                t.image_size
            );
        }
        if t.num_attention_heads == 0 || !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            bail!("tower.num_attention_heads must divide tower.hidden_size");
        }
        Ok(())
    }
}

/// Samples as images [n, 3, 64, 64] in [-1, 1] (the range the rewards take) and their labels.
fn tensors<B: Backend>(samples: &[Sample], device: &B::Device) -> (Tensor<B, 4>, Vec<Labels>) {
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let x = images_to_tensor::<B>(&images, 64, device) * 2.0 - 1.0;
    (x, samples.iter().map(|s| s.labels.clone()).collect())
}

fn targets<B: Backend>(labels: &[Labels], device: &B::Device) -> Tensor<B, 1> {
    let v: Vec<f32> = labels.iter().map(beauty).collect();
    Tensor::from_data(TensorData::new(v, [labels.len()]), device)
}

/// The result of [`train`].
pub struct Trained<B: Backend> {
    pub model: Aesthetic<B>,
    /// The mean squared error of every step's batch.
    pub losses: Vec<f32>,
}

/// Trains the toy aesthetic reward as `config` says, calling `on_step(step, loss)` after each
/// step.
pub fn train<B: AutodiffBackend>(
    config: &AestheticTrainConfig,
    device: &B::Device,
    on_step: impl FnMut(usize, f32),
) -> Result<Trained<B::InnerBackend>> {
    config.check()?;
    let model = Aesthetic::<B> {
        clip: config.tower.clip().init(device)?,
        mlp: AestheticMlp::new(768, device),
    };
    let model = model.map(&mut SeededInit::new(SplitMix64::keyed(&[
        config.seed,
        0x4145_5354,
    ])));
    let spec = Spec::new(config.seed, Split::Train).objects(Objects::One);
    let loss = |model: &Aesthetic<B>, samples: &[Sample]| {
        let (x, labels) = tensors::<B>(samples, device);
        let err = model.score(x, &[])? - targets::<B>(&labels, device);
        Ok(err.powi_scalar(2).mean())
    };
    let (model, losses) = fit(model, &config.fit(), &spec, "toy aesthetic", loss, on_step)?;
    Ok(Trained {
        model: model.valid(),
        losses,
    })
}

/// How well the reward predicts beauty on held-out images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heldout {
    pub seed: u64,
    pub count: usize,
    /// Root mean squared error against beauty.
    pub rmse: f64,
    /// Pearson correlation with beauty.
    pub pearson: f64,
    /// Beauty's own standard deviation on these items (the RMSE of always guessing the mean).
    pub beauty_std: f64,
    /// The reward of items 0..8, to check a loaded copy against.
    pub first_scores: Vec<f32>,
}

/// The reward's scores of items `0..count` of the single-object held-out stream of `seed`, and
/// those items' beauty.
pub fn scores<B: Backend>(
    model: &Aesthetic<B>,
    seed: u64,
    count: usize,
    device: &B::Device,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let spec = Spec::new(seed, Split::Heldout).objects(Objects::One);
    let (mut pred, mut truth) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for start in (0..count).step_by(64) {
        let n = 64.min(count - start);
        let samples: Vec<Sample> = (start..start + n).map(|i| spec.sample(i as u64)).collect();
        let (x, labels) = tensors::<B>(&samples, device);
        let s = model.score(x, &[])?.into_data().convert::<f32>();
        pred.extend(s.to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?);
        truth.extend(labels.iter().map(beauty));
    }
    Ok((pred, truth))
}

/// [`scores`] summarised.
pub fn evaluate<B: Backend>(
    model: &Aesthetic<B>,
    seed: u64,
    count: usize,
    device: &B::Device,
) -> Result<Heldout> {
    let (p, t) = scores(model, seed, count, device)?;
    let n = p.len() as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (mp, mt) = (mean(&p), mean(&t));
    let (mut sxy, mut sxx, mut syy, mut se) = (0.0, 0.0, 0.0, 0.0);
    for (&a, &b) in p.iter().zip(&t) {
        let (a, b) = (a as f64, b as f64);
        sxy += (a - mp) * (b - mt);
        sxx += (a - mp).powi(2);
        syy += (b - mt).powi(2);
        se += (a - b).powi(2);
    }
    Ok(Heldout {
        seed,
        count,
        rmse: (se / n).sqrt(),
        pearson: sxy / (sxx * syy).sqrt().max(f64::MIN_POSITIVE),
        beauty_std: (syy / n).sqrt(),
        first_scores: p.iter().take(8).copied().collect(),
    })
}

/// The transformers config.json of the tower.
pub fn tower_json(t: &TowerConfig) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "image_size": t.image_size,
        "patch_size": t.patch_size,
        "projection_dim": t.projection_dim,
        "num_channels": 3,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    })
}

/// Writes `out/clip/{config.json, model.safetensors}`, `out/mlp.safetensors` and the `extra`
/// files into the new folder `out` as a whole (`crate::output::write_new_dir`: an occupied `out`
/// is refused).
pub fn save<B: Backend>(
    model: &Aesthetic<B>,
    tower: &TowerConfig,
    out: &Path,
    extra: &[(&str, Vec<u8>)],
) -> Result<()> {
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    crate::output::write_new_dir(out, |tmp| {
        std::fs::create_dir_all(tmp.join("clip"))
            .with_context(|| format!("cannot create {}", tmp.join("clip").display()))?;
        lora_group::io::write_atomic(
            &tmp.join("clip/config.json"),
            &serde_json::to_vec_pretty(&tower_json(tower))?,
        )?;
        sd_model::save::save_module(&model.clip, &tmp.join("clip/model.safetensors"), "", &meta)?;
        sd_model::save::save_module(&model.mlp, &tmp.join("mlp.safetensors"), "", &meta)?;
        for (file, bytes) in extra {
            lora_group::io::write_atomic(&tmp.join(file), bytes)?;
        }
        Ok(())
    })
}

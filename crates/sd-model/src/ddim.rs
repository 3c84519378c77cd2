//! diffusers `DDIMScheduler` as plain maths: the beta schedule, timestep spacing and the update
//! with eta, on f64 coefficients computed from f32 `alphas_cumprod` exactly as diffusers stores
//! them.

use std::path::Path;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::read_config;

/// The fields of diffusers' scheduler config that DDIM uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DdimConfig {
    /// Training steps (1000).
    pub num_train_timesteps: usize,
    /// First beta (SD 1.5: 0.00085).
    pub beta_start: f64,
    /// Last beta (SD 1.5: 0.012).
    pub beta_end: f64,
    /// "scaled_linear" (SD 1.5), "linear" or "squaredcos_cap_v2".
    pub beta_schedule: String,
    /// Use alpha_bar = 1 after the last step (SD 1.5: false, then alphas_cumprod[0]).
    pub set_alpha_to_one: bool,
    /// Added to every inference timestep (SD 1.5: 1).
    pub steps_offset: usize,
    /// "leading" (SD 1.5), "trailing" or "linspace".
    pub timestep_spacing: String,
    /// "epsilon" (SD 1.5) or "v_prediction".
    pub prediction_type: String,
    /// Must be false (SD 1.5).
    pub clip_sample: bool,
    /// Must be false.
    pub thresholding: bool,
    /// Rescale the betas to zero terminal SNR (Lin et al. 2024, diffusers'
    /// `rescale_zero_terminal_snr`); needs v-prediction.
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self::sd15()
    }
}

/// The most training timesteps a scheduler config may name.
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

impl DdimConfig {
    /// SD 1.5's `scheduler/scheduler_config.json` (runwayml/stable-diffusion-v1-5) as used with
    /// DDIMScheduler.
    pub fn sd15() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            set_alpha_to_one: false,
            steps_offset: 1,
            timestep_spacing: "leading".into(),
            prediction_type: "epsilon".into(),
            clip_sample: false,
            thresholding: false,
            rescale_betas_zero_snr: false,
        }
    }

    /// Reads `scheduler_config.json` (unknown fields are ignored: a PNDM config of SD 1.5 gives
    /// the same DDIM, as in diffusers' `DDIMScheduler.from_config`).
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_config(path)?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Rejects options this scheduler does not implement.
    pub fn validate(&self) -> Result<()> {
        if !matches!(
            self.beta_schedule.as_str(),
            "scaled_linear" | "linear" | "squaredcos_cap_v2"
        ) {
            bail!("unsupported beta_schedule `{}`", self.beta_schedule);
        }
        if !matches!(
            self.timestep_spacing.as_str(),
            "leading" | "trailing" | "linspace"
        ) {
            bail!("unsupported timestep_spacing `{}`", self.timestep_spacing);
        }
        if !matches!(self.prediction_type.as_str(), "epsilon" | "v_prediction") {
            bail!("unsupported prediction_type `{}`", self.prediction_type);
        }
        if self.clip_sample || self.thresholding {
            bail!("clip_sample and thresholding must be false");
        }
        // With zero terminal SNR alpha_bar is 0 at the last step, where an epsilon model's x0
        // divides by sqrt(alpha_bar) (diffusers' docs pair it with v-prediction).
        if self.rescale_betas_zero_snr && self.prediction_type != "v_prediction" {
            bail!(
                "rescale_betas_zero_snr needs prediction_type \"v_prediction\" (got {:?}): an epsilon model cannot predict x0 at zero SNR",
                self.prediction_type
            );
        }
        // diffusers' schedulers use 1000; the bound keeps a mistyped value from allocating
        // gigabytes of betas.
        if !(2..=MAX_TRAIN_TIMESTEPS).contains(&self.num_train_timesteps) {
            bail!(
                "num_train_timesteps = {} is out of range: it must be between 2 and {MAX_TRAIN_TIMESTEPS}",
                self.num_train_timesteps
            );
        }
        if self.beta_schedule != "squaredcos_cap_v2"
            && !(self.beta_start.is_finite()
                && self.beta_end.is_finite()
                && 0.0 < self.beta_start
                && self.beta_start <= self.beta_end
                && self.beta_end < 1.0)
        {
            bail!(
                "beta_start = {} and beta_end = {} must satisfy 0 < beta_start <= beta_end < 1",
                self.beta_start,
                self.beta_end
            );
        }
        if self.steps_offset >= self.num_train_timesteps {
            bail!(
                "steps_offset = {} must be below num_train_timesteps = {}",
                self.steps_offset,
                self.num_train_timesteps
            );
        }
        Ok(())
    }
}

/// torch.linspace in f32 (the two-sided formula PyTorch's CPU kernel uses).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (steps - 1 - i) as f32
            }
        })
        .collect()
}

/// alpha_bar = cumprod(1 - betas): torch.cumprod on CPU accumulates f32 inputs in f64 and
/// rounds each output to f32.
fn cumprod_alphas(betas: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    betas
        .iter()
        .map(|b| {
            acc *= (1.0f32 - b) as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` in its f32 tensor arithmetic: sqrt(alpha_bar) shifted
/// so that its last value is 0 and scaled so that its first is unchanged, then turned back
/// into betas (the last is 1).
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let mut s: Vec<f32> = cumprod_alphas(betas).iter().map(|a| a.sqrt()).collect();
    let (a0, at) = (s[0], s[s.len() - 1]);
    let scale = a0 / (a0 - at);
    for v in &mut s {
        *v = (*v - at) * scale;
    }
    let bar: Vec<f32> = s.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

/// The coefficients of one DDIM update `x_{t-1} = c_x0 · x0 + c_eps · eps + std · noise`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimCoefficients {
    /// alpha_bar at t.
    pub alpha_prod_t: f64,
    /// alpha_bar at the previous timestep (or the final alpha).
    pub alpha_prod_t_prev: f64,
    /// eta · sqrt(variance).
    pub std_dev_t: f64,
}

/// diffusers `DDIMScheduler` with its timesteps set.
#[derive(Debug, Clone)]
pub struct DdimScheduler {
    pub config: DdimConfig,
    /// alpha_bar for each training timestep, as diffusers' f32 tensor.
    pub alphas_cumprod: Vec<f32>,
    /// alpha_bar after the last step.
    pub final_alpha_cumprod: f32,
    /// Inference timesteps, in sampling order (descending).
    pub timesteps: Vec<usize>,
}

impl DdimScheduler {
    /// A scheduler with `num_inference_steps` set (1 ≤ steps ≤ num_train_timesteps).
    pub fn new(config: DdimConfig, num_inference_steps: usize) -> Result<Self> {
        config.validate()?;
        let n = config.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > n {
            bail!(
                "the number of inference steps must be between 1 and {n}, got {num_inference_steps}"
            );
        }
        let betas: Vec<f32> = match config.beta_schedule.as_str() {
            "scaled_linear" => linspace_f32(
                (config.beta_start as f32).sqrt(),
                (config.beta_end as f32).sqrt(),
                n,
            )
            .into_iter()
            .map(|b| b * b)
            .collect(),
            "linear" => linspace_f32(config.beta_start as f32, config.beta_end as f32, n),
            _ => {
                // betas_for_alpha_bar with the cosine schedule (f64 maths, as diffusers).
                let f = |t: f64| {
                    ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                        .cos()
                        .powi(2)
                };
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        (1.0 - f(t2) / f(t1)).min(0.999) as f32
                    })
                    .collect()
            }
        };
        let betas = if config.rescale_betas_zero_snr {
            rescale_zero_terminal_snr(&betas)
        } else {
            betas
        };
        let alphas_cumprod = cumprod_alphas(&betas);
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        let steps = num_inference_steps;
        let timesteps: Vec<usize> = match config.timestep_spacing.as_str() {
            "leading" => {
                let ratio = n / steps;
                (0..steps)
                    .rev()
                    .map(|i| i * ratio + config.steps_offset)
                    .collect()
            }
            "trailing" => {
                let ratio = n as f64 / steps as f64;
                (0..steps)
                    .map(|i| ((n as f64 - i as f64 * ratio).round() as i64 - 1).max(0) as usize)
                    .collect()
            }
            _ => (0..steps)
                .rev()
                .map(|i| {
                    // np.linspace(0, n - 1, steps).round() in f64, half to even.
                    let t = if steps == 1 {
                        0.0
                    } else {
                        i as f64 * (n - 1) as f64 / (steps - 1) as f64
                    };
                    t.round_ties_even() as usize
                })
                .collect(),
        };
        if let Some(t) = timesteps.iter().find(|&&t| t >= n) {
            bail!("timestep {t} is out of range (num_train_timesteps = {n}); lower steps_offset");
        }
        Ok(Self {
            config,
            alphas_cumprod,
            final_alpha_cumprod,
            timesteps,
        })
    }

    /// The number of inference steps.
    pub fn num_inference_steps(&self) -> usize {
        self.timesteps.len()
    }

    /// The coefficients of the update from timestep `t` with noise level `eta`.
    pub fn coefficients(&self, t: usize, eta: f64) -> DdimCoefficients {
        let ratio = self.config.num_train_timesteps / self.num_inference_steps();
        let alpha_prod_t = self.alphas_cumprod[t] as f64;
        let alpha_prod_t_prev = match t.checked_sub(ratio) {
            Some(prev) => self.alphas_cumprod[prev] as f64,
            None => self.final_alpha_cumprod as f64,
        };
        let beta_prod_t = 1.0 - alpha_prod_t;
        let beta_prod_t_prev = 1.0 - alpha_prod_t_prev;
        let variance = (beta_prod_t_prev / beta_prod_t) * (1.0 - alpha_prod_t / alpha_prod_t_prev);
        DdimCoefficients {
            alpha_prod_t,
            alpha_prod_t_prev,
            std_dev_t: eta * variance.sqrt(),
        }
    }

    /// One DDIM update from `sample` at timestep `t` given the model output; returns
    /// `(prev_sample, pred_original_sample)`. `noise` is required when `eta > 0`.
    pub fn step<B: Backend, const D: usize>(
        &self,
        model_output: Tensor<B, D>,
        t: usize,
        sample: Tensor<B, D>,
        eta: f64,
        noise: Option<Tensor<B, D>>,
    ) -> (Tensor<B, D>, Tensor<B, D>) {
        let c = self.coefficients(t, eta);
        let (sa, sb) = (c.alpha_prod_t.sqrt(), (1.0 - c.alpha_prod_t).sqrt());
        let (pred_x0, pred_eps) = if self.config.prediction_type == "v_prediction" {
            (
                sample.clone() * sa - model_output.clone() * sb,
                model_output * sa + sample * sb,
            )
        } else {
            ((sample - model_output.clone() * sb) / sa, model_output)
        };
        let dir = (1.0 - c.alpha_prod_t_prev - c.std_dev_t * c.std_dev_t).sqrt();
        let mut prev = pred_x0.clone() * c.alpha_prod_t_prev.sqrt() + pred_eps * dir;
        if eta > 0.0 {
            let noise = noise.expect("DDIM with eta > 0 needs a noise tensor");
            prev = prev + noise * c.std_dev_t;
        }
        (prev, pred_x0)
    }
}

//! The training configuration (TOML): model, prompts, method, sampling, the task sequence and
//! the reward models; unknown keys are rejected and every value is range-checked with a message
//! naming the field.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sd_model::backend::BackendKind;
use sd_model::hub::asset::Asset;
use serde::{Deserialize, Serialize};

pub use rewards::config::{JointWeights, RewardKind, RewardsConfig};

/// Where the diffusion model comes from and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A diffusers folder or hub id.
    pub source: String,
    /// Where the run's tensors live (`cpu`, `cuda`).
    #[serde(default)]
    pub backend: BackendKind,
    /// Recompute the reward's, the decode's and the last UNet step's activations in the backward
    /// pass instead of keeping them (diffusers' `enable_gradient_checkpointing`): less memory,
    /// one more forward of the last step and decode, the same gradients. Not part of the run's
    /// hash (a run may resume with it switched).
    #[serde(default, skip_serializing_if = "is_false")]
    pub gradient_checkpointing: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Prompt files (one prompt per line; blank lines are skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsConfig {
    pub train: PathBuf,
    pub eval: PathBuf,
}

/// Baseline (last-step reward gradient) or RID (plus the EMA teacher's last-step distillation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Baseline,
    Rid,
}

/// The method and RID's two constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    pub kind: Method,
    /// Weight of the distillation term (the paper: 0.1).
    #[serde(default = "default_lambda")]
    pub lambda: f64,
    /// EMA momentum a of the teacher, θ' ← a θ' + (1 − a) θ after every optimiser step.
    #[serde(default = "default_ema")]
    pub ema_momentum: f64,
}

fn default_lambda() -> f64 {
    0.1
}

fn default_ema() -> f64 {
    0.99
}

/// DDIM sampling during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// DDIM steps N (the paper: 50).
    pub steps: usize,
    /// Classifier-free guidance scale (7.5).
    pub guidance: f64,
    /// DDIM eta (0: deterministic).
    #[serde(default)]
    pub eta: f64,
    /// Image size (512 for SD 1.5).
    pub height: usize,
    pub width: usize,
}

/// One reward task of the sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Name used for the checkpoint folder (task-K-NAME).
    pub name: String,
    pub reward: RewardKind,
    pub epochs: usize,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Micro-batches per step (batch_size must be divisible by it).
    #[serde(default = "one")]
    pub grad_accum: usize,
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    #[serde(default)]
    pub grad_clip: f64,
    #[serde(default = "four")]
    pub lora_rank: usize,
    #[serde(default = "four_f")]
    pub lora_alpha: f64,
}

fn one() -> usize {
    1
}

fn four() -> usize {
    4
}

fn four_f() -> f64 {
    4.0
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub prompts: PromptsConfig,
    pub method: MethodConfig,
    pub sampling: SamplingConfig,
    pub tasks: Vec<TaskConfig>,
    #[serde(default)]
    pub rewards: RewardsConfig,
    /// Seed of prompts, noise and LoRA initialisation.
    pub seed: u64,
    /// Output folder of the run.
    pub output: PathBuf,
    /// Checkpoint every this many optimiser steps (and after every task).
    #[serde(default = "default_ckpt")]
    pub checkpoint_every: usize,
    /// What `ril eval` scores with besides the rewards (not part of the run's hash).
    #[serde(default, skip_serializing_if = "EvalConfig::is_unset")]
    pub eval: EvalConfig,
}

/// The evaluation's own models: the CLIP score's and FID's (each may be overridden by `ril eval`'s
/// flags; a metric whose model is not named is reported as skipped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// CLIP score (torchmetrics' definition): a transformers CLIPModel folder or hub id
    /// (torchmetrics' default is openai/clip-vit-large-patch14).
    pub clip_model: Option<String>,
    /// FID: pytorch-fid's Inception weights (a file, `hf://` file or its release URL).
    pub fid_weights: Option<Asset>,
    /// FID: a folder of real images or their statistics (.npz from `ril fid-stats`).
    pub fid_reference: Option<PathBuf>,
    /// FID's features: "inception" (pytorch-fid's, the default) or "clip" (the CLIP score model's
    /// L2-normalised image embeddings; the reference must then be a folder of images).
    pub fid_features: Option<FidFeatures>,
    /// The toy world's judge folder (`ril judge train`'s output, e.g. data/toy/judge): the
    /// judge_accuracy metric on prompts that are the toy world's one-object captions.
    pub judge: Option<PathBuf>,
}

/// The feature network of FID (`[eval] fid_features`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FidFeatures {
    Inception,
    Clip,
}

impl EvalConfig {
    fn is_unset(&self) -> bool {
        *self == Self::default()
    }
}

fn default_ckpt() -> usize {
    50
}

impl TrainConfig {
    /// Reads and validates a TOML file; relative paths are resolved against the file's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.prompts.train);
        fix(&mut self.prompts.eval);
        fix(&mut self.output);
        let r = &mut self.rewards;
        for p in [&mut r.hps_model_config, &mut r.hps_tokenizer]
            .into_iter()
            .flatten()
        {
            fix(p);
        }
        for a in [
            &mut r.aesthetic_mlp,
            &mut r.hps_weights,
            &mut self.eval.fid_weights,
        ]
        .into_iter()
        .flatten()
        {
            a.relative_to(base);
        }
        if let Some(p) = &mut self.eval.fid_reference {
            fix(p);
        }
        if let Some(p) = &mut self.eval.judge {
            fix(p);
        }
        let local = |s: &mut String| {
            if !sd_model::hub::is_repo_id(s) && Path::new(s).is_relative() {
                *s = base.join(&*s).display().to_string();
            }
        };
        local(&mut self.model.source);
        for c in [&mut self.rewards.aesthetic_clip, &mut self.eval.clip_model]
            .into_iter()
            .flatten()
        {
            local(c);
        }
    }

    /// Range checks with messages naming the field.
    pub fn validate(&self) -> Result<()> {
        let m = &self.method;
        if !(m.lambda.is_finite() && m.lambda >= 0.0) {
            bail!("method.lambda must be ≥ 0, got {}", m.lambda);
        }
        if !(0.0..1.0).contains(&m.ema_momentum) {
            bail!(
                "method.ema_momentum must be in [0, 1), got {}",
                m.ema_momentum
            );
        }
        let s = &self.sampling;
        if s.steps < 2 || s.steps > 1000 {
            bail!("sampling.steps must be in 2..=1000, got {}", s.steps);
        }
        if !(s.guidance.is_finite() && s.guidance >= 0.0) {
            bail!("sampling.guidance must be ≥ 0, got {}", s.guidance);
        }
        if !(s.eta.is_finite() && (0.0..=1.0).contains(&s.eta)) {
            bail!("sampling.eta must be in [0, 1], got {}", s.eta);
        }
        if s.height == 0
            || s.width == 0
            || !s.height.is_multiple_of(8)
            || !s.width.is_multiple_of(8)
        {
            bail!(
                "sampling.height and width must be positive multiples of 8, got {}x{}",
                s.height,
                s.width
            );
        }
        let max = sd_model::pipeline::MAX_SIDE;
        if s.height > max || s.width > max {
            bail!(
                "sampling.height and width must be at most {max} pixels, got {}x{}",
                s.height,
                s.width
            );
        }
        if self.tasks.is_empty() {
            bail!("tasks is empty: give at least one [[tasks]]");
        }
        for (i, t) in self.tasks.iter().enumerate() {
            let f = |field: &str| format!("tasks[{i}] ({}).{field}", t.name);
            if t.name.is_empty()
                || !t
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
            {
                bail!("{} must be non-empty letters, digits, - or _", f("name"));
            }
            if t.epochs == 0 || t.steps_per_epoch == 0 {
                bail!("{} and steps_per_epoch must be ≥ 1", f("epochs"));
            }
            if t.batch_size == 0 || t.grad_accum == 0 || !t.batch_size.is_multiple_of(t.grad_accum)
            {
                bail!(
                    "{} must be a positive multiple of grad_accum ({})",
                    f("batch_size"),
                    t.grad_accum
                );
            }
            if !(t.lr.is_finite() && t.lr > 0.0 && t.lr < 1.0) {
                bail!("{} must be in (0, 1), got {}", f("lr"), t.lr);
            }
            if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
                bail!("{} must be ≥ 0", f("weight_decay"));
            }
            if !(t.grad_clip.is_finite() && t.grad_clip >= 0.0) {
                bail!("{} must be ≥ 0 (0 disables clipping)", f("grad_clip"));
            }
            if t.lora_rank == 0 || !(t.lora_alpha.is_finite() && t.lora_alpha > 0.0) {
                bail!("{} must be ≥ 1 and lora_alpha > 0", f("lora_rank"));
            }
            let r = &self.rewards;
            let needs_a = matches!(t.reward, RewardKind::Aesthetic | RewardKind::Joint);
            let needs_h = matches!(t.reward, RewardKind::Hps | RewardKind::Joint);
            if needs_a && r.aesthetic_mlp.is_none() {
                bail!("{} needs rewards.aesthetic_mlp", f("reward"));
            }
            if needs_h && (r.hps_weights.is_none() || r.hps_tokenizer.is_none()) {
                bail!(
                    "{} needs rewards.hps_weights and rewards.hps_tokenizer",
                    f("reward")
                );
            }
        }
        if let Some(q) = self.rewards.compress_quality
            && !(0.0..=100.0).contains(&q)
        {
            bail!("rewards.compress_quality must be in [0, 100], got {q}");
        }
        if self.checkpoint_every == 0 {
            bail!("checkpoint_every must be ≥ 1");
        }
        Ok(())
    }

    /// A stable hash of the configuration (FNV-1a of its canonical JSON), recorded in the run
    /// folder so that another config's run is never overwritten.
    pub fn hash(&self) -> String {
        let mut trained = Self {
            eval: EvalConfig::default(),
            ..self.clone()
        };
        trained.model.gradient_checkpointing = false;
        let json = serde_json::to_string(&trained).expect("config serialises");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in json.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

/// Non-blank lines of a prompts file; an empty file is an error naming it.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    Ok(prompt_lines(path)?.into_iter().map(|(_, p)| p).collect())
}

/// As [`read_prompts`], checking that every prompt fits the text encoder (77 tokens with BOS and
/// EOS): a longer one is an error naming the file and line, as `ril sample` refuses it, never
/// silently truncated.
pub fn read_prompts_checked(
    path: &Path,
    tokenizer: &sd_model::ClipTokenizer,
) -> Result<Vec<String>> {
    let lines = prompt_lines(path)?;
    for (line, prompt) in &lines {
        tokenizer
            .encode_exact(prompt)
            .with_context(|| format!("{}:{line}", path.display()))?;
    }
    Ok(lines.into_iter().map(|(_, p)| p).collect())
}

/// The non-blank lines of a prompts file with their 1-based line numbers; an empty file is an
/// error naming it.
fn prompt_lines(path: &Path) -> Result<Vec<(usize, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompts file {}", path.display()))?;
    let prompts: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect();
    if prompts.is_empty() {
        bail!("prompts file {} has no prompts", path.display());
    }
    Ok(prompts)
}

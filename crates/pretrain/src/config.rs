//! The pretraining configuration (TOML): the data, the tokenizer, the model configs and the two
//! phases' optimiser settings; unknown keys are rejected and every value is checked, with a
//! message naming the field, before any work starts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sd_model::backend::BackendKind;
use sd_model::clip::ClipTextConfig;
use sd_model::unet::UNetConfig;
use sd_model::vae::VaeConfig;
use serde::{Deserialize, Serialize};
use toy_shapes::Objects;

/// The whole pretraining run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Seeds the weights' initialisation, the batches' order and every noise draw.
    pub seed: u64,
    /// Where the tensors live (`cpu`, `tch-cpu`, `tch-cuda`, ...).
    #[serde(default)]
    pub backend: BackendKind,
    /// Square image size in pixels (the VAE and the UNet must divide it).
    pub resolution: usize,
    /// The run folder (checkpoint, metrics.jsonl, and `pipeline/` at the end); relative to the
    /// config file's folder.
    pub output: PathBuf,
    pub data: DataConfig,
    pub tokenizer: TokenizerConfig,
    pub vae: VaePhase,
    pub unet: UNetPhase,
    /// Write a checkpoint every this many optimiser steps (and at the end of each phase).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    250
}

/// Captioned images: the procedural shapes stream or a folder in Hugging Face's `imagefolder`
/// layout (metadata.jsonl with `file_name` and `text`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The shapes stream's seed (`ril data shapes`); exclusive with `folder`.
    pub shapes_seed: Option<u64>,
    /// Objects per shapes image, as `ril data shapes --objects`: "1", "2" or "mixed" (one or
    /// two, half each; the default). Only with `shapes_seed`.
    pub shapes_objects: Option<String>,
    /// A folder of images with a metadata.jsonl (relative paths are relative to the config file).
    pub folder: Option<PathBuf>,
    /// Share of captions replaced by "" while training the UNet (so classifier-free guidance
    /// has an unconditional model to subtract; SD: 0.1).
    #[serde(default = "default_empty")]
    pub empty_caption_prob: f64,
}

fn default_empty() -> f64 {
    0.1
}

/// The CLIP BPE tokenizer the text encoder reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerConfig {
    /// A `tokenizer/` folder (vocab.json + merges.txt), e.g. openai/clip-vit-large-patch14's.
    pub base: PathBuf,
    /// Keep only the merges the training captions use (and all 512 byte tokens, so that any
    /// text still tokenizes): the vocabulary, and so the text encoder's embedding table, shrinks
    /// from 49,408 rows to a few hundred. The text encoder's `vocab_size` must then be `"auto"`
    /// (0 in its config).
    #[serde(default)]
    pub prune_to_captions: bool,
}

/// Phase 1: the autoencoder on reconstruction + KL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaePhase {
    /// diffusers `AutoencoderKL` config.json (relative to the config file).
    pub config: PathBuf,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Steps of linear learning-rate warm-up from lr / warmup_steps (none by default).
    #[serde(default)]
    pub warmup_steps: u64,
    /// The learning rate after the warm-up: constant (the default) or cosine decay to 0 at
    /// the phase's last step (diffusers' `--lr_scheduler cosine`).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    #[serde(default)]
    pub weight_decay: f64,
    /// The per-pixel reconstruction error summed over each image: `"l1"` (the default; LDM's
    /// `LPIPSWithDiscriminator` without its perceptual and GAN terms) or `"l2"` (squared error,
    /// which weighs a wrong-coloured object's large errors above the background's small ones).
    #[serde(default)]
    pub reconstruction_loss: ReconstructionLoss,
    /// Weight of the KL term against the per-image reconstruction sum (LDM: 1e-6).
    #[serde(default = "default_kl")]
    pub kl_weight: f64,
    /// Global gradient-norm clip (none when absent).
    pub max_grad_norm: Option<f64>,
    /// The log-variance channels' bias at initialisation (0: PyTorch's default rule gives
    /// about 0, a posterior standard deviation of 1, which drowns the latent means for the first
    /// thousands of steps since Adam moves each weight by about lr per step; a negative value
    /// starts the posterior nearly deterministic, where the tiny KL weight leaves it anyway).
    #[serde(default)]
    pub logvar_bias: f64,
}

/// The VAE's per-pixel reconstruction error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReconstructionLoss {
    /// `|x̂ - x|`.
    #[default]
    L1,
    /// `(x̂ - x)²`.
    L2,
}

/// The learning rate over a phase's steps after the warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    #[default]
    Constant,
    /// `lr · ½ (1 + cos(π · p))`, p the share of the post-warm-up steps done (transformers'
    /// `get_cosine_schedule_with_warmup` with half a cycle).
    Cosine,
}

impl LrSchedule {
    /// The learning rate of the step after `done` of `total` steps: linear warm-up over
    /// `warmup` steps (`lr · (done + 1) / warmup`), then the schedule.
    pub fn lr(self, lr: f64, warmup: u64, total: u64, done: u64) -> f64 {
        if done < warmup {
            return lr * (done + 1) as f64 / warmup as f64;
        }
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => {
                let p = (done - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
                lr * 0.5 * (1.0 + (std::f64::consts::PI * p.min(1.0)).cos())
            }
        }
    }
}

fn default_kl() -> f64 {
    1e-6
}

/// Phase 2: the UNet and the text encoder together on the epsilon-prediction loss (the VAE
/// frozen).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UNetPhase {
    /// diffusers `UNet2DConditionModel` config.json.
    pub config: PathBuf,
    /// transformers `CLIPTextConfig` config.json.
    pub text_encoder: PathBuf,
    /// diffusers scheduler config (the noise schedule; SD 1.5's scaled-linear betas when absent).
    pub scheduler: Option<PathBuf>,
    pub steps: u64,
    pub batch_size: usize,
    pub lr: f64,
    /// Steps of linear learning-rate warm-up (none by default).
    #[serde(default)]
    pub warmup_steps: u64,
    /// The learning rate after the warm-up: constant (the default) or cosine decay to 0 at
    /// the phase's last step (diffusers' `--lr_scheduler cosine`).
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    #[serde(default)]
    pub weight_decay: f64,
    pub max_grad_norm: Option<f64>,
    /// Start the cross-attention output projections at zero (`init::Scheme`); PyTorch's
    /// default init when false.
    #[serde(default)]
    pub zero_init_cross_attention: bool,
    /// Min-SNR-γ loss weighting (Hang et al. 2023; diffusers' `--snr_gamma`): each sample's
    /// epsilon loss is weighted by min(SNR(t), γ) / SNR(t), so that the many low-noise steps,
    /// which are easy and say little about the caption, weigh less. Plain mean when absent.
    pub snr_gamma: Option<f64>,
    /// Offset noise (Guttenberg 2023; diffusers' `--noise_offset`): each sample's noise gets
    /// `noise_offset · N(0, 1)` added per latent channel, constant over the image, so that the
    /// mean of a noised latent no longer tells the UNet the image's mean colour. SD 1.5's
    /// schedule leaves sqrt(alpha_bar) ≈ 0.07 of the latent in at t = 999: without the offset
    /// the UNet learns to read the background from that remnant instead of from the caption,
    /// and sampling, which starts from pure noise, then ignores the caption's colours. None
    /// (no offset) when absent.
    pub noise_offset: Option<f64>,
    /// Exponential moving average of the UNet's and the text encoder's weights (diffusers'
    /// `--use_ema`, with its `EMAModel` schedule: after n updates the decay is
    /// min(ema_decay, (1 + n) / (10 + n)), the first update a copy). The pipeline is written
    /// with the averaged weights, as diffusers' train_text_to_image saves its EMA UNet. None:
    /// the last weights.
    pub ema_decay: Option<f64>,
    /// Encode the first `latent_pool` items of the data once, at the start of the phase, and
    /// draw the batches from them. The VAE is frozen in this phase, so an item's posterior
    /// (mean and log-variance) never changes; encoding it again every step was about 40 % of a
    /// step's work on the toy world. Each draw still samples the posterior anew. None: every
    /// step encodes its batch (the shapes stream then never repeats an image).
    pub latent_pool: Option<u64>,
}

impl PretrainConfig {
    /// Reads and checks `path`; relative paths inside become relative to its folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve(base);
        config
            .validate()
            .with_context(|| format!("config {}", path.display()))?;
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(f) = self.data.folder.as_mut() {
            fix(f);
        }
        fix(&mut self.output);
        fix(&mut self.tokenizer.base);
        fix(&mut self.vae.config);
        fix(&mut self.unet.config);
        fix(&mut self.unet.text_encoder);
        if let Some(s) = self.unet.scheduler.as_mut() {
            fix(s);
        }
    }

    /// `data.shapes_objects` as the generator's mode (mixed when absent).
    pub fn shapes_objects(&self) -> Result<Objects> {
        match &self.data.shapes_objects {
            None => Ok(Objects::Mixed),
            Some(_) if self.data.folder.is_some() => {
                bail!("data.shapes_objects is for the shapes stream (shapes_seed), not a folder")
            }
            Some(name) => Objects::ALL
                .into_iter()
                .find(|o| o.name() == name)
                .with_context(|| {
                    format!("data.shapes_objects must be \"1\", \"2\" or \"mixed\", got {name:?}")
                }),
        }
    }

    /// Range checks of every value, naming the field; the model configs are read and checked
    /// against each other and the resolution.
    pub fn validate(&self) -> Result<()> {
        match (&self.data.shapes_seed, &self.data.folder) {
            (Some(_), Some(_)) => bail!("data: give either shapes_seed or folder, not both"),
            (None, None) => bail!("data: give shapes_seed (the procedural shapes) or folder"),
            _ => {}
        }
        self.shapes_objects()?;
        let p = self.data.empty_caption_prob;
        if !(0.0..=1.0).contains(&p) {
            bail!("data.empty_caption_prob must be in [0, 1], got {p}");
        }
        if self.resolution == 0 || self.resolution > 1024 {
            bail!(
                "resolution must be between 1 and 1024 pixels, got {}",
                self.resolution
            );
        }
        if self.checkpoint_every == 0 {
            bail!("checkpoint_every must be at least 1");
        }
        let phases = [
            ("vae", self.vae.steps, self.vae.batch_size, self.vae.lr),
            ("unet", self.unet.steps, self.unet.batch_size, self.unet.lr),
        ];
        for (name, steps, batch, lr) in phases {
            if steps == 0 {
                bail!("{name}.steps must be at least 1");
            }
            if batch == 0 || batch > 4096 {
                bail!("{name}.batch_size must be between 1 and 4096, got {batch}");
            }
            if !(lr.is_finite() && lr > 0.0) {
                bail!("{name}.lr must be a positive number, got {lr}");
            }
        }
        for (name, wd) in [
            ("vae.weight_decay", self.vae.weight_decay),
            ("unet.weight_decay", self.unet.weight_decay),
        ] {
            if !(wd.is_finite() && wd >= 0.0) {
                bail!("{name} must be ≥ 0, got {wd}");
            }
        }
        for (name, clip) in [
            ("vae.max_grad_norm", self.vae.max_grad_norm),
            ("unet.max_grad_norm", self.unet.max_grad_norm),
        ] {
            if let Some(c) = clip
                && !(c.is_finite() && c > 0.0)
            {
                bail!("{name} must be a positive number, got {c}");
            }
        }
        if let Some(g) = self.unet.snr_gamma
            && !(g.is_finite() && g > 0.0)
        {
            bail!("unet.snr_gamma must be a positive number, got {g}");
        }
        if let Some(o) = self.unet.noise_offset
            && !(o.is_finite() && (0.0..=1.0).contains(&o))
        {
            bail!("unet.noise_offset must be within [0, 1], got {o}");
        }
        if let Some(d) = self.unet.ema_decay
            && !(d.is_finite() && (0.0..1.0).contains(&d))
        {
            bail!("unet.ema_decay must be within [0, 1), got {d}");
        }
        if !(self.vae.logvar_bias.is_finite() && (-30.0..=20.0).contains(&self.vae.logvar_bias)) {
            bail!(
                "vae.logvar_bias must be within the log-variance clamp [-30, 20], got {}",
                self.vae.logvar_bias
            );
        }
        if !(self.vae.kl_weight.is_finite() && self.vae.kl_weight >= 0.0) {
            bail!("vae.kl_weight must be ≥ 0, got {}", self.vae.kl_weight);
        }
        let models = self.models()?;
        let factor = 1usize << (models.vae.block_out_channels.len() - 1);
        if !self.resolution.is_multiple_of(factor) {
            bail!(
                "resolution {} is not divisible by the VAE's downsampling factor {factor} ({} levels in {})",
                self.resolution,
                models.vae.block_out_channels.len(),
                self.vae.config.display()
            );
        }
        let latent = self.resolution / factor;
        if let Some(n) = self.unet.latent_pool {
            let per_item = 2 * 4 * (models.vae.latent_channels * latent * latent) as u64;
            let max = MAX_LATENT_POOL_BYTES / per_item;
            if n < self.unet.batch_size as u64 || n > max {
                bail!(
                    "unet.latent_pool must be between unet.batch_size ({}) and {max} items \
                     ({} GiB of posteriors at {latent}x{latent}x{} latents), got {n}",
                    self.unet.batch_size,
                    MAX_LATENT_POOL_BYTES >> 30,
                    models.vae.latent_channels
                );
            }
        }
        let unet_factor = 1usize << (models.unet.block_out_channels.len() - 1);
        if !latent.is_multiple_of(unet_factor) {
            bail!(
                "the latents ({latent}x{latent} at resolution {}) are not divisible by the UNet's \
                 downsampling factor {unet_factor} ({})",
                self.resolution,
                self.unet.config.display()
            );
        }
        if models.vae.latent_channels != models.unet.in_channels
            || models.unet.in_channels != models.unet.out_channels
        {
            bail!(
                "the VAE's latent_channels ({}) must equal the UNet's in_channels and out_channels ({}, {})",
                models.vae.latent_channels,
                models.unet.in_channels,
                models.unet.out_channels
            );
        }
        if models.text.hidden_size != models.unet.cross_attention_dim {
            bail!(
                "the text encoder's hidden_size ({}) must equal the UNet's cross_attention_dim ({})",
                models.text.hidden_size,
                models.unet.cross_attention_dim
            );
        }
        if self.tokenizer.prune_to_captions != (models.text.vocab_size == 0) {
            bail!(
                "{}: vocab_size must be 0 (set from the pruned tokenizer) exactly when \
                 tokenizer.prune_to_captions is true",
                self.unet.text_encoder.display()
            );
        }
        Ok(())
    }

    /// The three model configs as read from their files (the text encoder's vocab_size may
    /// still be 0: set from the tokenizer).
    pub fn models(&self) -> Result<Models> {
        let vae = VaeConfig::from_file(&self.vae.config)?;
        let unet = UNetConfig::from_file(&self.unet.config)?;
        let text = read_text_config(&self.unet.text_encoder)?;
        vae.validate()
            .with_context(|| format!("{}", self.vae.config.display()))?;
        unet.validate()
            .with_context(|| format!("{}", self.unet.config.display()))?;
        Ok(Models { vae, unet, text })
    }

    /// The config as canonical JSON (stored in checkpoints to refuse resuming another run); the
    /// output folder is left out, so that a moved run folder still resumes.
    pub fn canonical(&self) -> String {
        let mut c = self.clone();
        c.output = PathBuf::new();
        serde_json::to_string(&c).unwrap_or_default()
    }
}

/// The most memory `unet.latent_pool` may take: its items' posteriors (mean and log-variance,
/// f32) stay in memory for the whole phase. 8 GiB is a million items of the toy world's 16x16x4
/// latents, 65,536 of SD 1.5's 64x64x4.
pub const MAX_LATENT_POOL_BYTES: u64 = 8 << 30;

/// A text-encoder config whose `vocab_size` may be 0 ("from the tokenizer"), checked otherwise.
fn read_text_config(path: &Path) -> Result<ClipTextConfig> {
    let config: ClipTextConfig = sd_model::config::read_config(path)?;
    let mut check = config.clone();
    if check.vocab_size == 0 {
        check.vocab_size = 1;
    }
    check
        .validate()
        .with_context(|| format!("{}", path.display()))?;
    Ok(config)
}

/// The model configs of a run.
#[derive(Debug, Clone)]
pub struct Models {
    pub vae: VaeConfig,
    pub unet: UNetConfig,
    pub text: ClipTextConfig,
}

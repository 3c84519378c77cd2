//! The Stable Diffusion pipeline: a diffusers folder loaded into the four models, and sampling
//! (prompts → text embeddings → DDIM with classifier-free guidance → VAE decode → images).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use crate::clip::{ClipTextConfig, ClipTextModel};
use crate::ddim::{DdimConfig, DdimScheduler};
use crate::load::{SafetensorsFile, load_module_from};
use crate::noise::NoiseRng;
use crate::sampler::{Conditioning, denoise};
use crate::tokenizer::ClipTokenizer;
use crate::unet::{UNet2DConditionModel, UNetConfig};
use crate::vae::{AutoencoderKL, VaeConfig};

/// Remap of text-encoder file keys: transformers ≤ 4 writes a `text_model.` prefix that
/// transformers 5 drops; the int64 `position_ids` buffer is not a weight.
pub fn text_encoder_key(key: &str) -> Option<String> {
    if key.ends_with("position_ids") {
        return None;
    }
    Some(key.strip_prefix("text_model.").unwrap_or(key).to_string())
}

/// Remap of VAE file keys: the old attention names (query, key, value, proj_attn) become
/// to_q, to_k, to_v, to_out.0.
pub fn vae_key(key: &str) -> Option<String> {
    if !key.contains(".attentions.") {
        return Some(key.to_string());
    }
    let parts: Vec<&str> = key
        .split('.')
        .map(|p| match p {
            "query" => "to_q",
            "key" => "to_k",
            "value" => "to_v",
            "proj_attn" => "to_out.0",
            other => other,
        })
        .collect();
    Some(parts.join("."))
}

/// UNet file keys are the module's keys.
pub fn unet_key(key: &str) -> Option<String> {
    Some(key.to_string())
}

/// The weights file of a component folder: fp32 `NAME.safetensors`, else the `fp16` variant.
pub fn weights_file(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let full = dir.join(format!("{name}.safetensors"));
    if full.is_file() {
        return Ok(full);
    }
    let half = dir.join(format!("{name}.fp16.safetensors"));
    if half.is_file() {
        return Ok(half);
    }
    bail!(
        "weights file {} is missing (nor is there a .fp16 variant)",
        full.display()
    )
}

/// The largest image side ril samples or trains at, in pixels: 8x SD 1.5's 512. Beyond it one
/// image's attention alone outgrows any machine (4096x4096 is 262,144 latent tokens at a factor
/// of 8), so a larger `--height` / `--width` is refused before anything is allocated.
pub const MAX_SIDE: usize = 4096;

/// The latent space of a pipeline: the UNet's channels and the VAE's downsampling factor
/// (diffusers' `vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)`; SD 1.x: 4
/// channels, factor 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentSpace {
    pub channels: usize,
    pub factor: usize,
}

impl LatentSpace {
    /// SD 1.x's.
    pub const SD15: LatentSpace = LatentSpace {
        channels: 4,
        factor: 8,
    };

    /// Read from a pipeline folder's `vae/config.json` and `unet/config.json` (before loading
    /// any weights, so that requests are checked first).
    pub fn of_folder(dir: &Path) -> Result<Self> {
        let vae = VaeConfig::from_file(&dir.join("vae/config.json"))?;
        let unet = UNetConfig::from_file(&dir.join("unet/config.json"))?;
        let levels = vae.block_out_channels.len().max(1);
        Ok(Self {
            channels: unet.in_channels,
            factor: 1 << (levels - 1),
        })
    }

    /// The latents of `batch` images of `height` x `width`.
    pub fn shape(&self, batch: usize, height: usize, width: usize) -> [usize; 4] {
        [
            batch,
            self.channels,
            height / self.factor,
            width / self.factor,
        ]
    }
}

/// Refuses a model_index.json that is not JSON or names a pipeline of another architecture
/// (SDXL, SD 3, ...: their folders hold other models under the same names).
fn check_pipeline_class(index: &Path) -> Result<()> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let Some(class) = value.get("_class_name").and_then(|v| v.as_str()) else {
        return Ok(());
    };
    let sd1 = class.starts_with("StableDiffusion")
        && !class.starts_with("StableDiffusionXL")
        && !class.starts_with("StableDiffusion3");
    if !sd1 {
        bail!(
            "{}: `_class_name` is {class:?}; ril loads Stable Diffusion 1.x pipelines              (StableDiffusionPipeline and its SD 1.x variants)",
            index.display()
        );
    }
    Ok(())
}

/// The four models and the scheduler config of an SD 1.x pipeline.
pub struct StableDiffusion<B: Backend> {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel<B>,
    pub unet: UNet2DConditionModel<B>,
    pub vae: AutoencoderKL<B>,
    pub scheduler: DdimConfig,
}

/// Loads `text_encoder/` (config + model.safetensors).
pub fn load_text_encoder<B: Backend>(dir: &Path, device: &B::Device) -> Result<ClipTextModel<B>> {
    let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(&weights_file(dir, "model")?)?;
    load_module_from(config.init(device)?, &file, &text_encoder_key)
}

/// Loads `unet/` (config + diffusion_pytorch_model.safetensors).
pub fn load_unet<B: Backend>(dir: &Path, device: &B::Device) -> Result<UNet2DConditionModel<B>> {
    let config = UNetConfig::from_file(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(&weights_file(dir, "diffusion_pytorch_model")?)?;
    load_module_from(config.init(device)?, &file, &unet_key)
}

/// Loads `vae/` (config + diffusion_pytorch_model.safetensors).
pub fn load_vae<B: Backend>(dir: &Path, device: &B::Device) -> Result<AutoencoderKL<B>> {
    let config = VaeConfig::from_file(&dir.join("config.json"))?;
    let file = SafetensorsFile::open(&weights_file(dir, "diffusion_pytorch_model")?)?;
    load_module_from(config.init(device)?, &file, &vae_key)
}

impl<B: Backend> StableDiffusion<B> {
    /// Loads a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/,
    /// tokenizer/, scheduler/).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        if !dir.is_dir() {
            bail!(
                "model folder {} does not exist or is not a folder",
                dir.display()
            );
        }
        let index = dir.join("model_index.json");
        if !index.is_file() {
            bail!(
                "{} is missing: {} is not a diffusers pipeline folder",
                index.display(),
                dir.display()
            );
        }
        check_pipeline_class(&index)?;
        let scheduler_file = dir.join("scheduler/scheduler_config.json");
        let scheduler = if scheduler_file.is_file() {
            DdimConfig::from_file(&scheduler_file)?
        } else {
            DdimConfig::sd15()
        };
        let tokenizer = ClipTokenizer::from_dir(&dir.join("tokenizer"))?;
        let text_encoder = load_text_encoder(&dir.join("text_encoder"), device)?;
        let positions = text_encoder.max_positions();
        if tokenizer.max_length > positions {
            bail!(
                "{}: model_max_length = {} is longer than the text encoder's {positions} positions                  (max_position_embeddings in {})",
                dir.join("tokenizer/tokenizer_config.json").display(),
                tokenizer.max_length,
                dir.join("text_encoder/config.json").display()
            );
        }
        Ok(Self {
            tokenizer,
            text_encoder,
            unet: load_unet(&dir.join("unet"), device)?,
            vae: load_vae(&dir.join("vae"), device)?,
            scheduler,
        })
    }

    /// The latent space of the loaded models.
    pub fn latent_space(&self) -> LatentSpace {
        LatentSpace {
            channels: self.unet.in_channels(),
            factor: self.vae.scale_factor(),
        }
    }

    /// Text embeddings [N, 77, D] of `prompts` (each must fit in 77 tokens; "" is allowed, as
    /// diffusers' default negative prompt).
    pub fn encode_prompts(&self, prompts: &[String], device: &B::Device) -> Result<Tensor<B, 3>> {
        encode_prompts(&self.tokenizer, &self.text_encoder, prompts, device)
    }
}

/// Text embeddings [N, 77, D] of `prompts` with `text_encoder` (each must fit in 77 tokens; a
/// longer one is an error naming it, where diffusers truncates silently).
pub fn encode_prompts<B: Backend>(
    tokenizer: &ClipTokenizer,
    text_encoder: &ClipTextModel<B>,
    prompts: &[String],
    device: &B::Device,
) -> Result<Tensor<B, 3>> {
    let len = tokenizer.max_length;
    let mut ids = Vec::with_capacity(prompts.len() * len);
    for (i, p) in prompts.iter().enumerate() {
        let tokens = tokenizer
            .encode_exact(p)
            .with_context(|| format!("prompt {i}"))?;
        ids.extend(tokens.into_iter().map(|t| t as i64));
    }
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [prompts.len(), len]), device);
    Ok(text_encoder.forward(ids).last_hidden_state)
}

/// Where the initial latents come from.
pub enum InitLatents<B: Backend> {
    /// Standard normal noise from [`NoiseRng`] with this seed (the same on every backend).
    Seed(u64),
    /// Given latents [B, 4, H/8, W/8].
    Given(Tensor<B, 4>),
}

/// A sampling request, with diffusers' StableDiffusionPipeline meanings.
pub struct SampleRequest<B: Backend> {
    pub prompts: Vec<String>,
    /// One per prompt, or empty for "" (diffusers' default).
    pub negative_prompts: Vec<String>,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    /// Classifier-free guidance scale; ≤ 1 disables guidance.
    pub guidance: f64,
    /// DDIM eta (0: deterministic); its noise comes from `NoiseRng(noise_seed)`.
    pub eta: f64,
    pub noise_seed: u64,
    pub latents: InitLatents<B>,
}

impl<B: Backend> SampleRequest<B> {
    /// Checks sizes and counts for a pipeline with latent space `latent`, naming what is wrong.
    pub fn validate(&self, latent: LatentSpace) -> Result<()> {
        if self.prompts.is_empty() {
            bail!("no prompt given");
        }
        if let Some(i) = self.prompts.iter().position(|p| p.trim().is_empty()) {
            bail!("prompt {i} is empty");
        }
        if !self.negative_prompts.is_empty() && self.negative_prompts.len() != self.prompts.len() {
            bail!(
                "{} negative prompts for {} prompts: give one, or one per prompt",
                self.negative_prompts.len(),
                self.prompts.len()
            );
        }
        let f = latent.factor;
        if self.height > MAX_SIDE || self.width > MAX_SIDE {
            bail!(
                "height and width must be at most {MAX_SIDE} pixels, got {}x{}",
                self.height,
                self.width
            );
        }
        if self.height == 0
            || self.width == 0
            || !self.height.is_multiple_of(f)
            || !self.width.is_multiple_of(f)
        {
            bail!(
                "height and width must be positive multiples of {f} (the VAE's downsampling factor), got {}x{}",
                self.height,
                self.width
            );
        }
        if !self.guidance.is_finite() {
            bail!("guidance must be finite, got {}", self.guidance);
        }
        if !(self.eta.is_finite() && (0.0..=1.0).contains(&self.eta)) {
            // DDIM's sigma grows past the step's own noise level beyond 1: NaN latents.
            bail!("eta must be in [0, 1], got {}", self.eta);
        }
        if self.steps == 0 {
            bail!("steps must be ≥ 1");
        }
        if let InitLatents::Given(l) = &self.latents {
            let expected = latent.shape(self.prompts.len(), self.height, self.width);
            if l.dims() != expected {
                bail!("latents have shape {:?}, expected {expected:?}", l.dims());
            }
        }
        Ok(())
    }
}

impl<B: Backend> StableDiffusion<B> {
    /// Samples images [B, 3, H, W] in about [-1, 1] (unclamped), calling `progress(i, n)` after
    /// each step.
    pub fn sample(
        &self,
        req: &SampleRequest<B>,
        device: &B::Device,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        let latents = self.sample_latents(req, device, &mut progress)?;
        Ok(self.vae.decode_latents(latents))
    }

    /// The denoised latents (before the VAE), as `output_type="latent"`.
    pub fn sample_latents(
        &self,
        req: &SampleRequest<B>,
        device: &B::Device,
        progress: &mut impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        req.validate(self.latent_space())?;
        let b = req.prompts.len();
        let cond = self.encode_prompts(&req.prompts, device)?;
        let uncond = if req.guidance <= 1.0 {
            cond.clone()
        } else if req.negative_prompts.is_empty() {
            self.encode_prompts(&[String::new()], device)?
        } else {
            self.encode_prompts(&req.negative_prompts, device)?
        };
        let cond = Conditioning::new(cond, uncond, req.guidance);
        let scheduler = DdimScheduler::new(self.scheduler.clone(), req.steps)?;
        let shape = self.latent_space().shape(b, req.height, req.width);
        let latents = match &req.latents {
            InitLatents::Seed(seed) => NoiseRng::new(*seed).tensor::<B, 4>(shape, device),
            InitLatents::Given(l) => l.clone(),
        };
        let n = scheduler.timesteps.len();
        let latents = denoise(
            &self.unet,
            &scheduler,
            &cond,
            latents,
            0..n,
            req.eta,
            &mut NoiseRng::new(req.noise_seed),
            |i| progress(i + 1, n),
        );
        Ok(latents)
    }
}

/// Images in [-1, 1] [B, 3, H, W] → 8-bit RGB buffers, as diffusers' `numpy_to_pil`
/// (`(x / 2 + 0.5).clamp(0, 1) * 255`, rounded).
pub fn to_rgb8<B: Backend>(images: Tensor<B, 4>) -> Result<Vec<image::RgbImage>> {
    let [b, c, h, w] = images.dims();
    if c != 3 {
        bail!("expected 3 channels, got {c}");
    }
    let data: Vec<f32> = images
        .to_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        let per_image = 3 * h * w;
        bail!(
            "image {} has a non-finite pixel value ({}) at channel {}, row {}, column {}: the model produced NaN or infinity, nothing is written",
            i / per_image,
            data[i],
            i % per_image / (h * w),
            i % (h * w) / w,
            i % w
        );
    }
    let mut out = Vec::with_capacity(b);
    for i in 0..b {
        let mut img = image::RgbImage::new(w as u32, h as u32);
        for y in 0..h {
            for x in 0..w {
                let px = std::array::from_fn(|ch| {
                    let v = data[((i * 3 + ch) * h + y) * w + x];
                    ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
                });
                img.put_pixel(x as u32, y as u32, image::Rgb(px));
            }
        }
        out.push(img);
    }
    Ok(out)
}

/// Writes `img` as PNG at `path` atomically (a temporary file in the same folder, then rename).
pub fn save_png(img: &image::RgbImage, path: &Path) -> Result<()> {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    lora_group::io::write_atomic(path, &png)
}

/// Reads a latents file: a safetensors tensor `latents` [B, 4, H/8, W/8].
pub fn read_latents<B: Backend>(
    path: &Path,
    expected: [usize; 4],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let file = SafetensorsFile::open(path)?;
    let shape = file
        .shape("latents")
        .with_context(|| format!("{}: no tensor named `latents`", path.display()))?;
    if shape != expected {
        bail!(
            "{}: tensor `latents` has shape {shape:?}, expected {expected:?} (prompts, the UNet's latent channels, height and width over the VAE's factor)",
            path.display()
        );
    }
    Ok(file.tensor::<B, 4>("latents", device)?)
}

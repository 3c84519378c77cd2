//! CLIP score as torchmetrics computes it: CLIPProcessor's preprocessing of 8-bit images
//! (Pillow bicubic resize of the shorter side to 224, centre crop, /255, CLIP normalisation), the
//! text tower's projected pooled output, 100 · cosine per image–caption pair, the mean, then a
//! clamp at 0. The model is a full transformers CLIPModel checkpoint (openai/clip-vit-large-patch14
//! by default).

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use image::RgbImage;
use rewards::clip_vision::{ClipVisionConfig, ClipVisionModelWithProjection, load_clip_vision};
use rewards::preprocess::{CLIP_MEAN, CLIP_STD};
use sd_model::ClipTokenizer;
use sd_model::clip::{ClipTextConfig, ClipTextModel};
use sd_model::load::{Weights, load_weights};

use crate::pil::resize_bicubic;

/// `text_model` + `text_projection` of a CLIPModel (field names are its keys).
#[derive(Module, Debug)]
pub struct ClipTextWithProjection<B: Backend> {
    pub text_model: ClipTextModel<B>,
    pub text_projection: Linear<B>,
}

/// The CLIP score model: both towers and the tokenizer.
pub struct ClipScorer<B: Backend> {
    pub text: ClipTextWithProjection<B>,
    pub vision: ClipVisionModelWithProjection<B>,
    pub tokenizer: ClipTokenizer,
}

impl<B: Backend> ClipScorer<B> {
    /// Loads a transformers CLIPModel folder (config.json with text_config / vision_config /
    /// projection_dim, model.safetensors or pytorch_model.bin, and the tokenizer files).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let v: serde_json::Value = sd_model::config::read_config(&cfg_path)?;
        let text_cfg: ClipTextConfig =
            serde_json::from_value(v.get("text_config").cloned().unwrap_or_default())
                .with_context(|| format!("{}: invalid text_config", cfg_path.display()))?;
        let projection = v
            .get("projection_dim")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(768) as usize;
        let weights_path = ["model.safetensors", "pytorch_model.bin"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .with_context(|| {
                format!(
                    "{} holds neither model.safetensors nor pytorch_model.bin",
                    dir.display()
                )
            })?;
        Self::from_files(
            &text_cfg,
            &ClipVisionConfig::from_file(&cfg_path)?,
            projection,
            &weights_path,
            dir,
            device,
        )
    }

    /// From explicit configs, a full CLIPModel weights file and a tokenizer folder.
    pub fn from_files(
        text_cfg: &ClipTextConfig,
        vision_cfg: &ClipVisionConfig,
        projection: usize,
        weights: &Path,
        tokenizer: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        let text = ClipTextWithProjection {
            text_model: text_cfg.init(device)?,
            text_projection: LinearConfig::new(text_cfg.hidden_size, projection)
                .with_bias(false)
                .init(device),
        };
        let w = Weights::open(weights, None)?;
        let text = load_weights(text, &w, &|k| {
            let keep = k.starts_with("text_model.") || k == "text_projection.weight";
            (keep && !k.ends_with("position_ids")).then(|| k.to_string())
        })?;
        Ok(Self {
            text,
            vision: load_clip_vision(vision_cfg, weights, device)?,
            tokenizer: ClipTokenizer::from_dir(tokenizer)?,
        })
    }

    /// L2-normalised text features [N, D] of `captions` (truncated to 77 tokens).
    pub fn text_features(&self, captions: &[String], device: &B::Device) -> Result<Tensor<B, 2>> {
        let n = self.tokenizer.max_length;
        let mut ids = Vec::with_capacity(captions.len() * n);
        for c in captions {
            ids.extend(self.tokenizer.encode(c)?.into_iter().map(i64::from));
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [captions.len(), n]), device);
        let pooled = self.text.text_model.forward(ids).pooler_output;
        Ok(normalize(self.text.text_projection.forward(pooled)))
    }

    /// L2-normalised image features [N, D] of 8-bit images.
    pub fn image_features(&self, images: &[RgbImage], device: &B::Device) -> Result<Tensor<B, 2>> {
        let px = pixel_values::<B>(images, self.vision.image_size, device)?;
        Ok(normalize(self.vision.forward(px)))
    }

    /// Per-pair scores `100 · cos` and torchmetrics' CLIP score `max(mean, 0)`.
    pub fn score(
        &self,
        images: &[RgbImage],
        captions: &[String],
        device: &B::Device,
    ) -> Result<(Vec<f32>, f64)> {
        if images.len() != captions.len() || images.is_empty() {
            bail!(
                "CLIP score needs one caption per image: {} images, {} captions",
                images.len(),
                captions.len()
            );
        }
        let s = (self.image_features(images, device)? * self.text_features(captions, device)?)
            .sum_dim(1)
            * 100.0;
        let scores: Vec<f32> = s.into_data().convert::<f32>().into_vec().expect("f32");
        let mean = scores.iter().map(|&v| v as f64).sum::<f64>() / scores.len() as f64;
        Ok((scores, mean.max(0.0)))
    }
}

/// The L2-normalised image features of 8-bit images as a flat row-major list (FID on CLIP
/// features).
pub fn feature_values<B: Backend>(
    scorer: &ClipScorer<B>,
    images: &[RgbImage],
    device: &B::Device,
) -> Result<Vec<f32>> {
    scorer
        .image_features(images, device)?
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("CLIP image features: {e:?}"))
}

/// A name for the CLIP model of folder `dir` that changes with its weights (their FNV-1a hash),
/// recorded with cached FID statistics on its features.
pub fn identity(dir: &Path) -> Result<String> {
    let weights = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .with_context(|| format!("{} holds no CLIP weights file", dir.display()))?;
    let bytes =
        std::fs::read(&weights).with_context(|| format!("cannot read {}", weights.display()))?;
    Ok(format!(
        "clip-image-features:{:016x}",
        crate::fid::fnv1a_bytes(&bytes)
    ))
}

/// FID statistics of the CLIP image features of the images of `dir` (cached as
/// [`crate::fid::cached_folder_stats`] says, under `ident` from [`identity`]).
pub fn folder_stats<B: Backend>(
    scorer: &ClipScorer<B>,
    ident: &str,
    dir: &Path,
    batch: usize,
    device: &B::Device,
) -> Result<crate::fid::Stats> {
    if crate::fid::is_stats_file(dir) {
        bail!(
            "{}: FID on CLIP features takes a folder of real images, not Inception statistics",
            dir.display()
        );
    }
    let dim = scorer.text.text_projection.weight.val().dims()[1];
    crate::fid::cached_folder_stats(dir, ident, dim, |files| {
        let mut feats = Vec::with_capacity(files.len() * dim);
        for chunk in files.chunks(batch.max(1)) {
            let images = chunk
                .iter()
                .map(|f| {
                    image::open(f)
                        .map(|i| i.to_rgb8())
                        .with_context(|| format!("{} is not a readable image", f.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            feats.extend(feature_values(scorer, &images, device)?);
        }
        Ok(feats)
    })
}

fn normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    x / norm
}

/// CLIPImageProcessor on 8-bit images: the shorter side resized to `n` (the longer to
/// `int(n · long / short)`) with Pillow's bicubic, a centre crop of `n` (offsets
/// `(size − n) / 2` rounded down, as transformers' `center_crop`; torchvision's `CenterCrop`, used
/// by the rewards, rounds half to even), /255, CLIP mean/std → [N, 3, n, n].
pub fn pixel_values<B: Backend>(
    images: &[RgbImage],
    n: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let mut data = Vec::with_capacity(images.len() * 3 * n * n);
    for img in images {
        let (w, h) = img.dimensions();
        let (nw, nh) = if h <= w {
            ((n as u64 * w as u64 / h as u64) as u32, n as u32)
        } else {
            (n as u32, (n as u64 * h as u64 / w as u64) as u32)
        };
        let resized = if (nw, nh) == (w, h) {
            img.clone()
        } else {
            resize_bicubic(img, nw, nh)
        };
        let (top, left) = ((nh - n as u32) / 2, (nw - n as u32) / 2);
        for c in 0..3 {
            for y in 0..n as u32 {
                for x in 0..n as u32 {
                    let v = resized.get_pixel(left + x, top + y)[c] as f32 / 255.0;
                    data.push((v - CLIP_MEAN[c]) / CLIP_STD[c]);
                }
            }
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), 3, n, n]),
        device,
    ))
}

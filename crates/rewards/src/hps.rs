//! HPSv2: the cosine between open_clip ViT-H-14 image and text features, as the HPSv2 package
//! scores an image for a prompt (plain cosine, about 0.2–0.35 for SD 1.5; no logit scale), the
//! image resized to the model's input size (224 for ViT-H-14).

use std::path::Path;

use anyhow::{Result, bail};
use burn::prelude::*;
use sd_model::ClipTokenizer;

use crate::Reward;
use crate::openclip::{OpenClip, OpenClipConfig, load_openclip};
use crate::preprocess::clip_preprocess;

/// The HPSv2 reward: open_clip model + CLIP BPE tokenizer padding with 0 (open_clip's).
pub struct Hps<B: Backend> {
    pub model: OpenClip<B>,
    pub tokenizer: ClipTokenizer,
}

impl<B: Backend> Hps<B> {
    /// Loads `HPS_v2_compressed.pt` (or a safetensors state dict) and a CLIP tokenizer folder
    /// (SD's `tokenizer/` has the same BPE vocabulary; padding is set to 0 as open_clip pads).
    pub fn load(
        config: &OpenClipConfig,
        weights: &Path,
        tokenizer_dir: &Path,
        device: &B::Device,
    ) -> Result<Self> {
        Ok(Self {
            model: load_openclip(config, weights, device)?,
            tokenizer: ClipTokenizer::from_dir(tokenizer_dir)?.with_pad_id(0),
        })
    }

    /// Token ids [N, 77] of `prompts` as open_clip's tokenizer gives them (truncated with EOT
    /// kept last, zero padding).
    pub fn tokenize(&self, prompts: &[String], device: &B::Device) -> Result<Tensor<B, 2, Int>> {
        let n = self.tokenizer.max_length;
        let mut ids = Vec::with_capacity(prompts.len() * n);
        for p in prompts {
            ids.extend(self.tokenizer.encode(p)?.into_iter().map(i64::from));
        }
        Ok(Tensor::from_data(
            TensorData::new(ids, [prompts.len(), n]),
            device,
        ))
    }
}

impl<B: Backend> Reward<B> for Hps<B> {
    fn name(&self) -> &str {
        "hps"
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[String]) -> Result<Tensor<B, 1>> {
        let b = images.dims()[0];
        if prompts.len() != b {
            bail!(
                "hps: {} prompts for {b} images (one prompt per image is needed)",
                prompts.len()
            );
        }
        let device = images.device();
        let image = self
            .model
            .encode_image(clip_preprocess(images, self.model.image_size));
        let text = self.model.encode_text(self.tokenize(prompts, &device)?);
        Ok((image * text).sum_dim(1).reshape([b]))
    }
}

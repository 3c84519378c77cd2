//! Differentiable rewards for fine-tuning diffusion models, as the paper and its predecessors
//! compute them: the LAION aesthetic predictor (CLIP ViT-L/14 + MLP), HPSv2 (OpenCLIP ViT-H-14)
//! and JPEG compressibility, plus real PNG/JPEG file sizes for metrics.

pub mod aesthetic;
pub mod build;
pub mod clip_vision;
pub mod config;
pub mod files;
pub mod hps;
pub mod images;
pub mod jpeg;
pub mod openclip;
pub mod preprocess;

use anyhow::Result;
use burn::prelude::*;

/// A reward of generated images, differentiable with respect to the images.
pub trait Reward<B: Backend> {
    /// Short name (`aesthetic`, `hps`, `compress`).
    fn name(&self) -> &str;
    /// Whether larger scores are better (true for every reward here).
    fn higher_is_better(&self) -> bool {
        true
    }
    /// Scores images [B, 3, H, W] in [-1, 1] (the VAE's output) → [B]. Prompt-conditioned rewards
    /// need one prompt per image.
    fn score(&self, images: Tensor<B, 4>, prompts: &[String]) -> Result<Tensor<B, 1>>;
}

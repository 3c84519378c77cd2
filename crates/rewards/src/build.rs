//! Building a reward from a run configuration's `[rewards]` section: aesthetic, HPSv2,
//! compressibility, or the joint weighted sum.

use crate::Reward;
use crate::aesthetic::Aesthetic;
use crate::config::{RewardKind, RewardsConfig};
use crate::hps::Hps;
use crate::jpeg::Compressibility;
use crate::openclip::OpenClipConfig;
use anyhow::{Context, Result};
use burn::prelude::*;

/// `Σ w_i R_i` (joint tuning).
pub struct Weighted<B: Backend> {
    pub parts: Vec<(f64, Box<dyn Reward<B>>)>,
}

impl<B: Backend> Reward<B> for Weighted<B> {
    fn name(&self) -> &str {
        "joint"
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[String]) -> Result<Tensor<B, 1>> {
        let mut total: Option<Tensor<B, 1>> = None;
        for (w, r) in &self.parts {
            let s = r.score(images.clone(), prompts)? * *w;
            total = Some(match total {
                Some(t) => t + s,
                None => s,
            });
        }
        total.context("joint reward without parts")
    }
}

/// The reward of a task.
pub fn build_reward<B: Backend>(
    kind: RewardKind,
    c: &RewardsConfig,
    device: &B::Device,
) -> Result<Box<dyn Reward<B>>> {
    Ok(match kind {
        RewardKind::Aesthetic => {
            let clip = c
                .aesthetic_clip
                .clone()
                .unwrap_or_else(|| "openai/clip-vit-large-patch14".into());
            let clip = sd_model::hub::resolve_repo(&clip, sd_model::hub::CLIP_FILES)?;
            let mlp = c
                .aesthetic_mlp
                .as_ref()
                .context("rewards.aesthetic_mlp is not set")?
                .resolve()
                .context("rewards.aesthetic_mlp")?;
            Box::new(Aesthetic::load(&clip, &mlp, device)?)
        }
        RewardKind::Hps => {
            let config = match &c.hps_model_config {
                Some(p) => OpenClipConfig::from_file(p)?,
                None => OpenClipConfig::vit_h14(),
            };
            let w = c
                .hps_weights
                .as_ref()
                .context("rewards.hps_weights is not set")?
                .resolve()
                .context("rewards.hps_weights")?;
            let t = c
                .hps_tokenizer
                .as_ref()
                .context("rewards.hps_tokenizer is not set")?;
            Box::new(Hps::load(&config, &w, t, device)?)
        }
        RewardKind::Compress => Box::new(Compressibility::new(c.compress_quality.unwrap_or(80.0))?),
        RewardKind::Joint => {
            let w = c.joint.clone().unwrap_or_default();
            Box::new(Weighted {
                parts: vec![
                    (w.aesthetic, build_reward(RewardKind::Aesthetic, c, device)?),
                    (w.hps, build_reward(RewardKind::Hps, c, device)?),
                    (w.compress, build_reward(RewardKind::Compress, c, device)?),
                ],
            })
        }
    })
}

//! The reward section of run configurations: which reward, and where each reward model's files
//! are (shared by the trainer and the evaluation runner).

use std::path::PathBuf;

use sd_model::hub::asset::Asset;
use serde::{Deserialize, Serialize};

/// Which reward a task maximises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardKind {
    Aesthetic,
    Hps,
    Compress,
    /// A weighted sum (joint tuning; weights in `[rewards.joint]`).
    Joint,
}

impl RewardKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Aesthetic => "aesthetic",
            Self::Hps => "hps",
            Self::Compress => "compress",
            Self::Joint => "joint",
        }
    }
}

/// Reward models' files. Unused rewards' entries may be omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RewardsConfig {
    /// CLIP ViT-L/14 (folder, file or hub id) for the aesthetic reward.
    pub aesthetic_clip: Option<String>,
    /// The LAION MLP file (a path, `hf://owner/name/file` or a URL).
    pub aesthetic_mlp: Option<Asset>,
    /// HPSv2 weights: `hf://xswu/HPSv2/HPS_v2_compressed.pt` (v2.0) or `.../HPS_v2.1_compressed.pt`
    /// (v2.1; the two give scores that are not comparable), or a local file.
    pub hps_weights: Option<Asset>,
    /// open_clip model config JSON (default ViT-H-14).
    pub hps_model_config: Option<PathBuf>,
    /// CLIP tokenizer folder for HPS.
    pub hps_tokenizer: Option<PathBuf>,
    /// JPEG quality of the compressibility reward (80).
    pub compress_quality: Option<f32>,
    /// Joint-tuning weights (default 0.01 A + 2 H + C).
    pub joint: Option<JointWeights>,
}

/// Weights of the joint reward.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointWeights {
    pub aesthetic: f64,
    pub hps: f64,
    pub compress: f64,
}

impl Default for JointWeights {
    fn default() -> Self {
        Self {
            aesthetic: 0.01,
            hps: 2.0,
            compress: 1.0,
        }
    }
}

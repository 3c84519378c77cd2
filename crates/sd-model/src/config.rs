//! Reading diffusers / transformers `config.json` files, with errors that name the file.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Reads and parses a JSON config; the error names the file and the offending field or line.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("invalid config {}", path.display()))
}

/// The largest width, channel count or vocabulary a config may ask for: far above every SD 1.x /
/// CLIP size (SD 1.5's widest is 1280 channels, CLIP's vocabulary 49,408), low enough that a typo
/// is refused before a huge allocation aborts the process.
pub const MAX_WIDTH: usize = 1 << 17;
/// The most layers (resnets, transformer blocks, encoder layers) per block or model a config may ask for.
pub const MAX_LAYERS: usize = 256;

/// Refuses `value` outside `[min, max]`, naming the field and the limits.
pub fn check_range(field: &str, value: usize, min: usize, max: usize) -> Result<()> {
    if value < min || value > max {
        bail!("{field} = {value} is out of range: it must be between {min} and {max}");
    }
    Ok(())
}

/// A config value that diffusers accepts either as one number or as one per block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(usize),
    Many(Vec<usize>),
}

impl OneOrMany {
    /// One value per level; a list must have exactly `n` entries (`field` names it in errors).
    pub fn expand(&self, n: usize, field: &str) -> Result<Vec<usize>> {
        match self {
            Self::One(v) => Ok(vec![*v; n]),
            Self::Many(v) if v.len() == n => Ok(v.clone()),
            Self::Many(v) => bail!("{field} has {} entries, expected {n}", v.len()),
        }
    }
}

/// A UNet down block (`down_block_types`); other diffusers types are refused when the config
/// is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    CrossAttnDownBlock2D,
    DownBlock2D,
}

/// A UNet up block (`up_block_types`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    CrossAttnUpBlock2D,
    UpBlock2D,
}

/// The UNet's middle block (`mid_block_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MidBlockType {
    UNetMidBlock2DCrossAttn,
}

/// An AutoencoderKL encoder block (`down_block_types` of the VAE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaeDownBlockType {
    DownEncoderBlock2D,
}

/// An AutoencoderKL decoder block (`up_block_types` of the VAE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaeUpBlockType {
    UpDecoderBlock2D,
}

/// The UNet's and VAE's activation (`act_fn`): SD 1.x uses SiLU only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    Silu,
}

/// A CLIP transformer's MLP activation (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenAct {
    /// `x · σ(1.702 x)` (OpenAI CLIP).
    #[default]
    QuickGelu,
    /// The exact (erf) GELU.
    Gelu,
}

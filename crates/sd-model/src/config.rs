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

//! Checkpoints of a task in one safetensors file written atomically (temp file + rename): the
//! student's and the EMA teacher's pairs of the task, AdamW's moments and the counters, so a run
//! killed at any point resumes from the last file bit for bit.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

/// The counters saved with a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Task index.
    pub task: usize,
    /// Optimiser steps completed in this task.
    pub step: usize,
    /// AdamW's step count.
    pub adam_step: u64,
    /// Whether the task is finished.
    pub done: bool,
    /// Hash of the run's config.
    pub config_hash: String,
}

/// Named 2-D tensors plus the state, as read back.
pub struct Checkpoint<B: Backend> {
    pub state: CheckpointState,
    pub tensors: BTreeMap<String, Tensor<B, 2>>,
}

/// Writes `tensors` and `state` to `path` atomically.
pub fn save<B: Backend>(
    path: &Path,
    state: &CheckpointState,
    tensors: &BTreeMap<String, Tensor<B, 2>>,
) -> Result<()> {
    let raw: BTreeMap<String, (Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(name, t)| {
            let values: Vec<f32> = t
                .clone()
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32");
            (name.clone(), (t.dims().to_vec(), values))
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("state".to_string(), serde_json::to_string(state)?);
    lora_group::io::write_safetensors(path, &raw, &meta)
}

/// Reads a checkpoint written by [`save`].
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<Checkpoint<B>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("checkpoint {} is corrupt: {e}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let state: CheckpointState = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state"))
        .map(|s| serde_json::from_str(s))
        .transpose()?
        .with_context(|| format!("checkpoint {} has no state", path.display()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.shape().len() != 2 {
            bail!("{}: tensor {name} is not 2-D", path.display());
        }
        let data = lora_group::io::tensor_data(view.dtype(), view.shape(), view.data())?;
        tensors.insert(name, Tensor::from_data(data, device));
    }
    Ok(Checkpoint { state, tensors })
}

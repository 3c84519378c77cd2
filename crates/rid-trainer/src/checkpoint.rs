//! Checkpoints of a task in one safetensors file written atomically (temp file, fsync, rename):
//! the student's and the EMA teacher's pairs of the task, AdamW's moments and the counters, with
//! a SHA-256 of all of it in the metadata. The previous file is kept as
//! `checkpoint.prev.safetensors`, so a run killed at any point resumes from the last good file bit
//! for bit, and a file corrupted on disk falls back to the one before.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Metadata keys of a checkpoint file.
const STATE: &str = "state";
const CHECKSUM: &str = "sha256";

/// The file that keeps the checkpoint before `path`'s (`checkpoint.safetensors` ->
/// `checkpoint.prev.safetensors`).
pub fn previous_path(path: &Path) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}.prev{ext}"))
}

/// SHA-256 (hex) of the state's JSON and every tensor's name, shape and little-endian f32 bytes,
/// in name order.
fn checksum<'a>(
    state: &str,
    tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = Sha256::new();
    h.update((state.len() as u64).to_le_bytes());
    h.update(state.as_bytes());
    for (name, shape, bytes) in tensors {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `tensors` and `state` to `path` atomically, the file it replaces kept as
/// [`previous_path`]. A failed write (a full disk) names `path` and leaves both files as they
/// were.
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
    let state_json = serde_json::to_string(state)?;
    let le: Vec<(&str, &[usize], Vec<u8>)> = raw
        .iter()
        .map(|(n, (shape, values))| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.as_str(), shape.as_slice(), bytes)
        })
        .collect();
    let sum = checksum(
        &state_json,
        le.iter().map(|(n, s, b)| (*n, *s, b.as_slice())),
    );
    let mut meta = BTreeMap::new();
    meta.insert(STATE.to_string(), state_json);
    meta.insert(CHECKSUM.to_string(), sum);
    let bytes = lora_group::io::safetensors_bytes(&raw, &meta)?;
    lora_group::io::write_atomic_keeping(path, &bytes, Some(&previous_path(path)))
}

/// Reads a checkpoint written by [`save`]; a file that is truncated, fails to parse or whose
/// contents do not match its checksum is an error naming it.
pub fn load<B: Backend>(path: &Path, device: &B::Device) -> Result<Checkpoint<B>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("checkpoint {} is corrupt: {e}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("checkpoint {} is corrupt: {e}", path.display()))?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let text = meta
        .get(STATE)
        .with_context(|| format!("checkpoint {} has no state", path.display()))?;
    let stored = meta.get(CHECKSUM).with_context(|| {
        format!(
            "checkpoint {} has no checksum (metadata `{CHECKSUM}`)",
            path.display()
        )
    })?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let found = checksum(
        text,
        views.iter().map(|(n, v)| (n.as_str(), v.shape(), v.data())),
    );
    if &found != stored {
        bail!(
            "checkpoint {} is corrupt: its contents' SHA-256 is {found}, the file records {stored}",
            path.display()
        );
    }
    let state: CheckpointState = serde_json::from_str(text)
        .with_context(|| format!("checkpoint {}: metadata `{STATE}`", path.display()))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in views {
        if view.shape().len() != 2 {
            bail!("{}: tensor {name} is not 2-D", path.display());
        }
        let data = lora_group::io::tensor_data(view.dtype(), view.shape(), view.data())?;
        tensors.insert(name, Tensor::from_data(data, device));
    }
    Ok(Checkpoint { state, tensors })
}

/// The newest good checkpoint of `path` on resume: `path`, or, when it is missing or corrupt,
/// [`previous_path`] with a warning on stderr. `None` when neither exists; an error naming both
/// files when neither can be read.
pub fn load_latest<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<Option<(Checkpoint<B>, PathBuf)>> {
    let prev = previous_path(path);
    if !path.exists() && !prev.exists() {
        return Ok(None);
    }
    let newest = if path.exists() {
        match load(path, device) {
            Ok(c) => return Ok(Some((c, path.to_path_buf()))),
            Err(e) => Some(e),
        }
    } else {
        None
    };
    let why = match &newest {
        Some(e) => format!("{e:#}"),
        None => format!("{} is missing", path.display()),
    };
    if !prev.exists() {
        return Err(newest.expect("path exists")).context(format!(
            "no previous checkpoint {} to fall back to",
            prev.display()
        ));
    }
    match load(&prev, device) {
        Ok(c) => {
            eprintln!(
                "warning: {why}; resuming from the previous checkpoint {} (step {})",
                prev.display(),
                c.state.step
            );
            Ok(Some((c, prev)))
        }
        Err(e) => bail!("no good checkpoint to resume from: {why}; and {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn_flex::Flex;

    fn state(step: usize) -> CheckpointState {
        CheckpointState {
            task: 0,
            step,
            adam_step: step as u64,
            done: false,
            config_hash: "h".into(),
        }
    }

    fn tensors(v: f32) -> BTreeMap<String, Tensor<B, 2>> {
        let t = Tensor::<B, 2>::from_data(TensorData::new(vec![v; 6], [2, 3]), &Default::default());
        BTreeMap::from([("student.a".to_string(), t)])
    }

    #[test]
    fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_and_two_corrupt_ones_are_an_error() {
        let dir = std::env::temp_dir().join(format!("rid-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("checkpoint.safetensors");
        let prev = previous_path(&path);
        assert_eq!(prev, dir.join("checkpoint.prev.safetensors"));
        let device = Default::default();
        assert!(load_latest::<B>(&path, &device).unwrap().is_none());
        save(&path, &state(1), &tensors(1.0)).unwrap();
        save(&path, &state(2), &tensors(2.0)).unwrap();
        let (c, from) = load_latest::<B>(&path, &device).unwrap().unwrap();
        assert_eq!((c.state.step, from.as_path()), (2, path.as_path()));

        // One bit of the last tensor value flipped: the checksum names the file.
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let e = format!("{:#}", load::<B>(&path, &device).err().unwrap());
        assert!(
            e.contains("checkpoint.safetensors is corrupt") && e.contains("SHA-256"),
            "{e}"
        );
        let (c, from) = load_latest::<B>(&path, &device).unwrap().unwrap();
        assert_eq!((c.state.step, from.as_path()), (1, prev.as_path()));
        let v = c.tensors["student.a"]
            .clone()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        assert_eq!(v, vec![1.0; 6]);

        // The state's counters are covered too: step 1 -> step 3 in the metadata.
        let good = std::fs::read(&prev).unwrap();
        let text = String::from_utf8_lossy(&good).replace("\"step\\\":1", "\"step\\\":3");
        assert_ne!(
            text.as_bytes(),
            good.as_slice(),
            "the metadata holds the step"
        );
        std::fs::write(&prev, text.as_bytes()).unwrap();
        let e = format!("{:#}", load::<B>(&prev, &device).err().unwrap());
        assert!(e.contains("checkpoint.prev.safetensors is corrupt"), "{e}");

        // Both bad (the newest also truncated): an error naming both files.
        std::fs::write(&path, &bytes[..n / 2]).unwrap();
        let e = format!("{:#}", load_latest::<B>(&path, &device).err().unwrap());
        assert!(
            e.contains("checkpoint.safetensors is corrupt")
                && e.contains("checkpoint.prev.safetensors is corrupt"),
            "{e}"
        );
        // Only the newest, bad, with nothing before it: the error says so.
        std::fs::remove_file(&prev).unwrap();
        let e = format!("{:#}", load_latest::<B>(&path, &device).err().unwrap());
        assert!(e.contains("no previous checkpoint"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

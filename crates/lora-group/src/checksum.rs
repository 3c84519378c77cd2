//! The SHA-256 ril records in the metadata of the LoRA files it writes (peft and kohya layouts),
//! over every tensor's name, dtype, shape and bytes, so that a file damaged on disk or in a copy
//! is refused when ril reads it back, naming the file, instead of loading wrong weights. Files
//! written by other tools carry no such entry and are read as before; editing a file's metadata
//! (as diffusers and the web UIs do) keeps it valid.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Result, bail};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

use crate::io::{FileDtype, NamedTensors, safetensors_bytes_as};

/// The metadata key of the checksum.
pub const KEY: &str = "ril_sha256";

/// SHA-256 (hex) of a file's tensors in name order: each name, dtype, shape and data bytes, each
/// length-prefixed.
pub fn tensors_sha256(file: &SafeTensors) -> String {
    let mut views = file.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for (name, view) in &views {
        field(name.as_bytes());
        field(format!("{:?}", view.dtype()).as_bytes());
        let shape: Vec<u8> = view
            .shape()
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        field(&shape);
        field(view.data());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `tensors` as `dtype` with `metadata` and the tensors' checksum under [`KEY`].
pub fn bytes_with_checksum(
    tensors: &NamedTensors,
    metadata: &BTreeMap<String, String>,
    dtype: FileDtype,
) -> Result<Vec<u8>> {
    let plain = safetensors_bytes_as(tensors, metadata, dtype)?;
    let sum =
        tensors_sha256(&SafeTensors::deserialize(&plain).map_err(|e| anyhow::anyhow!("{e}"))?);
    let mut metadata = metadata.clone();
    metadata.insert(KEY.to_string(), sum);
    safetensors_bytes_as(tensors, &metadata, dtype)
}

/// Checks the file's recorded checksum, if it has one; a mismatch is an error naming `path`.
pub fn verify(path: &Path, file: &SafeTensors, metadata: &HashMap<String, String>) -> Result<()> {
    let Some(stored) = metadata.get(KEY) else {
        return Ok(());
    };
    let found = tensors_sha256(file);
    if &found != stored {
        bail!(
            "{} is corrupt: its tensors' SHA-256 is {found}, its metadata `{KEY}` records {stored} \
             (damaged on disk or in a copy; write it again from its run)",
            path.display()
        );
    }
    Ok(())
}

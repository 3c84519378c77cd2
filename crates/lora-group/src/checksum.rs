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

use crate::io::{FileDtype, NamedTensors};

/// The metadata key of the checksum.
pub const KEY: &str = "ril_sha256";

/// SHA-256 (hex) of a file's tensors in name order: each name, dtype, shape and data bytes, each
/// length-prefixed.
pub fn tensors_sha256(file: &SafeTensors) -> String {
    let mut views = file.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0));
    let dtypes: Vec<String> = views
        .iter()
        .map(|(_, v)| format!("{:?}", v.dtype()))
        .collect();
    sha256_of(
        views.iter().zip(&dtypes).map(|((name, view), dtype)| {
            (name.as_str(), dtype.as_str(), view.shape(), view.data())
        }),
    )
}

/// The checksum of `(name, dtype, shape, data)` entries given in name order (safetensors' dtype
/// names, e.g. `F32`).
pub(crate) fn sha256_of<'a>(
    entries: impl Iterator<Item = (&'a str, &'a str, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    for (name, dtype, shape, data) in entries {
        field(name.as_bytes());
        field(dtype.as_bytes());
        let shape: Vec<u8> = shape
            .iter()
            .flat_map(|&d| (d as u64).to_le_bytes())
            .collect();
        field(&shape);
        field(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of `tensors` as `dtype` with `metadata` and the tensors' checksum under [`KEY`]
/// (hashed from the data bytes as written, in one pass).
pub fn bytes_with_checksum(
    tensors: &NamedTensors,
    metadata: &BTreeMap<String, String>,
    dtype: FileDtype,
) -> Result<Vec<u8>> {
    crate::io::encode(tensors, metadata, dtype, true)
}

/// The recorded checksum and the one `file`'s tensors give, when they differ (`None` for a
/// file without [`KEY`] or one that matches).
pub fn mismatch(file: &SafeTensors, stored: Option<&String>) -> Option<(String, String)> {
    let stored = stored?;
    let found = tensors_sha256(file);
    (&found != stored).then(|| (found, stored.clone()))
}

/// Checks the file's recorded checksum, if it has one; a mismatch is an error naming `path`.
pub fn verify(path: &Path, file: &SafeTensors, metadata: &HashMap<String, String>) -> Result<()> {
    match mismatch(file, metadata.get(KEY)) {
        Some((found, stored)) => bail!("{}", corrupt(path, &found, &stored)),
        None => Ok(()),
    }
}

/// The error text of a checksum mismatch in `path`.
pub fn corrupt(path: &Path, found: &str, stored: &str) -> String {
    format!(
        "{} is corrupt: its tensors' SHA-256 is {found}, its metadata `{KEY}` records {stored} \
         (damaged on disk or in a copy; write it again from its run)",
        path.display()
    )
}

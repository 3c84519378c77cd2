//! Helpers shared by the sd-model integration tests: fixture paths and tensor comparison.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use sd_model::load::SafetensorsFile;

// The backend the tests run on: burn-flex, or LibTorch on the CPU with `--features tch`.
#[cfg(not(feature = "tch"))]
pub type B = sd_model::backend::Cpu;
#[cfg(feature = "tch")]
pub type B = sd_model::backend::Tch;
#[cfg(not(feature = "tch"))]
pub type AD = sd_model::backend::CpuAutodiff;
#[cfg(feature = "tch")]
pub type AD = sd_model::backend::TchAutodiff;

/// `crates/sd-model/tests/fixtures/...`
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// `data/...` at the repository root (manifests and prompts; see data/README.md).
pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data")
        .join(rel)
}

/// A reference file of the parity script.
pub fn reference(name: &str) -> SafetensorsFile {
    SafetensorsFile::open(&fixture(&format!("reference/{name}.safetensors")))
        .expect("reference fixture")
}

pub use ril_testkit::{assert_close, copy_dir, scratch, values};

/// A tensor of a safetensors file as raw parts, for tests that write altered checkpoints.
#[derive(Clone)]
pub struct RawEntry {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// All tensors of a safetensors file.
pub fn read_raw(path: &Path) -> Vec<RawEntry> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<RawEntry> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| RawEntry {
            name,
            dtype: v.dtype(),
            shape: v.shape().to_vec(),
            bytes: v.data().to_vec(),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Writes tensors as a safetensors file.
pub fn write_raw(path: &Path, entries: &[RawEntry]) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = entries
        .iter()
        .map(|e| {
            let view =
                safetensors::tensor::TensorView::new(e.dtype, e.shape.clone(), &e.bytes).unwrap();
            (e.name.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

//! Helpers shared by the sd-model integration tests: fixture paths and tensor comparison.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use sd_model::load::SafetensorsFile;

pub type B = sd_model::backend::Cpu;
pub type AD = sd_model::backend::CpuAutodiff;

/// `crates/sd-model/tests/fixtures/...`
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// `../shared/...` beside the repository checkout.
pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared")
        .join(rel)
}

/// A reference file of the parity script.
pub fn reference(name: &str) -> SafetensorsFile {
    SafetensorsFile::open(&fixture(&format!("reference/{name}.safetensors")))
        .expect("reference fixture")
}

pub fn values<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 data")
}

/// Asserts `|a - e| <= rtol * |e| + atol_scale * max|e|` for every element: a relative test
/// with an absolute floor proportional to the tensor's magnitude, so that values near zero (where
/// a relative error is meaningless after cancellations) are judged on the tensor's scale.
pub fn assert_close(name: &str, actual: &[f32], expected: &[f32], rtol: f32, atol_scale: f32) {
    assert_eq!(actual.len(), expected.len(), "{name}: length");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0 && scale.is_finite(),
        "{name}: degenerate reference (max |e| = {scale})"
    );
    let mut worst = (0usize, 0f32);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        let err = (a - e).abs();
        let allowed = rtol * e.abs() + atol_scale * scale;
        assert!(a.is_finite(), "{name}: element {i} is {a}");
        if err / allowed > worst.1 {
            worst = (i, err / allowed);
        }
    }
    let (i, ratio) = worst;
    eprintln!(
        "{name}: worst element at {ratio:.3}x the tolerance (rtol {rtol:e}, atol {atol_scale:e} x {scale})"
    );
    assert!(
        ratio <= 1.0,
        "{name}: element {i}: got {}, expected {} (|err| = {}, {ratio:.2}x the tolerance; max |e| = {scale})",
        actual[i],
        expected[i],
        (actual[i] - expected[i]).abs()
    );
}

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

/// A fresh scratch folder for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ril-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

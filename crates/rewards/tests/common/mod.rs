//! Helpers for the rewards parity tests: fixture paths, the parity script's portable generator
//! (inputs too large to commit are regenerated bit-exactly from their seed), and comparisons of
//! full or subsampled references.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use burn::prelude::*;
use sd_model::load::SafetensorsFile;
use serde_json::Value;

// The backend the tests run on: burn-flex, or LibTorch on the CPU with `--features tch`.
#[cfg(not(feature = "tch"))]
pub type B = sd_model::backend::Cpu;
#[cfg(feature = "tch")]
pub type B = sd_model::backend::Tch;
#[cfg(not(feature = "tch"))]
pub type AD = sd_model::backend::CpuAutodiff;
#[cfg(feature = "tch")]
pub type AD = sd_model::backend::TchAutodiff;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The real LAION aesthetic MLP, committed at data/weights (see data/README.md).
pub fn mlp_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/weights/sac+logos+ava1-l14-linearMSE.pth")
}

pub fn reference(name: &str) -> SafetensorsFile {
    SafetensorsFile::open(&fixture(&format!("{name}.safetensors"))).unwrap()
}

pub use ril_testkit::{assert_close, generate, values};

fn meta(r: &SafetensorsFile, key: &str) -> Value {
    r.metadata(key)
        .map(|m| serde_json::from_str(&m).unwrap())
        .unwrap_or(Value::Null)
}

/// The tensor `name` of a reference file: stored, or regenerated from the `generated` metadata
/// and checked against its stored head and statistics.
pub fn input<Bk: Backend, const D: usize>(r: &SafetensorsFile, name: &str) -> Tensor<Bk, D> {
    let device = Default::default();
    if r.shape(name).is_some() {
        return r.tensor(name, &device).unwrap();
    }
    let g = &meta(r, "generated")[name];
    let shape: Vec<usize> = serde_json::from_value(g["shape"].clone()).unwrap();
    let n = shape.iter().product();
    let a = g["a"].as_f64().unwrap_or(1.0) as f32;
    let data = generate(
        g["kind"].as_str().unwrap(),
        g["seed"].as_u64().unwrap(),
        n,
        a,
    );
    assert_eq!(
        data[..16],
        r.read_f32(&format!("{name}_head")).unwrap()[..],
        "{name}: generator head"
    );
    let shape: [usize; D] = shape.try_into().unwrap();
    Tensor::from_data(TensorData::new(data, shape), &device)
}

/// Compares `actual` with reference `key`, stored in full or as `key_sub` at the indices
/// `key_rows` × `key_cols` of the last two axes (plus `key_stats` = [Σx, Σ|x|, Σx²] over all).
pub fn check<Bk: Backend, const D: usize>(
    r: &SafetensorsFile,
    key: &str,
    actual: Tensor<Bk, D>,
    rtol: f32,
    atol_scale: f32,
) {
    if r.shape(key).is_some() {
        assert_close(
            key,
            &values(actual),
            &r.read_f32(key).unwrap(),
            rtol,
            atol_scale,
        );
        return;
    }
    let full = values(actual.clone());
    let stats = r.read_f32(&format!("{key}_stats")).unwrap();
    let sum: f64 = full.iter().map(|&v| v as f64).sum();
    let abs: f64 = full.iter().map(|&v| v.abs() as f64).sum();
    assert!(
        (sum - stats[0] as f64).abs() <= 1e-3 * abs.max(1e-12),
        "{key}: sum {sum} vs reference {} (Σ|x| = {abs})",
        stats[0]
    );
    assert!(
        (abs - stats[1] as f64).abs() <= 1e-4 * abs,
        "{key}: Σ|x| {abs} vs {}",
        stats[1]
    );
    let device = actual.device();
    let idx = |k: &str| {
        let v = r.read_i64(&format!("{key}_{k}")).unwrap();
        let n = v.len();
        Tensor::<Bk, 1, Int>::from_data(TensorData::new(v, [n]), &device)
    };
    let sub = actual.select(D - 2, idx("rows")).select(D - 1, idx("cols"));
    assert_close(
        &format!("{key} (subsampled)"),
        &values(sub),
        &r.read_f32(&format!("{key}_sub")).unwrap(),
        rtol,
        atol_scale,
    );
}

//! Loading diffusers / transformers safetensors checkpoints into Burn modules, with errors that
//! name the file, the key and both shapes.
//!
//! The module's parameter paths are its checkpoint keys (see STYLE.md): a visitor lists every
//! parameter with its PyTorch key and PyTorch shape (Linear weights transposed, norm
//! gamma/beta named weight/bias), the file's keys are passed through a model-specific remap, the
//! two key sets and all shapes are compared before anything is applied, and only then are the
//! tensors (cast to f32, Linear weights transposed) applied with `burn-store`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::{Bool, DType, Int, TensorData};
use burn_store::{ModuleSnapshot, TensorSnapshot};
use safetensors::{Dtype, SafeTensors};

/// One parameter of a module as a checkpoint stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedParam {
    /// The module path of the parameter in Burn (`...norm.gamma`).
    pub burn_path: String,
    /// The shape in the PyTorch layout (Linear weights are `[out, in]`).
    pub torch_shape: Vec<usize>,
    /// Whether the tensor is a Linear weight (stored transposed in Burn).
    pub linear_weight: bool,
}

/// Lists every parameter of `module` keyed by its PyTorch checkpoint key, without materialising
/// lazily initialised tensors.
pub fn expected_params<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, ExpectedParam> {
    let mut visitor = ParamLister {
        path: Vec::new(),
        key: Vec::new(),
        containers: Vec::new(),
        out: BTreeMap::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// Lists parameters with their Burn path and checkpoint key. The `base` of a `LoraLinear` is
/// transparent in keys (a LoRA-wrapped layer loads the plain layer's `weight` / `bias`), and LoRA
/// pairs are not part of a base checkpoint.
struct ParamLister {
    path: Vec<String>,
    /// Checkpoint key segments (None: a transparent segment).
    key: Vec<Option<String>>,
    containers: Vec<String>,
    out: BTreeMap<String, ExpectedParam>,
}

impl ParamLister {
    fn record(&mut self, shape: Vec<usize>) {
        if self.containers.iter().any(|c| c == "Struct:LoraPair") {
            return;
        }
        let burn_path = self.path.join(".");
        let module_type = self
            .containers
            .iter()
            .rev()
            .find(|c| c.starts_with("Struct:"))
            .cloned()
            .unwrap_or_default();
        let name = self.path.last().cloned().unwrap_or_default();
        let is_norm = matches!(
            module_type.as_str(),
            "Struct:GroupNorm" | "Struct:LayerNorm" | "Struct:BatchNorm"
        );
        let torch_name = match (is_norm, name.as_str()) {
            (true, "gamma") => "weight",
            (true, "beta") => "bias",
            _ => name.as_str(),
        };
        let linear_weight = module_type == "Struct:Linear" && name == "weight" && shape.len() == 2;
        let torch_shape = if linear_weight {
            vec![shape[1], shape[0]]
        } else {
            shape
        };
        let mut key_path: Vec<&str> = self.key.iter().flatten().map(String::as_str).collect();
        if let Some(last) = key_path.last_mut() {
            *last = torch_name;
        }
        self.out.insert(
            key_path.join("."),
            ExpectedParam {
                burn_path,
                torch_shape,
                linear_weight,
            },
        );
    }
}

impl<B: Backend> ModuleVisitor<B> for ParamLister {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        // `container_type` is the struct that owns the field `name`.
        let transparent = name == "base" && container_type == "Struct:LoraLinear";
        self.key.push((!transparent).then(|| name.to_string()));
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.key.pop();
        self.path.pop();
        self.containers.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.record(param.lazy_shape().to_vec());
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.record(param.lazy_shape().to_vec());
    }
    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
        self.record(param.lazy_shape().to_vec());
    }
}

/// What a file key becomes in the module: a key, or nothing (an ignored buffer such as
/// `position_ids`).
pub type Remap = dyn Fn(&str) -> Option<String>;

/// A safetensors file read into memory and checked for structural validity.
pub struct SafetensorsFile {
    path: std::path::PathBuf,
    bytes: Arc<Vec<u8>>,
    tensors: BTreeMap<String, RawTensor>,
    metadata: BTreeMap<String, String>,
}

#[derive(Clone)]
struct RawTensor {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

impl SafetensorsFile {
    /// Reads and parses `path`; a missing, truncated or corrupt file is an error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read weights file {}", path.display()))?;
        let parsed = SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid safetensors file (truncated or corrupt?): {e}",
                path.display()
            )
        })?;
        let metadata = SafeTensors::read_metadata(&bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        let base = bytes.as_ptr() as usize;
        let mut tensors = BTreeMap::new();
        for (name, view) in parsed.tensors() {
            let start = view.data().as_ptr() as usize - base;
            tensors.insert(
                name,
                RawTensor {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    start,
                    end: start + view.data().len(),
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            bytes: Arc::new(bytes),
            tensors,
            metadata,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A `__metadata__` entry of the file.
    pub fn metadata(&self, key: &str) -> Option<String> {
        self.metadata.get(key).cloned()
    }

    /// The tensor names in the file.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The shape of tensor `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|t| t.shape.as_slice())
    }

    /// Reads tensor `key` as f32 values (f32, f16 and bf16 files are accepted).
    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>> {
        let raw = self
            .tensors
            .get(key)
            .with_context(|| format!("{}: no tensor named `{key}`", self.path.display()))?;
        decode_f32(&self.bytes[raw.start..raw.end], raw.dtype)
            .with_context(|| format!("{}: tensor `{key}`", self.path.display()))
    }

    /// Reads tensor `key` as i64 values (i64 and i32 are accepted).
    pub fn read_i64(&self, key: &str) -> Result<Vec<i64>> {
        let raw = self
            .tensors
            .get(key)
            .with_context(|| format!("{}: no tensor named `{key}`", self.path.display()))?;
        let data = &self.bytes[raw.start..raw.end];
        Ok(match raw.dtype {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            other => bail!(
                "{}: tensor `{key}` has dtype {other:?}, expected an integer type",
                self.path.display()
            ),
        })
    }

    /// Reads tensor `key` into a Burn float tensor of rank `D` on `device`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let shape = self
            .shape(key)
            .with_context(|| format!("{}: no tensor named `{key}`", self.path.display()))?
            .to_vec();
        if shape.len() != D {
            bail!(
                "{}: tensor `{key}` has shape {shape:?}, expected rank {D}",
                self.path.display()
            );
        }
        let data = self.read_f32(key)?;
        Ok(Tensor::from_data(TensorData::new(data, shape), device))
    }
}

fn decode_f32(data: &[u8], dtype: Dtype) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half_to_f32(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        other => bail!("unsupported dtype {other:?} (expected F32, F16, BF16 or F64)"),
    })
}

/// IEEE 754 binary16 to f32, exact for every value (subnormals, infinities, NaN).
fn half_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value = m * 2^-24.
            let v = m as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Loads every parameter of `module` from the safetensors file at `path`.
///
/// Every file key (after `remap`) must name a parameter and every parameter must be present, with
/// the same shape (a `[o, i]` file tensor fills a `[o, i, 1, 1]` convolution and vice versa, as
/// diffusers' linear-projection and convolution variants are the same map). Errors name the file,
/// the keys and both shapes; the module is returned only when everything was applied.
pub fn load_module<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: M,
    path: &Path,
    remap: &Remap,
) -> Result<M> {
    let file = SafetensorsFile::open(path)?;
    load_module_from(module, &file, remap)
}

/// As [`load_module`], from an already opened file.
pub fn load_module_from<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    mut module: M,
    file: &SafetensorsFile,
    remap: &Remap,
) -> Result<M> {
    let expected = expected_params(&module);
    let display = file.path.display();
    let mut unexpected = Vec::new();
    let mut mismatched = Vec::new();
    let mut bad_dtype = Vec::new();
    let mut seen = BTreeSet::new();
    let mut snapshots = Vec::new();
    for (file_key, raw) in &file.tensors {
        let Some(key) = remap(file_key) else {
            continue;
        };
        let Some(param) = expected.get(&key) else {
            unexpected.push(file_key.clone());
            continue;
        };
        if !matches!(
            raw.dtype,
            Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
        ) {
            bad_dtype.push(format!("`{file_key}` ({:?})", raw.dtype));
            continue;
        }
        let compatible = raw.shape == param.torch_shape
            || squeeze_1x1(&raw.shape) == squeeze_1x1(&param.torch_shape)
                && raw.shape.iter().product::<usize>()
                    == param.torch_shape.iter().product::<usize>();
        if !compatible {
            mismatched.push(format!(
                "`{file_key}`: the model expects {:?}, the file has {:?}",
                param.torch_shape, raw.shape
            ));
            continue;
        }
        if !seen.insert(key.clone()) {
            bail!("{display}: two file keys map to parameter `{key}` (the second is `{file_key}`)");
        }
        snapshots.push(snapshot(file, raw.clone(), param.clone()));
    }
    let missing: Vec<&String> = expected.keys().filter(|k| !seen.contains(*k)).collect();
    let mut problems = Vec::new();
    if !mismatched.is_empty() {
        problems.push(format!("wrong shapes: {}", mismatched.join("; ")));
    }
    if !missing.is_empty() {
        problems.push(format!("missing keys: {}", list(&missing)));
    }
    if !unexpected.is_empty() {
        problems.push(format!("unexpected keys: {}", list(&unexpected)));
    }
    if !bad_dtype.is_empty() {
        problems.push(format!("unsupported dtypes: {}", bad_dtype.join(", ")));
    }
    if !problems.is_empty() {
        bail!(
            "{display} does not match the model ({} parameters): {}",
            expected.len(),
            problems.join("; ")
        );
    }
    let result = module.apply(snapshots, None, None, false);
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        bail!("{display}: {}", errors.join("; "));
    }
    if result.applied.len() != expected.len() {
        let applied: BTreeSet<&String> = result.applied.iter().collect();
        let not_applied: Vec<&String> = expected
            .values()
            .map(|p| &p.burn_path)
            .filter(|p| !applied.contains(p))
            .collect();
        bail!(
            "{display}: {} of {} parameters were not filled: {}",
            not_applied.len(),
            expected.len(),
            list(&not_applied)
        );
    }
    Ok(module)
}

fn squeeze_1x1(shape: &[usize]) -> Vec<usize> {
    let mut s = shape.to_vec();
    while s.len() > 2 && s.last() == Some(&1) {
        s.pop();
    }
    s
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    const SHOWN: usize = 12;
    let mut s: Vec<String> = items
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{}`", k.as_ref()))
        .collect();
    if items.len() > SHOWN {
        s.push(format!("and {} more", items.len() - SHOWN));
    }
    s.join(", ")
}

fn snapshot(file: &SafetensorsFile, raw: RawTensor, param: ExpectedParam) -> TensorSnapshot {
    let bytes = file.bytes.clone();
    let burn_shape: Vec<usize> = if param.linear_weight {
        vec![param.torch_shape[1], param.torch_shape[0]]
    } else {
        param.torch_shape.clone()
    };
    let shape_for_closure = burn_shape.clone();
    let data_fn = Rc::new(move || {
        let values = decode_f32(&bytes[raw.start..raw.end], raw.dtype)
            .map_err(|e| burn_store::TensorSnapshotError::DataError(e.to_string()))?;
        let values = if param.linear_weight {
            let (out, inp) = (param.torch_shape[0], param.torch_shape[1]);
            let mut t = vec![0.0f32; values.len()];
            for o in 0..out {
                for i in 0..inp {
                    t[i * out + o] = values[o * inp + i];
                }
            }
            t
        } else {
            values
        };
        Ok(TensorData::new(values, shape_for_closure.clone()))
    });
    let path: Vec<String> = param.burn_path.split('.').map(str::to_string).collect();
    TensorSnapshot::from_closure(
        data_fn,
        DType::F32,
        burn_shape.into(),
        path,
        Vec::new(),
        ParamId::new(),
    )
}

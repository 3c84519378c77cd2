//! Loading diffusers / transformers safetensors checkpoints into Burn modules, with errors that
//! name the file, the key and both shapes.
//!
//! The module's parameter paths are its checkpoint keys (see STYLE.md): a visitor lists every
//! parameter with its PyTorch key and PyTorch shape (Linear weights transposed, norm
//! gamma/beta named weight/bias), the file's keys are passed through a model-specific remap, the
//! two key sets and all shapes are compared before anything is applied, and only then are the
//! tensors (cast to f32, Linear weights transposed) applied with `burn-store`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn::tensor::{Bool, DType, Int, TensorData};
use burn_store::{ModuleSnapshot, TensorSnapshot};
use lora_group::io::tensor_data;
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

/// The innermost struct among a module visitor's containers (`Struct:Linear`, ...): the module
/// that owns the parameter being visited ("" at the top level).
pub fn owner_struct(containers: &[String]) -> String {
    containers
        .iter()
        .rev()
        .find(|c| c.starts_with("Struct:"))
        .cloned()
        .unwrap_or_default()
}

/// The transpose of a row-major `rows` x `cols` matrix (a Linear weight between PyTorch's
/// `[out, in]` and Burn's `[in, out]`).
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = values[r * cols + c];
        }
    }
    t
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
        let module_type = owner_struct(&self.containers);
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

/// Why a weights file could not be read: the kinds a caller may act on, each naming the file
/// (and the key).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read weights file {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{} is not a valid safetensors file (truncated or corrupt?): {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A file ril wrote whose tensors no longer give the SHA-256 its metadata records.
    #[error("{}", lora_group::checksum::corrupt(path, found, stored))]
    Checksum {
        path: PathBuf,
        found: String,
        stored: String,
    },
    #[error("{}: no tensor named `{key}`", path.display())]
    MissingKey { path: PathBuf, key: String },
    #[error("{}: tensor `{key}` has shape {found:?}, expected {expected}", path.display())]
    Shape {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: String,
    },
    #[error("{}: tensor `{key}` holds a non-finite value ({value}) at flat index {index}", path.display())]
    NonFinite {
        path: PathBuf,
        key: String,
        index: usize,
        value: f32,
    },
    #[error("{}: tensor `{key}`: {reason}", path.display())]
    Data {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// The first non-finite value of `values` as an error naming `path` and `key`.
pub fn check_finite(path: &Path, key: &str, values: &[f32]) -> Result<(), LoadError> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(LoadError::NonFinite {
            path: path.to_path_buf(),
            key: key.to_string(),
            index,
            value: values[index],
        }),
    }
}

/// A file's bytes: memory-mapped (an SD 1.5 UNet is 3.4 GB in f32, read only where a tensor is
/// converted), or read whole where mapping is refused (e.g. some network file systems).
enum FileBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}

impl FileBytes {
    fn open(path: &Path) -> Result<Self, LoadError> {
        let io = |error| LoadError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; if another process truncates
        // or rewrites the file while it is mapped, reads may fault or see the new bytes, as with
        // any mapped checkpoint (safetensors' and candle's loaders map the same way). ril writes
        // its own files through a temporary file and a rename, which never changes a mapped one.
        match unsafe { memmap2::Mmap::map(&file) } {
            Ok(m) => Ok(FileBytes::Mapped(m)),
            Err(_) => std::fs::read(path).map(FileBytes::Owned).map_err(io),
        }
    }
}

/// A safetensors file, memory-mapped and checked for structural validity.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Arc<FileBytes>,
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
    /// Maps and parses `path`; a missing, truncated or corrupt file is an error naming it.
    pub fn open(path: &Path) -> Result<Self, LoadError> {
        let bytes = FileBytes::open(path)?;
        let parsed = SafeTensors::deserialize(&bytes).map_err(|e| LoadError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let metadata = SafeTensors::read_metadata(&bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        let metadata: BTreeMap<String, String> = metadata;
        // Files ril wrote carry their tensors' checksum; others (diffusers', peft's) do not.
        if let Some((found, stored)) =
            lora_group::checksum::mismatch(&parsed, metadata.get(lora_group::checksum::KEY))
        {
            return Err(LoadError::Checksum {
                path: path.to_path_buf(),
                found,
                stored,
            });
        }
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

    fn raw(&self, key: &str) -> Result<&RawTensor, LoadError> {
        self.tensors.get(key).ok_or_else(|| LoadError::MissingKey {
            path: self.path.clone(),
            key: key.to_string(),
        })
    }

    /// Reads tensor `key` as f32 values (f32, f16, bf16 and f64 files are accepted); a
    /// non-finite value is an error naming the file and key.
    pub fn read_f32(&self, key: &str) -> Result<Vec<f32>, LoadError> {
        let raw = self.raw(key)?;
        let values = raw_f32(raw, &self.bytes).map_err(|reason| LoadError::Data {
            path: self.path.clone(),
            key: key.to_string(),
            reason,
        })?;
        check_finite(&self.path, key, &values)?;
        Ok(values)
    }

    /// Reads tensor `key` as i64 values (i64 and i32 are accepted).
    pub fn read_i64(&self, key: &str) -> Result<Vec<i64>> {
        let raw = self.raw(key)?;
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
    ) -> Result<Tensor<B, D>, LoadError> {
        let shape = self.raw(key)?.shape.clone();
        if shape.len() != D {
            return Err(LoadError::Shape {
                path: self.path.clone(),
                key: key.to_string(),
                found: shape,
                expected: format!("rank {D}"),
            });
        }
        let data = self.read_f32(key)?;
        Ok(Tensor::from_data(TensorData::new(data, shape), device))
    }

    /// The file's tensors as a weight source for [`load_weights`].
    pub fn weights(&self) -> Weights {
        let entries = self
            .tensors
            .iter()
            .map(|(name, raw)| {
                let bytes = self.bytes.clone();
                let raw = raw.clone();
                let float = matches!(
                    raw.dtype,
                    Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
                );
                let (shape, dtype) = (raw.shape.clone(), format!("{:?}", raw.dtype));
                let data: DataFn =
                    Rc::new(move || Ok(TensorData::new(raw_f32(&raw, &bytes)?, raw.shape.clone())));
                let entry = WeightEntry {
                    shape,
                    dtype,
                    float,
                    data,
                };
                (name.clone(), entry)
            })
            .collect();
        Weights {
            path: self.path.clone(),
            entries,
        }
    }
}

/// The f32 values of a float tensor of the file.
fn raw_f32(raw: &RawTensor, bytes: &[u8]) -> std::result::Result<Vec<f32>, String> {
    tensor_data(raw.dtype, &raw.shape, &bytes[raw.start..raw.end])
        .map_err(|e| e.to_string())?
        .into_vec()
        .map_err(|e| format!("{e:?}"))
}

type DataFn = Rc<dyn Fn() -> std::result::Result<TensorData, String>>;

/// One tensor of a weight source: its shape, dtype and a lazy reader (f32 data).
#[derive(Clone)]
pub struct WeightEntry {
    pub shape: Vec<usize>,
    /// The stored dtype, for messages.
    pub dtype: String,
    /// Whether the stored dtype is a float type (others cannot fill a parameter).
    pub float: bool,
    data: DataFn,
}

/// The tensors of a checkpoint file, by key: a safetensors file or a PyTorch pickle.
pub struct Weights {
    path: PathBuf,
    entries: BTreeMap<String, WeightEntry>,
}

impl WeightEntry {
    /// A float tensor of `shape` produced on demand by `data` (e.g. generated weights).
    pub fn lazy(shape: Vec<usize>, data: impl Fn() -> TensorData + 'static) -> Self {
        Self {
            shape,
            dtype: "F32".into(),
            float: true,
            data: Rc::new(move || Ok(data())),
        }
    }
}

impl Weights {
    /// A weight source from entries; `label` names it in errors (a path or a description).
    pub fn from_entries(label: impl Into<PathBuf>, entries: BTreeMap<String, WeightEntry>) -> Self {
        Self {
            path: label.into(),
            entries,
        }
    }

    /// Opens `path` by extension: `.safetensors`, or a PyTorch pickle (`.pt`, `.pth`, `.bin`,
    /// `.ckpt`) read without executing any code (only plain tensor rebuilding is understood;
    /// anything else is an error). `top_level_key` selects a nested dict such as `state_dict`.
    pub fn open(path: &Path, top_level_key: Option<&str>) -> Result<Self> {
        let is_safetensors = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
        if is_safetensors {
            return Ok(SafetensorsFile::open(path)?.weights());
        }
        if !path.is_file() {
            bail!("weights file {} does not exist", path.display());
        }
        let entries = crate::pickle::read(path, top_level_key)?
            .into_iter()
            .map(|(name, t)| {
                let entry = WeightEntry {
                    shape: t.shape.clone(),
                    dtype: format!("{:?}", t.dtype),
                    float: t.dtype.is_float(),
                    data: Rc::new(move || t.data().map_err(|e| format!("{e:#}"))),
                };
                (name, entry)
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keys and entries.
    pub fn entries(&self) -> &BTreeMap<String, WeightEntry> {
        &self.entries
    }

    /// Reads tensor `key` as f32 [`TensorData`].
    pub fn data(&self, key: &str) -> Result<TensorData> {
        let entry = self
            .entries
            .get(key)
            .with_context(|| format!("{}: no tensor named `{key}`", self.path.display()))?;
        (entry.data)().map_err(|e| anyhow::anyhow!("{}: tensor `{key}`: {e}", self.path.display()))
    }
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
    module: M,
    file: &SafetensorsFile,
    remap: &Remap,
) -> Result<M> {
    load_weights(module, &file.weights(), remap)
}

/// As [`load_module`], from any weight source (safetensors or PyTorch pickle).
pub fn load_weights<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    mut module: M,
    weights: &Weights,
    remap: &Remap,
) -> Result<M> {
    let expected = expected_params(&module);
    let display = weights.path.display();
    let mut unexpected = Vec::new();
    let mut mismatched = Vec::new();
    let mut bad_dtype = Vec::new();
    let mut seen = BTreeSet::new();
    let mut snapshots = Vec::new();
    for (file_key, entry) in &weights.entries {
        let Some(key) = remap(file_key) else {
            continue;
        };
        let Some(param) = expected.get(&key) else {
            unexpected.push(file_key.clone());
            continue;
        };
        if !entry.float {
            bad_dtype.push(format!("`{file_key}` ({})", entry.dtype));
            continue;
        }
        let compatible = entry.shape == param.torch_shape
            || squeeze_1x1(&entry.shape) == squeeze_1x1(&param.torch_shape)
                && entry.shape.iter().product::<usize>()
                    == param.torch_shape.iter().product::<usize>();
        if !compatible {
            mismatched.push(format!(
                "`{file_key}`: the model expects {:?}, the file has {:?}",
                param.torch_shape, entry.shape
            ));
            continue;
        }
        if !seen.insert(key.clone()) {
            bail!("{display}: two file keys map to parameter `{key}` (the second is `{file_key}`)");
        }
        snapshots.push(snapshot(
            entry.data.clone(),
            param.clone(),
            &weights.path,
            file_key,
        ));
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

/// A snapshot at the parameter's Burn path holding the file tensor in Burn's layout (Linear
/// weights transposed, 1×1 reshapes applied); a non-finite value is an error naming the file
/// and key.
fn snapshot(data: DataFn, param: ExpectedParam, file: &Path, file_key: &str) -> TensorSnapshot {
    let (file, file_key) = (file.to_path_buf(), file_key.to_string());
    let burn_shape: Vec<usize> = if param.linear_weight {
        vec![param.torch_shape[1], param.torch_shape[0]]
    } else {
        param.torch_shape.clone()
    };
    let shape_for_closure = burn_shape.clone();
    let data_fn = Rc::new(move || {
        let values: Vec<f32> = data()
            .map_err(burn_store::TensorSnapshotError::DataError)?
            .into_vec()
            .map_err(|e| burn_store::TensorSnapshotError::DataError(format!("{e:?}")))?;
        check_finite(&file, &file_key, &values)
            .map_err(|e| burn_store::TensorSnapshotError::DataError(e.to_string()))?;
        let values = if param.linear_weight {
            transpose(&values, param.torch_shape[0], param.torch_shape[1])
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

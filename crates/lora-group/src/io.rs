//! LoRA files in the peft/diffusers format: one task's pairs as safetensors with keys
//! `unet.<layer path>.lora_A.weight` [r, in] and `...lora_B.weight` [out, r], and the task's rank
//! and alpha in the file's metadata, so diffusers' `load_lora_weights` reads ril's files and ril
//! reads LoRAs trained with peft.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn::tensor::DType;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

use crate::layer::LoraPair;
use crate::{LoraModel, task_count};

/// What a LoRA file holds.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFileInfo {
    /// Number of adapted layers.
    pub layers: usize,
    /// Rank of the pairs (the largest, when ranks differ per layer).
    pub rank: usize,
    /// LoRA alpha (scale = alpha / rank).
    pub alpha: f64,
    /// The task index the pairs have in the model.
    pub task: usize,
}

/// A safetensors tensor as f32 `TensorData` (F32, F16, BF16 and F64 are accepted).
pub fn tensor_data(dtype: Dtype, shape: &[usize], bytes: &[u8]) -> Result<TensorData> {
    let dtype = match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F64 => DType::F64,
        other => bail!("unsupported dtype {other:?} (expected F32, F16, BF16 or F64)"),
    };
    Ok(TensorData::from_bytes_vec(bytes.to_vec(), shape.to_vec(), dtype).convert_dtype(DType::F32))
}

/// Writes `bytes` to `path` through a temporary file in the same folder, flushed to the disk
/// before a rename, so that a crash never leaves a half-written file under the final name. A
/// failed write (a full disk, a file-size limit) removes the temporary file and names `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_keeping(path, bytes, None)
}

/// Writes the folder `dir` as a whole: `fill` writes its contents into a temporary sibling
/// folder, which then replaces `dir` (any earlier `dir` is removed first). A failed `fill` or
/// rename removes the temporary folder and leaves `dir` as it was.
pub fn write_dir_atomic(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no folder name", dir.display()))?
        .to_string_lossy()
        .to_string();
    let tmp = dir.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let filled = std::fs::create_dir_all(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))
        .and_then(|()| fill(&tmp));
    if let Err(e) = filled {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.context(format!("cannot write {}", dir.display())));
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))
}

/// As [`write_atomic`], and with `previous` the file that `path` held (if any) is renamed to
/// `previous` just before the new one takes its name, so the last two versions are kept. A
/// failed write leaves both untouched.
pub fn write_atomic_keeping(path: &Path, bytes: &[u8], previous: Option<&Path>) -> Result<()> {
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    // A failed write or rename removes the temporary file and reports `what`.
    let failed = |e: std::io::Error, what: String| {
        let _ = std::fs::remove_file(&tmp);
        Err(anyhow::Error::new(e).context(what))
    };
    if let Err(e) = written {
        return failed(
            e,
            format!(
                "cannot write {} (through {}; the previous file is unchanged)",
                path.display(),
                tmp.display()
            ),
        );
    }
    let renamed = (|| -> std::io::Result<()> {
        if let Some(prev) = previous
            && path.exists()
        {
            std::fs::rename(path, prev)?;
        }
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = renamed {
        return failed(
            e,
            format!("cannot rename {} to {}", tmp.display(), path.display()),
        );
    }
    // The renames themselves reach the disk with the folder's entry.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Named tensors as a file holds them: key → (shape, f32 values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// The value type a file is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileDtype {
    F32,
    /// IEEE half precision (values rounded to nearest; beyond ±65504 they become infinite,
    /// which [`safetensors_bytes_as`] refuses).
    F16,
}

/// Serialises f32 tensors as safetensors with a deterministic header (tensors and metadata in
/// key order; the `safetensors` crate writes metadata in hash order, so equal contents could give
/// different bytes) with the tensors' checksum ([`crate::checksum`]; ril's readers verify it) and
/// writes the file atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    write_atomic(path, &encode(tensors, metadata, FileDtype::F32, true)?)
}

/// The bytes [`write_safetensors`] writes.
pub fn safetensors_bytes(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    safetensors_bytes_as(tensors, metadata, FileDtype::F32)
}

/// As [`safetensors_bytes`], the values stored as `dtype`. A value that does not fit `dtype`
/// (beyond f16's ±65504) is an error naming the tensor.
pub fn safetensors_bytes_as(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: &BTreeMap<String, String>,
    dtype: FileDtype,
) -> Result<Vec<u8>> {
    encode(tensors, metadata, dtype, false)
}

/// The safetensors bytes of `tensors` as `dtype` with `metadata`, plus, when `checksum`, the
/// tensors' SHA-256 ([`crate::checksum::KEY`]) hashed from the same data bytes that are written.
pub(crate) fn encode(
    tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    metadata: &BTreeMap<String, String>,
    dtype: FileDtype,
    checksum: bool,
) -> Result<Vec<u8>> {
    let (name_of_dtype, width) = match dtype {
        FileDtype::F32 => ("F32", 4),
        FileDtype::F16 => ("F16", 2),
    };
    // The data section first (tensors in name order, as the header lists them).
    let total: usize = tensors.values().map(|(_, v)| v.len() * width).sum();
    let mut data = Vec::with_capacity(total);
    let mut ranges = Vec::with_capacity(tensors.len());
    for (name, (shape, values)) in tensors {
        if shape.iter().product::<usize>() != values.len() {
            bail!(
                "tensor {name}: shape {shape:?} does not hold {} values",
                values.len()
            );
        }
        let start = data.len();
        match dtype {
            FileDtype::F32 => {
                for v in values {
                    data.extend_from_slice(&v.to_le_bytes());
                }
            }
            FileDtype::F16 => {
                for (i, v) in values.iter().enumerate() {
                    let h = burn::tensor::f16::from_f32(*v);
                    if h.is_infinite() && v.is_finite() {
                        bail!(
                            "tensor {name}: value {v} at flat index {i} is beyond float16's range (±65504)"
                        );
                    }
                    data.extend_from_slice(&h.to_le_bytes());
                }
            }
        }
        ranges.push((start, data.len()));
    }
    let mut meta: serde_json::Map<String, Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), json!(v)))
        .collect();
    if checksum {
        let sum = crate::checksum::sha256_of(tensors.iter().zip(&ranges).map(
            |((name, (shape, _)), &(a, b))| {
                (name.as_str(), name_of_dtype, shape.as_slice(), &data[a..b])
            },
        ));
        meta.insert(crate::checksum::KEY.into(), json!(sum));
    }
    let mut header = serde_json::Map::new();
    if !meta.is_empty() {
        header.insert("__metadata__".into(), Value::Object(meta));
    }
    for ((name, (shape, _)), (a, b)) in tensors.iter().zip(&ranges) {
        header.insert(
            name.clone(),
            json!({ "dtype": name_of_dtype, "shape": shape, "data_offsets": [a, b] }),
        );
    }
    // serde_json's Map is ordered by key (no `preserve_order`), so the header is deterministic.
    let mut text = Value::Object(header).to_string().into_bytes();
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut bytes = Vec::with_capacity(8 + text.len() + data.len());
    bytes.extend_from_slice(&(text.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&text);
    bytes.extend_from_slice(&data);
    Ok(bytes)
}

/// Saves the pairs of `task` as a peft/diffusers LoRA file with keys under `prefix` (`unet` for
/// diffusers pipelines).
pub fn export_task<B: Backend, M: LoraModel<B>>(
    model: &M,
    task: usize,
    prefix: &str,
    path: &Path,
) -> Result<LoraFileInfo> {
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut ranks = Vec::new();
    let mut alphas = Vec::new();
    let mut targets = std::collections::BTreeSet::new();
    model.visit_lora(&mut |layer_path, layer| {
        for pair in layer.lora.iter().filter(|p| p.task == task) {
            for (name, t) in [("lora_A", pair.lora_A.val()), ("lora_B", pair.lora_B.val())] {
                let mut dims = t.dims().to_vec();
                if layer.conv1x1 {
                    dims.extend([1, 1]);
                }
                let values: Vec<f32> = t
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .unwrap_or_default();
                tensors.insert(
                    format!("{prefix}.{layer_path}.{name}.weight"),
                    (dims, values),
                );
            }
            ranks.push(pair.rank());
            alphas.push(pair.alpha);
            // Full module paths: peft matches them exactly, whatever pattern chose the layers.
            targets.insert(layer_path.to_string());
        }
    });
    if ranks.is_empty() {
        bail!("the model has no LoRA pairs of task {task}");
    }
    let rank = *ranks.iter().max().unwrap();
    let alpha = alphas[0];
    if ranks.iter().any(|&r| r != rank) || alphas.iter().any(|&a| a != alpha) {
        bail!(
            "task {task} mixes ranks or alphas across layers; a LoRA file holds one rank and alpha"
        );
    }
    let targets: Vec<&String> = targets.iter().collect();
    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    metadata.insert(
        "lora_adapter_metadata".to_string(),
        adapter_metadata(prefix, rank, alpha, &targets),
    );
    metadata.insert("ril_task".to_string(), task.to_string());
    let bytes = crate::checksum::bytes_with_checksum(&tensors, &metadata, FileDtype::F32)
        .with_context(|| format!("cannot write {}", path.display()))?;
    write_atomic(path, &bytes)?;
    Ok(LoraFileInfo {
        layers: ranks.len(),
        rank,
        alpha,
        task,
    })
}

/// diffusers' `lora_adapter_metadata`: peft LoraConfig fields prefixed by the component, with
/// full module paths as `target_modules` (peft matches them exactly, whatever chose the layers).
pub fn adapter_metadata(prefix: &str, rank: usize, alpha: f64, targets: &[&String]) -> String {
    let mut config = serde_json::Map::new();
    let fields = [
        ("r", json!(rank)),
        ("lora_alpha", json!(alpha)),
        ("target_modules", json!(targets)),
        ("peft_type", json!("LORA")),
        ("bias", json!("none")),
        ("lora_dropout", json!(0.0)),
        ("init_lora_weights", json!(true)),
        ("fan_in_fan_out", json!(false)),
        ("rank_pattern", json!({})),
        ("alpha_pattern", json!({})),
        ("use_rslora", json!(false)),
        ("use_dora", json!(false)),
    ];
    for (k, v) in fields {
        config.insert(format!("{prefix}.{k}"), v);
    }
    Value::Object(config).to_string()
}

/// Rank and alpha recorded in a LoRA file's metadata: diffusers' `lora_adapter_metadata`, a JSON
/// object of peft `LoraConfig` fields prefixed by the component (`"unet.r"`, `"unet.lora_alpha"`).
/// Options that change the maths of a pair (per-layer patterns, rsLoRA, DoRA) are refused.
fn metadata_config(
    metadata: &HashMap<String, String>,
    prefix: &str,
    file: &Path,
) -> Result<(Option<usize>, Option<f64>)> {
    let Some(text) = metadata.get("lora_adapter_metadata") else {
        return Ok((None, None));
    };
    let value: Value = serde_json::from_str(text).with_context(|| {
        format!(
            "{}: metadata `lora_adapter_metadata` is not JSON",
            file.display()
        )
    })?;
    let field = |name: &str| -> Option<&Value> {
        value
            .get(format!("{prefix}.{name}"))
            .or_else(|| value.get(prefix).and_then(|c| c.get(name)))
            .or_else(|| value.get(name))
    };
    for name in ["rank_pattern", "alpha_pattern"] {
        if field(name)
            .and_then(Value::as_object)
            .is_some_and(|o| !o.is_empty())
        {
            bail!(
                "{}: metadata `{prefix}.{name}` (per-layer ranks or alphas) is not supported",
                file.display()
            );
        }
    }
    for name in ["use_rslora", "use_dora"] {
        if field(name).and_then(Value::as_bool) == Some(true) {
            bail!(
                "{}: metadata `{prefix}.{name}` is true, which ril does not support",
                file.display()
            );
        }
    }
    let rank = field("r").and_then(Value::as_u64).map(|r| r as usize);
    let alpha = field("lora_alpha").and_then(Value::as_f64);
    Ok((rank, alpha))
}

/// A LoRA file read and checked: per layer path, `lora_A` [r, in] and `lora_B` [out, r] (f32),
/// with the file's alpha (metadata, else the rank, as diffusers assumes without metadata).
#[derive(Debug, Clone)]
pub struct LoraFile {
    pub pairs: BTreeMap<String, (TensorData, TensorData)>,
    /// The largest rank.
    pub rank: usize,
    pub alpha: f64,
    /// The layers whose pairs the file stores as 1×1 kernels (`[r, in, 1, 1]` / `[out, r, 1,
    /// 1]`, peft's Conv2d LoRA); written back so.
    pub conv: std::collections::BTreeSet<String>,
}

impl LoraFile {
    /// The file's tensors in the peft layout, `PREFIX.LAYER.lora_A.weight` / `lora_B.weight`
    /// (f32, key order; alpha is metadata), pairs of `conv` layers as 1×1 kernels.
    pub fn tensors(&self, prefix: &str) -> NamedTensors {
        let mut out = BTreeMap::new();
        for (layer, (a, b)) in &self.pairs {
            for (half, t) in [("lora_A", a), ("lora_B", b)] {
                let mut shape = t.shape.to_vec();
                if self.conv.contains(layer) {
                    shape.extend([1, 1]);
                }
                let values = t.to_vec::<f32>().expect("read_lora holds f32");
                out.insert(format!("{prefix}.{layer}.{half}.weight"), (shape, values));
            }
        }
        out
    }

    /// Writes the file in the peft/diffusers layout (keys under `prefix`, rank and alpha in
    /// `lora_adapter_metadata`, `extra` metadata beside it) as `dtype`, atomically.
    pub fn write_peft(
        &self,
        prefix: &str,
        path: &Path,
        extra: &BTreeMap<String, String>,
        dtype: FileDtype,
    ) -> Result<()> {
        let layers: Vec<&String> = self.pairs.keys().collect();
        let mut metadata = extra.clone();
        metadata.insert("format".to_string(), "pt".to_string());
        metadata.insert(
            "lora_adapter_metadata".to_string(),
            adapter_metadata(prefix, self.rank, self.alpha, &layers),
        );
        let bytes = crate::checksum::bytes_with_checksum(&self.tensors(prefix), &metadata, dtype)
            .with_context(|| format!("cannot write {}", path.display()))?;
        write_atomic(path, &bytes)
    }
}

/// A safetensors file's `__metadata__` (empty when it has none or the header does not parse;
/// the tensors' own parse reports that).
pub fn file_metadata(bytes: &[u8]) -> HashMap<String, String> {
    SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().clone())
        .unwrap_or_default()
}

/// Reads a peft/diffusers LoRA file. Keys may carry the `prefix.` (e.g. `unet.`) or not. Errors
/// name the file and the key: a key that is not a LoRA weight, a layer with one half of its pair,
/// ranks that disagree with each other or with the metadata.
pub fn read_lora(path: &Path, prefix: &str) -> Result<LoraFile> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read LoRA file {}", path.display()))?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let metadata = file_metadata(&bytes);
    crate::checksum::verify(path, &file, &metadata)?;
    let (meta_rank, meta_alpha) = metadata_config(&metadata, prefix, path)?;
    let display = path.display();
    let mut halves: BTreeMap<String, [Option<TensorData>; 2]> = BTreeMap::new();
    let mut conv = std::collections::BTreeSet::new();
    for (key, view) in file.tensors() {
        let rest = key.strip_prefix(&format!("{prefix}.")).unwrap_or(&key);
        let (layer, which) = if let Some(l) = rest.strip_suffix(".lora_A.weight") {
            (l, 0)
        } else if let Some(l) = rest.strip_suffix(".lora_B.weight") {
            (l, 1)
        } else {
            bail!(
                "{display}: key `{key}` is not a LoRA weight (expected ...lora_A.weight / ...lora_B.weight)"
            );
        };
        let mut shape = view.shape().to_vec();
        // peft's Conv2d LoRA on a 1×1 convolution stores [r, in, 1, 1] / [out, r, 1, 1].
        if shape.len() == 4 && shape[2..] == [1, 1] {
            shape.truncate(2);
            conv.insert(layer.to_string());
        }
        if shape.len() != 2 {
            bail!(
                "{display}: key `{key}` has shape {:?}, expected a matrix (or a 1x1 kernel)",
                view.shape()
            );
        }
        let data = tensor_data(view.dtype(), &shape, view.data())
            .with_context(|| format!("{display}: key `{key}`"))?;
        let values = data
            .as_slice::<f32>()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            // NaN weights would give black images with exit 0.
            bail!(
                "{display}: key `{key}` holds a non-finite value ({}) at flat index {i}",
                values[i]
            );
        }
        halves.entry(layer.to_string()).or_insert([None, None])[which] = Some(data);
    }
    if halves.is_empty() {
        bail!("{display} holds no LoRA weights");
    }
    let mut pairs = BTreeMap::new();
    let mut rank = 0;
    for (layer, [a, b]) in halves {
        let (Some(a), Some(b)) = (a, b) else {
            bail!("{display}: layer `{layer}` has only one of lora_A / lora_B");
        };
        let (ra, rb) = (a.shape[0], b.shape[1]);
        if ra != rb {
            bail!("{display}: layer `{layer}`: lora_A has rank {ra} but lora_B has rank {rb}");
        }
        if let Some(r) = meta_rank
            && r != ra
        {
            bail!(
                "{display}: key `{prefix}.{layer}.lora_A.weight` has rank {ra}, the file's metadata says r = {r}"
            );
        }
        rank = rank.max(ra);
        pairs.insert(layer, (a, b));
    }
    let alpha = meta_alpha.unwrap_or(rank as f64);
    Ok(LoraFile {
        pairs,
        rank,
        alpha,
        conv,
    })
}

/// Loads a peft/diffusers LoRA file as a new task: the whole model is frozen, and every layer
/// named in the file gets a trainable pair with the file's weights. Besides [`read_lora`]'s
/// checks, a key that matches no layer or a shape that disagrees with the layer is an error
/// naming the key.
pub fn import_task<B: Backend, M: LoraModel<B>>(
    model: &mut M,
    path: &Path,
    prefix: &str,
) -> Result<LoraFileInfo> {
    let file = read_lora(path, prefix)?;
    let mut layers: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    model.visit_lora(&mut |p, layer| {
        layers.insert(p.to_string(), layer.dims());
    });
    let display = path.display();
    for (layer, (a, b)) in &file.pairs {
        let key = |half: &str| format!("{prefix}.{layer}.{half}.weight");
        let Some(&[d_in, d_out]) = layers.get(layer) else {
            bail!(
                "{display}: key `{}` matches no layer of the model",
                key("lora_A")
            );
        };
        if a.shape[1] != d_in {
            bail!(
                "{display}: key `{}` has shape {:?}, the layer needs [r, {d_in}]",
                key("lora_A"),
                a.shape
            );
        }
        if b.shape[0] != d_out {
            bail!(
                "{display}: key `{}` has shape {:?}, the layer needs [{d_out}, r]",
                key("lora_B"),
                b.shape
            );
        }
    }
    let task = task_count(model);
    let (count, rank, alpha) = (file.pairs.len(), file.rank, file.alpha);
    let mut ready = file.pairs;
    *model = model.clone().no_grad();
    model.visit_lora_mut(&mut |p, layer| {
        layer.unmerge();
        if let Some((a, b)) = ready.remove(p) {
            let device = layer.base.weight.val().device();
            let pair = LoraPair::from_tensors(
                Tensor::from_data(a, &device),
                Tensor::from_data(b, &device),
                alpha,
                task,
            );
            layer.push_pair(pair);
        }
    });
    Ok(LoraFileInfo {
        layers: count,
        rank,
        alpha,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("lora-io-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn keeping_the_previous_version_rotates_and_a_failed_write_leaves_both_and_no_temp_file() {
        let dir = scratch("keep");
        let (path, prev) = (dir.join("c.bin"), dir.join("c.prev.bin"));
        write_atomic_keeping(&path, b"one", Some(&prev)).unwrap();
        assert!(!prev.exists());
        write_atomic_keeping(&path, b"two", Some(&prev)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read(&prev).unwrap(), b"one");
        // A rename that fails (a non-empty folder under the final name): the temporary file is
        // removed and the error names the file.
        let blocked = dir.join("blocked");
        std::fs::create_dir_all(blocked.join("inside")).unwrap();
        let e = format!("{:#}", write_atomic(&blocked, b"x").unwrap_err());
        assert!(e.contains(&blocked.display().to_string()), "{e}");
        // A write that fails (no such folder) names the file too.
        let nowhere = dir.join("no-such-folder/c.bin");
        let e = format!("{:#}", write_atomic(&nowhere, b"x").unwrap_err());
        assert!(
            e.contains("cannot write") && e.contains("no-such-folder"),
            "{e}"
        );
        assert_eq!(names(&dir), ["blocked", "c.bin", "c.prev.bin"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

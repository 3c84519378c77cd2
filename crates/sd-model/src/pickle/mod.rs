//! PyTorch `torch.save` files (the zip format and the legacy pre-1.6 one) read without running
//! anything: a small pickle machine that knows dicts, lists, tuples, scalars, strings and the
//! few torch globals that rebuild tensors and parameters, and refuses every other global by
//! name. Every length field is checked against the bytes that remain before anything is
//! allocated, every tensor's shape, strides and offset against its storage, and every storage
//! against the bytes the file holds for it (a short, missing or CRC-failing storage is an
//! error naming the file, never zeros). Tensor data is read when asked for.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use burn::tensor::{BoolStore, DType, TensorData};

mod machine;

use machine::{Storage, TensorRef, Value, run_pickle};

/// The element type of a storage class (`torch.FloatStorage`, ...); torch's bools are bytes
/// of 0 or 1.
pub(crate) fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "DoubleStorage" => DType::F64,
        "FloatStorage" => DType::F32,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" => DType::U8,
        "BoolStorage" => DType::Bool(BoolStore::U8),
        _ => return None,
    })
}

/// Where a storage's bytes are.
enum Source {
    /// The zip entry (checked by its CRC when read).
    Zip(Rc<RefCell<zip::ZipArchive<File>>>, String),
    /// A range of the legacy file's bytes.
    Bytes(Rc<Vec<u8>>, usize),
}

/// One tensor of a pickle file: its shape, stored type and a reader of its values.
pub struct PickleTensor {
    pub shape: Vec<usize>,
    /// The stored element type.
    pub dtype: DType,
    source: Rc<Source>,
    tensor: Rc<TensorRef>,
    path: PathBuf,
}

impl PickleTensor {
    /// The values as f32 (integers and other floats converted as `tensor.float()` does).
    pub fn data(&self) -> Result<TensorData> {
        let t = &self.tensor;
        let s = &t.storage;
        let bytes = s.numel as usize * s.dtype.size();
        let owned;
        let raw: &[u8] = match &*self.source {
            Source::Bytes(all, start) => &all[*start..*start + bytes],
            Source::Zip(zip, name) => {
                let mut zip = zip.borrow_mut();
                let mut entry = zip
                    .by_name(name)
                    .with_context(|| format!("{}: no entry {name}", self.path.display()))?;
                let mut buf = Vec::with_capacity(bytes);
                (&mut entry)
                    .take(bytes as u64 + 1)
                    .read_to_end(&mut buf)
                    .with_context(|| format!("{}: cannot read {name}", self.path.display()))?;
                if buf.len() != bytes {
                    bail!(
                        "{}: {name} holds {} bytes, its storage needs {bytes}",
                        self.path.display(),
                        buf.len()
                    );
                }
                owned = buf;
                &owned
            }
        };
        // The elements in row-major order, gathered through the strides, then converted as
        // safetensors data is (`lora_group::io::tensor_data`).
        let numel: usize = t.shape.iter().product();
        let size = s.dtype.size();
        let mut contiguous = Vec::with_capacity(numel * size);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset as usize
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(&i, &s)| i * s as usize)
                    .sum::<usize>();
            contiguous.extend_from_slice(&raw[at * size..(at + 1) * size]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        if matches!(s.dtype, DType::Bool(_)) {
            for b in &mut contiguous {
                *b = u8::from(*b != 0);
            }
        }
        Ok(
            TensorData::from_bytes_vec(contiguous, t.shape.clone(), s.dtype)
                .convert_dtype(DType::F32),
        )
    }
}

const MAX_VISITS: usize = 10_000_000;

fn collect(
    v: &Value,
    prefix: &str,
    out: &mut BTreeMap<String, Rc<TensorRef>>,
    visits: &mut usize,
) -> Result<()> {
    *visits += 1;
    if *visits > MAX_VISITS {
        bail!("the pickle's dicts nest or repeat more than {MAX_VISITS} times");
    }
    match v {
        Value::Tensor(t) => {
            out.insert(prefix.to_string(), t.clone());
        }
        Value::Dict(d) => {
            let d = d
                .try_borrow()
                .map_err(|_| anyhow!("a dict of the pickle contains itself"))?;
            for (k, v) in d.iter() {
                let k = match k {
                    Value::Str(s) => s.to_string(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                let key = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}.{k}")
                };
                collect(v, &key, out, visits)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads `path`'s tensors (nested dicts flattened with `.`), from the dict under `top_level_key`
/// when given.
pub fn read(path: &Path, top_level_key: Option<&str>) -> Result<BTreeMap<String, PickleTensor>> {
    let display = path.display();
    let mut head = [0u8; 4];
    let n = File::open(path)
        .with_context(|| format!("cannot open {display}"))?
        .read(&mut head)
        .with_context(|| format!("cannot read {display}"))?;
    let mut storages = BTreeMap::new();
    let (root, sources): (Value, BTreeMap<String, Rc<Source>>) = if n == 4 && &head == b"PK\x03\x04"
    {
        let file = File::open(path).with_context(|| format!("cannot open {display}"))?;
        let file_len = file.metadata()?.len();
        let mut zip = zip::ZipArchive::new(file)
            .map_err(|e| anyhow!("{display} is not a readable zip archive: {e}"))?;
        let pkl = zip
            .file_names()
            .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow!("{display}: a torch zip file has <name>/data.pkl; this one has none")
            })?;
        let prefix = pkl.trim_end_matches("data.pkl").to_string();
        if let Ok(mut e) = zip.by_name(&format!("{prefix}byteorder")) {
            let mut order = String::new();
            (&mut e).take(16).read_to_string(&mut order).ok();
            if order.trim() != "little" {
                bail!("{display}: byte order {order:?}; ril reads little-endian files");
            }
        }
        let bytes = {
            let mut e = zip
                .by_name(&pkl)
                .map_err(|e| anyhow!("{display}: {pkl}: {e}"))?;
            let size = e.size();
            if size > file_len.saturating_mul(1024) {
                bail!("{display}: {pkl} claims {size} bytes");
            }
            let mut b = Vec::new();
            (&mut e)
                .take(size)
                .read_to_end(&mut b)
                .map_err(|err| anyhow!("{display}: cannot read {pkl}: {err}"))?;
            b
        };
        let (root, _) =
            run_pickle(&bytes, &mut storages).with_context(|| format!("{display}: {pkl}"))?;
        let mut sources = BTreeMap::new();
        for (key, s) in &storages {
            let name = format!("{prefix}data/{key}");
            let size = zip
                .by_name(&name)
                .map_err(|_| anyhow!("{display}: storage {key} has no entry {name}"))?
                .size();
            if s.numel.checked_mul(s.dtype.size() as u64) != Some(size) {
                bail!(
                    "{display}: entry {name} holds {size} bytes, storage {key} needs {} elements of {:?}",
                    s.numel,
                    s.dtype
                );
            }
            sources.insert(key.clone(), name);
        }
        let zip = Rc::new(RefCell::new(zip));
        let sources = sources
            .into_iter()
            .map(|(k, name)| (k, Rc::new(Source::Zip(zip.clone(), name))))
            .collect();
        (root, sources)
    } else {
        let all = Rc::new(std::fs::read(path).with_context(|| format!("cannot read {display}"))?);
        legacy(all, &mut storages)
            .with_context(|| format!("{display} (a legacy torch.save file)"))?
    };
    let dict = match (&root, top_level_key) {
        (Value::Dict(_), None) => root.clone(),
        (Value::Dict(d), Some(key)) => d
            .borrow()
            .iter()
            .rev()
            .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
            .map(|(_, v)| v.clone())
            .filter(|v| matches!(v, Value::Dict(_)))
            .ok_or_else(|| anyhow!("{display}: no dict under the top-level key `{key}`"))?,
        (other, _) => bail!(
            "{display}: the file holds {}, not a dict of tensors",
            other.kind()
        ),
    };
    let mut found = BTreeMap::new();
    collect(&dict, "", &mut found, &mut 0).with_context(|| format!("{display}"))?;
    Ok(found
        .into_iter()
        .map(|(k, t)| {
            let source = sources[&t.storage.key].clone();
            let entry = PickleTensor {
                shape: t.shape.clone(),
                dtype: t.storage.dtype,
                source,
                tensor: t,
                path: path.to_path_buf(),
            };
            (k, entry)
        })
        .collect())
}

/// The legacy format: magic number, protocol, system info and the object as four pickles,
/// then the storage keys and each storage as an i64 element count and its bytes.
fn legacy(
    all: Rc<Vec<u8>>,
    storages: &mut BTreeMap<String, Rc<Storage>>,
) -> Result<(Value, BTreeMap<String, Rc<Source>>)> {
    // 0x1950a86a20f9469cfc6c, torch's MAGIC_NUMBER, as LONG1's bytes.
    const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    let mut pos = 0;
    let mut none = BTreeMap::new();
    let (magic, n) = run_pickle(&all, &mut none).context("not a torch.save file")?;
    if !matches!(&magic, Value::BigInt(b) if **b == MAGIC) {
        bail!("not a torch.save file (no magic number)");
    }
    pos += n;
    let (protocol, n) = run_pickle(&all[pos..], &mut none)?;
    if !matches!(protocol, Value::Int(1001)) {
        bail!("unsupported protocol version (not 1001)");
    }
    pos += n;
    let (info, n) = run_pickle(&all[pos..], &mut none)?;
    if let Value::Dict(d) = &info {
        let big = d.borrow().iter().any(|(k, v)| {
            matches!(k, Value::Str(s) if &**s == "little_endian") && matches!(v, Value::Bool(false))
        });
        if big {
            bail!("written on a big-endian machine; ril reads little-endian files");
        }
    }
    pos += n;
    let (root, n) = run_pickle(&all[pos..], storages)?;
    pos += n;
    let (keys, n) = run_pickle(&all[pos..], &mut none)?;
    pos += n;
    let Value::List(keys) = keys else {
        bail!("the storage key list is {}", keys.kind());
    };
    let mut sources = BTreeMap::new();
    for k in keys.borrow().iter() {
        let key = match k {
            Value::Str(s) => s.to_string(),
            other => bail!("a storage key is {}", other.kind()),
        };
        let s = storages
            .get(&key)
            .ok_or_else(|| anyhow!("storage {key} is listed but no tensor uses it"))?;
        let count = all
            .get(pos..pos + 8)
            .ok_or_else(|| anyhow!("the file ends before storage {key}"))?;
        let count = i64::from_le_bytes(count.try_into().unwrap());
        if count < 0 || count as u64 != s.numel {
            bail!(
                "storage {key} holds {count} elements, its tensors' pickle says {}",
                s.numel
            );
        }
        pos += 8;
        let bytes = s
            .numel
            .checked_mul(s.dtype.size() as u64)
            .filter(|&b| b <= (all.len() - pos) as u64)
            .ok_or_else(|| {
                anyhow!(
                    "storage {key} needs {} x {} bytes, more than the file has left",
                    s.numel,
                    s.dtype.size()
                )
            })?;
        sources.insert(key, Rc::new(Source::Bytes(all.clone(), pos)));
        pos += bytes as usize;
    }
    if let Some(missing) = storages.keys().find(|k| !sources.contains_key(*k)) {
        bail!("storage {missing} is used by a tensor but not stored");
    }
    Ok((root, sources))
}

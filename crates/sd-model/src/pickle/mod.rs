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
use burn::tensor::TensorData;

mod machine;

use machine::{Storage, TensorRef, Value, run_pickle};

/// The element type of a storage (`torch.FloatStorage`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl StorageDtype {
    pub(crate) fn from_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => Self::F64,
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::F64 | Self::F32 | Self::F16 | Self::BF16)
    }

    /// Burn's name of the type (`F32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F64 => "F64",
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I64 => "I64",
            Self::I32 => "I32",
            Self::I16 => "I16",
            Self::I8 => "I8",
            Self::U8 => "U8",
            Self::Bool => "Bool",
        }
    }

    /// Element `i` of little-endian `bytes` as f32.
    fn get(self, bytes: &[u8], i: usize) -> f32 {
        let s = self.size();
        let b = &bytes[i * s..(i + 1) * s];
        match self {
            Self::F64 => f64::from_le_bytes(b.try_into().unwrap()) as f32,
            Self::F32 => f32::from_le_bytes(b.try_into().unwrap()),
            Self::F16 => f16_to_f32(u16::from_le_bytes(b.try_into().unwrap())),
            Self::BF16 => {
                f32::from_bits(u32::from(u16::from_le_bytes(b.try_into().unwrap())) << 16)
            }
            Self::I64 => i64::from_le_bytes(b.try_into().unwrap()) as f32,
            Self::I32 => i32::from_le_bytes(b.try_into().unwrap()) as f32,
            Self::I16 => f32::from(i16::from_le_bytes(b.try_into().unwrap())),
            Self::I8 => f32::from(b[0] as i8),
            Self::U8 => f32::from(b[0]),
            Self::Bool => f32::from(u8::from(b[0] != 0)),
        }
    }
}

/// IEEE binary16 to binary32 (exact: every half is a float).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let frac = u32::from(h & 0x3ff);
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: value = f · 2^-24.
            let v = f as f32 * f32::powi(2.0, -24);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, f) => sign | 0x7fc0_0000 | (f << 13),
        (e, f) => sign | ((e + 112) << 23) | (f << 13),
    };
    f32::from_bits(bits)
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
    pub dtype: StorageDtype,
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
        let numel: usize = t.shape.iter().product();
        let mut values = Vec::with_capacity(numel);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let at = t.offset as usize
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(&i, &s)| i * s as usize)
                    .sum::<usize>();
            values.push(s.dtype.get(raw, at));
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(TensorData::new(values, t.shape.clone()))
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
            if e.size() > file_len.saturating_mul(1024) {
                bail!("{display}: {pkl} claims {} bytes", e.size());
            }
            let mut b = Vec::new();
            let size = e.size();
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
            let need = s.numel.checked_mul(s.dtype.size() as u64);
            if need != Some(size) {
                bail!(
                    "{display}: entry {name} holds {size} bytes, storage {key} needs {} ({} x {})",
                    s.numel * s.dtype.size() as u64,
                    s.numel,
                    s.dtype.name()
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

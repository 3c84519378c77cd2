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
    fn from_class(name: &str) -> Option<Self> {
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

/// A storage named by a persistent id.
#[derive(Debug)]
struct Storage {
    key: String,
    dtype: StorageDtype,
    numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<Storage>,
    offset: u64,
    shape: Vec<usize>,
    stride: Vec<u64>,
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64, as its little-endian two's-complement bytes.
    BigInt(Rc<[u8]>),
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Rc<(String, String)>),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) | Value::BigInt(_) => "an int",
            Value::Float => "a float",
            Value::Str(_) => "a string",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

/// The globals a state dict needs; any other is refused by name.
fn allowed(module: &str, name: &str) -> bool {
    match module {
        "collections" => name == "OrderedDict",
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor_v2"
                | "_rebuild_tensor"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch" => StorageDtype::from_class(name).is_some(),
        _ => false,
    }
}

/// One pickle program over `data`; storages are collected by key.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: std::collections::HashMap<u32, Value>,
    storages: &'a mut BTreeMap<String, Rc<Storage>>,
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if n > left {
            bail!(
                "a length of {n} bytes at byte {} runs past the end of the pickle ({left} bytes left)",
                self.pos
            );
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().unwrap())
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| anyhow!("unterminated GLOBAL at byte {}", self.pos))?;
        let s = std::str::from_utf8(&rest[..n])
            .map_err(|_| anyhow!("GLOBAL at byte {} is not UTF-8", self.pos))?;
        self.pos += n + 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            bail!("pickle stack underflow at byte {}", self.pos);
        }
        Ok(self.stack.pop().unwrap())
    }

    fn top(&mut self) -> Result<&mut Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            bail!("pickle stack underflow at byte {}", self.pos);
        }
        Ok(self.stack.last_mut().unwrap())
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| anyhow!("pickle has no MARK before byte {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }

    fn string(&mut self, n: u64) -> Result<Value> {
        let b = self.take(n)?;
        let s = std::str::from_utf8(b)
            .map_err(|_| anyhow!("a string before byte {} is not UTF-8", self.pos))?;
        Ok(Value::Str(s.into()))
    }

    fn global(&mut self, module: &str, name: &str) -> Result<Value> {
        if !allowed(module, name) {
            bail!(
                "the pickle names `{module}.{name}`, which ril does not rebuild (only tensors, parameters and dicts of them; nothing in the file is run)"
            );
        }
        Ok(Value::Global(Rc::new((
            module.to_string(),
            name.to_string(),
        ))))
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = self
                .u8()
                .map_err(|_| anyhow!("the pickle ends without STOP"))?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        bail!("unsupported pickle protocol {p}");
                    }
                }
                0x95 => {
                    let n = u64::from_le_bytes(self.le()?);
                    if n > (self.data.len() - self.pos) as u64 {
                        bail!("a pickle FRAME of {n} bytes runs past the end");
                    }
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.stack.push(Value::Dict(Rc::default())),
                b']' => self.stack.push(Value::List(Rc::default())),
                b')' => self.stack.push(Value::Tuple(Rc::default())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'X' => {
                    let n = u32::from_le_bytes(self.le()?);
                    let v = self.string(u64::from(n))?;
                    self.stack.push(v);
                }
                0x8c | b'U' => {
                    let n = self.u8()?;
                    let v = self.string(u64::from(n))?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.le()?);
                    let v = self.string(n)?;
                    self.stack.push(v);
                }
                b'T' => {
                    let n = i32::from_le_bytes(self.le()?);
                    if n < 0 {
                        bail!("negative BINSTRING length at byte {at}");
                    }
                    let v = self.string(n as u64)?;
                    self.stack.push(v);
                }
                b'B' => {
                    let n = u32::from_le_bytes(self.le()?);
                    self.take(u64::from(n))?;
                    self.stack.push(Value::Bytes);
                }
                b'C' => {
                    let n = self.u8()?;
                    self.take(u64::from(n))?;
                    self.stack.push(Value::Bytes);
                }
                0x8e | 0x96 => {
                    let n = u64::from_le_bytes(self.le()?);
                    self.take(n)?;
                    self.stack.push(Value::Bytes);
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(i64::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.le()?);
                    self.stack.push(Value::Int(i64::from(v)));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        u64::from(self.u8()?)
                    } else {
                        let n = i32::from_le_bytes(self.le()?);
                        if n < 0 {
                            bail!("negative LONG4 length at byte {at}");
                        }
                        n as u64
                    };
                    let b = self.take(n)?;
                    let v = if b.is_empty() {
                        Value::Int(0)
                    } else if b.len() <= 8 {
                        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
                        let mut w = [fill; 8];
                        w[..b.len()].copy_from_slice(b);
                        Value::Int(i64::from_le_bytes(w))
                    } else {
                        Value::BigInt(b.into())
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    self.le::<8>()?;
                    self.stack.push(Value::Float);
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(items)));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(items))));
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items, at)?;
                    self.stack.push(Value::Dict(Rc::new(RefCell::new(pairs))));
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().push(v),
                        other => bail!("APPEND to {} at byte {at}", other.kind()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.borrow_mut().extend(items),
                        other => bail!("APPENDS to {} at byte {at}", other.kind()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().push((k, v)),
                        other => bail!("SETITEM on {} at byte {at}", other.kind()),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let items = pairs(items, at)?;
                    match self.top()? {
                        Value::Dict(d) => d.borrow_mut().extend(items),
                        other => bail!("SETITEMS on {} at byte {at}", other.kind()),
                    }
                }
                b'q' | b'r' | 0x94 => {
                    let idx = match op {
                        b'q' => u32::from(self.u8()?),
                        b'r' => u32::from_le_bytes(self.le()?),
                        _ => self.memo.len() as u32,
                    };
                    let v = self.top()?.clone();
                    self.memo.insert(idx, v);
                }
                b'h' | b'j' => {
                    let idx = if op == b'h' {
                        u32::from(self.u8()?)
                    } else {
                        u32::from_le_bytes(self.le()?)
                    };
                    let v = self.memo.get(&idx).cloned().ok_or_else(|| {
                        anyhow!("memo entry {idx} read before it was written (byte {at})")
                    })?;
                    self.stack.push(v);
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v = self.global(module, name)?;
                    self.stack.push(v);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(m), Value::Str(n)) = (&module, &name) else {
                        bail!(
                            "STACK_GLOBAL of {} and {} at byte {at}",
                            module.kind(),
                            name.kind()
                        );
                    };
                    let v = self.global(m, n)?;
                    self.stack.push(v);
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent(pid)?;
                    self.stack.push(v);
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = reduce(f, args)?;
                    self.stack.push(v);
                }
                b'b' => {
                    let _state = self.pop()?;
                    match self.top()? {
                        Value::Dict(_) | Value::Tensor(_) => {}
                        other => bail!("BUILD on {} at byte {at}", other.kind()),
                    }
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?;
                    }
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    let name = match &cls {
                        Value::Global(g) => format!("{}.{}", g.0, g.1),
                        other => other.kind().to_string(),
                    };
                    bail!(
                        "the pickle creates an object of `{name}` (NEWOBJ), which ril does not rebuild"
                    );
                }
                b'0' => {
                    self.pop()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                b'1' => {
                    self.pop_mark()?;
                }
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {at}"),
            }
        }
    }

    /// `('storage', torch.XStorage, key, location, numel[, view])`.
    fn persistent(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(t) = &pid else {
            bail!("a persistent id is {}, not a storage tuple", pid.kind());
        };
        let ok = t.len() >= 5 && matches!(&t[0], Value::Str(s) if &**s == "storage");
        if !ok {
            bail!("a persistent id is not ('storage', type, key, location, size)");
        }
        let dtype = match &t[1] {
            Value::Global(g) => StorageDtype::from_class(&g.1),
            _ => None,
        }
        .ok_or_else(|| {
            anyhow!(
                "a storage's type is {}, not a torch storage class",
                t[1].kind()
            )
        })?;
        let key = match &t[2] {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => bail!("a storage key is {}", other.kind()),
        };
        let numel = match &t[4] {
            Value::Int(n) if *n >= 0 => *n as u64,
            other => bail!("storage {key}: its size is {}", other.kind()),
        };
        if t.len() > 5 && !matches!(t[5], Value::None) {
            bail!(
                "storage {key} is a view of another storage (legacy format), which ril does not read"
            );
        }
        let s = match self.storages.get(&key) {
            Some(s) if s.dtype != dtype || s.numel != numel => {
                bail!("storage {key} is named twice with different types or sizes")
            }
            Some(s) => s.clone(),
            None => {
                let s = Rc::new(Storage {
                    key: key.clone(),
                    dtype,
                    numel,
                });
                self.storages.insert(key, s.clone());
                s
            }
        };
        Ok(Value::Storage(s))
    }
}

fn pairs(items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        bail!("odd number of items for a dict at byte {at}");
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn ints(v: &Value, what: &str) -> Result<Vec<u64>> {
    let Value::Tuple(t) = v else {
        bail!("a tensor's {what} is {}, not a tuple", v.kind());
    };
    t.iter()
        .map(|x| match x {
            Value::Int(i) if *i >= 0 => Ok(*i as u64),
            other => bail!("a tensor's {what} holds {}", other.kind()),
        })
        .collect()
}

fn reduce(f: Value, args: Value) -> Result<Value> {
    let Value::Global(g) = &f else {
        bail!("REDUCE calls {}, not a class", f.kind());
    };
    let Value::Tuple(a) = &args else {
        bail!("`{}.{}` is called with {}", g.0, g.1, args.kind());
    };
    match (g.0.as_str(), g.1.as_str()) {
        ("collections", "OrderedDict") if a.is_empty() => Ok(Value::Dict(Rc::default())),
        ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor") if a.len() >= 4 => {
            let Value::Storage(storage) = &a[0] else {
                bail!("a tensor is rebuilt from {}, not a storage", a[0].kind());
            };
            let offset = match &a[1] {
                Value::Int(o) if *o >= 0 => *o as u64,
                other => bail!("a tensor's storage offset is {}", other.kind()),
            };
            let shape = ints(&a[2], "size")?;
            let stride = ints(&a[3], "stride")?;
            if shape.len() != stride.len() {
                bail!(
                    "a tensor has {} sizes and {} strides",
                    shape.len(),
                    stride.len()
                );
            }
            let key = &storage.key;
            let numel = shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d))
                .ok_or_else(|| {
                    anyhow!("a tensor of storage {key} has a size {shape:?} that overflows")
                })?;
            if numel > storage.numel {
                bail!(
                    "a tensor of storage {key} has {numel} elements, more than the storage's {} (size {shape:?})",
                    storage.numel
                );
            }
            if numel > 0 {
                let last = shape
                    .iter()
                    .zip(&stride)
                    .try_fold(offset, |acc, (&d, &s)| {
                        acc.checked_add((d - 1).checked_mul(s)?)
                    })
                    .ok_or_else(|| anyhow!("a tensor of storage {key} overflows its strides"))?;
                if last >= storage.numel {
                    bail!(
                        "a tensor of storage {key} (offset {offset}, size {shape:?}, stride {stride:?}) reaches element {last}, beyond the storage's {}",
                        storage.numel
                    );
                }
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: storage.clone(),
                offset,
                shape: shape.iter().map(|&d| d as usize).collect(),
                stride,
            })))
        }
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")
            if !a.is_empty() && matches!(a[0], Value::Tensor(_)) =>
        {
            Ok(a[0].clone())
        }
        (m, n) => bail!("`{m}.{n}` called with arguments ril does not understand"),
    }
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

/// Runs the pickle at the start of `data`: its value and its length in bytes.
fn run_pickle(data: &[u8], storages: &mut BTreeMap<String, Rc<Storage>>) -> Result<(Value, usize)> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Default::default(),
        storages,
    };
    let v = m.run()?;
    Ok((v, m.pos))
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

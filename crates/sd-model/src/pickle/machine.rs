//! The pickle machine behind [`super::read`]: the opcodes `torch.save` writes (protocols 2 to 5,
//! binary forms only), with every length checked against the bytes left, the memo, marks, and
//! the few globals that rebuild tensors, parameters and ordered dicts; any other global, and any
//! NEWOBJ, is refused by name. Lists and dicts are shared as Python shares them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use anyhow::{Result, anyhow, bail};

use burn::tensor::DType;

use super::storage_dtype;

/// A storage named by a persistent id.
#[derive(Debug)]
pub(super) struct Storage {
    pub(super) key: String,
    pub(super) dtype: DType,
    pub(super) numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it.
#[derive(Debug)]
pub(super) struct TensorRef {
    pub(super) storage: Rc<Storage>,
    pub(super) offset: u64,
    pub(super) shape: Vec<usize>,
    pub(super) stride: Vec<u64>,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
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
    pub(super) fn kind(&self) -> &'static str {
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
        "torch" => storage_dtype(name).is_some(),
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
            Value::Global(g) => storage_dtype(&g.1),
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

/// Runs the pickle at the start of `data`: its value and its length in bytes.
pub(super) fn run_pickle(
    data: &[u8],
    storages: &mut BTreeMap<String, Rc<Storage>>,
) -> Result<(Value, usize)> {
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

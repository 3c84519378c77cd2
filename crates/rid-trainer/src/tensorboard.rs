//! TensorBoard event files for `ril train`'s scalars, beside metrics.jsonl: the TFRecord framing
//! (length, masked CRC-32C of it, the record, masked CRC-32C of it) around `tensorflow.Event`
//! protocol buffers, a `file_version` event first and then one event per step whose `Summary`
//! holds that step's `simple_value`s. No crate that writes them is kept up (tensorboard-rs, the
//! only one, was last released in 2022 on protobuf 2 and image 0.23), so the three messages are
//! encoded here; the bytes equal those of tensorboard's own `RecordWriter` on the same events
//! (tests/fixtures/tensorboard, tools/parity/make_tensorboard_fixture.py).
//!
//! Each invocation writes its own file (`events.out.tfevents.<seconds>.<host>.<pid>.ril`, as
//! PyTorch's `SummaryWriter` names them): a resumed run starts again at its checkpoint's step,
//! and TensorBoard drops the first file's events at and after that step (its orphaned-data
//! purge), so the curves show one run.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// CRC-32C (Castagnoli), TFRecord's checksum.
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC: rotated right by 15 bits plus a constant.
pub fn masked_crc(bytes: &[u8]) -> u32 {
    let c = CASTAGNOLI.checksum(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One TFRecord around `data`.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    varint(out, (field << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time = 1 (double), step = 2 (int64) }` and the rest of its fields.
fn event_head(wall_time: f64, step: i64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(&mut out, (1 << 3) | 1);
    out.extend_from_slice(&wall_time.to_le_bytes());
    if step != 0 {
        // proto3 leaves a zero scalar out, as protobuf's serialiser does.
        varint(&mut out, 2 << 3);
        varint(&mut out, step as u64);
    }
    out
}

/// The serialised `Event` carrying `file_version` (field 3).
pub fn file_version_event(wall_time: f64, version: &str) -> Vec<u8> {
    let mut out = event_head(wall_time, 0);
    bytes_field(&mut out, 3, version.as_bytes());
    out
}

/// The serialised `Event` with a `Summary` (field 5) of `Summary.Value { tag = 1,
/// simple_value = 2 (float) }`s.
pub fn scalars_event(wall_time: f64, step: i64, values: &[(String, f32)]) -> Vec<u8> {
    let mut summary = Vec::new();
    for (tag, v) in values {
        let mut value = Vec::new();
        bytes_field(&mut value, 1, tag.as_bytes());
        varint(&mut value, (2 << 3) | 5);
        value.extend_from_slice(&v.to_le_bytes());
        bytes_field(&mut summary, 1, &value);
    }
    let mut out = event_head(wall_time, step);
    bytes_field(&mut out, 5, &summary);
    out
}

/// An open event file.
pub struct EventWriter {
    path: PathBuf,
    file: File,
}

impl EventWriter {
    /// Creates `dir` (if needed) and a new event file in it, starting with the file version
    /// event TensorBoard expects.
    pub fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty() && !h.contains(['/', '\0']))
            .unwrap_or_else(|| "localhost".into());
        let name = format!(
            "events.out.tfevents.{}.{host}.{}.ril",
            now.as_secs(),
            std::process::id()
        );
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = Self { path, file };
        w.write(&file_version_event(now.as_secs_f64(), "brain.Event:2"))?;
        Ok(w)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event of `values` at `step`, in one write (TensorBoard skips a record cut
    /// short by a full disk).
    pub fn scalars(&mut self, step: i64, values: &[(String, f32)]) -> Result<()> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.write(&scalars_event(now, step, values))
    }

    fn write(&mut self, event: &[u8]) -> Result<()> {
        self.file
            .write_all(&record(event))
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

//! NumPy's `.npz` archives of float arrays (what `np.savez` / `np.savez_compressed` write and
//! `np.load` reads): a zip of `NAME.npy` files, each a magic string, a version, a Python-literal
//! header (`descr`, `fortran_order`, `shape`) and the raw values. ril writes little-endian
//! float64 in C order, uncompressed, with format 1.0 headers padded to 64 bytes as NumPy pads
//! them; it reads float32 and float64 of either byte order, C or Fortran order, stored or
//! deflated, NPY versions 1.0 to 3.0.

use std::io::{Cursor, Read, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// The bytes of a `.npy` file holding `values` (C order) as little-endian float64 of `shape`.
pub fn npy_f64(shape: &[usize], values: &[f64]) -> Vec<u8> {
    assert_eq!(
        shape.iter().product::<usize>(),
        values.len(),
        "shape {shape:?} does not hold {} values",
        values.len()
    );
    // Python's repr of the shape tuple: `(2048,)` for one axis, `(2048, 2048)` for two.
    let dims = match shape {
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {dims}, }}");
    // NumPy pads with spaces and ends with a newline so the data starts 64-byte aligned
    // (magic 6 + version 2 + header length 2 + header).
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 8 * values.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The bytes of an `.npz` archive of float64 arrays `(name, shape, values in C order)`, stored
/// uncompressed as `NAME.npy`, with the archive comment `comment` (which `np.load` ignores).
pub fn npz_f64(arrays: &[(&str, &[usize], &[f64])], comment: &str) -> Result<Vec<u8>> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    // No timestamps (the `time` feature is off): the same arrays give the same bytes. Zip64
    // only when an entry needs it (NumPy forces it; readers accept either).
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(false);
    for (name, shape, values) in arrays {
        let npy = npy_f64(shape, values);
        zip.start_file(
            format!("{name}.npy"),
            options.large_file(npy.len() >= u32::MAX as usize),
        )
        .with_context(|| format!("cannot add `{name}` to the archive"))?;
        zip.write_all(&npy)?;
    }
    zip.set_comment(comment)?;
    Ok(zip
        .finish()
        .context("cannot finish the archive")?
        .into_inner())
}

/// A float array read from an `.npz` archive, converted to f64 in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

/// An open `.npz` archive.
pub struct Npz {
    path: std::path::PathBuf,
    zip: ZipArchive<std::io::BufReader<std::fs::File>>,
}

impl Npz {
    /// Opens `path`; an unreadable file or one that is not a zip archive is an error naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot read statistics file {}", path.display()))?;
        let zip = ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
            anyhow::anyhow!(
                "{} is not an .npz archive (NumPy's zip of .npy files): {e}",
                path.display()
            )
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            zip,
        })
    }

    /// The archive's comment (empty when it has none, as in NumPy's own files).
    pub fn comment(&self) -> String {
        String::from_utf8_lossy(self.zip.comment()).into_owned()
    }

    /// Array `name` (the entry `name.npy`), which must have shape `expected`; float32 or float64
    /// of either byte order, C or Fortran order. Errors name the file and the array.
    pub fn array(&mut self, name: &str, expected: &[usize]) -> Result<Array> {
        let display = self.path.display().to_string();
        let mut entry = self
            .zip
            .by_name(&format!("{name}.npy"))
            .map_err(|e| anyhow::anyhow!("{display}: no array `{name}` ({name}.npy: {e})"))?;
        let at = |what: String| format!("{display}: array `{name}`: {what}");
        let mut prefix = [0u8; 8];
        entry
            .read_exact(&mut prefix)
            .with_context(|| at("cannot read the .npy header".into()))?;
        if &prefix[..6] != MAGIC {
            bail!(at("not an .npy file (no \\x93NUMPY magic)".into()));
        }
        let header_len = match prefix[6] {
            1 => {
                let mut b = [0u8; 2];
                entry
                    .read_exact(&mut b)
                    .with_context(|| at("truncated header".into()))?;
                u16::from_le_bytes(b) as usize
            }
            2 | 3 => {
                let mut b = [0u8; 4];
                entry
                    .read_exact(&mut b)
                    .with_context(|| at("truncated header".into()))?;
                u32::from_le_bytes(b) as usize
            }
            v => bail!(at(format!(
                ".npy format version {v}.{} is not supported (1.0 to 3.0 are)",
                prefix[7]
            ))),
        };
        if header_len > 1 << 20 {
            bail!(at(format!(
                "a header of {header_len} bytes is not credible"
            )));
        }
        let mut header = vec![0u8; header_len];
        entry
            .read_exact(&mut header)
            .with_context(|| at("truncated header".into()))?;
        let header = String::from_utf8(header)
            .map_err(|_| anyhow::anyhow!(at("the header is not UTF-8".into())))?;
        let h = Header::parse(&header).map_err(|e| anyhow::anyhow!(at(e)))?;
        if h.shape != expected {
            bail!(at(format!("shape {:?}, expected {expected:?}", h.shape)));
        }
        let n: usize = h.shape.iter().product();
        let mut raw = Vec::new();
        (&mut entry)
            .take((n * h.size) as u64 + 1)
            .read_to_end(&mut raw)
            .with_context(|| at("cannot read the values".into()))?;
        if raw.len() != n * h.size {
            bail!(at(format!(
                "{} bytes of values, the header's shape {:?} of {}-byte values needs {}",
                raw.len(),
                h.shape,
                h.size,
                n * h.size
            )));
        }
        let values: Vec<f64> = raw
            .chunks_exact(h.size)
            .map(|c| match (h.size, h.little) {
                (8, true) => f64::from_le_bytes(c.try_into().unwrap()),
                (8, false) => f64::from_be_bytes(c.try_into().unwrap()),
                (4, true) => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                _ => f32::from_be_bytes(c.try_into().unwrap()) as f64,
            })
            .collect();
        let values = if h.fortran && h.shape.len() > 1 {
            fortran_to_c(&h.shape, &values)
        } else {
            values
        };
        Ok(Array {
            shape: h.shape,
            values,
        })
    }
}

/// Reorders values stored in Fortran (column-major) order into C (row-major) order.
fn fortran_to_c(shape: &[usize], values: &[f64]) -> Vec<f64> {
    // Fortran strides: the first axis varies fastest.
    let mut strides = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        strides[k] = strides[k - 1] * shape[k - 1];
    }
    let mut out = Vec::with_capacity(values.len());
    let mut index = vec![0usize; shape.len()];
    for _ in 0..values.len() {
        out.push(
            values[index
                .iter()
                .zip(&strides)
                .map(|(i, s)| i * s)
                .sum::<usize>()],
        );
        // The next C-order index: the last axis varies fastest.
        for k in (0..shape.len()).rev() {
            index[k] += 1;
            if index[k] < shape[k] {
                break;
            }
            index[k] = 0;
        }
    }
    out
}

/// The fields of an `.npy` header that matter for float arrays.
#[derive(Debug, PartialEq)]
struct Header {
    /// Bytes per value: 4 (float32) or 8 (float64).
    size: usize,
    little: bool,
    fortran: bool,
    shape: Vec<usize>,
}

impl Header {
    /// Parses NumPy's header, a Python dict literal such as
    /// `{'descr': '<f8', 'fortran_order': False, 'shape': (2048, 2048), }`.
    fn parse(text: &str) -> Result<Self, String> {
        let value = |key: &str| -> Result<&str, String> {
            let quoted = [format!("'{key}'"), format!("\"{key}\"")];
            let at = quoted
                .iter()
                .find_map(|q| text.find(q.as_str()).map(|i| i + q.len()))
                .ok_or_else(|| format!("the header has no `{key}`: {}", text.trim()))?;
            let rest = text[at..].trim_start();
            rest.strip_prefix(':')
                .map(str::trim_start)
                .ok_or_else(|| format!("the header's `{key}` has no value: {}", text.trim()))
        };
        let descr = value("descr")?;
        let descr = descr
            .strip_prefix('\'')
            .and_then(|d| d.split('\'').next())
            .or_else(|| descr.strip_prefix('"').and_then(|d| d.split('"').next()))
            .ok_or_else(|| format!("the header's `descr` is not a string: {}", text.trim()))?;
        let unsupported = || {
            format!(
                "values of type `{descr}`; only float32 and float64 (`<f4`, `<f8`, `>f4`, `>f8`) are supported"
            )
        };
        let little = match descr.as_bytes().first() {
            Some(b'<') => true,
            Some(b'>') => false,
            Some(b'=') => cfg!(target_endian = "little"),
            _ => return Err(unsupported()),
        };
        let size = match &descr[1..] {
            "f4" => 4,
            "f8" => 8,
            _ => return Err(unsupported()),
        };
        let fortran = match value("fortran_order")? {
            v if v.starts_with("True") => true,
            v if v.starts_with("False") => false,
            v => return Err(format!("`fortran_order` is neither True nor False: {v}")),
        };
        let shape = value("shape")?;
        let inner = shape
            .strip_prefix('(')
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| format!("the header's `shape` is not a tuple: {}", text.trim()))?;
        let shape = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim_end_matches('L')
                    .parse::<usize>()
                    .map_err(|_| format!("the header's shape has a non-integer `{s}`"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            size,
            little,
            fortran,
            shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_numpys_and_parse_back() {
        let npy = npy_f64(&[2, 3], &[0.0; 6]);
        // 64-byte aligned data, as NumPy writes it.
        assert_eq!((npy.len() - 48) % 64, 0);
        let len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        let text = std::str::from_utf8(&npy[10..10 + len]).unwrap();
        assert_eq!(
            text.trim_end(),
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"
        );
        assert!(text.ends_with('\n'));
        assert_eq!(
            Header::parse(text).unwrap(),
            Header {
                size: 8,
                little: true,
                fortran: false,
                shape: vec![2, 3]
            }
        );
        let one = Header::parse("{'descr': '>f4', 'fortran_order': True, 'shape': (7,), }");
        assert_eq!(
            one.unwrap(),
            Header {
                size: 4,
                little: false,
                fortran: true,
                shape: vec![7]
            }
        );
        let e = Header::parse("{'descr': '<f2', 'fortran_order': False, 'shape': (7,), }");
        assert!(e.unwrap_err().contains("`<f2`"));
        let e = Header::parse("{'descr': '<f8', 'shape': (7,), }");
        assert!(e.unwrap_err().contains("fortran_order"));
    }

    #[test]
    fn fortran_order_is_the_transpose_of_c_order() {
        // The 2x3 matrix [[0, 1, 2], [3, 4, 5]] stored column by column.
        assert_eq!(
            fortran_to_c(&[2, 3], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]),
            [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        // Three axes: element (i, j, k) sits at i + 2 j + 4 k in Fortran order.
        let f: Vec<f64> = (0..8).map(f64::from).collect();
        let c = fortran_to_c(&[2, 2, 2], &f);
        for (i, j, k) in (0..8).map(|n| (n / 4, (n / 2) % 2, n % 2)) {
            assert_eq!(c[4 * i + 2 * j + k], (i + 2 * j + 4 * k) as f64);
        }
    }

    /// An `.npy` entry as NumPy writes a non-default array: `descr`, `fortran_order`, shape
    /// (2, 3), header version 1.0 padded to 64 bytes, `values` already in the entry's order.
    fn npy_raw(descr: &str, fortran: bool, values: &[u8]) -> Vec<u8> {
        let order = if fortran { "True" } else { "False" };
        let mut h = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': (2, 3), }}");
        while (10 + h.len() + 1) % 64 != 0 {
            h.push(' ');
        }
        h.push('\n');
        let mut out = MAGIC.to_vec();
        out.extend([1, 0]);
        out.extend((h.len() as u16).to_le_bytes());
        out.extend(h.as_bytes());
        out.extend(values);
        out
    }

    #[test]
    fn numpy_style_archives_read_back_in_c_order() {
        // np.savez_compressed's layout: deflated entries with zip64 extra fields.
        let dir = ril_testkit::scratch("npz-foreign");
        let path = dir.join("s.npz");
        let c = [0.5f64, -1.0, 2.25, 3.0, 4.5, -5.0];
        // The same matrix as big-endian float32 stored column by column.
        let fortran: Vec<u8> = [0, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|&i| (c[i] as f32).to_be_bytes())
            .collect();
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let deflated = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .large_file(true);
        zip.start_file("f.npy", deflated).unwrap();
        zip.write_all(&npy_raw(">f4", true, &fortran)).unwrap();
        zip.start_file("short.npy", deflated).unwrap();
        zip.write_all(&npy_raw("<f8", false, &[0u8; 40])).unwrap();
        zip.start_file("half.npy", deflated).unwrap();
        zip.write_all(&npy_raw("<f2", false, &[0u8; 12])).unwrap();
        std::fs::write(&path, zip.finish().unwrap().into_inner()).unwrap();
        let mut npz = Npz::open(&path).unwrap();
        assert_eq!(npz.comment(), "");
        // Every value of c is exact in f32.
        let a = npz.array("f", &[2, 3]).unwrap();
        assert_eq!((a.shape, a.values), (vec![2, 3], c.to_vec()));
        let name = path.display().to_string();
        for (array, shape, expect) in [
            ("f", &[3, 2][..], "shape [2, 3], expected [3, 2]"),
            ("short", &[2, 3], "40 bytes of values"),
            ("half", &[2, 3], "`<f2`"),
            ("missing", &[2, 3], "no array `missing`"),
        ] {
            let e = format!("{:#}", npz.array(array, shape).unwrap_err());
            assert!(e.contains(&name) && e.contains(expect), "{e}");
        }
        // Its own archives, with their comment.
        let ours = npz_f64(&[("m", &[2, 3], &c)], "note").unwrap();
        std::fs::write(&path, ours).unwrap();
        let mut npz = Npz::open(&path).unwrap();
        assert_eq!(npz.comment(), "note");
        assert_eq!(npz.array("m", &[2, 3]).unwrap().values, c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

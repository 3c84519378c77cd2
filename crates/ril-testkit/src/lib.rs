//! Helpers shared by ril's tests (a dev-dependency only): element-wise comparison with a
//! relative tolerance and an absolute floor on the tensor's scale, the parity scripts' portable
//! generator (SplitMix64, 24-bit uniforms, Irwin–Hall normals), scratch folders, rendering
//! a report.html in headless Chromium, and a counting allocator for memory tests ([`alloc`]).

pub mod alloc;

use std::path::{Path, PathBuf};

use burn::prelude::*;

/// A tensor's values as f32.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().expect("f32 data")
}

/// Asserts `|a − e| ≤ rtol·|e| + atol_scale·max|e|` for every element: a relative test with an
/// absolute floor proportional to the tensor's magnitude, so that values near zero (where a
/// relative error is meaningless after cancellations) are judged on the tensor's scale. Prints
/// the worst element's share of the tolerance.
pub fn assert_close(name: &str, actual: &[f32], expected: &[f32], rtol: f32, atol_scale: f32) {
    assert_eq!(actual.len(), expected.len(), "{name}: length");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0 && scale.is_finite(),
        "{name}: degenerate reference (max |e| = {scale})"
    );
    let mut worst = (0usize, 0f32);
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(a.is_finite(), "{name}: element {i} is {a}");
        let allowed = rtol * e.abs() + atol_scale * scale;
        let ratio = if allowed > 0.0 {
            (a - e).abs() / allowed
        } else if a == e {
            0.0
        } else {
            f32::INFINITY
        };
        if ratio > worst.1 {
            worst = (i, ratio);
        }
    }
    let (i, ratio) = worst;
    eprintln!(
        "{name}: worst element at {ratio:.3}x the tolerance (rtol {rtol:e}, atol {atol_scale:e} x {scale})"
    );
    assert!(
        ratio <= 1.0,
        "{name}: element {i}: got {}, expected {} ({ratio:.2}x the tolerance; max |e| = {scale})",
        actual.get(i).copied().unwrap_or(f32::NAN),
        expected.get(i).copied().unwrap_or(f32::NAN)
    );
}

/// The parity scripts' 24-bit SplitMix64 stream from `seed`.
pub fn u24_stream(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) >> 40
    }
}

/// `n` values of the parity scripts' generator: `uniform01`, `uniform_sym` (times `a`) or
/// `normal` (Irwin–Hall of 12 uniforms), in f32 exactly as the scripts compute them.
pub fn generate(kind: &str, seed: u64, n: usize, a: f32) -> Vec<f32> {
    let mut next = u24_stream(seed);
    let two24 = (1u64 << 24) as f32;
    (0..n)
        .map(|_| match kind {
            "uniform01" => next() as f32 / two24,
            "uniform_sym" => (next() as f32 / two24 * 2.0 - 1.0) * a,
            "normal" => {
                let s: i64 = (0..12).map(|_| next() as i64).sum::<i64>() - 6 * (1i64 << 24);
                s as f32 / two24
            }
            other => panic!("unknown generator kind {other}"),
        })
        .collect()
}

/// The scripts' uint8 images: `floor(uniform01 · 256)`.
pub fn uniform_u8(seed: u64, n: usize) -> Vec<u8> {
    let mut next = u24_stream(seed);
    (0..n).map(|_| (next() >> 16) as u8).collect()
}

/// A fresh scratch folder for one test (`ril-test-NAME-PID` in the temp dir).
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ril-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Writes a PNG (signature, IHDR, an empty IDAT, IEND: no pixel data) whose valid header claims
/// `w` x `h` RGB pixels, to check that a reader refuses a size from the header alone, before it
/// allocates (decoders read up to the first IDAT before they report the size).
pub fn png_claiming(path: &Path, w: u32, h: u32) {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, adaptive filter, no interlace
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    for chunk in [ihdr, b"IDAT".to_vec(), b"IEND".to_vec()] {
        bytes.extend((chunk.len() as u32 - 4).to_be_bytes());
        bytes.extend(&chunk);
        bytes.extend(crc32(&chunk).to_be_bytes());
    }
    std::fs::write(path, bytes).expect("write png");
}

/// CRC-32 (IEEE, as PNG chunks use), bit by bit.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// Copies a folder tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create folder");
    for entry in std::fs::read_dir(from).expect("read folder") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// The DOM of `page` (a local HTML file) as headless Chromium renders it at a phone's width
/// (390 px asked; headless Chromium's narrowest window is 500 px), after its scripts ran. `None`
/// when no Chromium is installed (`/usr/bin/chromium`, `/usr/bin/chromium-browser` or
/// `RIL_CHROMIUM`), which fails instead when `RIL_REQUIRE_CHROMIUM` is set (CI installs Debian's).
pub fn render_in_chromium(page: &Path) -> Option<String> {
    let from_env = std::env::var_os("RIL_CHROMIUM").map(PathBuf::from);
    let Some(chromium) = from_env
        .into_iter()
        .chain(["/usr/bin/chromium", "/usr/bin/chromium-browser"].map(PathBuf::from))
        .find(|p| p.is_file())
    else {
        assert!(
            std::env::var_os("RIL_REQUIRE_CHROMIUM").is_none(),
            "RIL_REQUIRE_CHROMIUM is set but no chromium was found"
        );
        eprintln!(
            "no chromium (/usr/bin/chromium or RIL_CHROMIUM): the rendered checks are skipped"
        );
        return None;
    };
    let o = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Containers often have a small /dev/shm, which crashes Chromium's renderer.
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=390,844",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Some(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The number an attribute `name="N"` holds in a rendered DOM (report.html's script records
/// `data-tables`, `data-images`, `data-images-loaded`, `data-svgs`, `data-page-width` and
/// `data-viewport-width` on its body).
pub fn dom_number(dom: &str, name: &str) -> usize {
    let key = format!("{name}=\"");
    let at = dom.find(&key).unwrap_or_else(|| {
        panic!(
            "the rendered page has no {name}: {}",
            &dom[..dom.len().min(400)]
        )
    });
    let rest = &dom[at + key.len()..];
    rest[..rest.find('"').expect("a closing quote")]
        .parse()
        .expect("a number")
}

#[cfg(test)]
mod tests {
    #[test]
    fn generator_matches_splitmix64_and_uint8_rule() {
        // SplitMix64 from seed 0 starts with 0xE220A8397B1DCDAF (the scripts assert the same).
        let mut next = super::u24_stream(0);
        assert_eq!(next(), 0xE220A8397B1DCDAF >> 40);
        let u = super::generate("uniform01", 701, 4, 1.0);
        let b = super::uniform_u8(701, 4);
        for (x, y) in u.iter().zip(&b) {
            assert_eq!((x * 256.0).floor() as u8, *y);
        }
    }
}

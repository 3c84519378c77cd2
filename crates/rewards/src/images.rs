//! Reading a folder of images (PNG, JPEG, ...) in file-name order into a tensor in [-1, 1], with
//! clear errors for an empty folder, a file that is not an image and mixed sizes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;

/// The file extensions read as images (pytorch-fid's `IMAGE_EXTENSIONS`, any case).
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp",
];

/// The image files of `dir` in file-name order: those with an image extension, as pytorch-fid
/// selects them (so an imagefolder's metadata.jsonl or a README beside the images is not read);
/// hidden files skipped.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read image folder {}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.extension().is_some_and(|x| {
                    let x = x.to_string_lossy().to_ascii_lowercase();
                    IMAGE_EXTENSIONS.contains(&x.as_str())
                })
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!(
            "image folder {} is empty (no file ending in .{})",
            dir.display(),
            IMAGE_EXTENSIONS.join(", .")
        );
    }
    Ok(files)
}

/// The most pixels an image read by ril may have (8192 x 8192): larger ones are refused before
/// they are decoded.
pub const MAX_PIXELS: u64 = 1 << 26;

/// The most an image's longer side may exceed its shorter one (16:1). CLIP's preprocessing
/// resizes the shorter side to 224 and keeps the ratio, so a 1 x 100000 image would become
/// 224 x 22,400,000 pixels (and its resize matrices terabytes).
pub const MAX_ASPECT: u64 = 16;

/// Refuses an image of `w` x `h` pixels (from `what`) that is empty, above [`MAX_PIXELS`] or
/// more elongated than [`MAX_ASPECT`], naming the limit.
pub fn check_dimensions(what: &str, w: u32, h: u32) -> Result<()> {
    let (w, h) = (w as u64, h as u64);
    if w == 0 || h == 0 {
        bail!("{what} is {w}x{h} pixels: an image needs at least one pixel on each side");
    }
    if w * h > MAX_PIXELS {
        bail!(
            "{what} is {w}x{h} pixels, more than the {MAX_PIXELS} (8192x8192) ril reads; resize it first"
        );
    }
    if w.max(h) > MAX_ASPECT * w.min(h) {
        bail!(
            "{what} is {w}x{h} pixels: its sides differ by more than {MAX_ASPECT}:1, the most ril accepts (CLIP's resize keeps the ratio); crop it first"
        );
    }
    Ok(())
}

/// Decodes `files` as RGB into [N, 3, H, W] in [-1, 1] (the VAE's range); all must have one size,
/// within [`check_dimensions`]' limits (read from the header before decoding).
pub fn load_images<B: Backend>(files: &[PathBuf], device: &B::Device) -> Result<Tensor<B, 4>> {
    let mut data = Vec::new();
    let mut size = None;
    for f in files {
        let (w, h) = image::image_dimensions(f)
            .with_context(|| format!("{} is not a readable image", f.display()))?;
        check_dimensions(&f.display().to_string(), w, h)?;
        let img = image::open(f)
            .with_context(|| format!("{} is not a readable image", f.display()))?
            .to_rgb8();
        let (w, h) = img.dimensions();
        match size {
            None => size = Some((w, h, f.clone())),
            Some((w0, h0, ref first)) if (w0, h0) != (w, h) => bail!(
                "images have different sizes: {} is {w}x{h}, {} is {w0}x{h0}",
                f.display(),
                first.display()
            ),
            _ => {}
        }
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    data.push(img.get_pixel(x, y)[c] as f32 / 127.5 - 1.0);
                }
            }
        }
    }
    let (w, h, _) = size.context("no images")?;
    Ok(Tensor::from_data(
        TensorData::new(data, [files.len(), 3, h as usize, w as usize]),
        device,
    ))
}

//! Reading a folder of images (PNG, JPEG, ...) in file-name order into a tensor in [-1, 1], with
//! clear errors for an empty folder, a file that is not an image and mixed sizes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;

/// The image files of `dir` in file-name order (hidden files skipped).
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
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("image folder {} is empty", dir.display());
    }
    Ok(files)
}

/// Decodes `files` as RGB into [N, 3, H, W] in [-1, 1] (the VAE's range); all must have one size.
pub fn load_images<B: Backend>(files: &[PathBuf], device: &B::Device) -> Result<Tensor<B, 4>> {
    let mut data = Vec::new();
    let mut size = None;
    for f in files {
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

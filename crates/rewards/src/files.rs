//! Real (not differentiable) file sizes of generated images for the metrics: lossless PNG and
//! JPEG at a given quality, in kB (1000 bytes, as DDPO reports them), with the `image` crate's
//! encoders: PNG with its default compression and adaptive filtering; baseline JPEG with 4:2:0
//! chroma subsampling at the given quality (IJG tables). Sizes depend on the encoder: compare
//! numbers only between runs of the same encoder.

use anyhow::{Context, Result};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, RgbImage};

/// The PNG size of `img` in kB.
pub fn png_kb(img: &RgbImage) -> Result<f64> {
    let mut buf = Vec::new();
    PngEncoder::new(&mut buf)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .context("PNG encoding failed")?;
    Ok(buf.len() as f64 / 1000.0)
}

/// The JPEG size of `img` at `quality` (1–100) in kB.
pub fn jpeg_kb(img: &RgbImage, quality: u8) -> Result<f64> {
    anyhow::ensure!(
        (1..=100).contains(&quality),
        "JPEG quality must be 1-100, got {quality}"
    );
    let mut buf = Vec::new();
    JpegEncoder::new_with_quality(&mut buf, quality)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            ExtendedColorType::Rgb8,
        )
        .context("JPEG encoding failed")?;
    Ok(buf.len() as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32) -> RgbImage {
        let mut state = 1u32;
        RgbImage::from_fn(w, h, |_, _| {
            let mut px = [0u8; 3];
            for p in &mut px {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *p = (state >> 24) as u8;
            }
            image::Rgb(px)
        })
    }

    #[test]
    fn flat_images_compress_far_better_than_noise_and_quality_orders_jpeg_sizes() {
        let flat = RgbImage::from_pixel(64, 64, image::Rgb([120, 30, 200]));
        let busy = noise(64, 64);
        assert!(png_kb(&flat).unwrap() * 10.0 < png_kb(&busy).unwrap());
        // Noise is incompressible: PNG cannot go below the raw 12.288 kB by much.
        assert!(png_kb(&busy).unwrap() > 12.0);
        assert!(jpeg_kb(&busy, 30).unwrap() < jpeg_kb(&busy, 80).unwrap());
        assert!(jpeg_kb(&busy, 80).unwrap() < jpeg_kb(&busy, 100).unwrap());
        assert!(jpeg_kb(&flat, 80).unwrap() < 2.0);
        assert!(jpeg_kb(&flat, 0).is_err());
    }
}

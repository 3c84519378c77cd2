//! Pillow's bicubic resampling of 8-bit RGB images, exactly (the preprocessing of
//! transformers' CLIPImageProcessor, which torchmetrics' CLIP score uses): separable
//! antialiased bicubic (a = −0.5, support 2 × the downscale factor), coefficients normalised then
//! turned into 22-bit fixed point, a horizontal pass then a vertical one, each rounded and
//! clipped to 8 bits.

use image::RgbImage;

const PRECISION_BITS: u32 = 22;

fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Per output pixel: first input index and fixed-point weights (Pillow's `precompute_coeffs`
/// and `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|v| {
                    let v = if total != 0.0 { v / total } else { *v };
                    let f = v * (1u64 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (-0.5 + f) as i32
                    } else {
                        (0.5 + f) as i32
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// `Image.resize((w, h), Image.BICUBIC)` of an RGB image.
pub fn resize_bicubic(img: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (w0, h0) = img.dimensions();
    let half = 1i64 << (PRECISION_BITS - 1);
    let horizontal = if w != w0 {
        let cx = coefficients(w0 as usize, w as usize);
        RgbImage::from_fn(w, h0, |x, y| {
            let (xmin, k) = &cx[x as usize];
            let mut acc = [half; 3];
            for (i, kv) in k.iter().enumerate() {
                let p = img.get_pixel((xmin + i) as u32, y);
                for c in 0..3 {
                    acc[c] += p[c] as i64 * *kv as i64;
                }
            }
            image::Rgb(acc.map(clip8))
        })
    } else {
        img.clone()
    };
    if h == h0 {
        return horizontal;
    }
    let cy = coefficients(h0 as usize, h as usize);
    RgbImage::from_fn(w, h, |x, y| {
        let (ymin, k) = &cy[y as usize];
        let mut acc = [half; 3];
        for (i, kv) in k.iter().enumerate() {
            let p = horizontal.get_pixel(x, (ymin + i) as u32);
            for c in 0..3 {
                acc[c] += p[c] as i64 * *kv as i64;
            }
        }
        image::Rgb(acc.map(clip8))
    })
}

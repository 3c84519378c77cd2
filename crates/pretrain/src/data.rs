//! Captioned training images: a [`Source`] gives the example at an index, and the batch of a
//! step is a pure function of the seed, the phase and the step (no data-loader state, so a
//! resumed run sees the same batches).

use anyhow::Result;
use burn::prelude::*;
use image::RgbImage;
use sd_model::noise::NoiseRng;

/// One training example.
#[derive(Debug, Clone)]
pub struct Example {
    pub image: RgbImage,
    pub caption: String,
}

/// Where examples come from.
#[allow(clippy::len_without_is_empty)] // `len` is `None` for a stream: emptiness is not the question.
pub trait Source {
    /// A short description for logs and errors (a folder path, "shapes seed 0").
    fn describe(&self) -> String;
    /// The number of examples, or `None` for an unbounded stream.
    fn len(&self) -> Option<u64>;
    /// The example at `index` (`index < len` for a finite source).
    fn get(&self, index: u64) -> Result<Example>;
    /// The captions that decide the pruned vocabulary: all of a finite source's, a stream's
    /// first `n`.
    fn captions(&self, n: u64) -> Result<Vec<String>> {
        let count = self.len().map_or(n, |len| len);
        (0..count).map(|i| Ok(self.get(i)?.caption)).collect()
    }
}

/// The indices of batch `step` of phase `phase`: consecutive indices of a stream (every image is
/// new), uniform draws with replacement from a finite source.
pub fn batch_indices(
    source: &dyn Source,
    seed: u64,
    phase: u64,
    step: u64,
    batch: usize,
) -> Vec<u64> {
    match source.len() {
        None => (0..batch as u64).map(|j| step * batch as u64 + j).collect(),
        Some(len) => draw_indices(seed, phase, step, batch, len),
    }
}

/// `batch` uniform draws with replacement from `0..len` for batch `step` of phase `phase`.
pub fn draw_indices(seed: u64, phase: u64, step: u64, batch: usize, len: u64) -> Vec<u64> {
    let mut rng = NoiseRng::derive(seed, &[DATA_STREAM, phase, step]);
    (0..batch).map(|_| rng.next_u64() % len.max(1)).collect()
}

/// Stream id of the batch draws under the run's seed.
const DATA_STREAM: u64 = 0xDA7A;

/// Images as a [B, 3, S, S] tensor in [-1, 1] (diffusers' `Normalize([0.5], [0.5])`), each
/// centre-cropped to a square and resized to `size` (Catmull-Rom) when it is not already
/// `size`×`size`.
pub fn images_tensor<B: Backend>(
    images: &[RgbImage],
    size: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let plane = size * size;
    let mut values = vec![0f32; images.len() * 3 * plane];
    for (i, img) in images.iter().enumerate() {
        let img = fit(img, size as u32);
        for (j, px) in img.pixels().enumerate() {
            for c in 0..3 {
                values[i * 3 * plane + c * plane + j] = px[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Tensor::from_data(
        TensorData::new(values, [images.len(), 3, size, size]),
        device,
    )
}

/// `img` centre-cropped to a square and resized to `size`×`size` (Catmull-Rom, i.e. bicubic);
/// borrowed when it already is that size.
pub fn fit(img: &RgbImage, size: u32) -> std::borrow::Cow<'_, RgbImage> {
    let (w, h) = img.dimensions();
    if w == size && h == size {
        return std::borrow::Cow::Borrowed(img);
    }
    let side = w.min(h);
    let crop =
        image::imageops::crop_imm(img, (w - side) / 2, (h - side) / 2, side, side).to_image();
    std::borrow::Cow::Owned(image::imageops::resize(
        &crop,
        size,
        size,
        image::imageops::FilterType::CatmullRom,
    ))
}

//! CLIP score parity with torchmetrics 1.9.0 + transformers 4.57.6 (tools/parity/
//! make_clipscore_fixtures.py) on the tiny full-CLIP checkpoint: Pillow's bicubic resize on 8-bit
//! images (bit-exact), the processor's pixel values, the projected features, per-pair scores and
//! the clamped mean, for an upscaled non-square set and a downscaled one; and the processor's
//! centre crop of an odd margin (rounded down, unlike torchvision's half to even).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use image::RgbImage;
use rewards::clip_vision::ClipVisionConfig;
use ril_metrics::clip_score::{ClipScorer, pixel_values};
use ril_metrics::pil::resize_bicubic;
use sd_model::ClipTextConfig;

// The backend the tests run on: burn-flex, or LibTorch on the CPU with `--features tch`.
#[cfg(not(feature = "tch"))]
type B = sd_model::backend::Cpu;
#[cfg(feature = "tch")]
type B = sd_model::backend::Tch;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Fixture {
    raw: Vec<u8>,
}

impl Fixture {
    fn open() -> Self {
        Self::named("clipscore")
    }
    fn named(name: &str) -> Self {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{name}.safetensors"));
        Self {
            raw: std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }
    fn st(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.raw).unwrap()
    }
    fn u8s(&self, name: &str) -> (Vec<usize>, Vec<u8>) {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        (t.shape().to_vec(), t.data().to_vec())
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st.tensor(name).unwrap();
        match t.dtype() {
            safetensors::Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            safetensors::Dtype::F64 => t
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            d => panic!("{name}: {d:?}"),
        }
    }
    fn captions(&self, key: &str) -> Vec<String> {
        let st = self.st();
        let _ = st;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&self.raw).unwrap();
        serde_json::from_str(&meta.metadata().as_ref().unwrap()[key]).unwrap()
    }
}

/// [N, 3, H, W] uint8 → RGB images.
fn images(shape: &[usize], data: &[u8]) -> Vec<RgbImage> {
    let (n, h, w) = (shape[0], shape[2], shape[3]);
    (0..n)
        .map(|i| {
            RgbImage::from_fn(w as u32, h as u32, |x, y| {
                image::Rgb(std::array::from_fn(|c| {
                    data[((i * 3 + c) * h + y as usize) * w + x as usize]
                }))
            })
        })
        .collect()
}

fn scorer() -> ClipScorer<B> {
    let r = root();
    ClipScorer::from_files(
        &ClipTextConfig::tiny(),
        &ClipVisionConfig::tiny(),
        768,
        &r.join("crates/rewards/tests/fixtures/clip-full-tiny.safetensors"),
        &r.join("crates/sd-model/tests/fixtures/tiny-sd/tokenizer"),
        &Default::default(),
    )
    .unwrap()
}

#[test]
fn pillow_bicubic_resize_is_bit_exact() {
    let f = Fixture::open();
    let (shape, data) = f.u8s("images_u8");
    let imgs = images(&shape, &data);
    let (rs, expected) = f.u8s("resized_u8");
    let got = resize_bicubic(&imgs[0], rs[2] as u32, rs[1] as u32);
    let got: Vec<u8> = (0..3)
        .flat_map(|c| got.pixels().map(move |p| p[c]).collect::<Vec<_>>())
        .collect();
    assert_eq!(got, expected, "upscale {:?}", rs);
    let n = 2 * 3 * 300 * 260;
    let big = ril_testkit::uniform_u8(702, n);
    let (_, head) = f.u8s("images_big_u8_head");
    assert_eq!(big[..16], head[..]);
    let big = images(&[2, 3, 300, 260], &big);
    let (rs, expected) = f.u8s("resized_big_u8");
    let got = resize_bicubic(&big[0], rs[2] as u32, rs[1] as u32);
    let got: Vec<u8> = (0..3)
        .flat_map(|c| got.pixels().map(move |p| p[c]).collect::<Vec<_>>())
        .collect();
    assert_eq!(got, expected, "downscale {:?}", rs);
}

#[test]
fn clip_score_matches_torchmetrics() {
    let f = Fixture::open();
    let device = Default::default();
    let s = scorer();
    let (shape, data) = f.u8s("images_u8");
    let small = images(&shape, &data);
    let big = images(
        &[2, 3, 300, 260],
        &ril_testkit::uniform_u8(702, 2 * 3 * 300 * 260),
    );
    for (imgs, suffix, caps) in [(small, "", "captions"), (big, "_big", "captions_big")] {
        let px = pixel_values::<B>(&imgs, 224, &device).unwrap();
        // The fixture keeps every 8th row and column.
        let idx = |n: usize| {
            Tensor::<B, 1, Int>::from_data(
                TensorData::new(
                    (0..n).step_by(8).map(|i| i as i64).collect::<Vec<_>>(),
                    [n.div_ceil(8)],
                ),
                &device,
            )
        };
        let sub = px.select(2, idx(224)).select(3, idx(224));
        // Same 8-bit pixels, /255 and normalisation in f32 (numpy goes through f64 for /255).
        ril_testkit::assert_close(
            &format!("pixel_values{suffix}"),
            &sub.into_data().to_vec::<f32>().unwrap(),
            &f.f32s(&format!("pixel_values{suffix}_sub8")),
            1e-5,
            1e-6,
        );
        let captions = f.captions(caps);
        let (scores, clip) = s.score(&imgs, &captions, &device).unwrap();
        // f32 towers in another summation order: 1e-4 relative, 1e-5 of the scale.
        ril_testkit::assert_close(
            &format!("scores{suffix}"),
            &scores,
            &f.f32s(&format!("scores{suffix}")),
            1e-4,
            1e-5,
        );
        // The random tiny model's cosines are all negative: torchmetrics clamps the mean to 0.
        let expected = f.f32s(&format!("clip_score{suffix}"))[0] as f64;
        assert!(
            (clip - expected).abs() <= 1e-4 * expected.abs().max(1e-3),
            "clip_score{suffix}: {clip} vs {expected}"
        );
    }
}

#[test]
fn odd_crop_margin_is_rounded_down_like_clip_image_processor() {
    // 73x64 is resized to 255x224: a margin of 31, which CLIPImageProcessor crops at top 31 // 2 =
    // 15; torchvision's half-to-even CenterCrop (the rewards' crop) would take 16, pixels off by
    // up to 1.5 and the score by 4.8e-2 (the fixture's notes), far outside the tolerances below.
    let f = Fixture::named("clipscore_crop");
    let device = Default::default();
    let data = ril_testkit::uniform_u8(703, 3 * 73 * 64);
    let (_, head) = f.u8s("images_odd_u8_head");
    assert_eq!(data[..16], head[..], "images_odd_u8: generator head");
    let imgs = images(&[1, 3, 73, 64], &data);
    let px = pixel_values::<B>(&imgs, 224, &device).unwrap();
    let idx = Tensor::<B, 1, Int>::from_data(
        TensorData::new(
            (0..224).step_by(8).map(|i| i as i64).collect::<Vec<_>>(),
            [28],
        ),
        &device,
    );
    let sub = px.select(2, idx.clone()).select(3, idx);
    // As the test above: the same 8-bit pixels, /255 and normalisation in f32.
    ril_testkit::assert_close(
        "pixel_values_odd",
        &sub.into_data().to_vec::<f32>().unwrap(),
        &f.f32s("pixel_values_odd_sub8"),
        1e-5,
        1e-6,
    );
    let (scores, _) = scorer()
        .score(&imgs, &f.captions("captions_odd"), &device)
        .unwrap();
    // f32 towers in another summation order: 1e-4 relative, 1e-5 of the scale.
    ril_testkit::assert_close("scores_odd", &scores, &f.f32s("scores_odd"), 1e-4, 1e-5);
}

//! The evaluation runner on the tiny pipeline: the same noise for every model and batch size,
//! metrics that cannot be computed reported as skipped with the input they miss (and computed
//! ones never), results.json and the sample grid written.

use std::path::{Path, PathBuf};

use rewards::config::RewardsConfig;
use ril_metrics::eval::eval_noise;
use ril_metrics::{EvalSpec, Metric, evaluate};
use sd_model::StableDiffusion;

// The backend the tests run on: burn-flex, or LibTorch on the CPU with `--features tch`.
#[cfg(not(feature = "tch"))]
type B = sd_model::backend::Cpu;
#[cfg(feature = "tch")]
type B = sd_model::backend::Tch;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use sd_model::hub::asset::Asset;

fn rewards_config() -> RewardsConfig {
    let r = root();
    RewardsConfig {
        aesthetic_clip: Some(
            r.join("crates/rewards/tests/fixtures/clip-vision-tiny")
                .display()
                .to_string(),
        ),
        aesthetic_mlp: Some(Asset::Local(
            r.join("configs/tiny/aesthetic-mlp-random.safetensors"),
        )),
        hps_weights: Some(Asset::Local(
            r.join("crates/rewards/tests/fixtures/HPS_tiny.pt"),
        )),
        hps_model_config: Some(r.join("configs/tiny/openclip-tiny.json")),
        hps_tokenizer: Some(r.join("crates/sd-model/tests/fixtures/tiny-sd/tokenizer")),
        compress_quality: None,
        joint: None,
    }
}

fn spec(batch: usize) -> EvalSpec {
    EvalSpec {
        prompts: vec![
            "a red apple".into(),
            "a dog on a beach".into(),
            "a small house".into(),
        ],
        images_per_prompt: 2,
        seed: 7,
        steps: 3,
        guidance: 7.5,
        height: 64,
        width: 64,
        batch_size: batch,
        metrics: Metric::ALL.to_vec(),
        grid_prompts: 2,
        fid: None,
        clip_model: None,
    }
}

#[test]
fn results_do_not_depend_on_batching_and_skips_are_explained() {
    let device = Default::default();
    let sd = StableDiffusion::<B>::load(
        &root().join("crates/sd-model/tests/fixtures/tiny-sd"),
        &device,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("ril-eval-{}", std::process::id()));
    let (a, b) = (dir.join("a"), dir.join("b"));
    let ra = evaluate(&sd, &spec(1), &rewards_config(), &a, &device).unwrap();
    let rb = evaluate(&sd, &spec(4), &rewards_config(), &b, &device).unwrap();
    assert_eq!(ra.images, 6);
    for m in [
        Metric::Aesthetic,
        Metric::Hps,
        Metric::PngKb,
        Metric::JpegKb,
    ] {
        let (x, y) = (ra.values[&m], rb.values[&m]);
        // The same noise per (prompt, image); batching changes only f32 summation order.
        assert!(
            (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
            "{m:?}: {x} vs {y}"
        );
    }
    // No FID reference and no CLIP model in the spec: skipped, naming the flag that gives them.
    assert!(
        ra.skipped[&Metric::Fid].contains("--fid-reference"),
        "{:?}",
        ra.skipped
    );
    assert!(
        ra.skipped[&Metric::ClipScore].contains("--clip-model"),
        "{:?}",
        ra.skipped
    );
    assert!(!ra.values.contains_key(&Metric::Fid) && !ra.values.contains_key(&Metric::ClipScore));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["result"]["images"], 6);
    // Which reward weights scored it (HPSv2.0 and v2.1 scores do not compare).
    let hps = json["rewards"]["hps_weights"].as_str().unwrap();
    assert!(hps.ends_with("HPS_tiny.pt"), "{hps}");
    let grid = image::open(a.join("grid.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (2 * 64, 2 * 64));
    // Without reward weights, aesthetic and HPS are skipped with the reason.
    let rc = evaluate(
        &sd,
        &spec(4),
        &RewardsConfig::default(),
        &dir.join("c"),
        &device,
    )
    .unwrap();
    assert!(rc.skipped[&Metric::Aesthetic].contains("aesthetic_mlp"));
    assert!(rc.skipped[&Metric::Hps].contains("hps_weights"));
    assert!(rc.values.contains_key(&Metric::PngKb));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_noise_is_the_same_for_every_model_and_distinct_per_image() {
    let device = Default::default();
    let n = |i, j| {
        eval_noise::<B>(7, i, j, [1, 4, 8, 8], &device)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(n(0, 1), n(0, 1));
    assert_ne!(n(0, 1), n(1, 0));
    assert_ne!(n(0, 0), n(0, 1));
}

/// A transformers CLIPModel folder in `dir` built from the tiny fixtures: the full tiny CLIP
/// weights (the rewards fixtures), the tiny tokenizer, and a config.json holding both towers'
/// configs as CLIPModel's does.
fn tiny_clip_model(dir: &Path) -> PathBuf {
    let r = root();
    let clip = dir.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    std::fs::copy(
        r.join("crates/rewards/tests/fixtures/clip-full-tiny.safetensors"),
        clip.join("model.safetensors"),
    )
    .unwrap();
    let tokenizer = r.join("crates/sd-model/tests/fixtures/tiny-sd/tokenizer");
    for f in std::fs::read_dir(&tokenizer).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, clip.join(f.file_name().unwrap())).unwrap();
    }
    let read = |rel: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(r.join(rel)).unwrap()).unwrap()
    };
    let config = serde_json::json!({
        "architectures": ["CLIPModel"],
        "projection_dim": 768,
        "text_config": read("crates/sd-model/tests/fixtures/tiny-sd/text_encoder/config.json"),
        "vision_config": read("crates/rewards/tests/fixtures/clip-vision-tiny/config.json"),
    });
    std::fs::write(clip.join("config.json"), config.to_string()).unwrap();
    clip
}

#[test]
fn fid_and_clip_score_are_computed_when_their_inputs_are_given() {
    let device = Default::default();
    let sd = StableDiffusion::<B>::load(
        &root().join("crates/sd-model/tests/fixtures/tiny-sd"),
        &device,
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("ril-eval-fid-{}", std::process::id()));
    let reference = dir.join("real");
    std::fs::create_dir_all(&reference).unwrap();
    for i in 0..3u8 {
        image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([x as u8 * 3, y as u8 * 2 + i * 50, 128])
        })
        .save(reference.join(format!("{i}.png")))
        .unwrap();
    }
    let mut s = spec(4);
    s.metrics = vec![Metric::Fid, Metric::ClipScore, Metric::PngKb];
    s.images_per_prompt = 1;
    s.fid = Some(ril_metrics::eval::FidSpec {
        reference: reference.clone(),
        weights: None,
        network: Default::default(),
    });
    s.clip_model = Some(tiny_clip_model(&dir).display().to_string());
    let r = evaluate(
        &sd,
        &s,
        &RewardsConfig::default(),
        &dir.join("out"),
        &device,
    )
    .unwrap();
    // A computed metric has a value and is never also listed as skipped.
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let fid = r.values[&Metric::Fid];
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    // torchmetrics' CLIP score: 100·cos averaged, clamped at 0, so in [0, 100].
    let clip = r.values[&Metric::ClipScore];
    assert!((0.0..=100.0).contains(&clip), "{clip}");
    // The reference statistics are cached outside the (possibly read-only) image folder.
    assert!(!reference.join(".ril-fid-stats.safetensors").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fid_on_clip_features_compares_the_clip_models_image_embeddings() {
    use ril_metrics::clip_score::{ClipScorer, feature_values, folder_stats, identity};
    use ril_metrics::eval::{FidNetwork, FidSpec};
    use ril_metrics::fid::{Stats, frechet_distance};
    let device = Default::default();
    let dir = std::env::temp_dir().join(format!("ril-eval-fid-clip-{}", std::process::id()));
    let clip_dir = tiny_clip_model(&dir);
    let scorer = ClipScorer::<B>::load(&clip_dir, &device).unwrap();
    let ident = identity(&clip_dir).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let mut images = Vec::new();
    for (k, d) in [&a, &b].into_iter().enumerate() {
        std::fs::create_dir_all(d).unwrap();
        for i in 0..4u8 {
            let img = image::RgbImage::from_fn(64, 64, |x, y| {
                image::Rgb([x as u8 * 3, y as u8 + i * 40, 128 + 60 * k as u8])
            });
            img.save(d.join(format!("{i}.png"))).unwrap();
            if k == 0 {
                images.push(img);
            }
        }
    }
    // A folder's statistics are those of the model's features of its images.
    let sa = folder_stats(&scorer, &ident, &a, 3, &device).unwrap();
    let direct = Stats::from_features(&feature_values(&scorer, &images, &device).unwrap(), 768);
    assert_eq!(sa.mu, direct.unwrap().mu);
    // A set against itself is at distance 0 (up to the square root's rounding, far below the
    // 1e-3 of the trace it cancels); another set is not.
    let trace: f64 = sa.sigma.trace();
    assert!(frechet_distance(&sa, &sa).unwrap().abs() < 1e-3 * trace.max(1e-9));
    let sb = folder_stats(&scorer, &ident, &b, 3, &device).unwrap();
    assert!(frechet_distance(&sa, &sb).unwrap() > 10.0 * trace * 1e-3);
    // Inception statistics are not CLIP features.
    let npz = dir.join("stats.npz");
    let e = folder_stats(&scorer, &ident, &npz, 3, &device).unwrap_err();
    assert!(e.to_string().contains("stats.npz"), "{e}");

    // ril eval's FID on CLIP features: computed, and recorded with its network.
    let sd = StableDiffusion::<B>::load(
        &root().join("crates/sd-model/tests/fixtures/tiny-sd"),
        &device,
    )
    .unwrap();
    let mut s = spec(4);
    s.metrics = vec![Metric::Fid];
    s.fid = Some(FidSpec {
        reference: a.clone(),
        weights: None,
        network: FidNetwork::Clip,
    });
    s.clip_model = Some(clip_dir.display().to_string());
    let out = dir.join("out");
    let r = evaluate(&sd, &s, &RewardsConfig::default(), &out, &device).unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let fid = r.values[&Metric::Fid];
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    let json = std::fs::read_to_string(out.join("results.json")).unwrap();
    assert!(json.contains("\"network\": \"clip\""), "{json}");
    // Without the CLIP model there is nothing to take features with.
    s.clip_model = None;
    let e = evaluate(&sd, &s, &RewardsConfig::default(), &out, &device).unwrap_err();
    assert!(e.to_string().contains("clip_model"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

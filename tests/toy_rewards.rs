//! The committed toy reward and metric models (data/toy/aesthetic, data/toy/hps,
//! data/toy/clip-metric): `ril score` (the rewards) and the CLIP score model on the first
//! held-out images, written as PNGs by `ril data shapes`, give the scores recorded when the weights
//! were made (heldout.json), and the recorded held-out figures say each model does its job.

use std::path::{Path, PathBuf};
use std::process::Command;

use ril_testkit::scratch;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ril(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_ril"))
        .args(args)
        .output()
        .expect("run ril");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

fn heldout_of(model: &str) -> serde_json::Value {
    let p = root().join(format!("data/toy/{model}/heldout.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn heldout() -> serde_json::Value {
    heldout_of("aesthetic")
}

/// The recorded scores of held-out items 0..n.
fn recorded(h: &serde_json::Value) -> Vec<f64> {
    h["first_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// Writes items 0..n of the single-object held-out stream of `seed` into `dir` with `ril data
/// shapes`; returns their captions.
fn heldout_images(dir: &Path, n: usize, seed: &str) -> Vec<String> {
    let (ok, out) = ril(&[
        "data",
        "shapes",
        "--count",
        &n.to_string(),
        "--seed",
        seed,
        "--split",
        "heldout",
        "--objects",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    std::fs::read_to_string(dir.join("metadata.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_string()
        })
        .collect()
}

/// The per-image scores `ril score` printed.
fn printed_scores(out: &str) -> Vec<f64> {
    out.lines()
        .filter(|l| l.contains(".png\t"))
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect()
}

/// A model's training config, copied beside its weights, is the repository's config.
fn made_by(model: &str, config: &str) {
    let train = std::fs::read_to_string(root().join(format!("data/toy/{model}/train.toml")));
    let config = std::fs::read_to_string(root().join(config)).unwrap();
    assert_eq!(
        train.unwrap(),
        config,
        "the committed weights were made by another config"
    );
}

#[test]
fn the_committed_toy_aesthetic_reward_scores_what_was_recorded() {
    let dir = scratch("toy-aesthetic-score");
    let images = dir.join("heldout");
    let h = heldout();
    let recorded: Vec<f64> = h["first_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let n = recorded.len().to_string();
    let seed = h["seed"].to_string();
    let (ok, out) = ril(&[
        "data",
        "shapes",
        "--count",
        &n,
        "--seed",
        &seed,
        "--split",
        "heldout",
        "--objects",
        "1",
        "--out",
        images.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let a = root().join("data/toy/aesthetic");
    let (clip, mlp) = (a.join("clip"), a.join("mlp.safetensors"));
    let (ok, out) = ril(&[
        "score",
        "--reward",
        "aesthetic",
        "--images",
        images.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
        "--weights",
        mlp.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let scores: Vec<f64> = out
        .lines()
        .filter(|l| l.contains(".png\t"))
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(scores.len(), recorded.len(), "{out}");
    for (i, (s, r)) in scores.iter().zip(&recorded).enumerate() {
        // The same weights and images; only another CPU's rounding in the f32 products differs
        // (1e-3 of scores between 1 and 10 is far above that and far below any real change).
        assert!(
            (s - r).abs() < 1e-3,
            "image {i}: {s} against the recorded {r}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_committed_toy_aesthetic_reward_follows_the_stated_beauty() {
    let h = heldout();
    let (rmse, std, r) = (
        h["rmse"].as_f64().unwrap(),
        h["beauty_std"].as_f64().unwrap(),
        h["pearson"].as_f64().unwrap(),
    );
    assert!(h["count"].as_u64().unwrap() >= 1000);
    // A reward that ranks images as beauty does: strongly correlated, and its error a small part
    // of beauty's own spread (guessing the mean would make them equal).
    assert!(
        r > 0.95 && rmse < 0.3 * std,
        "r {r}, RMSE {rmse}, spread {std}"
    );
    let train = std::fs::read_to_string(root().join("data/toy/aesthetic/train.toml")).unwrap();
    let config = std::fs::read_to_string(root().join("configs/toy/aesthetic.toml")).unwrap();
    assert_eq!(
        train, config,
        "the committed weights were made by another config"
    );
    assert!(Path::new(&root().join("data/toy/aesthetic/clip/config.json")).is_file());
}

#[test]
fn the_committed_toy_hps_reward_scores_what_was_recorded() {
    let dir = scratch("toy-hps-score");
    let images = dir.join("heldout");
    let h = heldout_of("hps");
    let recorded = recorded(&h);
    let captions = heldout_images(&images, recorded.len(), &h["seed"].to_string());
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, captions.join("\n") + "\n").unwrap();
    let d = root().join("data/toy/hps");
    let (ok, out) = ril(&[
        "score",
        "--reward",
        "hps",
        "--images",
        images.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--weights",
        d.join("open_clip_model.safetensors").to_str().unwrap(),
        "--model-config",
        d.join("open_clip_config.json").to_str().unwrap(),
        "--tokenizer",
        d.join("tokenizer").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let scores = printed_scores(&out);
    assert_eq!(scores.len(), recorded.len(), "{out}");
    for (i, (s, r)) in scores.iter().zip(&recorded).enumerate() {
        // Cosines in [-1, 1] from the same weights and images: 1e-4 is far above another CPU's
        // f32 rounding and far below the gap between a matching and a wrong caption (~0.9).
        assert!(
            (s - r).abs() < 1e-4,
            "image {i}: {s} against the recorded {r}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_committed_toy_hps_reward_follows_captions() {
    let h = heldout_of("hps");
    assert!(h["count"].as_u64().unwrap() >= 1000);
    // A prompt-conditioned reward: the own caption first among 64 far above chance (1/64), and
    // clearly preferred to one naming another background, colour or size (chance 0.5). Shape
    // and position are weaker (README of data/toy/hps): they are recorded, not required.
    let top1 = h["top1"].as_f64().unwrap();
    assert!(top1 > 0.5, "top-1 {top1}");
    for a in ["background", "colour", "size"] {
        let p = h["attribute_preferred"][a].as_f64().unwrap();
        assert!(p > 0.9, "{a}: {p}");
    }
    made_by("hps", "configs/toy/hps.toml");
}

#[test]
fn the_committed_metric_clip_gives_the_recorded_clip_scores_and_follows_captions() {
    use ril_metrics::clip_score::ClipScorer;
    let h = heldout_of("clip-metric");
    let recorded = recorded(&h);
    let spec = toy_shapes::Spec::new(h["seed"].as_u64().unwrap(), toy_shapes::Split::Heldout)
        .objects(toy_shapes::Objects::One);
    let samples: Vec<_> = (0..recorded.len() as u64).map(|i| spec.sample(i)).collect();
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let captions: Vec<String> = samples.iter().map(|s| s.caption.clone()).collect();
    let device = Default::default();
    let scorer =
        ClipScorer::<sd_model::backend::Cpu>::load(&root().join("data/toy/clip-metric"), &device)
            .unwrap();
    let (scores, _) = scorer.score(&images, &captions, &device).unwrap();
    for (i, (s, r)) in scores.iter().zip(&recorded).enumerate() {
        // The metric reads the 8-bit images as CLIPImageProcessor does (/255, CLIP's
        // normalisation); the recorded cosines came from the training's reward-style path
        // (x / 2 + 0.5 from [-1, 1]): the inputs differ in f32 rounding only. 2e-3 on 100·cos is
        // far above that and far below a wrong caption's gap (~95).
        assert!(
            (*s as f64 - 100.0 * r).abs() < 2e-3,
            "image {i}: {s} against 100 x the recorded {r}"
        );
    }
    let top1 = h["top1"].as_f64().unwrap();
    assert!(top1 > 0.5, "top-1 {top1}");
    for a in ["background", "colour", "size"] {
        let p = h["attribute_preferred"][a].as_f64().unwrap();
        assert!(p > 0.9, "{a}: {p}");
    }
    made_by("clip-metric", "configs/toy/clip-metric.toml");
    // Not the HPS reward's model: another seed and layout.
    let hps = std::fs::read_to_string(root().join("data/toy/hps/train.toml")).unwrap();
    assert!(hps.contains("seed = 0") && hps.contains("layout = \"open_clip\""));
}

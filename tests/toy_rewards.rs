//! The committed toy aesthetic reward (data/toy/aesthetic): `ril score --reward aesthetic` on the
//! first held-out images, written as PNGs by `ril data shapes`, gives the scores recorded when the
//! weights were made (heldout.json), and the recorded held-out fit says the reward follows the
//! stated beauty.

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

fn heldout() -> serde_json::Value {
    let p = root().join("data/toy/aesthetic/heldout.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
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

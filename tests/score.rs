//! `ril score` on folders of images: one line per image in file-name order and the mean, JSON
//! with `--out`, the same numbers as the rewards library (also for a folder of images of
//! different sizes), and clear errors for bad input.

mod common;

use common::ril;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ril-score-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// b.png: a flat colour; a.png: noise (file-name order puts the noise first).
fn images(dir: &Path) -> PathBuf {
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    let mut state = 7u32;
    let noise = image::RgbImage::from_fn(64, 64, |_, _| {
        let mut px = [0u8; 3];
        for p in &mut px {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *p = (state >> 24) as u8;
        }
        image::Rgb(px)
    });
    noise.save(imgs.join("a.png")).unwrap();
    image::RgbImage::from_pixel(64, 64, image::Rgb([90, 140, 200]))
        .save(imgs.join("b.png"))
        .unwrap();
    imgs
}

#[test]
fn compress_scores_flat_images_above_noise_and_writes_json() {
    let dir = scratch("compress");
    let imgs = images(&dir);
    let out = dir.join("scores.json");
    let (ok, stdout, stderr) = ril(&[
        "score",
        "--reward",
        "compress",
        "--images",
        imgs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("a.png\t")
            && lines[1].starts_with("b.png\t")
            && lines[2].starts_with("mean\t")
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(json["reward"], "compress");
    let s: Vec<f64> = json["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert_eq!(json["scores"][0]["image"], "a.png");
    // Noise loses much more to JPEG than a flat colour; both are ≤ 0.
    assert!(s[0] < s[1] && s[1] <= 0.0 && s[0] < -1e-3, "{s:?}");
    assert!((json["mean"].as_f64().unwrap() - (s[0] + s[1]) / 2.0).abs() < 1e-6);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn aesthetic_scores_equal_the_library() {
    let dir = scratch("aesthetic");
    let imgs = images(&dir);
    let clip = root().join("crates/rewards/tests/fixtures/clip-vision-tiny");
    let mlp = root().join("data/weights/sac+logos+ava1-l14-linearMSE.pth");
    let (ok, stdout, stderr) = ril(&[
        "score",
        "--reward",
        "aesthetic",
        "--images",
        imgs.to_str().unwrap(),
        "--clip",
        clip.to_str().unwrap(),
        "--weights",
        mlp.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let got: Vec<f32> = stdout
        .lines()
        .take(2)
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    use rewards::Reward;
    type B = sd_model::backend::Cpu;
    let device = Default::default();
    let model = rewards::aesthetic::Aesthetic::<B>::load(&clip, &mlp, &device).unwrap();
    let files = rewards::images::image_files(&imgs).unwrap();
    let x = rewards::images::load_images::<B>(&files, &device).unwrap();
    let expected: Vec<f32> = model
        .score(x, &[])
        .unwrap()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap();
    for (g, e) in got.iter().zip(&expected) {
        // Printed with 6 decimals.
        assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hps_with_a_model_config_and_bad_inputs() {
    let dir = scratch("hps");
    let imgs = images(&dir);
    let config = dir.join("tiny.json");
    std::fs::write(
        &config,
        r#"{"embed_dim": 16, "vision_cfg": {"image_size": 224, "layers": 2, "width": 32, "head_width": 8, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 1000, "width": 24, "heads": 4, "layers": 2}}"#,
    )
    .unwrap();
    let weights = root().join("crates/rewards/tests/fixtures/HPS_tiny.pt");
    let tok = root().join("crates/sd-model/tests/fixtures/tiny-sd/tokenizer");
    let prompts = dir.join("prompts.txt");
    std::fs::write(&prompts, "a photo of noise\n\na blue square\n").unwrap();
    let args = |p: &Path| {
        vec![
            "score".to_string(),
            "--reward".into(),
            "hps".into(),
            "--images".into(),
            imgs.display().to_string(),
            "--weights".into(),
            weights.display().to_string(),
            "--tokenizer".into(),
            tok.display().to_string(),
            "--model-config".into(),
            config.display().to_string(),
            "--prompts".into(),
            p.display().to_string(),
        ]
    };
    let a = args(&prompts);
    let (ok, stdout, stderr) = ril(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 3);
    // Fewer prompts than images.
    std::fs::write(&prompts, "only one\n").unwrap();
    let (ok, _, stderr) = ril(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        !ok && stderr.contains("2 images") && stderr.contains("1 prompts"),
        "{stderr}"
    );
    // An empty folder and a missing MLP.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (ok, _, stderr) = ril(&[
        "score",
        "--reward",
        "compress",
        "--images",
        empty.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("is empty"), "{stderr}");
    let (ok, _, stderr) = ril(&[
        "score",
        "--reward",
        "aesthetic",
        "--images",
        imgs.to_str().unwrap(),
    ]);
    assert!(!ok && stderr.contains("needs --weights"), "{stderr}");
    let (ok, _, stderr) = ril(&[
        "score",
        "--reward",
        "beauty",
        "--images",
        imgs.to_str().unwrap(),
    ]);
    assert!(
        !ok && stderr.contains("--reward") && stderr.contains("'beauty'"),
        "{stderr}"
    );
    assert!(stderr.contains("aesthetic, hps, compress"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Noise of the given size around mid-grey, of amplitude `amp` (0-127).
fn noise(w: u32, h: u32, seed: u32, amp: u32) -> image::RgbImage {
    let mut state = seed;
    image::RgbImage::from_fn(w, h, |_, _| {
        let mut px = [0u8; 3];
        for p in &mut px {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *p = (128 + (state >> 24) * amp / 128 - amp) as u8;
        }
        image::Rgb(px)
    })
}

#[test]
fn a_folder_of_several_sizes_scores_each_image_as_if_alone() {
    let dir = scratch("sizes");
    let imgs = dir.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    // Two sizes, interleaved in file-name order (and not multiples of JPEG's 16-pixel blocks).
    let sizes = [(64, 64), (40, 24), (64, 64), (40, 24), (64, 64)];
    for (i, &(w, h)) in sizes.iter().enumerate() {
        // A different amplitude each: scores far apart.
        noise(w, h, i as u32 + 1, 20 * (i as u32 + 1))
            .save(imgs.join(format!("{i}.png")))
            .unwrap();
    }
    let clip = root().join("crates/rewards/tests/fixtures/clip-vision-tiny");
    let mlp = root().join("data/weights/sac+logos+ava1-l14-linearMSE.pth");
    type B = sd_model::backend::Cpu;
    let device = Default::default();
    type Scorer = Box<dyn rewards::Reward<B>>;
    let rewards: Vec<(Vec<&str>, Scorer)> = vec![
        (
            vec!["--reward", "compress"],
            Box::new(rewards::jpeg::Compressibility::default()),
        ),
        (
            vec![
                "--reward",
                "aesthetic",
                "--clip",
                clip.to_str().unwrap(),
                "--weights",
                mlp.to_str().unwrap(),
            ],
            Box::new(rewards::aesthetic::Aesthetic::<B>::load(&clip, &mlp, &device).unwrap()),
        ),
    ];
    let files = rewards::images::image_files(&imgs).unwrap();
    for (flags, reward) in rewards {
        let out = dir.join("scores.json");
        let args = [
            &[
                "score",
                "--images",
                imgs.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ][..],
            &flags,
        ]
        .concat();
        let (ok, stdout, stderr) = ril(&args);
        assert!(ok, "{flags:?}: {stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), sizes.len() + 1, "{stdout}");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let (mut sum, mut scores) = (0.0, Vec::new());
        for (i, f) in files.iter().enumerate() {
            // The original file order, in the printout and the JSON.
            let name = format!("{i}.png");
            assert_eq!(json["scores"][i]["image"], name.as_str());
            let (n, got) = lines[i].split_once('\t').unwrap();
            assert_eq!(n, name);
            let got: f64 = got.parse().unwrap();
            // The image scored alone, by the library.
            let x = rewards::images::load_images::<B>(std::slice::from_ref(f), &device).unwrap();
            let alone = reward
                .score(x, &[])
                .unwrap()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap()[0] as f64;
            // Tolerance 1e-5: the printout has 6 decimals (up to 5e-7 of rounding), and a batch
            // of 2 or 3 images may sum in another order than a batch of 1 in the CPU kernels
            // (f32, ~1e-7 relative at these magnitudes, |score| < 10). The images' scores differ
            // from each other by more than twice that (checked below), so a score written in
            // another image's place would fail.
            assert!(
                (got - alone).abs() < 1e-5,
                "{flags:?} {name}: {got} in the folder, {alone} alone"
            );
            let j = json["scores"][i]["score"].as_f64().unwrap();
            assert!((j - alone).abs() < 1e-5, "{flags:?} {name}: JSON {j}");
            sum += j;
            scores.push(alone);
        }
        for (i, a) in scores.iter().enumerate() {
            for b in &scores[i + 1..] {
                assert!(
                    (a - b).abs() > 2e-5,
                    "{flags:?}: indistinct scores {scores:?}"
                );
            }
        }
        let mean = json["mean"].as_f64().unwrap();
        assert!((mean - sum / sizes.len() as f64).abs() < 1e-6);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

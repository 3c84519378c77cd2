//! End-to-end tests of the `ril` binary: `ril sample` on the tiny pipeline reproduces diffusers'
//! StableDiffusionPipeline(DDIMScheduler) image from the same latents, resolves a hub id from a
//! (fake) cache, and fails with a clear message and a non-zero exit on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ril_testkit::{copy_dir, scratch};
use sd_model::load::SafetensorsFile;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/sd-model/tests/fixtures")
        .join(rel)
}

fn ril(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ril"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run ril")
}

/// Writes the parity fixture's initial latents as a latents file.
fn latents_file(dir: &Path) -> PathBuf {
    let r = SafetensorsFile::open(&fixture("reference/pipeline.safetensors")).unwrap();
    let data: Vec<u8> = r
        .read_f32("latents")
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 4, 8, 8], &data)
            .unwrap();
    let path = dir.join("latents.safetensors");
    safetensors::serialize_to_file([("latents", view)], None, &path).unwrap();
    path
}

fn sample_args<'a>(model: &'a str, latents: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "sample",
        "--model",
        model,
        "--prompt",
        "a photo of a cat",
        "--prompt",
        "a red car",
        "--negative-prompt",
        "blurry",
        "--height",
        "64",
        "--width",
        "64",
        "--steps",
        "10",
        "--guidance",
        "7.5",
        "--eta",
        "0",
        "--latents",
        latents,
        "--out",
        out,
    ]
}

/// Compares DIR/000.png, DIR/001.png with diffusers' images (output_type "pt", [0, 1]).
fn assert_matches_diffusers(out: &Path) {
    let r = SafetensorsFile::open(&fixture("reference/pipeline.safetensors")).unwrap();
    assert_images_match(out, &r.read_f32("image").unwrap());
}

fn assert_images_match(out: &Path, expected: &[f32]) {
    let (h, w) = (64, 64);
    for i in 0..2 {
        let img = image::open(out.join(format!("{i:03}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (64, 64));
        let mut worst = 0f32;
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let e = expected[((i * 3 + c) * h + y) * w + x] * 255.0;
                    let got = img.get_pixel(x as u32, y as u32)[c] as f32;
                    worst = worst.max((got - e).abs());
                }
            }
        }
        // The acceptance bound: within 2/255 per pixel of diffusers' float image
        // (8-bit rounding alone accounts for up to 0.5/255).
        assert!(
            worst <= 2.0,
            "image {i}: worst pixel differs by {worst}/255"
        );
    }
}

#[test]
fn sample_reproduces_diffusers_from_a_latents_file() {
    let dir = scratch("sample");
    let latents = latents_file(&dir);
    let out = dir.join("out");
    let model = fixture("tiny-sd");
    let o = ril(
        &sample_args(
            model.to_str().unwrap(),
            latents.to_str().unwrap(),
            out.to_str().unwrap(),
        ),
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_matches_diffusers(&out);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sample_with_a_peft_lora_reproduces_diffusers_load_lora_weights() {
    let dir = scratch("lora");
    let latents = latents_file(&dir);
    let out = dir.join("out");
    let model = fixture("tiny-sd");
    let lora = fixture("lora/a_r4.safetensors");
    let mut args = sample_args(
        model.to_str().unwrap(),
        latents.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    args.extend(["--lora", lora.to_str().unwrap()]);
    let o = ril(&args, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = SafetensorsFile::open(&fixture("lora/reference.safetensors")).unwrap();
    assert_images_match(&out, &r.read_f32("pipe_a_image").unwrap());
    // The LoRA changes the picture: the base pipeline's image is not within 2/255 of it.
    let base = SafetensorsFile::open(&fixture("reference/pipeline.safetensors")).unwrap();
    let (a, b) = (
        r.read_f32("pipe_a_image").unwrap(),
        base.read_f32("image").unwrap(),
    );
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() * 255.0 > 2.0));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sample_resolves_a_hub_id_from_the_cache_offline() {
    let dir = scratch("hub");
    let snapshot = dir.join("hub/models--owner--tiny-sd/snapshots/0123abc");
    copy_dir(&fixture("tiny-sd"), &snapshot);
    std::fs::create_dir_all(dir.join("hub/models--owner--tiny-sd/refs")).unwrap();
    std::fs::write(dir.join("hub/models--owner--tiny-sd/refs/main"), "0123abc").unwrap();
    let latents = latents_file(&dir);
    let out = dir.join("out");
    let cache = dir.join("hub");
    let one = Path::new("1");
    let o = ril(
        &sample_args(
            "owner/tiny-sd",
            latents.to_str().unwrap(),
            out.to_str().unwrap(),
        ),
        &[("HF_HUB_CACHE", &cache), ("HF_HUB_OFFLINE", one)],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_matches_diffusers(&out);
    // Not cached and offline: a clear error, no network.
    let o = ril(
        &sample_args(
            "owner/absent",
            latents.to_str().unwrap(),
            out.to_str().unwrap(),
        ),
        &[("HF_HUB_CACHE", &cache), ("HF_HUB_OFFLINE", one)],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("owner/absent") && err.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A run config without an [eval] section.
const TINY_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny/rid-ahc.toml");

#[test]
fn bad_input_exits_non_zero_with_a_message_and_writes_nothing() {
    let dir = scratch("bad");
    let latents = latents_file(&dir);
    let out = dir.join("out");
    let model = fixture("tiny-sd");
    let (m, l, o) = (
        model.to_str().unwrap(),
        latents.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    // Runtime errors exit with 1, argument errors (clap's) with 2.
    let cases: Vec<(Vec<&str>, i32, &[&str])> = vec![
        (
            sample_args("/nonexistent/model-folder", l, o),
            1,
            &["/nonexistent/model-folder"],
        ),
        (
            {
                let mut a = sample_args(m, l, o);
                a[10] = "128"; // height 128 does not match the [2, 4, 8, 8] latents
                a
            },
            1,
            &["expected [2, 4, 16, 8]"],
        ),
        (
            {
                let mut a = sample_args(m, l, o);
                a[4] = "";
                a
            },
            1,
            &["prompt 0 is empty"],
        ),
        (
            vec!["sample", "--model", m, "--prompt", "x", "--out", o],
            2,
            &["--seed", "--latents", "required"],
        ),
        (
            [&sample_args(m, l, o)[..], &["--seed", "3"]].concat(),
            2,
            &["--seed", "--latents", "cannot be used with"],
        ),
        (vec!["sample", "--bogus"], 2, &["'--bogus'"]),
        (
            vec![
                "eval",
                "--config",
                TINY_CONFIG,
                "--fid-reference",
                "real",
                "--fid-features",
                "clip",
                "--out",
                o,
            ],
            1,
            &["FID on CLIP features", "--clip-model", "[eval] clip_model"],
        ),
        (
            vec![
                "eval",
                "--config",
                TINY_CONFIG,
                "--metrics",
                "judge_accuracy",
                "--judge",
                "data/toy/judge",
                "--out",
                o,
            ],
            1,
            &["judge_accuracy: eval prompt 1", "not a one-object caption"],
        ),
        (
            vec![
                "eval",
                "--config",
                TINY_CONFIG,
                "--fid-features",
                "vgg",
                "--out",
                o,
            ],
            2,
            &["--fid-features", "'vgg'", "inception, clip"],
        ),
        (
            vec![
                "eval",
                "--config",
                TINY_CONFIG,
                "--fid-reference",
                "real.npz",
                "--out",
                o,
            ],
            1,
            &[
                "FID needs Inception weights",
                "--fid-weights",
                "[eval] fid_weights",
            ],
        ),
        (
            [&sample_args(m, l, o)[..], &["--height", "64"]].concat(),
            2,
            &["--height", "cannot be used multiple times"],
        ),
        (
            {
                let mut a = sample_args(m, l, o);
                a[14] = "ten";
                a
            },
            2,
            &["--steps", "'ten'"],
        ),
        (
            [&sample_args(m, l, o)[..], &["--backend", "tpu"]].concat(),
            2,
            &["--backend", "'tpu'", "cpu, cuda"],
        ),
        (
            {
                let mut a = sample_args(m, l, o);
                a[20] = "/nonexistent/latents.safetensors";
                a
            },
            1,
            &["/nonexistent/latents.safetensors"],
        ),
    ];
    for (args, code, needles) in cases {
        let r = ril(&args, &[]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(code), "{args:?}: {err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?}: expected {needle:?} in {err}"
            );
        }
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The subcommands, in the order `ril --help` lists them.
const COMMANDS: [&str; 9] = [
    "sample",
    "score",
    "train",
    "soup",
    "eval",
    "fid",
    "bench",
    "fetch",
    "toy-reward",
];

#[test]
fn help_lists_every_command_and_documents_every_flag() {
    let o = ril(&["--help"], &[]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for c in COMMANDS {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(c)),
            "{c} missing from\n{help}"
        );
    }
    // Every subcommand's --help exits 0 and names each of its flags.
    let flags: [(&str, &[&str]); 9] = [
        (
            "sample",
            &[
                "--model",
                "--prompt",
                "--negative-prompt",
                "--height",
                "--width",
                "--steps",
                "--guidance",
                "--eta",
                "--seed",
                "--latents",
                "--out",
                "--lora",
                "--backend",
            ],
        ),
        (
            "score",
            &[
                "--reward",
                "--images",
                "--prompts",
                "--weights",
                "--quality",
                "--clip",
                "--tokenizer",
                "--model-config",
                "--out",
            ],
        ),
        ("train", &["--config", "--resume", "--check"]),
        ("soup", &["--lora", "--coefficients", "--out"]),
        (
            "eval",
            &[
                "--config",
                "--lora",
                "--prompts",
                "--images-per-prompt",
                "--metrics",
                "--batch",
                "--grid-prompts",
                "--fid-reference",
                "--fid-weights",
                "--fid-hash-weights",
                "--clip-model",
                "--out",
            ],
        ),
        (
            "fid",
            &["--real", "--fake", "--weights", "--hash-weights", "--batch"],
        ),
        (
            "bench",
            &[
                "--preset",
                "--backend",
                "--dtype",
                "--what",
                "--reps",
                "--steps",
                "--batch",
                "--json",
            ],
        ),
        ("fetch", &["--config", "--preset", "--dry-run"]),
        ("toy-reward", &["--config", "--out"]),
    ];
    for (c, flags) in flags {
        let o = ril(&[c, "--help"], &[]);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{c} --help");
        for f in flags {
            assert!(
                help.contains(&format!("{f} ")) || help.contains(&format!("{f}\n")),
                "ril {c} --help lacks {f}:\n{help}"
            );
        }
    }
    // Defaults and choices are visible.
    let o = ril(&["sample", "--help"], &[]);
    let help = String::from_utf8_lossy(&o.stdout);
    for s in [
        "[default: 512]",
        "[default: 7.5]",
        "[default: cpu]",
        "cpu, cuda",
    ] {
        assert!(help.contains(s), "sample --help lacks {s}:\n{help}");
    }
    let o = ril(&["bench", "--help"], &[]);
    let help = String::from_utf8_lossy(&o.stdout);
    for s in ["sd15", "train-step", "bf16", "[default: tiny]"] {
        assert!(help.contains(s), "bench --help lacks {s}:\n{help}");
    }
}

#[test]
fn flag_equals_value_and_exactly_one_of_seed_and_latents() {
    let dir = scratch("equals");
    let out = dir.join("out");
    let model = fixture("tiny-sd");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "sample",
            "--model",
            model.to_str().unwrap(),
            "--prompt=a photo of a cat",
            "--height=64",
            "--width=64",
            "--steps=2",
            // A negative number is a value, not a flag.
            "--guidance",
            "-1.5",
        ]
        .map(String::from)
        .to_vec();
        a.push(format!("--out={}", out.display()));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: &[String]| ril(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let o = run(&args(&["--seed=3"]));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(out.join("000.png")).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));
    std::fs::remove_dir_all(&out).unwrap();
    let latents = latents_file(&dir);
    for extra in [
        vec![],
        vec![
            "--seed=3".to_string(),
            format!("--latents={}", latents.display()),
        ],
    ] {
        let a = [args(&[]), extra].concat();
        let o = run(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert!(err.contains("--seed") && err.contains("--latents"), "{err}");
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn arguments_that_are_not_utf8_are_errors_not_panics() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"caf\xe9");
    let dir = scratch("utf8");
    let run = |args: &[&OsStr]| {
        Command::new(env!("CARGO_BIN_EXE_ril"))
            .args(args)
            .output()
            .unwrap()
    };
    let s = |v: &'static str| OsStr::new(v);
    let cases: Vec<(Vec<&OsStr>, i32, &str)> = vec![
        // A text value: an argument error naming the flag.
        (
            vec![
                s("sample"),
                s("--model"),
                s("m"),
                s("--prompt"),
                bad,
                s("--seed"),
                s("0"),
                s("--out"),
                dir.as_os_str(),
            ],
            2,
            "for '--prompt <TEXT>': not valid UTF-8",
        ),
        // A command or a flag.
        (vec![bad], 2, "error:"),
        (vec![s("score"), bad], 2, "error:"),
        // A path may be any OsString: this folder does not exist, which is the error.
        (
            vec![s("score"), s("--reward"), s("compress"), s("--images"), bad],
            1,
            "cannot read image folder",
        ),
    ];
    for (args, code, needle) in cases {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(
            err.contains(needle) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

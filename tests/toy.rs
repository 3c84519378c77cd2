//! End-to-end tests of `ril data shapes` and `ril judge`: the written folder is the toy world's
//! items in the imagefolder layout, the same flags write the same bytes, bad flags and an
//! occupied --out are refused naming the flag, and `ril judge eval` reads the committed judge;
//! the committed toy pipeline samples deterministically and the judge reads its recorded
//! caption following.

use std::path::Path;
use std::process::{Command, Output};

use ril_testkit::scratch;
use toy_shapes::folder::ImageFolder;
use toy_shapes::{Objects, Spec, Split};

fn ril(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ril"))
        .args(args)
        .output()
        .expect("run ril")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn shapes(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().unwrap();
    let mut args = vec![
        "data", "shapes", "--count", "6", "--seed", "5", "--out", out,
    ];
    args.extend_from_slice(extra);
    ril(&args)
}

#[test]
fn data_shapes_writes_the_toy_world_as_an_imagefolder() {
    let dir = scratch("toy-shapes");
    let out = dir.join("heldout");
    let o = shapes(&out, &["--split", "heldout", "--objects", "1"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("6 images"), "{}", text(&o));
    let folder = ImageFolder::open(&out).unwrap();
    let spec = Spec::new(5, Split::Heldout).objects(Objects::One);
    assert_eq!(folder.items.len(), 6);
    for (i, item) in folder.items.iter().enumerate() {
        let s = spec.sample(i as u64);
        assert_eq!(item.caption, s.caption);
        assert_eq!(item.labels.as_ref(), Some(&s.labels));
        assert_eq!(item.load_image().unwrap(), s.image);
    }
    // The same flags write the same bytes.
    let again = dir.join("again");
    assert!(
        shapes(&again, &["--split", "heldout", "--objects", "1"])
            .status
            .success()
    );
    for name in ["metadata.jsonl", "000000.png", "000005.png"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name}"
        );
    }
    // Only the two data sets are left: no temporary folder.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

#[test]
fn data_shapes_refuses_an_occupied_out_and_bad_flags() {
    let dir = scratch("toy-shapes-refuse");
    let out = dir.join("taken");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "keep").unwrap();
    let o = shapes(&out, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = text(&o);
    assert!(err.contains("--out") && err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("mine.txt")).unwrap(),
        "keep"
    );
    let fresh = dir.join("fresh");
    let fresh = fresh.to_str().unwrap();
    for (args, flag) in [
        (vec!["--count", "0"], "--count"),
        (vec!["--count", "2", "--split", "test"], "--split"),
        (vec!["--count", "2", "--objects", "3"], "--objects"),
    ] {
        let mut all = vec!["data", "shapes", "--out", fresh];
        all.extend(args);
        let o = ril(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}: {}", text(&o));
        assert!(text(&o).contains(flag), "{all:?}: {}", text(&o));
    }
    assert!(!Path::new(fresh).exists());
}

#[test]
fn judge_eval_reads_the_committed_judge_on_held_out_and_on_a_folder() {
    let judge = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/toy/judge");
    let judge = judge.to_str().unwrap();
    let o = ril(&["judge", "eval", "--judge", judge, "--count", "64"]);
    assert!(o.status.success(), "{}", text(&o));
    for attr in [
        "shape",
        "colour",
        "size",
        "position",
        "background",
        "chance",
    ] {
        assert!(text(&o).contains(attr), "{}", text(&o));
    }
    // A mixed folder: two-object lines are skipped and counted.
    let dir = scratch("toy-judge-eval");
    let out = dir.join("mixed");
    assert!(shapes(&out, &[]).status.success());
    let o = ril(&[
        "judge",
        "eval",
        "--judge",
        judge,
        "--images",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("with two objects skipped"),
        "{}",
        text(&o)
    );
    // A missing judge names the flag and the file.
    let o = ril(&["judge", "eval", "--judge", dir.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("--judge") && text(&o).contains("config.json"),
        "{}",
        text(&o)
    );
}

#[test]
fn judge_train_refuses_a_bad_config_naming_the_file() {
    let dir = scratch("toy-judge-config");
    let config = dir.join("judge.toml");
    std::fs::write(&config, "seed = 0\nsteps = 0\n").unwrap();
    let out = dir.join("out");
    let o = ril(&[
        "judge",
        "train",
        "--config",
        config.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o);
    assert!(
        err.contains("--config") && err.contains("judge.toml"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn help_lists_data_and_judge_and_documents_their_flags() {
    let o = ril(&["--help"]);
    assert!(o.status.success());
    let help = String::from_utf8_lossy(&o.stdout);
    for c in ["data", "judge"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(c)),
            "{c}: {help}"
        );
    }
    for (args, flags) in [
        (
            &["data", "shapes", "--help"][..],
            &[
                "--count",
                "--seed",
                "--out",
                "--split",
                "--objects",
                "--size",
            ][..],
        ),
        (&["judge", "train", "--help"], &["--config", "--out"]),
        (
            &["judge", "eval", "--help"],
            &["--judge", "--images", "--seed", "--count"],
        ),
    ] {
        let o = ril(args);
        assert!(o.status.success(), "{args:?}");
        let help = String::from_utf8_lossy(&o.stdout);
        for f in flags {
            assert!(help.contains(f), "{args:?} lacks {f}: {help}");
        }
    }
}

/// The committed toy base model (data/toy/pipeline, written by `ril pretrain --config
/// configs/toy/pretrain.toml`).
fn toy_pipeline() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/toy/pipeline")
        .to_str()
        .unwrap()
        .to_string()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/toy")
        .join(name)
}

/// The captions of the sampling test: two held-out-style captions the README's grid also shows.
const CAPTIONS: [&str; 2] = [
    "a large red circle in the centre, on a blue background",
    "a small yellow triangle on the left, on a black background",
];

fn sample_toy(out: &Path) -> Output {
    let mut args = vec!["sample", "--model"];
    let model = toy_pipeline();
    args.push(&model);
    for c in &CAPTIONS {
        args.extend(["--prompt", c]);
    }
    args.extend([
        "--height",
        "64",
        "--width",
        "64",
        "--steps",
        "20",
        "--guidance",
        "7.5",
        "--seed",
        "0",
        "--out",
    ]);
    args.push(out.to_str().unwrap());
    ril(&args)
}

#[test]
fn the_committed_toy_pipeline_loads_and_samples_deterministically() {
    let dir = scratch("toy-pipeline-sample");
    let (a, b) = (dir.join("a"), dir.join("b"));
    for out in [&a, &b] {
        let o = sample_toy(out);
        assert!(o.status.success(), "{}", text(&o));
    }
    for i in 0..CAPTIONS.len() {
        let name = format!("{i:03}.png");
        let first = std::fs::read(a.join(&name)).unwrap();
        assert_eq!(first, std::fs::read(b.join(&name)).unwrap(), "{name}");
        // Against the images this build wrote when the pipeline was committed
        // (tests/fixtures/toy/README.md): equal up to 2/255, the parity bound, since another
        // CPU's kernels may round the f32 sums of 20 guided DDIM steps differently.
        let got = image::load_from_memory(&first).unwrap().to_rgb8();
        let want = image::open(fixture(&format!("sample-{name}")))
            .unwrap()
            .to_rgb8();
        assert_eq!(got.dimensions(), (64, 64));
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap();
        assert!(worst <= 2, "{name}: {worst}/255 from the recorded image");
    }
}

#[test]
fn the_judge_reads_the_recorded_caption_following_of_the_committed_pipeline() {
    // A property of the committed weights: 48 held-out captions, guidance 7.5, 20 DDIM steps,
    // judged by the committed judge, give the counts recorded in tests/fixtures/toy/follow-48.json.
    let dir = scratch("toy-pipeline-follow");
    let json = dir.join("follow.json");
    let judge = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/toy/judge");
    let o = ril(&[
        "judge",
        "pipeline",
        "--model",
        &toy_pipeline(),
        "--judge",
        judge.to_str().unwrap(),
        "--count",
        "48",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("follow-48.json")).unwrap()).unwrap();
    for column in ["generated", "real", "reconstructed"] {
        for attr in ["shape", "colour", "size", "position", "background"] {
            let g = got[column]["correct"][attr].as_i64().unwrap();
            let w = want[column]["correct"][attr].as_i64().unwrap();
            // The images may differ by a rounding step on another CPU (see the sampling test);
            // a verdict at the judge's boundary can then flip, so one image either way.
            assert!(
                (g - w).abs() <= 1,
                "{column} {attr}: {g} of 48 right, {w} recorded"
            );
        }
    }
    // And the recorded counts are of a model that follows its captions' colour, size and
    // background (at least 90 % right; chance is 25-52 % here). Shape (65 %) and position (at
    // chance) it does not follow yet: data/toy/pipeline/README.md.
    for attr in ["colour", "size", "background"] {
        let w = want["generated"]["correct"][attr].as_i64().unwrap();
        assert!(w * 100 >= 90 * 48, "{attr}: {w} of 48 recorded");
    }
}

//! `ril fid` on image folders: a distance is computed, the real folder's statistics are cached
//! in the cache folder (never in the image folder), an unwritable cache only warns, and bad
//! folders fail with a clear message; `ril fid-stats` files stand in for either folder with
//! the same distance, and malformed ones are refused naming the file.

mod common;

use common::{ril, ril_env};

use std::path::{Path, PathBuf};

fn folder(root: &Path, name: &str, n: usize, seed: u32, size: u32) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = seed;
    for i in 0..n {
        let img = image::RgbImage::from_fn(size, size, |x, y| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            image::Rgb([
                (state >> 24) as u8,
                (x * 7) as u8,
                (y * 5 + i as u32 * 40) as u8,
            ])
        });
        img.save(dir.join(format!("{i:02}.png"))).unwrap();
    }
    dir
}

fn fid_value(stdout: &str) -> f64 {
    stdout
        .trim()
        .strip_prefix("FID: ")
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn fid_between_folders_caches_reference_statistics_and_refuses_bad_folders() {
    let root = std::env::temp_dir().join(format!("ril-fid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (a, b) = (folder(&root, "a", 4, 1, 32), folder(&root, "b", 3, 99, 32));
    // (A set against itself is at distance 0: the library test checks it on small statistics;
    // here every FID costs two 2048x2048 eigen-decompositions, about 10 s each.)
    let cache = root.join("cache");
    let args = [
        "fid",
        "--real",
        a.to_str().unwrap(),
        "--fake",
        b.to_str().unwrap(),
        "--hash-weights",
    ];
    let (ok, out, err) = ril_env(&args, &[("RIL_CACHE_DIR", &cache)]);
    assert!(ok, "{err}");
    let fid = fid_value(&out);
    assert!(fid > 0.0, "{out}");
    let cached: Vec<PathBuf> = std::fs::read_dir(cache.join("fid-stats"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        cached.len(),
        2,
        "one statistics file per folder: {cached:?}"
    );
    let sources: Vec<String> = cached
        .iter()
        .map(|p| ril_metrics::fid::Stats::load(p).unwrap().1)
        .inspect(|meta| assert_eq!(meta["weights"], "hash-weights"))
        .map(|meta| meta["source"].clone())
        .collect();
    assert!(
        sources.contains(&std::fs::canonicalize(&a).unwrap().display().to_string()),
        "{sources:?}"
    );
    let untouched = |d: &Path| std::fs::read_dir(d).unwrap().count();
    assert_eq!(untouched(&a), 4, "nothing is written into the image folder");
    // A cache that cannot be written (its folder would be under a file) only warns, and the
    // distance is the same.
    let blocked = root.join("a-file");
    std::fs::write(&blocked, b"").unwrap();
    let (ok, out2, err) = ril_env(&args, &[("RIL_CACHE_DIR", &blocked.join("sub"))]);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning") && err.contains("not cached"),
        "{err}"
    );
    assert_eq!(fid_value(&out2), fid, "{out2}");
    // Bad input.
    let one = folder(&root, "one", 1, 5, 32);
    let (ok, _, err) = ril(&[
        "fid",
        "--real",
        one.to_str().unwrap(),
        "--fake",
        b.to_str().unwrap(),
        "--hash-weights",
    ]);
    assert!(!ok && err.contains("at least two"), "{err}");
    let mixed = folder(&root, "mixed", 2, 5, 32);
    image::RgbImage::new(16, 16)
        .save(mixed.join("zz.png"))
        .unwrap();
    let (ok, _, err) = ril(&[
        "fid",
        "--real",
        mixed.to_str().unwrap(),
        "--fake",
        b.to_str().unwrap(),
        "--hash-weights",
    ]);
    assert!(!ok && err.contains("different sizes"), "{err}");
    let corrupt = folder(&root, "corrupt", 2, 5, 32);
    std::fs::write(corrupt.join("bad.png"), b"nope").unwrap();
    let (ok, _, err) = ril(&[
        "fid",
        "--real",
        corrupt.to_str().unwrap(),
        "--fake",
        b.to_str().unwrap(),
        "--hash-weights",
    ]);
    assert!(!ok && err.contains("bad.png"), "{err}");
    let (ok, _, err) = ril(&[
        "fid",
        "--real",
        a.to_str().unwrap(),
        "--fake",
        b.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("--weights"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn statistics_files_stand_in_for_folders_with_the_same_distance() {
    let root = ril_testkit::scratch("fid-stats-cli");
    let (a, b) = (folder(&root, "a", 4, 1, 32), folder(&root, "b", 3, 99, 32));
    let cache = root.join("cache");
    let env = [("RIL_CACHE_DIR", cache.as_path())];
    let run = |args: &[&str]| {
        let (ok, out, err) = ril_env(args, &env);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (a_npz, b_npz) = (root.join("a.npz"), root.join("b.npz"));
    for (dir, npz) in [(&a, &a_npz), (&b, &b_npz)] {
        let out = run(&[
            "fid-stats",
            "--images",
            &s(dir),
            "--out",
            &s(npz),
            "--hash-weights",
        ]);
        assert!(out.contains("mu [2048], sigma [2048, 2048]"), "{out}");
    }
    // The saved statistics are the folder's, bit for bit (float64 both ways), so the distance
    // printed to 6 decimals is the same string. (Two different folders rather than a folder
    // against itself: that distance is ~0 however it is computed and would hide a mix-up.)
    let folders = run(&["fid", "--real", &s(&a), "--fake", &s(&b), "--hash-weights"]);
    let mixed = run(&[
        "fid",
        "--real",
        &s(&a_npz),
        "--fake",
        &s(&b),
        "--hash-weights",
    ]);
    // Two statistics files need no network at all.
    let files = run(&["fid", "--real", &s(&a_npz), "--fake", &s(&b_npz)]);
    assert!(fid_value(&folders) > 0.0, "{folders}");
    assert_eq!(mixed, folders);
    assert_eq!(files, folders);
    // Refused: a malformed statistics file (named), a folder without weights, --out not .npz.
    let bad = root.join("bad.npz");
    std::fs::write(&bad, b"not a zip").unwrap();
    let (ok, _, err) = ril(&["fid", "--real", &s(&bad), "--fake", &s(&b_npz)]);
    assert!(
        !ok && err.contains(&s(&bad)) && err.contains(".npz archive"),
        "{err}"
    );
    let (ok, _, err) = ril(&["fid", "--real", &s(&a_npz), "--fake", &s(&b)]);
    assert!(
        !ok && err.contains("--fake") && err.contains("--hash-weights"),
        "{err}"
    );
    let (ok, _, err) = ril(&[
        "fid-stats",
        "--images",
        &s(&a),
        "--out",
        &s(&root.join("a.stats")),
        "--hash-weights",
    ]);
    assert!(
        !ok && err.contains("--out") && err.contains(".npz"),
        "{err}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

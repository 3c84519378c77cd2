//! FID parity with pytorch-fid 0.3.0 (tools/parity/make_fid_fixtures.py): InceptionV3 with
//! deterministic hash weights generated identically in Python and Rust (the 95 MB network
//! cannot be narrowed or committed), pool features of resized and 299x299 inputs, and the
//! Fréchet distance on fixed statistics (regular and singular covariances).

use std::path::{Path, PathBuf};

use ril_metrics::fid::{Stats, features, frechet_distance, hash_inception, hash_values};
use ril_testkit::assert_close;
use sd_model::load::SafetensorsFile;

// The backend the tests run on: burn-flex, or LibTorch on the CPU with `--features tch`.
#[cfg(not(feature = "tch"))]
type B = sd_model::backend::Cpu;
#[cfg(feature = "tch")]
type B = sd_model::backend::Tch;

fn fixture() -> SafetensorsFile {
    let p: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fid.safetensors");
    SafetensorsFile::open(&p).unwrap()
}

#[test]
fn hash_weights_equal_the_scripts() {
    let c = hash_values("Conv2d_1a_3x3.conv.weight", &[32, 3, 3, 3]).unwrap();
    for (a, e) in c
        .iter()
        .zip([-0.15198445f32, 0.12142248, -0.30463365, 0.34881026])
    {
        assert!((a - e).abs() <= 1e-7, "{:?}", &c[..4]);
    }
    let v = hash_values("Conv2d_1a_3x3.bn.running_var", &[32]).unwrap();
    assert!(
        (v[0] - 1.0251619).abs() <= 1e-7 && (v[1] - 0.92718756).abs() <= 1e-7,
        "{:?}",
        &v[..2]
    );
    assert!(hash_values("Mixed_5b.unknown.weight", &[3]).is_err());
}

#[test]
fn inception_features_match_pytorch_fid() {
    let r = fixture();
    let device = Default::default();
    let model = hash_inception::<B>(&device).unwrap();
    let images = r.tensor::<B, 4>("images", &device).unwrap();
    let f = features(&model, images, 2);
    // 94 convolutions deep, f32: relative 1e-4 with a floor of 1e-5 of the largest feature
    // (15 % of features are exactly 0 after the last ReLUs, where only the floor applies).
    assert_close("features", &f, &r.read_f32("features").unwrap(), 1e-4, 1e-5);
}

#[test]
fn inception_features_of_a_299_input_match_without_resizing() {
    let r = fixture();
    let device = Default::default();
    let data = ril_testkit::generate("uniform01", 602, 3 * 299 * 299, 1.0);
    assert_eq!(data[..16], r.read_f32("images_sq_head").unwrap()[..]);
    let x = burn::tensor::Tensor::<B, 4>::from_data(
        burn::tensor::TensorData::new(data, [1, 3, 299, 299]),
        &device,
    );
    let model = hash_inception::<B>(&device).unwrap();
    assert_close(
        "features_sq",
        &features(&model, x, 1),
        &r.read_f32("features_sq").unwrap(),
        1e-4,
        1e-5,
    );
}

#[test]
fn frechet_distance_matches_pytorch_fid() {
    // The statistics are f64 in the fixture: read them at full precision.
    let f64s = |name: &str| -> Vec<f64> {
        let raw = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fid.safetensors"),
        )
        .unwrap();
        let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let stats64 = |m: &str, s: &str| {
        let mu = f64s(m);
        let d = mu.len();
        Stats {
            mu: nalgebra::DVector::from_vec(mu),
            sigma: nalgebra::DMatrix::from_row_slice(d, d, &f64s(s)),
        }
    };
    let a = frechet_distance(&stats64("mu1", "sigma1"), &stats64("mu2", "sigma2")).unwrap();
    let fid_a = f64s("fid_a")[0];
    // Both in f64; scipy's Schur-based sqrtm and the eigen-decomposition agree to ~1e-12.
    assert!((a - fid_a).abs() <= 1e-9 * fid_a, "{a} vs {fid_a}");
    // Singular covariances (20 and 25 samples of 64 features): scipy's sqrtm of the singular
    // product is accurate to ~1e-8 only (it returns a complex result, real part kept).
    let b = frechet_distance(&stats64("mu3", "sigma3"), &stats64("mu4", "sigma4")).unwrap();
    let fid_b = f64s("fid_b")[0];
    assert!((b - fid_b).abs() <= 1e-7 * fid_b, "{b} vs {fid_b}");
    // Statistics from features: a set against itself is at distance 0.
    let feats: Vec<f32> = (0..40 * 8).map(|i| ((i * 37 % 101) as f32).sin()).collect();
    let s = Stats::from_features(&feats, 8).unwrap();
    assert!(frechet_distance(&s, &s).unwrap().abs() < 1e-9);
    assert!(
        Stats::from_features(&feats[..8], 8)
            .unwrap_err()
            .to_string()
            .contains("at least two images")
    );
}

#[test]
fn statistics_files_round_trip_exactly_and_malformed_ones_are_refused_naming_file_and_array() {
    use ril_metrics::fid::{FEATURES, check_weights};
    use ril_metrics::npz::npz_f64;
    let dir = ril_testkit::scratch("fid-npz");
    let d = FEATURES;
    // A symmetric sigma whose entries all differ, so a transposed or shifted read would show.
    let mu: Vec<f64> = (0..d).map(|i| (i as f64 * 0.37).sin()).collect();
    let sigma = nalgebra::DMatrix::from_fn(d, d, |r, c| {
        let (a, b) = (r.min(c) as f64, r.max(c) as f64);
        (a * 1e-3 + b * 1.7e-6).cos() / (1.0 + a)
    });
    let stats = Stats {
        mu: nalgebra::DVector::from_vec(mu.clone()),
        sigma: sigma.clone(),
    };
    let path = dir.join("ref.npz");
    stats.save_npz(&path, None).unwrap();
    // float64 in, float64 out: bit for bit.
    let (back, recorded) = Stats::load_npz(&path).unwrap();
    assert_eq!(back, stats);
    assert_eq!(recorded.as_deref(), Some("hash-weights"));
    // Statistics of the hash weights are refused against a weights file, and vice versa.
    let e = check_weights(&path, recorded.as_deref(), "pt_inception.pth:95628359").unwrap_err();
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    check_weights(&path, recorded.as_deref(), "hash-weights").unwrap();
    check_weights(&path, None, "pt_inception.pth:95628359").unwrap();
    // Malformed files: each error names the file, and the array where there is one.
    let rows: Vec<f64> = (0..d * d).map(|i| sigma[(i / d, i % d)]).collect();
    let mut nan = rows.clone();
    nan[5 * d + 7] = f64::NAN;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not-zip.npz", b"mu sigma".to_vec(), "not an .npz archive"),
        (
            "no-sigma.npz",
            npz_f64(&[("mu", &[d], &mu)], "").unwrap(),
            "no array `sigma`",
        ),
        (
            "dims-768.npz",
            npz_f64(&[("mu", &[768], &mu[..768]), ("sigma", &[d, d], &rows)], "").unwrap(),
            "array `mu`: shape [768], expected [2048]",
        ),
        (
            "sigma-flat.npz",
            npz_f64(&[("mu", &[d], &mu), ("sigma", &[d * d], &rows)], "").unwrap(),
            "array `sigma`: shape [4194304], expected [2048, 2048]",
        ),
        (
            "nan.npz",
            npz_f64(&[("mu", &[d], &mu), ("sigma", &[d, d], &nan)], "").unwrap(),
            "array `sigma` holds a non-finite value (NaN) at [5, 7]",
        ),
    ];
    for (name, bytes, expect) in cases {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        let e = format!("{:#}", Stats::load_npz(&p).unwrap_err());
        assert!(
            e.contains(&p.display().to_string()) && e.contains(expect),
            "{e}"
        );
    }
    let e = format!(
        "{:#}",
        Stats::load_npz(&dir.join("absent.npz")).unwrap_err()
    );
    assert!(e.contains("absent.npz"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

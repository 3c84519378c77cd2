//! The reward models' presets match the real checkpoints' key sets and shapes
//! (data/manifests), and bad inputs fail with clear errors: a pickle that calls
//! anything but tensor rebuilding, weights of another architecture, folders that hold no images
//! or images of mixed sizes, and fewer prompts than images.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use common::{B, fixture, mlp_path};
use rewards::Reward;
use rewards::aesthetic::{Aesthetic, AestheticMlp};
use rewards::clip_vision::{ClipVisionConfig, vision_key};
use rewards::hps::Hps;
use rewards::images::{image_files, load_images};
use rewards::openclip::{OpenClipConfig, openclip_key};
use sd_model::load::expected_params;

fn manifest(name: &str) -> BTreeMap<String, Vec<usize>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/manifests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not a key -> shape map: {e}", path.display()))
}

fn assert_same(
    name: &str,
    model: BTreeMap<String, Vec<usize>>,
    real: BTreeMap<String, Vec<usize>>,
) {
    let missing: Vec<_> = real.keys().filter(|k| !model.contains_key(*k)).collect();
    let extra: Vec<_> = model.keys().filter(|k| !real.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: missing {missing:?}, extra {extra:?}"
    );
    for (k, s) in &real {
        assert_eq!(&model[k], s, "{name}: {k}");
    }
}

fn shapes<M: burn::module::Module<B>>(m: &M) -> BTreeMap<String, Vec<usize>> {
    expected_params(m)
        .into_iter()
        .map(|(k, p)| (k, p.torch_shape))
        .collect()
}

#[test]
fn vit_l14_preset_matches_openai_clip_vit_large_patch14() {
    let model = ClipVisionConfig::vit_l14()
        .init::<B>(&Default::default())
        .unwrap();
    // The vision half of the full CLIPModel checkpoint (text tower, logit scale dropped as when
    // loading).
    let real = manifest("hfclip_real.json")
        .into_iter()
        .filter(|(k, _)| vision_key(k).is_some())
        .collect();
    assert_same("ViT-L/14", shapes(&model), real);
}

#[test]
fn vit_h14_preset_matches_open_clip_vit_h_14() {
    let model = OpenClipConfig::vit_h14().init::<B>(&Default::default());
    let real = manifest("openclip_real.json")
        .into_iter()
        .filter(|(k, _)| openclip_key(k).is_some())
        .collect();
    assert_same("ViT-H-14", shapes(&model), real);
}

#[test]
fn a_pickle_that_calls_a_function_is_refused_and_nothing_runs() {
    let _ = std::fs::remove_file("/tmp/ril-pwned");
    let err = AestheticMlp::<B>::load(&fixture("malicious.pt"), &Default::default()).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("malicious.pt") && msg.contains("system"),
        "{msg}"
    );
    assert!(
        !Path::new("/tmp/ril-pwned").exists(),
        "the pickle was executed"
    );
}

#[test]
fn weights_of_another_architecture_are_refused() {
    let device = Default::default();
    // open_clip weights where the LAION MLP is expected.
    let err = AestheticMlp::<B>::load(&fixture("openclip-tiny.safetensors"), &device).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("missing keys: `layers.0.bias`") && msg.contains("unexpected keys"),
        "{msg}"
    );
    // The real MLP where a CLIP folder is expected.
    let err = Aesthetic::<B>::load(&mlp_path(), &mlp_path(), &device)
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("missing keys"), "{err:#}");
}

#[test]
fn image_folders_fail_clearly() {
    let dir = std::env::temp_dir().join(format!("ril-images-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let err = image_files(&dir).unwrap_err().to_string();
    assert!(err.contains("is empty"), "{err}");
    // Files without an image extension are not images (pytorch-fid's rule): an imagefolder's
    // metadata.jsonl beside the images is left alone.
    std::fs::write(dir.join("metadata.jsonl"), b"{}\n").unwrap();
    let err = image_files(&dir).unwrap_err().to_string();
    assert!(err.contains("is empty") && err.contains(".png"), "{err}");
    std::fs::write(dir.join("a.png"), b"not a png").unwrap();
    let files = image_files(&dir).unwrap();
    assert_eq!(files, [dir.join("a.png")]);
    let err = format!(
        "{:#}",
        load_images::<B>(&files, &Default::default()).unwrap_err()
    );
    assert!(
        err.contains("a.png") && err.contains("not a readable image"),
        "{err}"
    );
    image::RgbImage::new(8, 8).save(dir.join("a.png")).unwrap();
    image::RgbImage::new(8, 16).save(dir.join("b.png")).unwrap();
    let files = image_files(&dir).unwrap();
    let err = load_images::<B>(&files, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("different sizes") && err.contains("b.png"),
        "{err}"
    );
    std::fs::remove_file(dir.join("b.png")).unwrap();
    let img = load_images::<B>(&image_files(&dir).unwrap(), &Default::default()).unwrap();
    assert_eq!(img.dims(), [1, 3, 8, 8]);
    assert!(
        common::values(img).iter().all(|&v| v == -1.0),
        "black is -1"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hps_needs_one_prompt_per_image() {
    let device = Default::default();
    let hps = Hps::<B>::load(
        &OpenClipConfig::tiny(),
        &fixture("openclip-tiny.safetensors"),
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../sd-model/tests/fixtures/tiny-sd/tokenizer"),
        &device,
    )
    .unwrap();
    let images = Tensor::<B, 4>::zeros([2, 3, 64, 64], &device);
    let err = hps
        .score(images.clone(), &["one prompt".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 prompts for 2 images"), "{err}");
    let s = hps
        .score(images, &["a cat".into(), "a dog".into()])
        .unwrap();
    let v = common::values(s);
    // Cosines of unit vectors.
    assert!(v.iter().all(|x| x.abs() <= 1.0 + 1e-6), "{v:?}");
}

#[test]
fn empty_huge_and_elongated_images_are_refused_by_file_before_decoding() {
    let dir = ril_testkit::scratch("image-limits");
    let device = Default::default();
    // 16:1 is the limit (CLIP's resize keeps the ratio): 4x64 loads, 4x65 is refused.
    let ok = dir.join("ok.png");
    image::RgbImage::new(4, 64).save(&ok).unwrap();
    assert_eq!(
        load_images::<B>(&[ok], &device).unwrap().dims(),
        [1, 3, 64, 4]
    );
    let long = dir.join("long.png");
    image::RgbImage::new(65, 4).save(&long).unwrap();
    let err = format!("{:#}", load_images::<B>(&[long], &device).unwrap_err());
    assert!(err.contains("long.png") && err.contains("16:1"), "{err}");
    // A PNG header claiming 100000 x 100000 pixels (no pixel data): refused from the header
    // alone, without the 30 GB it would decode to.
    let huge = dir.join("huge.png");
    ril_testkit::png_claiming(&huge, 100_000, 100_000);
    let err = format!("{:#}", load_images::<B>(&[huge], &device).unwrap_err());
    assert!(
        err.contains("huge.png") && err.contains("8192x8192"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

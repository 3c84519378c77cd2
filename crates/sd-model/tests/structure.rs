//! The sd15 presets build modules whose parameter names and shapes are exactly those of the real
//! SD 1.5 checkpoints (data/manifests), so a real download loads without being here.

mod common;

use std::collections::BTreeMap;

use common::{B, data};
use sd_model::load::expected_params;
use sd_model::{ClipTextConfig, UNetConfig, VaeConfig};

fn manifest(name: &str) -> BTreeMap<String, Vec<usize>> {
    let path = data(&format!("manifests/{name}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("manifest is a key -> shape map")
}

fn model_map<M: burn::module::Module<B>>(m: &M) -> BTreeMap<String, Vec<usize>> {
    expected_params(m)
        .into_iter()
        .map(|(k, p)| (k, p.torch_shape))
        .collect()
}

fn assert_same(
    name: &str,
    model: BTreeMap<String, Vec<usize>>,
    real: BTreeMap<String, Vec<usize>>,
) {
    let missing: Vec<_> = real.keys().filter(|k| !model.contains_key(*k)).collect();
    let extra: Vec<_> = model.keys().filter(|k| !real.contains_key(*k)).collect();
    assert!(
        missing.is_empty(),
        "{name}: keys of the real checkpoint the model lacks: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "{name}: model keys the real checkpoint lacks: {extra:?}"
    );
    for (k, shape) in &real {
        // The transformers' 1x1 convolutions (proj_in, proj_out) are LoRA-capable Linear layers
        // over channels here; the loader fills them from the checkpoint's [o, i, 1, 1].
        if (k.ends_with("proj_in.weight") || k.ends_with("proj_out.weight")) && shape.len() == 4 {
            assert_eq!(model[k], shape[..2], "{name}: shape of {k}");
            assert_eq!(shape[2..], [1, 1], "{name}: {k} is a 1x1 convolution");
            continue;
        }
        assert_eq!(&model[k], shape, "{name}: shape of {k}");
    }
}

#[test]
fn sd15_unet_matches_the_real_checkpoint() {
    let device = Default::default();
    let unet = UNetConfig::sd15().init::<B>(&device).unwrap();
    let real = manifest("unet_real.json");
    assert_eq!(real.len(), 686);
    assert_same("unet", model_map(&unet), real);
}

#[test]
fn sd15_vae_matches_the_real_checkpoint() {
    let device = Default::default();
    let vae = VaeConfig::sd15().init::<B>(&device).unwrap();
    let real = manifest("vae_real.json");
    assert_eq!(real.len(), 248);
    assert_same("vae", model_map(&vae), real);
}

#[test]
fn sd15_text_encoder_matches_the_real_checkpoint() {
    let device = Default::default();
    let clip = ClipTextConfig::sd15().init::<B>(&device).unwrap();
    // The manifest omits the `text_model.` prefix (and the int64 position_ids buffer).
    assert_same(
        "text_encoder",
        model_map(&clip),
        manifest("clip_text_real.json"),
    );
}

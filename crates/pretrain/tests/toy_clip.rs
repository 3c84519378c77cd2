//! The toy CLIP training on tiny towers: the contrastive loss falls, the same config trains the
//! same weights, the files of each layout load through the reader that uses them (the HPS
//! reward's open_clip loader, the CLIP score's CLIPModel loader) and give the trained model's
//! scores, and bad configs are refused by field.

use std::path::PathBuf;

use burn::prelude::*;
use pretrain::toy_clip::{
    ATTRIBUTES, ClipShape, ClipTrainConfig, Layout, Towers, Trained, changed, evaluate, save,
    token_ids, train,
};
use rewards::Reward;
use rewards::hps::Hps;
use rewards::openclip::OpenClipConfig;
use ril_metrics::clip_score::ClipScorer;
use ril_testkit::scratch;
use toy_shapes::{Objects, Spec, Split};

type Cpu = sd_model::backend::Cpu;
type CpuAutodiff = sd_model::backend::CpuAutodiff;

fn tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/toy/pipeline/tokenizer")
}

fn tiny(layout: Layout, steps: usize) -> ClipTrainConfig {
    ClipTrainConfig {
        layout,
        seed: 5,
        steps,
        batch_size: 16,
        lr: 2e-3,
        weight_decay: 1e-4,
        temperature: 0.07,
        tokenizer: tokenizer(),
        eval_seed: 0,
        eval_count: 16,
        model: ClipShape {
            embed_dim: 16,
            image_size: 64,
            patch_size: 16,
            vision_width: 16,
            vision_layers: 1,
            vision_heads: 2,
            text_width: 16,
            text_layers: 1,
            text_heads: 2,
            mlp_ratio: 2,
        },
    }
}

#[test]
fn training_lowers_the_contrastive_loss_and_repeats_bit_for_bit() {
    let device = Default::default();
    let config = tiny(Layout::OpenClip, 150);
    let a = train::<CpuAutodiff>(&config, &device, |_, _| {}).unwrap();
    let first: f32 = a.losses[..5].iter().sum::<f32>() / 5.0;
    let last: f32 = a.losses[140..].iter().sum::<f32>() / 10.0;
    // Uniform guessing over a batch of 16 costs ln 16 = 2.77; telling the 8 background colours
    // apart alone would take the loss to about ln 2 (two captions per background in a batch).
    // Below ln 16 - 1 asks for more than noise without asking a 1-layer model to learn every
    // word in 150 steps.
    assert!(
        first > 16f32.ln() - 0.3 && last < 16f32.ln() - 1.0,
        "first {first}, last {last}"
    );
    let b = train::<CpuAutodiff>(&config, &device, |_, _| {}).unwrap();
    assert_eq!(a.losses, b.losses, "the same config trained differently");
}

/// Items 0..8 of the single-object held-out stream: images in [-1, 1] and captions.
fn heldout(device: &burn::tensor::Device<Cpu>) -> (Tensor<Cpu, 4>, Vec<String>) {
    let spec = Spec::new(0, Split::Heldout).objects(Objects::One);
    let samples: Vec<_> = (0..8).map(|i| spec.sample(i)).collect();
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let x = toy_shapes::judge::images_to_tensor::<Cpu>(&images, 64, device) * 2.0 - 1.0;
    (x, samples.into_iter().map(|s| s.caption).collect())
}

fn values(t: Tensor<Cpu, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

#[test]
fn the_open_clip_files_load_as_an_hps_reward_that_scores_as_the_trained_model() {
    let device = Default::default();
    let config = tiny(Layout::OpenClip, 3);
    let run = train::<CpuAutodiff>(&config, &device, |_, _| {}).unwrap();
    let Trained::OpenClip(model) = &run.model else {
        panic!("open_clip layout trained another model")
    };
    let dir = scratch("toy-clip-open");
    let out = dir.join("hps");
    save(&run.model, &config, &out, &[("train.toml", b"x".to_vec())]).unwrap();
    let model_config = OpenClipConfig::from_file(&out.join("open_clip_config.json")).unwrap();
    assert_eq!(model_config, config.open_clip(612));
    let hps = Hps::<Cpu>::load(
        &model_config,
        &out.join("open_clip_model.safetensors"),
        &out.join("tokenizer"),
        &device,
    )
    .unwrap();
    let (x, captions) = heldout(&device);
    let tok = config.load_tokenizer().unwrap();
    let mine = (model.image_features(x.clone())
        * model.text_features(token_ids::<Cpu>(&tok, &captions, &device).unwrap()))
    .sum_dim(1)
    .reshape([8]);
    // The files hold the f32 weights as they are: the same arithmetic gives the same scores.
    let loaded = values(hps.score(x, &captions).unwrap());
    assert_eq!(values(mine), loaded);
    let h = evaluate(&hps.model, &tok, 0, 8, &device).unwrap();
    // evaluate() reads its scores off the diagonal of an image-by-text matmul, the reward sums
    // an elementwise product: the same dot products of unit vectors, summed in another order (and
    // the matmul's blocking depends on the CPU's SIMD width; CI saw 3e-8 apart). 1e-6 is about 16
    // ulps at 1, far below any score difference the evaluation reports.
    assert_eq!(h.first_scores.len(), loaded.len());
    for (i, (e, l)) in h.first_scores.iter().zip(&loaded).enumerate() {
        assert!((e - l).abs() <= 1e-6, "score {i}: evaluate {e}, reward {l}");
    }
    assert_eq!(h.attribute_preferred.len(), ATTRIBUTES.len());
    // An occupied folder is not replaced.
    assert!(save(&run.model, &config, &out, &[]).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_transformers_folder_loads_as_the_clip_score_model_and_scores_as_the_trained_model() {
    let device = Default::default();
    let config = tiny(Layout::Transformers, 3);
    let run = train::<CpuAutodiff>(&config, &device, |_, _| {}).unwrap();
    let Trained::Transformers(model) = &run.model else {
        panic!("transformers layout trained another model")
    };
    let dir = scratch("toy-clip-hf");
    let out = dir.join("clip");
    save(&run.model, &config, &out, &[]).unwrap();
    let scorer = ClipScorer::<Cpu>::load(&out, &device).unwrap();
    let spec = Spec::new(0, Split::Heldout).objects(Objects::One);
    let samples: Vec<_> = (0..8).map(|i| spec.sample(i)).collect();
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let captions: Vec<String> = samples.iter().map(|s| s.caption.clone()).collect();
    let (scores, _) = scorer.score(&images, &captions, &device).unwrap();
    let h = evaluate(model, &config.load_tokenizer().unwrap(), 0, 8, &device).unwrap();
    // The metric reads 8-bit images through CLIPImageProcessor's arithmetic (/255, then CLIP's
    // normalisation) where training used the reward's (x/2+0.5 from [-1, 1]): the inputs differ
    // by f32 rounding only, so 100·cos agrees to about 1e-4 (2e-3 allows for the towers'
    // amplification of those last bits).
    for (s, f) in scores.iter().zip(&h.first_scores) {
        assert!(
            (s - 100.0 * f).abs() < 2e-3,
            "{scores:?} against 100 x {:?}",
            h.first_scores
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_attribute_change_gives_other_drawable_labels() {
    let spec = Spec::new(0, Split::Heldout).objects(Objects::One);
    for i in 0..50 {
        let l = spec.sample(i).labels;
        for a in ATTRIBUTES {
            let c = changed(&l, a);
            assert!(c != l && c.check().is_ok(), "{a}: {l:?} -> {c:?}");
            let (o, n) = (&l.objects[0], &c.objects[0]);
            let differs = [
                o.shape != n.shape,
                o.colour != n.colour,
                o.size != n.size,
                o.position != n.position,
                l.background != c.background,
            ];
            let k = ATTRIBUTES.iter().position(|x| *x == a).unwrap();
            assert!(
                differs[k] && differs.iter().filter(|d| **d).count() == 1,
                "{a}: {l:?} -> {c:?}"
            );
        }
    }
}

#[test]
fn bad_configs_are_refused_by_field() {
    let mut c = tiny(Layout::OpenClip, 1);
    c.batch_size = 1;
    assert!(c.check().unwrap_err().to_string().contains("batch_size"));
    let mut c = tiny(Layout::OpenClip, 1);
    c.temperature = 0.0;
    assert!(c.check().unwrap_err().to_string().contains("temperature"));
    let mut c = tiny(Layout::OpenClip, 1);
    c.model.text_heads = 3;
    assert!(
        c.check()
            .unwrap_err()
            .to_string()
            .contains("model.text_heads")
    );
    let mut c = tiny(Layout::Transformers, 1);
    c.tokenizer = PathBuf::from("/nonexistent/tokenizer");
    let e = c.check().unwrap_err().to_string();
    assert!(e.contains("tokenizer") && e.contains("/nonexistent"), "{e}");

    let dir = scratch("toy-clip-config");
    let p = dir.join("bad.toml");
    let text = toml::to_string(&tiny(Layout::OpenClip, 1))
        .unwrap()
        .replace("steps = 1", "steps = 1\nstep = 2");
    std::fs::write(&p, text).unwrap();
    let e = format!("{:#}", ClipTrainConfig::from_file(&p).unwrap_err());
    assert!(e.contains("bad.toml") && e.contains("step"), "{e}");
    let text = toml::to_string(&tiny(Layout::OpenClip, 1))
        .unwrap()
        .replace("layout = \"open_clip\"", "layout = \"timm\"");
    std::fs::write(&p, text).unwrap();
    let e = format!("{:#}", ClipTrainConfig::from_file(&p).unwrap_err());
    assert!(e.contains("layout") && e.contains("timm"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

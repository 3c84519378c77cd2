//! The toy aesthetic reward's training on a tiny tower: the squared error against the stated
//! beauty falls, the same config trains the same weights, the files it writes load through the
//! aesthetic reward's own loader and score as the trained model does, and a config the MLP
//! layout cannot take is refused by field.

use pretrain::toy_aesthetic::{AestheticTrainConfig, TowerConfig, evaluate, save, scores, train};
use rewards::aesthetic::Aesthetic;
use ril_testkit::scratch;

type Cpu = sd_model::backend::Cpu;
type CpuAutodiff = sd_model::backend::CpuAutodiff;

fn tiny(steps: usize) -> AestheticTrainConfig {
    AestheticTrainConfig {
        seed: 3,
        steps,
        batch_size: 8,
        lr: 1e-3,
        weight_decay: 1e-4,
        eval_seed: 0,
        eval_count: 16,
        tower: TowerConfig {
            hidden_size: 16,
            intermediate_size: 32,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            image_size: 64,
            patch_size: 16,
            projection_dim: 768,
        },
    }
}

#[test]
fn training_lowers_the_error_and_repeats_bit_for_bit() {
    let device = Default::default();
    let a = train::<CpuAutodiff>(&tiny(40), &device, |_, _| {}).unwrap();
    let first: f32 = a.losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = a.losses[30..].iter().sum::<f32>() / 10.0;
    // Beauty is 1..10 (mean about 5) and the untrained reward outputs about 0: the squared error
    // starts near 25; learning at least the mean takes it below 5 (beauty's variance is about 4).
    assert!(
        first > 10.0 && last < first / 3.0,
        "first {first}, last {last}"
    );
    let b = train::<CpuAutodiff>(&tiny(40), &device, |_, _| {}).unwrap();
    assert_eq!(a.losses, b.losses, "the same config trained differently");
}

#[test]
fn the_written_files_load_as_an_aesthetic_reward_and_score_the_same() {
    let device = Default::default();
    let config = tiny(5);
    let trained = train::<CpuAutodiff>(&config, &device, |_, _| {}).unwrap();
    let dir = scratch("toy-aesthetic-save");
    let out = dir.join("aesthetic");
    save(
        &trained.model,
        &config.tower,
        &out,
        &[("train.toml", b"x".to_vec())],
    )
    .unwrap();
    let loaded =
        Aesthetic::<Cpu>::load(&out.join("clip"), &out.join("mlp.safetensors"), &device).unwrap();
    let (mine, truth) = scores(&trained.model, 0, 8, &device).unwrap();
    let (theirs, _) = scores(&loaded, 0, 8, &device).unwrap();
    // The files hold the f32 weights as they are: the same arithmetic gives the same scores.
    assert_eq!(mine, theirs);
    assert_eq!(truth.len(), 8);
    let h = evaluate(&loaded, 0, 8, &device).unwrap();
    assert_eq!(h.first_scores, theirs);
    assert!(out.join("train.toml").is_file());
    // An occupied folder is not replaced.
    assert!(save(&trained.model, &config.tower, &out, &[]).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn configs_the_mlp_cannot_take_are_refused_by_field() {
    let mut c = tiny(1);
    c.tower.projection_dim = 512;
    let e = c.check().unwrap_err().to_string();
    assert!(
        e.contains("tower.projection_dim") && e.contains("768"),
        "{e}"
    );
    let mut c = tiny(1);
    c.tower.patch_size = 7;
    assert!(
        c.check()
            .unwrap_err()
            .to_string()
            .contains("tower.patch_size")
    );
    let dir = scratch("toy-aesthetic-config");
    let p = dir.join("bad.toml");
    let text = toml::to_string(&tiny(1))
        .unwrap()
        .replace("steps = 1", "steps = 1\nstep = 2");
    std::fs::write(&p, text).unwrap();
    let e = format!("{:#}", AestheticTrainConfig::from_file(&p).unwrap_err());
    assert!(e.contains("bad.toml") && e.contains("step"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

//! The trainer on the tiny pipeline: the config's checks, RID's distillation gradient against
//! finite differences, RID with λ = 0 equals the baseline, only the newest pair moves during a
//! run, a compressibility run raises the compressibility reward, and guard rails.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module, Param};
use burn::prelude::*;
use lora_group::{LoraModel, Targets, export_task, push_task};
use rewards::Reward;
use rid_trainer::config::{Method, RewardKind};
use rid_trainer::step::{Frozen, MicroBatch, Objective, step_loss};
use rid_trainer::{TrainConfig, train, train_with};
use sd_model::noise::NoiseRng;
use sd_model::{Conditioning, denoise};
use sd_model::{DdimConfig, DdimScheduler, StableDiffusion};

#[cfg(not(feature = "tch"))]
type AD = sd_model::backend::CpuAutodiff;
#[cfg(feature = "tch")]
type AD = sd_model::backend::TchAutodiff;
// The backend the tests run on: burn-flex, or LibTorch on the CPU with `--features tch`.
#[cfg(not(feature = "tch"))]
type B = sd_model::backend::Cpu;
#[cfg(feature = "tch")]
type B = sd_model::backend::Tch;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ril-trainer-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Tests that build autodiff graphs run one at a time: burn-autodiff 0.21 keeps every graph in
/// one process-wide state, and once (under heavy machine load, not reproduced in 4 reruns) a
/// run in parallel with another test's backward pass lost a LoRA pair's gradient ("no gradient
/// for ...to_k.lora_A" at step 1). A training process has one graph at a time, as these tests
/// now do.
fn autodiff_serially() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// configs/tiny/rid-ahc.toml with its output in a fresh scratch folder.
fn tiny(name: &str) -> TrainConfig {
    let mut c = TrainConfig::from_file(&root().join("configs/tiny/rid-ahc.toml")).unwrap();
    c.output = scratch(name);
    c
}

#[test]
fn configs_reject_unknown_keys_and_bad_values_by_name() {
    for p in [
        "configs/paper/rid.toml",
        "configs/paper/baseline.toml",
        "configs/tiny/baseline-ahc.toml",
    ] {
        TrainConfig::from_file(&root().join(p)).unwrap_or_else(|e| panic!("{p}: {e:#}"));
    }
    let text = std::fs::read_to_string(root().join("configs/tiny/rid-ahc.toml")).unwrap();
    let dir = scratch("config");
    std::fs::create_dir_all(&dir).unwrap();
    let check = |edit: &dyn Fn(&str) -> String, needle: &str| {
        let path = dir.join("c.toml");
        std::fs::write(&path, edit(&text)).unwrap();
        let err = format!("{:#}", TrainConfig::from_file(&path).unwrap_err());
        assert!(
            err.contains(needle) && err.contains("c.toml"),
            "expected {needle:?} in {err}"
        );
    };
    check(
        &|t| t.replace("lambda = 0.1", "lambda = 0.1\nlamda = 1"),
        "unknown field `lamda`",
    );
    check(
        &|t| t.replace("lr = 1e-3", "lr = 5.0"),
        "tasks[0] (aesthetic).lr",
    );
    check(&|t| t.replace("steps = 4", "steps = 1"), "sampling.steps");
    check(
        &|t| t.replace("height = 64", "height = 60"),
        "multiples of 8",
    );
    check(
        &|t| t.replace("height = 64", "height = 1000000"),
        "at most 4096 pixels",
    );
    check(
        &|t| t.replace("ema_momentum = 0.9", "ema_momentum = 1.0"),
        "method.ema_momentum",
    );
    check(
        &|t| t.replace("grad_accum = 2", "grad_accum = 3"),
        "tasks[2] (compress).batch_size",
    );
    check(
        &|t| t.replace("kind = \"rid\"", "kind = \"ridge\""),
        "unknown variant `ridge`",
    );
    check(
        &|t| t.replace("aesthetic_mlp = \"aesthetic-mlp-random.safetensors\"\n", ""),
        "needs rewards.aesthetic_mlp",
    );
    check(
        &|t| {
            t.replace(
                "\"aesthetic-mlp-random.safetensors\"",
                "\"hf://owner-only/aesthetic.safetensors\"",
            )
        },
        "hf://owner/name[@revision]/path",
    );
    check(
        &|t| format!("{t}\n[eval]\nclip = \"x\"\n"),
        "unknown field `clip`",
    );
    // [eval] only says how to score: it leaves the run's hash (and so its resumability) alone.
    let path = dir.join("e.toml");
    std::fs::write(
        &path,
        format!("{text}\n[eval]\nclip_model = \"o/clip\"\nfid_reference = \"coco.npz\"\n"),
    )
    .unwrap();
    let with_eval = TrainConfig::from_file(&path).unwrap();
    std::fs::write(&path, &text).unwrap();
    let without = TrainConfig::from_file(&path).unwrap();
    assert_eq!(with_eval.eval.clip_model.as_deref(), Some("o/clip"));
    assert_eq!(with_eval.hash(), without.hash());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A reward that scores nothing (0 for every image), to isolate the distillation term.
struct Zero;
impl<Bk: Backend> Reward<Bk> for Zero {
    fn name(&self) -> &str {
        "zero"
    }
    fn score(&self, images: Tensor<Bk, 4>, _: &[String]) -> anyhow::Result<Tensor<Bk, 1>> {
        let b = images.dims()[0];
        Ok(images.reshape([b as i32, -1]).mean_dim(1).reshape([b]) * 0.0)
    }
}

struct Setup {
    sd: StableDiffusion<AD>,
    scheduler: DdimScheduler,
    context: Tensor<B, 3>,
    z_n: Tensor<B, 4>,
}

fn setup() -> Setup {
    let device = Default::default();
    let sd = StableDiffusion::<AD>::load(
        &root().join("crates/sd-model/tests/fixtures/tiny-sd"),
        &device,
    )
    .unwrap();
    let context = sd
        .encode_prompts(&["".into(), "a red apple".into()], &device)
        .unwrap()
        .inner();
    Setup {
        scheduler: DdimScheduler::new(DdimConfig::sd15(), 4).unwrap(),
        z_n: NoiseRng::new(3).tensor([1, 4, 8, 8], &device),
        context,
        sd,
    }
}

fn set_b(model: &mut sd_model::UNet2DConditionModel<AD>, task: usize, seed: u64, scale: f64) {
    let mut rng = NoiseRng::new(seed);
    model.visit_lora_mut(&mut |_, l| {
        for p in l.lora.iter_mut().filter(|p| p.task == task) {
            let [o, r] = p.lora_B.val().dims();
            let v = rng.tensor::<AD, 2>([o, r], &Default::default()) * scale;
            p.lora_B = Param::initialized(p.lora_B.id, v.inner().require_grad().into_autodiff());
        }
    });
}

trait IntoAutodiff {
    fn into_autodiff(self) -> Tensor<AD, 2>;
}
impl IntoAutodiff for Tensor<B, 2> {
    fn into_autodiff(self) -> Tensor<AD, 2> {
        Tensor::from_inner(self).require_grad()
    }
}

/// The setup's one-image micro-batch ("a red apple", guidance 7.5).
fn micro_batch(s: &Setup) -> MicroBatch<B> {
    MicroBatch {
        cond: Conditioning {
            context: s.context.clone(),
            scale: 7.5,
        },
        z_n: s.z_n.clone(),
        prompts: vec!["a red apple".into()],
        noise_seed: 0,
    }
}

fn loss(
    s: &Setup,
    student: &sd_model::UNet2DConditionModel<AD>,
    teacher: &sd_model::UNet2DConditionModel<B>,
    objective: Objective,
    reward: &dyn Reward<AD>,
) -> rid_trainer::step::StepOutput<AD> {
    let vae = s.sd.vae.clone().no_grad();
    let frozen = Frozen {
        vae: &vae,
        reward,
        scheduler: &s.scheduler,
        eta: 0.0,
        checkpointing: false,
    };
    step_loss(student, teacher, objective, &frozen, micro_batch(s)).unwrap()
}

#[test]
fn distillation_gradient_matches_finite_differences() {
    let _serial = autodiff_serially();
    let s = setup();
    let mut student = s.sd.unet.clone().no_grad();
    push_task(&mut student, &Targets::default(), 4, 4.0).unwrap();
    let teacher = student.valid();
    // The student moves away from the teacher, so the MSE and its gradient are not zero.
    set_b(&mut student, 0, 11, 0.3);
    let out = loss(
        &s,
        &student,
        &teacher,
        Objective::Rid { lambda: 1.0 },
        &Zero,
    );
    let grads = out.loss.backward();
    // The first adapted layer's lora_B[0, 0].
    let mut first = None;
    student.visit_lora(&mut |p, l| {
        if first.is_none() && !l.lora.is_empty() {
            first = Some((p.to_string(), l.lora[0].lora_B.val()));
        }
    });
    let (path, b) = first.unwrap();
    let analytic = b
        .grad(&grads)
        .unwrap()
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .unwrap()[0];
    // Central difference of the distillation term in f32: h = 1e-2 keeps rounding (~1e-7 / h)
    // far below the O(h²) truncation of a smooth function; 2 % covers both.
    let h = 1e-2f32;
    let value_at = |delta: f32| {
        let mut m = student.clone();
        m.visit_lora_mut(&mut |p, l| {
            if p == path {
                let v = l.lora[0].lora_B.val().inner();
                let mut d = v
                    .clone()
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .unwrap();
                d[0] += delta;
                let t =
                    Tensor::<B, 2>::from_data(TensorData::new(d, v.dims()), &Default::default());
                l.lora[0].lora_B = Param::initialized(l.lora[0].lora_B.id, t.into_autodiff());
            }
        });
        loss(&s, &m, &teacher, Objective::Rid { lambda: 1.0 }, &Zero).distill
    };
    let numeric = (value_at(h) - value_at(-h)) / (2.0 * h as f64);
    assert!(out.distill > 0.0);
    assert!(
        (analytic - numeric).abs() <= 0.02 * numeric.abs().max(1e-6),
        "analytic {analytic} vs finite differences {numeric}"
    );
}

#[test]
fn rid_with_lambda_zero_equals_the_baseline_step() {
    let _serial = autodiff_serially();
    let s = setup();
    let mut student = s.sd.unet.clone().no_grad();
    push_task(&mut student, &Targets::default(), 4, 4.0).unwrap();
    let teacher = student.valid();
    set_b(&mut student, 0, 5, 0.3);
    let reward = rewards::jpeg::Compressibility::default();
    let rid = loss(
        &s,
        &student,
        &teacher,
        Objective::Rid { lambda: 0.0 },
        &reward,
    );
    let base = loss(&s, &student, &teacher, Objective::Baseline, &reward);
    assert_eq!(rid.rewards, base.rewards);
    let (gr, gb) = (rid.loss.clone().backward(), base.loss.clone().backward());
    assert_eq!(
        rid.loss
            .inner()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap(),
        base.loss
            .inner()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap()
    );
    student.visit_lora(&mut |p, l| {
        for pair in &l.lora {
            for t in [pair.lora_A.val(), pair.lora_B.val()] {
                let (a, b) = (t.grad(&gr).unwrap(), t.grad(&gb).unwrap());
                assert_eq!(
                    a.into_data().to_vec::<f32>().unwrap(),
                    b.into_data().to_vec::<f32>().unwrap(),
                    "{p}"
                );
            }
        }
    });
}

#[test]
fn a_run_moves_only_the_newest_pair_and_exports_every_task() {
    let _serial = autodiff_serially();
    let mut c = tiny("newest");
    c.tasks.truncate(2);
    c.tasks[0].reward = RewardKind::Compress;
    c.tasks[1].reward = RewardKind::Compress;
    let summary = train::<AD>(&c, false, &Default::default()).unwrap();
    // Task 0's pair at the end of the run is the one saved when task 0 finished.
    let tmp = c.output.join("task0-again.safetensors");
    export_task(&summary.unet, 0, "unet", &tmp).unwrap();
    let saved = std::fs::read(c.output.join("task-0-aesthetic/lora.safetensors")).unwrap();
    assert!(
        std::fs::read(&tmp).unwrap() == saved,
        "task 0's pair changed during task 1"
    );
    export_task(&summary.unet, 1, "unet", &tmp).unwrap();
    assert!(
        std::fs::read(&tmp).unwrap()
            == std::fs::read(c.output.join("task-1-hps/lora.safetensors")).unwrap()
    );
    // The metrics log has one line per step of both tasks.
    let log = std::fs::read_to_string(c.output.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 8);
    std::fs::remove_dir_all(&c.output).unwrap();
}

/// Mean compressibility of the model on fixed noise and prompts.
fn compress_score(unet: &sd_model::UNet2DConditionModel<B>, sd: &StableDiffusion<B>) -> f64 {
    let device = Default::default();
    let prompts: Vec<String> = ["a red apple", "a snowy forest", "a small house", "a dog"]
        .map(String::from)
        .to_vec();
    let ctx = sd
        .encode_prompts(&[vec![String::new(); 4], prompts.clone()].concat(), &device)
        .unwrap();
    let scheduler = DdimScheduler::new(DdimConfig::sd15(), 4).unwrap();
    let cond = Conditioning {
        context: ctx,
        scale: 7.5,
    };
    let mut rng = NoiseRng::new(1);
    let z = rng.tensor::<B, 4>([4, 4, 8, 8], &device);
    let n = scheduler.timesteps.len();
    let z0 = denoise(unet, &scheduler, &cond, z, 0..n, 0.0, &mut rng, |_| {});
    let r = rewards::jpeg::Compressibility::default()
        .score(sd.vae.decode_latents(z0), &prompts)
        .unwrap();
    r.mean().into_scalar().elem::<f64>()
}

#[test]
fn a_short_compressibility_run_raises_the_compressibility_reward() {
    let _serial = autodiff_serially();
    let mut c = tiny("compress");
    c.tasks = vec![c.tasks[2].clone()];
    c.tasks[0].epochs = 4;
    c.tasks[0].steps_per_epoch = 4;
    c.tasks[0].lr = 1e-2;
    c.tasks[0].grad_clip = 0.0;
    let summary = train::<AD>(&c, false, &Default::default()).unwrap();
    let sd = StableDiffusion::<B>::load(
        &root().join("crates/sd-model/tests/fixtures/tiny-sd"),
        &Default::default(),
    )
    .unwrap();
    let before = compress_score(&sd.unet, &sd);
    let after = compress_score(&summary.unet, &sd);
    eprintln!("compressibility before {before:.6}, after {after:.6}");
    assert!(
        after > before,
        "compressibility did not improve: {before} -> {after}"
    );
    std::fs::remove_dir_all(&c.output).unwrap();
}

/// A compressibility reward that turns NaN from call `nan_from` on.
struct NanAfter {
    calls: Cell<usize>,
    nan_from: usize,
}
impl<Bk: Backend> Reward<Bk> for NanAfter {
    fn name(&self) -> &str {
        "compress"
    }
    fn score(&self, images: Tensor<Bk, 4>, p: &[String]) -> anyhow::Result<Tensor<Bk, 1>> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let r = Reward::<Bk>::score(&rewards::jpeg::Compressibility::default(), images, p)?;
        Ok(if n >= self.nan_from { r * f32::NAN } else { r })
    }
}

#[test]
fn a_non_finite_reward_stops_the_run_naming_task_step_and_term_and_keeps_the_checkpoint() {
    let _serial = autodiff_serially();
    let mut c = tiny("nan");
    c.tasks = vec![c.tasks[0].clone()];
    c.tasks[0].reward = RewardKind::Compress;
    c.checkpoint_every = 1;
    let err = train_with::<AD>(&c, false, &Default::default(), &|_| {
        Ok(Box::new(NanAfter {
            calls: Cell::new(0),
            nan_from: 2,
        }))
    })
    .err()
    .unwrap();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("task 0 (aesthetic), step 2") && msg.contains("non-finite reward"),
        "{msg}"
    );
    let ckpt = rid_trainer::checkpoint::load::<B>(
        &c.output.join("task-0-aesthetic/checkpoint.safetensors"),
        &Default::default(),
    )
    .unwrap();
    assert_eq!((ckpt.state.step, ckpt.state.done), (2, false));
    // The folder now holds this run: a fresh start is refused, another config too.
    let err = format!(
        "{:#}",
        train::<AD>(&c, false, &Default::default()).err().unwrap()
    );
    assert!(err.contains("pass --resume"), "{err}");
    let mut other = c.clone();
    other.seed = 9;
    let err = format!(
        "{:#}",
        train::<AD>(&other, true, &Default::default())
            .err()
            .unwrap()
    );
    assert!(err.contains("another configuration's run"), "{err}");
    // The message says what differs, with both values.
    assert!(err.contains("seed: 0 in the folder, 9 now"), "{err}");
    assert_eq!(c.method.kind, Method::Rid);
    std::fs::remove_dir_all(&c.output).unwrap();
}

#[test]
fn the_joint_reward_is_the_weighted_sum_of_its_parts() {
    let c = tiny("joint");
    let device = Default::default();
    let mut rewards_cfg = c.rewards.clone();
    rewards_cfg.joint = Some(rid_trainer::config::JointWeights {
        aesthetic: 0.01,
        hps: 2.0,
        compress: 1.0,
    });
    let build = |k| rewards::build::build_reward::<B>(k, &rewards_cfg, &device).unwrap();
    let images = NoiseRng::new(4)
        .tensor::<B, 4>([2, 3, 64, 64], &device)
        .clamp(-1.0, 1.0);
    let prompts = vec!["a red apple".to_string(), "a dog".to_string()];
    let score = |k| {
        build(k)
            .score(images.clone(), &prompts)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let (a, h, cmp, joint) = (
        score(RewardKind::Aesthetic),
        score(RewardKind::Hps),
        score(RewardKind::Compress),
        score(RewardKind::Joint),
    );
    for i in 0..2 {
        let expected = 0.01 * a[i] + 2.0 * h[i] + cmp[i];
        assert!(
            (joint[i] - expected).abs() <= 1e-6 * expected.abs().max(1.0),
            "{joint:?} vs {expected}"
        );
    }
}

#[test]
fn a_checkpoint_resumes_only_into_the_same_task_and_shapes() {
    let _serial = autodiff_serially();
    let s = setup();
    let settings = rid_trainer::TaskSettings {
        objective: Objective::Rid { lambda: 0.1 },
        lr: 1e-3,
        weight_decay: 0.0,
        grad_clip: 1.0,
        ema_momentum: 0.9,
    };
    let lora = |rank| rid_trainer::LoraInit {
        rank,
        alpha: rank as f64,
        rng: NoiseRng::new(7),
    };
    let vae = s.sd.vae.clone().no_grad();
    let reward = rewards::jpeg::Compressibility::default();
    let frozen = Frozen {
        vae: &vae,
        reward: &reward,
        scheduler: &s.scheduler,
        eta: 0.0,
        checkpointing: false,
    };
    let batch = || micro_batch(&s);
    let mut t = rid_trainer::Trainer::<AD>::new(s.sd.unet.clone(), lora(4), settings).unwrap();
    let rec = t.step(&frozen, vec![batch()], false).unwrap();
    assert_eq!((rec.step, t.steps_done()), (0, 1));
    let ckpt = t.to_checkpoint(false, "h");
    // The same task and rank: the state comes back exactly, and the next step is step 1.
    let mut back =
        rid_trainer::Trainer::<AD>::from_checkpoint(s.sd.unet.clone(), lora(4), settings, ckpt)
            .unwrap();
    assert_eq!(back.steps_done(), 1);
    let again = back.to_checkpoint(false, "h");
    let first = t.to_checkpoint(false, "h");
    for (name, v) in &first.tensors {
        assert_eq!(
            v.clone().into_data().to_vec::<f32>().unwrap(),
            again.tensors[name]
                .clone()
                .into_data()
                .to_vec::<f32>()
                .unwrap(),
            "{name}"
        );
    }
    assert_eq!(back.step(&frozen, vec![batch()], false).unwrap().step, 1);
    // A rank-8 run cannot take a rank-4 checkpoint: the error names the tensor and both shapes.
    let err = rid_trainer::Trainer::<AD>::from_checkpoint(
        s.sd.unet.clone(),
        lora(8),
        settings,
        t.to_checkpoint(false, "h"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("lora_A has shape [4, ") && err.contains("the model's pair has [8, "),
        "{err}"
    );
    // Nor can task 0's checkpoint resume task 1.
    let mut two = s.sd.unet.clone().no_grad();
    push_task(&mut two, &Targets::default(), 4, 4.0).unwrap();
    let err = rid_trainer::Trainer::<AD>::from_checkpoint(
        two,
        lora(4),
        settings,
        t.to_checkpoint(false, "h"),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("the checkpoint is of task 0, expected task 1"),
        "{err}"
    );
}

#[test]
fn a_profiled_run_logs_where_each_step_went() {
    let _serial = autodiff_serially();
    let mut c = tiny("profile");
    c.tasks.truncate(1);
    c.tasks[0].reward = RewardKind::Compress;
    c.tasks[0].epochs = 1;
    c.tasks[0].steps_per_epoch = 2;
    let opts = rid_trainer::RunOptions {
        profile: true,
        ..Default::default()
    };
    rid_trainer::run::<AD>(&c, opts, &Default::default(), &|_| {
        Ok(Box::new(rewards::jpeg::Compressibility::default()))
    })
    .unwrap();
    let log = std::fs::read_to_string(c.output.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        let phases = line["phases_s"]
            .as_object()
            .expect("phases_s when profiling");
        // RID: every phase ran, so each took some time, and together no more than the step.
        for name in [
            "sampling",
            "last_step",
            "decode",
            "reward",
            "distill",
            "backward",
            "optimiser",
        ] {
            assert!(phases[name].as_f64().unwrap() > 0.0, "{name}: {line}");
        }
        let sum: f64 = phases.values().map(|v| v.as_f64().unwrap()).sum();
        assert!(sum <= line["time_s"].as_f64().unwrap(), "{line}");
    }
    std::fs::remove_dir_all(&c.output).unwrap();
}

#[test]
fn a_training_prompt_too_long_for_the_text_encoder_is_refused_by_file_and_line() {
    let dir = scratch("long-prompt");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("prompts.txt");
    // Line 2 is blank (skipped); line 3 has 160 tokens in the tiny vocabulary (75 fit).
    std::fs::write(&path, format!("a red apple\n\n{}\n", "cat ".repeat(80))).unwrap();
    let tokenizer = sd_model::ClipTokenizer::from_dir(
        &root().join("crates/sd-model/tests/fixtures/tiny-sd/tokenizer"),
    )
    .unwrap();
    let err = rid_trainer::config::read_prompts_checked(&path, &tokenizer)
        .err()
        .unwrap();
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!("{}:3", path.display())) && err.contains("160 tokens; at most 75"),
        "{err}"
    );
    std::fs::write(&path, "a red apple\n\na dog\n").unwrap();
    assert_eq!(
        rid_trainer::config::read_prompts_checked(&path, &tokenizer).unwrap(),
        ["a red apple", "a dog"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The task-sequence runner: for each task, a new LoRA pair (and the teacher's copy), training
//! with the baseline or RID, checkpoints every K steps and after the task, a JSONL metrics log,
//! resume after a kill, and guard rails (non-finite terms stop the run; a folder holding another
//! run is refused).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use lora_group::{LoraModel, Targets, export_task, import_task, push_task};
use rewards::Reward;
use sd_model::noise::NoiseRng;
use sd_model::{DdimScheduler, StableDiffusion, UNet2DConditionModel};

use crate::adamw::AdamW;
use crate::checkpoint::{self, CheckpointState};
use crate::config::{Method, RewardKind, TrainConfig, read_prompts};
use crate::step::{StepInputs, StepParams, step_loss};
use crate::update::{UpdateParams, accumulate_grads, apply_update, set_task_pairs, task_pairs};
use rewards::build::build_reward;

/// Random streams, each derived from (seed, stream, task, step, micro-batch).
const STREAM_PROMPTS: u64 = 1;
const STREAM_NOISE: u64 = 2;
const STREAM_ETA: u64 = 3;
const STREAM_LORA: u64 = 4;

/// What a finished run reports.
pub struct RunSummary<Bk: Backend> {
    pub run_dir: PathBuf,
    /// Mean reward of the last step of each task (NaN for tasks loaded from a finished checkpoint).
    pub final_rewards: Vec<f64>,
    /// The final model (every task's pair, all frozen).
    pub unet: UNet2DConditionModel<Bk>,
}

/// Builds the reward of a task.
pub type RewardFactory<'a, B> = dyn Fn(RewardKind) -> Result<Box<dyn Reward<B>>> + 'a;

/// The folder of task `k`.
pub fn task_dir(run: &Path, k: usize, name: &str) -> PathBuf {
    run.join(format!("task-{k}-{name}"))
}

fn prepare_run_dir(config: &TrainConfig, resume: bool) -> Result<()> {
    let dir = &config.output;
    let marker = dir.join("config.json");
    let hash = config.hash();
    if marker.is_file() {
        let text = std::fs::read_to_string(&marker)?;
        let previous: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", marker.display()))?;
        let old = previous["hash"].as_str().unwrap_or("");
        if old != hash {
            bail!(
                "{} holds another configuration's run (config hash {old}, this config {hash}); choose another output folder",
                dir.display()
            );
        }
        if !resume {
            bail!(
                "{} already holds this configuration's run; pass --resume to continue it",
                dir.display()
            );
        }
        remove_stale_temp_files(dir)?;
        return Ok(());
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "output folder {} is not empty and holds no ril run",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let json = serde_json::json!({ "hash": hash, "config": config });
    lora_group::io::write_atomic(&marker, serde_json::to_string_pretty(&json)?.as_bytes())
}

/// Trains the configured task sequence; with `resume`, continues the run in `config.output`.
pub fn train<B: AutodiffBackend>(
    config: &TrainConfig,
    resume: bool,
    device: &B::Device,
) -> Result<RunSummary<B::InnerBackend>> {
    train_with(config, resume, device, &|kind| {
        build_reward::<B>(kind, &config.rewards, device)
    })
}

/// As [`train`], with the rewards built by `make_reward` (tests use it to inject rewards).
pub fn train_with<B: AutodiffBackend>(
    config: &TrainConfig,
    resume: bool,
    device: &B::Device,
    make_reward: &RewardFactory<B>,
) -> Result<RunSummary<B::InnerBackend>> {
    config.validate()?;
    prepare_run_dir(config, resume)?;
    let run_dir = config.output.clone();
    let model_dir = sd_model::hub::resolve_model(&config.model.source)?;
    let sd = StableDiffusion::<B>::load(&model_dir, device)?;
    let mut unet = sd.unet.clone().no_grad();
    let vae = sd.vae.clone().no_grad();
    let text_encoder = sd.text_encoder.valid();
    let prompts = read_prompts(&config.prompts.train)?;
    let s = &config.sampling;
    let scheduler = DdimScheduler::new(sd.scheduler.clone(), s.steps)?;
    let params = StepParams {
        guidance: s.guidance,
        eta: s.eta,
        lambda: config.method.lambda,
    };
    let latent = [4, s.height / 8, s.width / 8];
    let mut embeddings: HashMap<usize, Tensor<B::InnerBackend, 3>> = HashMap::new();
    let encode = |text: &str| -> Result<Tensor<B::InnerBackend, 3>> {
        let ids: Vec<i64> = sd
            .tokenizer
            .encode(text)?
            .into_iter()
            .map(i64::from)
            .collect();
        let n = ids.len();
        let ids =
            Tensor::<B::InnerBackend, 2, Int>::from_data(TensorData::new(ids, [1, n]), device);
        Ok(text_encoder.forward(ids).last_hidden_state)
    };
    let uncond = encode("")?;
    let log_path = run_dir.join("metrics.jsonl");
    let mut final_rewards = Vec::new();
    let mut reward_cache: HashMap<&'static str, Box<dyn Reward<B>>> = HashMap::new();

    for (k, task) in config.tasks.iter().enumerate() {
        let dir = task_dir(&run_dir, k, &task.name);
        std::fs::create_dir_all(&dir)?;
        let ckpt_path = dir.join("checkpoint.safetensors");
        let saved = if resume && ckpt_path.is_file() {
            Some(checkpoint::load::<B::InnerBackend>(&ckpt_path, device)?)
        } else {
            None
        };
        if let Some(c) = &saved
            && c.state.done
        {
            let info = import_task(&mut unet, &dir.join("lora.safetensors"), "unet")?;
            if info.task != k {
                bail!(
                    "{}: task index {} in the model, expected {k}",
                    dir.display(),
                    info.task
                );
            }
            unet = unet.no_grad();
            eprintln!(
                "task {k} ({}) already done: loaded {}",
                task.name,
                dir.join("lora.safetensors").display()
            );
            final_rewards.push(f64::NAN);
            continue;
        }
        // A new pair on every targeted layer, lora_A from the run's own generator (so that a
        // resumed run initialises later tasks exactly as an uninterrupted one).
        let (task_index, _) = push_task(
            &mut unet,
            &Targets::default(),
            task.lora_rank,
            task.lora_alpha,
        )?;
        debug_assert_eq!(task_index, k);
        let mut rng = NoiseRng::derive(config.seed, &[STREAM_LORA, k as u64]);
        unet.visit_lora_mut(&mut |_, layer| {
            for p in layer.lora.iter_mut().filter(|p| p.task == k) {
                let [r, d_in] = p.lora_A.val().dims();
                let bound = 1.0 / (d_in as f64).sqrt();
                let values: Vec<f32> = (0..r * d_in)
                    .map(|_| ((2.0 * rng.uniform_open0() - 1.0) * bound) as f32)
                    .collect();
                let device = p.lora_A.val().device();
                p.lora_A = Param::initialized(
                    p.lora_A.id,
                    Tensor::from_data(TensorData::new(values, [r, d_in]), &device).require_grad(),
                );
            }
        });
        let mut teacher: UNet2DConditionModel<B::InnerBackend> = unet.valid();
        let mut adam = AdamW::<B::InnerBackend>::default();
        let mut start = 0;
        if let Some(c) = saved {
            let split = |prefix: &str| -> BTreeMap<String, Tensor<B::InnerBackend, 2>> {
                c.tensors
                    .iter()
                    .filter_map(|(n, t)| n.strip_prefix(prefix).map(|r| (r.to_string(), t.clone())))
                    .collect()
            };
            set_task_pairs(&mut unet, k, &split("student."), |t| {
                Tensor::from_inner(t).require_grad()
            })?;
            set_task_pairs(&mut teacher, k, &split("teacher."), |t| t)?;
            adam.m = split("m.");
            adam.v = split("v.");
            adam.step = c.state.adam_step;
            start = c.state.step;
            truncate_log(&log_path, k, start)?;
            eprintln!("task {k} ({}): resuming at step {start}", task.name);
        }
        let reward = match reward_cache.remove(task.reward.name()) {
            Some(r) => r,
            None => make_reward(task.reward)?,
        };
        let total = task.epochs * task.steps_per_epoch;
        let bar = indicatif::ProgressBar::new(total as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:25}] step {pos}/{len} {msg} (eta {eta})",
            )
            .expect("template"),
        );
        bar.set_prefix(format!(
            "task {}/{} {}",
            k + 1,
            config.tasks.len(),
            task.name
        ));
        bar.set_position(start as u64);
        let micro = task.batch_size / task.grad_accum;
        let mut last_mean = f64::NAN;
        let save_ckpt = |unet: &UNet2DConditionModel<B>,
                         teacher: &UNet2DConditionModel<B::InnerBackend>,
                         adam: &AdamW<B::InnerBackend>,
                         step: usize,
                         done: bool|
         -> Result<()> {
            let mut tensors = BTreeMap::new();
            for (n, t) in task_pairs(unet, k) {
                tensors.insert(format!("student.{n}"), t.inner());
            }
            for (n, t) in task_pairs(teacher, k) {
                tensors.insert(format!("teacher.{n}"), t);
            }
            for (n, t) in &adam.m {
                tensors.insert(format!("m.{n}"), t.clone());
            }
            for (n, t) in &adam.v {
                tensors.insert(format!("v.{n}"), t.clone());
            }
            let state = CheckpointState {
                task: k,
                step,
                adam_step: adam.step,
                done,
                config_hash: config.hash(),
            };
            checkpoint::save(&ckpt_path, &state, &tensors)
        };
        for step in start..total {
            let t0 = Instant::now();
            let mut grads: BTreeMap<String, Tensor<B::InnerBackend, 2>> = BTreeMap::new();
            let mut all_rewards = Vec::new();
            let mut distill = 0.0;
            let mut loss_sum = 0.0;
            for m in 0..task.grad_accum {
                let ids = [k as u64, step as u64, m as u64];
                let mut prng =
                    NoiseRng::derive(config.seed, &[STREAM_PROMPTS, ids[0], ids[1], ids[2]]);
                let chosen: Vec<usize> = (0..micro)
                    .map(|_| (prng.next_u64() % prompts.len() as u64) as usize)
                    .collect();
                let mut conds = Vec::with_capacity(micro);
                for &i in &chosen {
                    if let std::collections::hash_map::Entry::Vacant(e) = embeddings.entry(i) {
                        e.insert(encode(&prompts[i])?);
                    }
                    conds.push(embeddings[&i].clone());
                }
                let cond = Tensor::cat(conds, 0);
                let context = if params.guidance > 1.0 {
                    let d = cond.dims();
                    Tensor::cat(vec![uncond.clone().expand([micro, d[1], d[2]]), cond], 0)
                } else {
                    cond
                };
                let mut nrng =
                    NoiseRng::derive(config.seed, &[STREAM_NOISE, ids[0], ids[1], ids[2]]);
                let z_n = nrng
                    .tensor::<B::InnerBackend, 4>([micro, latent[0], latent[1], latent[2]], device);
                let texts: Vec<String> = chosen.iter().map(|&i| prompts[i].clone()).collect();
                let use_teacher = config.method.kind == Method::Rid;
                let out = step_loss(
                    &unet,
                    use_teacher.then_some(&teacher),
                    &vae,
                    reward.as_ref(),
                    &scheduler,
                    StepInputs {
                        context,
                        z_n,
                        prompts: &texts,
                        noise_seed: NoiseRng::derive(
                            config.seed,
                            &[STREAM_ETA, ids[0], ids[1], ids[2]],
                        )
                        .next_u64(),
                    },
                    params,
                )
                .with_context(|| format!("task {k} ({}), step {step}", task.name))?;
                let loss_value = out.loss.clone().inner().into_scalar().elem::<f64>();
                if !loss_value.is_finite() {
                    bail!(
                        "task {k} ({}), step {step}: the loss is {loss_value}",
                        task.name
                    );
                }
                loss_sum += loss_value;
                distill += out.distill;
                all_rewards.extend(out.rewards);
                accumulate_grads(&unet, k, &out.loss.backward(), &mut grads)?;
            }
            let scale = 1.0 / task.grad_accum as f64;
            let grad_norm = apply_update(
                &mut unet,
                &mut teacher,
                &mut adam,
                k,
                grads,
                &UpdateParams {
                    grad_scale: scale,
                    lr: task.lr,
                    weight_decay: task.weight_decay,
                    grad_clip: task.grad_clip,
                    ema_momentum: config.method.ema_momentum,
                },
            )
            .with_context(|| format!("task {k} ({}), step {step}", task.name))?;
            let n = all_rewards.len() as f64;
            let mean = all_rewards.iter().map(|&r| r as f64).sum::<f64>() / n;
            let std = (all_rewards
                .iter()
                .map(|&r| (r as f64 - mean).powi(2))
                .sum::<f64>()
                / n)
                .sqrt();
            last_mean = mean;
            let line = serde_json::json!({
                "task": k, "task_name": task.name, "epoch": step / task.steps_per_epoch, "step": step,
                "loss": loss_sum * scale, "reward_mean": mean, "reward_std": std,
                "distill": distill * scale, "grad_norm": grad_norm, "time_s": t0.elapsed().as_secs_f64(),
            });
            append_line(&log_path, &line.to_string())?;
            bar.set_message(format!(
                "epoch {}/{} loss {:.4} reward {mean:.4} {:.2} samples/s",
                step / task.steps_per_epoch + 1,
                task.epochs,
                loss_sum * scale,
                task.batch_size as f64 / t0.elapsed().as_secs_f64()
            ));
            bar.inc(1);
            if (step + 1) % config.checkpoint_every == 0 && step + 1 < total {
                save_ckpt(&unet, &teacher, &adam, step + 1, false)?;
            }
        }
        bar.finish();
        export_task(&unet, k, "unet", &dir.join("lora.safetensors"))?;
        export_task(&teacher, k, "unet", &dir.join("ema.safetensors"))?;
        save_ckpt(&unet, &teacher, &adam, total, true)?;
        unet = unet.no_grad();
        reward_cache.insert(task.reward.name(), reward);
        final_rewards.push(last_mean);
    }
    Ok(RunSummary {
        run_dir,
        final_rewards,
        unet: unet.valid(),
    })
}

/// Removes temporary files that a killed run left half-written (`.NAME.tmpPID`, see
/// `lora_group::io::write_atomic`) in the run folder and its task folders.
fn remove_stale_temp_files(run: &Path) -> Result<()> {
    let mut dirs = vec![run.to_path_buf()];
    for e in std::fs::read_dir(run)? {
        let p = e?.path();
        if p.is_dir() {
            dirs.push(p);
        }
    }
    for d in dirs {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if name.starts_with('.') && name.contains(".tmp") && p.is_file() {
                std::fs::remove_file(&p)
                    .with_context(|| format!("cannot remove {}", p.display()))?;
            }
        }
    }
    Ok(())
}

fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("cannot write {}", path.display()))
}

/// Drops log lines of task `task` at or after `step` (they will be recomputed on resume).
fn truncate_log(path: &Path, task: usize, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            let (t, s) = (
                v["task"].as_u64().unwrap_or(0) as usize,
                v["step"].as_u64().unwrap_or(0) as usize,
            );
            t < task || (t == task && s < step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    lora_group::io::write_atomic(path, out.as_bytes())
}

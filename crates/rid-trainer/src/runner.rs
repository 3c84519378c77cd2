//! The task-sequence runner: the run folder, the seeded batches, and for each task a
//! [`Trainer`] stepped to the task's end, with a JSONL metrics log, checkpoints every K steps and
//! after the task, resume after a kill, and guard rails (inputs checked before the run folder is
//! made; non-finite terms stop the run; a folder holding another run, or in use by another
//! process, is refused; a stop request ends the run at a step boundary with a checkpoint).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use lora_group::import_task;
use rewards::Reward;
use sd_model::noise::NoiseRng;
use sd_model::{
    ClipTextModel, ClipTokenizer, Conditioning, DdimScheduler, StableDiffusion,
    UNet2DConditionModel,
};

use crate::checkpoint;
use crate::config::{Method, RewardKind, TaskConfig, TrainConfig, read_prompts_checked};
use crate::lock::{LOCK_FILE, RunLock, lock_run_dir};
use crate::step::{Frozen, MicroBatch, Objective, Phases};
use crate::tensorboard::EventWriter;
use crate::trainer::{LoraInit, StepRecord, TaskSettings, Trainer};
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

/// How a run is carried out (not part of its configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue the run in the config's output folder from its last checkpoint.
    pub resume: bool,
    /// Time each phase of every step (they are logged in metrics.jsonl and summed per task
    /// on stderr).
    pub profile: bool,
    /// Once set (by a SIGINT/SIGTERM handler), the run stops after the step in progress: it
    /// writes the task's checkpoint and returns [`Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
}

/// The error of a run stopped through [`RunOptions::stop`], after its checkpoint was written;
/// `--resume` continues it bit for bit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupted {
    pub task: usize,
    pub task_name: String,
    /// Steps of the task done (and in the checkpoint).
    pub step: usize,
    pub steps: usize,
    pub checkpoint: PathBuf,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped on request in task {} ({}) after step {} of {}; checkpoint written to {}; --resume continues the run",
            self.task,
            self.task_name,
            self.step,
            self.steps,
            self.checkpoint.display()
        )
    }
}

impl std::error::Error for Interrupted {}

/// Builds the reward of a task.
pub type RewardFactory<'a, B> = dyn Fn(RewardKind) -> Result<Box<dyn Reward<B>>> + 'a;

/// The folder of task `k`.
pub fn task_dir(run: &Path, k: usize, name: &str) -> PathBuf {
    run.join(format!("task-{k}-{name}"))
}

/// Checks the output folder against `config` and takes its lock (held until the returned guard
/// is dropped): a new run gets an empty folder (a lock file left by a killed run aside) and its
/// `config.json`; an existing one must be this configuration's and `resume` set.
fn prepare_run_dir(config: &TrainConfig, resume: bool) -> Result<RunLock> {
    let dir = &config.output;
    let marker = dir.join("config.json");
    let hash = config.hash();
    if !marker.is_file() && dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
        if entries.any(|e| !e.is_ok_and(|e| e.file_name() == LOCK_FILE)) {
            bail!(
                "output folder {} is not empty and holds no ril run",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = lock_run_dir(dir)?;
    if marker.is_file() {
        let text = std::fs::read_to_string(&marker)?;
        let previous: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is corrupt", marker.display()))?;
        let old = previous["hash"].as_str().unwrap_or("");
        if old != hash {
            let now = serde_json::to_value(config)?;
            let mut diffs = Vec::new();
            config_diff("", &previous["config"], &now, &mut diffs);
            bail!(
                "{} holds another configuration's run (config hash {old}, this config {hash}; differing fields: {}); choose another output folder",
                dir.display(),
                if diffs.is_empty() {
                    "unknown".to_string()
                } else {
                    diffs.join(", ")
                }
            );
        }
        if !resume {
            bail!(
                "{} already holds this configuration's run; pass --resume to continue it",
                dir.display()
            );
        }
        remove_stale_temp_files(dir)?;
        return Ok(lock);
    }
    let json = serde_json::json!({ "hash": hash, "config": config });
    lora_group::io::write_atomic(&marker, serde_json::to_string_pretty(&json)?.as_bytes())?;
    Ok(lock)
}

/// The fields (dotted paths, `tasks[1].lr`) whose values differ between two configurations, with
/// both values.
fn config_diff(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                config_diff(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                config_diff(&format!("{path}[{i}]"), u, v, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} in the folder, {b} now")),
        _ => {}
    }
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
    let opts = RunOptions {
        resume,
        ..RunOptions::default()
    };
    run(config, opts, device, make_reward)
}

/// The seeded micro-batches of a run: prompts drawn with replacement, their embeddings (cached
/// per prompt), z_N and the eta-noise seed, all from (seed, stream, task, step, micro-batch), so
/// that a resumed run sees exactly the batches an uninterrupted one does.
pub struct Batches<'a, Bk: Backend> {
    seed: u64,
    prompts: Vec<String>,
    tokenizer: &'a ClipTokenizer,
    text_encoder: ClipTextModel<Bk>,
    uncond: Tensor<Bk, 3>,
    cache: HashMap<usize, Tensor<Bk, 3>>,
    guidance: f64,
    latent: [usize; 3],
    device: Bk::Device,
}

impl<'a, Bk: Backend> Batches<'a, Bk> {
    /// Batches of `prompts` for images of `height` x `width` with guidance scale `guidance`, in
    /// the pipeline's latent space.
    pub fn new(
        seed: u64,
        prompts: Vec<String>,
        tokenizer: &'a ClipTokenizer,
        text_encoder: ClipTextModel<Bk>,
        (guidance, height, width): (f64, usize, usize),
        latent: sd_model::pipeline::LatentSpace,
        device: &Bk::Device,
    ) -> Result<Self> {
        let uncond =
            sd_model::pipeline::encode_prompts(tokenizer, &text_encoder, &[String::new()], device)?;
        Ok(Self {
            seed,
            prompts,
            tokenizer,
            text_encoder,
            uncond,
            cache: HashMap::new(),
            guidance,
            latent: {
                let [_, c, h, w] = latent.shape(1, height, width);
                [c, h, w]
            },
            device: device.clone(),
        })
    }

    /// The `grad_accum` micro-batches of `size` images of task `k`'s step `step`.
    pub fn step(
        &mut self,
        k: usize,
        step: usize,
        grad_accum: usize,
        size: usize,
    ) -> Result<Vec<MicroBatch<Bk>>> {
        (0..grad_accum)
            .map(|m| self.micro_batch([k as u64, step as u64, m as u64], size))
            .collect()
    }

    fn micro_batch(&mut self, ids: [u64; 3], size: usize) -> Result<MicroBatch<Bk>> {
        let [k, step, m] = ids;
        let mut prng = NoiseRng::derive(self.seed, &[STREAM_PROMPTS, k, step, m]);
        let chosen: Vec<usize> = (0..size)
            .map(|_| (prng.next_u64() % self.prompts.len() as u64) as usize)
            .collect();
        let mut conds = Vec::with_capacity(size);
        for &i in &chosen {
            if !self.cache.contains_key(&i) {
                let e = sd_model::pipeline::encode_prompts(
                    self.tokenizer,
                    &self.text_encoder,
                    std::slice::from_ref(&self.prompts[i]),
                    &self.device,
                )?;
                self.cache.insert(i, e);
            }
            conds.push(self.cache[&i].clone());
        }
        let cond = Conditioning::new(Tensor::cat(conds, 0), self.uncond.clone(), self.guidance);
        let [c, h, w] = self.latent;
        let z_n = NoiseRng::derive(self.seed, &[STREAM_NOISE, k, step, m])
            .tensor::<Bk, 4>([size, c, h, w], &self.device);
        Ok(MicroBatch {
            cond,
            z_n,
            prompts: chosen.iter().map(|&i| self.prompts[i].clone()).collect(),
            noise_seed: NoiseRng::derive(self.seed, &[STREAM_ETA, k, step, m]).next_u64(),
        })
    }
}

/// The objective and optimisation constants of `task` under `config`'s method.
pub fn task_settings(config: &TrainConfig, task: &TaskConfig) -> TaskSettings {
    TaskSettings {
        objective: match config.method.kind {
            Method::Baseline => Objective::Baseline,
            Method::Rid => Objective::Rid {
                lambda: config.method.lambda,
            },
        },
        lr: task.lr,
        weight_decay: task.weight_decay,
        grad_clip: task.grad_clip,
        ema_momentum: config.method.ema_momentum,
    }
}

/// What a run reads, loaded and checked: the pipeline, the training prompts, one reward of each
/// kind the tasks name.
pub struct Inputs<B: AutodiffBackend> {
    pub sd: StableDiffusion<B>,
    pub prompts: Vec<String>,
    pub rewards: HashMap<&'static str, Box<dyn Reward<B>>>,
}

/// Every check a run makes before it writes anything (what `ril train --check` runs): the
/// config's values, the model (loaded), the training and evaluation prompts (non-empty, each
/// within 77 tokens, named by file and line), the DDIM schedule, and each task's reward built
/// with its weights (an error names the task).
pub fn preflight<B: AutodiffBackend>(
    config: &TrainConfig,
    device: &B::Device,
    make_reward: &RewardFactory<B>,
) -> Result<Inputs<B>> {
    config.validate()?;
    let model_dir = sd_model::hub::resolve_model(&config.model.source)?;
    let sd = StableDiffusion::<B>::load(&model_dir, device)?;
    let prompts = read_prompts_checked(&config.prompts.train, &sd.tokenizer)?;
    read_prompts_checked(&config.prompts.eval, &sd.tokenizer)?;
    DdimScheduler::new(sd.scheduler.clone(), config.sampling.steps)?;
    // Each task's LoRA fits the model (rank at most the narrowest adapted layer), checked on a
    // throwaway copy: a pair is only allocated once the rank is known to fit.
    for (k, task) in config.tasks.iter().enumerate() {
        let mut probe = sd.unet.clone().no_grad();
        lora_group::push_task(
            &mut probe,
            &lora_group::Targets::default(),
            task.lora_rank,
            task.lora_alpha,
        )
        .with_context(|| format!("task {k} ({}): lora_rank", task.name))?;
    }
    let mut rewards: HashMap<&'static str, Box<dyn Reward<B>>> = HashMap::new();
    for (k, task) in config.tasks.iter().enumerate() {
        if rewards.contains_key(task.reward.name()) {
            continue;
        }
        let reward = make_reward(task.reward).with_context(|| {
            format!("task {k} ({}): reward `{}`", task.name, task.reward.name())
        })?;
        rewards.insert(task.reward.name(), reward);
    }
    Ok(Inputs {
        sd,
        prompts,
        rewards,
    })
}

/// Runs the configured task sequence with the rewards of `make_reward`.
pub fn run<B: AutodiffBackend>(
    config: &TrainConfig,
    opts: RunOptions,
    device: &B::Device,
    make_reward: &RewardFactory<B>,
) -> Result<RunSummary<B::InnerBackend>> {
    // Every input is checked before the run folder is made.
    let Inputs {
        sd,
        prompts,
        rewards: mut reward_cache,
    } = preflight(config, device, make_reward)?;
    let s = &config.sampling;
    let scheduler = DdimScheduler::new(sd.scheduler.clone(), s.steps)?;
    let _lock = prepare_run_dir(config, opts.resume)?;
    let run_dir = config.output.clone();
    let mut unet = sd.unet.clone().no_grad();
    let vae = sd.vae.clone().no_grad();
    let mut batches = Batches::new(
        config.seed,
        prompts,
        &sd.tokenizer,
        sd.text_encoder.valid(),
        (s.guidance, s.height, s.width),
        sd.latent_space(),
        device,
    )?;
    let log_path = run_dir.join("metrics.jsonl");
    let hash = config.hash();
    let mut final_rewards = Vec::new();
    let stop_requested = || opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
    // Set once a task is trained in this invocation: the metrics of later tasks are then written
    // again, so their checkpoints (left by a run whose earlier task fell back to an older
    // checkpoint) are not resumed from.
    let mut retrained = false;
    // TensorBoard's copy of the step lines, opened at the first step this invocation trains.
    let mut events: Option<EventWriter> = None;

    for (k, task) in config.tasks.iter().enumerate() {
        let dir = task_dir(&run_dir, k, &task.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let ckpt_path = dir.join("checkpoint.safetensors");
        let total = task.epochs * task.steps_per_epoch;
        let saved = if !opts.resume {
            None
        } else if retrained {
            for p in [ckpt_path.clone(), checkpoint::previous_path(&ckpt_path)] {
                if p.exists() {
                    eprintln!(
                        "warning: task {k} ({}) is trained again after an earlier task was: removing {}",
                        task.name,
                        p.display()
                    );
                    std::fs::remove_file(&p)
                        .with_context(|| format!("cannot remove {}", p.display()))?;
                }
            }
            None
        } else {
            match checkpoint::load_latest::<B::InnerBackend>(&ckpt_path, device)? {
                Some((c, from)) => {
                    if c.state.config_hash != hash {
                        bail!(
                            "{} was written by another configuration (hash {}, this config {hash})",
                            from.display(),
                            c.state.config_hash
                        );
                    }
                    if c.state.step > total {
                        bail!(
                            "{} is at step {}, beyond the task's {total} steps",
                            from.display(),
                            c.state.step
                        );
                    }
                    Some(c)
                }
                None => None,
            }
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
        // lora_A from the run's own generator, so that a resumed run initialises later tasks
        // exactly as an uninterrupted one.
        let lora = LoraInit {
            rank: task.lora_rank,
            alpha: task.lora_alpha,
            rng: NoiseRng::derive(config.seed, &[STREAM_LORA, k as u64]),
        };
        let settings = task_settings(config, task);
        let mut trainer = match saved {
            Some(c) => {
                let t = Trainer::from_checkpoint(unet, lora, settings, c)
                    .with_context(|| format!("cannot resume from {}", ckpt_path.display()))?;
                truncate_log(&log_path, k, t.steps_done())?;
                eprintln!(
                    "task {k} ({}): resuming at step {}",
                    task.name,
                    t.steps_done()
                );
                t
            }
            None => {
                if opts.resume {
                    // Lines of a killed run's first steps, before the task's first checkpoint.
                    truncate_log(&log_path, k, 0)?;
                }
                Trainer::new(unet, lora, settings)?
            }
        };
        retrained = true;
        debug_assert_eq!(trainer.task(), k);
        let reward = match reward_cache.remove(task.reward.name()) {
            Some(r) => r,
            None => make_reward(task.reward)?,
        };
        let frozen = Frozen {
            vae: &vae,
            reward: reward.as_ref(),
            scheduler: &scheduler,
            eta: s.eta,
            checkpointing: config.model.gradient_checkpointing,
        };
        let bar = progress_bar(
            total,
            trainer.steps_done(),
            format!("task {}/{} {}", k + 1, config.tasks.len(), task.name),
        );
        let micro = task.batch_size / task.grad_accum;
        let mut last_mean = f64::NAN;
        let mut phases = Phases::default();
        for step in trainer.steps_done()..total {
            if stop_requested() {
                bar.abandon();
                trainer.save_checkpoint(&ckpt_path, false, &hash)?;
                return Err(Interrupted {
                    task: k,
                    task_name: task.name.clone(),
                    step,
                    steps: total,
                    checkpoint: ckpt_path,
                }
                .into());
            }
            let batch = batches.step(k, step, task.grad_accum, micro)?;
            let rec = trainer
                .step(&frozen, batch, opts.profile)
                .with_context(|| format!("task {k} ({}), step {step}", task.name))?;
            append_line(
                &log_path,
                &log_line(k, task, &rec, opts.profile).to_string(),
            )?;
            if events.is_none() {
                events = Some(EventWriter::create(&run_dir.join("tb"))?);
            }
            if let Some(w) = events.as_mut() {
                // The run's step count across tasks: the steps of the tasks before this one.
                let before: usize = config.tasks[..k]
                    .iter()
                    .map(|t| t.epochs * t.steps_per_epoch)
                    .sum();
                w.scalars((before + step) as i64, &event_values(task, &rec))?;
            }
            bar.set_message(format!(
                "epoch {}/{} loss {:.4} reward {:.4} {:.2} samples/s",
                step / task.steps_per_epoch + 1,
                task.epochs,
                rec.loss,
                rec.reward_mean,
                task.batch_size as f64 / rec.seconds
            ));
            bar.inc(1);
            last_mean = rec.reward_mean;
            phases.add(&rec.phases);
            if (step + 1) % config.checkpoint_every == 0 && step + 1 < total {
                trainer.save_checkpoint(&ckpt_path, false, &hash)?;
            }
        }
        bar.finish();
        trainer.export(&dir)?;
        trainer.save_checkpoint(&ckpt_path, true, &hash)?;
        if opts.profile {
            eprintln!("{}", profile_summary(k, &task.name, &phases));
        }
        unet = trainer.into_unet();
        reward_cache.insert(task.reward.name(), reward);
        final_rewards.push(last_mean);
    }
    Ok(RunSummary {
        run_dir,
        final_rewards,
        unet: unet.valid(),
    })
}

fn progress_bar(total: usize, position: usize, prefix: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:25}] step {pos}/{len} {msg} (eta {eta})",
        )
        .expect("template"),
    );
    bar.set_prefix(prefix);
    bar.set_position(position as u64);
    bar
}

/// The metrics.jsonl line of one step.
fn log_line(k: usize, task: &TaskConfig, rec: &StepRecord, profile: bool) -> serde_json::Value {
    let mut line = serde_json::json!({
        "task": k, "task_name": task.name, "epoch": rec.step / task.steps_per_epoch,
        "step": rec.step, "loss": rec.loss, "reward_mean": rec.reward_mean,
        "reward_std": rec.reward_std, "distill": rec.distill, "grad_norm": rec.grad_norm,
        "time_s": rec.seconds,
    });
    if profile {
        line["phases_s"] = serde_json::to_value(rec.phases).expect("phases serialise");
    }
    line
}

/// The TensorBoard scalars of one step, tagged `TASK_NAME/FIELD` (one chart group per task,
/// on the run's step count across tasks).
fn event_values(task: &TaskConfig, rec: &StepRecord) -> Vec<(String, f32)> {
    [
        ("loss", rec.loss),
        ("reward_mean", rec.reward_mean),
        ("reward_std", rec.reward_std),
        ("distill", rec.distill),
        ("grad_norm", rec.grad_norm),
        ("time_s", rec.seconds),
    ]
    .into_iter()
    .map(|(field, v)| (format!("{}/{field}", task.name), v as f32))
    .collect()
}

/// Where a task's step time went, one phase a line.
pub fn profile_summary(k: usize, name: &str, phases: &Phases) -> String {
    let total: f64 = phases.named().iter().map(|(_, s)| s).sum();
    let mut out = format!("task {k} ({name}) profile, {total:.3} s in all:");
    for (phase, s) in phases.named() {
        let share = if total > 0.0 { 100.0 * s / total } else { 0.0 };
        out.push_str(&format!("\n  {phase:<10} {s:>9.3} s {share:>5.1} %"));
    }
    out
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

/// Appends `line` in one write (a line cut short by a full disk is dropped on resume).
fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    f.write_all(format!("{line}\n").as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Drops log lines of task `task` at or after `step`, and of later tasks (they will be
/// recomputed on resume), and any line that is not JSON (cut short by a full disk).
fn truncate_log(path: &Path, task: usize, step: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                return false;
            };
            let (Some(t), Some(s)) = (v["task"].as_u64(), v["step"].as_u64()) else {
                return false;
            };
            let (t, s) = (t as usize, s as usize);
            t < task || (t == task && s < step)
        })
        .collect();
    let mut out = kept.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    lora_group::io::write_atomic(path, out.as_bytes())
}

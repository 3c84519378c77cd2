//! One task's training state (the student's new LoRA pair, its EMA teacher, AdamW's moments and
//! the step counter) and its optimiser step: micro-batch losses, gradient accumulation, clipping,
//! AdamW and the EMA update. The only place that knows a checkpoint's tensor names.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use lora_group::{LoraModel, Targets, export_task, push_task};
use sd_model::UNet2DConditionModel;
use sd_model::noise::NoiseRng;

use crate::adamw::AdamW;
use crate::checkpoint::{Checkpoint, CheckpointState};
use crate::step::{Clock, Frozen, MicroBatch, Objective, Phases, step_gradients_timed};
use crate::update::{UpdateParams, accumulate_grads, apply_update, set_task_pairs, task_pairs};

/// The task's optimisation constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskSettings {
    pub objective: Objective,
    pub lr: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: none).
    pub grad_clip: f64,
    /// EMA momentum a of the teacher: θ' ← a θ' + (1 − a) θ after every step.
    pub ema_momentum: f64,
}

/// The task's new LoRA pair: rank, alpha, and the generator of `lora_A`'s initial values
/// (PyTorch's kaiming-uniform bound 1/√fan_in, as peft; `lora_B` starts at zero).
pub struct LoraInit {
    pub rank: usize,
    pub alpha: f64,
    pub rng: NoiseRng,
}

/// What one optimiser step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The step's index in its task (0-based).
    pub step: usize,
    /// Mean over micro-batches of −mean R (+ λ·MSE).
    pub loss: f64,
    /// Reward of every image of the step.
    pub rewards: Vec<f32>,
    pub reward_mean: f64,
    pub reward_std: f64,
    /// Mean over micro-batches of the distillation MSE (0 for the baseline).
    pub distill: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall time of the whole step.
    pub seconds: f64,
    /// Time per phase (zeros unless profiled).
    pub phases: Phases,
}

/// One task's trainer.
pub struct Trainer<B: AutodiffBackend> {
    /// The student: every earlier task's pair frozen, this task's pair trainable.
    unet: UNet2DConditionModel<B>,
    /// The EMA teacher (this task's pair follows the student's by EMA).
    teacher: UNet2DConditionModel<B::InnerBackend>,
    adam: AdamW<B::InnerBackend>,
    task: usize,
    step: usize,
    settings: TaskSettings,
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Adds a new pair on every targeted layer of `unet` (whose earlier pairs stay frozen) and
    /// starts the task at step 0 with a teacher equal to the student.
    pub fn new(
        unet: UNet2DConditionModel<B>,
        mut lora: LoraInit,
        settings: TaskSettings,
    ) -> Result<Self> {
        let mut unet = unet.no_grad();
        let (task, _) = push_task(&mut unet, &Targets::default(), lora.rank, lora.alpha)?;
        unet.visit_lora_mut(&mut |_, layer| {
            for p in layer.lora.iter_mut().filter(|p| p.task == task) {
                let [r, d_in] = p.lora_A.val().dims();
                let bound = 1.0 / (d_in as f64).sqrt();
                let values: Vec<f32> = (0..r * d_in)
                    .map(|_| ((2.0 * lora.rng.uniform_open0() - 1.0) * bound) as f32)
                    .collect();
                let device = p.lora_A.val().device();
                p.lora_A = Param::initialized(
                    p.lora_A.id,
                    Tensor::from_data(TensorData::new(values, [r, d_in]), &device).require_grad(),
                );
            }
        });
        let teacher = unet.valid();
        Ok(Self {
            unet,
            teacher,
            adam: AdamW::default(),
            task,
            step: 0,
            settings,
        })
    }

    /// As [`Trainer::new`], then the pairs, moments and counters of `checkpoint` (written by
    /// [`Trainer::to_checkpoint`] for the same task and shapes).
    pub fn from_checkpoint(
        unet: UNet2DConditionModel<B>,
        lora: LoraInit,
        settings: TaskSettings,
        checkpoint: Checkpoint<B::InnerBackend>,
    ) -> Result<Self> {
        let mut t = Self::new(unet, lora, settings)?;
        let c = checkpoint;
        if c.state.task != t.task {
            bail!(
                "the checkpoint is of task {}, expected task {}",
                c.state.task,
                t.task
            );
        }
        let split = |prefix: &str| -> BTreeMap<String, Tensor<B::InnerBackend, 2>> {
            c.tensors
                .iter()
                .filter_map(|(n, v)| n.strip_prefix(prefix).map(|r| (r.to_string(), v.clone())))
                .collect()
        };
        let k = t.task;
        set_task_pairs(&mut t.unet, k, &split(STUDENT), |v| {
            Tensor::from_inner(v).require_grad()
        })?;
        set_task_pairs(&mut t.teacher, k, &split(TEACHER), |v| v)?;
        let pairs = task_pairs(&t.teacher, k);
        for (prefix, moments) in [(MOMENT1, split(MOMENT1)), (MOMENT2, split(MOMENT2))] {
            for (name, m) in &moments {
                match pairs.get(name) {
                    Some(p) if p.dims() == m.dims() => {}
                    Some(p) => bail!(
                        "checkpoint tensor {prefix}{name} has shape {:?}, the pair has {:?}",
                        m.dims(),
                        p.dims()
                    ),
                    None => bail!("checkpoint tensor {prefix}{name} names no pair of the model"),
                }
            }
        }
        t.adam.m = split(MOMENT1);
        t.adam.v = split(MOMENT2);
        t.adam.step = c.state.adam_step;
        t.step = c.state.step;
        Ok(t)
    }

    /// The checkpoint of the current state: the student's and teacher's pairs of this task and
    /// AdamW's moments, by name, and the counters.
    pub fn to_checkpoint(&self, done: bool, config_hash: &str) -> Checkpoint<B::InnerBackend> {
        let mut tensors = BTreeMap::new();
        for (n, t) in task_pairs(&self.unet, self.task) {
            tensors.insert(format!("{STUDENT}{n}"), t.inner());
        }
        for (n, t) in task_pairs(&self.teacher, self.task) {
            tensors.insert(format!("{TEACHER}{n}"), t);
        }
        for (n, t) in &self.adam.m {
            tensors.insert(format!("{MOMENT1}{n}"), t.clone());
        }
        for (n, t) in &self.adam.v {
            tensors.insert(format!("{MOMENT2}{n}"), t.clone());
        }
        Checkpoint {
            state: CheckpointState {
                task: self.task,
                step: self.step,
                adam_step: self.adam.step,
                done,
                config_hash: config_hash.to_string(),
            },
            tensors,
        }
    }

    /// Writes [`Trainer::to_checkpoint`] to `path` atomically.
    pub fn save_checkpoint(&self, path: &Path, done: bool, config_hash: &str) -> Result<()> {
        let c = self.to_checkpoint(done, config_hash);
        crate::checkpoint::save(path, &c.state, &c.tensors)
    }

    /// The task's index (its pair's index in the LoRA group).
    pub fn task(&self) -> usize {
        self.task
    }

    /// Optimiser steps done in this task.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// The student.
    pub fn unet(&self) -> &UNet2DConditionModel<B> {
        &self.unet
    }

    /// The EMA teacher.
    pub fn teacher(&self) -> &UNet2DConditionModel<B::InnerBackend> {
        &self.teacher
    }

    /// One optimiser step over `batch` (its micro-batches' gradients are averaged): the losses
    /// and their backward passes, clipping, AdamW on this task's pair, then the EMA update. A
    /// non-finite loss, reward, distillation term or gradient norm is an error and changes
    /// nothing. With `profile`, each phase waits for its device work and is timed.
    pub fn step(
        &mut self,
        frozen: &Frozen<B>,
        batch: Vec<MicroBatch<B::InnerBackend>>,
        profile: bool,
    ) -> Result<StepRecord> {
        if batch.is_empty() {
            bail!("a step needs at least one micro-batch");
        }
        let _span = tracing::info_span!("train_step", task = self.task, step = self.step).entered();
        let start = Instant::now();
        let mut clock = Clock::new(profile);
        let mut phases = Phases::default();
        let micro = batch.len();
        let mut grads = BTreeMap::new();
        let (mut loss_sum, mut distill_sum) = (0.0, 0.0);
        let mut rewards = Vec::new();
        for mb in batch {
            let (out, p) = step_gradients_timed(
                &self.unet,
                &self.teacher,
                self.settings.objective,
                frozen,
                mb,
                &mut clock,
            )?;
            phases.add(&p);
            loss_sum += out.loss;
            distill_sum += out.distill;
            rewards.extend(out.rewards);
            accumulate_grads(&self.unet, self.task, &out.grads, &mut grads)?;
        }
        let scale = 1.0 / micro as f64;
        let s = self.settings;
        let grad_norm = {
            let _span = tracing::debug_span!("optimiser").entered();
            apply_update(
                &mut self.unet,
                &mut self.teacher,
                &mut self.adam,
                self.task,
                grads,
                &UpdateParams {
                    grad_scale: scale,
                    lr: s.lr,
                    weight_decay: s.weight_decay,
                    grad_clip: s.grad_clip,
                    ema_momentum: s.ema_momentum,
                },
            )?
        };
        if profile {
            // Wait for the new teacher pair before reading the clock.
            if let Some(t) = task_pairs(&self.teacher, self.task).into_values().next() {
                phases.optimiser = clock.lap(&t);
            }
        }
        let n = rewards.len() as f64;
        let mean = rewards.iter().map(|&r| r as f64).sum::<f64>() / n;
        let var = rewards
            .iter()
            .map(|&r| (r as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let record = StepRecord {
            step: self.step,
            loss: loss_sum * scale,
            rewards,
            reward_mean: mean,
            reward_std: var.sqrt(),
            distill: distill_sum * scale,
            grad_norm,
            seconds: start.elapsed().as_secs_f64(),
            phases,
        };
        self.step += 1;
        Ok(record)
    }

    /// Writes the task's pair as `DIR/lora.safetensors` and the teacher's as
    /// `DIR/ema.safetensors` (peft keys).
    pub fn export(&self, dir: &Path) -> Result<()> {
        export_task(&self.unet, self.task, "unet", &dir.join("lora.safetensors"))?;
        export_task(
            &self.teacher,
            self.task,
            "unet",
            &dir.join("ema.safetensors"),
        )
        .with_context(|| format!("task {}: cannot export the EMA teacher", self.task))?;
        Ok(())
    }

    /// The student with every pair frozen (the next task's starting model).
    pub fn into_unet(self) -> UNet2DConditionModel<B> {
        self.unet.no_grad()
    }
}

/// Tensor-name prefixes in a checkpoint.
const STUDENT: &str = "student.";
const TEACHER: &str = "teacher.";
const MOMENT1: &str = "m.";
const MOMENT2: &str = "v.";

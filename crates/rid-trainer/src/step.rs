//! One micro-batch's loss, as in the paper: DDIM steps N..2 without an autodiff graph (on the
//! inner backend), the last step with autodiff and classifier-free guidance, the VAE decode and
//! the reward; RID adds the EMA teacher's last step from the same z₁ and λ·MSE(z₀ student, z₀
//! teacher). Each phase can be timed (see [`Phases`]). With gradient checkpointing
//! ([`Frozen::checkpointing`]) the reward, the decode and the last step keep no activations for
//! the backward pass: each runs forward without a graph, then again with one, segment by
//! segment from the reward back, as `torch.utils.checkpoint` does.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rewards::Reward;
use sd_model::noise::NoiseRng;
use sd_model::{AutoencoderKL, Conditioning, DdimScheduler, UNet2DConditionModel, denoise};

/// How a task's loss is made. A new method is a new variant; every `match` on it is where the
/// method must say what it does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// The adapted baseline: −mean R through the last DDIM step.
    Baseline,
    /// RID: the baseline's loss plus `lambda` · MSE(z₀ student, z₀ EMA teacher) from the same z₁.
    Rid { lambda: f64 },
}

/// What one micro-batch needs.
pub struct MicroBatch<Bk: Backend> {
    /// The prompts' conditioning (with the guidance scale).
    pub cond: Conditioning<Bk>,
    /// Initial noise z_N [b, 4, h, w].
    pub z_n: Tensor<Bk, 4>,
    /// One prompt per image (for prompt-conditioned rewards).
    pub prompts: Vec<String>,
    /// Source of DDIM's eta noise.
    pub noise_seed: u64,
}

/// The frozen parts of a step: VAE, reward and schedule.
pub struct Frozen<'a, B: AutodiffBackend> {
    pub vae: &'a AutoencoderKL<B>,
    pub reward: &'a dyn Reward<B>,
    pub scheduler: &'a DdimScheduler,
    pub eta: f64,
    /// Gradient checkpointing: peak memory is the largest of the reward's, the decode's and the
    /// last UNet step's graphs instead of their sum, for one more forward of the last step and
    /// of the decode. The gradients are the same bits (the same ops in the same order).
    pub checkpointing: bool,
}

/// The loss and its terms.
pub struct StepOutput<B: Backend> {
    /// −mean R (+ λ·MSE for RID), with its autodiff graph.
    pub loss: Tensor<B, 1>,
    /// Reward of each image.
    pub rewards: Vec<f32>,
    /// The distillation MSE (0 for the baseline).
    pub distill: f64,
}

/// What one micro-batch's backward pass gives.
pub struct StepGradients<B: AutodiffBackend> {
    /// The gradients of the student's trainable parameters.
    pub grads: B::Gradients,
    /// −mean R (+ λ·MSE for RID).
    pub loss: f64,
    /// Reward of each image.
    pub rewards: Vec<f32>,
    /// The distillation MSE (0 for the baseline).
    pub distill: f64,
}

/// Seconds spent in each phase of a step, summed over its micro-batches. Only measured when
/// profiling: each phase then waits for its device work to finish, which costs a little on a
/// GPU, so it is off by default (the phases stay 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Phases {
    /// DDIM steps N..2, no autodiff.
    pub sampling: f64,
    /// The last DDIM step with autodiff.
    pub last_step: f64,
    pub decode: f64,
    pub reward: f64,
    /// The EMA teacher's last step and the MSE (RID).
    pub distill: f64,
    pub backward: f64,
    /// Gradient averaging and clipping, AdamW and the EMA update.
    pub optimiser: f64,
}

impl Phases {
    /// The phases with their names, in step order.
    pub fn named(&self) -> [(&'static str, f64); 7] {
        [
            ("sampling", self.sampling),
            ("last_step", self.last_step),
            ("decode", self.decode),
            ("reward", self.reward),
            ("distill", self.distill),
            ("backward", self.backward),
            ("optimiser", self.optimiser),
        ]
    }

    /// Adds `other` phase by phase.
    pub fn add(&mut self, other: &Phases) {
        self.sampling += other.sampling;
        self.last_step += other.last_step;
        self.decode += other.decode;
        self.reward += other.reward;
        self.distill += other.distill;
        self.backward += other.backward;
        self.optimiser += other.optimiser;
    }
}

/// A stopwatch over the phases that waits for a phase's tensor before reading the clock.
pub(crate) struct Clock {
    on: bool,
    last: Instant,
}

impl Clock {
    pub(crate) fn new(on: bool) -> Self {
        Self {
            on,
            last: Instant::now(),
        }
    }

    /// Seconds since the previous lap, after `t`'s work is done (0 when off).
    pub(crate) fn lap<Bk: Backend, const D: usize>(&mut self, t: &Tensor<Bk, D>) -> f64 {
        if !self.on {
            return 0.0;
        }
        // Reading one value waits for the work that produced `t` (GPU backends are async).
        let _ = t.clone().flatten::<1>(0, D - 1).slice(0..1).into_data();
        self.seconds()
    }

    /// Seconds since the previous lap (for phases that already waited).
    pub(crate) fn seconds(&mut self) -> f64 {
        if !self.on {
            return 0.0;
        }
        let now = Instant::now();
        let s = (now - self.last).as_secs_f64();
        self.last = now;
        s
    }
}

/// The loss of one micro-batch for `student`, with `teacher` the EMA copy (used by RID only), with
/// its whole graph (whatever [`Frozen::checkpointing`] says; [`step_gradients`] honours it).
pub fn step_loss<B: AutodiffBackend>(
    student: &UNet2DConditionModel<B>,
    teacher: &UNet2DConditionModel<B::InnerBackend>,
    objective: Objective,
    frozen: &Frozen<B>,
    batch: MicroBatch<B::InnerBackend>,
) -> Result<StepOutput<B>> {
    Ok(step_loss_timed(
        student,
        teacher,
        objective,
        frozen,
        batch,
        &mut Clock::new(false),
    )?
    .0)
}

/// The loss of one micro-batch and the gradients of the student's trainable parameters, with
/// gradient checkpointing when [`Frozen::checkpointing`] asks for it. A non-finite loss is an
/// error.
pub fn step_gradients<B: AutodiffBackend>(
    student: &UNet2DConditionModel<B>,
    teacher: &UNet2DConditionModel<B::InnerBackend>,
    objective: Objective,
    frozen: &Frozen<B>,
    batch: MicroBatch<B::InnerBackend>,
) -> Result<StepGradients<B>> {
    Ok(step_gradients_timed(
        student,
        teacher,
        objective,
        frozen,
        batch,
        &mut Clock::new(false),
    )?
    .0)
}

/// [`step_gradients`] with its phases timed on `clock` (with checkpointing, the recomputed
/// forwards count as backward).
pub(crate) fn step_gradients_timed<B: AutodiffBackend>(
    student: &UNet2DConditionModel<B>,
    teacher: &UNet2DConditionModel<B::InnerBackend>,
    objective: Objective,
    frozen: &Frozen<B>,
    batch: MicroBatch<B::InnerBackend>,
    clock: &mut Clock,
) -> Result<(StepGradients<B>, Phases)> {
    if frozen.checkpointing {
        return checkpointed(student, teacher, objective, frozen, batch, clock);
    }
    let (out, mut phases) = step_loss_timed(student, teacher, objective, frozen, batch, clock)?;
    let loss = finite_loss(&out.loss)?;
    let grads = {
        let _span = tracing::debug_span!("backward").entered();
        out.loss.backward()
    };
    phases.backward = clock.seconds();
    Ok((
        StepGradients {
            grads,
            loss,
            rewards: out.rewards,
            distill: out.distill,
        },
        phases,
    ))
}

/// [`step_loss`] with its phases timed on `clock`.
pub(crate) fn step_loss_timed<B: AutodiffBackend>(
    student: &UNet2DConditionModel<B>,
    teacher: &UNet2DConditionModel<B::InnerBackend>,
    objective: Objective,
    frozen: &Frozen<B>,
    batch: MicroBatch<B::InnerBackend>,
    clock: &mut Clock,
) -> Result<(StepOutput<B>, Phases)> {
    let mut phases = Phases::default();
    let (z1, rng) = sample_to_z1(student, frozen, &batch);
    phases.sampling = clock.lap(&z1);
    let cond = batch.cond.map(Tensor::<B, 3>::from_inner);
    let z0s = last_step(student, frozen, &cond, Tensor::from_inner(z1.clone()), &rng);
    phases.last_step = clock.lap(&z0s);
    let image = {
        let _span = tracing::debug_span!("decode").entered();
        frozen.vae.decode_latents(z0s.clone())
    };
    phases.decode = clock.lap(&image);
    let r = {
        let _span = tracing::debug_span!("reward").entered();
        frozen.reward.score(image, &batch.prompts)?
    };
    let rewards = reward_values(&r, &batch.prompts)?;
    phases.reward = clock.seconds();
    let mut loss = r.mean().neg();
    let mut distill = 0.0;
    if let Objective::Rid { lambda } = objective {
        let (mse, value) = distillation(teacher, frozen, &batch.cond, z1, &rng, z0s)?;
        distill = value;
        loss = loss + mse * lambda;
        phases.distill = clock.seconds();
    }
    Ok((
        StepOutput {
            loss,
            rewards,
            distill,
        },
        phases,
    ))
}

/// The checkpointed step: forward to the reward without a graph, then the reward's, the
/// decode's and the last step's graphs one at a time, each backward pass seeding the next with
/// its input's gradient (Σ output ∘ gradient has exactly that gradient).
fn checkpointed<B: AutodiffBackend>(
    student: &UNet2DConditionModel<B>,
    teacher: &UNet2DConditionModel<B::InnerBackend>,
    objective: Objective,
    frozen: &Frozen<B>,
    batch: MicroBatch<B::InnerBackend>,
    clock: &mut Clock,
) -> Result<(StepGradients<B>, Phases)> {
    let mut phases = Phases::default();
    let (z1, rng) = sample_to_z1(student, frozen, &batch);
    phases.sampling = clock.lap(&z1);
    let cond = batch.cond.clone().map(Tensor::<B, 3>::from_inner);
    // The forward runs the autodiff backend's ops with nothing tracked (not the inner
    // backend's, whose kernels may round differently), so the recomputed graphs see the same
    // values as this forward and as the unsegmented step.
    let z0 = last_step(
        &student.clone().no_grad(),
        frozen,
        &cond,
        Tensor::from_inner(z1.clone()),
        &rng,
    )
    .inner();
    phases.last_step = clock.lap(&z0);
    let image = {
        let _span = tracing::debug_span!("decode").entered();
        frozen
            .vae
            .decode_latents(Tensor::<B, 4>::from_inner(z0.clone()))
            .inner()
    };
    phases.decode = clock.lap(&image);
    let image = Tensor::<B, 4>::from_inner(image).require_grad();
    let r = {
        let _span = tracing::debug_span!("reward").entered();
        frozen.reward.score(image.clone(), &batch.prompts)?
    };
    let rewards = reward_values(&r, &batch.prompts)?;
    let reward_loss = r.mean().neg();
    phases.reward = clock.seconds();
    let mut loss = reward_loss.clone().inner();
    let _span = tracing::debug_span!("backward").entered();
    let grad_image = input_grad(reward_loss, &image, "image")?;
    let z0 = Tensor::<B, 4>::from_inner(z0).require_grad();
    let decoded = frozen.vae.decode_latents(z0.clone());
    let grad_z0 = input_grad(
        (decoded * Tensor::from_inner(grad_image)).sum(),
        &z0,
        "latents",
    )?;
    phases.backward = clock.seconds();
    let z0s = last_step(student, frozen, &cond, Tensor::from_inner(z1.clone()), &rng);
    let mut total = (z0s.clone() * Tensor::from_inner(grad_z0)).sum();
    let mut distill = 0.0;
    if let Objective::Rid { lambda } = objective {
        let (mse, value) = distillation(teacher, frozen, &batch.cond, z1, &rng, z0s)?;
        distill = value;
        loss = loss + mse.clone().inner() * lambda;
        total = total + mse * lambda;
    }
    let loss = finite_loss(&loss)?;
    let grads = total.backward();
    phases.backward += clock.seconds();
    Ok((
        StepGradients {
            grads,
            loss,
            rewards,
            distill,
        },
        phases,
    ))
}

/// DDIM steps N..2 without a graph; the noise source after them (the last step's, and the
/// teacher's, which draws the same eta noise).
fn sample_to_z1<B: AutodiffBackend>(
    student: &UNet2DConditionModel<B>,
    frozen: &Frozen<B>,
    batch: &MicroBatch<B::InnerBackend>,
) -> (Tensor<B::InnerBackend, 4>, NoiseRng) {
    let _span = tracing::debug_span!("sampling").entered();
    let n = frozen.scheduler.timesteps.len();
    let mut rng = NoiseRng::new(batch.noise_seed);
    let z1 = denoise(
        &student.valid(),
        frozen.scheduler,
        &batch.cond,
        batch.z_n.clone(),
        0..n - 1,
        frozen.eta,
        &mut rng,
        |_| {},
    );
    (z1, rng)
}

/// The last DDIM step of `unet` from `z1`, drawing eta noise from a copy of `rng`.
fn last_step<Bk: Backend, B: AutodiffBackend>(
    unet: &UNet2DConditionModel<Bk>,
    frozen: &Frozen<B>,
    cond: &Conditioning<Bk>,
    z1: Tensor<Bk, 4>,
    rng: &NoiseRng,
) -> Tensor<Bk, 4> {
    let _span = tracing::debug_span!("last_step").entered();
    let n = frozen.scheduler.timesteps.len();
    denoise(
        unet,
        frozen.scheduler,
        cond,
        z1,
        n - 1..n,
        frozen.eta,
        &mut rng.clone(),
        |_| {},
    )
}

/// λ's factor: MSE(z₀ student, z₀ teacher) with the teacher's last step from the same z₁, and
/// its value (non-finite is an error).
fn distillation<B: AutodiffBackend>(
    teacher: &UNet2DConditionModel<B::InnerBackend>,
    frozen: &Frozen<B>,
    cond: &Conditioning<B::InnerBackend>,
    z1: Tensor<B::InnerBackend, 4>,
    rng: &NoiseRng,
    z0s: Tensor<B, 4>,
) -> Result<(Tensor<B, 1>, f64)> {
    let _span = tracing::debug_span!("distill").entered();
    let z0t = last_step(teacher, frozen, cond, z1, rng);
    let diff = z0s - Tensor::from_inner(z0t);
    let mse = (diff.clone() * diff).mean();
    let value = mse.clone().inner().into_scalar().elem::<f64>();
    if !value.is_finite() {
        bail!("non-finite distillation term {value}");
    }
    Ok((mse, value))
}

/// The rewards as numbers; a non-finite one is an error naming its image and prompt.
fn reward_values<Bk: Backend>(r: &Tensor<Bk, 1>, prompts: &[String]) -> Result<Vec<f32>> {
    let rewards: Vec<f32> = r
        .clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| anyhow::anyhow!("cannot read the rewards: {e:?}"))?;
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        bail!(
            "non-finite reward {} of image {i} (prompt {:?})",
            rewards[i],
            prompts.get(i).map(String::as_str).unwrap_or("")
        );
    }
    Ok(rewards)
}

/// The value of a one-element loss; non-finite is an error.
fn finite_loss<Bk: Backend>(loss: &Tensor<Bk, 1>) -> Result<f64> {
    let value = loss.clone().into_scalar().elem::<f64>();
    if !value.is_finite() {
        bail!("the loss is {value}");
    }
    Ok(value)
}

/// The gradient of `loss` with respect to `input` (a tensor marked `require_grad`).
fn input_grad<B: AutodiffBackend, const D: usize>(
    loss: Tensor<B, 1>,
    input: &Tensor<B, D>,
    what: &str,
) -> Result<Tensor<B::InnerBackend, D>> {
    let grads = loss.backward();
    input
        .grad(&grads)
        .with_context(|| format!("the reward gives no gradient for the {what}"))
}

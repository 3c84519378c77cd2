//! One micro-batch's loss, as in the paper: DDIM steps N..2 without an autodiff graph (on the
//! inner backend), the last step with autodiff and classifier-free guidance, the VAE decode and
//! the reward; RID adds the EMA teacher's last step from the same z₁ and λ·MSE(z₀ student, z₀
//! teacher). Each phase can be timed (see [`Phases`]).

use std::time::Instant;

use anyhow::{Result, bail};
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

/// The loss of one micro-batch for `student`, with `teacher` the EMA copy (used by RID only).
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
    let scheduler = frozen.scheduler;
    let n = scheduler.timesteps.len();
    let mut rng = NoiseRng::new(batch.noise_seed);
    let z1 = {
        let _span = tracing::debug_span!("sampling").entered();
        denoise(
            &student.valid(),
            scheduler,
            &batch.cond,
            batch.z_n,
            0..n - 1,
            frozen.eta,
            &mut rng,
            |_| {},
        )
    };
    phases.sampling = clock.lap(&z1);
    // The teacher's last step draws the same eta noise as the student's.
    let teacher_rng = rng.clone();
    let z0s = {
        let _span = tracing::debug_span!("last_step").entered();
        let cond = batch.cond.map(Tensor::<B, 3>::from_inner);
        denoise(
            student,
            scheduler,
            &cond,
            Tensor::from_inner(z1.clone()),
            n - 1..n,
            frozen.eta,
            &mut rng,
            |_| {},
        )
    };
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
    let rewards: Vec<f32> = r
        .clone()
        .inner()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32");
    phases.reward = clock.seconds();
    if let Some(i) = rewards.iter().position(|r| !r.is_finite()) {
        bail!(
            "non-finite reward {} of image {i} (prompt {:?})",
            rewards[i],
            batch.prompts.get(i).map(String::as_str).unwrap_or("")
        );
    }
    let mut loss = r.mean().neg();
    let mut distill = 0.0;
    match objective {
        Objective::Baseline => {}
        Objective::Rid { lambda } => {
            let _span = tracing::debug_span!("distill").entered();
            let z0t = denoise(
                teacher,
                scheduler,
                &batch.cond,
                z1,
                n - 1..n,
                frozen.eta,
                &mut teacher_rng.clone(),
                |_| {},
            );
            let diff = z0s - Tensor::from_inner(z0t);
            let mse = (diff.clone() * diff).mean();
            distill = mse.clone().inner().into_scalar().elem::<f64>();
            if !distill.is_finite() {
                bail!("non-finite distillation term {distill}");
            }
            loss = loss + mse * lambda;
            phases.distill = clock.seconds();
        }
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

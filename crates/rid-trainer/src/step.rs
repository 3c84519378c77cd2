//! One training step's loss, as in the paper: DDIM steps N..2 without an autodiff graph (on the
//! inner backend), the last step with autodiff and classifier-free guidance, the VAE decode and
//! the reward; RID adds the EMA teacher's last step from the same z₁ and λ·MSE(z₀ student, z₀
//! teacher).

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rewards::Reward;
use sd_model::noise::NoiseRng;
use sd_model::{AutoencoderKL, DdimScheduler, UNet2DConditionModel};

/// Guided noise prediction: `uncond + g (cond − uncond)` with the batch doubled, or the plain
/// conditional prediction when `g ≤ 1` (then `context` holds only the prompts' embeddings).
pub fn guided_eps<Bk: Backend>(
    unet: &UNet2DConditionModel<Bk>,
    x: Tensor<Bk, 4>,
    t: usize,
    context: &Tensor<Bk, 3>,
    g: f64,
) -> Tensor<Bk, 4> {
    let b = x.dims()[0];
    let device = x.device();
    if g <= 1.0 {
        let ts = Tensor::<Bk, 1>::full([b], t as f32, &device);
        return unet.forward(x, ts, context.clone());
    }
    let ts = Tensor::<Bk, 1>::full([2 * b], t as f32, &device);
    let out = unet.forward(Tensor::cat(vec![x.clone(), x], 0), ts, context.clone());
    let uncond = out.clone().narrow(0, 0, b);
    let cond = out.narrow(0, b, b);
    uncond.clone() + (cond - uncond) * g
}

/// What one micro-batch needs.
pub struct StepInputs<'a, B: AutodiffBackend> {
    /// `[uncond; cond]` embeddings [2b, 77, D] (or [b, 77, D] without guidance).
    pub context: Tensor<B::InnerBackend, 3>,
    /// Initial noise z_N [b, 4, h, w].
    pub z_n: Tensor<B::InnerBackend, 4>,
    /// One prompt per image (for prompt-conditioned rewards).
    pub prompts: &'a [String],
    /// Source of DDIM's eta noise.
    pub noise_seed: u64,
}

/// The method's constants for the step.
#[derive(Debug, Clone, Copy)]
pub struct StepParams {
    pub guidance: f64,
    pub eta: f64,
    /// Distillation weight (ignored without a teacher).
    pub lambda: f64,
}

/// The loss and its terms.
pub struct StepOutput<B: Backend> {
    /// −mean R + λ·MSE (autodiff).
    pub loss: Tensor<B, 1>,
    /// Reward of each image.
    pub rewards: Vec<f32>,
    /// The distillation MSE (0 without a teacher).
    pub distill: f64,
}

/// z₁ from z_N by DDIM steps N..2 without autodiff.
pub fn sample_to_last<Bk: Backend>(
    unet: &UNet2DConditionModel<Bk>,
    scheduler: &DdimScheduler,
    inputs_context: &Tensor<Bk, 3>,
    mut x: Tensor<Bk, 4>,
    p: StepParams,
    rng: &mut NoiseRng,
) -> Tensor<Bk, 4> {
    let n = scheduler.timesteps.len();
    let shape = x.dims();
    let device = x.device();
    for &t in &scheduler.timesteps[..n - 1] {
        let eps = guided_eps(unet, x.clone(), t, inputs_context, p.guidance);
        let noise = (p.eta > 0.0).then(|| rng.tensor::<Bk, 4>(shape, &device));
        x = scheduler.step(eps, t, x, p.eta, noise).0;
    }
    x
}

/// The step's loss for one micro-batch.
#[allow(clippy::too_many_arguments)]
pub fn step_loss<B: AutodiffBackend>(
    student: &UNet2DConditionModel<B>,
    teacher: Option<&UNet2DConditionModel<B::InnerBackend>>,
    vae: &AutoencoderKL<B>,
    reward: &dyn Reward<B>,
    scheduler: &DdimScheduler,
    inputs: StepInputs<B>,
    p: StepParams,
) -> Result<StepOutput<B>> {
    let mut rng = NoiseRng::new(inputs.noise_seed);
    let inner = student.valid();
    let z1 = sample_to_last(&inner, scheduler, &inputs.context, inputs.z_n, p, &mut rng);
    let t = *scheduler.timesteps.last().expect("at least one timestep");
    let shape = z1.dims();
    let device = z1.device();
    let last_noise = (p.eta > 0.0).then(|| rng.tensor::<B::InnerBackend, 4>(shape, &device));
    let ctx = Tensor::<B, 3>::from_inner(inputs.context.clone());
    let eps = guided_eps(student, Tensor::from_inner(z1.clone()), t, &ctx, p.guidance);
    let (z0s, _) = scheduler.step(
        eps,
        t,
        Tensor::from_inner(z1.clone()),
        p.eta,
        last_noise.clone().map(Tensor::from_inner),
    );
    let image = vae.decode_latents(z0s.clone());
    let r = reward.score(image, inputs.prompts)?;
    let rewards: Vec<f32> = r
        .clone()
        .inner()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .expect("f32");
    let mut loss = r.mean().neg();
    let mut distill = 0.0;
    if let Some(teacher) = teacher {
        let eps_t = guided_eps(teacher, z1.clone(), t, &inputs.context, p.guidance);
        let (z0t, _) = scheduler.step(eps_t, t, z1, p.eta, last_noise);
        let diff = z0s - Tensor::from_inner(z0t);
        let mse = (diff.clone() * diff).mean();
        distill = mse.clone().inner().into_scalar().elem::<f64>();
        loss = loss + mse * p.lambda;
    }
    if rewards.iter().any(|r| !r.is_finite()) {
        bail!("non-finite reward {rewards:?}");
    }
    if !distill.is_finite() {
        bail!("non-finite distillation term {distill}");
    }
    Ok(StepOutput {
        loss,
        rewards,
        distill,
    })
}

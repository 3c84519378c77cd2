//! The one guided DDIM sampler of ril: classifier-free guidance's noise prediction and denoising
//! from one step of a schedule to another, on any backend (the pipeline and eval run it without
//! autodiff; the trainer runs steps N..2 on the inner backend and the last one with autodiff).

use std::ops::Range;

use burn::prelude::*;

use crate::ddim::DdimScheduler;
use crate::noise::NoiseRng;
use crate::unet::UNet2DConditionModel;

/// The UNet's text conditioning with its guidance scale: `[uncond; cond]` embeddings
/// [2b, L, D] when the scale is above 1 (classifier-free guidance), else the prompts' own
/// [b, L, D].
#[derive(Debug, Clone)]
pub struct Conditioning<B: Backend> {
    pub context: Tensor<B, 3>,
    /// Classifier-free guidance scale; ≤ 1 disables guidance.
    pub scale: f64,
}

impl<B: Backend> Conditioning<B> {
    /// From the prompts' embeddings `cond` [b, L, D] and the negative prompts' `uncond`
    /// ([b, L, D], or [1, L, D] for one negative prompt shared by the batch); `uncond` is only
    /// used when `scale > 1`.
    pub fn new(cond: Tensor<B, 3>, uncond: Tensor<B, 3>, scale: f64) -> Self {
        if scale <= 1.0 {
            return Self {
                context: cond,
                scale,
            };
        }
        let [b, l, d] = cond.dims();
        let uncond = if uncond.dims()[0] == b {
            uncond
        } else {
            uncond.expand([b, l, d])
        };
        Self {
            context: Tensor::cat(vec![uncond, cond], 0),
            scale,
        }
    }

    /// Whether the batch is doubled for guidance.
    pub fn guided(&self) -> bool {
        self.scale > 1.0
    }

    /// The same conditioning on another backend (e.g. the autodiff one for the trained step).
    pub fn map<C: Backend>(&self, f: impl FnOnce(Tensor<B, 3>) -> Tensor<C, 3>) -> Conditioning<C> {
        Conditioning {
            context: f(self.context.clone()),
            scale: self.scale,
        }
    }
}

/// Guided noise prediction at timestep `t`: `uncond + g (cond − uncond)` from one UNet call on
/// the doubled batch, or the plain conditional prediction without guidance.
pub fn guided_eps<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    x: Tensor<B, 4>,
    t: usize,
    cond: &Conditioning<B>,
) -> Tensor<B, 4> {
    let b = x.dims()[0];
    let device = x.device();
    if !cond.guided() {
        let ts = Tensor::<B, 1>::full([b], t as f32, &device);
        return unet.forward(x, ts, cond.context.clone());
    }
    let ts = Tensor::<B, 1>::full([2 * b], t as f32, &device);
    let out = unet.forward(Tensor::cat(vec![x.clone(), x], 0), ts, cond.context.clone());
    let uncond = out.clone().narrow(0, 0, b);
    let text = out.narrow(0, b, b);
    uncond.clone() + (text - uncond) * cond.scale
}

/// Runs the DDIM steps `steps` (indices into `scheduler.timesteps`; `0..n` is a whole sampling
/// run) from `x`, drawing eta's noise from `rng` once per step (only when `eta > 0`), and calls
/// `progress(i)` after step `i`. Returns the latents after the last step of the range.
#[allow(clippy::too_many_arguments)] // each is its own concept; a struct would only rename them
pub fn denoise<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    scheduler: &DdimScheduler,
    cond: &Conditioning<B>,
    mut x: Tensor<B, 4>,
    steps: Range<usize>,
    eta: f64,
    rng: &mut NoiseRng,
    mut progress: impl FnMut(usize),
) -> Tensor<B, 4> {
    let shape = x.dims();
    let device = x.device();
    for i in steps {
        let _span = tracing::trace_span!("ddim_step", i).entered();
        let t = scheduler.timesteps[i];
        let eps = guided_eps(unet, x.clone(), t, cond);
        let noise = (eta > 0.0).then(|| rng.tensor::<B, 4>(shape, &device));
        x = scheduler.step(eps, t, x, eta, noise).0;
        progress(i);
    }
    x
}

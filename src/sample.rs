//! `ril sample`: generates images with a Stable Diffusion 1.x pipeline folder (or hub id), from a
//! seed or a latents file, optionally with LoRA files stacked on the UNet.

use std::path::PathBuf;

use anyhow::{Context, Result};
use burn::prelude::*;
use clap::ArgGroup;
use sd_model::backend::BackendKind;
use sd_model::pipeline::{
    InitLatents, LatentSpace, SampleRequest, StableDiffusion, save_png, to_rgb8,
};

use crate::cli::{one_of, text};

/// Generates images with a Stable Diffusion 1.x pipeline.
///
/// diffusers' StableDiffusionPipeline with DDIMScheduler. Give exactly one of --seed and --latents. Writes DIR/000.png, DIR/001.png, ... in prompt
/// order.
#[derive(Debug, Clone, PartialEq, clap::Args)]
#[command(
    group(ArgGroup::new("init").required(true).args(["seed", "latents"])),
    allow_negative_numbers = true
)]
pub struct SampleArgs {
    /// A diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    /// scheduler/) or a hub id such as stable-diffusion-v1-5/stable-diffusion-v1-5.
    #[arg(long, value_name = "DIR_OR_REPO", value_parser = text())]
    pub model: String,
    /// A prompt; repeat it for several images (one per prompt).
    #[arg(long = "prompt", value_name = "TEXT", required = true, value_parser = text())]
    pub prompts: Vec<String>,
    /// A negative prompt per prompt, or one for all (repeatable) [default: ""].
    #[arg(long = "negative-prompt", value_name = "TEXT", value_parser = text())]
    pub negative_prompts: Vec<String>,
    /// Image height in pixels.
    #[arg(long, value_name = "H", default_value_t = 512)]
    pub height: usize,
    /// Image width in pixels.
    #[arg(long, value_name = "W", default_value_t = 512)]
    pub width: usize,
    /// DDIM steps.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale.
    #[arg(long, value_name = "G", default_value_t = 7.5)]
    pub guidance: f64,
    /// DDIM eta (0: deterministic).
    #[arg(long, value_name = "E", default_value_t = 0.0)]
    pub eta: f64,
    /// Draw the initial latents from ril's seeded generator.
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// A safetensors file with a tensor `latents` of shape [B, C, H/f, W/f] (B = prompts; SD 1.x: C = 4, f = 8).
    #[arg(long, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// The output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A peft/diffusers LoRA file (keys unet.*.lora_A/B.weight) applied to the UNet
    /// (repeatable); several are stacked, each as one task: y = Wx + sum_i s_i B_i A_i x.
    #[arg(long = "lora", value_name = "FILE")]
    pub loras: Vec<PathBuf>,
    /// The backend: cpu (burn-flex), cuda (`--features cuda`), tch-cpu or tch-cuda (LibTorch,
    /// `--features tch`).
    #[arg(long, value_name = "BACKEND", default_value_t = BackendKind::Cpu,
          value_parser = one_of(&BackendKind::ALL, BackendKind::name))]
    pub backend: BackendKind,
}

impl SampleArgs {
    /// The negative prompts, one given for several prompts repeated for each.
    fn negative_prompts(&self) -> Vec<String> {
        match self.negative_prompts.as_slice() {
            [one] if self.prompts.len() > 1 => vec![one.clone(); self.prompts.len()],
            all => all.to_vec(),
        }
    }
}

/// Runs `ril sample`.
pub fn run(a: &SampleArgs) -> Result<()> {
    ril::on_backend!(a.backend, inner, |B, device| sample::<B>(a, &device))
}

fn sample<B: Backend>(a: &SampleArgs, device: &B::Device) -> Result<()> {
    let dir = sd_model::hub::resolve_model(&a.model)?;
    let space = LatentSpace::of_folder(&dir)?;
    let latents = match (&a.latents, a.seed) {
        (Some(path), _) => {
            let shape = space.shape(a.prompts.len(), a.height, a.width);
            InitLatents::Given(sd_model::pipeline::read_latents::<B>(path, shape, device)?)
        }
        (None, seed) => InitLatents::Seed(seed.unwrap_or(0)),
    };
    let req = SampleRequest {
        prompts: a.prompts.clone(),
        negative_prompts: a.negative_prompts(),
        height: a.height,
        width: a.width,
        steps: a.steps,
        guidance: a.guidance,
        eta: a.eta,
        noise_seed: a.seed.unwrap_or(0).wrapping_add(1),
        latents,
    };
    req.validate(space)?;
    let mut model = StableDiffusion::<B>::load(&dir, device)?;
    for lora in &a.loras {
        let info = lora_group::import_task(&mut model.unet, lora, "unet")?;
        eprintln!(
            "LoRA {}: {} layers, rank {}, alpha {}",
            lora.display(),
            info.layers,
            info.rank,
            info.alpha
        );
    }
    let bar = indicatif::ProgressBar::new(a.steps as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps {elapsed}")
            .expect("valid template"),
    );
    bar.set_message("sampling");
    let images = model.sample(&req, device, |i, _| bar.set_position(i as u64))?;
    bar.finish();
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    for (i, img) in to_rgb8(images)?.iter().enumerate() {
        let path = a.out.join(format!("{i:03}.png"));
        save_png(img, &path)?;
        println!("{}", path.display());
    }
    Ok(())
}

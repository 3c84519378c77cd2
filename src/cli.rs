//! Argument parsing and the `sample` command.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use sd_model::load::SafetensorsFile;
use sd_model::pipeline::{InitLatents, SampleRequest, StableDiffusion, save_png, to_rgb8};

const USAGE: &str = "\
usage: ril sample --model DIR_OR_REPO --prompt TEXT [--prompt TEXT ...]
                  [--negative-prompt TEXT ...] [--height H] [--width W] [--steps N]
                  [--guidance G] [--eta E] (--seed S | --latents FILE) --out DIR
                  [--lora FILE ...] [--backend cpu|cuda]

  --model     a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
              scheduler/) or a hub id such as runwayml/stable-diffusion-v1-5
  --latents   safetensors file with a tensor `latents` of shape [B, 4, H/8, W/8]
  --lora      a peft/diffusers LoRA file (keys unet.*.lora_A/B.weight) applied to the UNet;
              several are stacked, each as one task: y = Wx + sum_i s_i B_i A_i x
  defaults:   --height 512 --width 512 --steps 50 --guidance 7.5 --eta 0 --backend cpu
  Writes DIR/000.png, DIR/001.png, ... in prompt order.";

/// Options of `ril sample`.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleArgs {
    pub model: String,
    pub prompts: Vec<String>,
    pub negative_prompts: Vec<String>,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    pub guidance: f64,
    pub eta: f64,
    pub seed: Option<u64>,
    pub latents: Option<PathBuf>,
    pub out: PathBuf,
    pub loras: Vec<PathBuf>,
    pub backend: String,
}

/// Parses `ril sample` arguments.
pub fn parse_sample(args: &[String]) -> Result<SampleArgs> {
    let mut a = SampleArgs {
        model: String::new(),
        prompts: Vec::new(),
        negative_prompts: Vec::new(),
        height: 512,
        width: 512,
        steps: 50,
        guidance: 7.5,
        eta: 0.0,
        seed: None,
        latents: None,
        out: PathBuf::new(),
        loras: Vec::new(),
        backend: "cpu".into(),
    };
    let mut f = ril::args::Flags::new(args, USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--model" => a.model = f.value(flag)?,
            "--prompt" => a.prompts.push(f.value(flag)?),
            "--negative-prompt" => a.negative_prompts.push(f.value(flag)?),
            "--height" => a.height = f.parse(flag)?,
            "--width" => a.width = f.parse(flag)?,
            "--steps" => a.steps = f.parse(flag)?,
            "--guidance" => a.guidance = f.parse(flag)?,
            "--eta" => a.eta = f.parse(flag)?,
            "--seed" => a.seed = Some(f.parse(flag)?),
            "--latents" => a.latents = Some(PathBuf::from(f.value(flag)?)),
            "--out" => a.out = PathBuf::from(f.value(flag)?),
            "--lora" => a.loras.push(PathBuf::from(f.value(flag)?)),
            "--backend" => a.backend = f.value(flag)?,
            other => return Err(f.unknown(other)),
        }
    }
    if a.model.is_empty() {
        bail!("--model is required\n{USAGE}");
    }
    if a.prompts.is_empty() {
        bail!("at least one --prompt is required\n{USAGE}");
    }
    if a.out.as_os_str().is_empty() {
        bail!("--out is required\n{USAGE}");
    }
    match (&a.seed, &a.latents) {
        (Some(_), Some(_)) => bail!("give either --seed or --latents, not both"),
        (None, None) => bail!("give --seed S or --latents FILE\n{USAGE}"),
        _ => {}
    }
    if a.negative_prompts.len() == 1 && a.prompts.len() > 1 {
        a.negative_prompts = vec![a.negative_prompts[0].clone(); a.prompts.len()];
    }
    if !matches!(a.backend.as_str(), "cpu" | "cuda") {
        bail!("--backend must be cpu or cuda, got {}", a.backend);
    }
    Ok(a)
}

/// Runs the command line.
pub fn run(args: Vec<String>) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("sample") => {
            let a = parse_sample(&args[1..])?;
            match a.backend.as_str() {
                "cuda" => run_cuda(&a),
                _ => sample::<sd_model::backend::Cpu>(&a, &Default::default()),
            }
        }
        Some("train") => crate::train::run(&args[1..]),
        Some("soup") => crate::soup::run(&args[1..]),
        Some("bench") => crate::bench::run(&args[1..]),
        Some("eval") => crate::eval::run(&args[1..]),
        Some("fid") => crate::fid::run(&args[1..]),
        Some("score") => {
            let a = crate::score::parse(&args[1..])?;
            crate::score::run::<sd_model::backend::Cpu>(&a, &Default::default())
        }
        Some("-h" | "--help" | "help") | None => {
            println!(
                "{USAGE}\n\n{}\n\n{}",
                crate::score::USAGE,
                crate::train::USAGE
            );
            Ok(())
        }
        Some(other) => bail!("unknown command {other}\n{USAGE}"),
    }
}

#[cfg(feature = "cuda-base")]
fn run_cuda(a: &SampleArgs) -> Result<()> {
    sample::<sd_model::backend::Cuda>(a, &sd_model::backend::cuda_device()?)
}

#[cfg(not(feature = "cuda-base"))]
fn run_cuda(_: &SampleArgs) -> Result<()> {
    bail!("this ril was built without CUDA: rebuild with `--features cuda`")
}

/// Reads a latents file: a safetensors tensor `latents` [B, 4, H/8, W/8].
pub fn read_latents<B: Backend>(
    path: &Path,
    expected: [usize; 4],
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let file = SafetensorsFile::open(path)?;
    let shape = file
        .shape("latents")
        .with_context(|| format!("{}: no tensor named `latents`", path.display()))?;
    if shape != expected {
        bail!(
            "{}: tensor `latents` has shape {shape:?}, expected {expected:?} (prompts, 4, height/8, width/8)",
            path.display()
        );
    }
    Ok(file.tensor::<B, 4>("latents", device)?)
}

fn sample<B: Backend>(a: &SampleArgs, device: &B::Device) -> Result<()> {
    let dir = sd_model::hub::resolve_model(&a.model)?;
    let latents = match (&a.latents, a.seed) {
        (Some(path), _) => {
            let shape = [a.prompts.len(), 4, a.height / 8, a.width / 8];
            InitLatents::Given(read_latents::<B>(path, shape, device)?)
        }
        (None, seed) => InitLatents::Seed(seed.unwrap_or(0)),
    };
    let req = SampleRequest {
        prompts: a.prompts.clone(),
        negative_prompts: a.negative_prompts.clone(),
        height: a.height,
        width: a.width,
        steps: a.steps,
        guidance: a.guidance,
        eta: a.eta,
        noise_seed: a.seed.unwrap_or(0).wrapping_add(1),
        latents,
    };
    req.validate()?;
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

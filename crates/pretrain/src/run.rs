//! A pretraining run: checks every input, then trains the VAE (phase 1), measures its latent
//! scale, trains the UNet and the text encoder together (phase 2), and writes the diffusers
//! pipeline folder. Checkpoints are written atomically every `checkpoint_every` steps and at the
//! end of each phase; `--resume` continues from the last one bit for bit.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use sd_model::clip::ClipTextModel;
use sd_model::ddim::{DdimConfig, DdimScheduler};
use sd_model::load::{SafetensorsFile, load_module_from};
use sd_model::noise::NoiseRng;
use sd_model::pipeline::encode_prompts;
use sd_model::tokenizer::ClipTokenizer;
use sd_model::unet::UNet2DConditionModel;
use sd_model::vae::AutoencoderKL;
use serde_json::json;

use crate::config::{Models, PretrainConfig, ReconstructionLoss};
use crate::data::{Source, batch_indices, draw_indices, images_tensor};
use crate::ema::Ema;
use crate::init::{Scheme, initialise, initialise_with};
use crate::optim::{AdamW, clip_factor, grad_norm};
use crate::{output, vocab};

/// How many captions of a stream decide the pruned vocabulary.
const VOCAB_CAPTIONS: u64 = 20_000;
/// Images whose latents set the VAE's scaling factor (1 / their standard deviation, as LDM).
const SCALE_IMAGES: usize = 256;

const PHASE_VAE: u64 = 1;
const PHASE_UNET: u64 = 2;
const STREAM_INIT: u64 = 0x1417;
const STREAM_NOISE: u64 = 0x4015E;
const STREAM_SCALE: u64 = 0x5CA1E;

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub pipeline: PathBuf,
    pub vae_loss: Option<f64>,
    pub unet_loss: Option<f64>,
    pub scaling_factor: f64,
}

/// Where training stands (a checkpoint's position).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Position {
    phase: u64,
    /// Steps done in `phase`.
    step: u64,
}

/// Options of one invocation.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub resume: bool,
    /// Stop (after writing a checkpoint) once this many optimiser steps were taken in this
    /// invocation: used by tests to simulate a kill.
    pub stop_after: Option<u64>,
    pub quiet: bool,
}

/// Runs (or resumes) the pretraining of `config` on `source` in the run folder `out`.
pub fn run<AB: AutodiffBackend>(
    config: &PretrainConfig,
    source: &dyn Source,
    out: &Path,
    options: &RunOptions,
    device: &AB::Device,
) -> Result<Summary> {
    let Prepared {
        models,
        captions,
        scheduler,
    } = preflight(config, source, out, options.resume)?;
    let checkpoint_path = out.join("checkpoint.safetensors");
    let schedule = DdimScheduler::new(scheduler.clone(), 1)?;
    let v_prediction = scheduler.prediction_type == "v_prediction";

    // The tokenizer goes into the run folder first (it decides the text encoder's size).
    let staging = out.join(".staging");
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let tok_dir = staging.join("tokenizer");
    if config.tokenizer.prune_to_captions {
        vocab::prune(&config.tokenizer.base, &captions, &tok_dir)?;
    } else {
        vocab::copy(&config.tokenizer.base, &tok_dir)?;
    }
    let tokenizer = ClipTokenizer::from_dir(&tok_dir)?;
    let mut text_config = models.text.clone();
    if text_config.vocab_size == 0 {
        text_config.vocab_size = vocab_size(&tok_dir)?;
    }

    let seed = config.seed;
    let mut vae: AutoencoderKL<AB> = initialise(
        models.vae.init(device)?,
        NoiseRng::derive(seed, &[STREAM_INIT, 0]),
    );
    if config.vae.logvar_bias != 0.0 {
        vae = with_logvar_bias(vae, config.vae.logvar_bias, device)?;
    }
    let mut unet: UNet2DConditionModel<AB> = initialise_with(
        models.unet.init(device)?,
        NoiseRng::derive(seed, &[STREAM_INIT, 1]),
        if config.unet.zero_init_cross_attention {
            Scheme::TorchZeroCrossAttentionOut
        } else {
            Scheme::Torch
        },
    );
    let mut text: ClipTextModel<AB> = initialise_with(
        text_config.init(device)?,
        NoiseRng::derive(seed, &[STREAM_INIT, 2]),
        Scheme::ClipText {
            hidden: text_config.hidden_size,
            layers: text_config.num_hidden_layers,
        },
    );
    let mut opt: AdamW<AB::InnerBackend> = AdamW::default();
    let mut pos = Position {
        phase: PHASE_VAE,
        step: 0,
    };
    let mut scaling = None;
    let mut ema: Option<Ema<AB::InnerBackend>> = config.unet.ema_decay.map(Ema::new);
    if options.resume {
        let ck = SafetensorsFile::open(&checkpoint_path)?;
        let stored = ck.metadata("config").unwrap_or_default();
        if stored != config.canonical() {
            bail!(
                "{} was written by another configuration ({}); resume it with the config it was started with",
                checkpoint_path.display(),
                differing_fields(&stored, &config.canonical())
            );
        }
        let num = |key: &str| -> Result<f64> {
            ck.metadata(key)
                .and_then(|v| v.parse().ok())
                .with_context(|| {
                    format!(
                        "{}: metadata `{key}` is missing or not a number",
                        checkpoint_path.display()
                    )
                })
        };
        pos = Position {
            phase: num("phase")? as u64,
            step: num("step")? as u64,
        };
        let total = if pos.phase == PHASE_VAE {
            config.vae.steps
        } else {
            config.unet.steps
        };
        if !(pos.phase == PHASE_VAE || pos.phase == PHASE_UNET) || pos.step > total {
            bail!(
                "{}: position phase {} step {} is beyond this config ({total} steps)",
                checkpoint_path.display(),
                pos.phase,
                pos.step
            );
        }
        vae = load_module_from(vae, &ck, &|k: &str| {
            k.strip_prefix("vae.").map(str::to_string)
        })
        .with_context(|| format!("resuming from {}", checkpoint_path.display()))?;
        if pos.phase == PHASE_UNET {
            scaling = Some(num("scaling_factor")?);
            unet = load_module_from(unet, &ck, &|k: &str| {
                k.strip_prefix("unet.").map(str::to_string)
            })
            .with_context(|| format!("resuming from {}", checkpoint_path.display()))?;
            text = load_module_from(text, &ck, &|k: &str| {
                k.strip_prefix("text_encoder.").map(str::to_string)
            })
            .with_context(|| format!("resuming from {}", checkpoint_path.display()))?;
            if let Some(ema) = ema.as_mut() {
                let mut averages = BTreeMap::new();
                for key in ck.keys().filter(|k| k.starts_with("ema.")) {
                    averages.insert(key["ema.".len()..].to_string(), ck.read_f32(key)?);
                }
                ema.load_tensors(num("ema_updates")? as u64, averages, device);
            }
        }
        let mut state = BTreeMap::new();
        for key in ck
            .keys()
            .filter(|k| k.starts_with("opt."))
            .map(str::to_string)
            .collect::<Vec<_>>()
        {
            state.insert(key["opt.".len()..].to_string(), ck.read_f32(&key)?);
        }
        opt.load_tensors(num("opt_step")? as u64, state, device)
            .with_context(|| format!("resuming from {}", checkpoint_path.display()))?;
    }
    let log_path = out.join("metrics.jsonl");
    trim_log(&log_path, pos)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let mut budget = options.stop_after;
    let mut summary = Summary {
        pipeline: out.join("pipeline"),
        vae_loss: None,
        unet_loss: None,
        scaling_factor: 0.0,
    };

    // Phase 1: the VAE.
    if pos.phase == PHASE_VAE {
        let phase = &config.vae;
        let bar = progress(phase.steps, pos.step, "vae", options.quiet);
        while pos.step < phase.steps {
            if budget == Some(0) {
                save_checkpoint(&checkpoint_path, config, pos, None, &vae, None, None, &opt)?;
                return Ok(summary);
            }
            let started = Instant::now();
            let idx = batch_indices(source, seed, PHASE_VAE, pos.step, phase.batch_size);
            let images = idx
                .iter()
                .map(|&i| Ok(source.get(i)?.image))
                .collect::<Result<Vec<_>>>()?;
            let x: Tensor<AB, 4> = images_tensor(&images, config.resolution, device);
            let b = images.len();
            let dist = vae.encode(x.clone());
            let mut rng = NoiseRng::derive(seed, &[STREAM_NOISE, PHASE_VAE, pos.step]);
            let eps: Tensor<AB, 4> = rng.tensor(dist.mean.dims(), device);
            let z = dist.mean.clone() + (dist.logvar.clone() * 0.5).exp() * eps;
            let rec = vae.decode(z);
            let err = rec - x;
            let l1 = err.clone().abs().sum() / b as f64;
            let reconstruction = match phase.reconstruction_loss {
                ReconstructionLoss::L1 => l1.clone(),
                ReconstructionLoss::L2 => err.powf_scalar(2.0).sum() / b as f64,
            };
            let kl = (dist.mean.powf_scalar(2.0) + dist.logvar.clone().exp() - 1.0 - dist.logvar)
                .sum()
                * (0.5 / b as f64);
            let loss = reconstruction + kl.clone() * phase.kl_weight;
            let grads = loss.backward();
            let norm = grad_norm(&[&vae], &grads);
            opt.begin_step();
            let lr = phase
                .lr_schedule
                .lr(phase.lr, phase.warmup_steps, phase.steps, pos.step);
            vae = opt.update(
                vae,
                "vae",
                &grads,
                lr,
                phase.weight_decay,
                clip_factor(norm, phase.max_grad_norm),
            );
            pos.step += 1;
            let pixels = (3 * config.resolution * config.resolution) as f64;
            let l1 = scalar(l1);
            let loss = finite_loss(scalar(loss), "VAE", "vae", pos.step, phase.lr)?;
            summary.vae_loss = Some(loss);
            write_log(
                &mut log,
                json!({
                    "phase": "vae", "step": pos.step, "loss": loss, "l1_per_pixel": l1 / pixels,
                    "kl": scalar(kl), "grad_norm": norm, "secs": started.elapsed().as_secs_f64(),
                }),
            )?;
            bar.inc(1);
            bar.set_message(format!("loss {loss:.1}"));
            budget = budget.map(|n| n - 1);
            if pos.step.is_multiple_of(config.checkpoint_every) || pos.step == phase.steps {
                save_checkpoint(&checkpoint_path, config, pos, None, &vae, None, None, &opt)?;
            }
        }
        bar.finish_and_clear();
        pos = Position {
            phase: PHASE_UNET,
            step: 0,
        };
        opt = AdamW::default();
    }

    // The latent scale, measured once on a fixed set of images.
    let vae_inner = vae.valid();
    let scaling = match scaling {
        Some(s) => s,
        None => latent_scale(&vae_inner, source, config, device)?,
    };
    summary.scaling_factor = scaling;

    // Phase 2: the UNet and the text encoder.
    let phase = &config.unet;
    let bar = progress(phase.steps, pos.step, "unet", options.quiet);
    let alphas = &schedule.alphas_cumprod;
    let inner_device = device.clone();
    let pool = match phase.latent_pool {
        Some(n) if pos.step < phase.steps => {
            Some(encode_pool(&vae_inner, source, config, n, &inner_device)?)
        }
        _ => None,
    };
    while pos.step < phase.steps {
        if budget == Some(0) {
            save_checkpoint(
                &checkpoint_path,
                config,
                pos,
                Some(scaling),
                &vae,
                Some((&unet, &text)),
                ema.as_ref(),
                &opt,
            )?;
            return Ok(summary);
        }
        let started = Instant::now();
        let idx = match &pool {
            Some(p) => draw_indices(seed, PHASE_UNET, pos.step, phase.batch_size, p.len()),
            None => batch_indices(source, seed, PHASE_UNET, pos.step, phase.batch_size),
        };
        let mut rng = NoiseRng::derive(seed, &[STREAM_NOISE, PHASE_UNET, pos.step]);
        let mut images = Vec::with_capacity(idx.len());
        let mut captions = Vec::with_capacity(idx.len());
        for &i in &idx {
            let caption = match &pool {
                Some(p) => p.captions[i as usize].clone(),
                None => {
                    let ex = source.get(i)?;
                    images.push(ex.image);
                    ex.caption
                }
            };
            let drop = rng.uniform_open0() <= config.data.empty_caption_prob;
            captions.push(if drop { String::new() } else { caption });
        }
        let b = idx.len();
        let (mean, logvar) = match &pool {
            Some(p) => p.posteriors(&idx, &inner_device),
            None => {
                let x =
                    images_tensor::<AB::InnerBackend>(&images, config.resolution, &inner_device);
                let dist = vae_inner.encode(x);
                (dist.mean, dist.logvar)
            }
        };
        let eps_vae = rng.tensor(mean.dims(), &inner_device);
        let z0 = (mean + (logvar * 0.5).exp() * eps_vae) * scaling;
        let shape = z0.dims();
        let steps: Vec<usize> = (0..b)
            .map(|_| (rng.next_u64() % alphas.len() as u64) as usize)
            .collect();
        let a: Vec<f32> = steps.iter().map(|&t| alphas[t].sqrt()).collect();
        let s: Vec<f32> = steps.iter().map(|&t| (1.0 - alphas[t]).sqrt()).collect();
        let noise =
            training_noise::<AB::InnerBackend>(&mut rng, shape, phase.noise_offset, &inner_device);
        let col = |v: Vec<f32>| {
            Tensor::<AB::InnerBackend, 4>::from_data(
                TensorData::new(v, [b, 1, 1, 1]),
                &inner_device,
            )
        };
        let xt = z0.clone() * col(a.clone()) + noise.clone() * col(s.clone());
        // The UNet's target: epsilon, or v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) z0
        // (Salimans & Ho 2022; diffusers' `get_velocity`).
        let target = if v_prediction {
            noise * col(a) - z0 * col(s)
        } else {
            noise
        };
        let t = Tensor::<AB, 1>::from_data(
            TensorData::new(steps.iter().map(|&t| t as f32).collect::<Vec<_>>(), [b]),
            device,
        );
        let ctx = encode_prompts(&tokenizer, &text, &captions, device)?;
        let pred = unet.forward(Tensor::from_inner(xt), t, ctx);
        let sq = (pred - Tensor::from_inner(target)).powf_scalar(2.0);
        let loss = match phase.snr_gamma {
            None => sq.mean(),
            Some(gamma) => {
                let w: Vec<f32> = steps
                    .iter()
                    .map(|&t| {
                        let snr = f64::from(alphas[t]) / (1.0 - f64::from(alphas[t]));
                        // diffusers' train_text_to_image: / (SNR + 1) for v-prediction.
                        let denominator = if v_prediction { snr + 1.0 } else { snr };
                        (snr.min(gamma) / denominator) as f32
                    })
                    .collect();
                let w = Tensor::<AB, 1>::from_data(TensorData::new(w, [b]), device);
                let per_sample = sq.reshape([b as i32, -1]).mean_dim(1).reshape([b]);
                (per_sample * w).mean()
            }
        };
        let grads = loss.backward();
        let norm = {
            let u = grad_norm(&[&unet], &grads);
            let c = grad_norm(&[&text], &grads);
            (u * u + c * c).sqrt()
        };
        let scale = clip_factor(norm, phase.max_grad_norm);
        opt.begin_step();
        let lr = phase
            .lr_schedule
            .lr(phase.lr, phase.warmup_steps, phase.steps, pos.step);
        unet = opt.update(unet, "unet", &grads, lr, phase.weight_decay, scale);
        text = opt.update(text, "text_encoder", &grads, lr, phase.weight_decay, scale);
        if let Some(ema) = ema.as_mut() {
            let decay = ema.begin_update();
            ema.update(&unet, "unet", decay);
            ema.update(&text, "text_encoder", decay);
        }
        pos.step += 1;
        let loss = finite_loss(scalar(loss), "UNet", "unet", pos.step, phase.lr)?;
        summary.unet_loss = Some(loss);
        write_log(
            &mut log,
            json!({
                "phase": "unet", "step": pos.step, "loss": loss, "grad_norm": norm,
                "secs": started.elapsed().as_secs_f64(),
            }),
        )?;
        bar.inc(1);
        bar.set_message(format!("loss {loss:.4}"));
        budget = budget.map(|n| n - 1);
        if pos.step.is_multiple_of(config.checkpoint_every) || pos.step == phase.steps {
            save_checkpoint(
                &checkpoint_path,
                config,
                pos,
                Some(scaling),
                &vae,
                Some((&unet, &text)),
                ema.as_ref(),
                &opt,
            )?;
        }
    }
    bar.finish_and_clear();
    if let Some(ema) = &ema {
        unet = ema.apply(unet, "unet")?;
        text = ema.apply(text, "text_encoder")?;
    }

    let mut vae_config = models.vae.clone();
    vae_config.scaling_factor = scaling;
    vae_config.sample_size = config.resolution;
    let mut unet_config = models.unet.clone();
    unet_config.sample_size = config.resolution >> (models.vae.block_out_channels.len() - 1);
    let finished = Models {
        vae: vae_config,
        unet: unet_config,
        text: text_config,
    };
    output::write_pipeline(
        &summary.pipeline,
        &finished,
        &scheduler,
        &tok_dir,
        &tokenizer,
        &vae,
        &unet,
        &text,
    )?;
    Ok(summary)
}

/// The VAE with the bias of its log-variance channels (the second half of `quant_conv`'s
/// outputs, which `encode` splits into mean and log-variance) set to `value`.
fn with_logvar_bias<B: Backend>(
    mut vae: AutoencoderKL<B>,
    value: f64,
    device: &B::Device,
) -> Result<AutoencoderKL<B>> {
    let Some(conv) = vae.quant_conv.as_mut() else {
        bail!("vae.logvar_bias needs the VAE's quant_conv (use_quant_conv = true)");
    };
    let Some(bias) = conv.bias.take() else {
        bail!("vae.logvar_bias: the VAE's quant_conv has no bias");
    };
    let n = bias.val().dims()[0];
    let mut values = vec![0f32; n];
    for v in &mut values[n / 2..] {
        *v = value as f32;
    }
    let t = Tensor::<B, 1>::from_data(TensorData::new(values, [n]), device).require_grad();
    conv.bias = Some(burn::module::Param::initialized(bias.id, t));
    Ok(vae)
}

/// The epsilon a UNet step noises its latents with: `N(0, 1)` of `shape`, plus, with an
/// offset, `offset · N(0, 1)` per (sample, channel), constant over the image (diffusers'
/// `noise += noise_offset * randn(b, c, 1, 1)`). The offset is drawn after the noise, so a run
/// without one draws exactly what it did before the option existed.
pub fn training_noise<B: Backend>(
    rng: &mut NoiseRng,
    shape: [usize; 4],
    offset: Option<f64>,
    device: &B::Device,
) -> Tensor<B, 4> {
    let noise = rng.tensor::<B, 4>(shape, device);
    match offset {
        None => noise,
        Some(o) => {
            let shift = rng.tensor::<B, 4>([shape[0], shape[1], 1, 1], device) * o;
            noise + shift
        }
    }
}

/// What the checks before a run found.
pub struct Prepared {
    pub models: Models,
    /// The captions that decide the pruned vocabulary (all fit the text encoder).
    pub captions: Vec<String>,
    pub scheduler: DdimConfig,
}

/// Every check a run makes before it creates anything: the model configs, the run folder (empty
/// or absent; with `resume`, holding a checkpoint), the tokenizer, the first example, every
/// caption of a folder (a stream's first 20,000) within 77 tokens (the pruned tokenizer splits
/// them as the base one), the scheduler config. `ril pretrain --check` runs exactly these.
pub fn preflight(
    config: &PretrainConfig,
    source: &dyn Source,
    out: &Path,
    resume: bool,
) -> Result<Prepared> {
    let models = config.models()?;
    let checkpoint_path = out.join("checkpoint.safetensors");
    if resume {
        if !checkpoint_path.is_file() {
            bail!(
                "--resume: {} has no checkpoint (checkpoint.safetensors); start without --resume",
                out.display()
            );
        }
    } else if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "run folder {} already exists and is not empty: pass --resume to continue it, or choose another --out",
            out.display()
        );
    }
    let base = ClipTokenizer::from_dir(&config.tokenizer.base)?;
    source
        .get(0)
        .with_context(|| format!("data {}: the first example", source.describe()))?;
    if let (Some(n), Some(len)) = (config.unet.latent_pool, source.len())
        && n > len
    {
        bail!(
            "unet.latent_pool ({n} items) is larger than the data {} ({len} examples)",
            source.describe()
        );
    }
    let captions = source.captions(VOCAB_CAPTIONS)?;
    for (i, c) in captions.iter().enumerate() {
        base.encode_exact(c)
            .with_context(|| format!("data {}: caption of example {i}", source.describe()))?;
    }
    let scheduler = match &config.unet.scheduler {
        Some(path) => DdimConfig::from_file(path)?,
        None => DdimConfig::sd15(),
    };
    DdimScheduler::new(scheduler.clone(), 1)?;
    Ok(Prepared {
        models,
        captions,
        scheduler,
    })
}

/// 1 / the standard deviation of the latents of [`SCALE_IMAGES`] images drawn from the source.
fn latent_scale<B: Backend>(
    vae: &AutoencoderKL<B>,
    source: &dyn Source,
    config: &PretrainConfig,
    device: &B::Device,
) -> Result<f64> {
    let batch = config.vae.batch_size.clamp(1, SCALE_IMAGES);
    let (mut sum, mut sq, mut n) = (0f64, 0f64, 0f64);
    let mut done = 0;
    let mut step = 0;
    while done < SCALE_IMAGES {
        let idx = batch_indices(source, config.seed, STREAM_SCALE, step, batch);
        let images = idx
            .iter()
            .map(|&i| Ok(source.get(i)?.image))
            .collect::<Result<Vec<_>>>()?;
        let dist = vae.encode(images_tensor(&images, config.resolution, device));
        let mut rng = NoiseRng::derive(config.seed, &[STREAM_SCALE, step]);
        let eps = rng.tensor(dist.mean.dims(), device);
        let z = dist.mean + (dist.logvar * 0.5).exp() * eps;
        let values = z
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        for v in values {
            let v = v as f64;
            sum += v;
            sq += v * v;
            n += 1.0;
        }
        done += images.len();
        step += 1;
    }
    let var = sq / n - (sum / n).powi(2);
    if !(var.is_finite() && var > 0.0) {
        bail!("the trained VAE's latents have variance {var}: cannot set its scaling factor");
    }
    Ok(1.0 / var.sqrt())
}

/// The step's loss, refused when it is not finite (naming the model and the phase's `lr`).
fn finite_loss(loss: f64, model: &str, phase: &str, step: u64, lr: f64) -> Result<f64> {
    if !loss.is_finite() {
        bail!("the {model}'s loss became {loss} at step {step}: lower {phase}.lr (now {lr})");
    }
    Ok(loss)
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

fn vocab_size(dir: &Path) -> Result<usize> {
    let path = dir.join("vocab.json");
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a JSON object", path.display()))?;
    Ok(v.len())
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint<AB: AutodiffBackend>(
    path: &Path,
    config: &PretrainConfig,
    pos: Position,
    scaling: Option<f64>,
    vae: &AutoencoderKL<AB>,
    rest: Option<(&UNet2DConditionModel<AB>, &ClipTextModel<AB>)>,
    ema: Option<&Ema<AB::InnerBackend>>,
    opt: &AdamW<AB::InnerBackend>,
) -> Result<()> {
    let mut tensors = BTreeMap::new();
    for (k, v) in sd_model::save::module_tensors(vae, "vae.")? {
        tensors.insert(k, v);
    }
    if let Some((unet, text)) = rest {
        tensors.extend(sd_model::save::module_tensors(unet, "unet.")?);
        tensors.extend(sd_model::save::module_tensors(text, "text_encoder.")?);
    }
    for (k, v) in opt.to_tensors() {
        tensors.insert(format!("opt.{k}"), v);
    }
    let mut meta = BTreeMap::new();
    if let Some(ema) = ema.filter(|_| rest.is_some()) {
        for (k, v) in ema.to_tensors() {
            tensors.insert(format!("ema.{k}"), v);
        }
        meta.insert("ema_updates".to_string(), ema.updates.to_string());
    }
    meta.insert("config".to_string(), config.canonical());
    meta.insert("phase".to_string(), pos.phase.to_string());
    meta.insert("step".to_string(), pos.step.to_string());
    meta.insert("opt_step".to_string(), opt.step.to_string());
    if let Some(s) = scaling {
        // Shortest round-trip form: the resumed run reads back the same f64.
        meta.insert("scaling_factor".to_string(), format!("{s:?}"));
    }
    lora_group::io::write_safetensors(path, &tensors, &meta)
}

/// The posteriors of a phase's [`latent_pool`](crate::config::UNetPhase::latent_pool): the
/// first items of the data, encoded once by the frozen VAE.
struct LatentPool<B: Backend> {
    mean: Tensor<B, 4>,
    logvar: Tensor<B, 4>,
    captions: Vec<String>,
}

impl<B: Backend> LatentPool<B> {
    fn len(&self) -> u64 {
        self.captions.len() as u64
    }

    /// The mean and log-variance of the items `idx`, in that order.
    fn posteriors(&self, idx: &[u64], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let rows: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let rows = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [idx.len()]), device);
        (
            self.mean.clone().select(0, rows.clone()),
            self.logvar.clone().select(0, rows),
        )
    }
}

/// Encodes items `0..n` of `source` (in batches of [`POOL_BATCH`]).
fn encode_pool<B: Backend>(
    vae: &AutoencoderKL<B>,
    source: &dyn Source,
    config: &PretrainConfig,
    n: u64,
    device: &B::Device,
) -> Result<LatentPool<B>> {
    let mut captions = Vec::with_capacity(n as usize);
    let (mut means, mut logvars) = (Vec::new(), Vec::new());
    let mut start = 0;
    while start < n {
        let end = (start + POOL_BATCH).min(n);
        let mut images = Vec::with_capacity((end - start) as usize);
        for i in start..end {
            let ex = source.get(i)?;
            images.push(ex.image);
            captions.push(ex.caption);
        }
        let dist = vae.encode(images_tensor::<B>(&images, config.resolution, device));
        means.push(dist.mean);
        logvars.push(dist.logvar);
        start = end;
    }
    Ok(LatentPool {
        mean: Tensor::cat(means, 0),
        logvar: Tensor::cat(logvars, 0),
        captions,
    })
}

/// Images per VAE forward while a latent pool is encoded.
const POOL_BATCH: u64 = 64;

/// Keeps only the log lines up to `pos` (a resumed run rewrites what came after).
fn trim_log(path: &Path, pos: Position) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let phase = match v["phase"].as_str() {
            Some("vae") => PHASE_VAE,
            Some("unet") => PHASE_UNET,
            _ => continue,
        };
        let step = v["step"].as_u64().unwrap_or(u64::MAX);
        if (phase, step) <= (pos.phase, pos.step) {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    lora_group::io::write_atomic(path, kept.as_bytes())
}

fn write_log(log: &mut std::fs::File, line: serde_json::Value) -> Result<()> {
    writeln!(log, "{line}").context("cannot write metrics.jsonl")
}

fn progress(total: u64, done: u64, name: &str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total).with_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(name.to_string());
    bar.set_position(done);
    bar
}

/// The top-level fields in which two canonical configs differ.
fn differing_fields(a: &str, b: &str) -> String {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::from_str(a), serde_json::from_str(b))
    else {
        return "its stored config is unreadable".to_string();
    };
    let mut fields: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    fields.dedup();
    format!("fields that differ: {}", fields.join(", "))
}

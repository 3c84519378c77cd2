//! `ril bench`: timings of UNet forward, a DDIM sampling run, VAE decode and one baseline and
//! one RID training step (the trainer's own `Trainer::step`, after warm-up; median and spread
//! of several repetitions; then one profiled step of each, with the process's peak resident
//! memory on the CPU backends), with the reward of choice at its real shapes (random weights),
//! written as JSON in the same format as tools/bench/bench.py (the PyTorch reference).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use burn::module::{AutodiffModule, Param};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::backend::AutodiffBackend;
use clap::ValueEnum;
use rewards::Reward;
use rewards::aesthetic::{Aesthetic, AestheticMlp};
use rewards::clip_vision::ClipVisionConfig;
use rewards::hps::Hps;
use rewards::jpeg::Compressibility;
use rewards::openclip::OpenClipConfig;
use rid_trainer::{Frozen, LoraInit, MicroBatch, Objective, TaskSettings, Trainer};
use sd_model::backend::{BackendKind, Dtype};
use sd_model::noise::NoiseRng;
use sd_model::{
    ClipTokenizer, Conditioning, DdimConfig, DdimScheduler, StableDiffusion, UNetConfig, VaeConfig,
    denoise, guided_eps,
};
use serde_json::json;

use crate::cli::{at_least_one, one_of};

/// Times sampling and training steps, as JSON.
///
/// UNet forward, a DDIM sampling run, VAE decode and one baseline and one RID training step
/// (after warm-up; median and spread of several repetitions), printed as JSON in the format of
/// tools/bench/bench.py (the PyTorch reference).
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The shapes and weights.
    #[arg(long, value_enum, default_value_t = Preset::Tiny)]
    pub preset: Preset,
    /// The backend: cpu (burn-flex), cuda (`--features cuda`), tch-cpu or tch-cuda (LibTorch,
    /// `--features tch`).
    #[arg(long, value_name = "BACKEND", default_value_t = BackendKind::Cpu,
          value_parser = one_of(&BackendKind::ALL, BackendKind::name))]
    pub backend: BackendKind,
    /// The float type: bf16 (CUDA only) runs every tensor in bf16, as the PyTorch reference does
    /// on GPU.
    #[arg(long, value_name = "DTYPE", default_value_t = Dtype::F32,
          value_parser = one_of(&Dtype::ALL, Dtype::name))]
    pub dtype: Dtype,
    /// What to time.
    #[arg(long, value_enum, default_value_t = What::All)]
    pub what: What,
    /// Timed repetitions after the warm-up (sampling and training steps: at most 3).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = at_least_one())]
    pub reps: usize,
    /// DDIM steps [default: the preset's].
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub steps: Option<usize>,
    /// Batch size [default: the preset's].
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub batch: Option<usize>,
    /// The training steps' reward, with random weights at its real shapes for `--preset sd15`
    /// (aesthetic: CLIP ViT-L/14 + the LAION MLP; hps: open_clip ViT-H-14) and the parity
    /// fixtures' shapes for `--preset tiny`.
    #[arg(long, value_enum, default_value_t = BenchReward::Compress)]
    pub reward: BenchReward,
    /// Gradient checkpointing in the training steps (as a config's
    /// `model.gradient_checkpointing`).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Also write the JSON record to FILE, rewritten after each measurement (a run cut short
    /// keeps what it timed).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `ril bench --preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The parity fixtures' pipeline, 64x64, batch 2, 10 DDIM steps.
    Tiny,
    /// SD 1.5 shapes with random weights (no download), 512x512, batch 1, 50 steps.
    Sd15,
}

/// `ril bench --what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum What {
    /// UNet forward, VAE decode and a sampling run.
    Sample,
    /// One baseline and one RID training step.
    TrainStep,
    /// Both.
    All,
    /// The peak resident memory of one baseline and one RID training step, each in its own
    /// window (no warm-up, nothing timed; CPU backends).
    TrainMemory,
}

/// `ril bench --reward`: the paper's three rewards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchReward {
    /// Compressibility (differentiable JPEG, q 80).
    Compress,
    /// CLIP ViT-L/14 + the LAION MLP.
    Aesthetic,
    /// HPSv2's open_clip ViT-H-14.
    Hps,
}

impl BenchReward {
    /// The reward with random weights: real shapes unless `tiny`.
    fn init<B: Backend>(
        self,
        tiny: bool,
        tokenizer: &Path,
        device: &B::Device,
    ) -> Result<Box<dyn Reward<B>>> {
        Ok(match self {
            Self::Compress => Box::new(Compressibility::default()),
            Self::Aesthetic => {
                let tower = if tiny {
                    ClipVisionConfig::tiny()
                } else {
                    ClipVisionConfig::vit_l14()
                };
                let clip = tower.init(device)?;
                let width = clip.visual_projection.weight.val().dims()[1];
                Box::new(Aesthetic {
                    clip,
                    mlp: AestheticMlp::new(width, device),
                })
            }
            Self::Hps => {
                let model = if tiny {
                    OpenClipConfig::tiny()
                } else {
                    OpenClipConfig::vit_h14()
                };
                // init() leaves both projections at zero (loading fills them): random ones
                // here, open_clip's N(0, width^-1/2), so that the features have a norm.
                let mut model = model.init(device);
                let proj = |p: &Param<Tensor<B, 2>>| {
                    let [w, e] = p.val().dims();
                    let std = (w as f64).powf(-0.5);
                    Param::from_tensor(Tensor::random(
                        [w, e],
                        Distribution::Normal(0.0, std),
                        device,
                    ))
                };
                model.visual.proj = proj(&model.visual.proj);
                model.text_projection = proj(&model.text_projection);
                Box::new(Hps {
                    model,
                    tokenizer: ClipTokenizer::from_dir(tokenizer)?.with_pad_id(0),
                })
            }
        })
    }
}

/// The process's peak resident memory in bytes since the last [`reset_peak_rss`] (Linux's
/// VmHWM; `None` elsewhere). On a CUDA backend it counts host memory only.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Restarts [`peak_rss`] from the current resident memory (Linux's `clear_refs` 5).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Seconds since this process started (Linux: `/proc/self/stat`'s start time against
/// `/proc/uptime`, 10 ms clock ticks), so that the dynamic loading of libtorch and the CUDA
/// context counts too; `None` where either file is missing or unreadable.
fn since_process_start() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (start time in clock ticks since boot), the 20th after the command's ")".
    let ticks: f64 = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let now: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    let s = now - ticks / 100.0;
    (s >= 0.0).then_some(s)
}

/// The process's peak resident memory in GiB, as a JSON number.
fn peak_rss_gib() -> Option<serde_json::Value> {
    peak_rss().map(|bytes| json!(bytes as f64 / (1u64 << 30) as f64))
}

/// The command-line name of a `ValueEnum` value.
fn name(v: impl ValueEnum) -> String {
    v.to_possible_value()
        .expect("no skipped values")
        .get_name()
        .to_string()
}

impl Args {
    pub fn validate(&self) -> Result<(), String> {
        if self.dtype == Dtype::Bf16 && !self.backend.on_gpu() {
            return Err(
                "--dtype bf16 needs --backend cuda or tch-cuda (the CPU backends run f32)"
                    .to_string(),
            );
        }
        if self.what == What::TrainMemory && self.backend.on_gpu() {
            return Err(format!(
                "--what train-memory reads the peak resident memory of a CPU backend, \
                 not of --backend {} (use cpu or tch-cpu)",
                self.backend
            ));
        }
        Ok(())
    }
}

/// Median, min and max seconds of `reps` runs of `f` after one warm-up run.
fn time<F: FnMut() -> Result<()>>(reps: usize, mut f: F) -> Result<serde_json::Value> {
    f()?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64());
    }
    Ok(summary(t))
}

/// Median, min and max of timings in seconds.
fn summary(mut t: Vec<f64>) -> serde_json::Value {
    t.sort_by(f64::total_cmp);
    let reps = t.len();
    json!({ "median_s": median(&t), "min_s": t[0], "max_s": t[reps - 1], "reps": reps })
}

/// The median of timings (the upper one of an even count).
fn median(t: &[f64]) -> f64 {
    let mut t = t.to_vec();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Forces pending GPU work to finish (reading one value synchronises).
fn sync<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) {
    let _ = t.sum().into_data();
}

pub fn run(a: &Args) -> Result<()> {
    a.validate().map_err(anyhow::Error::msg)?;
    match a.dtype {
        Dtype::F32 => ril::on_backend!(a.backend, autodiff, |B, device| bench::<B>(a, &device)),
        Dtype::Bf16 => bench_bf16(a),
    }
}

/// bf16 on a GPU backend (validate() refused the others).
fn bench_bf16(a: &Args) -> Result<()> {
    match a.backend {
        #[cfg(feature = "cuda-base")]
        BackendKind::Cuda => {
            bench::<sd_model::backend::CudaBf16Autodiff>(a, &sd_model::backend::cuda_device()?)
        }
        #[cfg(feature = "tch")]
        BackendKind::TchCuda => bench::<sd_model::backend::TchBf16Autodiff>(
            a,
            &sd_model::backend::tch_device(a.backend)?,
        ),
        other => anyhow::bail!("backend {other} with bf16: this ril was built without it"),
    }
}

fn bench<B: AutodiffBackend>(a: &Args, device: &B::Device) -> Result<()> {
    let tiny = a.preset == Preset::Tiny;
    let (size, steps, batch) = if tiny { (64, 10, 2) } else { (512, 50, 1) };
    let steps = a.steps.unwrap_or(steps);
    let batch = a.batch.unwrap_or(batch);
    // The tiny fixture pipeline, found from the working directory (a checkout's root, as on the
    // GPU machine) or else where this binary was built.
    let rel = "crates/sd-model/tests/fixtures/tiny-sd";
    let dir = if Path::new(rel).is_dir() {
        PathBuf::from(rel)
    } else {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
    };
    let sd: StableDiffusion<B> = if tiny {
        StableDiffusion::load(&dir, device)?
    } else {
        // SD 1.5 shapes with random weights (the tiny fixture's tokenizer gives ids the real
        // vocabulary also has; prompt encoding is outside every timed region).
        let mut sd = StableDiffusion::load(&dir, device)?;
        sd.text_encoder = sd_model::ClipTextConfig::sd15().init(device)?;
        sd.unet = UNetConfig::sd15().init(device)?;
        sd.vae = VaeConfig::sd15().init(device)?;
        sd
    };
    let h = size / 8;
    let shape = (batch, size, steps);
    let mut results = BTreeMap::new();
    let inner = sd.unet.valid();
    let vae = sd.vae.valid();
    let prompts: Vec<String> = (0..batch)
        .map(|i| format!("a photo of a cat number {i}"))
        .collect();
    let cond = Conditioning::new(
        sd.encode_prompts(&prompts, device)?.inner(),
        sd.encode_prompts(&[String::new()], device)?.inner(),
        7.5,
    );
    let mut rng = NoiseRng::new(0);
    let z = rng.tensor::<B::InnerBackend, 4>([batch, 4, h, h], device);
    let scheduler = DdimScheduler::new(DdimConfig::sd15(), steps)?;
    if matches!(a.what, What::Sample | What::All) {
        let v = time(a.reps, || {
            sync(guided_eps(&inner, z.clone(), 500, &cond));
            Ok(())
        })?;
        put(a, shape, &mut results, "unet_forward", v)?;
        let v = time(a.reps, || {
            sync(vae.decode_latents(z.clone()));
            Ok(())
        })?;
        put(a, shape, &mut results, "vae_decode", v)?;
        let v = time(a.reps.min(3), || {
            let mut r = NoiseRng::new(1);
            let z0 = denoise(
                &inner,
                &scheduler,
                &cond,
                z.clone(),
                0..steps,
                0.0,
                &mut r,
                |_| {},
            );
            sync(vae.decode_latents(z0));
            Ok(())
        })?;
        put(a, shape, &mut results, "sample", v)?;
    }
    if a.what != What::Sample {
        let reward = a.reward.init::<B>(tiny, &dir.join("tokenizer"), device)?;
        let vae_ad = sd.vae.clone().no_grad();
        let frozen = Frozen {
            vae: &vae_ad,
            reward: reward.as_ref(),
            scheduler: &scheduler,
            eta: 0.0,
            checkpointing: a.gradient_checkpointing,
        };
        // The trainer's own step (one micro-batch), one trainer per method; the two are warmed
        // up, then timed in turn (baseline, RID, baseline, ...) so that clock and allocator
        // drift hits both alike.
        let mut trainers = Vec::new();
        for objective in [Objective::Baseline, Objective::Rid { lambda: 0.1 }] {
            let settings = TaskSettings {
                objective,
                lr: 1e-4,
                weight_decay: 0.0,
                grad_clip: 1.0,
                ema_momentum: 0.99,
            };
            let lora = LoraInit {
                rank: 4,
                alpha: 4.0,
                rng: NoiseRng::new(2),
            };
            trainers.push(Trainer::<B>::new(sd.unet.clone(), lora, settings)?);
        }
        let batch = || MicroBatch {
            cond: cond.clone(),
            z_n: z.clone(),
            prompts: prompts.clone(),
            noise_seed: 0,
        };
        // Trainer::step reads the gradient norm back, which waits for the backward pass (the
        // small AdamW and EMA updates after it land in the next timing).
        let mut step = |i: usize, profile: bool| trainers[i].step(&frozen, vec![batch()], profile);
        if a.what == What::TrainMemory {
            for (i, method) in [(0, "baseline"), (1, "rid")] {
                anyhow::ensure!(
                    reset_peak_rss(),
                    "--what train-memory needs Linux's /proc/self/clear_refs to reset the peak"
                );
                step(i, false)?;
                let gib = peak_rss_gib()
                    .ok_or_else(|| anyhow::anyhow!("no VmHWM line in /proc/self/status"))?;
                put(
                    a,
                    shape,
                    &mut results,
                    &format!("peak_rss_gib_{method}"),
                    gib,
                )?;
            }
        } else {
            train_timings(a, shape, &mut results, &mut step)?;
        }
    }
    let text = serde_json::to_string_pretty(&record(a, shape, &results))?;
    println!("{text}");
    Ok(())
}

/// The warm-up, the timed repetitions and the profiled step of both methods (`step(0, ..)` the
/// baseline's, `step(1, ..)` RID's).
fn train_timings(
    a: &Args,
    shape: (usize, usize, usize),
    results: &mut BTreeMap<String, serde_json::Value>,
    step: &mut impl FnMut(usize, bool) -> Result<rid_trainer::StepRecord>,
) -> Result<()> {
    step(0, false)?;
    // From process start to the first finished training step: loading, weight initialisation,
    // prompt encoding, the first step's kernel selection and allocations (with `--what all` the
    // sampling timings come before it).
    if let Some(s) = since_process_start() {
        put(
            a,
            shape,
            results,
            "first_train_step_since_start_s",
            json!(s),
        )?;
    }
    step(1, false)?;
    let (mut base, mut rid) = (Vec::new(), Vec::new());
    for _ in 0..a.reps.min(3) {
        base.push(step(0, false)?.seconds);
        rid.push(step(1, false)?.seconds);
    }
    let ratio = median(&rid) / median(&base);
    put(a, shape, results, "train_step_baseline", summary(base))?;
    put(a, shape, results, "train_step_rid", summary(rid))?;
    put(a, shape, results, "rid_over_baseline", json!(ratio))?;
    // One more step of each with every phase waited for and timed (not in the timings above:
    // the waits cost a little on a GPU), and the process's peak resident memory during it
    // (weights, both trainers' state and the step's graph; CPU backends).
    for (i, method) in [(0, "baseline"), (1, "rid")] {
        let rss = !a.backend.on_gpu() && reset_peak_rss();
        let phases = step(i, true)?.phases;
        put(
            a,
            shape,
            results,
            &format!("phases_{method}"),
            json!(phases),
        )?;
        if let (true, Some(gib)) = (rss, peak_rss_gib()) {
            put(a, shape, results, &format!("peak_rss_gib_{method}"), gib)?;
        }
    }
    Ok(())
}

/// The JSON record of what was timed so far (the same fields as tools/bench/bench.py writes).
fn record(
    a: &Args,
    (batch, size, steps): (usize, usize, usize),
    results: &BTreeMap<String, serde_json::Value>,
) -> serde_json::Value {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    json!({
        "impl": "ril", "preset": name(a.preset), "backend": a.backend, "dtype": a.dtype,
        "threads": threads, "batch": batch, "size": size, "steps": steps, "reward": name(a.reward),
        "gradient_checkpointing": a.gradient_checkpointing, "results": results,
    })
}

/// Adds one measurement, reports it on stderr and rewrites the JSON file (atomically).
fn put(
    a: &Args,
    shape: (usize, usize, usize),
    results: &mut BTreeMap<String, serde_json::Value>,
    name: &str,
    value: serde_json::Value,
) -> Result<()> {
    eprintln!("{name}: {value}");
    results.insert(name.to_string(), value);
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&record(a, shape, results))?;
        lora_group::io::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

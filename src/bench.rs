//! `ril bench`: timings of UNet forward, a DDIM sampling run, VAE decode and one baseline and
//! one RID training step (the trainer's own `Trainer::step`, after warm-up; median and spread
//! of several repetitions; then one profiled step of each), written as JSON in the same format
//! as tools/bench/bench.py (the PyTorch reference).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Result, bail};
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rewards::jpeg::Compressibility;
use rid_trainer::{Frozen, LoraInit, MicroBatch, Objective, TaskSettings, Trainer};
use sd_model::noise::NoiseRng;
use sd_model::{
    Conditioning, DdimConfig, DdimScheduler, StableDiffusion, UNetConfig, VaeConfig, denoise,
    guided_eps,
};
use serde_json::json;

pub const USAGE: &str = "\
usage: ril bench [--preset tiny|sd15] [--backend cpu|cuda] [--dtype f32|bf16]
                 [--what sample|train-step|all] [--reps N] [--steps N] [--batch N] [--json FILE]

  tiny: the parity fixtures' pipeline, 64x64, batch 2, 10 DDIM steps (CPU).
  sd15: SD 1.5 shapes with random weights (no download), 512x512, batch 1, 50 steps.
  --dtype bf16 (CUDA only) runs every tensor in bf16, as the PyTorch reference does on GPU.
  The JSON record is rewritten after each measurement, so a run cut short keeps what it timed.";

struct Args {
    preset: String,
    backend: String,
    dtype: String,
    what: String,
    reps: usize,
    steps: Option<usize>,
    batch: Option<usize>,
    json: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args> {
    let mut a = Args {
        preset: "tiny".into(),
        backend: "cpu".into(),
        dtype: "f32".into(),
        what: "all".into(),
        reps: 5,
        steps: None,
        batch: None,
        json: None,
    };
    let mut f = ril::args::Flags::new(args, USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--preset" => a.preset = f.value(flag)?,
            "--backend" => a.backend = f.value(flag)?,
            "--dtype" => a.dtype = f.value(flag)?,
            "--what" => a.what = f.value(flag)?,
            "--reps" => a.reps = f.parse(flag)?,
            "--steps" => a.steps = Some(f.parse(flag)?),
            "--batch" => a.batch = Some(f.parse(flag)?),
            "--json" => a.json = Some(f.value(flag)?.into()),
            other => return Err(f.unknown(other)),
        }
    }
    if !matches!(a.preset.as_str(), "tiny" | "sd15")
        || !matches!(a.what.as_str(), "sample" | "train-step" | "all")
    {
        bail!("bad --preset or --what\n{USAGE}");
    }
    if !matches!(a.dtype.as_str(), "f32" | "bf16") {
        bail!("--dtype must be f32 or bf16\n{USAGE}");
    }
    if a.dtype == "bf16" && a.backend != "cuda" {
        bail!("--dtype bf16 needs --backend cuda (the CPU backend runs f32)");
    }
    if a.reps == 0 {
        bail!("--reps must be ≥ 1");
    }
    Ok(a)
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

pub fn run(args: &[String]) -> Result<()> {
    let a = parse(args)?;
    match a.backend.as_str() {
        "cpu" => bench::<sd_model::backend::CpuAutodiff>(&a, &Default::default()),
        "cuda" => bench_cuda(&a),
        other => bail!("--backend must be cpu or cuda, got {other}"),
    }
}

#[cfg(feature = "cuda-base")]
fn bench_cuda(a: &Args) -> Result<()> {
    if a.dtype == "bf16" {
        bench::<sd_model::backend::CudaBf16Autodiff>(a, &sd_model::backend::cuda_device()?)
    } else {
        bench::<sd_model::backend::CudaAutodiff>(a, &sd_model::backend::cuda_device()?)
    }
}

#[cfg(not(feature = "cuda-base"))]
fn bench_cuda(_: &Args) -> Result<()> {
    bail!("this ril was built without CUDA: rebuild with `--features cuda`")
}

fn bench<B: AutodiffBackend>(a: &Args, device: &B::Device) -> Result<()> {
    let tiny = a.preset == "tiny";
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
    if a.what != "train-step" {
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
    if a.what != "sample" {
        let reward = Compressibility::default();
        let vae_ad = sd.vae.clone().no_grad();
        let frozen = Frozen {
            vae: &vae_ad,
            reward: &reward,
            scheduler: &scheduler,
            eta: 0.0,
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
        step(0, false)?;
        step(1, false)?;
        let (mut base, mut rid) = (Vec::new(), Vec::new());
        for _ in 0..a.reps.min(3) {
            base.push(step(0, false)?.seconds);
            rid.push(step(1, false)?.seconds);
        }
        let ratio = median(&rid) / median(&base);
        put(a, shape, &mut results, "train_step_baseline", summary(base))?;
        put(a, shape, &mut results, "train_step_rid", summary(rid))?;
        put(a, shape, &mut results, "rid_over_baseline", json!(ratio))?;
        // One more step of each with every phase waited for and timed (not in the timings above:
        // the waits cost a little on a GPU).
        for (i, name) in [(0, "phases_baseline"), (1, "phases_rid")] {
            let phases = step(i, true)?.phases;
            put(a, shape, &mut results, name, json!(phases))?;
        }
    }
    let text = serde_json::to_string_pretty(&record(a, shape, &results))?;
    println!("{text}");
    Ok(())
}

/// The JSON record of what was timed so far (the same fields as tools/bench/bench.py writes).
fn record(
    a: &Args,
    (batch, size, steps): (usize, usize, usize),
    results: &BTreeMap<&str, serde_json::Value>,
) -> serde_json::Value {
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    json!({
        "impl": "ril", "preset": a.preset, "backend": a.backend, "dtype": a.dtype,
        "threads": threads, "batch": batch, "size": size, "steps": steps, "results": results,
    })
}

/// Adds one measurement, reports it on stderr and rewrites the JSON file (atomically).
fn put(
    a: &Args,
    shape: (usize, usize, usize),
    results: &mut BTreeMap<&'static str, serde_json::Value>,
    name: &'static str,
    value: serde_json::Value,
) -> Result<()> {
    eprintln!("{name}: {value}");
    results.insert(name, value);
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&record(a, shape, results))?;
        lora_group::io::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}

//! Pretraining on a tiny configuration: the losses fall, a run killed and resumed (inside the
//! VAE phase and across the phase boundary) writes the same pipeline bytes as an uninterrupted
//! one, the pipeline loads and samples, bad inputs are refused before any work, and the pruned
//! tokenizer splits text as the full one.

use std::path::{Path, PathBuf};

use anyhow::Result;
use image::{Rgb, RgbImage};
use pretrain::{Example, PretrainConfig, RunOptions, Source};
/// The backend the tests run on: burn-flex, or LibTorch's CPU device in a `--features tch` build.
#[cfg(not(feature = "tch"))]
type Cpu = sd_model::backend::Cpu;
#[cfg(not(feature = "tch"))]
type CpuAutodiff = sd_model::backend::CpuAutodiff;
#[cfg(feature = "tch")]
type Cpu = sd_model::backend::Tch;
#[cfg(feature = "tch")]
type CpuAutodiff = sd_model::backend::TchAutodiff;
use sd_model::noise::NoiseRng;
use sd_model::pipeline::{InitLatents, SampleRequest, StableDiffusion};
use sd_model::tokenizer::ClipTokenizer;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

/// A coloured square on the left or right of a grey 16×16 picture.
struct Squares;

const COLOURS: [(&str, [u8; 3]); 3] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [30, 40, 220]),
];

impl Source for Squares {
    fn describe(&self) -> String {
        "test squares".into()
    }
    fn len(&self) -> Option<u64> {
        None
    }
    fn get(&self, index: u64) -> Result<Example> {
        let mut rng = NoiseRng::derive(5, &[index]);
        let (name, rgb) = COLOURS[(rng.next_u64() % 3) as usize];
        let left = rng.next_u64().is_multiple_of(2);
        let mut image = RgbImage::from_pixel(16, 16, Rgb([128, 128, 128]));
        let x0 = if left { 1 } else { 9 };
        for y in 5..11 {
            for x in x0..x0 + 6 {
                image.put_pixel(x, y, Rgb(rgb));
            }
        }
        let side = if left { "left" } else { "right" };
        Ok(Example {
            image,
            caption: format!("a {name} square on the {side}"),
        })
    }
}

/// Writes the tiny model configs and a pretrain.toml with `edit` applied; returns its path.
fn tiny_config(dir: &Path, edit: &dyn Fn(&mut String)) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    // Three levels: latents 4x4 for 16x16 images (a factor of 4, not SD's 8: the pipeline
    // reads it from the VAE).
    let vae = r#"{"block_out_channels": [8, 8, 8], "layers_per_block": 1, "norm_num_groups": 4,
        "down_block_types": ["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"]}"#;
    let unet = r#"{"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "attention_head_dim": 2, "cross_attention_dim": 16,
        "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"]}"#;
    let text = r#"{"vocab_size": 0, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "quick_gelu"}"#;
    std::fs::write(dir.join("vae.json"), vae).unwrap();
    std::fs::write(dir.join("unet.json"), unet).unwrap();
    std::fs::write(dir.join("text.json"), text).unwrap();
    let mut toml = format!(
        r#"seed = 3
resolution = 16
output = "run"
checkpoint_every = 2

[data]
shapes_seed = 0

[tokenizer]
base = "{}"
prune_to_captions = true

[vae]
config = "vae.json"
steps = 6
batch_size = 4
lr = 2e-3
logvar_bias = -4.0

[unet]
config = "unet.json"
text_encoder = "text.json"
steps = 24
batch_size = 8
lr = 3e-3
warmup_steps = 4
max_grad_norm = 1.0
"#,
        repo("data/clip-tokenizer").display()
    );
    edit(&mut toml);
    let path = dir.join("pretrain.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["", "scheduler", "tokenizer", "text_encoder", "unet", "vae"] {
        let d = dir.join(sub);
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            out.push((
                p.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&p).unwrap(),
            ));
        }
    }
    out
}

fn losses(run: &Path, phase: &str) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["phase"] == phase)
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

fn quiet(resume: bool, stop_after: Option<u64>) -> RunOptions {
    RunOptions {
        resume,
        stop_after,
        quiet: true,
    }
}

#[test]
fn losses_fall_and_a_resumed_run_writes_the_same_pipeline() {
    let dir = ril_testkit::scratch("pretrain-resume");
    let config = PretrainConfig::from_file(&tiny_config(&dir, &|_| {})).unwrap();
    let device = Default::default();
    let whole = dir.join("whole");
    let summary =
        pretrain::run::<CpuAutodiff>(&config, &Squares, &whole, &quiet(false, None), &device)
            .unwrap();

    // Six Adam steps lower the VAE's loss (the L1 sum of a random decoder falls by far more
    // than its batch-to-batch spread). The epsilon loss of single batches of 8 spreads by about
    // ±0.15 around its start near 1 (the noise's variance), so the UNet is judged on the mean of
    // its first and last 8 of 24 steps.
    let vae = losses(&whole, "vae");
    let unet = losses(&whole, "unet");
    assert_eq!((vae.len(), unet.len()), (6, 24));
    assert!(vae[5] < vae[0], "VAE loss did not fall: {vae:?}");
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(
        mean(&unet[16..]) < mean(&unet[..8]),
        "UNet loss did not fall: {unet:?}"
    );
    assert!(summary.scaling_factor.is_finite() && summary.scaling_factor > 0.0);

    // Killed after 3 VAE steps, then after 2 more VAE + 2 UNet steps, then to the end.
    let parts = dir.join("parts");
    pretrain::run::<CpuAutodiff>(&config, &Squares, &parts, &quiet(false, Some(3)), &device)
        .unwrap();
    assert!(!parts.join("pipeline").exists());
    pretrain::run::<CpuAutodiff>(&config, &Squares, &parts, &quiet(true, Some(5)), &device)
        .unwrap();
    pretrain::run::<CpuAutodiff>(&config, &Squares, &parts, &quiet(true, None), &device).unwrap();
    let (a, b) = (
        files(&whole.join("pipeline")),
        files(&parts.join("pipeline")),
    );
    assert_eq!(a.len(), b.len());
    for ((na, ba), (nb, bb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        assert!(
            ba == bb,
            "{na} differs between the whole run and the resumed one"
        );
    }
    assert_eq!(losses(&whole, "unet"), losses(&parts, "unet"));
    assert_eq!(losses(&whole, "vae"), losses(&parts, "vae"));

    // The folder loads as a diffusers pipeline and samples the same image twice.
    let sd = StableDiffusion::<Cpu>::load(&whole.join("pipeline"), &device).unwrap();
    let sample = || {
        let req = SampleRequest::<Cpu> {
            prompts: vec!["a red square on the left".into()],
            negative_prompts: vec![],
            height: 16,
            width: 16,
            steps: 3,
            guidance: 3.0,
            eta: 0.0,
            noise_seed: 0,
            latents: InitLatents::Seed(11),
        };
        let images = sd.sample(&req, &device, |_, _| {}).unwrap();
        assert_eq!(images.dims(), [1, 3, 16, 16]);
        images
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap()
    };
    assert_eq!(sample(), sample());
    // Caption following: one verdict per caption, the same images whatever the batch size
    // (each image has its own latents; batching may reorder f32 sums, hence 1/255).
    let judge = toy_shapes::judge::Judge::<Cpu>::load(&repo("data/toy/judge"), &device).unwrap();
    let spec = |batch| pretrain::follow::FollowSpec {
        count: 3,
        steps: 2,
        size: 16,
        batch,
        ..Default::default()
    };
    let (one, cells_one) =
        pretrain::follow::follow(&sd, &judge, spec(1), &device, |_, _| {}).unwrap();
    let (three, cells_three) =
        pretrain::follow::follow(&sd, &judge, spec(3), &device, |_, _| {}).unwrap();
    assert_eq!(
        (
            one.generated.n,
            one.real.n,
            one.reconstructed.n,
            cells_one.len()
        ),
        (3, 3, 3, 3)
    );
    assert_eq!(one.real, three.real);
    for ((a, ca), (b, cb)) in cells_one.iter().zip(&cells_three) {
        assert_eq!(ca, cb);
        let worst = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max();
        assert!(
            worst <= Some(1),
            "{ca}: images differ by {worst:?}/255 between batch sizes"
        );
    }

    // config.json holds the shortest round-trip decimal; serde_json's default float parser
    // (without `float_roundtrip`) may read it back one unit in the last place off.
    let rel = (sd.vae.scaling_factor - summary.scaling_factor).abs() / summary.scaling_factor;
    assert!(
        rel < 1e-15,
        "{} vs {}",
        sd.vae.scaling_factor,
        summary.scaling_factor
    );
}

/// Min-SNR-γ weights each sample by min(SNR, γ) / SNR: with γ above every step's SNR (SD 1.5's
/// largest is about 1e3) every weight is 1 and the UNet's losses are the plain mean's (up to
/// float rounding: the weighted loss averages per-sample means, 1e-6 relative covers it); with a
/// small γ the low-noise samples weigh less and the loss differs.
#[test]
fn min_snr_weighting_is_the_plain_mean_when_gamma_exceeds_every_snr() {
    let dir = ril_testkit::scratch("pretrain-snr");
    let device = Default::default();
    let run = |name: &str, gamma: Option<&str>| {
        let cfg = tiny_config(&dir, &|t| {
            if let Some(g) = gamma {
                *t = t.replace("lr = 3e-3", &format!("lr = 3e-3\nsnr_gamma = {g}"));
            }
        });
        let config = PretrainConfig::from_file(&cfg).unwrap();
        let out = dir.join(name);
        let steps = config.vae.steps + 3;
        pretrain::run::<CpuAutodiff>(&config, &Squares, &out, &quiet(false, Some(steps)), &device)
            .unwrap();
        losses(&out, "unet")
    };
    let plain = run("plain", None);
    let big = run("big", Some("1e9"));
    let small = run("small", Some("0.5"));
    assert_eq!(plain.len(), 3);
    for (p, b) in plain.iter().zip(&big) {
        assert!((p - b).abs() <= 1e-6 * p.abs(), "{plain:?} vs {big:?}");
    }
    assert!(
        (plain[0] - small[0]).abs() > 1e-3 * plain[0],
        "{plain:?} vs {small:?}"
    );
}

/// `reconstruction_loss = "l2"` trains the VAE on the squared error: the first step sees the
/// same weights and batch as with L1 (so the same logged L1), but its loss is not the L1 sum
/// (which the L1 run's loss is, with the KL term: 1e-6 of the logged KL), and the step moves the
/// weights elsewhere (the second step's L1 differs).
#[test]
fn the_squared_error_reconstruction_loss_trains_the_vae_on_another_objective() {
    let dir = ril_testkit::scratch("pretrain-l2");
    let device = Default::default();
    let run = |name: &str, loss: &str| {
        let cfg = tiny_config(&dir, &|t| {
            *t = t.replace(
                "logvar_bias = -4.0",
                &format!("logvar_bias = -4.0\nreconstruction_loss = \"{loss}\""),
            );
        });
        let config = PretrainConfig::from_file(&cfg).unwrap();
        let out = dir.join(name);
        pretrain::run::<CpuAutodiff>(&config, &Squares, &out, &quiet(false, Some(2)), &device)
            .unwrap();
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| {
                let f = |k: &str| v[k].as_f64().unwrap();
                (f("l1_per_pixel"), f("loss"), f("kl"))
            })
            .collect::<Vec<_>>()
    };
    let (l1, l2) = (run("l1", "l1"), run("l2", "l2"));
    let pixels = (3 * 16 * 16) as f64;
    // f32 sums of 768 values per image: 1e-5 relative.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * a.abs().max(b.abs());
    let (p, loss, kl) = l1[0];
    assert!(close(loss, p * pixels + 1e-6 * kl), "{l1:?}");
    assert!(close(l1[0].0, l2[0].0), "{l1:?} vs {l2:?}");
    assert!(!close(l2[0].1, l2[0].0 * pixels + 1e-6 * l2[0].2), "{l2:?}");
    assert!(!close(l1[1].0, l2[1].0), "{l1:?} vs {l2:?}");
    // An unknown loss is refused by field.
    let cfg = tiny_config(&dir, &|t| {
        *t = t.replace(
            "logvar_bias = -4.0",
            "logvar_bias = -4.0\nreconstruction_loss = \"l3\"",
        );
    });
    let err = format!("{:#}", PretrainConfig::from_file(&cfg).err().unwrap());
    assert!(
        err.contains("reconstruction_loss") && err.contains("l3"),
        "{err}"
    );
}

/// Offset noise shifts each (sample, channel) of the noise by one `offset · N(0, 1)` draw: over
/// 64 x 4 = 256 such means of 16 x 16 = 256 values, plain noise has means of standard deviation
/// 1/16 and noise with offset 1 has sqrt(1 + 1/256) ≈ 1.002. The sample standard deviation of
/// 256 normal means is within 15 % of the truth with probability far above 1 - 1e-6 (its
/// relative error has standard deviation 1/sqrt(512) ≈ 4.4 %), and the pure noise term (the
/// first draw) is the same with and without the offset.
#[test]
fn noise_offset_shifts_each_channel_by_one_draw() {
    let device = Default::default();
    let shape = [64, 4, 16, 16];
    let channel_means = |offset: Option<f64>| -> Vec<f64> {
        let mut rng = NoiseRng::new(7);
        let t = pretrain::run::training_noise::<Cpu>(&mut rng, shape, offset, &device);
        let v: Vec<f32> = t.into_data().to_vec().unwrap();
        v.chunks(256)
            .map(|c| c.iter().map(|&x| f64::from(x)).sum::<f64>() / 256.0)
            .collect()
    };
    let std = |m: &[f64]| {
        let mean = m.iter().sum::<f64>() / m.len() as f64;
        (m.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m.len() - 1) as f64).sqrt()
    };
    let plain = channel_means(None);
    let offset = channel_means(Some(1.0));
    let zero = channel_means(Some(0.0));
    assert!(
        (std(&plain) / (1.0 / 16.0) - 1.0).abs() < 0.15,
        "{}",
        std(&plain)
    );
    assert!(
        (std(&offset) / 1.002 - 1.0).abs() < 0.15,
        "{}",
        std(&offset)
    );
    assert_eq!(plain, zero, "an offset of 0 must leave the noise as it was");
}

/// A zero-terminal-SNR v-prediction scheduler (`rescale_betas_zero_snr`, trailing spacing)
/// trains the v target: the UNet losses are finite and differ from the epsilon run's on the same
/// batches and noise (the targets differ wherever alpha_bar < 1), and the pipeline written keeps
/// the scheduler, so that `ril sample` and diffusers sample it as v-prediction.
#[test]
fn v_prediction_with_zero_terminal_snr_trains_the_velocity() {
    let dir = ril_testkit::scratch("pretrain-v");
    let device = Default::default();
    let sched = dir.join("v_scheduler.json");
    std::fs::write(
        &sched,
        r#"{"prediction_type": "v_prediction", "rescale_betas_zero_snr": true, "timestep_spacing": "trailing"}"#,
    )
    .unwrap();
    let line = format!("lr = 3e-3\nscheduler = {:?}", sched.to_str().unwrap());
    let run = |name: &str, v: bool| {
        let cfg = tiny_config(&dir, &|t| {
            if v {
                *t = t.replace("lr = 3e-3", &line);
            }
        });
        let config = PretrainConfig::from_file(&cfg).unwrap();
        let out = dir.join(name);
        pretrain::run::<CpuAutodiff>(&config, &Squares, &out, &quiet(false, None), &device)
            .unwrap();
        (losses(&out, "unet"), out)
    };
    let (eps, _) = run("eps", false);
    let (v, out) = run("v", true);
    assert_eq!(eps.len(), v.len());
    assert!(v.iter().all(|l| l.is_finite()), "{v:?}");
    assert!((eps[0] - v[0]).abs() > 1e-3 * eps[0], "{eps:?} vs {v:?}");
    let written: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("pipeline/scheduler/scheduler_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(written["prediction_type"], "v_prediction");
    assert_eq!(written["rescale_betas_zero_snr"], true);
    let sd = StableDiffusion::<Cpu>::load(&out.join("pipeline"), &device).unwrap();
    assert_eq!(sd.scheduler.prediction_type, "v_prediction");
}

/// The first 32 items of [`Squares`], as a finite source.
struct FirstSquares;

impl Source for FirstSquares {
    fn describe(&self) -> String {
        "32 test squares".into()
    }
    fn len(&self) -> Option<u64> {
        Some(32)
    }
    fn get(&self, index: u64) -> Result<Example> {
        Squares.get(index)
    }
}

/// A latent pool over the whole of a finite source draws the same items as encoding each
/// batch (the same indices from the same stream of draws, the same posterior noise), so the
/// UNet's losses match: to 1e-4 relative, because the pool encodes 32 images in one VAE
/// forward where the plain run encodes the batch's 8, which may order f32 sums differently
/// (a wrong row of the pool would change a loss near 1 by far more). A pool then resumes bit
/// for bit, and a pool smaller than the batch or larger than the data is refused.
#[test]
fn a_latent_pool_trains_on_the_same_items_and_resumes_bit_for_bit() {
    let dir = ril_testkit::scratch("pretrain-pool");
    let device = Default::default();
    let config = |pool: Option<u64>| {
        PretrainConfig::from_file(&tiny_config(&dir, &|t| {
            if let Some(n) = pool {
                *t = t.replace("lr = 3e-3", &format!("lr = 3e-3\nlatent_pool = {n}"));
            }
        }))
        .unwrap()
    };
    let plain = dir.join("plain");
    let pooled = dir.join("pooled");
    let steps = Some(config(None).vae.steps + 6);
    pretrain::run::<CpuAutodiff>(
        &config(None),
        &FirstSquares,
        &plain,
        &quiet(false, steps),
        &device,
    )
    .unwrap();
    pretrain::run::<CpuAutodiff>(
        &config(Some(32)),
        &FirstSquares,
        &pooled,
        &quiet(false, steps),
        &device,
    )
    .unwrap();
    let (a, b) = (losses(&plain, "unet"), losses(&pooled, "unet"));
    assert_eq!(a.len(), 6);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-4 * x.abs(), "{a:?} vs {b:?}");
    }

    // From the stream: killed inside the UNet phase, resumed, the same pipeline bytes.
    let config = config(Some(16));
    let whole = dir.join("whole");
    let parts = dir.join("parts");
    pretrain::run::<CpuAutodiff>(&config, &Squares, &whole, &quiet(false, None), &device).unwrap();
    pretrain::run::<CpuAutodiff>(&config, &Squares, &parts, &quiet(false, steps), &device).unwrap();
    pretrain::run::<CpuAutodiff>(&config, &Squares, &parts, &quiet(true, None), &device).unwrap();
    assert_same_pipeline(&whole, &parts);

    let e = format!(
        "{:#}",
        PretrainConfig::from_file(&tiny_config(&dir, &|t| {
            *t = t.replace("lr = 3e-3", "lr = 3e-3\nlatent_pool = 4")
        }))
        .unwrap_err()
    );
    assert!(e.contains("unet.latent_pool") && e.contains("(8)"), "{e}");
    let big = PretrainConfig::from_file(&tiny_config(&dir, &|t| {
        *t = t.replace("lr = 3e-3", "lr = 3e-3\nlatent_pool = 33")
    }))
    .unwrap();
    let refused = dir.join("refused");
    let e = format!(
        "{:#}",
        pretrain::run::<CpuAutodiff>(&big, &FirstSquares, &refused, &quiet(false, None), &device)
            .unwrap_err()
    );
    assert!(
        e.contains("latent_pool") && e.contains("32 test squares"),
        "{e}"
    );
    assert!(!refused.exists(), "nothing is written for a refused run");
}

fn assert_same_pipeline(a: &Path, b: &Path) {
    let (fa, fb) = (files(&a.join("pipeline")), files(&b.join("pipeline")));
    assert_eq!(fa.len(), fb.len());
    for ((na, ba), (nb, bb)) in fa.iter().zip(&fb) {
        assert_eq!(na, nb);
        assert!(ba == bb, "{na} differs between {a:?} and {b:?}");
    }
}

/// The EMA of the weights (diffusers' `EMAModel` schedule): with decay 0 every update copies
/// the weights, so the pipeline is byte for byte the plain run's; with decay 0.9 it is not
/// (the average lags the weights), and a run killed inside the UNet phase resumes to the same
/// bytes (the averages and their update count are in the checkpoint).
#[test]
fn the_ema_pipeline_is_the_average_and_resumes_bit_for_bit() {
    let dir = ril_testkit::scratch("pretrain-ema");
    let device = Default::default();
    let config = |decay: Option<&str>| {
        PretrainConfig::from_file(&tiny_config(&dir, &|t| {
            if let Some(d) = decay {
                *t = t.replace("lr = 3e-3", &format!("lr = 3e-3\nema_decay = {d}"));
            }
        }))
        .unwrap()
    };
    let run = |name: &str, config: &PretrainConfig| {
        let out = dir.join(name);
        pretrain::run::<CpuAutodiff>(config, &Squares, &out, &quiet(false, None), &device).unwrap();
        out
    };
    let plain = run("plain", &config(None));
    let zero = run("zero", &config(Some("0.0")));
    assert_same_pipeline(&plain, &zero);
    let averaged = config(Some("0.9"));
    let ema = run("ema", &averaged);
    let unet =
        |p: &Path| std::fs::read(p.join("pipeline/unet/diffusion_pytorch_model.safetensors"));
    assert!(
        unet(&plain).unwrap() != unet(&ema).unwrap(),
        "the EMA UNet equals the last weights"
    );
    assert_eq!(losses(&plain, "unet"), losses(&ema, "unet"));
    let parts = dir.join("parts");
    let steps = Some(averaged.vae.steps + 7);
    pretrain::run::<CpuAutodiff>(&averaged, &Squares, &parts, &quiet(false, steps), &device)
        .unwrap();
    pretrain::run::<CpuAutodiff>(&averaged, &Squares, &parts, &quiet(true, None), &device).unwrap();
    assert_same_pipeline(&ema, &parts);
    let e = format!(
        "{:#}",
        PretrainConfig::from_file(&tiny_config(&dir, &|t| {
            *t = t.replace("lr = 3e-3", "lr = 3e-3\nema_decay = 1.0")
        }))
        .unwrap_err()
    );
    assert!(e.contains("unet.ema_decay"), "{e}");
}

#[test]
fn bad_inputs_are_refused_before_any_work() {
    let dir = ril_testkit::scratch("pretrain-bad");
    let err = |edit: &dyn Fn(&mut String)| {
        let path = tiny_config(&dir, edit);
        format!("{:#}", PretrainConfig::from_file(&path).unwrap_err())
    };
    let e = err(&|t| {
        *t = t.replace(
            "steps = 6\nbatch_size = 4\nlr = 2e-3",
            "steps = 0\nbatch_size = 4\nlr = 2e-3",
        )
    });
    assert!(e.contains("vae.steps"), "{e}");
    let e = err(&|t| *t = t.replace("resolution = 16", "resolution = 18"));
    assert!(
        e.contains("not divisible by the VAE's downsampling factor 4"),
        "{e}"
    );
    let e = err(&|t| *t = t.replace("resolution = 16", "resolution = 20"));
    assert!(
        e.contains("not divisible by the UNet's downsampling factor 2"),
        "{e}"
    );
    let e = err(&|t| *t = t.replace("lr = 3e-3", "lr = -1.0"));
    assert!(e.contains("unet.lr"), "{e}");
    let e = err(&|t| *t = t.replace("lr = 3e-3", "lr = 3e-3\nsnr_gamma = 0.0"));
    assert!(e.contains("unet.snr_gamma"), "{e}");
    let e = err(&|t| *t = t.replace("lr = 3e-3", "lr = 3e-3\nnoise_offset = -0.1"));
    assert!(e.contains("unet.noise_offset"), "{e}");
    let e = err(&|t| *t = t.replace("logvar_bias = -4.0", "logvar_bias = -40.0"));
    assert!(
        e.contains("vae.logvar_bias") && e.contains("[-30, 20]"),
        "{e}"
    );
    let e = err(&|t| *t = t.replace("shapes_seed = 0", "shapes_seed = 0\nshapes_objects = \"3\""));
    assert!(
        e.contains("data.shapes_objects") && e.contains("\"3\""),
        "{e}"
    );
    let e = err(&|t| *t = t.replace("lr = 3e-3", "lr = 3e-3\nlr_schedule = \"linear\""));
    assert!(e.contains("lr_schedule") || e.contains("linear"), "{e}");
    let e = err(&|t| t.push_str("typo = 1\n"));
    assert!(e.contains("typo"), "{e}");

    let config = PretrainConfig::from_file(&tiny_config(&dir, &|_| {})).unwrap();
    let device = Default::default();
    // A non-empty run folder without --resume, and --resume without a checkpoint.
    let used = dir.join("used");
    std::fs::create_dir_all(&used).unwrap();
    std::fs::write(used.join("notes.txt"), "mine").unwrap();
    let e = format!(
        "{:#}",
        pretrain::run::<CpuAutodiff>(&config, &Squares, &used, &quiet(false, None), &device)
            .unwrap_err()
    );
    assert!(
        e.contains("already exists") && e.contains("--resume"),
        "{e}"
    );
    let e = format!(
        "{:#}",
        pretrain::run::<CpuAutodiff>(&config, &Squares, &used, &quiet(true, None), &device)
            .unwrap_err()
    );
    assert!(e.contains("no checkpoint"), "{e}");
    assert_eq!(
        std::fs::read_dir(&used).unwrap().count(),
        1,
        "nothing is written into a refused folder"
    );

    // A corrupt checkpoint, and one from another configuration.
    let run = dir.join("run");
    pretrain::run::<CpuAutodiff>(&config, &Squares, &run, &quiet(false, Some(2)), &device).unwrap();
    let ck = run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&ck).unwrap();
    std::fs::write(&ck, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!(
        "{:#}",
        pretrain::run::<CpuAutodiff>(&config, &Squares, &run, &quiet(true, None), &device)
            .unwrap_err()
    );
    assert!(e.contains("checkpoint.safetensors"), "{e}");
    std::fs::write(&ck, &bytes).unwrap();
    let other = PretrainConfig::from_file(&tiny_config(&dir, &|t| {
        *t = t.replace("seed = 3", "seed = 4")
    }))
    .unwrap();
    let e = format!(
        "{:#}",
        pretrain::run::<CpuAutodiff>(&other, &Squares, &run, &quiet(true, None), &device)
            .unwrap_err()
    );
    assert!(
        e.contains("another configuration") && e.contains("seed"),
        "{e}"
    );
}

#[test]
fn the_pruned_tokenizer_splits_text_as_the_full_one() {
    let dir = ril_testkit::scratch("pretrain-vocab");
    let prompts: Vec<String> = std::fs::read_to_string(repo("data/prompts/hpd_photo_eval.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    let base = repo("data/clip-tokenizer");
    let size = pretrain::vocab::prune(&base, &prompts, &dir).unwrap();
    let full = ClipTokenizer::from_dir(&base).unwrap();
    let pruned = ClipTokenizer::from_dir(&dir).unwrap();
    let names = |p: &Path| -> std::collections::BTreeMap<u32, String> {
        let v: std::collections::BTreeMap<String, u32> =
            serde_json::from_str(&std::fs::read_to_string(p.join("vocab.json")).unwrap()).unwrap();
        v.into_iter().map(|(t, i)| (i, t)).collect()
    };
    let (full_names, pruned_names) = (names(&base), names(&dir));
    assert_eq!(pruned_names.len(), size);
    assert!(size < 5000, "pruning 50 prompts kept {size} tokens");
    // Ids are contiguous, bytes first and the specials last, as CLIP numbers them.
    assert_eq!(
        pruned_names.keys().copied().collect::<Vec<_>>(),
        (0..size as u32).collect::<Vec<_>>()
    );
    assert_eq!(pruned_names[&(size as u32 - 1)], "<|endoftext|>");
    assert_eq!(pruned.eos_id, size as u32 - 1);
    for p in prompts
        .iter()
        .chain(&["an unseen word: zyzzyva".to_string()])
    {
        let a: Vec<&String> = full
            .tokens(p)
            .unwrap()
            .iter()
            .map(|i| &full_names[i])
            .collect::<Vec<_>>()
            .into_iter()
            .collect();
        let b: Vec<&String> = pruned
            .tokens(p)
            .unwrap()
            .iter()
            .map(|i| &pruned_names[i])
            .collect();
        if p.contains("zyzzyva") {
            // An unseen word still tokenizes (into smaller pieces, down to bytes).
            assert!(b.len() >= a.len(), "{p}");
        } else {
            assert_eq!(a, b, "{p}");
        }
    }
}

#[test]
fn the_cosine_schedule_warms_up_then_falls_to_zero_as_transformers_does() {
    use pretrain::config::LrSchedule::{Constant, Cosine};
    // 10 warm-up steps of 110: lr · (done + 1) / 10, then ½ (1 + cos(π p)), p = (done − 10) / 100
    // (transformers' get_cosine_schedule_with_warmup, num_cycles 0.5), exact to f64 rounding.
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    for s in [Constant, Cosine] {
        assert!(close(s.lr(2.0, 10, 110, 0), 0.2));
        assert!(close(s.lr(2.0, 10, 110, 9), 2.0));
        assert!(close(s.lr(2.0, 10, 110, 10), 2.0));
    }
    assert!(close(Constant.lr(2.0, 10, 110, 109), 2.0));
    assert!(close(Cosine.lr(2.0, 10, 110, 60), 1.0));
    let last = 2.0 * 0.5 * (1.0 + (std::f64::consts::PI * 0.99).cos());
    assert!(close(Cosine.lr(2.0, 10, 110, 109), last) && last > 0.0);
    // Without warm-up the first step has the full rate.
    assert!(close(Cosine.lr(2.0, 0, 100, 0), 2.0));
}

//! Numerical parity with diffusers / transformers on the tiny random pipeline of
//! tools/parity/make_fixtures.py: text encoder, UNet (output and input gradients), VAE (encode,
//! decode and gradient), DDIM trajectories and the whole guided pipeline.
//!
//! Tolerances: f32 with relative error ≤ 1e-4, plus an absolute floor of 1e-5 of the tensor's
//! largest magnitude, because summation order differs between PyTorch's and Burn's kernels and
//! elements that cancel to near zero have no meaningful relative error.

mod common;

use burn::prelude::*;
use common::{AD, B, assert_close, fixture, reference, values};
use sd_model::pipeline::{
    InitLatents, SampleRequest, StableDiffusion, load_text_encoder, load_unet, load_vae,
};
use sd_model::{DdimConfig, DdimScheduler};

fn timesteps<Bk: Backend>(ids: &[i64], device: &Bk::Device) -> Tensor<Bk, 1> {
    let t: Vec<f32> = ids.iter().map(|&t| t as f32).collect();
    Tensor::from_data(TensorData::new(t, [ids.len()]), device)
}

#[test]
fn text_encoder_matches_transformers() {
    let r = reference("text_encoder");
    let device = Default::default();
    let model = load_text_encoder::<B>(&fixture("tiny-sd/text_encoder"), &device).unwrap();
    let ids = r.read_i64("input_ids").unwrap();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 77]), &device);
    let out = model.forward(ids);
    let hidden = r.read_f32("last_hidden_state").unwrap();
    assert_close(
        "last_hidden_state",
        &values(out.last_hidden_state),
        &hidden,
        1e-4,
        1e-5,
    );
    let pooled = r.read_f32("pooler_output").unwrap();
    assert_close(
        "pooler_output",
        &values(out.pooler_output),
        &pooled,
        1e-4,
        1e-5,
    );
}

#[test]
fn tokenizer_gives_the_fixture_ids_of_the_tiny_pipeline() {
    let r = reference("text_encoder");
    let tok = sd_model::ClipTokenizer::from_dir(&fixture("tiny-sd/tokenizer")).unwrap();
    let ids: Vec<i64> = r.read_i64("input_ids").unwrap();
    let prompts = ["a photo of a cat", "A DOG  on the moon!"];
    for (i, p) in prompts.iter().enumerate() {
        let got: Vec<i64> = tok.encode(p).unwrap().into_iter().map(i64::from).collect();
        assert_eq!(got, ids[i * 77..(i + 1) * 77], "prompt {p:?}");
    }
}

#[test]
fn unet_output_and_input_gradients_match_diffusers() {
    let r = reference("unet");
    let device = Default::default();
    let unet = load_unet::<AD>(&fixture("tiny-sd/unet"), &device).unwrap();
    let sample = r.tensor::<AD, 4>("sample", &device).unwrap().require_grad();
    let context = r
        .tensor::<AD, 3>("encoder_hidden_states", &device)
        .unwrap()
        .require_grad();
    let t = timesteps::<AD>(&r.read_i64("timestep").unwrap(), &device);
    let out = unet.forward(sample.clone(), t, context.clone());
    assert_close(
        "unet out",
        &values(out.clone()),
        &r.read_f32("out").unwrap(),
        1e-4,
        1e-5,
    );
    let proj = r.tensor::<AD, 4>("proj", &device).unwrap();
    let grads = (out * proj).sum().backward();
    let gs = sample.grad(&grads).expect("gradient w.r.t. the sample");
    assert_close(
        "d/d sample",
        &values(gs),
        &r.read_f32("grad_sample").unwrap(),
        1e-4,
        1e-5,
    );
    let gc = context
        .grad(&grads)
        .expect("gradient w.r.t. the text embeddings");
    assert_close(
        "d/d encoder_hidden_states",
        &values(gc),
        &r.read_f32("grad_encoder_hidden_states").unwrap(),
        1e-4,
        1e-5,
    );
}

#[test]
fn vae_encode_decode_and_gradient_match_diffusers() {
    let r = reference("vae");
    let device = Default::default();
    let vae = load_vae::<AD>(&fixture("tiny-sd/vae"), &device).unwrap();
    let image = r.tensor::<AD, 4>("image", &device).unwrap();
    let dist = vae.encode(image);
    assert_close(
        "mean",
        &values(dist.mean),
        &r.read_f32("mean").unwrap(),
        1e-4,
        1e-5,
    );
    assert_close(
        "logvar",
        &values(dist.logvar),
        &r.read_f32("logvar").unwrap(),
        1e-4,
        1e-5,
    );
    let latents = r
        .tensor::<AD, 4>("latents", &device)
        .unwrap()
        .require_grad();
    let decoded = vae.decode(latents.clone());
    assert_close(
        "decoded",
        &values(decoded.clone()),
        &r.read_f32("decoded").unwrap(),
        1e-4,
        1e-5,
    );
    let proj = r.tensor::<AD, 4>("proj", &device).unwrap();
    let grads = (decoded * proj).sum().backward();
    let g = latents.grad(&grads).expect("gradient w.r.t. the latents");
    assert_close(
        "d/d latents",
        &values(g),
        &r.read_f32("grad_latents").unwrap(),
        1e-4,
        1e-5,
    );
}

#[test]
fn ddim_schedule_and_timesteps_match_diffusers() {
    let r = reference("ddim");
    let s50 = DdimScheduler::new(DdimConfig::sd15(), 50).unwrap();
    let expected = r.read_f32("alphas_cumprod").unwrap();
    // diffusers' f32 schedule (the reference is f32 widened to f64). torch.linspace's CPU
    // kernel rounds the last bit differently with the SIMD width (AVX2 vs AVX-512), so betas can
    // differ by an ulp; 1e-6 relative is a few f32 ulps of the 1000-term product.
    let mut worst = 0f32;
    for (i, (a, e)) in s50.alphas_cumprod.iter().zip(&expected).enumerate() {
        let rel = (a - e).abs() / e.abs();
        assert!(rel <= 1e-6, "alphas_cumprod[{i}]: {a} vs {e}");
        worst = worst.max(rel);
    }
    eprintln!("alphas_cumprod: worst relative difference {worst:e}");
    let ts = |v: Vec<i64>| v.into_iter().map(|t| t as usize).collect::<Vec<_>>();
    assert_eq!(s50.timesteps, ts(r.read_i64("timesteps_50").unwrap()));
    let s10 = DdimScheduler::new(DdimConfig::sd15(), 10).unwrap();
    assert_eq!(s10.timesteps, ts(r.read_i64("timesteps_10").unwrap()));
    assert_eq!(
        s10.timesteps,
        vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]
    );
}

fn trajectory(config: DdimConfig, eta: f64, with_noise: bool) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let r = reference("ddim");
    let device = Default::default();
    let s = DdimScheduler::new(config, 10).unwrap();
    let eps = r.tensor::<B, 5>("eps", &device).unwrap();
    let noise = r.tensor::<B, 5>("noise", &device).unwrap();
    let mut x = r.tensor::<B, 4>("x_T", &device).unwrap();
    let mut traj = vec![values(x.clone())];
    let mut x0s = Vec::new();
    for (i, &t) in s.timesteps.iter().enumerate() {
        let e = eps.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        let n = with_noise.then(|| noise.clone().narrow(0, i, 1).squeeze_dim::<4>(0));
        let (prev, x0) = s.step(e, t, x, eta, n);
        traj.push(values(prev.clone()));
        x0s.push(values(x0));
        x = prev;
    }
    (traj, x0s)
}

fn check_trajectory(name: &str, got: &[Vec<f32>], key: &str) {
    let expected = reference("ddim").read_f32(key).unwrap();
    let n = got[0].len();
    for (i, step) in got.iter().enumerate() {
        assert_close(
            &format!("{name} step {i}"),
            step,
            &expected[i * n..(i + 1) * n],
            1e-4,
            1e-5,
        );
    }
}

#[test]
fn ddim_trajectories_match_diffusers_for_every_eta() {
    let (t0, x0) = trajectory(DdimConfig::sd15(), 0.0, false);
    check_trajectory("eta 0", &t0, "traj_eta0");
    check_trajectory("pred_x0", &x0, "pred_x0_eta0");
    check_trajectory(
        "eta 1",
        &trajectory(DdimConfig::sd15(), 1.0, true).0,
        "traj_eta1",
    );
    check_trajectory(
        "eta 0.5",
        &trajectory(DdimConfig::sd15(), 0.5, true).0,
        "traj_eta05",
    );
    let v = DdimConfig {
        prediction_type: "v_prediction".into(),
        ..DdimConfig::sd15()
    };
    check_trajectory("v-prediction", &trajectory(v, 0.0, false).0, "traj_v_eta0");
}

/// Zero terminal SNR (`rescale_betas_zero_snr`, v-prediction, trailing spacing) against
/// diffusers (tools/parity/make_zero_snr_fixture.py): the rescaled alpha_bar ends at exactly 0,
/// the timesteps start at 999, and two DDIM steps, the first at alpha_bar = 0, give diffusers'
/// samples. alpha_bar's tolerance: the rescale turns alpha_bar back into betas through
/// `1 - ratio` and `1 - beta` in f32, which amplifies the ulp-level linspace difference noted
/// above: changing each beta by at most one ulp moved diffusers' own rescaled alpha_bar by up to
/// 3.6e-5 relative (measured with torch 2.11 on 5 random perturbations), so 1e-4 relative
/// (plus 1e-10 absolute for the values near 0) is the bound.
#[test]
fn zero_terminal_snr_matches_diffusers() {
    let r = reference("ddim_zero_snr");
    let config = DdimConfig {
        prediction_type: "v_prediction".into(),
        rescale_betas_zero_snr: true,
        timestep_spacing: "trailing".into(),
        ..DdimConfig::sd15()
    };
    let s = DdimScheduler::new(config.clone(), 20).unwrap();
    let expected = r.read_f32("alphas_cumprod").unwrap();
    let mut worst = 0f32;
    for (i, (a, e)) in s.alphas_cumprod.iter().zip(&expected).enumerate() {
        let d = (a - e).abs();
        assert!(
            d <= 1e-4 * e.abs() + 1e-10,
            "alphas_cumprod[{i}]: {a} vs {e}"
        );
        worst = worst.max(d / e.abs().max(1e-30));
    }
    eprintln!("zero-SNR alphas_cumprod: worst relative difference {worst:e}");
    assert_eq!(*s.alphas_cumprod.last().unwrap(), 0.0);
    let ts: Vec<usize> = r
        .read_i64("timesteps")
        .unwrap()
        .iter()
        .map(|&t| t as usize)
        .collect();
    assert_eq!(s.timesteps, ts);
    assert_eq!(s.timesteps[0], 999);
    let device = Default::default();
    let mut x = r.tensor::<B, 4>("sample", &device).unwrap();
    for i in 0..2 {
        let v = r
            .tensor::<B, 4>(&format!("model_output_{i}"), &device)
            .unwrap();
        let (prev, _) = s.step(v, s.timesteps[i], x, 0.0, None);
        assert_close(
            &format!("zero-SNR step {i}"),
            &values(prev.clone()),
            &r.read_f32(&format!("prev_sample_{i}")).unwrap(),
            1e-4,
            1e-5,
        );
        x = prev;
    }
    // An epsilon model cannot be sampled at zero SNR: refused by name.
    let eps = DdimConfig {
        prediction_type: "epsilon".into(),
        ..config
    };
    let e = DdimScheduler::new(eps, 20).unwrap_err().to_string();
    assert!(
        e.contains("rescale_betas_zero_snr") && e.contains("v_prediction"),
        "{e}"
    );
}

#[test]
fn pipeline_with_guidance_matches_diffusers() {
    let r = reference("pipeline");
    let device = Default::default();
    let sd = StableDiffusion::<B>::load(&fixture("tiny-sd"), &device).unwrap();
    let meta = |k: &str| -> Vec<String> {
        serde_json::from_str(&r.metadata(k).unwrap_or_else(|| panic!("metadata {k}"))).unwrap()
    };
    let prompts = meta("prompts");
    let negative = meta("negative_prompts");
    let embeds = sd
        .encode_prompts(&[negative.clone(), prompts.clone()].concat(), &device)
        .unwrap();
    assert_close(
        "prompt_embeds",
        &values(embeds),
        &r.read_f32("prompt_embeds").unwrap(),
        1e-4,
        1e-5,
    );
    let req = SampleRequest {
        prompts,
        negative_prompts: negative,
        height: 64,
        width: 64,
        steps: 10,
        guidance: 7.5,
        eta: 0.0,
        noise_seed: 0,
        latents: InitLatents::Given(r.tensor::<B, 4>("latents", &device).unwrap()),
    };
    let latents = sd.sample_latents(&req, &device, &mut |_, _| {}).unwrap();
    assert_close(
        "final_latents",
        &values(latents.clone()),
        &r.read_f32("final_latents").unwrap(),
        1e-4,
        1e-5,
    );
    let image = sd.vae.decode_latents(latents);
    assert_close(
        "image_raw",
        &values(image.clone()),
        &r.read_f32("image_raw").unwrap(),
        1e-4,
        1e-5,
    );
    // The pipeline's own post-processing into [0, 1].
    let ours = values((image / 2.0 + 0.5).clamp(0.0, 1.0));
    assert_close("image", &ours, &r.read_f32("image").unwrap(), 1e-4, 1e-5);
}

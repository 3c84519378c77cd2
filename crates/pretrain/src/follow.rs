//! How well a pipeline's images follow their captions, measured by the toy world's judge:
//! images sampled for the single-object held-out captions (each from its own seeded latents, so
//! a result does not depend on the batch size), judged attribute by attribute, beside the
//! judge's accuracy on the real held-out images of the same items, on those images after the
//! pipeline's VAE (encoded to the posterior mean and decoded: what the latent space can show at
//! best) and chance.

use anyhow::{Result, bail};
use burn::prelude::*;
use image::RgbImage;
use sd_model::noise::NoiseRng;
use sd_model::pipeline::{InitLatents, SampleRequest, StableDiffusion, to_rgb8};
use serde::{Deserialize, Serialize};
use toy_shapes::judge::{Accuracy, Judge, accuracy};
use toy_shapes::{Objects, Spec, Split};

/// Which captions and how they are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FollowSpec {
    /// The held-out stream's seed (captions are its single-object items 0..count).
    pub seed: u64,
    pub count: usize,
    /// Classifier-free guidance scale.
    pub guidance: f64,
    /// DDIM steps (eta 0).
    pub steps: usize,
    /// Image side in pixels.
    pub size: usize,
    /// Images sampled at once (does not change the images).
    pub batch: usize,
}

impl Default for FollowSpec {
    /// The yardstick: 200 captions, guidance 7.5, 20 DDIM steps, 64x64.
    fn default() -> Self {
        Self {
            seed: 0,
            count: 200,
            guidance: 7.5,
            steps: 20,
            size: 64,
            batch: 16,
        }
    }
}

/// The judge's verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Follow {
    pub spec: FollowSpec,
    /// On the pipeline's images for the captions.
    pub generated: Accuracy,
    /// On the data set's own images of the same items.
    pub real: Accuracy,
    /// On those images encoded by the pipeline's VAE (posterior mean) and decoded.
    pub reconstructed: Accuracy,
}

/// Stream id of the initial latents under the spec's seed.
const STREAM_LATENTS: u64 = 0xF0110;

/// Samples and judges; returns the verdicts and the images with their captions.
pub fn follow<B: Backend>(
    sd: &StableDiffusion<B>,
    judge: &Judge<B>,
    spec: FollowSpec,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Follow, Vec<(RgbImage, String)>)> {
    if spec.count == 0 || spec.batch == 0 {
        bail!("caption following needs at least one caption and a batch of at least one");
    }
    let data = Spec::new(spec.seed, Split::Heldout)
        .objects(Objects::One)
        .size(spec.size as u32);
    let space = sd.latent_space();
    let mut cells = Vec::with_capacity(spec.count);
    let mut truth = Vec::with_capacity(spec.count);
    let mut real = Vec::with_capacity(spec.count);
    let mut reconstructed = Vec::with_capacity(spec.count);
    let mut start = 0;
    while start < spec.count {
        let idx: Vec<u64> = (start..(start + spec.batch).min(spec.count))
            .map(|i| i as u64)
            .collect();
        let mut prompts = Vec::new();
        let mut latents = Vec::new();
        for &i in &idx {
            let item = data.sample(i);
            prompts.push(item.caption);
            truth.push(item.labels);
            real.push(item.image);
            let shape = space.shape(1, spec.size, spec.size);
            latents.push(
                NoiseRng::derive(spec.seed, &[STREAM_LATENTS, i]).tensor::<B, 4>(shape, device),
            );
        }
        let req = SampleRequest {
            prompts: prompts.clone(),
            negative_prompts: vec![],
            height: spec.size,
            width: spec.size,
            steps: spec.steps,
            guidance: spec.guidance,
            eta: 0.0,
            noise_seed: 0,
            latents: InitLatents::Given(Tensor::cat(latents, 0)),
        };
        let images = to_rgb8(sd.sample(&req, device, |_, _| {})?)?;
        let x = crate::data::images_tensor::<B>(&real[start..], spec.size, device);
        reconstructed.extend(to_rgb8(sd.vae.decode(sd.vae.encode(x).mean))?);
        cells.extend(images.into_iter().zip(prompts));
        start += idx.len();
        progress(start, spec.count);
    }
    let images: Vec<RgbImage> = cells.iter().map(|(i, _)| i.clone()).collect();
    let generated =
        accuracy(&judge.predict_images(&images, device), &truth).map_err(anyhow::Error::msg)?;
    let real =
        accuracy(&judge.predict_images(&real, device), &truth).map_err(anyhow::Error::msg)?;
    let reconstructed = accuracy(&judge.predict_images(&reconstructed, device), &truth)
        .map_err(anyhow::Error::msg)?;
    Ok((
        Follow {
            spec,
            generated,
            real,
            reconstructed,
        },
        cells,
    ))
}

impl std::fmt::Display for Follow {
    /// A table: attribute, accuracy on generated images, on real images, on their VAE round
    /// trip, chance.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "| attribute | generated ({} captions) | real held-out | real after the VAE | chance |",
            self.generated.n
        )?;
        writeln!(f, "|---|---|---|---|---|")?;
        let (g, r, v, c) = (
            self.generated.fraction().named(),
            self.real.fraction().named(),
            self.reconstructed.fraction().named(),
            self.generated.chance.named(),
        );
        for i in 0..g.len() {
            writeln!(
                f,
                "| {} | {:.1} % | {:.1} % | {:.1} % | {:.1} % |",
                g[i].0,
                100.0 * g[i].1,
                100.0 * r[i].1,
                100.0 * v[i].1,
                100.0 * c[i].1
            )?;
        }
        Ok(())
    }
}

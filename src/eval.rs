//! `ril eval`: generates the eval prompts' images with a model (plus LoRA files) from the same
//! noise as every other model, and scores them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::ArgAction;
use rid_trainer::TrainConfig;
use rid_trainer::config::{FidFeatures, read_prompts};
use ril_metrics::eval::evaluate_with;
use ril_metrics::{EvalSpec, Metric};
use sd_model::StableDiffusion;
use sd_model::hub::asset::Asset;

use crate::cli::{asset, at_least_one, one_of, text};

/// Generates a model's eval images from shared noise and scores them.
///
/// The images of the eval prompts come from the same noise for every model. The model, sampling, seed, reward weights and eval prompts come from the run config. A metric
/// that cannot be computed is reported as skipped with the reason. Writes DIR/results.json and
/// DIR/grid.png.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// The run config (TOML).
    #[arg(long, value_name = "RUN.toml")]
    pub config: PathBuf,
    /// A LoRA task file (e.g. RUN/task-0-NAME/lora.safetensors), applied in order (repeatable).
    #[arg(long = "lora", value_name = "FILE")]
    pub loras: Vec<PathBuf>,
    /// The eval prompts, one per line [default: the config's prompts.eval].
    #[arg(long, value_name = "FILE")]
    pub prompts: Option<PathBuf>,
    /// Images per prompt.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = at_least_one())]
    pub images_per_prompt: usize,
    /// The metrics, comma-separated.
    #[arg(long, value_name = "LIST", value_delimiter = ',', action = ArgAction::Set,
          default_values = Metric::ALL.map(Metric::name),
          value_parser = one_of(&Metric::ALL, Metric::name))]
    pub metrics: Vec<Metric>,
    /// Images per sampling batch.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = at_least_one())]
    pub batch: usize,
    /// Prompts in DIR/grid.png.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub grid_prompts: usize,
    /// FID: a folder of real images (its statistics are cached in the cache folder, see `ril
    /// fid --help`) or their statistics (FILE.npz, from `ril fid-stats` or pytorch-fid's
    /// --save-stats); needs Inception weights (--fid-weights, [eval] fid_weights or
    /// --fid-hash-weights) [default: the config's eval.fid_reference].
    #[arg(long, value_name = "DIR|FILE.npz")]
    pub fid_reference: Option<PathBuf>,
    /// FID: pytorch-fid's Inception weights (pt_inception-2015-12-05-6726825d.pth; a file,
    /// hf:// file or its release URL) [default: the config's eval.fid_weights].
    #[arg(long, value_name = "FILE|URL", group = "fid_inception", value_parser = asset())]
    pub fid_weights: Option<Asset>,
    /// FID: deterministic hash weights instead (values comparable only with each other).
    #[arg(long, group = "fid_inception")]
    pub fid_hash_weights: bool,
    /// FID's features: inception (pytorch-fid's) or clip (the CLIP score model's normalised image
    /// embeddings, against a folder of real images) [default: the config's eval.fid_features,
    /// else inception].
    #[arg(long, value_name = "NET", value_parser = one_of(&FID_FEATURES, fid_features_name))]
    pub fid_features: Option<FidFeatures>,
    /// CLIP score (torchmetrics' definition): a transformers CLIPModel folder or hub id, e.g.
    /// openai/clip-vit-large-patch14 [default: the config's eval.clip_model].
    #[arg(long, value_name = "DIR_OR_REPO", value_parser = text())]
    pub clip_model: Option<String>,
    /// judge_accuracy: the toy world's judge folder (e.g. data/toy/judge), for prompts that are
    /// the toy world's one-object captions [default: the config's eval.judge].
    #[arg(long, value_name = "DIR")]
    pub judge: Option<PathBuf>,
    /// The output folder.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(a: &EvalArgs) -> Result<()> {
    let config = TrainConfig::from_file(&a.config)?;
    let prompts = read_prompts(a.prompts.as_ref().unwrap_or(&config.prompts.eval))?;
    let s = &config.sampling;
    let spec = EvalSpec {
        prompts,
        images_per_prompt: a.images_per_prompt,
        seed: config.seed,
        steps: s.steps,
        guidance: s.guidance,
        height: s.height,
        width: s.width,
        batch_size: a.batch,
        metrics: a.metrics.clone(),
        grid_prompts: a.grid_prompts,
        fid: fid_spec(a, &config)?,
        clip_model: a.clip_model.clone().or(config.eval.clip_model.clone()),
    };
    let judge = a.judge.clone().or(config.eval.judge.clone());
    if spec.metrics.contains(&Metric::JudgeAccuracy)
        && let Some(j) = &judge
    {
        // Every prompt must name labels the judge can be checked against: said before any work.
        judge_truth(&spec.prompts).with_context(|| format!("judge {}", j.display()))?;
    }
    ril::on_backend!(config.model.backend, inner, |B, device| {
        eval::<B>(&config, &a.loras, &spec, judge.as_deref(), &a.out, &device)
    })
}

/// The labels of each prompt, which must be a one-object caption of the toy world.
fn judge_truth(prompts: &[String]) -> Result<Vec<toy_shapes::Labels>> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            toy_shapes::caption::parse_one(p).with_context(|| {
                format!(
                    "judge_accuracy: eval prompt {} ({p:?}) is not a one-object caption of the toy \
                     world",
                    i + 1
                )
            })
        })
        .collect()
}

/// judge_accuracy: per image, the share of the five attributes its prompt names (shape, colour,
/// size, position, background) that the judge reads off it.
struct JudgeScorer<B: Backend> {
    judge: toy_shapes::judge::Judge<B>,
    device: B::Device,
}

impl<B: Backend> ril_metrics::eval::ImageScorer for JudgeScorer<B> {
    fn metric(&self) -> Metric {
        Metric::JudgeAccuracy
    }

    fn score(&self, images: &[image::RgbImage], prompts: &[String]) -> Result<Vec<f64>> {
        let truth = judge_truth(prompts)?;
        let predicted = self.judge.predict_images(images, &self.device);
        predicted
            .iter()
            .zip(&truth)
            .map(|(p, t)| {
                toy_shapes::judge::share_right(p, t)
                    .context("judge_accuracy: a label without an object")
            })
            .collect()
    }
}

const FID_FEATURES: [FidFeatures; 2] = [FidFeatures::Inception, FidFeatures::Clip];

fn fid_features_name(f: FidFeatures) -> &'static str {
    match f {
        FidFeatures::Inception => "inception",
        FidFeatures::Clip => "clip",
    }
}

/// FID's reference, network and weights from the flags, else the config; the hash weights only
/// when asked for. A reference without Inception weights, or CLIP features without a CLIP model,
/// is refused before any work.
fn fid_spec(a: &EvalArgs, config: &TrainConfig) -> Result<Option<ril_metrics::eval::FidSpec>> {
    use ril_metrics::eval::{FidNetwork, FidSpec};
    let Some(reference) = a
        .fid_reference
        .clone()
        .or(config.eval.fid_reference.clone())
    else {
        return Ok(None);
    };
    if a.fid_features.or(config.eval.fid_features) == Some(FidFeatures::Clip) {
        if a.clip_model.is_none() && config.eval.clip_model.is_none() {
            bail!(
                "FID on CLIP features (--fid-features clip or [eval] fid_features) needs the CLIP \
                 model: --clip-model DIR_OR_REPO or [eval] clip_model in the config"
            );
        }
        return Ok(Some(FidSpec {
            reference,
            weights: None,
            network: FidNetwork::Clip,
        }));
    }
    let weights = match (&a.fid_weights, &config.eval.fid_weights) {
        _ if a.fid_hash_weights => None,
        (Some(w), _) | (None, Some(w)) => Some(w.resolve().context("FID's Inception weights")?),
        (None, None) => bail!(
            "FID needs Inception weights: --fid-weights FILE|URL, [eval] fid_weights in the \
             config, or --fid-hash-weights"
        ),
    };
    Ok(Some(FidSpec {
        reference,
        weights,
        network: FidNetwork::Inception,
    }))
}

fn eval<B: Backend>(
    config: &TrainConfig,
    loras: &[PathBuf],
    spec: &EvalSpec,
    judge: Option<&std::path::Path>,
    out: &std::path::Path,
    device: &B::Device,
) -> Result<()> {
    let dir = sd_model::hub::resolve_model(&config.model.source)?;
    let mut sd = StableDiffusion::<B>::load(&dir, device)?;
    for l in loras {
        lora_group::import_task(&mut sd.unet, l, "unet")?;
    }
    let judge = match judge {
        Some(dir) if spec.metrics.contains(&Metric::JudgeAccuracy) => Some(JudgeScorer::<B> {
            judge: toy_shapes::judge::Judge::load(dir, device)?,
            device: device.clone(),
        }),
        _ => None,
    };
    let scorers: Vec<&dyn ril_metrics::eval::ImageScorer> = judge
        .as_ref()
        .map(|j| j as &dyn ril_metrics::eval::ImageScorer)
        .into_iter()
        .collect();
    let result = evaluate_with(&sd, spec, &config.rewards, &scorers, out, device)?;
    for (m, v) in &result.values {
        println!("{}\t{v:.6}", m.name());
    }
    for (m, why) in &result.skipped {
        println!("{}\tskipped: {why}", m.name());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use ril_metrics::eval::ImageScorer;
    use toy_shapes::{Objects, Spec, Split};

    use super::*;

    type B = sd_model::backend::Cpu;

    #[test]
    fn the_judge_metric_is_the_share_of_attributes_read_right() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let device = Default::default();
        let judge = JudgeScorer::<B> {
            judge: toy_shapes::judge::Judge::load(&root.join("data/toy/judge"), &device).unwrap(),
            device,
        };
        let spec = Spec::new(0, Split::Heldout).objects(Objects::One);
        let samples: Vec<_> = (0..32).map(|i| spec.sample(i)).collect();
        let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
        let own: Vec<String> = samples.iter().map(|s| s.caption.clone()).collect();
        let v = judge.score(&images, &own).unwrap();
        // Each value counts five attributes; the judge reads real held-out images right
        // (99.7 % of attributes over 1000 in data/toy/judge/heldout.json).
        assert!(v.iter().all(|x| (x * 5.0 - (x * 5.0).round()).abs() < 1e-9));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!(mean > 0.95, "{v:?}");
        // Each image against the next one's caption: attributes agree only by coincidence.
        let mut other = own.clone();
        other.rotate_left(1);
        let w = judge.score(&images, &other).unwrap();
        let shifted = w.iter().sum::<f64>() / w.len() as f64;
        assert!(shifted < 0.6, "{shifted}");
        // A prompt that is not one of the world's captions is named.
        let mut bad = own;
        bad[3] = "a cat on a sofa".into();
        let e = judge.score(&images, &bad).unwrap_err().to_string();
        assert!(
            e.contains("eval prompt 4") && e.contains("a cat on a sofa"),
            "{e}"
        );
    }
}

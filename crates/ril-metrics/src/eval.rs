//! The evaluation runner: eval prompts × images per prompt, generated from the SAME initial
//! noise for every model (image j of prompt i starts from `NoiseRng::derive(seed, [i, j])`, the
//! same on every backend), scored with the target metrics; results.json and a sample grid.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use rewards::Reward;
use rewards::config::{RewardKind, RewardsConfig};
use rewards::files::{jpeg_kb, png_kb};
use sd_model::noise::NoiseRng;
use sd_model::pipeline::{InitLatents, SampleRequest, StableDiffusion, to_rgb8};
use serde::{Deserialize, Serialize};

/// A metric of the evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Aesthetic,
    Hps,
    PngKb,
    JpegKb,
    ClipScore,
    Fid,
    /// The toy world's judge: the share of the attributes a prompt names that the judge reads off
    /// its image (see [`ImageScorer`]).
    JudgeAccuracy,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Self::Aesthetic,
        Self::Hps,
        Self::PngKb,
        Self::JpegKb,
        Self::ClipScore,
        Self::Fid,
        Self::JudgeAccuracy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Aesthetic => "aesthetic",
            Self::Hps => "hps",
            Self::PngKb => "png_kb",
            Self::JpegKb => "jpeg_kb",
            Self::ClipScore => "clip_score",
            Self::Fid => "fid",
            Self::JudgeAccuracy => "judge_accuracy",
        }
    }

    /// Parses a comma-separated list (names as [`Metric::name`]).
    pub fn parse_list(s: &str) -> Result<Vec<Metric>> {
        s.split(',')
            .map(|n| {
                Self::ALL
                    .into_iter()
                    .find(|m| m.name() == n.trim())
                    .with_context(|| format!("unknown metric {n:?} (known: aesthetic, hps, png_kb, jpeg_kb, clip_score, fid, judge_accuracy)"))
            })
            .collect()
    }

    /// Whether larger values are better.
    pub fn direction(self) -> crate::Direction {
        match self {
            Self::Aesthetic | Self::Hps | Self::ClipScore | Self::JudgeAccuracy => {
                crate::Direction::HigherIsBetter
            }
            _ => crate::Direction::LowerIsBetter,
        }
    }
}

/// What to generate and score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalSpec {
    pub prompts: Vec<String>,
    pub images_per_prompt: usize,
    pub seed: u64,
    pub steps: usize,
    pub guidance: f64,
    pub height: usize,
    pub width: usize,
    /// Images generated together.
    pub batch_size: usize,
    pub metrics: Vec<Metric>,
    /// Prompts shown as rows of the sample grid (with up to 4 images each).
    pub grid_prompts: usize,
    /// FID against real images or their statistics (None: FID is skipped).
    pub fid: Option<FidSpec>,
    /// A transformers CLIPModel folder (or hub id) for the CLIP score (None: skipped).
    #[serde(default)]
    pub clip_model: Option<String>,
}

/// The reference set and network of FID.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FidSpec {
    /// A folder of real images (its statistics are cached in the cache folder, see
    /// [`crate::fid::folder_stats`]) or, for Inception features, a pytorch-fid statistics file
    /// (`.npz`).
    pub reference: std::path::PathBuf,
    /// pytorch-fid's Inception weights; None uses the deterministic hash weights (values
    /// comparable only with each other). Unused with [`FidNetwork::Clip`].
    pub weights: Option<std::path::PathBuf>,
    /// Whose features the Fréchet distance compares.
    #[serde(default)]
    pub network: FidNetwork,
}

/// The feature network of FID.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FidNetwork {
    /// pytorch-fid's InceptionV3 pool features (2048).
    #[default]
    Inception,
    /// The CLIP score model's L2-normalised image embeddings (the toy world's FID: its images
    /// are not photographs, so Inception's features say little about them).
    Clip,
}

/// The numbers of one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalResult {
    /// Mean of each computed metric.
    pub values: BTreeMap<Metric, f64>,
    /// Metrics not computed, with the reason.
    pub skipped: BTreeMap<Metric, String>,
    pub images: usize,
}

/// The initial latents of image `j` of prompt `i` (the same for every model and backend).
pub fn eval_noise<B: Backend>(
    seed: u64,
    i: usize,
    j: usize,
    shape: [usize; 4],
    device: &B::Device,
) -> Tensor<B, 4> {
    NoiseRng::derive(seed, &[i as u64, j as u64]).tensor(shape, device)
}

/// A metric the caller computes with its own model on the 8-bit images and their prompts (the
/// toy world's judge, which this crate does not know): one value per image, averaged.
pub trait ImageScorer {
    /// The metric it gives.
    fn metric(&self) -> Metric;
    /// One value per image.
    fn score(&self, images: &[image::RgbImage], prompts: &[String]) -> Result<Vec<f64>>;
}

/// Generates the spec's images with `sd` and scores them; writes `out/results.json` and
/// `out/grid.png` (atomically).
pub fn evaluate<B: Backend>(
    sd: &StableDiffusion<B>,
    spec: &EvalSpec,
    rewards: &RewardsConfig,
    out: &Path,
    device: &B::Device,
) -> Result<EvalResult> {
    evaluate_with(sd, spec, rewards, &[], out, device)
}

/// [`evaluate`] with the caller's `scorers` for the metrics they give (a metric of the spec
/// that none gives and this crate does not compute is reported as skipped).
pub fn evaluate_with<B: Backend>(
    sd: &StableDiffusion<B>,
    spec: &EvalSpec,
    rewards: &RewardsConfig,
    scorers: &[&dyn ImageScorer],
    out: &Path,
    device: &B::Device,
) -> Result<EvalResult> {
    if spec.prompts.is_empty() || spec.images_per_prompt == 0 || spec.batch_size == 0 {
        bail!("evaluation needs prompts, images per prompt ≥ 1 and batch size ≥ 1");
    }
    let mut result = EvalResult::default();
    let mut reward_scorers: Vec<(Metric, Box<dyn Reward<B>>)> = Vec::new();
    let image_scorers: Vec<&dyn ImageScorer> = scorers
        .iter()
        .copied()
        .filter(|s| spec.metrics.contains(&s.metric()))
        .collect();
    for &m in &spec.metrics {
        let kind = match m {
            Metric::Aesthetic => RewardKind::Aesthetic,
            Metric::Hps => RewardKind::Hps,
            // Computed below when their inputs are given; said here what is missing otherwise.
            Metric::ClipScore => {
                if spec.clip_model.is_none() {
                    result.skipped.insert(
                        m,
                        "no CLIP model given (--clip-model DIR_OR_REPO or [eval] clip_model)"
                            .into(),
                    );
                }
                continue;
            }
            Metric::JudgeAccuracy => {
                if !scorers.iter().any(|s| s.metric() == m) {
                    result.skipped.insert(
                        m,
                        "no judge given (--judge DIR or [eval] judge: the toy world's)".into(),
                    );
                }
                continue;
            }
            Metric::Fid => {
                if spec.fid.is_none() {
                    result.skipped.insert(
                        m,
                        "no reference images given (--fid-reference DIR|FILE.npz or [eval] fid_reference)".into(),
                    );
                }
                continue;
            }
            _ => continue,
        };
        let missing = match kind {
            RewardKind::Aesthetic => rewards
                .aesthetic_mlp
                .is_none()
                .then_some("rewards.aesthetic_mlp is not set"),
            _ => (rewards.hps_weights.is_none() || rewards.hps_tokenizer.is_none())
                .then_some("rewards.hps_weights / hps_tokenizer are not set"),
        };
        match missing {
            Some(reason) => {
                result.skipped.insert(m, reason.to_string());
            }
            None => {
                reward_scorers.push((m, rewards::build::build_reward::<B>(kind, rewards, device)?))
            }
        }
    }
    let fid_spec = spec
        .fid
        .as_ref()
        .filter(|_| spec.metrics.contains(&Metric::Fid));
    let clip_for_fid = fid_spec.is_some_and(|f| f.network == FidNetwork::Clip);
    let clip_score = spec.clip_model.is_some() && spec.metrics.contains(&Metric::ClipScore);
    // One CLIP model serves the CLIP score and FID's CLIP features.
    let clip_dir = match &spec.clip_model {
        Some(source) if clip_score || clip_for_fid => Some(sd_model::hub::resolve_repo(
            source,
            sd_model::hub::CLIP_FILES,
        )?),
        None if clip_for_fid => bail!(
            "FID on CLIP features needs the CLIP model (--clip-model DIR_OR_REPO or [eval] \
             clip_model)"
        ),
        _ => None,
    };
    let clip = clip_dir
        .as_deref()
        .map(|d| crate::clip_score::ClipScorer::<B>::load(d, device))
        .transpose()?;
    let fid = match fid_spec {
        Some(f) => Some(match (f.network, &clip, &clip_dir) {
            (FidNetwork::Clip, Some(scorer), Some(dir)) => {
                let reference = crate::clip_score::folder_stats(
                    scorer,
                    &crate::clip_score::identity(dir)?,
                    &f.reference,
                    spec.batch_size,
                    device,
                )?;
                (FidNet::Clip, reference)
            }
            _ => {
                let model = crate::fid::inception::<B>(f.weights.as_deref(), device)?;
                let reference = crate::fid::reference_stats(
                    &model,
                    f.weights.as_deref(),
                    &f.reference,
                    spec.batch_size,
                    device,
                )?;
                (FidNet::Inception(Box::new(model)), reference)
            }
        }),
        None => None,
    };
    let mut fid_features: Vec<f32> = Vec::new();
    let mut clip_sum = 0.0;
    let jobs: Vec<(usize, usize)> = (0..spec.prompts.len())
        .flat_map(|i| (0..spec.images_per_prompt).map(move |j| (i, j)))
        .collect();
    let bar = indicatif::ProgressBar::new(jobs.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("eval [{bar:25}] {pos}/{len} images ({eta})")
            .expect("template"),
    );
    let shape = sd.latent_space().shape(1, spec.height, spec.width);
    let mut sums: BTreeMap<Metric, f64> = BTreeMap::new();
    let cols = spec.images_per_prompt.min(4);
    let mut grid: Vec<Option<image::RgbImage>> =
        vec![None; spec.grid_prompts.min(spec.prompts.len()) * cols];
    for chunk in jobs.chunks(spec.batch_size) {
        let prompts: Vec<String> = chunk
            .iter()
            .map(|&(i, _)| spec.prompts[i].clone())
            .collect();
        let latents = Tensor::cat(
            chunk
                .iter()
                .map(|&(i, j)| eval_noise::<B>(spec.seed, i, j, shape, device))
                .collect(),
            0,
        );
        let req = SampleRequest {
            prompts: prompts.clone(),
            negative_prompts: Vec::new(),
            height: spec.height,
            width: spec.width,
            steps: spec.steps,
            guidance: spec.guidance,
            eta: 0.0,
            noise_seed: spec.seed,
            latents: InitLatents::Given(latents),
        };
        let images = sd.sample(&req, device, |_, _| {})?;
        if let Some((FidNet::Inception(model), _)) = &fid {
            let x = ((images.clone() + 1.0) / 2.0).clamp(0.0, 1.0);
            fid_features.extend(crate::fid::features(model, x, spec.batch_size));
        }
        for (m, scorer) in &reward_scorers {
            let s: Vec<f32> = scorer
                .score(images.clone(), &prompts)?
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32");
            *sums.entry(*m).or_default() += s.iter().map(|&v| v as f64).sum::<f64>();
        }
        let rgb = to_rgb8(images)?;
        if clip_score && let Some(c) = &clip {
            let (scores, _) = c.score(&rgb, &prompts, device)?;
            clip_sum += scores.iter().map(|&v| v as f64).sum::<f64>();
        }
        for s in &image_scorers {
            let v = s.score(&rgb, &prompts)?;
            if v.len() != rgb.len() {
                bail!(
                    "{}: {} values for {} images",
                    s.metric().name(),
                    v.len(),
                    rgb.len()
                );
            }
            *sums.entry(s.metric()).or_default() += v.iter().sum::<f64>();
        }
        if let (Some((FidNet::Clip, _)), Some(c)) = (&fid, &clip) {
            fid_features.extend(crate::clip_score::feature_values(c, &rgb, device)?);
        }
        for (k, img) in rgb.into_iter().enumerate() {
            if spec.metrics.contains(&Metric::PngKb) {
                *sums.entry(Metric::PngKb).or_default() += png_kb(&img)?;
            }
            if spec.metrics.contains(&Metric::JpegKb) {
                *sums.entry(Metric::JpegKb).or_default() += jpeg_kb(&img, 80)?;
            }
            let (i, j) = chunk[k];
            if i < spec.grid_prompts && j < cols {
                grid[i * cols + j] = Some(img);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    result.images = jobs.len();
    if clip_score {
        // torchmetrics: the mean of 100·cos over every pair, then clamped at 0.
        result
            .values
            .insert(Metric::ClipScore, (clip_sum / jobs.len() as f64).max(0.0));
    }
    if let Some((_, reference)) = &fid {
        let dim = reference.mu.len();
        let generated = crate::fid::Stats::from_features(&fid_features, dim)?;
        result.values.insert(
            Metric::Fid,
            crate::fid::frechet_distance(&generated, reference)?,
        );
    }
    for (m, s) in sums {
        let mean = s / jobs.len() as f64;
        if !mean.is_finite() {
            bail!("metric {} is not finite ({mean})", m.name());
        }
        result.values.insert(m, mean);
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    // The reward models' files are recorded (HPSv2.0 and v2.1 scores, say, do not compare).
    let json = serde_json::json!({ "spec": spec, "rewards": rewards, "result": result });
    sd_model::write_atomic(
        &out.join("results.json"),
        serde_json::to_string_pretty(&json)?.as_bytes(),
    )?;
    if !grid.is_empty() {
        save_grid(&grid, cols, &out.join("grid.png"))?;
    }
    Ok(result)
}

/// FID's network, loaded (the CLIP one is the CLIP score's model).
enum FidNet<B: Backend> {
    Inception(Box<crate::inception::InceptionV3<B>>),
    Clip,
}

/// Tiles images row by row (`cols` per row) into one PNG, written atomically.
pub fn save_grid(cells: &[Option<image::RgbImage>], cols: usize, path: &Path) -> Result<()> {
    let (w, h) = cells
        .iter()
        .flatten()
        .next()
        .map(|i| i.dimensions())
        .context("no image for the grid")?;
    let rows = cells.len().div_ceil(cols);
    let mut canvas = image::RgbImage::from_pixel(
        w * cols as u32,
        h * rows as u32,
        image::Rgb([255, 255, 255]),
    );
    for (k, cell) in cells.iter().enumerate() {
        if let Some(img) = cell {
            image::imageops::replace(
                &mut canvas,
                img,
                ((k % cols) as u32 * w) as i64,
                ((k / cols) as u32 * h) as i64,
            );
        }
    }
    sd_model::pipeline::save_png(&canvas, path)
}

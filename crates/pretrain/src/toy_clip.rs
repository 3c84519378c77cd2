//! The toy world's CLIP models, trained by ril with CLIP's contrastive objective on toy images
//! and their captions: in open_clip's layout they are the human-preference analogue (the HPSv2
//! reward, `rewards::hps::Hps`: the cosine of image and text features, so it is
//! prompt-conditioned), and in transformers' CLIPModel layout with another seed they are the
//! metric CLIP that `ril eval` computes the CLIP score with (`ril_metrics::clip_score`), so that
//! the metric is not the reward it judges.
//!
//! The objective is CLIP's symmetric cross-entropy over a batch's image–caption similarities at a
//! fixed temperature, with every pair of identical labels counted as a match (the toy world's
//! captions can repeat within a batch; CLIP's one-hot targets would push those apart).
//! Reproducible on one machine: initial weights from [`SeededInit`], batch `t` = items
//! `t*B .. (t+1)*B` of the single-object train stream (the loop is `toy_shapes::fit`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::{AutodiffModule, Module};
use burn::nn::LinearConfig;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::AutodiffBackend;
use rewards::clip_vision::{ClipVisionConfig, ClipVisionModelWithProjection};
use rewards::openclip::{OpenClip, OpenClipConfig};
use rewards::preprocess::clip_preprocess;
use ril_metrics::clip_score::ClipTextWithProjection;
use sd_model::ClipTokenizer;
use sd_model::clip::ClipTextConfig;
use sd_model::config::HiddenAct;
use serde::{Deserialize, Serialize};
use toy_shapes::caption::caption;
use toy_shapes::fit::{Fit, fit};
use toy_shapes::judge::images_to_tensor;
use toy_shapes::rng::SplitMix64;
use toy_shapes::{Colour, Labels, Objects, Position, Sample, Shape, Size, Spec, Split};

use crate::seeded::SeededInit;

/// Which checkpoint layout (and so which of ril's readers) the model is trained in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// open_clip's state dict and model config, read by the HPS reward.
    OpenClip,
    /// A transformers CLIPModel folder, read by the CLIP score metric.
    Transformers,
}

/// The model's sizes (both towers share the joint width).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipShape {
    /// The joint embedding width.
    pub embed_dim: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub vision_width: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub text_width: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    /// MLP width / model width.
    pub mlp_ratio: usize,
}

/// A toy CLIP training run (`configs/toy/hps.toml`, `configs/toy/clip-metric.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipTrainConfig {
    pub layout: Layout,
    /// Seeds the initial weights and selects the training stream.
    pub seed: u64,
    pub steps: usize,
    pub batch_size: usize,
    /// Peak learning rate (AdamW), decayed linearly to 0 at the last step.
    pub lr: f64,
    pub weight_decay: f64,
    /// The softmax temperature of the similarities (CLIP starts at 0.07).
    pub temperature: f64,
    /// The CLIP tokenizer folder (relative paths are relative to the config file); it is copied
    /// into the output.
    pub tokenizer: PathBuf,
    /// The held-out evaluation after training: its seed and item count.
    pub eval_seed: u64,
    pub eval_count: usize,
    pub model: ClipShape,
}

impl ClipTrainConfig {
    /// Reads and checks a TOML file; errors name the file and field. `tokenizer` is resolved
    /// against the file's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut config: Self = toy_shapes::fit::read_toml(path, "toy CLIP config")?;
        if config.tokenizer.is_relative() {
            let base = path.parent().unwrap_or(Path::new("."));
            config.tokenizer = base.join(&config.tokenizer);
        }
        config.check().with_context(|| path.display().to_string())?;
        Ok(config)
    }

    /// The optimisation.
    pub fn fit(&self) -> Fit {
        Fit {
            steps: self.steps,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
        }
    }

    pub fn check(&self) -> Result<()> {
        self.fit().check()?;
        if self.batch_size < 2 {
            bail!("batch_size must be at least 2 (a contrastive batch needs other pairs)");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "temperature must be a positive number, got {}",
                self.temperature
            );
        }
        if self.eval_count < 2 {
            bail!("eval_count must be at least 2");
        }
        let m = &self.model;
        for (name, v) in [
            ("model.embed_dim", m.embed_dim),
            ("model.vision_layers", m.vision_layers),
            ("model.text_layers", m.text_layers),
            ("model.mlp_ratio", m.mlp_ratio),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        if m.patch_size == 0 || !m.image_size.is_multiple_of(m.patch_size) {
            bail!(
                "model.patch_size ({}) must divide model.image_size ({})",
                m.patch_size,
                m.image_size
            );
        }
        if m.vision_heads == 0 || !m.vision_width.is_multiple_of(m.vision_heads) {
            bail!("model.vision_heads must divide model.vision_width");
        }
        if m.text_heads == 0 || !m.text_width.is_multiple_of(m.text_heads) {
            bail!("model.text_heads must divide model.text_width");
        }
        if !self.tokenizer.is_dir() {
            bail!(
                "tokenizer: the folder {} does not exist",
                self.tokenizer.display()
            );
        }
        Ok(())
    }

    /// The tokenizer as the layout's reader builds it: open_clip pads with 0 (as `Hps::load`),
    /// transformers with the folder's pad token.
    pub fn load_tokenizer(&self) -> Result<ClipTokenizer> {
        let t = ClipTokenizer::from_dir(&self.tokenizer).context("tokenizer")?;
        Ok(match self.layout {
            Layout::OpenClip => t.with_pad_id(0),
            Layout::Transformers => t,
        })
    }

    /// The open_clip model config (open_clip's `model_configs/*.json` fields).
    pub fn open_clip(&self, vocab_size: usize) -> OpenClipConfig {
        let m = &self.model;
        OpenClipConfig {
            embed_dim: m.embed_dim,
            image_size: m.image_size,
            patch_size: m.patch_size,
            vision_width: m.vision_width,
            vision_layers: m.vision_layers,
            vision_head_width: m.vision_width / m.vision_heads,
            context_length: 77,
            vocab_size,
            text_width: m.text_width,
            text_heads: m.text_heads,
            text_layers: m.text_layers,
            mlp_ratio: m.mlp_ratio,
        }
    }

    /// The transformers text and vision configs (quick_gelu, LayerNorm epsilon 1e-5, as openai's
    /// CLIP).
    pub fn transformers(&self, vocab_size: usize) -> (ClipTextConfig, ClipVisionConfig) {
        let m = &self.model;
        let text = ClipTextConfig {
            vocab_size,
            hidden_size: m.text_width,
            intermediate_size: m.text_width * m.mlp_ratio,
            num_hidden_layers: m.text_layers,
            num_attention_heads: m.text_heads,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        };
        let vision = ClipVisionConfig {
            hidden_size: m.vision_width,
            intermediate_size: m.vision_width * m.mlp_ratio,
            num_hidden_layers: m.vision_layers,
            num_attention_heads: m.vision_heads,
            image_size: m.image_size,
            patch_size: m.patch_size,
            projection_dim: m.embed_dim,
            ..ClipVisionConfig::vit_l14()
        };
        (text, vision)
    }
}

/// Both towers of a CLIP, each giving L2-normalised features as its reader computes them.
pub trait Towers<B: Backend>: Module<B> {
    /// Images [N, 3, S, S] in [-1, 1] → [N, E].
    fn image_features(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;
    /// Token ids [N, 77] → [N, E].
    fn text_features(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2>;
}

fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    x / norm
}

impl<B: Backend> Towers<B> for OpenClip<B> {
    fn image_features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        // As rewards::hps::Hps::score.
        self.encode_image(clip_preprocess(images, self.image_size))
    }

    fn text_features(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        self.encode_text(ids)
    }
}

/// A transformers CLIPModel's towers (the CLIP score metric's model).
#[derive(Module, Debug)]
pub struct HfClip<B: Backend> {
    pub text: ClipTextWithProjection<B>,
    pub vision: ClipVisionModelWithProjection<B>,
}

impl<B: Backend> Towers<B> for HfClip<B> {
    fn image_features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        // As ril_metrics::clip_score: CLIP's normalisation at the tower's size (the toy images
        // are already that size, so torchmetrics' bicubic resize is the identity there).
        let size = self.vision.image_size;
        l2_normalize(self.vision.forward(clip_preprocess(images, size)))
    }

    fn text_features(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let pooled = self.text.text_model.forward(ids).pooler_output;
        l2_normalize(self.text.text_projection.forward(pooled))
    }
}

/// Token ids [N, 77] of `captions`.
pub fn token_ids<B: Backend>(
    tokenizer: &ClipTokenizer,
    captions: &[String],
    device: &B::Device,
) -> Result<Tensor<B, 2, Int>> {
    let n = tokenizer.max_length;
    let mut ids = Vec::with_capacity(captions.len() * n);
    for c in captions {
        ids.extend(tokenizer.encode(c)?.into_iter().map(i64::from));
    }
    Ok(Tensor::from_data(
        TensorData::new(ids, [captions.len(), n]),
        device,
    ))
}

/// Samples as images [n, 3, 64, 64] in [-1, 1] (the range the rewards take).
fn image_tensor<B: Backend>(samples: &[Sample], device: &B::Device) -> Tensor<B, 4> {
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    images_to_tensor::<B>(&images, 64, device) * 2.0 - 1.0
}

/// The contrastive targets: row `i` spread evenly over the items whose labels equal item `i`'s
/// (symmetric, so it is the column targets too).
fn targets<B: Backend>(labels: &[Labels], device: &B::Device) -> Tensor<B, 2> {
    let n = labels.len();
    let mut t = vec![0f32; n * n];
    for i in 0..n {
        let same: Vec<usize> = (0..n).filter(|&j| labels[j] == labels[i]).collect();
        for &j in &same {
            t[i * n + j] = 1.0 / same.len() as f32;
        }
    }
    Tensor::from_data(TensorData::new(t, [n, n]), device)
}

/// CLIP's loss on one batch: the mean of the image→text and text→image cross-entropies.
pub fn contrastive_loss<B: Backend, M: Towers<B>>(
    model: &M,
    tokenizer: &ClipTokenizer,
    temperature: f64,
    samples: &[Sample],
    device: &B::Device,
) -> Result<Tensor<B, 1>> {
    let captions: Vec<String> = samples.iter().map(|s| s.caption.clone()).collect();
    let labels: Vec<Labels> = samples.iter().map(|s| s.labels.clone()).collect();
    let img = model.image_features(image_tensor::<B>(samples, device));
    let txt = model.text_features(token_ids::<B>(tokenizer, &captions, device)?);
    let logits = img.matmul(txt.transpose()) / temperature;
    let t = targets::<B>(&labels, device);
    let rows = -(t.clone() * log_softmax(logits.clone(), 1))
        .sum_dim(1)
        .mean();
    let cols = -(t * log_softmax(logits.transpose(), 1)).sum_dim(1).mean();
    Ok((rows + cols) / 2.0)
}

/// A trained model in one of the layouts (one per training run: the variants' sizes differ by
/// a few hundred bytes of module metadata).
#[allow(clippy::large_enum_variant)]
pub enum Trained<B: Backend> {
    OpenClip(OpenClip<B>),
    Transformers(HfClip<B>),
}

/// The result of [`train`]: the model and every step's loss.
pub struct Run<B: Backend> {
    pub model: Trained<B>,
    pub losses: Vec<f32>,
}

fn train_towers<B: AutodiffBackend, M: Towers<B> + AutodiffModule<B>>(
    model: M,
    config: &ClipTrainConfig,
    tokenizer: &ClipTokenizer,
    device: &B::Device,
    on_step: impl FnMut(usize, f32),
) -> Result<(M::InnerModule, Vec<f32>)> {
    let model = model.map(&mut SeededInit::new(SplitMix64::keyed(&[
        config.seed,
        0x434c_4950,
    ])));
    let spec = Spec::new(config.seed, Split::Train).objects(Objects::One);
    let loss = |m: &M, samples: &[Sample]| {
        contrastive_loss(m, tokenizer, config.temperature, samples, device)
    };
    let (model, losses) = fit(model, &config.fit(), &spec, "toy CLIP", loss, on_step)?;
    Ok((model.valid(), losses))
}

/// Trains the model `config` describes, calling `on_step(step, loss)` after each step.
pub fn train<B: AutodiffBackend>(
    config: &ClipTrainConfig,
    device: &B::Device,
    on_step: impl FnMut(usize, f32),
) -> Result<Run<B::InnerBackend>> {
    config.check()?;
    let tokenizer = config.load_tokenizer()?;
    let vocab = tokenizer.vocab_size();
    Ok(match config.layout {
        Layout::OpenClip => {
            let m = config.open_clip(vocab).init::<B>(device);
            let (m, losses) = train_towers(m, config, &tokenizer, device, on_step)?;
            Run {
                model: Trained::OpenClip(m),
                losses,
            }
        }
        Layout::Transformers => {
            let (text, vision) = config.transformers(vocab);
            let m = HfClip::<B> {
                text: ClipTextWithProjection {
                    text_model: text.init(device)?,
                    text_projection: LinearConfig::new(text.hidden_size, config.model.embed_dim)
                        .with_bias(false)
                        .init(device),
                },
                vision: vision.init(device)?,
            };
            let (m, losses) = train_towers(m, config, &tokenizer, device, on_step)?;
            Run {
                model: Trained::Transformers(m),
                losses,
            }
        }
    })
}

/// How well the model matches held-out images with their captions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heldout {
    pub seed: u64,
    pub count: usize,
    /// Mean cosine of an image with its own caption, and with the other captions of its group
    /// of 64 (whose labels differ).
    pub matched_cosine: f64,
    pub unmatched_cosine: f64,
    /// The share of images whose own caption scores highest among the captions of its group of
    /// 64 (chance: 1/64), counting a caption with the same labels as right.
    pub top1: f64,
    /// Per attribute, the share of images whose own caption scores higher than the same
    /// template with that one attribute changed to the next value the world allows (chance
    /// 0.5): how much the score follows each word.
    pub attribute_preferred: BTreeMap<String, f64>,
    /// The cosine of held-out items 0..8 with their own captions, to check a loaded copy
    /// against (the HPS reward's values for the open_clip layout; the CLIP score is 100 times).
    pub first_scores: Vec<f32>,
}

/// `labels` with one attribute of its object changed to the next value in that attribute's
/// order that still makes drawable labels (the object's colour differs from the background).
pub fn changed(labels: &Labels, attribute: &str) -> Labels {
    fn next<T: Copy + PartialEq>(all: &[T], v: T, k: usize) -> T {
        let i = all
            .iter()
            .position(|&x| x == v)
            .expect("the value is listed");
        all[(i + k) % all.len()]
    }
    for k in 1.. {
        let mut l = labels.clone();
        let o = &mut l.objects[0];
        match attribute {
            "shape" => o.shape = next(&Shape::ALL, o.shape, k),
            "colour" => o.colour = next(&Colour::OBJECT, o.colour, k),
            "size" => o.size = next(&Size::ALL, o.size, k),
            "position" => o.position = next(&Position::ALL, o.position, k),
            "background" => l.background = next(&Colour::ALL, l.background, k),
            _ => unreachable!("attribute {attribute}"),
        }
        if l.check().is_ok() && l != *labels {
            return l;
        }
    }
    unreachable!("every attribute has another drawable value")
}

/// The attributes [`Heldout::attribute_preferred`] measures.
pub const ATTRIBUTES: [&str; 5] = ["shape", "colour", "size", "position", "background"];

/// Evaluates the model on items `0..count` of the single-object held-out stream of `seed`.
pub fn evaluate<B: Backend, M: Towers<B>>(
    model: &M,
    tokenizer: &ClipTokenizer,
    seed: u64,
    count: usize,
    device: &B::Device,
) -> Result<Heldout> {
    let spec = Spec::new(seed, Split::Heldout).objects(Objects::One);
    let (mut matched, mut unmatched, mut n_unmatched, mut top1) = (0.0, 0.0, 0usize, 0usize);
    let mut preferred = BTreeMap::<String, usize>::new();
    let mut first = Vec::new();
    for start in (0..count).step_by(64) {
        let n = 64.min(count - start);
        let samples: Vec<Sample> = (start..start + n).map(|i| spec.sample(i as u64)).collect();
        let captions: Vec<String> = samples.iter().map(|s| s.caption.clone()).collect();
        let img = model.image_features(image_tensor::<B>(&samples, device));
        let txt = model.text_features(token_ids::<B>(tokenizer, &captions, device)?);
        let sim: Vec<f32> = img
            .clone()
            .matmul(txt.transpose())
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        for i in 0..n {
            let own = sim[i * n + i];
            matched += own as f64;
            if start + i < 8 {
                first.push(own);
            }
            let mut best = i;
            for j in 0..n {
                if samples[j].labels != samples[i].labels {
                    unmatched += sim[i * n + j] as f64;
                    n_unmatched += 1;
                }
                if sim[i * n + j] > sim[i * n + best] {
                    best = j;
                }
            }
            top1 += usize::from(samples[best].labels == samples[i].labels);
        }
        let cos = |caps: &[String]| -> Result<Vec<f32>> {
            let t = model.text_features(token_ids::<B>(tokenizer, caps, device)?);
            (img.clone() * t)
                .sum_dim(1)
                .into_data()
                .convert::<f32>()
                .to_vec()
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        };
        // Every image's own labels in template 0, against each attribute changed.
        let own: Vec<String> = samples.iter().map(|s| caption(&s.labels, 0)).collect();
        let x = cos(&own)?;
        for a in ATTRIBUTES {
            let other: Vec<String> = samples
                .iter()
                .map(|s| caption(&changed(&s.labels, a), 0))
                .collect();
            let y = cos(&other)?;
            *preferred.entry(a.to_string()).or_default() +=
                x.iter().zip(&y).filter(|(x, y)| x > y).count();
        }
    }
    let c = count as f64;
    Ok(Heldout {
        seed,
        count,
        matched_cosine: matched / c,
        unmatched_cosine: unmatched / n_unmatched.max(1) as f64,
        top1: top1 as f64 / c,
        attribute_preferred: preferred
            .into_iter()
            .map(|(k, v)| (k, v as f64 / c))
            .collect(),
        first_scores: first,
    })
}

/// The open_clip model config file (`model_configs/*.json`'s fields), which `rewards.hps_model_config`
/// and `ril score --model-config` read.
pub fn open_clip_json(c: &OpenClipConfig) -> serde_json::Value {
    serde_json::json!({
        "embed_dim": c.embed_dim,
        "vision_cfg": {
            "image_size": c.image_size,
            "layers": c.vision_layers,
            "width": c.vision_width,
            "head_width": c.vision_head_width,
            "patch_size": c.patch_size,
            "mlp_ratio": c.mlp_ratio,
        },
        "text_cfg": {
            "context_length": c.context_length,
            "vocab_size": c.vocab_size,
            "width": c.text_width,
            "heads": c.text_heads,
            "layers": c.text_layers,
        },
    })
}

/// A transformers CLIPModel config.json.
pub fn clip_model_json(
    text: &ClipTextConfig,
    vision: &ClipVisionConfig,
    projection_dim: usize,
    tokenizer: &ClipTokenizer,
    temperature: f64,
) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": projection_dim,
        "logit_scale_init_value": (1.0 / temperature).ln(),
        "text_config": {
            "model_type": "clip_text_model",
            "vocab_size": text.vocab_size,
            "hidden_size": text.hidden_size,
            "intermediate_size": text.intermediate_size,
            "num_hidden_layers": text.num_hidden_layers,
            "num_attention_heads": text.num_attention_heads,
            "max_position_embeddings": text.max_position_embeddings,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": text.layer_norm_eps,
            "projection_dim": projection_dim,
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision.hidden_size,
            "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_hidden_layers,
            "num_attention_heads": vision.num_attention_heads,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "projection_dim": projection_dim,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": vision.layer_norm_eps,
        },
    })
}

/// Writes the model into the new folder `out` as a whole (`crate::output::write_new_dir`: an
/// occupied `out` is refused). open_clip: `open_clip_config.json`,
/// `open_clip_model.safetensors` (the state dict with `logit_scale`) and `tokenizer/`;
/// transformers: `config.json`, `model.safetensors` and the tokenizer files beside them (a
/// CLIPModel folder). `extra` files go beside them.
pub fn save<B: Backend>(
    model: &Trained<B>,
    config: &ClipTrainConfig,
    out: &Path,
    extra: &[(&str, Vec<u8>)],
) -> Result<()> {
    let tokenizer = config.load_tokenizer()?;
    let vocab = tokenizer.vocab_size();
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let logit_scale = (1.0 / config.temperature).ln() as f32;
    crate::output::write_new_dir(out, |tmp| {
        let (mut tensors, weights) = match model {
            Trained::OpenClip(m) => {
                crate::vocab::copy(&config.tokenizer, &tmp.join("tokenizer"))?;
                let json = open_clip_json(&config.open_clip(vocab));
                lora_group::io::write_atomic(
                    &tmp.join("open_clip_config.json"),
                    &serde_json::to_vec_pretty(&json)?,
                )?;
                (
                    sd_model::save::module_tensors(m, "")?,
                    "open_clip_model.safetensors",
                )
            }
            Trained::Transformers(m) => {
                crate::vocab::copy(&config.tokenizer, tmp)?;
                let (text, vision) = config.transformers(vocab);
                let json = clip_model_json(
                    &text,
                    &vision,
                    config.model.embed_dim,
                    &tokenizer,
                    config.temperature,
                );
                lora_group::io::write_atomic(
                    &tmp.join("config.json"),
                    &serde_json::to_vec_pretty(&json)?,
                )?;
                let mut t = sd_model::save::module_tensors(&m.text, "")?;
                t.extend(sd_model::save::module_tensors(&m.vision, "")?);
                (t, "model.safetensors")
            }
        };
        tensors.insert("logit_scale".into(), (vec![], vec![logit_scale]));
        lora_group::io::write_safetensors(&tmp.join(weights), &tensors, &meta)?;
        for (file, bytes) in extra {
            lora_group::io::write_atomic(&tmp.join(file), bytes)?;
        }
        Ok(())
    })
}

/// A `ril toy-reward` config: a toy CLIP (it sets `layout`) or the toy aesthetic reward.
pub enum ToyModelConfig {
    Clip(ClipTrainConfig),
    Aesthetic(crate::toy_aesthetic::AestheticTrainConfig),
}

impl ToyModelConfig {
    /// Reads `path`, a toy CLIP config when it has a top-level `layout`, else a toy aesthetic
    /// config.
    pub fn from_file(path: &Path) -> Result<Self> {
        let table: toml::Table = toy_shapes::fit::read_toml(path, "TOML file")?;
        Ok(if table.contains_key("layout") {
            Self::Clip(ClipTrainConfig::from_file(path)?)
        } else {
            Self::Aesthetic(crate::toy_aesthetic::AestheticTrainConfig::from_file(path)?)
        })
    }
}

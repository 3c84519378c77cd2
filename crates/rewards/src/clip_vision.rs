//! transformers `CLIPVisionModelWithProjection` (openai CLIP ViT, e.g. ViT-L/14 for the aesthetic
//! reward and CLIP score): patch and class embeddings, `pre_layrnorm`, the CLIP encoder shared
//! with the text tower, `post_layernorm` on the class token and `visual_projection`.

use std::path::Path;

use anyhow::Result;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use sd_model::clip::{ClipEncoder, ClipTextConfig};
use sd_model::load::{Weights, load_weights};
use serde::{Deserialize, Serialize};

/// The fields of transformers' `CLIPVisionConfig` the tower uses (plus `projection_dim`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    /// Width (ViT-L/14: 1024).
    pub hidden_size: usize,
    /// MLP width (ViT-L/14: 4096).
    pub intermediate_size: usize,
    /// Layers (ViT-L/14: 24).
    pub num_hidden_layers: usize,
    /// Heads (ViT-L/14: 16).
    pub num_attention_heads: usize,
    /// Input size (224).
    pub image_size: usize,
    /// Patch size (ViT-L/14: 14).
    pub patch_size: usize,
    /// Output embedding width (ViT-L/14: 768).
    pub projection_dim: usize,
    /// "quick_gelu" (openai CLIP).
    pub hidden_act: sd_model::config::HiddenAct,
    /// LayerNorm epsilon (1e-5).
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self::vit_l14()
    }
}

impl ClipVisionConfig {
    /// openai/clip-vit-large-patch14's vision tower (its config.json `vision_config`).
    pub fn vit_l14() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            image_size: 224,
            patch_size: 14,
            projection_dim: 768,
            hidden_act: sd_model::config::HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// The parity fixture's tiny tower (tools/parity/make_reward_fixtures.py).
    pub fn tiny() -> Self {
        Self {
            hidden_size: 32,
            intermediate_size: 37,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            patch_size: 32,
            ..Self::vit_l14()
        }
    }

    /// Reads a transformers config.json: a `CLIPVisionConfig` (CLIPVisionModelWithProjection) or a
    /// full `CLIPConfig`, whose `vision_config` and top-level `projection_dim` are used.
    pub fn from_file(path: &Path) -> Result<Self> {
        let v: serde_json::Value = sd_model::config::read_config(path)?;
        let parse = |node: serde_json::Value| -> Result<Self> {
            serde_json::from_value(node)
                .map_err(|e| anyhow::anyhow!("invalid CLIP vision config {}: {e}", path.display()))
        };
        match v.get("vision_config") {
            Some(vision) => {
                let mut c = parse(vision.clone())?;
                if let Some(p) = v.get("projection_dim").and_then(serde_json::Value::as_u64) {
                    c.projection_dim = p as usize;
                }
                Ok(c)
            }
            None => parse(v),
        }
    }

    /// Builds the model with freshly initialised (lazy) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<ClipVisionModelWithProjection<B>> {
        let encoder_config = ClipTextConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
            ..ClipTextConfig::sd15()
        };
        encoder_config.validate()?;
        let d = self.hidden_size;
        let grid = self.image_size / self.patch_size;
        Ok(ClipVisionModelWithProjection {
            vision_model: ClipVisionTransformer {
                embeddings: ClipVisionEmbeddings {
                    class_embedding: Param::from_tensor(Tensor::zeros([d], device)),
                    patch_embedding: Conv2dConfig::new([3, d], [self.patch_size, self.patch_size])
                        .with_stride([self.patch_size, self.patch_size])
                        .with_bias(false)
                        .init(device),
                    position_embedding: EmbeddingConfig::new(grid * grid + 1, d).init(device),
                },
                pre_layrnorm: LayerNormConfig::new(d)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device),
                encoder: ClipEncoder::new(&encoder_config, device),
                post_layernorm: LayerNormConfig::new(d)
                    .with_epsilon(self.layer_norm_eps)
                    .init(device),
            },
            visual_projection: LinearConfig::new(d, self.projection_dim)
                .with_bias(false)
                .init(device),
            image_size: self.image_size,
        })
    }
}

/// `vision_model.embeddings`.
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    pub class_embedding: Param<Tensor<B, 1>>,
    pub patch_embedding: Conv2d<B>,
    pub position_embedding: Embedding<B>,
}

/// `vision_model` (note transformers' historical spelling `pre_layrnorm`).
#[derive(Module, Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    pub embeddings: ClipVisionEmbeddings<B>,
    pub pre_layrnorm: LayerNorm<B>,
    pub encoder: ClipEncoder<B>,
    pub post_layernorm: LayerNorm<B>,
}

/// transformers `CLIPVisionModelWithProjection`.
#[derive(Module, Debug)]
pub struct ClipVisionModelWithProjection<B: Backend> {
    pub vision_model: ClipVisionTransformer<B>,
    pub visual_projection: Linear<B>,
    /// Input size the position embeddings were trained for.
    pub image_size: usize,
}

impl<B: Backend> ClipVisionModelWithProjection<B> {
    /// Normalised pixels [B, 3, S, S] → image embeddings [B, projection_dim] (not L2-normalised),
    /// as `CLIPModel.get_image_features`.
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 2> {
        let _span = tracing::trace_span!("clip_vision").entered();
        let e = &self.vision_model.embeddings;
        let patches = e.patch_embedding.forward(pixel_values);
        let [b, d, gh, gw] = patches.dims();
        let patches = patches.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let class = e.class_embedding.val().reshape([1, 1, d]).expand([b, 1, d]);
        let n = gh * gw + 1;
        let device = patches.device();
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n]);
        let x = Tensor::cat(vec![class, patches], 1) + e.position_embedding.forward(positions);
        let x = self.vision_model.pre_layrnorm.forward(x);
        let x = self.vision_model.encoder.forward(x, false);
        let pooled = x.narrow(1, 0, 1).reshape([b, d]);
        let pooled = self.vision_model.post_layernorm.forward(pooled);
        self.visual_projection.forward(pooled)
    }
}

/// File keys of a CLIP checkpoint that the vision tower does not use: the text tower and
/// projection, the logit scale and int64 `position_ids` buffers.
pub fn vision_key(key: &str) -> Option<String> {
    let skip = key.starts_with("text_model.")
        || key.starts_with("text_projection")
        || key == "logit_scale"
        || key.ends_with("position_ids");
    (!skip).then(|| key.to_string())
}

/// Loads the vision tower and projection from a CLIPVisionModelWithProjection or full CLIPModel
/// checkpoint (safetensors or PyTorch pickle) with an explicit config.
pub fn load_clip_vision<B: Backend>(
    config: &ClipVisionConfig,
    path: &Path,
    device: &B::Device,
) -> Result<ClipVisionModelWithProjection<B>> {
    let weights = Weights::open(path, None)?;
    load_weights(config.init(device)?, &weights, &vision_key)
}

/// Loads a CLIP vision tower from a transformers folder (config.json + model.safetensors, or
/// pytorch_model.bin) or from a single weights file with ViT-L/14's config.
pub fn load_clip_vision_from<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<ClipVisionModelWithProjection<B>> {
    if !path.is_dir() {
        return load_clip_vision(&ClipVisionConfig::vit_l14(), path, device);
    }
    let config = ClipVisionConfig::from_file(&path.join("config.json"))?;
    let weights = ["model.safetensors", "pytorch_model.bin"]
        .iter()
        .map(|f| path.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} holds neither model.safetensors nor pytorch_model.bin",
                path.display()
            )
        })?;
    load_clip_vision(&config, &weights, device)
}

//! open_clip's CLIP (the ViT-H-14 family HPSv2 is built on): a ViT image tower (`visual.*`) and a
//! text transformer, with packed attention projections (`in_proj_weight`), exact GELU, and the
//! projections `visual.proj` / `text_projection` stored [in, out].

use anyhow::Result;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::gelu;
use burn::tensor::module::{attention, linear};
use burn::tensor::ops::AttentionModuleOptions;

/// Sizes of an open_clip CLIP with a ViT image tower.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenClipConfig {
    /// Joint embedding width (ViT-H-14: 1024).
    pub embed_dim: usize,
    /// Image size (224).
    pub image_size: usize,
    /// Patch size (ViT-H-14: 14).
    pub patch_size: usize,
    /// Vision width (1280), layers (32), head width (80).
    pub vision_width: usize,
    pub vision_layers: usize,
    pub vision_head_width: usize,
    /// Text context length (77), vocabulary (49408), width (1024), heads (16), layers (24).
    pub context_length: usize,
    pub vocab_size: usize,
    pub text_width: usize,
    pub text_heads: usize,
    pub text_layers: usize,
    /// MLP width / model width (4).
    pub mlp_ratio: usize,
}

impl OpenClipConfig {
    /// open_clip's `ViT-H-14.json` (the HPSv2 model).
    pub fn vit_h14() -> Self {
        Self {
            embed_dim: 1024,
            image_size: 224,
            patch_size: 14,
            vision_width: 1280,
            vision_layers: 32,
            vision_head_width: 80,
            context_length: 77,
            vocab_size: 49408,
            text_width: 1024,
            text_heads: 16,
            text_layers: 24,
            mlp_ratio: 4,
        }
    }

    /// The parity fixture's tiny model (tools/parity/make_reward_fixtures.py).
    pub fn tiny() -> Self {
        Self {
            embed_dim: 16,
            patch_size: 32,
            vision_width: 32,
            vision_layers: 2,
            vision_head_width: 8,
            vocab_size: 1000,
            text_width: 24,
            text_heads: 4,
            text_layers: 2,
            ..Self::vit_h14()
        }
    }

    /// Reads an open_clip model config (the `model_configs/*.json` format: `embed_dim`,
    /// `vision_cfg {image_size, layers, width, head_width, patch_size, mlp_ratio}`,
    /// `text_cfg {context_length, vocab_size, width, heads, layers}`); missing fields take
    /// ViT-H-14's values.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let v: serde_json::Value = sd_model::config::read_config(path)?;
        let d = Self::vit_h14();
        let get = |section: &str, key: &str, default: usize| -> Result<usize> {
            let node = if section.is_empty() {
                Some(&v)
            } else {
                v.get(section)
            };
            match node.and_then(|n| n.get(key)) {
                None => Ok(default),
                Some(x) => x
                    .as_f64()
                    .filter(|f| *f >= 1.0 && f.fract() == 0.0)
                    .map(|f| f as usize)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}: `{section}.{key}` must be a positive integer, got {x}",
                            path.display()
                        )
                    }),
            }
        };
        let c = Self {
            embed_dim: get("", "embed_dim", d.embed_dim)?,
            image_size: get("vision_cfg", "image_size", d.image_size)?,
            patch_size: get("vision_cfg", "patch_size", d.patch_size)?,
            vision_width: get("vision_cfg", "width", d.vision_width)?,
            vision_layers: get("vision_cfg", "layers", d.vision_layers)?,
            vision_head_width: get("vision_cfg", "head_width", 64)?,
            mlp_ratio: get("vision_cfg", "mlp_ratio", d.mlp_ratio)?,
            context_length: get("text_cfg", "context_length", d.context_length)?,
            vocab_size: get("text_cfg", "vocab_size", d.vocab_size)?,
            text_width: get("text_cfg", "width", d.text_width)?,
            text_heads: get("text_cfg", "heads", 8)?,
            text_layers: get("text_cfg", "layers", d.text_layers)?,
        };
        if !c.vision_width.is_multiple_of(c.vision_head_width)
            || !c.text_width.is_multiple_of(c.text_heads)
        {
            anyhow::bail!(
                "{}: widths must be divisible by the head width / head count",
                path.display()
            );
        }
        Ok(c)
    }

    /// Builds the model with freshly initialised (lazy) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> OpenClip<B> {
        let (vw, tw) = (self.vision_width, self.text_width);
        let grid = self.image_size / self.patch_size;
        let ln = |d: usize| LayerNormConfig::new(d).with_epsilon(1e-5).init(device);
        let zeros1 = |d: usize| Param::from_tensor(Tensor::zeros([d], device));
        let zeros2 = |a: usize, b: usize| Param::from_tensor(Tensor::zeros([a, b], device));
        OpenClip {
            visual: VisionTower {
                conv1: Conv2dConfig::new([3, vw], [self.patch_size, self.patch_size])
                    .with_stride([self.patch_size, self.patch_size])
                    .with_bias(false)
                    .init(device),
                class_embedding: zeros1(vw),
                positional_embedding: zeros2(grid * grid + 1, vw),
                ln_pre: ln(vw),
                transformer: Transformer::new(
                    vw,
                    vw / self.vision_head_width,
                    self.vision_layers,
                    self.mlp_ratio,
                    device,
                ),
                ln_post: ln(vw),
                proj: zeros2(vw, self.embed_dim),
            },
            token_embedding: EmbeddingConfig::new(self.vocab_size, tw).init(device),
            positional_embedding: zeros2(self.context_length, tw),
            transformer: Transformer::new(
                tw,
                self.text_heads,
                self.text_layers,
                self.mlp_ratio,
                device,
            ),
            ln_final: ln(tw),
            text_projection: zeros2(tw, self.embed_dim),
            image_size: self.image_size,
        }
    }
}

/// `attn`: PyTorch `nn.MultiheadAttention` with packed q/k/v.
#[derive(Module, Debug)]
pub struct MultiheadAttention<B: Backend> {
    /// [3·D, D] (q, k, v stacked), PyTorch layout.
    pub in_proj_weight: Param<Tensor<B, 2>>,
    /// [3·D].
    pub in_proj_bias: Param<Tensor<B, 1>>,
    pub out_proj: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> MultiheadAttention<B> {
    fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let qkv = linear(
            x,
            self.in_proj_weight.val().transpose(),
            Some(self.in_proj_bias.val()),
        );
        let h = self.heads;
        let split = |i: usize| {
            qkv.clone()
                .narrow(2, i * d, d)
                .reshape([b, n, h, d / h])
                .swap_dims(1, 2)
        };
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        let out = attention(split(0), split(1), split(2), None, None, options);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// `mlp.c_fc`, GELU, `mlp.c_proj`.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub c_fc: Linear<B>,
    pub c_proj: Linear<B>,
}

/// open_clip `ResidualAttentionBlock`.
#[derive(Module, Debug)]
pub struct ResidualAttentionBlock<B: Backend> {
    pub ln_1: LayerNorm<B>,
    pub attn: MultiheadAttention<B>,
    pub ln_2: LayerNorm<B>,
    pub mlp: Mlp<B>,
}

/// `transformer.resblocks`.
#[derive(Module, Debug)]
pub struct Transformer<B: Backend> {
    pub resblocks: Vec<ResidualAttentionBlock<B>>,
}

impl<B: Backend> Transformer<B> {
    fn new(
        width: usize,
        heads: usize,
        layers: usize,
        mlp_ratio: usize,
        device: &B::Device,
    ) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let ln = || LayerNormConfig::new(width).with_epsilon(1e-5).init(device);
        Self {
            resblocks: (0..layers)
                .map(|_| ResidualAttentionBlock {
                    ln_1: ln(),
                    attn: MultiheadAttention {
                        in_proj_weight: Param::from_tensor(Tensor::zeros(
                            [3 * width, width],
                            device,
                        )),
                        in_proj_bias: Param::from_tensor(Tensor::zeros([3 * width], device)),
                        out_proj: lin(width, width),
                        heads,
                    },
                    ln_2: ln(),
                    mlp: Mlp {
                        c_fc: lin(width, width * mlp_ratio),
                        c_proj: lin(width * mlp_ratio, width),
                    },
                })
                .collect(),
        }
    }

    fn forward(&self, mut x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        for blk in &self.resblocks {
            x = x.clone() + blk.attn.forward(blk.ln_1.forward(x), causal);
            let h = blk
                .mlp
                .c_proj
                .forward(gelu(blk.mlp.c_fc.forward(blk.ln_2.forward(x.clone()))));
            x = x + h;
        }
        x
    }
}

/// `visual`: open_clip `VisionTransformer` (class-token pooling).
#[derive(Module, Debug)]
pub struct VisionTower<B: Backend> {
    pub conv1: Conv2d<B>,
    pub class_embedding: Param<Tensor<B, 1>>,
    pub positional_embedding: Param<Tensor<B, 2>>,
    pub ln_pre: LayerNorm<B>,
    pub transformer: Transformer<B>,
    pub ln_post: LayerNorm<B>,
    /// [width, embed_dim].
    pub proj: Param<Tensor<B, 2>>,
}

/// open_clip `CLIP`. Field names are checkpoint keys.
#[derive(Module, Debug)]
pub struct OpenClip<B: Backend> {
    pub visual: VisionTower<B>,
    pub token_embedding: Embedding<B>,
    pub positional_embedding: Param<Tensor<B, 2>>,
    pub transformer: Transformer<B>,
    pub ln_final: LayerNorm<B>,
    /// [width, embed_dim].
    pub text_projection: Param<Tensor<B, 2>>,
    /// Input size the image tower's position embeddings were trained for (ViT-H-14: 224).
    pub image_size: usize,
}

fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powf_scalar(2.0).sum_dim(1).sqrt();
    x / norm
}

impl<B: Backend> OpenClip<B> {
    /// Normalised pixels [B, 3, S, S] → L2-normalised image features [B, E]
    /// (`encode_image(normalize=True)`).
    pub fn encode_image(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 2> {
        let _span = tracing::trace_span!("openclip.encode_image").entered();
        let v = &self.visual;
        let x = v.conv1.forward(pixel_values);
        let [b, d, gh, gw] = x.dims();
        let x = x.reshape([b, d, gh * gw]).swap_dims(1, 2);
        let class = v.class_embedding.val().reshape([1, 1, d]).expand([b, 1, d]);
        let x = Tensor::cat(vec![class, x], 1) + v.positional_embedding.val().unsqueeze::<3>();
        let x = v.transformer.forward(v.ln_pre.forward(x), false);
        let pooled = v.ln_post.forward(x.narrow(1, 0, 1).reshape([b, d]));
        l2_normalize(pooled.matmul(v.proj.val()))
    }

    /// Token ids [B, 77] (SOT, tokens, EOT, zero padding) → L2-normalised text features [B, E]
    /// (`encode_text(normalize=True)`, pooled at each row's argmax id, the EOT token).
    pub fn encode_text(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let _span = tracing::trace_span!("openclip.encode_text").entered();
        let [b, n] = ids.dims();
        let x = self.token_embedding.forward(ids.clone())
            + self
                .positional_embedding
                .val()
                .narrow(0, 0, n)
                .unsqueeze::<3>();
        let x = self.ln_final.forward(self.transformer.forward(x, true));
        let d = x.dims()[2];
        let eot = sd_model::clip::first_argmax(&ids)
            .reshape([b, 1, 1])
            .expand([b, 1, d]);
        let pooled = x.gather(1, eot).reshape([b, d]);
        l2_normalize(pooled.matmul(self.text_projection.val()))
    }
}

/// File keys that the model does not hold: `logit_scale` (and a stored `attn_mask` buffer).
pub fn openclip_key(key: &str) -> Option<String> {
    let skip = key == "logit_scale" || key.ends_with("attn_mask") || key == "logit_bias";
    (!skip).then(|| key.to_string())
}

/// Loads an open_clip state dict: safetensors, or a PyTorch pickle whose weights may sit under
/// `state_dict` (HPSv2's `HPS_v2_compressed.pt`), with an optional `module.` prefix (DDP).
pub fn load_openclip<B: Backend>(
    config: &OpenClipConfig,
    path: &std::path::Path,
    device: &B::Device,
) -> Result<OpenClip<B>> {
    use sd_model::load::{Weights, load_weights};
    let is_pickle = !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let weights = if is_pickle {
        Weights::open(path, Some("state_dict")).or_else(|_| Weights::open(path, None))?
    } else {
        Weights::open(path, None)?
    };
    load_weights(config.init(device), &weights, &|k| {
        openclip_key(k.strip_prefix("module.").unwrap_or(k))
    })
}

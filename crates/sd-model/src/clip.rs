//! transformers `CLIPTextModel`: token + position embeddings, pre-norm transformer layers with a
//! causal mask and quick-GELU, the final layer norm, and the pooled output at the argmax token.

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use serde::{Deserialize, Serialize};

use crate::config::{HiddenAct, read_config};
use crate::nn::{layer_norm, linear};

/// The fields of transformers' `CLIPTextConfig` that the text model uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Vocabulary size (SD 1.5: 49408).
    pub vocab_size: usize,
    /// Width (SD 1.5: 768).
    pub hidden_size: usize,
    /// MLP width (SD 1.5: 3072).
    pub intermediate_size: usize,
    /// Layers (SD 1.5: 12).
    pub num_hidden_layers: usize,
    /// Heads (SD 1.5: 12).
    pub num_attention_heads: usize,
    /// Sequence length (77).
    pub max_position_embeddings: usize,
    /// "quick_gelu" (SD 1.x) or "gelu".
    pub hidden_act: HiddenAct,
    /// LayerNorm epsilon (1e-5).
    pub layer_norm_eps: f64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self::sd15()
    }
}

impl ClipTextConfig {
    /// SD 1.5's text encoder: openai/clip-vit-large-patch14's text tower
    /// (runwayml/stable-diffusion-v1-5 `text_encoder/config.json`).
    pub fn sd15() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: HiddenAct::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }

    /// The parity fixture's tiny text encoder (tools/parity/make_fixtures.py).
    pub fn tiny() -> Self {
        Self {
            vocab_size: 1000,
            hidden_size: 24,
            intermediate_size: 40,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            ..Self::sd15()
        }
    }

    /// Reads `config.json` (unknown fields are ignored).
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_config(path)?;
        config
            .validate()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    /// Rejects what this implementation does not build.
    pub fn validate(&self) -> Result<()> {
        use crate::config::{MAX_LAYERS, MAX_WIDTH, check_range};
        check_range("vocab_size", self.vocab_size, 1, 1 << 20)?;
        check_range("hidden_size", self.hidden_size, 1, MAX_WIDTH)?;
        check_range("intermediate_size", self.intermediate_size, 1, MAX_WIDTH)?;
        check_range("num_hidden_layers", self.num_hidden_layers, 1, MAX_LAYERS)?;
        check_range(
            "max_position_embeddings",
            self.max_position_embeddings,
            2,
            1 << 16,
        )?;
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            bail!(
                "layer_norm_eps must be a positive number, got {}",
                self.layer_norm_eps
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            bail!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        Ok(())
    }

    /// Builds the model with freshly initialised (lazy) weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<ClipTextModel<B>> {
        self.validate()?;
        let d = self.hidden_size;
        Ok(ClipTextModel {
            embeddings: ClipEmbeddings {
                token_embedding: EmbeddingConfig::new(self.vocab_size, d).init(device),
                position_embedding: EmbeddingConfig::new(self.max_position_embeddings, d)
                    .init(device),
            },
            encoder: ClipEncoder::new(self, device),
            final_layer_norm: layer_norm(d, self.layer_norm_eps, device),
        })
    }
}

/// `embeddings.token_embedding` and `embeddings.position_embedding`.
#[derive(Module, Debug)]
pub struct ClipEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

/// `self_attn.{q,k,v,out}_proj`.
#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub heads: usize,
}

impl<B: Backend> ClipAttention<B> {
    /// Self-attention over `x` [B, N, D]; `causal` masks later positions (the text tower).
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        let h = self.heads;
        let split = |t: Tensor<B, 3>| t.reshape([b, n, h, d / h]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            is_causal: causal,
            ..Default::default()
        };
        let out = attention(q, k, v, None, None, options);
        self.out_proj
            .forward(out.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// `mlp.fc1`, activation, `mlp.fc2`.
#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    /// `x * sigmoid(1.702 x)` (quick_gelu) rather than exact GELU.
    pub quick_gelu: bool,
}

impl<B: Backend> ClipMlp<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self.fc1.forward(x);
        let h = if self.quick_gelu {
            h.clone() * sigmoid(h * 1.702)
        } else {
            gelu(h)
        };
        self.fc2.forward(h)
    }
}

/// One pre-norm encoder layer.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> ClipEncoderLayer<B> {
    /// Pre-norm attention and MLP with residuals.
    pub fn forward(&self, x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), causal);
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// `encoder.layers`.
#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    pub layers: Vec<ClipEncoderLayer<B>>,
}

impl<B: Backend> ClipEncoder<B> {
    /// All layers in order.
    pub fn forward(&self, mut x: Tensor<B, 3>, causal: bool) -> Tensor<B, 3> {
        for layer in &self.layers {
            x = layer.forward(x, causal);
        }
        x
    }

    /// transformers' CLIPEncoder with the widths, heads and activation of `config`.
    pub fn new(config: &ClipTextConfig, device: &B::Device) -> Self {
        let d = config.hidden_size;
        Self {
            layers: (0..config.num_hidden_layers)
                .map(|_| ClipEncoderLayer {
                    self_attn: ClipAttention {
                        q_proj: linear(d, d, true, device),
                        k_proj: linear(d, d, true, device),
                        v_proj: linear(d, d, true, device),
                        out_proj: linear(d, d, true, device),
                        heads: config.num_attention_heads,
                    },
                    layer_norm1: layer_norm(d, config.layer_norm_eps, device),
                    mlp: ClipMlp {
                        fc1: linear(d, config.intermediate_size, true, device),
                        fc2: linear(config.intermediate_size, d, true, device),
                        quick_gelu: config.hidden_act == HiddenAct::QuickGelu,
                    },
                    layer_norm2: layer_norm(d, config.layer_norm_eps, device),
                })
                .collect(),
        }
    }
}

/// transformers `CLIPTextModel` (keys without the `text_model.` prefix, which loading strips).
#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub embeddings: ClipEmbeddings<B>,
    pub encoder: ClipEncoder<B>,
    pub final_layer_norm: LayerNorm<B>,
}

/// Outputs of the text model.
#[derive(Debug, Clone)]
pub struct ClipTextOutput<B: Backend> {
    /// [B, N, D] after the final layer norm (what SD conditions on).
    pub last_hidden_state: Tensor<B, 3>,
    /// [B, D] at each row's argmax token id (the EOS token in CLIP's vocabulary).
    pub pooler_output: Tensor<B, 2>,
}

impl<B: Backend> ClipTextModel<B> {
    /// The longest token sequence the position table holds (`max_position_embeddings`).
    pub fn max_positions(&self) -> usize {
        self.embeddings.position_embedding.weight.lazy_shape()[0]
    }

    /// `input_ids` [B, N] (N ≤ max_position_embeddings).
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> ClipTextOutput<B> {
        let _span = tracing::trace_span!("text_encoder").entered();
        let [b, n] = input_ids.dims();
        let device = input_ids.device();
        let positions = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([1, n]);
        let x = self.embeddings.token_embedding.forward(input_ids.clone())
            + self.embeddings.position_embedding.forward(positions);
        let x = self.encoder.forward(x, true);
        let last_hidden_state = self.final_layer_norm.forward(x);
        let d = last_hidden_state.dims()[2];
        let eos = first_argmax(&input_ids)
            .reshape([b, 1, 1])
            .expand([b, 1, d]);
        let pooler_output = last_hidden_state.clone().gather(1, eos).reshape([b, d]);
        ClipTextOutput {
            last_hidden_state,
            pooler_output,
        }
    }
}

/// Per row, the first index of the largest id (as `torch.argmax`, which returns the first of
/// equal maxima: the EOS token, not the EOS padding after it).
pub fn first_argmax<B: Backend>(ids: &Tensor<B, 2, Int>) -> Tensor<B, 1, Int> {
    let [b, n] = ids.dims();
    let values: Vec<i64> = ids
        .to_data()
        .convert::<i64>()
        .into_vec()
        .expect("int tensor data converts to i64");
    let idx: Vec<i64> = values
        .chunks(n)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(idx, [b]), &ids.device())
}

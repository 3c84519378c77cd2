//! The LAION aesthetic predictor as AlignProp uses it: CLIP ViT-L/14 image embeddings,
//! L2-normalised, scored by the `sac+logos+ava1-l14-linearMSE` MLP (768 → 1024 → 128 → 64 → 16 →
//! 1 with no activations; Dropouts at `layers.1/3/5` have no weights).

use std::path::Path;

use anyhow::{Result, bail};
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use sd_model::load::{Weights, load_weights};

use crate::Reward;
use crate::clip_vision::ClipVisionModelWithProjection;
use crate::preprocess::clip_preprocess;

/// The MLP head: `layers.{0,2,4,6,7}` Linear, `layers.{1,3,5}` Dropout.
#[derive(Module, Debug)]
pub struct AestheticMlp<B: Backend> {
    #[allow(clippy::type_complexity)]
    pub layers: (
        Linear<B>,
        Dropout,
        Linear<B>,
        Dropout,
        Linear<B>,
        Dropout,
        Linear<B>,
        Linear<B>,
    ),
}

impl<B: Backend> AestheticMlp<B> {
    /// The MLP with freshly initialised (lazy) weights for `input`-wide embeddings (768).
    pub fn new(input: usize, device: &B::Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let drop = |p| DropoutConfig::new(p).init();
        Self {
            layers: (
                lin(input, 1024),
                drop(0.2),
                lin(1024, 128),
                drop(0.2),
                lin(128, 64),
                drop(0.1),
                lin(64, 16),
                lin(16, 1),
            ),
        }
    }

    /// Loads `sac+logos+ava1-l14-linearMSE.pth` (a PyTorch zip pickle, read without executing
    /// code) or a safetensors file with the same keys.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let weights = Weights::open(path, None)?;
        load_weights(Self::new(768, device), &weights, &|k| Some(k.to_string()))
    }

    /// Embeddings [B, 768] → scores [B] (dropout is inactive outside training).
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 1> {
        let l = &self.layers;
        let x = l.0.forward(x);
        let x = l.2.forward(x);
        let x = l.4.forward(x);
        let x = l.6.forward(x);
        let x = l.7.forward(x);
        let [b, _] = x.dims();
        x.reshape([b])
    }
}

/// The aesthetic reward: higher is better (about 5 for SD 1.5, 5.5–6.5 after tuning).
#[derive(Module, Debug)]
pub struct Aesthetic<B: Backend> {
    pub clip: ClipVisionModelWithProjection<B>,
    pub mlp: AestheticMlp<B>,
}

impl<B: Backend> Aesthetic<B> {
    /// Loads the CLIP tower (a transformers folder or weights file, see
    /// [`load_clip_vision_from`](crate::clip_vision::load_clip_vision_from)) and the MLP.
    pub fn load(clip: &Path, mlp: &Path, device: &B::Device) -> Result<Self> {
        let clip = crate::clip_vision::load_clip_vision_from(clip, device)?;
        if clip.visual_projection.weight.val().dims()[1] != 768 {
            bail!("the aesthetic MLP needs 768-wide CLIP embeddings (ViT-L/14)");
        }
        Ok(Self {
            clip,
            mlp: AestheticMlp::load(mlp, device)?,
        })
    }

    /// Embeddings of images in [-1, 1], L2-normalised: [B, 768].
    pub fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let e = self
            .clip
            .forward(clip_preprocess(images, self.clip.image_size));
        let norm = e.clone().powf_scalar(2.0).sum_dim(1).sqrt();
        e / norm
    }
}

impl<B: Backend> Reward<B> for Aesthetic<B> {
    fn name(&self) -> &str {
        "aesthetic"
    }

    fn score(&self, images: Tensor<B, 4>, _prompts: &[String]) -> Result<Tensor<B, 1>> {
        if images.dims()[1] != 3 {
            bail!(
                "aesthetic: expected RGB images [B, 3, H, W], got {:?}",
                images.dims()
            );
        }
        Ok(self.mlp.forward(self.embed(images)))
    }
}

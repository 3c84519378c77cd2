//! The judge: a small convolutional attribute classifier for single-object toy images. From an
//! image it predicts the object's shape, colour, size and position and the background colour,
//! so that the labels of generated images can be compared with their captions' ([`accuracy`]).
//!
//! Four stride-2 3x3 convolutions with ReLU (64 → 4 pixels), one hidden linear layer, and one
//! linear head per attribute. The module's fields are the checkpoint keys
//! (`features.0.weight`, `hidden.weight`, `shape.weight`, ...): a judge folder holds
//! `model.safetensors` and `config.json` ([`JudgeConfig`]); [`Judge::load`] refuses a file
//! with a missing, extra or misshapen tensor.

mod accuracy;
mod train;

pub use accuracy::{Accuracy, PerAttribute, accuracy, share_right};
pub use train::{TrainConfig, TrainReport, evaluate, train};

use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use image::RgbImage;
use image::imageops::FilterType;

use crate::attributes::{Colour, Labels, Object, Position, Shape, Size};

/// The judge's architecture.
#[derive(Config, Debug, PartialEq)]
pub struct JudgeConfig {
    /// Side of the square images the judge reads; other sizes are resized to it. A multiple of
    /// 2^(number of convolutions) [default: 64].
    #[config(default = 64)]
    pub image_size: usize,
    /// Output channels of the stride-2 3x3 convolutions, in order [default: [16, 32, 32, 32]].
    #[config(default = "vec![16, 32, 32, 32]")]
    pub channels: Vec<usize>,
    /// Width of the hidden layer between the flattened features and the heads [default: 64].
    #[config(default = 64)]
    pub hidden: usize,
}

impl JudgeConfig {
    /// Why this architecture cannot be built, if it cannot.
    pub fn check(&self) -> Result<()> {
        let down = 1usize << self.channels.len();
        if self.channels.is_empty() || self.channels.contains(&0) || self.hidden == 0 {
            bail!("judge: channels must be non-empty and non-zero, hidden non-zero");
        }
        if self.image_size == 0 || !self.image_size.is_multiple_of(down) {
            bail!(
                "judge: image_size {} is not a positive multiple of {down} (2^{} convolutions)",
                self.image_size,
                self.channels.len()
            );
        }
        Ok(())
    }

    /// The flattened feature length the hidden layer reads.
    fn flat(&self) -> usize {
        let side = self.image_size >> self.channels.len();
        self.channels.last().copied().unwrap_or(0) * side * side
    }

    /// Builds the network with Burn's default initialisation (see `train` for the seeded one).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<JudgeNet<B>> {
        self.check()?;
        let mut features = Vec::new();
        let mut c_in = 3;
        for &c in &self.channels {
            features.push(
                Conv2dConfig::new([c_in, c], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device),
            );
            c_in = c;
        }
        let head = |n: usize| LinearConfig::new(self.hidden, n).init(device);
        Ok(JudgeNet {
            features,
            hidden: LinearConfig::new(self.flat(), self.hidden).init(device),
            shape: head(Shape::ALL.len()),
            colour: head(Colour::OBJECT.len()),
            size: head(Size::ALL.len()),
            position: head(Position::ALL.len()),
            background: head(Colour::ALL.len()),
        })
    }
}

/// The network; field names are the checkpoint keys.
#[derive(Module, Debug)]
pub struct JudgeNet<B: Backend> {
    pub features: Vec<Conv2d<B>>,
    pub hidden: Linear<B>,
    /// Classes: `Shape::ALL`.
    pub shape: Linear<B>,
    /// Classes: `Colour::OBJECT`.
    pub colour: Linear<B>,
    /// Classes: `Size::ALL`.
    pub size: Linear<B>,
    /// Classes: `Position::ALL`.
    pub position: Linear<B>,
    /// Classes: `Colour::ALL`.
    pub background: Linear<B>,
}

/// The heads' logits for a batch, each [N, classes].
#[derive(Debug, Clone)]
pub struct Logits<B: Backend> {
    pub shape: Tensor<B, 2>,
    pub colour: Tensor<B, 2>,
    pub size: Tensor<B, 2>,
    pub position: Tensor<B, 2>,
    pub background: Tensor<B, 2>,
}

impl<B: Backend> JudgeNet<B> {
    /// Logits for images [N, 3, S, S] with values in [0, 1] (S = the config's image_size).
    pub fn forward(&self, images: Tensor<B, 4>) -> Logits<B> {
        let mut x = images * 2.0 - 1.0;
        for conv in &self.features {
            x = relu(conv.forward(x));
        }
        let h = relu(self.hidden.forward(x.flatten::<2>(1, 3)));
        Logits {
            shape: self.shape.forward(h.clone()),
            colour: self.colour.forward(h.clone()),
            size: self.size.forward(h.clone()),
            position: self.position.forward(h.clone()),
            background: self.background.forward(h),
        }
    }
}

/// Row-wise argmax of [N, C] logits.
fn argmax<B: Backend>(logits: Tensor<B, 2>) -> Vec<usize> {
    let ints = logits.argmax(1).into_data().convert::<i64>();
    ints.to_vec::<i64>()
        .expect("argmax gives integers")
        .into_iter()
        .map(|i| i as usize)
        .collect()
}

/// A trained judge: its architecture and weights.
#[derive(Debug)]
pub struct Judge<B: Backend> {
    pub config: JudgeConfig,
    pub net: JudgeNet<B>,
}

/// Images as a [N, 3, S, S] tensor in [0, 1], each resized to S x S (bilinear) when it is
/// not already that size.
pub fn images_to_tensor<B: Backend>(
    images: &[RgbImage],
    side: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let s = side as u32;
    let mut values = Vec::with_capacity(images.len() * 3 * side * side);
    for img in images {
        let resized;
        let img = if img.dimensions() == (s, s) {
            img
        } else {
            resized = image::imageops::resize(img, s, s, FilterType::Triangle);
            &resized
        };
        for c in 0..3 {
            values.extend(img.pixels().map(|p| p.0[c] as f32 / 255.0));
        }
    }
    Tensor::from_data(
        TensorData::new(values, [images.len(), 3, side, side]),
        device,
    )
}

impl<B: Backend> Judge<B> {
    /// The labels the judge reads off a batch of images [N, 3, S, S] in [0, 1] (one object
    /// each, since the judge is trained on single-object images). The tensor must have that
    /// shape (Burn panics on another); [`Judge::predict_images`] builds it from any images.
    pub fn predict(&self, images: Tensor<B, 4>) -> Vec<Labels> {
        let l = self.net.forward(images);
        let (shape, colour, size, position, background) = (
            argmax(l.shape),
            argmax(l.colour),
            argmax(l.size),
            argmax(l.position),
            argmax(l.background),
        );
        (0..shape.len())
            .map(|i| Labels {
                objects: vec![Object {
                    shape: Shape::ALL[shape[i]],
                    colour: Colour::OBJECT[colour[i]],
                    size: Size::ALL[size[i]],
                    position: Position::ALL[position[i]],
                }],
                background: Colour::ALL[background[i]],
            })
            .collect()
    }

    /// [`Judge::predict`] for RGB images of any size (resized to the judge's), 64 at a time.
    pub fn predict_images(&self, images: &[RgbImage], device: &B::Device) -> Vec<Labels> {
        images
            .chunks(64)
            .flat_map(|chunk| self.predict(images_to_tensor(chunk, self.config.image_size, device)))
            .collect()
    }

    /// The weights as safetensors bytes (keys in order, no metadata: the same weights give the
    /// same bytes).
    pub fn weights_bytes(&self) -> Result<Vec<u8>> {
        let mut store = SafetensorsStore::from_bytes(None).clear_metadata();
        self.net
            .save_into(&mut store)
            .map_err(|e| anyhow::anyhow!("serialising the judge: {e}"))?;
        store
            .get_bytes()
            .map_err(|e| anyhow::anyhow!("serialising the judge: {e}"))
    }

    /// Writes `dir/model.safetensors`, `dir/config.json` and the `extra` files through a
    /// temporary folder beside `dir` that is renamed into place (`dir` must not exist or be
    /// empty).
    pub fn save(&self, dir: &Path, extra: &[(&str, Vec<u8>)]) -> Result<()> {
        let mut files = vec![
            ("model.safetensors", self.weights_bytes()?),
            ("config.json", self.config.to_string().into_bytes()),
        ];
        files.extend(extra.iter().cloned());
        save_folder(dir, &files)
    }

    /// Reads a judge folder written by [`Judge::save`]; every tensor of the file must fill a
    /// parameter of the right shape and every parameter must be filled.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("cannot read {}", config_path.display()))?;
        let config: JudgeConfig = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a judge config", config_path.display()))?;
        let mut net = config
            .init::<B>(device)
            .with_context(|| config_path.display().to_string())?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            bail!("{}: no such file", weights.display());
        }
        let mut store = SafetensorsStore::from_file(&weights).allow_partial(true);
        let result = net.load_from(&mut store).map_err(|e| {
            anyhow::anyhow!(
                "{}: does not match {}: {e}",
                weights.display(),
                config_path.display()
            )
        })?;
        if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
            bail!(
                "{}: does not match {}: errors {:?}, missing {:?}, unused {:?}",
                weights.display(),
                config_path.display(),
                result.errors,
                result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
                result.unused
            );
        }
        Ok(Self { config, net })
    }
}

/// Writes `files` into a new folder `dir` via a temporary sibling and a rename.
fn save_folder(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty (refusing to overwrite)",
            dir.display()
        );
    }
    let name = dir
        .file_name()
        .with_context(|| format!("{} has no folder name", dir.display()))?
        .to_string_lossy()
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => ".".into(),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(".{name}.tmp{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let result = (|| -> Result<()> {
        for (file, bytes) in files {
            let path = tmp.join(file);
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if dir.exists() {
            std::fs::remove_dir(dir)?;
        }
        std::fs::rename(&tmp, dir)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

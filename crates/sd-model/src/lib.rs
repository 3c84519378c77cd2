//! Stable Diffusion 1.x in Burn: the CLIP tokenizer and text encoder, UNet2DConditionModel,
//! AutoencoderKL, the DDIM scheduler and a classifier-free-guidance pipeline, loading real
//! diffusers folders and proved equal to diffusers / transformers by parity tests.

pub mod attention;
pub mod attention_grad;
pub mod backend;
pub mod clip;
pub mod config;
pub mod ddim;
mod flex;
pub mod hub;
pub mod load;
pub mod nn;
pub mod noise;
pub mod pickle;
pub mod pipeline;
pub mod sampler;
pub mod save;
#[cfg(feature = "tch")]
mod tch_ops;
pub mod tokenizer;
pub mod unet;
pub mod vae;

pub use clip::{ClipTextConfig, ClipTextModel};
pub use ddim::{DdimConfig, DdimScheduler};
/// Atomic file writes (temp file + rename), shared by every crate that writes results.
pub use lora_group::io::write_atomic;
pub use pipeline::{InitLatents, SampleRequest, StableDiffusion};
pub use sampler::{Conditioning, denoise, guided_eps};
pub use tokenizer::ClipTokenizer;
pub use unet::{UNet2DConditionModel, UNetConfig};
pub use vae::{AutoencoderKL, VaeConfig};

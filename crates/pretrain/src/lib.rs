//! Training a Stable Diffusion pipeline from scratch with ril's own models: the AutoencoderKL on
//! reconstruction + KL (diffusers' / LDM's objective without the perceptual and GAN terms), then
//! the UNet and the CLIP text encoder together on the epsilon-prediction loss with SD 1.5's noise
//! schedule and a share of empty captions, each with AdamW; the result is a diffusers folder.
//! Also the toy world's reward and metric models ([`toy_aesthetic`], [`toy_clip`]).

pub mod config;
pub mod data;
pub mod ema;
pub mod follow;
pub mod init;
pub mod optim;
pub mod output;
pub mod run;
pub mod seeded;
pub mod sources;
pub mod toy_aesthetic;
pub mod toy_clip;
pub mod vocab;

pub use config::PretrainConfig;
pub use data::{Example, Source};
pub use run::{RunOptions, Summary, run};

//! `ril pretrain --config FILE [--resume] [--check]`: trains a Stable Diffusion pipeline from
//! scratch (the VAE, then the UNet with the text encoder) and writes it as a diffusers folder.

use std::path::PathBuf;

use anyhow::Result;
use pretrain::PretrainConfig;

/// Trains a pipeline from scratch on the toy shapes or a folder of captioned images.
///
/// The VAE on reconstruction + KL, then the UNet and the text encoder on the epsilon loss (SD
/// 1.5's noise schedule, a share of empty captions for guidance), each with AdamW. Writes
/// checkpoint.safetensors (atomically, every `checkpoint_every` steps), metrics.jsonl and at the
/// end pipeline/ (a diffusers folder that `ril sample` and diffusers load) in the run folder.
#[derive(Debug, Clone, clap::Args)]
pub struct PretrainArgs {
    /// A TOML pretraining config, e.g. configs/toy/pretrain.toml.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The run folder [default: the config's `output`].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run folder from its last checkpoint (bit for bit as an uninterrupted run).
    #[arg(long)]
    pub resume: bool,
    /// Check the config, the model configs, the tokenizer and the data, and stop.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: &PretrainArgs) -> Result<()> {
    let config = PretrainConfig::from_file(&a.config)?;
    let source = pretrain::sources::open(&config)?;
    let out = a.out.clone().unwrap_or_else(|| config.output.clone());
    if a.check {
        pretrain::run::preflight(&config, source.as_ref(), &out, a.resume)?;
        println!(
            "{}: valid (data: {}; {} VAE steps, {} UNet steps; run folder {})",
            a.config.display(),
            source.describe(),
            config.vae.steps,
            config.unet.steps,
            out.display()
        );
        return Ok(());
    }
    let options = pretrain::RunOptions {
        resume: a.resume,
        ..Default::default()
    };
    let summary = ril::on_backend!(config.backend, autodiff, |B, device| {
        pretrain::run::<B>(&config, source.as_ref(), &out, &options, &device)
    })?;
    println!(
        "pretraining finished: {} (final VAE loss {}, UNet loss {}, latent scaling factor {:.5})",
        summary.pipeline.display(),
        summary.vae_loss.map_or("-".into(), |l| format!("{l:.2}")),
        summary.unet_loss.map_or("-".into(), |l| format!("{l:.4}")),
        summary.scaling_factor
    );
    Ok(())
}

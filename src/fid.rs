//! `ril fid --real DIR --fake DIR (--weights FILE | --hash-weights)`: the Fréchet Inception
//! Distance between two image folders, as pytorch-fid computes it.

use std::path::PathBuf;

use anyhow::Result;
use clap::ArgGroup;
use ril_metrics::fid::{folder_stats, frechet_distance, inception};
use sd_model::backend::BackendKind;

use crate::cli::at_least_one;

/// The Fréchet Inception Distance between two image folders, as pytorch-fid computes it.
///
/// Give exactly one of --weights and --hash-weights. Each folder's statistics are cached in
/// $RIL_CACHE_DIR/fid-stats (else $XDG_CACHE_HOME/ril/fid-stats, else ~/.cache/ril/fid-stats),
/// keyed by the folder, its file names and sizes and the weights; never in the image folder.
#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("inception").required(true).args(["weights", "hash_weights"])))]
pub struct FidArgs {
    /// The folder of real images.
    #[arg(long, value_name = "DIR")]
    pub real: PathBuf,
    /// The folder of generated images.
    #[arg(long, value_name = "DIR")]
    pub fake: PathBuf,
    /// pytorch-fid's pt_inception-2015-12-05-6726825d.pth (read without executing code) or a
    /// safetensors copy.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,
    /// Deterministic generated weights instead (values comparable only with each other; for
    /// tests and runs without the file).
    #[arg(long)]
    pub hash_weights: bool,
    /// The backend: cpu (burn-flex), cuda (`--features cuda`), tch-cpu or tch-cuda (LibTorch,
    /// `--features tch`).
    #[arg(long, value_name = "BACKEND", default_value_t = BackendKind::Cpu,
          value_parser = crate::cli::one_of(&BackendKind::ALL, BackendKind::name))]
    pub backend: BackendKind,
    /// Images per Inception batch.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = at_least_one())]
    pub batch: usize,
}

pub fn run(args: &FidArgs) -> Result<()> {
    let (weights, batch) = (args.weights.as_deref(), args.batch);
    let (a, b) = ril::on_backend!(args.backend, inner, |B, device| {
        let model = inception::<B>(weights, &device)?;
        let a = folder_stats(&model, weights, &args.real, batch, &device)?;
        folder_stats(&model, weights, &args.fake, batch, &device).map(|b| (a, b))
    })?;
    println!("FID: {:.6}", frechet_distance(&a, &b)?);
    Ok(())
}

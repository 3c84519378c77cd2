//! `ril fid --real DIR|FILE.npz --fake DIR|FILE.npz (--weights FILE | --hash-weights)`: the
//! Fréchet Inception Distance between two image folders or their statistics, as pytorch-fid
//! computes it; `ril fid-stats --images DIR --out FILE.npz` writes a folder's statistics in
//! pytorch-fid's `--save-stats` format.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::ArgGroup;
use ril_metrics::fid::{
    Stats, check_weights, folder_stats, frechet_distance, inception, is_stats_file,
    reference_stats, weights_identity,
};
use sd_model::backend::BackendKind;

use crate::cli::at_least_one;

/// The Fréchet Inception Distance between two image folders, as pytorch-fid computes it.
///
/// Either side may be a statistics file instead of a folder: a path ending in .npz, read as
/// pytorch-fid reads it (`mu` [2048] and `sigma` [2048, 2048], as written by `ril fid-stats`
/// or `python -m pytorch_fid --save-stats`), as pytorch-fid itself accepts one. A folder needs
/// exactly one of --weights and --hash-weights. Each folder's statistics are cached in
/// $RIL_CACHE_DIR/fid-stats (else $XDG_CACHE_HOME/ril/fid-stats, else
/// ~/.cache/ril/fid-stats), keyed by the folder, its file names and sizes and the weights;
/// never in the image folder.
#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("inception").args(["weights", "hash_weights"])))]
pub struct FidArgs {
    /// The folder of real images, or their statistics (FILE.npz).
    #[arg(long, value_name = "DIR|FILE.npz")]
    pub real: PathBuf,
    /// The folder of generated images, or their statistics (FILE.npz).
    #[arg(long, value_name = "DIR|FILE.npz")]
    pub fake: PathBuf,
    #[command(flatten)]
    pub net: InceptionArgs,
}

/// The Inception network's weights, backend and batch, shared by `fid` and `fid-stats`.
#[derive(Debug, Clone, clap::Args)]
pub struct InceptionArgs {
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

impl InceptionArgs {
    /// Whether --weights or --hash-weights was given (clap's group makes them exclusive).
    fn given(&self) -> bool {
        self.weights.is_some() || self.hash_weights
    }
}

impl FidArgs {
    /// A folder on either side needs the network; two statistics files do not.
    pub fn validate(&self) -> Result<(), String> {
        let folders: Vec<&str> = [("--real", &self.real), ("--fake", &self.fake)]
            .into_iter()
            .filter(|(_, p)| !is_stats_file(p))
            .map(|(flag, _)| flag)
            .collect();
        if !folders.is_empty() && !self.net.given() {
            return Err(format!(
                "{} names a folder of images, which needs --weights FILE or --hash-weights",
                folders.join(" and ")
            ));
        }
        Ok(())
    }
}

/// Writes the FID statistics of a folder of images in pytorch-fid's format.
///
/// The statistics are those `ril fid` computes (InceptionV3 pool features, float64 mean and
/// unbiased covariance), written as pytorch-fid's `--save-stats` file: an .npz (NumPy's zip of
/// .npy files) with float64 arrays `mu` [2048] and `sigma` [2048, 2048], which `ril fid`,
/// `ril eval --fid-reference`, pytorch-fid and `numpy.load` read.
#[derive(Debug, Clone, clap::Args)]
#[command(group(ArgGroup::new("inception").required(true).args(["weights", "hash_weights"])))]
pub struct FidStatsArgs {
    /// The folder of images (all of one size; at least two).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// The statistics file to write (its name must end in .npz); written atomically.
    #[arg(long, value_name = "FILE.npz")]
    pub out: PathBuf,
    #[command(flatten)]
    pub net: InceptionArgs,
}

impl FidStatsArgs {
    /// `--out` must end in .npz, which is how `ril fid` and pytorch-fid recognise the file.
    pub fn validate(&self) -> Result<(), String> {
        if !self
            .out
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"))
        {
            return Err(format!(
                "--out {}: a statistics file's name must end in .npz (ril fid and pytorch-fid recognise it by that)",
                self.out.display()
            ));
        }
        Ok(())
    }
}

pub fn run(args: &FidArgs) -> Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    let (a, b) = if !args.net.given() {
        // Two statistics files (validate): no network, but they must come from the same one.
        let (a, rec_a) = Stats::load_npz(&args.real)?;
        let (b, rec_b) = Stats::load_npz(&args.fake)?;
        if let Some(used) = &rec_b {
            check_weights(&args.real, rec_a.as_deref(), used)?;
        }
        (a, b)
    } else {
        let (weights, batch) = (args.net.weights.as_deref(), args.net.batch);
        ril::on_backend!(args.net.backend, inner, |B, device| {
            let model = inception::<B>(weights, &device)?;
            let a = reference_stats(&model, weights, &args.real, batch, &device)?;
            reference_stats(&model, weights, &args.fake, batch, &device).map(|b| (a, b))
        })?
    };
    println!("FID: {:.6}", frechet_distance(&a, &b)?);
    Ok(())
}

pub fn run_stats(args: &FidStatsArgs) -> Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    if is_stats_file(&args.images) {
        bail!(
            "--images {} is a statistics file; fid-stats needs a folder of images",
            args.images.display()
        );
    }
    let (weights, batch) = (args.net.weights.as_deref(), args.net.batch);
    let stats = ril::on_backend!(args.net.backend, inner, |B, device| {
        let model = inception::<B>(weights, &device)?;
        folder_stats(&model, weights, &args.images, batch, &device)
    })?;
    stats.save_npz(&args.out, weights)?;
    println!(
        "{}: mu [{}], sigma [{}, {}] (float64; inception: {})",
        args.out.display(),
        stats.mu.len(),
        stats.sigma.nrows(),
        stats.sigma.ncols(),
        weights_identity(weights)
    );
    Ok(())
}

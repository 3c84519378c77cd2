//! `ril train --config FILE [--resume] [--check]`: runs a task sequence with the baseline or RID.

use std::path::PathBuf;

use anyhow::Result;
use rid_trainer::TrainConfig;

/// Fine-tunes on a sequence of rewards (baseline or RID), as a TOML run config says.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// A TOML run description (configs/tiny/*.toml, configs/paper/*.toml).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Continue the run in the config's output folder from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Only parse and validate the config.
    #[arg(long)]
    pub check: bool,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let (path, resume) = (&a.config, a.resume);
    let config = TrainConfig::from_file(path)?;
    if a.check {
        println!(
            "{}: valid ({} tasks, method {:?})",
            path.display(),
            config.tasks.len(),
            config.method.kind
        );
        return Ok(());
    }
    let run_dir = match config.model.backend {
        sd_model::backend::BackendKind::Cuda => train_cuda(&config, resume)?,
        sd_model::backend::BackendKind::Cpu => {
            rid_trainer::train::<sd_model::backend::CpuAutodiff>(
                &config,
                resume,
                &Default::default(),
            )?
            .run_dir
        }
    };
    println!("run finished: {}", run_dir.display());
    Ok(())
}

#[cfg(feature = "cuda-base")]
fn train_cuda(config: &TrainConfig, resume: bool) -> Result<PathBuf> {
    Ok(rid_trainer::train::<sd_model::backend::CudaAutodiff>(
        config,
        resume,
        &sd_model::backend::cuda_device()?,
    )?
    .run_dir)
}

#[cfg(not(feature = "cuda-base"))]
fn train_cuda(_: &TrainConfig, _: bool) -> Result<PathBuf> {
    anyhow::bail!(
        "this ril was built without CUDA: rebuild with `--features cuda`, or set model.backend = \"cpu\""
    )
}

//! `ril train --config FILE [--resume]`: runs a task sequence with the baseline or RID.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rid_trainer::TrainConfig;

pub const USAGE: &str = "\
usage: ril train --config FILE [--resume] [--check]

  --config   a TOML run description (configs/tiny/*.toml, configs/paper/*.toml)
  --resume   continue the run in the config's output folder from its last checkpoint
  --check    only parse and validate the config";

pub fn run(args: &[String]) -> Result<()> {
    let mut config = None;
    let (mut resume, mut check) = (false, false);
    let mut f = ril::args::Flags::new(args, USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--config" => config = Some(PathBuf::from(f.value(flag)?)),
            "--resume" => resume = true,
            "--check" => check = true,
            other => return Err(f.unknown(other)),
        }
    }
    let path = config.with_context(|| format!("--config is required\n{USAGE}"))?;
    let config = TrainConfig::from_file(&path)?;
    if check {
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

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
    /// Run every check a run makes before it writes anything (the config, the model, the
    /// prompts, each task's reward with its weights), and stop.
    #[arg(long)]
    pub check: bool,
    /// Time each phase of every step (sampling, last step, decode, reward, distillation,
    /// backward, optimiser): written to metrics.jsonl as `phases_s` and summed per task on
    /// stderr. Each phase then waits for its device work, which slows a GPU run a little.
    #[arg(long)]
    pub profile: bool,
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let (path, resume) = (&a.config, a.resume);
    let config = TrainConfig::from_file(path)?;
    if a.check {
        ril::on_backend!(config.model.backend, autodiff, |B, device| {
            rid_trainer::runner::preflight::<B>(&config, &device, &|kind| {
                rewards::build::build_reward::<B>(kind, &config.rewards, &device)
            })
            .map(|_| ())
        })?;
        println!(
            "{}: valid ({} tasks, method {:?}; the model, the prompts and every task's reward load)",
            path.display(),
            config.tasks.len(),
            config.method.kind
        );
        return Ok(());
    }
    let opts = rid_trainer::RunOptions {
        resume,
        profile: a.profile || std::env::var_os("RIL_PROFILE").is_some_and(|v| v == "1"),
    };
    let run_dir: PathBuf = ril::on_backend!(config.model.backend, autodiff, |B, device| {
        rid_trainer::run::<B>(&config, opts, &device, &|kind| {
            rewards::build::build_reward::<B>(kind, &config.rewards, &device)
        })
        .map(|s| s.run_dir)
    })?;
    println!("run finished: {}", run_dir.display());
    Ok(())
}

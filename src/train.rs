//! `ril train --config FILE [--resume] [--check]`: runs a task sequence with the baseline or RID
//! and writes its report.html; SIGINT or SIGTERM stops it after the step in progress, with a
//! checkpoint to resume from.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
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
    let (stop, signal) = stop_on_signals()?;
    let opts = rid_trainer::RunOptions {
        resume,
        profile: a.profile || std::env::var_os("RIL_PROFILE").is_some_and(|v| v == "1"),
        stop: Some(stop),
    };
    let run_dir: PathBuf = ril::on_backend!(config.model.backend, autodiff, |B, device| {
        rid_trainer::run::<B>(&config, opts, &device, &|kind| {
            rewards::build::build_reward::<B>(kind, &config.rewards, &device)
        })
        .map(|s| s.run_dir)
    })
    .map_err(|e| match e.downcast_ref::<rid_trainer::Interrupted>() {
        Some(i) => anyhow::Error::new(crate::Stopped {
            signal: signal.load(Ordering::SeqCst) as i32,
            message: format!("{i}: ril train --config {} --resume", path.display()),
        }),
        None => e,
    })?;
    println!("run finished: {}", run_dir.display());
    let report = crate::run_report::write(&run_dir, &config)?;
    println!("report: {}", report.display());
    Ok(())
}

/// A flag that SIGINT and SIGTERM set, and the number of the signal that set it; a second one
/// while the flag is set ends the process at once with status 128 + the signal's number, as a
/// shell reports a process killed by it (the step in progress and its checkpoint are then lost,
/// the previous one is kept).
fn stop_on_signals() -> Result<(Arc<AtomicBool>, Arc<AtomicUsize>)> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        // The shutdown first: it acts only once the flag was set by an earlier signal.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&stop))
            .and_then(|_| {
                signal_hook::flag::register_usize(signal, Arc::clone(&which), signal as usize)
            })
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .with_context(|| format!("cannot handle signal {signal}"))?;
    }
    Ok((stop, which))
}

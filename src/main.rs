//! The `ril` command-line tool: `ril sample` generates images with a Stable Diffusion 1.x
//! pipeline folder (or hub id); `ril score` scores a folder of images with a reward; `ril train`
//! fine-tunes on a sequence of rewards; `ril soup` averages runs; `ril export` writes LoRA files
//! for other tools (kohya / A1111 keys, a merged UNet); `ril eval` scores a model; `ril fid`
//! compares two image folders (or their statistics, which `ril fid-stats` writes); `ril bench`
//! times the pipeline and a training step; `ril data` writes the toy world's data sets, `ril
//! judge` trains and runs its attribute classifier and `ril pretrain` trains a pipeline from
//! scratch.

mod bench;
mod cli;
mod coco;
mod data;
mod eval;
mod export;
mod fetch;
mod fid;
mod judge;
mod pretrain;
mod run_report;
mod sample;
mod score;
mod soup;
mod toy_reward;
mod train;

/// A run stopped by a signal after writing its checkpoint: the process exits with 128 + the
/// signal's number (130 for SIGINT, 143 for SIGTERM), as shells and job schedulers expect of a
/// process that a signal ended, so a script can tell a stop from a failure.
#[derive(Debug)]
pub struct Stopped {
    pub signal: i32,
    pub message: String,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Stopped {}

fn main() {
    // Argument errors exit with clap's status 2 (help and --version with 0); runtime errors print
    // `error: ...` and exit with 1; a run stopped by SIGINT/SIGTERM with 130/143.
    let cli = cli::parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if let Err(e) = cli.command.run() {
        eprintln!("error: {e:#}");
        let code = match e.downcast_ref::<Stopped>() {
            Some(s) if s.signal > 0 => 128 + s.signal,
            _ => 1,
        };
        std::process::exit(code);
    }
}

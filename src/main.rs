//! The `ril` command-line tool: `ril sample` generates images with a Stable Diffusion 1.x
//! pipeline folder (or hub id); `ril score` scores a folder of images with a reward; `ril train`
//! fine-tunes on a sequence of rewards; `ril soup` averages runs; `ril eval` scores a model; `ril fid`
//! compares two image folders.

mod bench;
mod cli;
mod eval;
mod fid;
mod score;
mod soup;
mod train;

fn main() {
    if let Err(e) = cli::run(std::env::args().skip(1).collect()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

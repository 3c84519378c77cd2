//! `cargo xtask`: parses the command line (see `cargo xtask --help`) and runs it.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    xtask::run(xtask::cli::Cli::parse())
}

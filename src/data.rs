//! `ril data`: writes data sets. `ril data shapes` writes the toy world's captioned shapes
//! (crates/toy-shapes) in the Hugging Face imagefolder layout (metadata.jsonl + PNGs); `ril data
//! coco` the zero-shot MS-COCO evaluation set in that layout (src/coco.rs).

use std::path::PathBuf;

use anyhow::{Context, Result};
use toy_shapes::{Objects, Spec, Split};

use crate::cli::{at_least_one, one_of};

/// Writes data sets.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DataCommand {
    Shapes(ShapesArgs),
    Coco(crate::coco::CocoArgs),
}

/// Writes N captioned images of coloured shapes (the toy world) as an imagefolder data set.
///
/// DIR/metadata.jsonl has one line per image: {"file_name": "000000.png", "text": CAPTION,
/// "labels": {...}}; the PNGs lie beside it. Item i is the same image for the same --seed,
/// --split and --objects on every machine. The folder is written under a temporary name and
/// renamed at the end; an existing non-empty DIR is refused.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct ShapesArgs {
    /// Number of images.
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub count: usize,
    /// The data set's seed.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// The output folder (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The stream: train, or the held-out stream that judge training never reads.
    #[arg(long, value_name = "SPLIT", default_value = "train",
          value_parser = one_of(&Split::ALL, Split::name))]
    pub split: Split,
    /// Objects per image: 1, 2, or mixed (one or two, half each).
    #[arg(long, value_name = "K", default_value = "mixed",
          value_parser = one_of(&Objects::ALL, Objects::name))]
    pub objects: Objects,
    /// Image side in pixels.
    #[arg(long, value_name = "PX", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(8..=1024))]
    pub size: u32,
}

pub fn run(a: &DataArgs) -> Result<()> {
    match &a.command {
        DataCommand::Shapes(s) => shapes(s),
        DataCommand::Coco(c) => crate::coco::run(c),
    }
}

fn shapes(a: &ShapesArgs) -> Result<()> {
    let spec = Spec::new(a.seed, a.split).objects(a.objects).size(a.size);
    let bar = indicatif::ProgressBar::new(a.count as u64);
    let n =
        toy_shapes::folder::write_shapes(&a.out, &spec, a.count as u64, |i| bar.set_position(i))
            .context("--out")?;
    bar.finish_and_clear();
    println!(
        "{}: {n} images ({} split, seed {}, objects {}, {}x{})",
        a.out.display(),
        a.split.name(),
        a.seed,
        a.objects.name(),
        a.size,
        a.size
    );
    Ok(())
}

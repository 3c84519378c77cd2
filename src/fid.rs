//! `ril fid --real DIR --fake DIR`: the Fréchet Inception Distance between two image folders, as
//! pytorch-fid computes it.

use std::path::PathBuf;

use anyhow::{Result, bail};
use ril_metrics::fid::{folder_stats, frechet_distance, inception};

pub const USAGE: &str = "\
usage: ril fid --real DIR --fake DIR (--weights FILE | --hash-weights) [--batch N]

  --weights       pytorch-fid's pt_inception-2015-12-05-6726825d.pth (read without executing
                  code) or a safetensors copy
  --hash-weights  deterministic generated weights instead (values comparable only with each
                  other; for tests and runs without the file)
  The real folder's statistics are cached in DIR/.ril-fid-stats.safetensors.";

pub fn run(args: &[String]) -> Result<()> {
    let (mut real, mut fake, mut weights) = (None, None, None);
    let (mut hash, mut batch) = (false, 8usize);
    let mut f = ril::args::Flags::new(args, USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--real" => real = Some(PathBuf::from(f.value(flag)?)),
            "--fake" => fake = Some(PathBuf::from(f.value(flag)?)),
            "--weights" => weights = Some(PathBuf::from(f.value(flag)?)),
            "--hash-weights" => hash = true,
            "--batch" => batch = f.parse(flag)?,
            other => return Err(f.unknown(other)),
        }
    }
    let (real, fake) = match (real, fake) {
        (Some(r), Some(f)) => (r, f),
        _ => bail!("--real and --fake are required\n{USAGE}"),
    };
    if weights.is_none() && !hash {
        bail!(
            "give the Inception weights with --weights FILE (pytorch-fid's pt_inception-2015-12-05-6726825d.pth), or --hash-weights\n{USAGE}"
        );
    }
    type B = sd_model::backend::Cpu;
    let device = Default::default();
    let model = inception::<B>(weights.as_deref(), &device)?;
    let a = folder_stats(&model, weights.as_deref(), &real, batch, &device)?;
    let b = folder_stats(&model, weights.as_deref(), &fake, batch, &device)?;
    println!("FID: {:.6}", frechet_distance(&a, &b)?);
    Ok(())
}

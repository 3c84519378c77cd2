//! `ril soup`: the model soup of single-reward runs (θ = Σ_k c_k θ_k over a shared base) written
//! as one LoRA file.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

pub const USAGE: &str = "\
usage: ril soup --lora FILE --lora FILE [...] [--coefficients C1,C2,...] --out FILE

  Writes one LoRA file whose update is sum_k c_k * (update of FILE_k), exactly (pairs side by
  side). Coefficients must sum to 1 (default: equal). The paper's soup: the three single-reward
  baseline runs' task files with 1/3 each.";

pub fn run(args: &[String]) -> Result<()> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut coefficients: Option<Vec<f64>> = None;
    let mut out = None;
    let mut f = ril::args::Flags::new(args, USAGE);
    while let Some(flag) = f.next_flag() {
        match flag {
            "--lora" => files.push(f.value(flag)?.into()),
            "--coefficients" => {
                let v = f.value(flag)?;
                let parsed: Result<Vec<f64>, _> =
                    v.split(',').map(|c| c.trim().parse::<f64>()).collect();
                coefficients = Some(
                    parsed.map_err(|_| anyhow::anyhow!("--coefficients: cannot parse {v:?}"))?,
                );
            }
            "--out" => out = Some(PathBuf::from(f.value(flag)?)),
            other => return Err(f.unknown(other)),
        }
    }
    if files.len() < 2 {
        bail!("a soup needs at least two --lora files\n{USAGE}");
    }
    let out = out.with_context(|| format!("--out is required\n{USAGE}"))?;
    let n = files.len();
    let coefficients = coefficients.unwrap_or_else(|| vec![1.0 / n as f64; n]);
    if coefficients.len() != n {
        bail!("{} coefficients for {n} LoRA files", coefficients.len());
    }
    let info = lora_group::soup_files(
        &files.into_iter().zip(coefficients).collect::<Vec<_>>(),
        "unet",
        &out,
    )?;
    println!(
        "{}: {} layers, rank {}",
        out.display(),
        info.layers,
        info.rank
    );
    Ok(())
}

//! `ril soup`: the model soup of single-reward runs (θ = Σ_k c_k θ_k over a shared base) written
//! as one LoRA file.

use std::path::PathBuf;

use anyhow::Result;
use clap::ArgAction;

/// Averages LoRA runs into one LoRA file (the model soup).
///
/// The soup's update is sum_k c_k * (update of FILE_k), exactly (the pairs side by side). The
/// paper's soup: the three single-reward baseline runs' task files with 1/3 each.
#[derive(Debug, Clone, clap::Args)]
pub struct SoupArgs {
    /// A LoRA file (repeat it: at least two).
    #[arg(long = "lora", value_name = "FILE", required = true)]
    pub loras: Vec<PathBuf>,
    /// The coefficients c_k, comma-separated, one per --lora, summing to 1 [default: equal].
    #[arg(long, value_name = "C1,C2,...", value_delimiter = ',', action = ArgAction::Set,
          value_parser = |c: &str| c.trim().parse::<f64>())]
    pub coefficients: Option<Vec<f64>>,
    /// The soup's LoRA file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

impl SoupArgs {
    pub fn validate(&self) -> Result<(), String> {
        let n = self.loras.len();
        if n < 2 {
            return Err(format!("a soup needs at least two --lora files, got {n}"));
        }
        match &self.coefficients {
            Some(c) if c.len() != n => Err(format!(
                "--coefficients: {} coefficients for {n} --lora files",
                c.len()
            )),
            _ => Ok(()),
        }
    }
}

pub fn run(a: &SoupArgs) -> Result<()> {
    // Checked at parse time too; here because zip below would drop unmatched files silently.
    a.validate().map_err(anyhow::Error::msg)?;
    let (files, out) = (&a.loras, &a.out);
    let n = files.len();
    let coefficients = a
        .coefficients
        .clone()
        .unwrap_or_else(|| vec![1.0 / n as f64; n]);
    let info = lora_group::soup_files(
        &files.iter().cloned().zip(coefficients).collect::<Vec<_>>(),
        "unet",
        out,
    )?;
    println!(
        "{}: {} layers, rank {}",
        out.display(),
        info.layers,
        info.rank
    );
    Ok(())
}

//! `ril export`: LoRA task files (or a soup file) written for other tools: the peft/diffusers
//! file ril itself writes, the kohya / A1111 layout that ComfyUI and the web UIs load, or a
//! diffusers UNet folder with the pairs merged into its weights.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use lora_group::io::{FileDtype, LoraFile, read_lora};
use sd_model::backend::BackendKind;
use sd_model::save::{module_tensors_with, unet_file_shape};

use crate::cli::{one_of, text};

/// The layouts `ril export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Peft,
    Kohya,
    MergedUnet,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Peft, Format::Kohya, Format::MergedUnet];

    pub fn name(self) -> &'static str {
        match self {
            Format::Peft => "peft",
            Format::Kohya => "kohya",
            Format::MergedUnet => "merged-unet",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Exports LoRA files for other tools.
///
/// The update exported is that of the --lora files stacked in order, y = W x + sum_i
/// (alpha_i / r_i) B_i A_i x, as `ril sample --lora` applies them (e.g. every task file of a run
/// up to a stage, or one soup file). Formats: peft (the peft/diffusers file `ril train` writes;
/// diffusers' load_lora_weights), kohya (keys lora_unet_<module path with dots as
/// underscores>.lora_down.weight / .lora_up.weight / .alpha, which ComfyUI, the A1111 web UI
/// and diffusers load), merged-unet (a diffusers UNet folder, OUT/config.json and
/// OUT/diffusion_pytorch_model.safetensors, the pairs merged into the base weights of --model;
/// use it as a pipeline's unet/). Several files are combined exactly, side by side (rank = the
/// sum of ranks, alpha = rank).
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// A LoRA file (peft/diffusers: a run's task-N-NAME/lora.safetensors or a `ril soup` file);
    /// repeat it to stack several.
    #[arg(long = "lora", value_name = "FILE", required = true)]
    pub loras: Vec<PathBuf>,
    /// The layout to write.
    #[arg(long, value_name = "FORMAT", default_value_t = Format::Peft,
          value_parser = one_of(&Format::ALL, Format::name))]
    pub format: Format,
    /// merged-unet: the base pipeline (a diffusers folder or hub id) whose UNet the pairs are
    /// merged into.
    #[arg(long, value_name = "DIR_OR_REPO", value_parser = text())]
    pub model: Option<String>,
    /// Write the values as float16 instead of float32.
    #[arg(long)]
    pub fp16: bool,
    /// merged-unet: the backend the merge runs on.
    #[arg(long, value_name = "BACKEND", default_value_t = BackendKind::Cpu,
          value_parser = one_of(&BackendKind::ALL, BackendKind::name))]
    pub backend: BackendKind,
    /// The file to write (peft, kohya) or the UNet folder (merged-unet; replaced only if it
    /// holds nothing but an earlier export's two files).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}

impl ExportArgs {
    /// `--model` is needed by, and only by, merged-unet.
    pub fn validate(&self) -> Result<(), String> {
        match (self.format, &self.model) {
            (Format::MergedUnet, None) => {
                Err("--format merged-unet needs --model (the base pipeline)".into())
            }
            (Format::Peft | Format::Kohya, Some(_)) => Err(format!(
                "--model is only used by --format merged-unet, not --format {}",
                self.format.name()
            )),
            _ => Ok(()),
        }
    }
}

/// The files stacked as one set of pairs: one file as it is, several side by side.
fn combined(loras: &[PathBuf]) -> Result<LoraFile> {
    match loras {
        [one] => read_lora(one, "unet"),
        many => lora_group::soup::stack_files(
            &many.iter().map(|p| (p.clone(), 1.0)).collect::<Vec<_>>(),
            "unet",
        ),
    }
}

/// The source files, recorded in the output's metadata.
fn sources(loras: &[PathBuf]) -> BTreeMap<String, String> {
    let list: Vec<String> = loras.iter().map(|p| p.display().to_string()).collect();
    BTreeMap::from([(
        "ril_export_of".to_string(),
        serde_json::json!(list).to_string(),
    )])
}

pub fn run(a: &ExportArgs) -> Result<()> {
    a.validate().map_err(anyhow::Error::msg)?;
    let dtype = if a.fp16 {
        FileDtype::F16
    } else {
        FileDtype::F32
    };
    match a.format {
        Format::Peft | Format::Kohya => {
            if a.out.is_dir() {
                bail!(
                    "--out {} is a folder; --format {} writes one file",
                    a.out.display(),
                    a.format.name()
                );
            }
            let file = combined(&a.loras)?;
            if a.format == Format::Peft {
                file.write_peft("unet", &a.out, &sources(&a.loras), dtype)?;
            } else {
                lora_group::kohya::write(&file, &a.out, &sources(&a.loras), dtype)?;
            }
            println!(
                "{}: {}, {} layers, rank {}, alpha {}",
                a.out.display(),
                a.format.name(),
                file.pairs.len(),
                file.rank,
                file.alpha
            );
        }
        Format::MergedUnet => {
            let model = a.model.as_deref().expect("validate");
            let layers = ril::on_backend!(a.backend, inner, |B, device| {
                merged_unet::<B>(model, &a.loras, &a.out, dtype, &device)
            })?;
            println!(
                "{}: merged UNet ({layers} layers adapted), {}",
                a.out.display(),
                if a.fp16 { "float16" } else { "float32" }
            );
        }
    }
    Ok(())
}

/// The files a merged-unet folder holds (an existing folder with anything else is not replaced).
const UNET_FILES: [&str; 2] = ["config.json", "diffusion_pytorch_model.safetensors"];

/// Writes `out` as a diffusers UNet folder: the base's config.json as it is and its weights with
/// every pair of `loras` merged in (`W + Σ_i s_i B_i A_i`, in f32). The folder is assembled
/// beside `out` and renamed into place. Returns the number of adapted layers.
fn merged_unet<B: Backend>(
    model: &str,
    loras: &[PathBuf],
    out: &Path,
    dtype: FileDtype,
    device: &B::Device,
) -> Result<usize> {
    if out.exists() {
        let earlier = out.is_dir()
            && std::fs::read_dir(out)
                .with_context(|| format!("cannot read {}", out.display()))?
                .all(|e| e.is_ok_and(|e| UNET_FILES.iter().any(|f| e.file_name() == *f)));
        if !earlier {
            bail!(
                "--out {} exists and is not an earlier merged UNet (only {} and {}); not replacing it",
                out.display(),
                UNET_FILES[0],
                UNET_FILES[1]
            );
        }
    }
    let unet_dir = sd_model::hub::resolve_model(model)?.join("unet");
    let config_path = unet_dir.join("config.json");
    let config = sd_model::UNetConfig::from_file(&config_path)?;
    let mut unet = sd_model::pipeline::load_unet::<B>(&unet_dir, device)?;
    let mut layers = std::collections::BTreeSet::new();
    for l in loras {
        lora_group::import_task(&mut unet, l, "unet")?;
    }
    lora_group::merge(&mut unet);
    lora_group::LoraModel::visit_lora(&unet, &mut |path, layer| {
        if !layer.lora.is_empty() {
            layers.insert(path.to_string());
        }
    });
    // The merged base weights (LoRA pairs are not part of a base checkpoint's keys).
    let tensors = module_tensors_with(&unet, "", &unet_file_shape(config.use_linear_projection))?;
    let mut metadata = sources(loras);
    metadata.insert("format".into(), "pt".into());
    let weights = lora_group::checksum::bytes_with_checksum(&tensors, &metadata, dtype)
        .with_context(|| format!("cannot write the merged UNet {}", out.display()))?;
    let config_bytes = std::fs::read(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;

    if out.file_name().is_none() {
        bail!("--out {} has no folder name", out.display());
    }
    lora_group::io::write_dir_atomic(out, |tmp| {
        sd_model::write_atomic(&tmp.join(UNET_FILES[0]), &config_bytes)?;
        sd_model::write_atomic(&tmp.join(UNET_FILES[1]), &weights)
    })?;
    Ok(layers.len())
}

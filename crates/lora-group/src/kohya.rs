//! LoRA files in the kohya-ss / A1111 layout that ComfyUI and the Stable Diffusion web UIs load:
//! per layer `lora_unet_<diffusers module path, dots as underscores>.lora_down.weight` (peft's
//! `lora_A`), `.lora_up.weight` (`lora_B`) and `.alpha` (a 0-d tensor; the update is
//! `alpha / rank · up @ down`, as peft's `lora_alpha / r`). kohya trains SD 1.x on the
//! diffusers UNet, so its names are the diffusers paths (not the LDM `input_blocks` ones);
//! diffusers' `_convert_non_diffusers_lora_to_diffusers` / `_convert_unet_lora_key` map them back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::tensor::TensorData;
use safetensors::SafeTensors;

use crate::io::{FileDtype, LoraFile, NamedTensors, tensor_data, write_atomic};

/// The prefix of kohya's UNet module names.
pub const UNET_PREFIX: &str = "lora_unet_";

/// kohya's module name of a diffusers UNet layer path:
/// `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q` →
/// `lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`.
pub fn module_name(layer: &str) -> String {
    format!("{UNET_PREFIX}{}", layer.replace('.', "_"))
}

/// The kohya tensors of `file` (f32, key order): `NAME.lora_down.weight` [r, in] (or
/// [r, in, 1, 1] for a 1×1 convolution), `NAME.lora_up.weight` [out, r] (or [out, r, 1, 1]) and
/// `NAME.alpha` (shape [], the file's alpha). Two layers with the same kohya name are an error.
pub fn tensors(file: &LoraFile) -> Result<NamedTensors> {
    let mut out = BTreeMap::new();
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for (layer, (a, b)) in &file.pairs {
        let name = module_name(layer);
        if let Some(other) = seen.insert(name.clone(), layer) {
            bail!("layers `{other}` and `{layer}` have the same kohya name `{name}`");
        }
        let kernel = |t: &TensorData| {
            let mut shape = t.shape.to_vec();
            if file.conv.contains(layer) {
                shape.extend([1, 1]);
            }
            (shape, t.to_vec::<f32>().expect("read_lora holds f32"))
        };
        out.insert(format!("{name}.lora_down.weight"), kernel(a));
        out.insert(format!("{name}.lora_up.weight"), kernel(b));
        out.insert(format!("{name}.alpha"), (vec![], vec![file.alpha as f32]));
    }
    Ok(out)
}

/// Writes `file` in the kohya layout as `dtype`, atomically, with kohya's descriptive metadata
/// (`ss_network_module`, `ss_network_dim`, `ss_network_alpha`) beside `extra`.
pub fn write(
    file: &LoraFile,
    path: &Path,
    extra: &BTreeMap<String, String>,
    dtype: FileDtype,
) -> Result<()> {
    let mut metadata = extra.clone();
    metadata.insert("ss_network_module".into(), "networks.lora".into());
    metadata.insert("ss_network_dim".into(), file.rank.to_string());
    metadata.insert("ss_network_alpha".into(), file.alpha.to_string());
    let bytes = crate::checksum::bytes_with_checksum(&tensors(file)?, &metadata, dtype)
        .with_context(|| format!("cannot write {}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Reads a kohya UNet LoRA file onto the diffusers layer paths `layers` (a kohya name does not
/// say which underscores were dots, so the model's layer list resolves it). Errors name the file
/// and the key: a key that is not a UNet LoRA tensor or names no layer, a layer missing a tensor,
/// alphas that differ between layers (ril's files hold one alpha).
pub fn read(path: &Path, layers: &[String]) -> Result<LoraFile> {
    let display = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {display}"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{display} is not a valid safetensors file: {e}"))?;
    crate::checksum::verify(path, &st, &crate::io::file_metadata(&bytes))?;
    let by_name: BTreeMap<String, &String> = layers.iter().map(|l| (module_name(l), l)).collect();
    let mut parts: BTreeMap<&String, [Option<TensorData>; 3]> = BTreeMap::new();
    let mut conv = BTreeSet::new();
    for (key, view) in st.tensors() {
        let Some((name, which)) = [".lora_down.weight", ".lora_up.weight", ".alpha"]
            .iter()
            .enumerate()
            .find_map(|(i, s)| key.strip_suffix(s).map(|n| (n, i)))
        else {
            bail!(
                "{display}: key `{key}` is not a kohya LoRA tensor (.lora_down.weight, .lora_up.weight, .alpha)"
            );
        };
        let Some(layer) = by_name.get(name) else {
            bail!("{display}: key `{key}` names no layer of the model");
        };
        let mut shape = view.shape().to_vec();
        if which < 2 && shape.len() == 4 && shape[2..] == [1, 1] {
            shape.truncate(2);
            conv.insert(layer.to_string());
        }
        let expected = if which < 2 { 2 } else { 0 };
        if shape.len() != expected {
            bail!(
                "{display}: key `{key}` has shape {:?}, expected {}",
                view.shape(),
                if which < 2 {
                    "a matrix (or a 1x1 kernel)"
                } else {
                    "a scalar"
                }
            );
        }
        let data = tensor_data(view.dtype(), &shape, view.data())
            .with_context(|| format!("{display}: key `{key}`"))?;
        parts.entry(layer).or_insert([None, None, None])[which] = Some(data);
    }
    let mut pairs = BTreeMap::new();
    let (mut rank, mut alpha) = (0, None::<f64>);
    for (layer, [a, b, al]) in parts {
        let name = module_name(layer);
        let (Some(a), Some(b), Some(al)) = (a, b, al) else {
            bail!("{display}: `{name}` lacks one of .lora_down.weight, .lora_up.weight, .alpha");
        };
        let al = al.to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?[0] as f64;
        match alpha {
            Some(x) if x != al => {
                bail!(
                    "{display}: `{name}.alpha` is {al}, other layers' is {x}; ril's LoRA files hold one alpha"
                )
            }
            _ => alpha = Some(al),
        }
        if a.shape[0] != b.shape[1] {
            bail!(
                "{display}: `{name}`: lora_down has rank {} but lora_up has rank {}",
                a.shape[0],
                b.shape[1]
            );
        }
        rank = rank.max(a.shape[0]);
        pairs.insert(layer.clone(), (a, b));
    }
    let Some(alpha) = alpha else {
        bail!("{display} holds no kohya UNet LoRA tensors");
    };
    Ok(LoraFile {
        pairs,
        rank,
        alpha,
        conv,
    })
}

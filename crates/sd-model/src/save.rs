//! Saving Burn modules as the safetensors files diffusers and transformers load: the inverse of
//! [`crate::load`] (the same parameter listing gives each tensor its checkpoint key and PyTorch
//! layout, Linear weights transposed back to `[out, in]`), written with a deterministic header
//! through a temporary file and a rename.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

use crate::load::{expected_params, transpose};

/// Named tensors as a file holds them: key → (PyTorch shape, f32 values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every float parameter of `module` as `(checkpoint key, (PyTorch shape, values))`, keys under
/// `prefix` (e.g. `text_model.` for a transformers text encoder; "" for diffusers models).
pub fn module_tensors<B: Backend, M: Module<B>>(module: &M, prefix: &str) -> Result<NamedTensors> {
    module_tensors_with(module, prefix, &|_, shape| shape)
}

/// As [`module_tensors`], with each tensor's file shape given by `file_shape(key, pytorch_shape)`
/// (the same values: e.g. `[o, i, 1, 1]` for a Linear that a checkpoint stores as a 1×1
/// convolution).
pub fn module_tensors_with<B: Backend, M: Module<B>>(
    module: &M,
    prefix: &str,
    file_shape: &dyn Fn(&str, Vec<usize>) -> Vec<usize>,
) -> Result<NamedTensors> {
    let expected = expected_params(module);
    let mut collector = Collector {
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    module.visit(&mut collector);
    let mut tensors = BTreeMap::new();
    for (key, param) in expected {
        let Some((shape, values)) = collector.out.remove(&param.burn_path) else {
            bail!("parameter `{key}` ({}) has no value", param.burn_path);
        };
        let values = if param.linear_weight {
            // Burn stores [in, out]; the file holds [out, in].
            transpose(&values, shape[0], shape[1])
        } else {
            values
        };
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "parameter `{key}` holds a non-finite value ({}) at element {bad}: refusing to save it",
                values[bad]
            );
        }
        let file_shape = file_shape(&key, param.torch_shape.clone());
        if file_shape.iter().product::<usize>() != values.len() {
            bail!(
                "parameter `{key}`: file shape {file_shape:?} does not hold its {} values",
                values.len()
            );
        }
        tensors.insert(format!("{prefix}{key}"), (file_shape, values));
    }
    Ok(tensors)
}

/// Saves `module` as a safetensors file at `path` (keys under `prefix`), atomically.
pub fn save_module<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
    prefix: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    save_module_with(module, path, prefix, metadata, &|_, shape| shape)
}

/// As [`save_module`], with file shapes as [`module_tensors_with`].
pub fn save_module_with<B: Backend, M: Module<B>>(
    module: &M,
    path: &Path,
    prefix: &str,
    metadata: &BTreeMap<String, String>,
    shape: &dyn Fn(&str, Vec<usize>) -> Vec<usize>,
) -> Result<()> {
    let tensors = module_tensors_with(module, prefix, shape)?;
    lora_group::io::write_safetensors(path, &tensors, metadata)
}

/// The file shape of a UNet tensor: without `use_linear_projection`, diffusers' transformer
/// `proj_in` / `proj_out` are 1×1 convolutions (`[o, i, 1, 1]`), which ril holds as Linear layers.
pub fn unet_file_shape(use_linear_projection: bool) -> impl Fn(&str, Vec<usize>) -> Vec<usize> {
    move |key, shape| {
        let proj = key.ends_with(".proj_in.weight") || key.ends_with(".proj_out.weight");
        if !use_linear_projection && proj && shape.len() == 2 {
            vec![shape[0], shape[1], 1, 1]
        } else {
            shape
        }
    }
}

/// Collects float parameter values by Burn path.
struct Collector {
    path: Vec<String>,
    out: NamedTensors,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let values = t
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        self.out.insert(self.path.join("."), (shape, values));
    }
}

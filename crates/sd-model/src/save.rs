//! Saving Burn modules as the safetensors files diffusers and transformers load: the inverse of
//! [`crate::load`] (the same parameter listing gives each tensor its checkpoint key and PyTorch
//! layout, Linear weights transposed back to `[out, in]`), written with a deterministic header
//! through a temporary file and a rename.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;

use crate::load::expected_params;

/// Named tensors as a file holds them: key → (PyTorch shape, f32 values).
pub type NamedTensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every float parameter of `module` as `(checkpoint key, (PyTorch shape, values))`, keys under
/// `prefix` (e.g. `text_model.` for a transformers text encoder; "" for diffusers models).
pub fn module_tensors<B: Backend, M: Module<B>>(module: &M, prefix: &str) -> Result<NamedTensors> {
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
            let (rows, cols) = (shape[0], shape[1]);
            let mut t = vec![0f32; values.len()];
            for r in 0..rows {
                for c in 0..cols {
                    t[c * rows + r] = values[r * cols + c];
                }
            }
            t
        } else {
            values
        };
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "parameter `{key}` holds a non-finite value ({}) at element {bad}: refusing to save it",
                values[bad]
            );
        }
        tensors.insert(format!("{prefix}{key}"), (param.torch_shape, values));
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
    let tensors = module_tensors(module, prefix)?;
    lora_group::io::write_safetensors(path, &tensors, metadata)
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

//! Deterministic weight initialisation from a seed, with PyTorch's defaults (so that a run is
//! the same on every backend and machine, and close to what diffusers' from-scratch training
//! starts from): Linear and Conv2d weights and biases uniform in ±1/√fan_in
//! (`kaiming_uniform_(a=√5)`), embeddings N(0, 0.02²) (transformers' CLIP init), norms γ = 1,
//! β = 0.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use sd_model::noise::NoiseRng;

/// Re-initialises every float parameter of `module` from `rng`, in the module's field order.
pub fn initialise<B: Backend, M: Module<B>>(module: M, rng: NoiseRng) -> M {
    let mut init = Init {
        rng,
        containers: Vec::new(),
        names: Vec::new(),
        fan_in: 1,
    };
    module.map(&mut init)
}

struct Init {
    rng: NoiseRng,
    containers: Vec<String>,
    names: Vec<String>,
    /// The fan-in of the last weight seen (its bias follows it in field order).
    fan_in: usize,
}

impl Init {
    fn uniform(&mut self, n: usize, bound: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.rng.uniform_open0() * 2.0 - 1.0) * bound) as f32)
            .collect()
    }
}

impl<B: Backend> ModuleMapper<B> for Init {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.names.push(name.to_string());
        self.containers.push(container_type.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.names.pop();
        self.containers.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let shape: Vec<usize> = param.lazy_shape().to_vec();
        let device = param.lazy_device();
        let n: usize = shape.iter().product();
        let owner = sd_model::load::owner_struct(&self.containers);
        let name = self.names.last().cloned().unwrap_or_default();
        let values = match (owner.as_str(), name.as_str()) {
            ("Struct:GroupNorm" | "Struct:LayerNorm", "gamma") => vec![1.0; n],
            ("Struct:GroupNorm" | "Struct:LayerNorm", "beta") => vec![0.0; n],
            ("Struct:Embedding", _) => self.rng.normals(n).into_iter().map(|v| v * 0.02).collect(),
            (_, "bias") => {
                let bound = 1.0 / (self.fan_in as f64).sqrt();
                self.uniform(n, bound)
            }
            (owner, _) => {
                // Linear weights are [in, out] in Burn; Conv2d [out, in/groups, kh, kw].
                self.fan_in = if owner == "Struct:Linear" && shape.len() == 2 {
                    shape[0]
                } else {
                    shape.iter().skip(1).product::<usize>().max(1)
                };
                let bound = 1.0 / (self.fan_in as f64).sqrt();
                self.uniform(n, bound)
            }
        };
        let shape: [usize; D] = shape.try_into().expect("a parameter's rank is its type's");
        let tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
        // A new value under the same id (the lazy initialiser, never run, is dropped).
        Param::initialized(param.id, tensor.require_grad())
    }
}

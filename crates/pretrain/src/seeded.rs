//! Initial weights for the toy world's small models drawn from SplitMix64 in parameter order,
//! not from the backend's global generator (which tests running in parallel draw from or reseed),
//! so that a training run repeats bit for bit.

use burn::module::{ModuleMapper, Param};
use burn::prelude::*;
use toy_shapes::rng::SplitMix64;

/// A [`ModuleMapper`] that replaces every float parameter, by its field and container: LayerNorm
/// scales 1 and shifts 0; biases (`bias`, `*_bias`) 0; embeddings (Embedding tables,
/// `class_embedding`, `positional_embedding`) uniform with standard deviation 0.02 (CLIP's
/// `initializer_range`); other weights uniform in ±1/sqrt(fan_in) (PyTorch's default bound for
/// Linear and Conv2d), fan_in read from Burn's layout (Linear `[in, out]`, Conv2d
/// `[out, in, k, k]`) except for `in_proj_weight`, which is stored as PyTorch's `[3·D, D]`.
pub struct SeededInit {
    rng: SplitMix64,
    /// (field, container type) of the modules entered.
    path: Vec<(String, String)>,
}

impl SeededInit {
    pub fn new(rng: SplitMix64) -> Self {
        Self {
            rng,
            path: Vec::new(),
        }
    }
}

impl<B: Backend> ModuleMapper<B> for SeededInit {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        let n: usize = dims.iter().product();
        let (field, container) = self
            .path
            .last()
            .map(|(f, c)| (f.as_str(), c.as_str()))
            .unwrap_or(("", ""));
        let uniform = |rng: &mut SplitMix64, bound: f32| -> Vec<f32> {
            (0..n).map(|_| bound * rng.signed()).collect()
        };
        let values = match (container, field) {
            ("Struct:LayerNorm", "gamma") => vec![1.0; n],
            ("Struct:LayerNorm", _) => vec![0.0; n],
            (_, f) if f == "bias" || f.ends_with("_bias") => vec![0.0; n],
            ("Struct:Embedding", _) | (_, "class_embedding" | "positional_embedding") => {
                uniform(&mut self.rng, 0.02 * 3f32.sqrt())
            }
            _ => {
                let fan_in = match D {
                    4 => dims[1] * dims[2] * dims[3],
                    2 if field == "in_proj_weight" => dims[1],
                    2 => dims[0],
                    _ => n,
                };
                uniform(&mut self.rng, 1.0 / (fan_in as f32).sqrt())
            }
        };
        // A tensor made from data does not track gradients: keep the parameter's setting.
        let t = Tensor::from_data(TensorData::new(values, dims), &tensor.device())
            .set_require_grad(tensor.is_require_grad());
        Param::from_mapped_value(id, t, mapper)
    }
}

//! Deterministic weight initialisation from a seed (so that a run is the same on every backend
//! and machine), as the reference libraries initialise a model built from its config: diffusers'
//! models (the VAE, the UNet) keep PyTorch's defaults (Linear and Conv2d weights and biases
//! uniform in ±1/√fan_in, `kaiming_uniform_(a=√5)`); the CLIP text encoder gets transformers'
//! `CLIPPreTrainedModel._init_weights` (normal weights with per-layer deviations, zero biases,
//! embeddings N(0, 0.02²)). Norms: γ = 1, β = 0.

use burn::module::{Module, ModuleMapper, Param};
use burn::prelude::*;
use sd_model::noise::NoiseRng;

/// Which library's initialisation a model gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    /// PyTorch's layer defaults (diffusers' models: AutoencoderKL, UNet2DConditionModel).
    Torch,
    /// transformers' CLIP text model init for `hidden` wide, `layers` deep: attention q/k/v
    /// N(0, (hidden^-½ (2·layers)^-½)²), out_proj N(0, hidden⁻¹), mlp.fc1 N(0, (2·hidden)⁻¹),
    /// mlp.fc2 as q; every bias 0. Without it (PyTorch's uniform biases of up to 1/√hidden)
    /// a from-scratch text encoder's outputs hardly depend on the caption: the standard
    /// deviation across 64 captions at a caption token was 0.05-0.14 of a unit-scale output,
    /// 0.45-0.54 with this init.
    ClipText { hidden: usize, layers: usize },
    /// [`Scheme::Torch`] with the UNet's cross-attention output projections
    /// (`attn2.to_out.0`) at zero, so that a random text encoder's captions add nothing to the
    /// UNet's features until the UNet learns to read them (as ControlNet's zero convolutions and
    /// DiT's adaLN-Zero start new branches).
    TorchZeroCrossAttentionOut,
}

/// Re-initialises every float parameter of `module` from `rng`, in the module's field order.
pub fn initialise<B: Backend, M: Module<B>>(module: M, rng: NoiseRng) -> M {
    initialise_with(module, rng, Scheme::Torch)
}

/// [`initialise`] under a given scheme.
pub fn initialise_with<B: Backend, M: Module<B>>(module: M, rng: NoiseRng, scheme: Scheme) -> M {
    let mut init = Init {
        rng,
        scheme,
        containers: Vec::new(),
        names: Vec::new(),
        fan_in: 1,
    };
    module.map(&mut init)
}

struct Init {
    rng: NoiseRng,
    scheme: Scheme,
    containers: Vec<String>,
    names: Vec<String>,
    /// The fan-in of the last weight seen (its bias follows it in field order).
    fan_in: usize,
}

impl Init {
    fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        self.rng
            .normals(n)
            .into_iter()
            .map(|v| (v as f64 * std) as f32)
            .collect()
    }

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
        let zeroed = self.scheme == Scheme::TorchZeroCrossAttentionOut
            && self.names.iter().any(|n| n == "attn2")
            && self.names.iter().any(|n| n == "to_out");
        let values = match (owner.as_str(), name.as_str()) {
            _ if zeroed => {
                if name != "bias" {
                    self.fan_in = shape[0];
                }
                vec![0.0; n]
            }
            ("Struct:GroupNorm" | "Struct:LayerNorm", "gamma") => vec![1.0; n],
            ("Struct:GroupNorm" | "Struct:LayerNorm", "beta") => vec![0.0; n],
            ("Struct:Embedding", _) => self.normal(n, 0.02),
            ("Struct:Linear", param) if matches!(self.scheme, Scheme::ClipText { .. }) => {
                let Scheme::ClipText { hidden, layers } = self.scheme else {
                    unreachable!("matched above")
                };
                if param == "bias" {
                    vec![0.0; n]
                } else {
                    let in_proj = (hidden as f64).powf(-0.5) * ((2 * layers) as f64).powf(-0.5);
                    let layer = self.names.iter().rev().nth(1).map(String::as_str);
                    let std = match layer {
                        Some("out_proj") => (hidden as f64).powf(-0.5),
                        Some("fc1") => ((2 * hidden) as f64).powf(-0.5),
                        Some("q_proj" | "k_proj" | "v_proj" | "fc2") => in_proj,
                        // transformers' generic Linear init (initializer_range).
                        _ => 0.02,
                    };
                    self.normal(n, std)
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use sd_model::backend::Cpu;
    use sd_model::clip::{ClipTextConfig, ClipTextModel};

    fn std_of(t: &Tensor<Cpu, 2>) -> f64 {
        let v = t.to_data().convert::<f32>().into_vec::<f32>().unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
    }

    #[test]
    fn clip_text_scheme_is_transformers_init() {
        let config = ClipTextConfig {
            vocab_size: 300,
            hidden_size: 64,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            ..ClipTextConfig::sd15()
        };
        let device = Default::default();
        let model: ClipTextModel<Cpu> = initialise_with(
            config.init(&device).unwrap(),
            NoiseRng::derive(7, &[1]),
            Scheme::ClipText {
                hidden: 64,
                layers: 2,
            },
        );
        let layer = &model.encoder.layers[1];
        let in_proj = 64f64.powf(-0.5) * 4f64.powf(-0.5);
        // A sample deviation of n = 4096 (or 16384) normals is within 3 % of the true one
        // with overwhelming probability (its relative standard error is 1/√(2n) ≈ 1.1 %).
        for (name, w, want) in [
            ("q_proj", layer.self_attn.q_proj.weight.val(), in_proj),
            ("v_proj", layer.self_attn.v_proj.weight.val(), in_proj),
            (
                "out_proj",
                layer.self_attn.out_proj.weight.val(),
                64f64.powf(-0.5),
            ),
            ("fc1", layer.mlp.fc1.weight.val(), 128f64.powf(-0.5)),
            ("fc2", layer.mlp.fc2.weight.val(), in_proj),
            (
                "token_embedding",
                model.embeddings.token_embedding.weight.val(),
                0.02,
            ),
        ] {
            let got = std_of(&w);
            assert!(
                (got / want - 1.0).abs() < 0.03,
                "{name}: std {got}, want {want}"
            );
        }
        for (name, b) in [
            (
                "q_proj",
                layer.self_attn.q_proj.bias.as_ref().unwrap().val(),
            ),
            ("fc2", layer.mlp.fc2.bias.as_ref().unwrap().val()),
        ] {
            let max: f32 = b.abs().max().into_scalar();
            assert_eq!(max, 0.0, "{name}.bias must start at zero");
        }
        let gamma: f32 = (layer.layer_norm1.gamma.val() - 1.0)
            .abs()
            .max()
            .into_scalar();
        assert_eq!(gamma, 0.0);
        // The Torch scheme keeps PyTorch's uniform biases (±1/√fan_in): not all zero.
        let torch: ClipTextModel<Cpu> =
            initialise(config.init(&device).unwrap(), NoiseRng::derive(7, &[1]));
        let b = torch.encoder.layers[0]
            .self_attn
            .q_proj
            .bias
            .as_ref()
            .unwrap()
            .val();
        let max: f32 = b.abs().max().into_scalar();
        assert!(max > 0.05 && max <= 0.125, "torch bias bound {max}");
    }

    #[test]
    fn zero_cross_attention_scheme_zeroes_only_attn2_out() {
        let device = Default::default();
        let config = sd_model::unet::UNetConfig::tiny();
        let unet: sd_model::unet::UNet2DConditionModel<Cpu> = initialise_with(
            config.init(&device).unwrap(),
            NoiseRng::derive(3, &[1]),
            Scheme::TorchZeroCrossAttentionOut,
        );
        let tensors = sd_model::save::module_tensors(&unet, "").unwrap();
        let (mut zeroed, mut kept) = (0, 0);
        for (key, (_, values)) in &tensors {
            let zero = values.iter().all(|&v| v == 0.0);
            if key.contains("attn2.to_out.0.") {
                assert!(zero, "{key} must start at zero");
                zeroed += 1;
            } else if key.ends_with(".weight") && !key.contains("norm") {
                assert!(!zero, "{key} must keep PyTorch's init");
                kept += 1;
            }
        }
        assert!(zeroed >= 2 && kept > zeroed, "{zeroed} zeroed, {kept} kept");
    }
}

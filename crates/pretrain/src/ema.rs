//! An exponential moving average of whole modules' weights, as diffusers' `EMAModel` keeps
//! for `--use_ema` (default schedule: the first update copies the weights, the n-th uses the
//! decay min(decay, (1 + (n - 1)) / (10 + (n - 1)))). The averages are kept by parameter path,
//! so they save to and load from a checkpoint and a resumed run continues bit for bit.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::optim::{flat_tensors, named_f32};

/// The averaged weights and how many updates made them.
#[derive(Debug, Clone)]
pub struct Ema<B: Backend> {
    /// The decay the schedule rises to.
    pub decay: f64,
    /// Updates taken.
    pub updates: u64,
    /// The average of every parameter by `module.path` (flattened to 1-D).
    pub shadow: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> Ema<B> {
    pub fn new(decay: f64) -> Self {
        Self {
            decay,
            updates: 0,
            shadow: BTreeMap::new(),
        }
    }

    /// Starts an update (call once per optimiser step, then [`update`](Self::update) each
    /// module with the decay it returns).
    pub fn begin_update(&mut self) -> f64 {
        self.updates += 1;
        let step = self.updates - 1;
        if step == 0 {
            0.0
        } else {
            let warm = (1.0 + step as f64) / (10.0 + step as f64);
            warm.min(self.decay)
        }
    }

    /// shadow ← decay · shadow + (1 − decay) · weights, for every parameter of `module` under
    /// `prefix` (a parameter seen for the first time is copied).
    pub fn update<AB, M>(&mut self, module: &M, prefix: &str, decay: f64)
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut visitor = Average::<AB> {
            ema: self,
            path: vec![prefix.to_string()],
            decay,
        };
        module.visit(&mut visitor);
    }

    /// `module` with every parameter under `prefix` replaced by its average; a parameter the
    /// average has not seen, or whose size differs, is an error naming it.
    pub fn apply<AB, M>(&self, module: M, prefix: &str) -> Result<M>
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let mut mapper = Apply::<AB> {
            ema: self,
            path: vec![prefix.to_string()],
            error: None,
        };
        let module = module.map(&mut mapper);
        match mapper.error {
            Some(e) => bail!(e),
            None => Ok(module),
        }
    }

    /// The averages as named f32 tensors for a checkpoint file.
    pub fn to_tensors(&self) -> sd_model::save::NamedTensors {
        named_f32(&self.shadow)
    }

    /// Restores averages saved by [`to_tensors`](Self::to_tensors).
    pub fn load_tensors(
        &mut self,
        updates: u64,
        tensors: BTreeMap<String, Vec<f32>>,
        device: &B::Device,
    ) {
        self.updates = updates;
        self.shadow = flat_tensors(tensors, device);
    }
}

struct Average<'a, AB: AutodiffBackend> {
    ema: &'a mut Ema<AB::InnerBackend>,
    path: Vec<String>,
    decay: f64,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for Average<'_, AB> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        let name = self.path.join(".");
        let p = param.val().inner();
        let n = p.shape().num_elements();
        let p = p.reshape([n]);
        let averaged = match self.ema.shadow.remove(&name) {
            Some(s) if self.decay != 0.0 => s * self.decay + p * (1.0 - self.decay),
            _ => p,
        };
        self.ema.shadow.insert(name, averaged);
    }
}

struct Apply<'a, AB: AutodiffBackend> {
    ema: &'a Ema<AB::InnerBackend>,
    path: Vec<String>,
    error: Option<String>,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Apply<'_, AB> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let name = self.path.join(".");
        let shape = param.val().shape();
        match self.ema.shadow.get(&name) {
            Some(s) if s.dims()[0] == shape.num_elements() => {
                let t: Tensor<AB::InnerBackend, D> = s.clone().reshape(shape);
                let require_grad = param.val().is_require_grad();
                let t = Tensor::from_inner(t);
                Param::initialized(param.id, if require_grad { t.require_grad() } else { t })
            }
            found => {
                if self.error.is_none() {
                    self.error = Some(match found {
                        Some(s) => format!(
                            "EMA weights: `{name}` holds {} values, the model's parameter {}",
                            s.dims()[0],
                            shape.num_elements()
                        ),
                        None => format!("EMA weights: no average of `{name}`"),
                    });
                }
                param
            }
        }
    }
}

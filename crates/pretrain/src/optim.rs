//! AdamW over every parameter of whole modules, as PyTorch's `torch.optim.AdamW` (decoupled
//! weight decay, bias-corrected moments, eps outside the square root), with global-norm
//! clipping as `clip_grad_norm_`. The moments are kept by parameter path, so they save to and
//! load from a checkpoint file and a resumed run continues bit for bit.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// The optimiser's settings and state.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Steps taken (the bias corrections' exponent).
    pub step: u64,
    /// First and second moments by `module.path` (flattened to 1-D).
    pub m: BTreeMap<String, Tensor<B, 1>>,
    pub v: BTreeMap<String, Tensor<B, 1>>,
}

impl<B: Backend> Default for AdamW<B> {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        }
    }
}

/// The global L2 norm of the gradients of `modules` (each a module and its path prefix).
pub fn grad_norm<AB: AutodiffBackend, M: AutodiffModule<AB>>(
    modules: &[&M],
    grads: &AB::Gradients,
) -> f64 {
    let mut visitor = SquareSum::<AB> { grads, sum: None };
    for m in modules {
        m.visit(&mut visitor);
    }
    visitor
        .sum
        .map(|s| s.into_scalar().elem::<f64>().sqrt())
        .unwrap_or(0.0)
}

/// The clipping factor `clip_grad_norm_` multiplies gradients by: `max / (norm + 1e-6)`, at most 1.
pub fn clip_factor(norm: f64, max_norm: Option<f64>) -> f64 {
    match max_norm {
        Some(max) => (max / (norm + 1e-6)).min(1.0),
        None => 1.0,
    }
}

impl<B: Backend> AdamW<B> {
    /// Starts an optimiser step (call once per step, before [`update`](Self::update) of each
    /// module).
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// Updates every parameter of `module` that has a gradient, with parameter names under
    /// `prefix`; gradients are multiplied by `scale` (the clipping factor) first.
    pub fn update<AB, M>(
        &mut self,
        module: M,
        prefix: &str,
        grads: &AB::Gradients,
        lr: f64,
        weight_decay: f64,
        scale: f64,
    ) -> M
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AB>,
    {
        let t = self.step.max(1) as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        let mut mapper = Update {
            opt: self,
            grads,
            path: vec![prefix.to_string()],
            lr,
            weight_decay,
            scale,
            bc1,
            bc2,
        };
        module.map(&mut mapper)
    }

    /// The state as named f32 tensors (`m.NAME`, `v.NAME`) for a checkpoint file.
    pub fn to_tensors(&self) -> sd_model::save::NamedTensors {
        let mut out = BTreeMap::new();
        for (kind, map) in [("m", &self.m), ("v", &self.v)] {
            for (name, t) in named_f32(map) {
                out.insert(format!("{kind}.{name}"), t);
            }
        }
        out
    }

    /// Restores moments saved by [`to_tensors`](Self::to_tensors): every `m.` key needs its
    /// `v.` key.
    pub fn load_tensors(
        &mut self,
        step: u64,
        tensors: BTreeMap<String, Vec<f32>>,
        device: &B::Device,
    ) -> Result<()> {
        self.step = step;
        self.m.clear();
        self.v.clear();
        for (key, t) in flat_tensors::<B>(tensors, device) {
            let (kind, name) = match key.split_once('.') {
                Some(("m", name)) => ("m", name),
                Some(("v", name)) => ("v", name),
                _ => bail!("optimiser state: unexpected key `{key}`"),
            };
            let map = if kind == "m" {
                &mut self.m
            } else {
                &mut self.v
            };
            map.insert(name.to_string(), t);
        }
        if let Some(k) = self.m.keys().find(|k| !self.v.contains_key(*k)) {
            bail!("optimiser state: `m.{k}` has no `v.{k}`");
        }
        if let Some(k) = self.v.keys().find(|k| !self.m.contains_key(*k)) {
            bail!("optimiser state: `v.{k}` has no `m.{k}`");
        }
        Ok(())
    }
}

/// Flattened per-parameter state (moments, averages) as named f32 tensors for a checkpoint.
pub fn named_f32<B: Backend>(map: &BTreeMap<String, Tensor<B, 1>>) -> sd_model::save::NamedTensors {
    map.iter()
        .map(|(name, t)| {
            let values = t
                .clone()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default();
            (name.clone(), (vec![values.len()], values))
        })
        .collect()
}

/// The inverse of [`named_f32`]: each checkpoint vector as a 1-D tensor on `device`.
pub fn flat_tensors<B: Backend>(
    tensors: BTreeMap<String, Vec<f32>>,
    device: &B::Device,
) -> BTreeMap<String, Tensor<B, 1>> {
    tensors
        .into_iter()
        .map(|(name, values)| {
            let n = values.len();
            (
                name,
                Tensor::from_data(TensorData::new(values, [n]), device),
            )
        })
        .collect()
}

struct SquareSum<'a, AB: AutodiffBackend> {
    grads: &'a AB::Gradients,
    sum: Option<Tensor<AB::InnerBackend, 1>>,
}

impl<AB: AutodiffBackend> ModuleVisitor<AB> for SquareSum<'_, AB> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let s = g.powf_scalar(2.0).sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + s,
                None => s,
            });
        }
    }
}

struct Update<'a, AB: AutodiffBackend> {
    opt: &'a mut AdamW<AB::InnerBackend>,
    grads: &'a AB::Gradients,
    path: Vec<String>,
    lr: f64,
    weight_decay: f64,
    scale: f64,
    bc1: f64,
    bc2: f64,
}

impl<AB: AutodiffBackend> ModuleMapper<AB> for Update<'_, AB> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<AB, D>>) -> Param<Tensor<AB, D>> {
        let tensor = param.val();
        let Some(grad) = tensor.grad(self.grads) else {
            return param;
        };
        let name = self.path.join(".");
        let p = tensor.inner();
        let shape = p.shape();
        let n = shape.num_elements();
        let g = grad.reshape([n]);
        let g = if self.scale != 1.0 { g * self.scale } else { g };
        let (b1, b2) = (self.opt.beta1, self.opt.beta2);
        let m = match self.opt.m.remove(&name) {
            Some(m) => m * b1 + g.clone() * (1.0 - b1),
            None => g.clone() * (1.0 - b1),
        };
        let v = match self.opt.v.remove(&name) {
            Some(v) => v * b2 + g.clone() * g * (1.0 - b2),
            None => g.clone() * g * (1.0 - b2),
        };
        let p = p.reshape([n]) * (1.0 - self.lr * self.weight_decay);
        let denom = v.clone().sqrt() / self.bc2.sqrt() + self.opt.eps;
        let p = p - m.clone() / denom * (self.lr / self.bc1);
        self.opt.m.insert(name.clone(), m);
        self.opt.v.insert(name, v);
        let p: Tensor<AB::InnerBackend, D> = p.reshape(shape);
        Param::initialized(param.id, Tensor::from_inner(p).require_grad())
    }
}

//! `LoraPair` (one task's low-rank update, peft layout) and `LoraLinear`: a Linear layer plus the
//! pairs of every task, `y = W x + b + Σ_i s_i · B_i (A_i x)`.
// The pair's fields are named as peft's checkpoint keys (`lora_A`, `lora_B`).
#![allow(non_snake_case)]

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::module::linear;

/// One task's low-rank pair, stored as peft stores it: `lora_A` [r, in], `lora_B` [out, r].
#[derive(Module, Debug)]
pub struct LoraPair<B: Backend> {
    /// Down-projection [rank, in] (Kaiming-uniform at creation).
    pub lora_A: Param<Tensor<B, 2>>,
    /// Up-projection [out, rank] (zero at creation, so a new task starts at the previous model).
    pub lora_B: Param<Tensor<B, 2>>,
    /// alpha / rank.
    pub scale: f64,
    /// LoRA alpha (as peft's `lora_alpha`).
    pub alpha: f64,
    /// The task this pair belongs to (0, 1, ...).
    pub task: usize,
}

impl<B: Backend> LoraPair<B> {
    /// A fresh pair: `lora_A` Kaiming-uniform as peft (`kaiming_uniform_(a=√5)`, i.e. bound
    /// 1/√in), `lora_B` zero.
    pub fn new(
        d_in: usize,
        d_out: usize,
        rank: usize,
        alpha: f64,
        task: usize,
        device: &B::Device,
    ) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let a = Tensor::random([rank, d_in], Distribution::Uniform(-bound, bound), device);
        let b = Tensor::zeros([d_out, rank], device);
        Self::from_tensors(a, b, alpha, task)
    }

    /// A pair from given weights (`a` [r, in], `b` [out, r]).
    pub fn from_tensors(a: Tensor<B, 2>, b: Tensor<B, 2>, alpha: f64, task: usize) -> Self {
        let rank = a.dims()[0];
        Self {
            lora_A: Param::from_tensor(a),
            lora_B: Param::from_tensor(b),
            scale: alpha / rank as f64,
            alpha,
            task,
        }
    }

    /// The rank r.
    pub fn rank(&self) -> usize {
        self.lora_A.val().dims()[0]
    }

    /// `s · B (A x)` for `x` [..., in].
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = linear(x, self.lora_A.val().transpose(), None);
        linear(h, self.lora_B.val().transpose(), None) * self.scale
    }

    /// The dense update `s · (B A)` in Burn's Linear layout [in, out].
    pub fn delta(&self) -> Tensor<B, 2> {
        (self.lora_B.val().matmul(self.lora_A.val()) * self.scale).transpose()
    }
}

/// A Linear layer with a group of LoRA pairs. The base layer is the field `base`, which
/// checkpoint loading treats as transparent (its keys are the plain layer's `weight` / `bias`).
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    pub base: Linear<B>,
    /// One pair per task that adapted this layer, oldest first.
    pub lora: Vec<LoraPair<B>>,
    /// Whether the pairs are folded into `base` (then they are skipped in `forward`).
    pub merged: bool,
    /// The layer is a 1×1 convolution in the checkpoint (a Linear over channels here): its LoRA
    /// files hold `[r, in, 1, 1]` / `[out, r, 1, 1]`, as peft's Conv2d LoRA.
    pub conv1x1: bool,
}

impl<B: Backend> LoraLinear<B> {
    /// Wraps a Linear layer with no pairs.
    pub fn new(base: Linear<B>) -> Self {
        Self {
            base,
            lora: Vec::new(),
            merged: false,
            conv1x1: false,
        }
    }

    /// Wraps a 1×1 convolution held as a Linear over channels (same weights, `[o, i, 1, 1]` in
    /// checkpoints).
    pub fn conv1x1(base: Linear<B>) -> Self {
        Self {
            conv1x1: true,
            ..Self::new(base)
        }
    }

    /// `[in, out]` of the base layer.
    pub fn dims(&self) -> [usize; 2] {
        self.base.weight.val().dims()
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut y = self.base.forward(x.clone());
        if !self.merged {
            for pair in &self.lora {
                y = y + pair.forward(x.clone());
            }
        }
        y
    }

    /// Freezes the base and every existing pair, then adds a trainable pair for `task`.
    pub fn push_task(&mut self, task: usize, rank: usize, alpha: f64) {
        let [d_in, d_out] = self.dims();
        let device = self.base.weight.val().device();
        self.push_pair(LoraPair::new(d_in, d_out, rank, alpha, task, &device));
    }

    /// Freezes the base and every existing pair, then adds `pair` (trainable).
    pub fn push_pair(&mut self, pair: LoraPair<B>) {
        self.freeze();
        self.lora.push(pair);
    }

    /// Marks the base and all pairs as not requiring gradients.
    pub fn freeze(&mut self) {
        let pairs = std::mem::take(&mut self.lora);
        self.lora = pairs.into_iter().map(|p| p.no_grad()).collect();
        self.base = self.base.clone().no_grad();
    }

    /// The sum of every pair's dense update, [in, out] (None without pairs).
    pub fn delta(&self) -> Option<Tensor<B, 2>> {
        self.lora.iter().map(LoraPair::delta).reduce(|a, b| a + b)
    }

    /// Folds every pair into the base weight (`forward` then skips them).
    pub fn merge(&mut self) {
        if self.merged {
            return;
        }
        if let Some(delta) = self.delta() {
            self.add_to_weight(delta);
        }
        self.merged = true;
    }

    /// Undoes [`merge`](Self::merge).
    pub fn unmerge(&mut self) {
        if !self.merged {
            return;
        }
        if let Some(delta) = self.delta() {
            self.add_to_weight(delta.neg());
        }
        self.merged = false;
    }

    /// Adds `delta` [in, out] to the base weight, keeping its parameter id and grad setting.
    pub fn add_to_weight(&mut self, delta: Tensor<B, 2>) {
        let require_grad = self.base.weight.val().is_require_grad();
        self.base.weight = self
            .base
            .weight
            .clone()
            .map(|w| (w.detach() + delta).detach().set_require_grad(require_grad));
    }
}

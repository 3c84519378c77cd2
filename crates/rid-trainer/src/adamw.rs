//! AdamW exactly as PyTorch's `torch.optim.AdamW` (decoupled weight decay, bias-corrected
//! moments, eps outside the square root) and global-norm gradient clipping as
//! `clip_grad_norm_`, on named tensors so that the state saves to and loads from a file.

use std::collections::BTreeMap;

use burn::prelude::*;

/// Optimiser state: step count and the two moments of every parameter, by name.
#[derive(Debug, Clone)]
pub struct AdamW<B: Backend> {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: u64,
    pub m: BTreeMap<String, Tensor<B, 2>>,
    pub v: BTreeMap<String, Tensor<B, 2>>,
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

impl<B: Backend> AdamW<B> {
    /// One update of every `(name, param, grad)`; returns the new parameters in order.
    pub fn update(
        &mut self,
        params: Vec<(String, Tensor<B, 2>, Tensor<B, 2>)>,
        lr: f64,
        weight_decay: f64,
    ) -> Vec<Tensor<B, 2>> {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        params
            .into_iter()
            .map(|(name, p, g)| {
                let p = p * (1.0 - lr * weight_decay);
                let m = match self.m.remove(&name) {
                    Some(m) => m * self.beta1 + g.clone() * (1.0 - self.beta1),
                    None => g.clone() * (1.0 - self.beta1),
                };
                let v = match self.v.remove(&name) {
                    Some(v) => v * self.beta2 + g.clone() * g * (1.0 - self.beta2),
                    None => g.clone() * g * (1.0 - self.beta2),
                };
                let denom = v.clone().sqrt() / bc2.sqrt() + self.eps;
                let p = p - m.clone() / denom * (lr / bc1);
                self.m.insert(name.clone(), m);
                self.v.insert(name, v);
                p
            })
            .collect()
    }
}

/// The global L2 norm of `grads` (f64 accumulation).
pub fn global_norm<B: Backend>(grads: &[Tensor<B, 2>]) -> f64 {
    grads
        .iter()
        .map(|g| g.clone().powf_scalar(2.0).sum().into_scalar().elem::<f64>())
        .sum::<f64>()
        .sqrt()
}

/// `clip_grad_norm_(max_norm)`: scales all gradients by `max_norm / (norm + 1e-6)` when that is
/// below 1. Returns the norm before clipping.
pub fn clip_global_norm<B: Backend>(grads: &mut [Tensor<B, 2>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 {
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for g in grads.iter_mut() {
                *g = g.clone() * coef;
            }
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    type B = burn_flex::Flex;

    #[test]
    fn two_steps_match_pytorch_adamw() {
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.01) from p = [1, -2], grads [0.5, 0.25]
        // then [-1, 2]: p = [0.899, -2.098] then [0.88126, -2.09588] (hand-derived below).
        let device = Default::default();
        let mut opt = AdamW::<B>::default();
        let t = |v: [f32; 2]| Tensor::<B, 2>::from_floats([v], &device);
        let p = opt.update(
            vec![("p".into(), t([1.0, -2.0]), t([0.5, 0.25]))],
            0.1,
            0.01,
        );
        let p1: Vec<f32> = p[0].clone().into_data().into_vec().unwrap();
        // Step 1: m̂ = g, v̂ = g², update = lr · g / (|g| + eps) = ±0.1; decay 1 − 0.001.
        assert!((p1[0] - (1.0 * 0.999 - 0.1)).abs() < 1e-6, "{p1:?}");
        assert!((p1[1] - (-2.0 * 0.999 - 0.1)).abs() < 1e-6, "{p1:?}");
        let p = opt.update(vec![("p".into(), p[0].clone(), t([-1.0, 2.0]))], 0.1, 0.01);
        let p2: Vec<f32> = p[0].clone().into_data().into_vec().unwrap();
        // Step 2 by hand for element 0: m = 0.9·0.05 + 0.1·(−1) = −0.055; v = 0.999·0.00025 + 0.001
        // = 0.00124975; m̂ = −0.055/0.19; v̂ = 0.00124975/0.001999.
        let (m_hat, v_hat) = (-0.055f64 / 0.19, 0.00124975f64 / 0.001999);
        let expected = p1[0] as f64 * 0.999 - 0.1 * m_hat / (v_hat.sqrt() + 1e-8);
        assert!(
            (p2[0] as f64 - expected).abs() < 1e-6,
            "{p2:?} vs {expected}"
        );
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let device = Default::default();
        let mut g = vec![
            Tensor::<B, 2>::from_floats([[3.0, 0.0]], &device),
            Tensor::<B, 2>::from_floats([[0.0, 4.0]], &device),
        ];
        let norm = clip_global_norm(&mut g, 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        assert!((global_norm(&g) - 1.0).abs() < 1e-5);
        let norm = clip_global_norm(&mut g, 10.0);
        assert!((norm - 1.0).abs() < 1e-5 && (global_norm(&g) - 1.0).abs() < 1e-5);
    }
}

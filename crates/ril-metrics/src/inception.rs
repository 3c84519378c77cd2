//! pytorch-fid's InceptionV3 (the 'pt_inception-2015-12-05' FID network): torchvision's
//! Inception3 stem with the FID-specific blocks (average pools with count_include_pad = False,
//! the last block's max pool), BatchNorm eps 1e-3, bilinear resize to 299 and 2x − 1 scaling,
//! 2048-d pool features. Field names are the torchvision checkpoint keys.
// Fields are named as the checkpoint's keys (`Conv2d_1a_3x3`, `Mixed_5b`, ...).
#![allow(non_snake_case)]

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{adaptive_avg_pool2d, avg_pool2d, max_pool2d};
use sd_model::nn::per_channel;

/// BatchNorm in inference form with PyTorch's parameter names (eps 1e-3).
#[derive(Module, Debug)]
pub struct FidBatchNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub running_mean: Param<Tensor<B, 1>>,
    pub running_var: Param<Tensor<B, 1>>,
}

/// torchvision `BasicConv2d`: conv (no bias), BatchNorm, ReLU.
#[derive(Module, Debug)]
pub struct BasicConv2d<B: Backend> {
    pub conv: Conv2d<B>,
    pub bn: FidBatchNorm<B>,
}

impl<B: Backend> BasicConv2d<B> {
    fn new(
        i: usize,
        o: usize,
        k: [usize; 2],
        stride: usize,
        pad: [usize; 2],
        device: &B::Device,
    ) -> Self {
        let p = |n: usize| Param::from_tensor(Tensor::zeros([n], device));
        Self {
            conv: Conv2dConfig::new([i, o], k)
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(pad[0], pad[1], pad[0], pad[1]))
                .with_bias(false)
                .init(device),
            bn: FidBatchNorm {
                weight: p(o),
                bias: p(o),
                running_mean: p(o),
                running_var: p(o),
            },
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv.forward(x);
        let bn = &self.bn;
        // PyTorch's inference path: x · α + β with α = w / √(var + eps), β = b − mean · α.
        let alpha = bn.weight.val() / (bn.running_var.val() + 1e-3).sqrt();
        let beta = bn.bias.val() - bn.running_mean.val() * alpha.clone();
        relu(per_channel(x, [alpha, beta], |x, [a, b]| x * a + b))
    }
}

fn conv<B: Backend>(i: usize, o: usize, k: usize, device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(i, o, [k, k], 1, [k / 2, k / 2], device)
}

fn conv_s<B: Backend>(i: usize, o: usize, k: [usize; 2], device: &B::Device) -> BasicConv2d<B> {
    BasicConv2d::new(i, o, k, 1, [k[0] / 2, k[1] / 2], device)
}

fn avg3<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    avg_pool2d(x, [3, 3], [1, 1], [1, 1], false, false)
}

/// `FIDInceptionA`.
#[derive(Module, Debug)]
pub struct InceptionA<B: Backend> {
    pub branch1x1: BasicConv2d<B>,
    pub branch5x5_1: BasicConv2d<B>,
    pub branch5x5_2: BasicConv2d<B>,
    pub branch3x3dbl_1: BasicConv2d<B>,
    pub branch3x3dbl_2: BasicConv2d<B>,
    pub branch3x3dbl_3: BasicConv2d<B>,
    pub branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionA<B> {
    fn new(i: usize, pool: usize, d: &B::Device) -> Self {
        Self {
            branch1x1: conv(i, 64, 1, d),
            branch5x5_1: conv(i, 48, 1, d),
            branch5x5_2: conv(48, 64, 5, d),
            branch3x3dbl_1: conv(i, 64, 1, d),
            branch3x3dbl_2: conv(64, 96, 3, d),
            branch3x3dbl_3: conv(96, 96, 3, d),
            branch_pool: conv(i, pool, 1, d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b5 = self
            .branch5x5_2
            .forward(self.branch5x5_1.forward(x.clone()));
        let b3 = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        let bp = self.branch_pool.forward(avg3(x));
        Tensor::cat(vec![b1, b5, b3, bp], 1)
    }
}

/// torchvision `InceptionB`.
#[derive(Module, Debug)]
pub struct InceptionB<B: Backend> {
    pub branch3x3: BasicConv2d<B>,
    pub branch3x3dbl_1: BasicConv2d<B>,
    pub branch3x3dbl_2: BasicConv2d<B>,
    pub branch3x3dbl_3: BasicConv2d<B>,
}

impl<B: Backend> InceptionB<B> {
    fn new(i: usize, d: &B::Device) -> Self {
        Self {
            branch3x3: BasicConv2d::new(i, 384, [3, 3], 2, [0, 0], d),
            branch3x3dbl_1: conv(i, 64, 1, d),
            branch3x3dbl_2: conv(64, 96, 3, d),
            branch3x3dbl_3: BasicConv2d::new(96, 96, [3, 3], 2, [0, 0], d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self.branch3x3.forward(x.clone());
        let bd = self.branch3x3dbl_3.forward(
            self.branch3x3dbl_2
                .forward(self.branch3x3dbl_1.forward(x.clone())),
        );
        let bp = max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false);
        Tensor::cat(vec![b3, bd, bp], 1)
    }
}

/// `FIDInceptionC`.
#[derive(Module, Debug)]
pub struct InceptionC<B: Backend> {
    pub branch1x1: BasicConv2d<B>,
    pub branch7x7_1: BasicConv2d<B>,
    pub branch7x7_2: BasicConv2d<B>,
    pub branch7x7_3: BasicConv2d<B>,
    pub branch7x7dbl_1: BasicConv2d<B>,
    pub branch7x7dbl_2: BasicConv2d<B>,
    pub branch7x7dbl_3: BasicConv2d<B>,
    pub branch7x7dbl_4: BasicConv2d<B>,
    pub branch7x7dbl_5: BasicConv2d<B>,
    pub branch_pool: BasicConv2d<B>,
}

impl<B: Backend> InceptionC<B> {
    fn new(i: usize, c7: usize, d: &B::Device) -> Self {
        Self {
            branch1x1: conv(i, 192, 1, d),
            branch7x7_1: conv(i, c7, 1, d),
            branch7x7_2: conv_s(c7, c7, [1, 7], d),
            branch7x7_3: conv_s(c7, 192, [7, 1], d),
            branch7x7dbl_1: conv(i, c7, 1, d),
            branch7x7dbl_2: conv_s(c7, c7, [7, 1], d),
            branch7x7dbl_3: conv_s(c7, c7, [1, 7], d),
            branch7x7dbl_4: conv_s(c7, c7, [7, 1], d),
            branch7x7dbl_5: conv_s(c7, 192, [1, 7], d),
            branch_pool: conv(i, 192, 1, d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b7 = self.branch7x7_3.forward(
            self.branch7x7_2
                .forward(self.branch7x7_1.forward(x.clone())),
        );
        let mut bd = self.branch7x7dbl_1.forward(x.clone());
        for l in [
            &self.branch7x7dbl_2,
            &self.branch7x7dbl_3,
            &self.branch7x7dbl_4,
            &self.branch7x7dbl_5,
        ] {
            bd = l.forward(bd);
        }
        let bp = self.branch_pool.forward(avg3(x));
        Tensor::cat(vec![b1, b7, bd, bp], 1)
    }
}

/// torchvision `InceptionD`.
#[derive(Module, Debug)]
pub struct InceptionD<B: Backend> {
    pub branch3x3_1: BasicConv2d<B>,
    pub branch3x3_2: BasicConv2d<B>,
    pub branch7x7x3_1: BasicConv2d<B>,
    pub branch7x7x3_2: BasicConv2d<B>,
    pub branch7x7x3_3: BasicConv2d<B>,
    pub branch7x7x3_4: BasicConv2d<B>,
}

impl<B: Backend> InceptionD<B> {
    fn new(i: usize, d: &B::Device) -> Self {
        Self {
            branch3x3_1: conv(i, 192, 1, d),
            branch3x3_2: BasicConv2d::new(192, 320, [3, 3], 2, [0, 0], d),
            branch7x7x3_1: conv(i, 192, 1, d),
            branch7x7x3_2: conv_s(192, 192, [1, 7], d),
            branch7x7x3_3: conv_s(192, 192, [7, 1], d),
            branch7x7x3_4: BasicConv2d::new(192, 192, [3, 3], 2, [0, 0], d),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b3 = self
            .branch3x3_2
            .forward(self.branch3x3_1.forward(x.clone()));
        let mut b7 = self.branch7x7x3_1.forward(x.clone());
        for l in [
            &self.branch7x7x3_2,
            &self.branch7x7x3_3,
            &self.branch7x7x3_4,
        ] {
            b7 = l.forward(b7);
        }
        let bp = max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false);
        Tensor::cat(vec![b3, b7, bp], 1)
    }
}

/// `FIDInceptionE_1` (average pool) / `FIDInceptionE_2` (max pool).
#[derive(Module, Debug)]
pub struct InceptionE<B: Backend> {
    pub branch1x1: BasicConv2d<B>,
    pub branch3x3_1: BasicConv2d<B>,
    pub branch3x3_2a: BasicConv2d<B>,
    pub branch3x3_2b: BasicConv2d<B>,
    pub branch3x3dbl_1: BasicConv2d<B>,
    pub branch3x3dbl_2: BasicConv2d<B>,
    pub branch3x3dbl_3a: BasicConv2d<B>,
    pub branch3x3dbl_3b: BasicConv2d<B>,
    pub branch_pool: BasicConv2d<B>,
    /// Max pool before `branch_pool` (the last block), else an average pool.
    pub max_pool: bool,
}

impl<B: Backend> InceptionE<B> {
    fn new(i: usize, max_pool: bool, d: &B::Device) -> Self {
        Self {
            branch1x1: conv(i, 320, 1, d),
            branch3x3_1: conv(i, 384, 1, d),
            branch3x3_2a: conv_s(384, 384, [1, 3], d),
            branch3x3_2b: conv_s(384, 384, [3, 1], d),
            branch3x3dbl_1: conv(i, 448, 1, d),
            branch3x3dbl_2: conv(448, 384, 3, d),
            branch3x3dbl_3a: conv_s(384, 384, [1, 3], d),
            branch3x3dbl_3b: conv_s(384, 384, [3, 1], d),
            branch_pool: conv(i, 192, 1, d),
            max_pool,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let b1 = self.branch1x1.forward(x.clone());
        let b3 = self.branch3x3_1.forward(x.clone());
        let b3 = Tensor::cat(
            vec![
                self.branch3x3_2a.forward(b3.clone()),
                self.branch3x3_2b.forward(b3),
            ],
            1,
        );
        let bd = self
            .branch3x3dbl_2
            .forward(self.branch3x3dbl_1.forward(x.clone()));
        let bd = Tensor::cat(
            vec![
                self.branch3x3dbl_3a.forward(bd.clone()),
                self.branch3x3dbl_3b.forward(bd),
            ],
            1,
        );
        let pooled = if self.max_pool {
            max_pool2d(x, [3, 3], [1, 1], [1, 1], [1, 1], false)
        } else {
            avg3(x)
        };
        Tensor::cat(vec![b1, b3, bd, self.branch_pool.forward(pooled)], 1)
    }
}

/// pytorch-fid's `InceptionV3` up to the 2048-d pool features.
#[derive(Module, Debug)]
pub struct InceptionV3<B: Backend> {
    pub Conv2d_1a_3x3: BasicConv2d<B>,
    pub Conv2d_2a_3x3: BasicConv2d<B>,
    pub Conv2d_2b_3x3: BasicConv2d<B>,
    pub Conv2d_3b_1x1: BasicConv2d<B>,
    pub Conv2d_4a_3x3: BasicConv2d<B>,
    pub Mixed_5b: InceptionA<B>,
    pub Mixed_5c: InceptionA<B>,
    pub Mixed_5d: InceptionA<B>,
    pub Mixed_6a: InceptionB<B>,
    pub Mixed_6b: InceptionC<B>,
    pub Mixed_6c: InceptionC<B>,
    pub Mixed_6d: InceptionC<B>,
    pub Mixed_6e: InceptionC<B>,
    pub Mixed_7a: InceptionD<B>,
    pub Mixed_7b: InceptionE<B>,
    pub Mixed_7c: InceptionE<B>,
}

impl<B: Backend> InceptionV3<B> {
    /// The network with zero (lazy) weights; load the FID weights into it.
    pub fn new(d: &B::Device) -> Self {
        Self {
            Conv2d_1a_3x3: BasicConv2d::new(3, 32, [3, 3], 2, [0, 0], d),
            Conv2d_2a_3x3: BasicConv2d::new(32, 32, [3, 3], 1, [0, 0], d),
            Conv2d_2b_3x3: conv(32, 64, 3, d),
            Conv2d_3b_1x1: conv(64, 80, 1, d),
            Conv2d_4a_3x3: BasicConv2d::new(80, 192, [3, 3], 1, [0, 0], d),
            Mixed_5b: InceptionA::new(192, 32, d),
            Mixed_5c: InceptionA::new(256, 64, d),
            Mixed_5d: InceptionA::new(288, 64, d),
            Mixed_6a: InceptionB::new(288, d),
            Mixed_6b: InceptionC::new(768, 128, d),
            Mixed_6c: InceptionC::new(768, 160, d),
            Mixed_6d: InceptionC::new(768, 160, d),
            Mixed_6e: InceptionC::new(768, 192, d),
            Mixed_7a: InceptionD::new(768, d),
            Mixed_7b: InceptionE::new(1280, false, d),
            Mixed_7c: InceptionE::new(2048, true, d),
        }
    }

    /// Images [B, 3, H, W] in [0, 1] → pool features [B, 2048]: bilinear resize to 299
    /// (align_corners false, no antialias), 2x − 1, the network, global average pool.
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let [b, _, h, w] = images.dims();
        let x = if [h, w] == [299, 299] {
            images
        } else {
            crate::resize::bilinear(images, [299, 299])
        };
        let x = x * 2.0 - 1.0;
        let x = self
            .Conv2d_2b_3x3
            .forward(self.Conv2d_2a_3x3.forward(self.Conv2d_1a_3x3.forward(x)));
        let x = max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false);
        let x = self.Conv2d_4a_3x3.forward(self.Conv2d_3b_1x1.forward(x));
        let x = max_pool2d(x, [3, 3], [2, 2], [0, 0], [1, 1], false);
        let x = self
            .Mixed_5d
            .forward(self.Mixed_5c.forward(self.Mixed_5b.forward(x)));
        let x = self.Mixed_6a.forward(x);
        let x = self.Mixed_6e.forward(
            self.Mixed_6d
                .forward(self.Mixed_6c.forward(self.Mixed_6b.forward(x))),
        );
        let x = self
            .Mixed_7c
            .forward(self.Mixed_7b.forward(self.Mixed_7a.forward(x)));
        adaptive_avg_pool2d(x, [1, 1]).reshape([b, 2048])
    }
}

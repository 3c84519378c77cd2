//! The backends ril runs on: Burn's flex CPU backend by default, CUDA behind the `cuda` feature.

/// The CPU backend (burn-flex, f32).
pub type Cpu = burn_flex::Flex;
/// The CPU backend with autodiff.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The CUDA backend (burn-cuda, f32).
#[cfg(feature = "cuda")]
pub type Cuda = burn_cuda::Cuda;
/// The CUDA backend with autodiff.
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<Cuda>;

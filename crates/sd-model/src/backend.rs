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

/// The CUDA backend with every float tensor in bf16 (benchmarks; statistics stay bf16 too).
#[cfg(feature = "cuda")]
pub type CudaBf16 = burn_cuda::Cuda<burn::tensor::bf16>;
/// The bf16 CUDA backend with autodiff.
#[cfg(feature = "cuda")]
pub type CudaBf16Autodiff = burn::backend::Autodiff<CudaBf16>;

//! The backends ril runs on: Burn's flex CPU backend by default, burn-cuda behind the `cuda`
//! feature, and Burn's LibTorch backend (burn-tch, CPU or CUDA) behind the `tch` feature.

use serde::{Deserialize, Serialize};

/// Which backend a command runs on (`--backend`, a config's `model.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// Burn's flex CPU backend (f32), always built.
    #[default]
    Cpu,
    /// burn-cuda, in a build with `--features cuda` (or `cuda-base`).
    Cuda,
    /// LibTorch on the CPU (burn-tch), in a build with `--features tch`.
    TchCpu,
    /// LibTorch on CUDA device 0 (burn-tch: cuDNN, cuBLAS, fused SDPA), `--features tch`.
    TchCuda,
}

impl BackendKind {
    /// Every backend, in the order `--help` lists them.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Cpu,
        BackendKind::Cuda,
        BackendKind::TchCpu,
        BackendKind::TchCuda,
    ];

    /// Whether it computes on a GPU (cuda, tch-cuda).
    pub fn on_gpu(self) -> bool {
        matches!(self, BackendKind::Cuda | BackendKind::TchCuda)
    }

    /// The name on the command line and in configs.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
            BackendKind::TchCpu => "tch-cpu",
            BackendKind::TchCuda => "tch-cuda",
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        from_name(&Self::ALL, Self::name, "backend", s)
    }
}

/// The float type of a run's tensors (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    /// bfloat16 (GPU backends only).
    Bf16,
}

impl Dtype {
    pub const ALL: [Dtype; 2] = [Dtype::F32, Dtype::Bf16];

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        from_name(&Self::ALL, Self::name, "dtype", s)
    }
}

/// The member of `all` called `s`, or an error listing the names.
fn from_name<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    what: &str,
    s: &str,
) -> Result<T, String> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let names: Vec<&str> = all.iter().map(|&v| name(v)).collect();
        format!(
            "unknown {what} {s:?} (expected one of: {})",
            names.join(", ")
        )
    })
}

/// The LibTorch backend (burn-tch, f32) on the device of [`tch_device`].
#[cfg(feature = "tch")]
pub type Tch = burn_tch::LibTorch<f32>;
/// The LibTorch backend with autodiff.
#[cfg(feature = "tch")]
pub type TchAutodiff = burn::backend::Autodiff<Tch>;
/// The LibTorch backend with every float tensor in bf16.
#[cfg(feature = "tch")]
pub type TchBf16 = burn_tch::LibTorch<burn::tensor::bf16>;
/// The bf16 LibTorch backend with autodiff.
#[cfg(feature = "tch")]
pub type TchBf16Autodiff = burn::backend::Autodiff<TchBf16>;

/// The LibTorch device of `kind` (`tch-cpu` or `tch-cuda`); CUDA must be available to torch.
#[cfg(feature = "tch")]
pub fn tch_device(kind: BackendKind) -> anyhow::Result<burn_tch::LibTorchDevice> {
    match kind {
        BackendKind::TchCpu => Ok(burn_tch::LibTorchDevice::Cpu),
        BackendKind::TchCuda => {
            if !tch::Cuda::is_available() {
                anyhow::bail!(
                    "--backend tch-cuda: libtorch sees no CUDA device (is this torch a CUDA build, \
                     and is the NVIDIA driver loaded?)"
                );
            }
            Ok(burn_tch::LibTorchDevice::Cuda(0))
        }
        other => anyhow::bail!("{other} is not a LibTorch backend"),
    }
}

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

/// The CUDA device, with cubecl's on-disk kernel cache turned on. Burn's CUDA backend compiles
/// each kernel with NVRTC at first use (about 0.5 s per kernel on an H200, and its autotuner
/// compiles several candidates per matmul shape), so without the cache every new process spends
/// minutes compiling. A `cubecl.toml` (or `burn.toml` section) in the working directory or a
/// parent that names a compilation cache wins; otherwise kernels are kept in
/// `$RIL_KERNEL_CACHE`, else `$XDG_CACHE_HOME/ril/cubecl`, else `~/.cache/ril/cubecl`. Call it
/// before any other CUDA work (a configuration cubecl already read is left as it is).
///
/// Fails with a clear message when the CUDA driver (`libcuda.so`) or NVRTC (`libnvrtc.so`)
/// cannot be loaded, where burn-cuda would panic on its device thread.
#[cfg(feature = "cuda")]
pub fn cuda_device() -> anyhow::Result<burn_cuda::CudaDevice> {
    for (what, names) in [
        ("the CUDA driver", &["libcuda.so.1", "libcuda.so"][..]),
        (
            "NVRTC (CUDA's runtime compiler)",
            &["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"][..],
        ),
    ] {
        // SAFETY: loading these libraries runs only their initialisers, as cudarc's own loading
        // (moments later) does; the handle is dropped at once.
        if !names
            .iter()
            .any(|n| unsafe { libloading::Library::new(*n) }.is_ok())
        {
            anyhow::bail!(
                "--backend cuda: {what} could not be loaded (looked for {}; LD_LIBRARY_PATH={}); \
                 install the NVIDIA driver and CUDA toolkit or put their lib folders on \
                 LD_LIBRARY_PATH (never the toolkit's lib/stubs)",
                names.join(", "),
                std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
            );
        }
    }
    configure_kernel_cache();
    Ok(burn_cuda::CudaDevice::default())
}

/// Turns on cubecl's on-disk kernel cache (see `cuda_device`), once per process.
#[cfg(feature = "cuda")]
fn configure_kernel_cache() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
        let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
        if config.compilation.cache.is_none()
            && let Some(dir) = kernel_cache_dir()
            && std::fs::create_dir_all(&dir).is_ok()
        {
            config.compilation.cache = Some(CacheConfig::File(dir));
        }
        let mut state = CubeClRuntimeConfig::storage().lock();
        if state.is_none() {
            *state = Some(std::sync::Arc::new(config));
        }
    });
}

/// Where `cuda_device` keeps compiled kernels when no cubecl.toml says otherwise.
#[cfg(feature = "cuda")]
fn kernel_cache_dir() -> Option<std::path::PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("RIL_KERNEL_CACHE") {
        return Some(dir.into());
    }
    let base = var("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| var("HOME").map(|h| std::path::Path::new(&h).join(".cache")))?;
    Some(base.join("ril").join("cubecl"))
}

#[cfg(all(test, feature = "cuda"))]
mod tests {
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};

    /// Needs no GPU: only cubecl's configuration is read. Not run by CI (CUDA is only compiled
    /// there): `cargo test -p sd-model --features cuda --lib backend`.
    #[test]
    fn cuda_device_turns_on_the_kernel_cache() {
        let dir = std::env::temp_dir().join(format!("ril-kernel-cache-{}", std::process::id()));
        // SAFETY: the only test of this binary that touches the environment or cubecl's config.
        unsafe { std::env::set_var("RIL_KERNEL_CACHE", &dir) };
        // cuda_device() needs a driver to get this far; the configuration alone does not.
        super::configure_kernel_cache();
        match &CubeClRuntimeConfig::get().compilation.cache {
            Some(CacheConfig::File(path)) => assert_eq!(path, &dir),
            other => panic!("kernel cache not set: {other:?}"),
        }
        assert!(dir.is_dir());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! One dispatch from a [`BackendKind`](sd_model::backend::BackendKind) to a backend type and
//! its device, used by every command that runs a model, with a clear error for a backend this
//! build lacks.

/// Evaluates `$body` with `$B` the backend type of `$kind` and `$device` its device:
/// `on_backend!(kind, inner, |B, device| f::<B>(&device))` for sampling and scoring,
/// `on_backend!(kind, autodiff, |B, device| ...)` for training and benches. `$body` must evaluate
/// to an `anyhow::Result`.
#[macro_export]
macro_rules! on_backend {
    ($kind:expr, inner, |$B:ident, $device:ident| $body:expr) => {
        $crate::on_backend!(@arms $kind, |$B, $device| $body,
            Cpu, Cuda, Tch)
    };
    ($kind:expr, autodiff, |$B:ident, $device:ident| $body:expr) => {
        $crate::on_backend!(@arms $kind, |$B, $device| $body,
            CpuAutodiff, CudaAutodiff, TchAutodiff)
    };
    (@arms $kind:expr, |$B:ident, $device:ident| $body:expr, $cpu:ident, $cuda:ident, $tch:ident) => {{
        use $crate::sd_model::backend::BackendKind;
        match $kind {
            BackendKind::Cpu => {
                type $B = $crate::sd_model::backend::$cpu;
                let $device = Default::default();
                $body
            }
            BackendKind::Cuda => {
                #[cfg(feature = "cuda-base")]
                {
                    type $B = $crate::sd_model::backend::$cuda;
                    let $device = $crate::sd_model::backend::cuda_device()?;
                    $body
                }
                #[cfg(not(feature = "cuda-base"))]
                {
                    Err(anyhow::anyhow!(
                        "backend cuda: this ril was built without CUDA (rebuild with `--features cuda`)"
                    ))
                }
            }
            kind @ (BackendKind::TchCpu | BackendKind::TchCuda) => {
                #[cfg(feature = "tch")]
                {
                    type $B = $crate::sd_model::backend::$tch;
                    let $device = $crate::sd_model::backend::tch_device(kind)?;
                    $body
                }
                #[cfg(not(feature = "tch"))]
                {
                    Err(anyhow::anyhow!(
                        "backend {kind}: this ril was built without LibTorch (rebuild with `--features tch`; see README, GPU)"
                    ))
                }
            }
        }
    }};
}

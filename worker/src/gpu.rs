//! Where synthesis runs (`--device cpu|cuda[:N]`) and, for a GPU, its
//! inventory and health through the CUDA driver API (`cudarc`, loaded at
//! run time: the worker builds and runs without CUDA; only `--device cuda`
//! needs the driver, and asks for it once, at start).
//!
//! The CUDA path is behind the `cuda` feature. Without it, or without a
//! driver, `--device cuda` refuses to start with one line saying why; it
//! never falls back to the CPU.

use std::fmt;
use std::str::FromStr;

/// Where the voices' ONNX Runtime sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// ONNX Runtime's CPU provider.
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA provider on this device ordinal.
    Cuda(u32),
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("{s:?} is not cpu, cuda or cuda:N")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// One GPU as the driver describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GpuInfo {
    /// Device ordinal.
    pub index: u32,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// `major.minor`.
    pub compute_capability: String,
    /// Bytes of device memory.
    pub total_memory_bytes: u64,
    /// Bytes free when last asked.
    pub free_memory_bytes: u64,
    /// The driver's CUDA version, e.g. `13.0`.
    pub driver_version: String,
}

/// Why the GPU cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The worker was built without the `cuda` feature.
    #[error(
        "--device {0}: this build has no CUDA support (build the worker with `--features cuda`)"
    )]
    NotBuilt(Device),
    /// `libcuda.so` cannot be loaded: no NVIDIA driver.
    #[error("--device {0}: no NVIDIA driver (libcuda.so) on this machine")]
    NoDriver(Device),
    /// The ordinal is past the devices present.
    #[error("--device {device}: the machine has {count} CUDA device(s)")]
    NoSuchDevice {
        /// The device asked for.
        device: Device,
        /// Devices present.
        count: u32,
    },
    /// The driver answered with an error.
    #[error("CUDA driver: {0}")]
    Driver(String),
}

/// Every GPU, or why there is none to use for `device`.
#[cfg(not(feature = "cuda"))]
pub fn inventory(device: Device) -> Result<Vec<GpuInfo>, GpuError> {
    Err(GpuError::NotBuilt(device))
}

/// Every GPU, or why there is none to use for `device`.
#[cfg(feature = "cuda")]
pub fn inventory(device: Device) -> Result<Vec<GpuInfo>, GpuError> {
    cuda::inventory(device)
}

/// Checks that `device` can be used: `Ok(vec![])` for the CPU; for a GPU
/// the inventory, or the one-line reason it cannot be used.
pub fn open(device: Device) -> Result<Vec<GpuInfo>, GpuError> {
    let Device::Cuda(n) = device else {
        return Ok(Vec::new());
    };
    let gpus = inventory(device)?;
    if !gpus.iter().any(|g| g.index == n) {
        return Err(GpuError::NoSuchDevice {
            device,
            count: gpus.len() as u32,
        });
    }
    Ok(gpus)
}

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::{Arc, OnceLock};

    use cudarc::driver::{CudaContext, result, sys};

    use super::{Device, GpuError, GpuInfo};

    fn driver_present() -> bool {
        // SAFETY: loads libcuda with dlopen and looks its symbols up; it
        // touches no CUDA state (cudarc panics on the first call when the
        // library is absent, which this check exists to avoid).
        #[allow(unsafe_code)]
        unsafe {
            sys::is_culib_present()
        }
    }

    fn err(e: impl std::fmt::Debug) -> GpuError {
        GpuError::Driver(format!("{e:?}"))
    }

    /// One context per device, made on first use (the primary context,
    /// which ONNX Runtime's CUDA provider shares).
    fn contexts(count: u32) -> Result<&'static Vec<Arc<CudaContext>>, GpuError> {
        static CONTEXTS: OnceLock<Vec<Arc<CudaContext>>> = OnceLock::new();
        if let Some(c) = CONTEXTS.get() {
            return Ok(c);
        }
        let made = (0..count)
            .map(|i| CudaContext::new(i as usize).map_err(err))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CONTEXTS.get_or_init(|| made))
    }

    pub(super) fn inventory(device: Device) -> Result<Vec<GpuInfo>, GpuError> {
        if !driver_present() {
            return Err(GpuError::NoDriver(device));
        }
        result::init().map_err(err)?;
        let count = result::device::get_count().map_err(err)?.max(0) as u32;
        let mut version = 0;
        // SAFETY: `version` is a valid out-pointer for the call.
        #[allow(unsafe_code)]
        let driver = unsafe { sys::cuDriverGetVersion(&mut version) };
        let driver_version = match driver {
            sys::CUresult::CUDA_SUCCESS => format!("{}.{}", version / 1000, version % 1000 / 10),
            other => format!("unknown ({other:?})"),
        };
        contexts(count)?
            .iter()
            .enumerate()
            .map(|(i, ctx)| {
                let (major, minor) = ctx.compute_capability().map_err(err)?;
                let (free, total) = ctx.mem_get_info().map_err(err)?;
                Ok(GpuInfo {
                    index: i as u32,
                    name: ctx.name().map_err(err)?,
                    compute_capability: format!("{major}.{minor}"),
                    total_memory_bytes: total as u64,
                    free_memory_bytes: free as u64,
                    driver_version: driver_version.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print() {
        assert_eq!("cpu".parse::<Device>(), Ok(Device::Cpu));
        assert_eq!("cuda".parse::<Device>(), Ok(Device::Cuda(0)));
        assert_eq!("cuda:3".parse::<Device>(), Ok(Device::Cuda(3)));
        assert!("gpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
    }

    #[test]
    fn the_cpu_needs_no_gpu() {
        assert_eq!(open(Device::Cpu).expect("cpu").len(), 0);
    }

    /// On a machine without an NVIDIA driver (CI, development machines),
    /// or in a build without CUDA, a GPU is refused with a reason, never a
    /// panic.
    #[test]
    fn a_gpu_that_is_not_there_is_refused_with_a_reason() {
        match open(Device::Cuda(0)) {
            Err(GpuError::NotBuilt(_) | GpuError::NoDriver(_)) => {}
            Ok(gpus) => assert!(!gpus.is_empty(), "a GPU machine lists its GPU"),
            Err(e) => panic!("unexpected: {e}"),
        }
        assert!(matches!(
            open(Device::Cuda(999)),
            Err(GpuError::NotBuilt(_) | GpuError::NoDriver(_) | GpuError::NoSuchDevice { .. })
        ));
    }
}

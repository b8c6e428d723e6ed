//! Thin wrappers over the CUDA driver and NVRTC, loaded at run time: whether they are present,
//! what the device is, device allocations freed on drop, and compiling kernel source to PTX.

use cudarc::driver::{CudaContext, CudaStream, result, sys};
use serde::{Deserialize, Serialize};

use super::GpuError;

/// Whether the CUDA driver and NVRTC libraries can be loaded on this machine (a device may
/// still be missing: [`super::GpuEngine::new`] says so).
pub fn cuda_present() -> bool {
    // SAFETY: only tries to dlopen the libraries.
    unsafe { sys::is_culib_present() && cudarc::nvrtc::sys::is_culib_present() }
}

/// What the device is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    /// Driver API version (e.g. 13000 for CUDA 13.0).
    pub driver_version: i32,
    pub nvrtc_version: (i32, i32),
    pub total_mem: u64,
    pub free_mem: u64,
    pub sms: u32,
    pub clock_khz: u32,
    pub mem_clock_khz: u32,
    pub mem_bus_bits: u32,
    pub l2_bytes: u64,
    /// The largest `CU_LIMIT_PERSISTING_L2_CACHE_SIZE` the device takes (0: unsupported).
    pub max_persisting_l2: u64,
    pub max_window_bytes: u64,
}

impl GpuInfo {
    /// One line for logs and reports.
    pub fn summary(&self) -> String {
        format!(
            "{} (sm_{}{}, {} SMs, {:.1} GiB, L2 {} MiB, persisting L2 up to {:.1} MiB, driver {}.{}, NVRTC {}.{})",
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.sms,
            self.total_mem as f64 / (1u64 << 30) as f64,
            self.l2_bytes >> 20,
            self.max_persisting_l2 as f64 / (1u64 << 20) as f64,
            self.driver_version / 1000,
            (self.driver_version % 1000) / 10,
            self.nvrtc_version.0,
            self.nvrtc_version.1
        )
    }
}

/// A device allocation, freed on drop.
pub(super) struct DevBuf {
    pub(super) ptr: sys::CUdeviceptr,
    pub(super) len: usize,
}

impl DevBuf {
    pub(super) fn new(len: usize) -> Result<DevBuf, GpuError> {
        // SAFETY: a plain device allocation; the context is current on this thread.
        let ptr = unsafe { result::malloc_sync(len.max(256)) }
            .map_err(|e| GpuError::Deploy(format!("allocating {len} bytes of device memory: {e}")))?;
        Ok(DevBuf { ptr, len })
    }

    /// Copies `data` in, ordered on `stream` (the engine's, which does not synchronise with the
    /// legacy default stream), and waits for it: `data` may be dropped after.
    pub(super) fn upload<T>(&self, data: &[T], stream: &CudaStream) -> Result<(), GpuError> {
        assert!(std::mem::size_of_val(data) <= self.len.max(256));
        // SAFETY: the buffer holds at least size_of_val(data) bytes; `data` outlives the copy
        // because the stream is synchronised before returning.
        unsafe { result::memcpy_htod_async(self.ptr, data, stream.cu_stream()) }?;
        stream.synchronize()?;
        Ok(())
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_sync; nothing uses it any more.
        unsafe {
            let _ = result::free_sync(self.ptr);
        }
    }
}

pub(super) fn attr(ctx: &CudaContext, a: sys::CUdevice_attribute) -> Result<i32, GpuError> {
    Ok(ctx.attribute(a)?)
}

/// Compiles the kernel source for `arch` (e.g. `compute_90`) to PTX with NVRTC. Needs only
/// NVRTC, no device: tests and `embtune gpu-bench --compile-only` use it to check the source.
pub fn compile(src: &str, arch: &str) -> Result<String, GpuError> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(GpuError::Unavailable("libnvrtc cannot be loaded".into()));
    }
    let opts = cudarc::nvrtc::CompileOptions {
        options: vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()],
        name: Some("embtune_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => GpuError::Compile(log.to_string_lossy().into_owned()),
        e => GpuError::Compile(format!("{e:?}")),
    })?;
    Ok(ptx.to_src())
}

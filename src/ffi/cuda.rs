//! C functions of the CUDA path. They exist in every build so one header serves all: without the
//! `cuda` feature (or without a driver or device) they return `SB_STATUS_NO_DEVICE`.

use core::ffi::c_char;
use std::boxed::Box;

#[cfg(feature = "cuda")]
use super::write_out;
use super::{guard, obj_ref};
use crate::error::Status;

/// One GPU with the library's kernels loaded (`sb_cuda_device_open`). Thread-safe: share it freely; it
/// must outlive every object created from it.
pub struct sb_cuda_device {
    #[cfg(feature = "cuda")]
    pub(crate) gpu: crate::cuda::Gpu,
    #[cfg(not(feature = "cuda"))]
    _none: core::convert::Infallible,
}

/// Opens GPU `ordinal` (0 = the first): initialises the driver, retains the device's primary context and
/// loads the kernels. `SB_STATUS_NO_DEVICE` when the library was built without CUDA, no driver is
/// installed, the driver is older than CUDA 13.0, or there is no such device. Writes `*out` only on
/// success; free with `sb_cuda_device_free`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_device_open(
    ordinal: i32,
    out: *mut *mut sb_cuda_device,
) -> Status {
    guard(|| {
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        if ordinal < 0 {
            return Err(Status::InvalidArgument);
        }
        #[cfg(feature = "cuda")]
        {
            let gpu = crate::cuda::Gpu::open(ordinal as usize)?;
            // SAFETY: `out` checked non-NULL.
            unsafe { write_out(out, Box::into_raw(Box::new(sb_cuda_device { gpu }))) }
        }
        #[cfg(not(feature = "cuda"))]
        {
            Err(Status::NoDevice)
        }
    })
}

/// Frees a device handle; NULL is a no-op. Free everything created from it first.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_device_free(device: *mut sb_cuda_device) {
    let _ = guard(|| {
        if !device.is_null() {
            // SAFETY: created by `sb_cuda_device_open` (contract).
            drop(unsafe { Box::from_raw(device) });
        }
        Ok(())
    });
}

/// Writes the device's name (NUL-terminated, truncated to `cap` bytes) and compute capability.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_device_name(
    device: *const sb_cuda_device,
    name: *mut c_char,
    cap: usize,
    major: *mut i32,
    minor: *mut i32,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        let d = unsafe { obj_ref(device) }?;
        if name.is_null() || major.is_null() || minor.is_null() {
            return Err(Status::NullArgument);
        }
        if cap == 0 {
            return Err(Status::BufferTooSmall);
        }
        #[cfg(feature = "cuda")]
        {
            let text = d.gpu.name().as_bytes();
            let n = text.len().min(cap - 1);
            // SAFETY: `name` holds `cap` bytes (contract); n + 1 <= cap.
            unsafe {
                core::ptr::copy_nonoverlapping(text.as_ptr() as *const c_char, name, n);
                *name.add(n) = 0;
                let (ma, mi) = d.gpu.compute_capability();
                *major = ma;
                *minor = mi;
            }
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = d;
            Err(Status::NoDevice)
        }
    })
}

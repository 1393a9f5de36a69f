//! cuBLAS GEMMs for the drafter block forward: bf16 weights and activations, f32 accumulation and
//! f32 output, in the row-major layouts the rest of the library uses.
//!
//! The library is loaded at run time by cudarc (`libcublas.so*` on the loader's path); its absence is
//! [`Error::NoDevice`], never a panic. One [`Blas`] handle belongs to one [`Gpu`] and is bound to one
//! stream at a time; it owns a fixed workspace so GEMMs may be captured into CUDA graphs (cuBLAS must
//! not allocate during capture).

use core::cell::Cell;
use core::ffi::c_void;
use std::vec::Vec;

use cudarc::cublas::sys as cb;

use super::{DeviceBuffer, Gpu, Stream};
use crate::error::Error;

/// Bytes of the fixed cuBLAS workspace (NVIDIA recommends 32 MiB on Hopper).
const WORKSPACE_BYTES: usize = 32 << 20;

fn check(call: &'static str, s: cb::cublasStatus_t) -> Result<(), Error> {
    if s == cb::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device {
            call,
            code: s as u32,
        })
    }
}

/// Whether the cuBLAS shared library can be loaded (cudarc panics on first use otherwise). When the
/// loader's path has none, the CUDA 13 cuBLAS of a CUDA toolkit or of a Python `nvidia-cublas` wheel
/// (PyTorch's) is preloaded from a known place (see [`preload_cublas`]).
pub fn cublas_present() -> bool {
    // SAFETY: only probes whether the shared library can be opened.
    if unsafe { cb::is_culib_present() } {
        return true;
    }
    preload_cublas();
    // SAFETY: as above.
    unsafe { cb::is_culib_present() }
}

/// Folders that may hold `libcublas.so.13`: `$SPECBLOCK_CUBLAS_DIR`, the CUDA toolkit, and the
/// `nvidia/cu13/lib` or `nvidia/cublas/lib` folder of Python environments (`$VIRTUAL_ENV`, /opt/*/.venv,
/// /usr/local/lib, /usr/lib).
fn cublas_dirs() -> Vec<std::path::PathBuf> {
    use std::path::PathBuf;
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("SPECBLOCK_CUBLAS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    dirs.push(PathBuf::from("/usr/local/cuda/targets/x86_64-linux/lib"));
    let mut lib_roots: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        lib_roots.push(PathBuf::from(v).join("lib"));
    }
    if let Ok(opt) = std::fs::read_dir("/opt") {
        for e in opt.flatten() {
            lib_roots.push(e.path().join(".venv/lib"));
            lib_roots.push(e.path().join("lib"));
        }
    }
    lib_roots.push(PathBuf::from("/usr/local/lib"));
    lib_roots.push(PathBuf::from("/usr/lib"));
    for root in lib_roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("python3") {
                continue;
            }
            for pkgs in ["site-packages", "dist-packages"] {
                let nv = e.path().join(pkgs).join("nvidia");
                dirs.push(nv.join("cu13/lib"));
                dirs.push(nv.join("cublas/lib"));
            }
        }
    }
    dirs
}

/// Loads `libcublasLt.so.13` and `libcublas.so.13` from the first folder of [`cublas_dirs`] that has
/// them, globally, so cudarc's later `dlopen("libcublas.so.13")` finds the loaded library by its soname.
fn preload_cublas() {
    for dir in cublas_dirs() {
        let lib = dir.join("libcublas.so.13");
        if !lib.is_file() {
            continue;
        }
        for name in ["libcublasLt.so.13", "libcublas.so.13"] {
            let path = dir.join(name);
            let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: a NUL-terminated path; the handle is kept for the life of the process on purpose.
            unsafe {
                libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            }
        }
        return;
    }
}

/// A cuBLAS handle with its own workspace, bound to one stream at a time.
pub struct Blas {
    handle: cb::cublasHandle_t,
    workspace: DeviceBuffer<u8>,
    /// The stream the handle is bound to (raw), so re-binding happens only on a change.
    bound: Cell<*mut c_void>,
}

// SAFETY: a cuBLAS handle may move between threads (it is not used concurrently: `Blas` is !Sync).
unsafe impl Send for Blas {}

impl core::fmt::Debug for Blas {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Blas").finish_non_exhaustive()
    }
}

impl Blas {
    /// Creates a handle on `gpu` bound to `stream`, with a fixed workspace and the default (no TF32)
    /// math mode. [`Error::NoDevice`] when the cuBLAS library is not installed.
    pub fn new(gpu: &Gpu, stream: &Stream) -> Result<Blas, Error> {
        if !cublas_present() {
            return Err(Error::NoDevice(
                "the cuBLAS library (libcublas.so) is not on the loader's path",
            ));
        }
        gpu.bind()?;
        let workspace = DeviceBuffer::<u8>::new(gpu, WORKSPACE_BYTES)?;
        let mut handle = core::ptr::null_mut();
        // SAFETY: valid out-pointer, context current.
        check("cublasCreate", unsafe { cb::cublasCreate_v2(&mut handle) })?;
        let blas = Blas {
            handle,
            workspace,
            bound: Cell::new(core::ptr::null_mut()),
        };
        // SAFETY: valid handle. Default math: bf16 inputs with f32 compute, and f32 never as TF32.
        check("cublasSetMathMode", unsafe {
            cb::cublasSetMathMode(blas.handle, cb::cublasMath_t::CUBLAS_DEFAULT_MATH)
        })?;
        blas.bind(stream)?;
        Ok(blas)
    }

    /// Binds the handle to `stream` (and re-installs the workspace, which `cublasSetStream` resets).
    fn bind(&self, stream: &Stream) -> Result<(), Error> {
        if self.bound.get() == stream.raw() && !stream.raw().is_null() {
            return Ok(());
        }
        // SAFETY: valid handle and stream; the workspace lives as long as the handle.
        unsafe {
            check(
                "cublasSetStream",
                cb::cublasSetStream_v2(self.handle, stream.raw() as cb::cudaStream_t),
            )?;
            check(
                "cublasSetWorkspace",
                cb::cublasSetWorkspace_v2(
                    self.handle,
                    self.workspace.ptr() as *mut c_void,
                    WORKSPACE_BYTES,
                ),
            )?;
        }
        self.bound.set(stream.raw());
        Ok(())
    }

    /// `c[rows, out] = a[rows, inner] · w[out, inner]^T + beta · c` on `stream`, all row-major: `a` bf16
    /// activations, `w` bf16 weights in `nn.Linear` layout, `c` f32. Accumulates in f32. `lda`, `ldc`
    /// are the row strides (elements) of `a` and `c` (`>= inner`, `>= out`); `w` is dense.
    ///
    /// # Safety
    /// The three addresses must be device memory of this GPU holding at least
    /// `(rows-1)·lda + inner` bf16, `out·inner` bf16 and `(rows-1)·ldc + out` f32 elements.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm_bf16_raw(
        &self,
        stream: &Stream,
        rows: usize,
        out: usize,
        inner: usize,
        a: u64,
        lda: usize,
        w: u64,
        c: u64,
        ldc: usize,
        beta: f32,
    ) -> Result<(), Error> {
        if rows == 0 || out == 0 {
            return Ok(());
        }
        let fits = |x: usize| i32::try_from(x).is_ok();
        if !(fits(rows) && fits(out) && fits(inner) && fits(lda) && fits(ldc))
            || lda < inner
            || ldc < out
            || inner == 0
        {
            return Err(Error::InvalidArgument("GEMM sizes out of range"));
        }
        self.bind(stream)?;
        let alpha = 1.0f32;
        // Row-major C[rows, out] is column-major C'[out, rows] (ld = ldc). C' = W · A^T: row-major
        // W[out, inner] read column-major is [inner, out] (ld = inner), so op(W) = T gives [out, inner];
        // row-major A[rows, inner] read column-major is [inner, rows] (ld = lda), op(A) = N.
        // SAFETY: forwarded contract; scalars live on the host (default pointer mode).
        check("cublasGemmEx", unsafe {
            cb::cublasGemmEx(
                self.handle,
                cb::cublasOperation_t::CUBLAS_OP_T,
                cb::cublasOperation_t::CUBLAS_OP_N,
                out as i32,
                rows as i32,
                inner as i32,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                cb::cudaDataType::CUDA_R_16BF,
                inner as i32,
                a as *const c_void,
                cb::cudaDataType::CUDA_R_16BF,
                lda as i32,
                &beta as *const f32 as *const c_void,
                c as *mut c_void,
                cb::cudaDataType::CUDA_R_32F,
                ldc as i32,
                cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cb::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        })
    }

    /// [`gemm_bf16_raw`](Self::gemm_bf16_raw) on whole, dense buffers, with the sizes checked:
    /// `c[rows, out] = a[rows, inner] · w[out, inner]^T + beta · c`.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16(
        &self,
        stream: &Stream,
        rows: usize,
        out: usize,
        inner: usize,
        a: &DeviceBuffer<u16>,
        w: &DeviceBuffer<u16>,
        c: &mut DeviceBuffer<f32>,
        beta: f32,
    ) -> Result<(), Error> {
        let need = |what, needed: usize, got: usize| {
            if got < needed {
                Err(Error::BufferTooSmall { what, needed, got })
            } else {
                Ok(())
            }
        };
        need("GEMM activations", rows * inner, a.len())?;
        need("GEMM weights", out * inner, w.len())?;
        need("GEMM output", rows * out, c.len())?;
        // SAFETY: the sizes were checked against the allocations.
        unsafe {
            self.gemm_bf16_raw(
                stream,
                rows,
                out,
                inner,
                a.ptr(),
                inner,
                w.ptr(),
                c.ptr(),
                out,
                beta,
            )
        }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle belongs to `self`; errors on teardown are ignored.
        unsafe {
            let _ = cb::cublasDestroy_v2(self.handle);
        }
    }
}

//! The CUDA path (feature `cuda`): the kernels of `kernels/*.cu`, embedded as fatbins (sm_80 and sm_90
//! machine code plus compute_90 PTX), driven through the CUDA driver API that cudarc loads at run time.
//!
//! - [`Gpu`]: one device's primary context with every kernel module loaded once. No driver, no device,
//!   or a driver too old for the fatbins gives [`Error::NoDevice`], never a panic.
//! - [`Stream`]: a stream the library owns, or one the caller lends (`CUstream` as an opaque pointer).
//! - [`DeviceBuffer`]: a fixed-size device allocation (allocated at creation, never per step).
//! - [`Gpu::launch`]: a raw kernel launch on a stream, with the launch error checked.
//!
//! Every kernel has a CPU twin in the library; the parity tests live in `tests/cuda_*.rs` and skip with
//! a message where there is no GPU.

pub mod accept;
pub mod blas;
#[doc(hidden)]
pub mod block;
pub mod drafter;
pub mod greedy;
pub mod layout;
pub mod sample;
pub mod tree;

use core::ffi::{CStr, c_void};
use core::marker::PhantomData;
use std::string::String;
use std::sync::Mutex;
use std::vec::Vec;

use cudarc::driver::sys;

use crate::error::Error;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// Maps a driver result to [`Error::Device`] naming the call.
pub(crate) fn check(call: &'static str, r: sys::CUresult) -> Result<(), Error> {
    if r == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Device {
            call,
            code: r as u32,
        })
    }
}

/// The driver library can be loaded (cudarc panics on first use otherwise).
fn driver_present() -> bool {
    // SAFETY: only probes whether the shared library can be opened.
    unsafe { sys::is_culib_present() }
}

/// Names a kernel module (a `kernels/*.cu` file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    /// `kernels/tree.cu`: tree finalize ([`tree`]) and the verification layouts ([`layout`]).
    Tree,
    /// `kernels/accept_greedy.cu`: greedy acceptance fused with the argmax over target logits.
    AcceptGreedy,
    /// `kernels/accept_sample.cu`: lossless sampling acceptance from target logits.
    AcceptSample,
    /// `kernels/drafter.cu`: the drafter block forward's non-GEMM ops.
    SpecBlockDrafter,
    /// `kernels/util.cu`: fills (test poisoning) and a runtime smoke kernel.
    Util,
    /// `kernels/bench_fill.cu`: pseudo-random device fills (benchmark weights).
    BenchFill,
}

impl Module {
    fn stem(self) -> &'static str {
        match self {
            Module::Tree => "tree",
            Module::AcceptGreedy => "accept_greedy",
            Module::AcceptSample => "accept_sample",
            Module::SpecBlockDrafter => "drafter",
            Module::Util => "util",
            Module::BenchFill => "bench_fill",
        }
    }
}

/// A loaded kernel (a `CUfunction`); valid while its [`Gpu`] lives.
#[derive(Clone, Copy, Debug)]
pub struct Function(sys::CUfunction);

// SAFETY: a CUfunction handle is an immutable driver object usable from any thread of its context.
unsafe impl Send for Function {}
// SAFETY: as above.
unsafe impl Sync for Function {}

/// One GPU: its primary context and every embedded kernel module, loaded once. Shareable across
/// threads; each thread that launches must call [`Gpu::bind`] first (the launch helpers do).
pub struct Gpu {
    ordinal: i32,
    device: sys::CUdevice,
    ctx: sys::CUcontext,
    modules: Vec<(&'static str, sys::CUmodule)>,
    name: String,
    compute_capability: (i32, i32),
    multiprocessors: i32,
    /// Serialises module unload / context release against concurrent binds on drop.
    lock: Mutex<()>,
}

// SAFETY: the context and module handles are driver objects usable from any thread once the context
// is made current there (`bind`).
unsafe impl Send for Gpu {}
// SAFETY: as above; nothing in `Gpu` is mutated after creation.
unsafe impl Sync for Gpu {}

impl core::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .field("compute_capability", &self.compute_capability)
            .finish()
    }
}

impl Gpu {
    /// Opens device `ordinal`: initialises the driver, retains the primary context and loads every
    /// kernel module. [`Error::NoDevice`] when there is no driver library, no device, or the fatbins
    /// have no code the device can run.
    pub fn open(ordinal: usize) -> Result<Gpu, Error> {
        if !driver_present() {
            return Err(Error::NoDevice(
                "the CUDA driver library (libcuda.so) is not installed",
            ));
        }
        // SAFETY: plain driver API calls with valid out-pointers; the library is present.
        unsafe {
            let r = sys::cuInit(0);
            if r != sys::CUresult::CUDA_SUCCESS {
                return Err(Error::NoDevice(
                    "cuInit failed: the driver sees no usable device",
                ));
            }
            let mut version = 0;
            check("cuDriverGetVersion", sys::cuDriverGetVersion(&mut version))?;
            if version < 13000 {
                // The bindings are CUDA 13.0's: an older driver lacks symbols they would call.
                return Err(Error::NoDevice("the CUDA driver is older than 13.0"));
            }
            let mut count = 0;
            check("cuDeviceGetCount", sys::cuDeviceGetCount(&mut count))?;
            if ordinal >= count as usize {
                return Err(Error::NoDevice("no CUDA device with that ordinal"));
            }
            let ordinal = ordinal as i32;
            let mut device = 0;
            check("cuDeviceGet", sys::cuDeviceGet(&mut device, ordinal))?;
            let attr = |a| {
                let mut v = 0;
                check(
                    "cuDeviceGetAttribute",
                    sys::cuDeviceGetAttribute(&mut v, a, device),
                )
                .map(|_| v)
            };
            use sys::CUdevice_attribute as A;
            let major = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
            let minor = attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
            let multiprocessors = attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
            if major < 8 {
                return Err(Error::NoDevice(
                    "the kernels need compute capability 8.0 or newer",
                ));
            }
            let mut name_buf = [0 as core::ffi::c_char; 256];
            check(
                "cuDeviceGetName",
                sys::cuDeviceGetName(name_buf.as_mut_ptr(), name_buf.len() as i32, device),
            )?;
            let name = CStr::from_ptr(name_buf.as_ptr())
                .to_string_lossy()
                .into_owned();
            let mut ctx = core::ptr::null_mut();
            check(
                "cuDevicePrimaryCtxRetain",
                sys::cuDevicePrimaryCtxRetain(&mut ctx, device),
            )?;
            let mut gpu = Gpu {
                ordinal,
                device,
                ctx,
                modules: Vec::new(),
                name,
                compute_capability: (major, minor),
                multiprocessors,
                lock: Mutex::new(()),
            };
            gpu.bind()?;
            for &(stem, image) in embedded::MODULES {
                let mut module = core::ptr::null_mut();
                let r = sys::cuModuleLoadData(&mut module, image.as_ptr() as *const c_void);
                if r == sys::CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU
                    || r == sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
                {
                    return Err(Error::NoDevice(
                        "the embedded kernels have no code this device and driver can run",
                    ));
                }
                check("cuModuleLoadData", r)?;
                gpu.modules.push((stem, module));
            }
            Ok(gpu)
        }
    }

    /// Whether [`Gpu::open`]`(0)` would find a device; never panics.
    pub fn available() -> bool {
        Gpu::open(0).is_ok()
    }

    /// Makes this GPU's context current on the calling thread.
    pub fn bind(&self) -> Result<(), Error> {
        // SAFETY: the context is retained for the lifetime of `self`.
        check("cuCtxSetCurrent", unsafe { sys::cuCtxSetCurrent(self.ctx) })
    }

    /// The device name the driver reports.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability (major, minor).
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Number of streaming multiprocessors.
    pub fn multiprocessors(&self) -> i32 {
        self.multiprocessors
    }

    /// The kernel `name` (an `extern "C"` symbol) of `module`.
    pub fn function(&self, module: Module, name: &CStr) -> Result<Function, Error> {
        let stem = module.stem();
        let m = self
            .modules
            .iter()
            .find(|(s, _)| *s == stem)
            .map(|&(_, m)| m)
            .ok_or(Error::InvalidArgument(
                "kernel module not embedded in this build",
            ))?;
        let mut f = core::ptr::null_mut();
        // SAFETY: the module is loaded; `name` is NUL-terminated.
        check("cuModuleGetFunction", unsafe {
            sys::cuModuleGetFunction(&mut f, m, name.as_ptr())
        })?;
        Ok(Function(f))
    }

    /// Raises a kernel's dynamic shared-memory limit (needed above 48 KiB).
    pub fn set_max_dynamic_shared(&self, f: Function, bytes: u32) -> Result<(), Error> {
        // SAFETY: valid function handle.
        check("cuFuncSetAttribute", unsafe {
            sys::cuFuncSetAttribute(
                f.0,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            )
        })
    }

    /// Launches `f` on `stream` with a grid of `grid` blocks of `block` threads and `shared` bytes of
    /// dynamic shared memory, then checks the launch error.
    ///
    /// # Safety
    /// `args` must hold one pointer per kernel parameter, each pointing at a value of exactly the
    /// parameter's type, and every device pointer among them must be valid for what the kernel does.
    pub unsafe fn launch(
        &self,
        f: Function,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        shared: u32,
        stream: &Stream,
        args: &mut [*mut c_void],
    ) -> Result<(), Error> {
        // SAFETY: forwarded contract.
        unsafe {
            check(
                "cuLaunchKernel",
                sys::cuLaunchKernel(
                    f.0,
                    grid.0,
                    grid.1,
                    grid.2,
                    block.0,
                    block.1,
                    block.2,
                    shared,
                    stream.raw,
                    args.as_mut_ptr(),
                    core::ptr::null_mut(),
                ),
            )
        }
    }

    /// The device's free and total memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize), Error> {
        self.bind()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: valid out-pointers, context current.
        check("cuMemGetInfo", unsafe {
            sys::cuMemGetInfo_v2(&mut free, &mut total)
        })?;
        Ok((free, total))
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        let _guard = self.lock.lock();
        // SAFETY: the modules and the retained context belong to `self`; errors on teardown are ignored.
        unsafe {
            let _ = sys::cuCtxSetCurrent(self.ctx);
            for &(_, m) in &self.modules {
                let _ = sys::cuModuleUnload(m);
            }
            let _ = sys::cuDevicePrimaryCtxRelease_v2(self.device);
        }
    }
}

/// A kernel argument: a pointer to the value the kernel parameter receives.
pub fn arg<T>(value: &T) -> *mut c_void {
    value as *const T as *mut c_void
}

/// A CUDA stream: owned (created and destroyed by the library) or borrowed from the caller.
#[derive(Debug)]
pub struct Stream {
    raw: sys::CUstream,
    owned: bool,
}

// SAFETY: a stream handle may be used from any thread with its context current.
unsafe impl Send for Stream {}
// SAFETY: as above.
unsafe impl Sync for Stream {}

impl Stream {
    /// Creates a non-blocking stream on `gpu`.
    pub fn new(gpu: &Gpu) -> Result<Stream, Error> {
        gpu.bind()?;
        let mut raw = core::ptr::null_mut();
        // SAFETY: valid out-pointer, context current.
        check("cuStreamCreate", unsafe {
            sys::cuStreamCreate(&mut raw, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32)
        })?;
        Ok(Stream { raw, owned: true })
    }

    /// Wraps a caller's stream (NULL = the legacy default stream); it is not destroyed on drop.
    ///
    /// # Safety
    /// `raw` must be a valid stream of the GPU's context for as long as the wrapper is used.
    pub unsafe fn borrowed(raw: *mut c_void) -> Stream {
        Stream {
            raw: raw as sys::CUstream,
            owned: false,
        }
    }

    /// The raw handle.
    pub fn raw(&self) -> *mut c_void {
        self.raw as *mut c_void
    }

    /// Waits for everything queued on the stream; reports asynchronous kernel errors.
    pub fn synchronize(&self) -> Result<(), Error> {
        // SAFETY: valid stream.
        check("cuStreamSynchronize", unsafe {
            sys::cuStreamSynchronize(self.raw)
        })
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: the stream was created by `Stream::new`.
            unsafe {
                let _ = sys::cuStreamDestroy_v2(self.raw);
            }
        }
    }
}

/// Plain-old-data types that may be copied to and from the device byte for byte.
///
/// # Safety
/// Every bit pattern the device writes must be a valid value of the type.
pub unsafe trait DeviceCopy: Copy + Default + 'static {}
// SAFETY: plain integers and floats accept every bit pattern.
unsafe impl DeviceCopy for u8 {}
// SAFETY: as above.
unsafe impl DeviceCopy for u16 {}
// SAFETY: as above.
unsafe impl DeviceCopy for i32 {}
// SAFETY: as above.
unsafe impl DeviceCopy for u32 {}
// SAFETY: as above.
unsafe impl DeviceCopy for i64 {}
// SAFETY: as above.
unsafe impl DeviceCopy for u64 {}
// SAFETY: as above.
unsafe impl DeviceCopy for f32 {}
// SAFETY: as above.
unsafe impl DeviceCopy for f64 {}

/// A device allocation of `len` elements of `T`, freed on drop.
#[derive(Debug)]
pub struct DeviceBuffer<T: DeviceCopy> {
    ptr: sys::CUdeviceptr,
    len: usize,
    _t: PhantomData<T>,
}

// SAFETY: device memory is reachable from any thread of the context.
unsafe impl<T: DeviceCopy> Send for DeviceBuffer<T> {}
// SAFETY: shared references only expose the address; writes go through `&mut self`.
unsafe impl<T: DeviceCopy> Sync for DeviceBuffer<T> {}

impl<T: DeviceCopy> DeviceBuffer<T> {
    /// Allocates `len` elements (contents undefined; at least one byte is allocated).
    pub fn new(gpu: &Gpu, len: usize) -> Result<Self, Error> {
        gpu.bind()?;
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or(Error::InvalidArgument("device buffer size overflows"))?
            .max(1);
        let mut ptr = 0;
        // SAFETY: valid out-pointer, context current.
        let r = unsafe { sys::cuMemAlloc_v2(&mut ptr, bytes) };
        if r == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            return Err(Error::OutOfMemory);
        }
        check("cuMemAlloc", r)?;
        Ok(DeviceBuffer {
            ptr,
            len,
            _t: PhantomData,
        })
    }

    /// Allocates and copies `data` (synchronously).
    pub fn from_slice(gpu: &Gpu, data: &[T]) -> Result<Self, Error> {
        let mut b = Self::new(gpu, data.len())?;
        b.upload(data)?;
        Ok(b)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device address (a `CUdeviceptr`).
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// The device address of element `offset`.
    pub fn ptr_at(&self, offset: usize) -> u64 {
        assert!(offset <= self.len, "offset past the end of a device buffer");
        self.ptr + (offset * size_of::<T>()) as u64
    }

    /// Copies `data` to the start of the buffer; the data is on the device when this returns.
    pub fn upload(&mut self, data: &[T]) -> Result<(), Error> {
        if data.len() > self.len {
            return Err(Error::BufferTooSmall {
                what: "device buffer",
                needed: data.len(),
                got: self.len,
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: `data` is a valid host slice and the device range is inside the allocation.
        check("cuMemcpyHtoD", unsafe {
            sys::cuMemcpyHtoD_v2(self.ptr, data.as_ptr() as *const c_void, size_of_val(data))
        })?;
        legacy_sync()
    }

    /// Copies the first `out.len()` elements back to the host (synchronously, after all queued work
    /// on the legacy stream; call [`Stream::synchronize`] first for other streams).
    pub fn download(&self, out: &mut [T]) -> Result<(), Error> {
        if out.len() > self.len {
            return Err(Error::BufferTooSmall {
                what: "device buffer",
                needed: out.len(),
                got: self.len,
            });
        }
        if out.is_empty() {
            return Ok(());
        }
        // SAFETY: `out` is a valid host slice and the device range is inside the allocation.
        check("cuMemcpyDtoH", unsafe {
            sys::cuMemcpyDtoH_v2(out.as_mut_ptr() as *mut c_void, self.ptr, size_of_val(out))
        })
    }

    /// The whole buffer as a vector.
    pub fn to_vec(&self) -> Result<Vec<T>, Error> {
        let mut v = std::vec![T::default(); self.len];
        self.download(&mut v)?;
        Ok(v)
    }

    /// Fills every 32-bit word with `value` on `stream` (asynchronously, capturable in a graph).
    /// The buffer's byte size must be a multiple of 4.
    pub fn fill_u32(&mut self, gpu: &Gpu, stream: &Stream, value: u32) -> Result<(), Error> {
        let bytes = self.len * size_of::<T>();
        if !bytes.is_multiple_of(4) {
            return Err(Error::InvalidArgument(
                "fill_u32 needs a size that is a multiple of 4 bytes",
            ));
        }
        let f = gpu.function(Module::Util, c"sb_fill_u32")?;
        let (ptr, n) = (self.ptr, (bytes / 4) as u64);
        let blocks = n.div_ceil(256).clamp(1, 4096) as u32;
        // SAFETY: the kernel writes n words inside this allocation; argument types match its signature.
        unsafe {
            gpu.launch(
                f,
                (blocks, 1, 1),
                (256, 1, 1),
                0,
                stream,
                &mut [arg(&ptr), arg(&n), arg(&value)],
            )
        }
    }

    /// Fills every byte with `byte`, done when this returns: tests poison outputs before a kernel runs.
    pub fn fill_bytes(&mut self, byte: u8) -> Result<(), Error> {
        // SAFETY: the range is the allocation.
        check("cuMemsetD8", unsafe {
            sys::cuMemsetD8_v2(self.ptr, byte, (self.len * size_of::<T>()).max(1))
        })?;
        legacy_sync()
    }
}

impl<T: DeviceCopy> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: the allocation belongs to `self`; freeing needs no current context on CUDA >= 4.
        unsafe {
            let _ = sys::cuMemFree_v2(self.ptr);
        }
    }
}

/// Waits for the legacy default stream. The "synchronous" copy from pageable memory and memset may
/// return before the data lands, and the library's streams are non-blocking (they do not wait for the
/// legacy stream), so the synchronous helpers finish their work before returning.
fn legacy_sync() -> Result<(), Error> {
    // SAFETY: the NULL stream is always valid in a current context.
    check("cuStreamSynchronize", unsafe {
        sys::cuStreamSynchronize(core::ptr::null_mut())
    })
}

/// A pair of events that times work on a stream.
#[derive(Debug)]
pub struct Timer {
    start: sys::CUevent,
    end: sys::CUevent,
}

impl Timer {
    /// Creates the two events.
    pub fn new(gpu: &Gpu) -> Result<Timer, Error> {
        gpu.bind()?;
        let (mut start, mut end) = (core::ptr::null_mut(), core::ptr::null_mut());
        // SAFETY: valid out-pointers.
        unsafe {
            check("cuEventCreate", sys::cuEventCreate(&mut start, 0))?;
            check("cuEventCreate", sys::cuEventCreate(&mut end, 0))?;
        }
        Ok(Timer { start, end })
    }

    /// Records the start on `stream`.
    pub fn start(&self, stream: &Stream) -> Result<(), Error> {
        // SAFETY: valid event and stream.
        check("cuEventRecord", unsafe {
            sys::cuEventRecord(self.start, stream.raw)
        })
    }

    /// Records the end on `stream`, waits for it and returns the milliseconds since the start.
    pub fn stop_ms(&self, stream: &Stream) -> Result<f32, Error> {
        let mut ms = 0.0f32;
        // SAFETY: valid events and stream.
        unsafe {
            check("cuEventRecord", sys::cuEventRecord(self.end, stream.raw))?;
            check("cuEventSynchronize", sys::cuEventSynchronize(self.end))?;
            check(
                "cuEventElapsedTime",
                sys::cuEventElapsedTime_v2(&mut ms, self.start, self.end),
            )?;
        }
        Ok(ms)
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: the events belong to `self`.
        unsafe {
            let _ = sys::cuEventDestroy_v2(self.start);
            let _ = sys::cuEventDestroy_v2(self.end);
        }
    }
}

/// A captured CUDA graph: work queued on a stream between [`Graph::capture`]'s begin and end, replayed
/// with one launch (removes per-kernel launch overhead from small-kernel pipelines).
#[derive(Debug)]
pub struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

impl Graph {
    /// Captures what `body` queues on `stream`.
    pub fn capture(
        stream: &Stream,
        body: impl FnOnce(&Stream) -> Result<(), Error>,
    ) -> Result<Graph, Error> {
        // SAFETY: valid stream; capture is ended on every path.
        unsafe {
            check(
                "cuStreamBeginCapture",
                sys::cuStreamBeginCapture_v2(
                    stream.raw,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                ),
            )?;
            let body_result = body(stream);
            let mut graph = core::ptr::null_mut();
            let end = sys::cuStreamEndCapture(stream.raw, &mut graph);
            body_result?;
            check("cuStreamEndCapture", end)?;
            let mut exec = core::ptr::null_mut();
            let r = sys::cuGraphInstantiateWithFlags(&mut exec, graph, 0);
            if r != sys::CUresult::CUDA_SUCCESS {
                let _ = sys::cuGraphDestroy(graph);
                return Err(Error::Device {
                    call: "cuGraphInstantiate",
                    code: r as u32,
                });
            }
            Ok(Graph { graph, exec })
        }
    }

    /// Queues one replay on `stream`.
    pub fn launch(&self, stream: &Stream) -> Result<(), Error> {
        // SAFETY: valid executable graph and stream.
        check("cuGraphLaunch", unsafe {
            sys::cuGraphLaunch(self.exec, stream.raw)
        })
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: both handles belong to `self`.
        unsafe {
            let _ = sys::cuGraphExecDestroy(self.exec);
            let _ = sys::cuGraphDestroy(self.graph);
        }
    }
}

#[cfg(test)]
mod old_paths {
    //! Every public name that moved in the CUDA module reorganisation still resolves at its old path
    //! (deprecated where the old path would mislead). Compiling is the test; nothing needs a GPU.
    #![allow(deprecated)]

    use super::{DeviceBuffer, Gpu, Stream, block, drafter, greedy, sample, tree};
    use crate::error::Error;

    type FillRandom = fn(&Gpu, &Stream, &mut DeviceBuffer<f32>, u64, f32, f32) -> Result<(), Error>;

    #[test]
    fn moved_names_resolve_at_their_old_paths() {
        // cuda::block -> cuda::drafter.
        let _: Option<block::GpuDrafter<'static>> = None::<drafter::GpuDrafter<'static>>;
        let _: Option<block::GpuDrafterCapacity> = None::<drafter::GpuDrafterCapacity>;
        let dims: block::GpuDrafterDims = drafter::GpuDrafterDims::llama31_8b();
        assert_eq!(dims.hidden, 4096);
        let _: FillRandom = block::fill_random::<f32>;
        // cuda::drafter::* (the ops) -> cuda::drafter::ops::*.
        let _: Option<drafter::DrafterKernels> = None::<drafter::ops::DrafterKernels>;
        let _: drafter::ops::FuseInputs = drafter::FuseInputs::default();
        let _: drafter::ops::RmsNorm = drafter::RmsNorm::default();
        let _: drafter::ops::AddRmsNorm = drafter::AddRmsNorm::default();
        let _: drafter::ops::Rope = drafter::Rope::default();
        let _: drafter::ops::CacheAppend = drafter::CacheAppend::default();
        let _: drafter::ops::Attention = drafter::Attention::default();
        let _: drafter::ops::Swiglu = drafter::Swiglu::default();
        let _: drafter::ops::Elementwise = drafter::Elementwise::default();
        let _: drafter::ops::ShiftConcat = drafter::ShiftConcat::default();
        let _: drafter::ops::HeadFeatures = drafter::HeadFeatures::default();
        assert_eq!(
            drafter::STATUS_TOKEN_OUT_OF_RANGE,
            drafter::ops::STATUS_TOKEN_OUT_OF_RANGE
        );
        assert_eq!(drafter::MAX_SLOTS, drafter::ops::MAX_SLOTS);
        assert_eq!(drafter::MAX_HEAD_DIM, drafter::ops::MAX_HEAD_DIM);
        assert_eq!(drafter::MAX_SELECT, drafter::ops::MAX_SELECT);
        assert_eq!(drafter::RANK_FEATURES, drafter::ops::RANK_FEATURES);
        assert_eq!(drafter::MAX_SPLITS, drafter::ops::MAX_SPLITS);
        assert_eq!(
            drafter::attention_workspace_len(3, 5, 8),
            drafter::ops::attention_workspace_len(3, 5, 8)
        );
        // cuda::tree's layouts -> cuda::layout.
        let _: Option<tree::GpuLayouts<'static>> = None::<super::layout::GpuLayouts<'static>>;
        let _: Option<tree::HostLayouts> = None::<super::layout::HostLayouts>;
        let _: super::layout::DeviceOut = tree::DeviceOut::default();
        let _: super::layout::LayoutPtrs = tree::LayoutPtrs::default();
        let _: Option<(tree::LayoutShape, tree::SeqIds)> = None;
        let _ = tree::layouts_raw;
        // The two acceptance readers -> cuda::accept::HostAcceptance.
        let a = greedy::HostAcceptance {
            status: 0,
            nodes: std::vec![1],
            tokens: std::vec![7],
            bonus: 9,
            keep: std::vec![0, 1],
            raw_nodes: std::vec![1, -1],
            raw_tokens: std::vec![7, -1],
            raw_keep: std::vec![0, 1, -1],
            accept_len: 1,
            padded: (std::vec![1, -1], std::vec![7, -1], std::vec![0, 1, -1]),
        };
        let b: sample::SampleOutput = a.clone();
        assert_eq!(b, a);
        assert_eq!(a.padded.clone(), (a.raw_nodes, a.raw_tokens, a.raw_keep));
    }
}

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

/// Shape of a batch of device trees: `cap = max_nodes + 1` slots per tree, tree `b` at slots
/// `[b * cap, (b + 1) * cap)` of every per-node array.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_cuda_tree_shape {
    /// Number of trees (sequences), >= 1.
    pub batch: u32,
    /// Non-root nodes per tree, 1..=1024 on the GPU.
    pub max_nodes: u32,
    /// Deepest node, 1..=64.
    pub max_depth: u32,
}

/// Raw trees in device memory, as a drafter emits them (parents before children). All pointers are
/// device addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_cuda_raw_trees {
    /// `int32[batch]`: nodes per tree including the root.
    pub len: *const i32,
    /// `int32[batch * cap]`: slot 0 is the root token.
    pub token: *const i32,
    /// `int32[batch * cap]`: parent slot (< the node's slot); the root's is ignored.
    pub parent: *const i32,
    /// `float[batch * cap]`: edge log-probability; the root's is ignored.
    pub logprob: *const f32,
    /// `uint32[batch * cap]`: node metadata, `block | slot << 8 | rank_class << 16 | user << 24`.
    pub meta: *const u32,
    /// `int32[batch]`: node budget per tree (<= max_nodes).
    pub budget: *const i32,
}

/// Finalized trees in device memory (written by `sb_cuda_tree_finalize`; read by the layouts and the
/// acceptance calls). All pointers are device addresses of the sizes given.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_cuda_trees {
    /// `int32[batch]`: 0 or the `sb_status` the CPU tree would return for that input.
    pub status: *mut i32,
    /// `int32[batch]`: nodes including the root (0 for a failed tree).
    pub len: *mut i32,
    /// `int32[batch * cap]`.
    pub token: *mut i32,
    /// `int32[batch * cap]`: -1 for the root.
    pub parent: *mut i32,
    /// `int32[batch * cap]`.
    pub depth: *mut i32,
    /// `int32[batch * cap]`: the node's slot in the raw input.
    pub source: *mut i32,
    /// `float[batch * cap]`: cumulative log-probability.
    pub cum: *mut f32,
    /// `float[batch * cap]`.
    pub logprob: *mut f32,
    /// `uint32[batch * cap]`.
    pub meta: *mut u32,
    /// `int32[batch * cap]`: child lists in ascending id order, -1 ends.
    pub first_child: *mut i32,
    /// `int32[batch * cap]`.
    pub next_sibling: *mut i32,
    /// `int32[batch]`.
    pub num_leaves: *mut i32,
    /// `int32[batch]`.
    pub deepest: *mut i32,
}

/// Acceptance results in device memory. `accept_nodes` and `accept_tokens` hold
/// `int32[batch * (max_depth + 1)]`, `keep` `int32[batch * (max_depth + 2)]` (`[0, nodes...]`), the rest
/// `int32[batch]`. A failed sequence has status != 0, accept_len 0 and bonus -1.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_cuda_acceptance {
    /// Accepted nodes per sequence (root excluded).
    pub accept_len: *mut i32,
    /// Accepted node ids, root to leaf, padded with -1.
    pub accept_nodes: *mut i32,
    /// Their tokens, padded with -1.
    pub accept_tokens: *mut i32,
    /// The token the target emits after the last accepted node.
    pub bonus: *mut i32,
    /// The KV keep-list.
    pub keep: *mut i32,
    /// 0 or an `sb_status` per sequence.
    pub status: *mut i32,
}

/// Element type of device logits (the Rust view; C passes `SB_CUDA_DTYPE_F32` or
/// `SB_CUDA_DTYPE_BF16` as the `uint32_t dtype` argument).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum sb_cuda_dtype {
    /// 32-bit float.
    F32 = 0,
    /// bfloat16.
    Bf16 = 1,
}

/// `dtype` of `sb_cuda_verify_greedy` / `sb_cuda_verify_sample`: 32-bit float logits.
pub const SB_CUDA_DTYPE_F32: u32 = 0;
/// `dtype` of `sb_cuda_verify_greedy` / `sb_cuda_verify_sample`: bfloat16 logits.
pub const SB_CUDA_DTYPE_BF16: u32 = 1;
const _: () = assert!(
    SB_CUDA_DTYPE_F32 == sb_cuda_dtype::F32 as u32
        && SB_CUDA_DTYPE_BF16 == sb_cuda_dtype::Bf16 as u32
);

#[cfg(feature = "cuda")]
mod device {
    //! Conversions from the C structs to the CUDA module's pointer structs.
    use super::*;
    use crate::cuda::tree::{FinalTreePtrs, RawTreePtrs, TreeShape};

    pub(super) fn shape(s: &sb_cuda_tree_shape) -> TreeShape {
        TreeShape {
            batch: s.batch as usize,
            max_nodes: s.max_nodes as usize,
            max_depth: s.max_depth as usize,
        }
    }

    fn addr<T>(p: *const T) -> Result<u64, Status> {
        if p.is_null() {
            Err(Status::NullArgument)
        } else {
            Ok(p as u64)
        }
    }

    pub(super) fn raw(r: &sb_cuda_raw_trees) -> Result<RawTreePtrs, Status> {
        Ok(RawTreePtrs {
            len: addr(r.len)?,
            token: addr(r.token)?,
            parent: addr(r.parent)?,
            logprob: addr(r.logprob)?,
            meta: addr(r.meta)?,
            budget: addr(r.budget)?,
        })
    }

    pub(super) fn trees(t: &sb_cuda_trees) -> Result<FinalTreePtrs, Status> {
        Ok(FinalTreePtrs {
            status: addr(t.status)?,
            len: addr(t.len)?,
            token: addr(t.token)?,
            parent: addr(t.parent)?,
            depth: addr(t.depth)?,
            source: addr(t.source)?,
            cum: addr(t.cum)?,
            logprob: addr(t.logprob)?,
            meta: addr(t.meta)?,
            first_child: addr(t.first_child)?,
            next_sibling: addr(t.next_sibling)?,
            num_leaves: addr(t.num_leaves)?,
            deepest: addr(t.deepest)?,
        })
    }

    pub(super) fn accept(
        a: &sb_cuda_acceptance,
    ) -> Result<crate::cuda::greedy::AcceptPtrs, Status> {
        Ok(crate::cuda::greedy::AcceptPtrs {
            accept_len: addr(a.accept_len)?,
            accept_nodes: addr(a.accept_nodes)?,
            accept_tokens: addr(a.accept_tokens)?,
            bonus: addr(a.bonus)?,
            keep: addr(a.keep)?,
            status: addr(a.status)?,
        })
    }

    pub(super) fn logits_addr(p: *const core::ffi::c_void) -> Result<u64, Status> {
        addr(p)
    }
}

/// Finalizes a batch of raw device trees on `stream` (a `CUstream`; NULL = the legacy default stream):
/// dedup, budget prune and topological order, identical to `sb_tree_finalize` per tree. One kernel
/// launch, no host synchronisation. Per-tree input errors land in `out->status`; the call itself fails
/// only on NULL pointers, a bad shape, or a launch error (`SB_STATUS_DEVICE_ERROR`).
///
/// Every pointer in `in` and `out` must be a device allocation of the current shape's size on this
/// device, and `stream` a stream of the device's primary context.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_tree_finalize(
    device: *const sb_cuda_device,
    shape: *const sb_cuda_tree_shape,
    input: *const sb_cuda_raw_trees,
    out: *const sb_cuda_trees,
    stream: *mut core::ffi::c_void,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let (d, s, i, o) = unsafe {
            (
                obj_ref(device)?,
                obj_ref(shape)?,
                obj_ref(input)?,
                obj_ref(out)?,
            )
        };
        #[cfg(feature = "cuda")]
        {
            let (shape, input, out) = (device::shape(s), device::raw(i)?, device::trees(o)?);
            // SAFETY: the caller lends a valid stream of this context.
            let stream = unsafe { crate::cuda::Stream::borrowed(stream) };
            d.gpu.bind()?;
            // SAFETY: the device buffers are the caller's contract (documented above).
            unsafe { crate::cuda::tree::finalize_raw(&d.gpu, &stream, &shape, &input, &out) }?;
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (d, s, i, o, stream);
            Err(Status::NoDevice)
        }
    })
}

/// Greedy acceptance on the device: the argmax of every tree row of `logits` (`batch * cap * vocab`
/// values of `dtype`: `SB_CUDA_DTYPE_F32` or `SB_CUDA_DTYPE_BF16`, row `i` = the target's prediction
/// after node `i`; ties to the lowest id) fused
/// with the walk, identical to `sb_verify_greedy` per tree. `argmax_scratch` and `flag_scratch` are
/// device `int32[batch * cap]`. Two kernel launches on `stream`, no host synchronisation.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_verify_greedy(
    device: *const sb_cuda_device,
    shape: *const sb_cuda_tree_shape,
    trees: *const sb_cuda_trees,
    logits: *const core::ffi::c_void,
    vocab: u32,
    dtype: u32,
    argmax_scratch: *mut i32,
    flag_scratch: *mut i32,
    out: *const sb_cuda_acceptance,
    stream: *mut core::ffi::c_void,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let (d, s, t, o) = unsafe {
            (
                obj_ref(device)?,
                obj_ref(shape)?,
                obj_ref(trees)?,
                obj_ref(out)?,
            )
        };
        if argmax_scratch.is_null() || flag_scratch.is_null() {
            return Err(Status::NullArgument);
        }
        #[cfg(feature = "cuda")]
        {
            use crate::cuda::greedy::{ArgmaxPtrs, LogitsDtype, greedy_raw};
            let dtype = match dtype {
                SB_CUDA_DTYPE_F32 => LogitsDtype::F32,
                SB_CUDA_DTYPE_BF16 => LogitsDtype::Bf16,
                _ => return Err(Status::InvalidArgument),
            };
            let scratch = ArgmaxPtrs {
                argmax: argmax_scratch as u64,
                flag: flag_scratch as u64,
            };
            let (tp, op, lp) = (
                device::trees(t)?,
                device::accept(o)?,
                device::logits_addr(logits)?,
            );
            // SAFETY: the caller lends a valid stream of this context.
            let stream = unsafe { crate::cuda::Stream::borrowed(stream) };
            d.gpu.bind()?;
            // SAFETY: the device buffers are the caller's contract (documented above).
            unsafe {
                greedy_raw(
                    &d.gpu,
                    &stream,
                    &device::shape(s),
                    &tp,
                    lp,
                    vocab as usize,
                    dtype,
                    &scratch,
                    &op,
                )
            }?;
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (d, s, t, o, logits, vocab, dtype, stream);
            Err(Status::NoDevice)
        }
    })
}

/// GPU sampling acceptance with its per-sequence parameters and outputs, allocated once
/// (`sb_cuda_sampler_new`). Use from one thread at a time.
pub struct sb_cuda_sampler {
    #[cfg(feature = "cuda")]
    sampler: crate::cuda::sample::SampleAccept,
    #[cfg(feature = "cuda")]
    device: *const sb_cuda_device,
    #[cfg(not(feature = "cuda"))]
    _none: core::convert::Infallible,
}

/// Creates a sampler for `batch` trees of up to `max_nodes` nodes over a `vocab`-token target (vocab
/// at most 2^20). Parameters start at temperature 1, no top-k, no top-p, seed 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_sampler_new(
    device: *const sb_cuda_device,
    batch: u32,
    max_nodes: u32,
    max_depth: u32,
    vocab: u32,
    out: *mut *mut sb_cuda_sampler,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        let d = unsafe { obj_ref(device) }?;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        #[cfg(feature = "cuda")]
        {
            let sampler = crate::cuda::sample::SampleAccept::new(
                &d.gpu,
                batch as usize,
                max_nodes as usize,
                max_depth as usize,
                vocab as usize,
            )?;
            let s = Box::new(sb_cuda_sampler { sampler, device });
            // SAFETY: checked non-NULL.
            unsafe { write_out(out, Box::into_raw(s)) }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (d, batch, max_nodes, max_depth, vocab);
            Err(Status::NoDevice)
        }
    })
}

/// Frees a sampler; NULL is a no-op.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_sampler_free(sampler: *mut sb_cuda_sampler) {
    let _ = guard(|| {
        if !sampler.is_null() {
            // SAFETY: created by `sb_cuda_sampler_new` (contract).
            drop(unsafe { Box::from_raw(sampler) });
        }
        Ok(())
    });
}

/// Sets every sequence's sampling parameters (`params[batch]`, host memory, each from
/// `sb_sampling_default_params`) and RNG seed (`seeds[batch]`). A small synchronous upload: call it when they
/// change (vary the seed per step, as with `sb_verify_sample`). Out-of-range values are reported per
/// sequence by the next `sb_cuda_verify_sample`, as the CPU would.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_sampler_set_params(
    sampler: *mut sb_cuda_sampler,
    params: *const super::verify::sb_sampling,
    seeds: *const u64,
    count: u32,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { super::obj_mut(sampler) }?;
        let params = unsafe { super::slice_ref(params, count as usize) }?;
        let seeds = unsafe { super::slice_ref(seeds, count as usize) }?;
        #[cfg(feature = "cuda")]
        {
            let mut sampling = std::vec::Vec::with_capacity(params.len());
            for p in params {
                if p.struct_size as usize != size_of::<super::verify::sb_sampling>() {
                    return Err(Status::StructSize);
                }
                sampling.push(crate::verify::Sampling {
                    temperature: p.temperature,
                    top_k: p.top_k,
                    top_p: p.top_p,
                });
            }
            // SAFETY: the device outlives its samplers (contract).
            unsafe { obj_ref(s.device) }?.gpu.bind()?;
            s.sampler.set_params(&sampling, seeds)?;
            Ok(())
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (s, params, seeds);
            Err(Status::NoDevice)
        }
    })
}

/// Lossless sampling acceptance on the device, identical to `sb_verify_sample` per sequence (same
/// coins: the counter-based generator at the sequence's seed). `trees` are finalized device trees of
/// the sampler's shape, `logits` `batch * cap * vocab` values of `dtype` (`SB_CUDA_DTYPE_F32` or
/// `SB_CUDA_DTYPE_BF16`). One launch on `stream`; writes
/// the device addresses of the sampler's result arrays (valid until the next call) to `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_cuda_verify_sample(
    sampler: *mut sb_cuda_sampler,
    trees: *const sb_cuda_trees,
    logits: *const core::ffi::c_void,
    dtype: u32,
    stream: *mut core::ffi::c_void,
    out: *mut sb_cuda_acceptance,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { super::obj_mut(sampler) }?;
        let t = unsafe { obj_ref(trees) }?;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        #[cfg(feature = "cuda")]
        {
            use crate::cuda::sample::{LogitsType, TreePtrs};
            let dtype = match dtype {
                SB_CUDA_DTYPE_F32 => LogitsType::F32,
                SB_CUDA_DTYPE_BF16 => LogitsType::Bf16,
                _ => return Err(Status::InvalidArgument),
            };
            let tp = device::trees(t)?;
            let ptrs = TreePtrs {
                len: tp.len,
                token: tp.token,
                first_child: tp.first_child,
                next_sibling: tp.next_sibling,
            };
            let lp = device::logits_addr(logits)?;
            // SAFETY: the device outlives its samplers (contract).
            let d = unsafe { obj_ref(s.device) }?;
            // SAFETY: the caller lends a valid stream of this context.
            let stream = unsafe { crate::cuda::Stream::borrowed(stream) };
            // SAFETY: the device buffers are the caller's contract (documented above).
            unsafe { s.sampler.launch_raw(&d.gpu, &stream, &ptrs, lp, dtype) }?;
            let p = &s.sampler;
            let acc = sb_cuda_acceptance {
                accept_len: p.accept_len_buffer().ptr() as *mut i32,
                accept_nodes: p.accept_nodes_buffer().ptr() as *mut i32,
                accept_tokens: p.accept_tokens_buffer().ptr() as *mut i32,
                bonus: p.bonus_buffer().ptr() as *mut i32,
                keep: p.keep_buffer().ptr() as *mut i32,
                status: p.status_buffer().ptr() as *mut i32,
            };
            // SAFETY: checked non-NULL.
            unsafe { write_out(out, acc) }
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = (s, t, logits, dtype, stream);
            Err(Status::NoDevice)
        }
    })
}

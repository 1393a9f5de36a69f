//! Greedy acceptance fused with the argmax over the target's logits (`kernels/accept_greedy.cu`).
//!
//! Two launches on the caller's stream, no host synchronisation: an argmax over every logits row of
//! every tree (grid rows x batch, one block per row, ties to the lowest id), then a walk per tree that
//! follows the child whose token equals the argmax at its parent (`crate::verify::greedy`).
//!
//! Logits are row-major `[batch, cap, vocab]` (`cap = max_nodes + 1`), f32 or bf16; row `i` of tree `b`
//! is the target's prediction after node `i`. Rows past the tree's length are not read.
//!
//! Outputs per tree (see [`AcceptPtrs`]): `accept_len: i32[batch]`, `accept_nodes, accept_tokens:
//! i32[batch*(max_depth+1)]` (unused entries -1), `bonus: i32[batch]`, `keep: i32[batch*(max_depth+2)]`
//! (`[0, nodes..., -1...]`, keep length = accept_len + 1), `status: i32[batch]`: 0; InvalidState for a
//! tree that failed to finalize; NonFinite when a visited row holds NaN or +inf; InvalidArgument when
//! a visited row is entirely -inf (as `crate::verify::sample` at temperature 0).

use std::vec::Vec;

use super::accept::AcceptBuffers;
use crate::cuda::tree::{FinalTreePtrs, GpuTree, TreeShape};
use crate::cuda::{DeviceBuffer, Gpu, Module, Stream, arg};
use crate::error::Error;

/// Threads per argmax block (must match `SB_ARGMAX_THREADS` in the kernel).
const ARGMAX_THREADS: u32 = 512;
/// Threads per walk block (one block per tree; they stage the tree in shared memory).
const WALK_THREADS: u32 = 128;

/// Element type of the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsDtype {
    /// 32-bit floats.
    F32,
    /// bfloat16 (as `u16` bit patterns on the host).
    Bf16,
}

/// Device addresses of the argmax scratch: `argmax, flag: i32[batch*cap]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArgmaxPtrs {
    /// Argmax per row.
    pub argmax: u64,
    /// 0 ok, 1 NaN / +inf, 2 entirely -inf, per row.
    pub flag: u64,
}

/// Device addresses of the acceptance outputs (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptPtrs {
    /// `i32[batch]`.
    pub accept_len: u64,
    /// `i32[batch*(max_depth+1)]`.
    pub accept_nodes: u64,
    /// `i32[batch*(max_depth+1)]`.
    pub accept_tokens: u64,
    /// `i32[batch]`.
    pub bonus: u64,
    /// `i32[batch*(max_depth+2)]`.
    pub keep: u64,
    /// `i32[batch]`.
    pub status: u64,
}

/// Greedy acceptance of a finalized batch from caller device memory: two launches on `stream`.
///
/// # Safety
/// `tree` must describe a batch of `shape` written by finalize; `logits` must hold
/// `batch * cap * vocab` elements of `dtype` (only rows below each tree's length are read); scratch
/// and outputs must be writable device allocations of the sizes the [module docs](self) give.
#[allow(clippy::too_many_arguments)]
pub unsafe fn greedy_raw(
    gpu: &Gpu,
    stream: &Stream,
    shape: &TreeShape,
    tree: &FinalTreePtrs,
    logits: u64,
    vocab: usize,
    dtype: LogitsDtype,
    scratch: &ArgmaxPtrs,
    out: &AcceptPtrs,
) -> Result<(), Error> {
    shape.validate()?;
    if vocab == 0 || vocab > i32::MAX as usize {
        return Err(Error::InvalidArgument("vocab must be in 1..=i32::MAX"));
    }
    let name = match dtype {
        LogitsDtype::F32 => c"sb_greedy_argmax_f32",
        LogitsDtype::Bf16 => c"sb_greedy_argmax_bf16",
    };
    let fa = gpu.function(Module::AcceptGreedy, name)?;
    let fw = gpu.function(Module::AcceptGreedy, c"sb_greedy_walk")?;
    let (v, cap, batch, max_depth) = (
        vocab as i32,
        shape.cap() as i32,
        shape.batch as i32,
        shape.max_depth as i32,
    );
    // SAFETY: argument types match the kernels; the caller vouches for the buffers.
    unsafe {
        gpu.launch(
            fa,
            (shape.cap() as u32, shape.batch as u32, 1),
            (ARGMAX_THREADS, 1, 1),
            0,
            stream,
            &mut [
                arg(&logits),
                arg(&v),
                arg(&cap),
                arg(&tree.len),
                arg(&scratch.argmax),
                arg(&scratch.flag),
            ],
        )?;
        gpu.launch(
            fw,
            (shape.batch as u32, 1, 1),
            (WALK_THREADS, 1, 1),
            (5 * shape.cap() * 4) as u32,
            stream,
            &mut [
                arg(&batch),
                arg(&cap),
                arg(&max_depth),
                arg(&tree.len),
                arg(&tree.token),
                arg(&tree.first_child),
                arg(&tree.next_sibling),
                arg(&scratch.argmax),
                arg(&scratch.flag),
                arg(&out.accept_len),
                arg(&out.accept_nodes),
                arg(&out.accept_tokens),
                arg(&out.bonus),
                arg(&out.keep),
                arg(&out.status),
            ],
        )
    }
}

/// One tree's acceptance downloaded to the host: the shared [`super::accept::HostAcceptance`] (its
/// `padded` tuple is deprecated in favour of the `raw_nodes`, `raw_tokens` and `raw_keep` fields).
pub use super::accept::HostAcceptance;

/// Greedy acceptance buffers for a batch, allocated at creation.
#[derive(Debug)]
pub struct GpuGreedy<'g> {
    gpu: &'g Gpu,
    shape: TreeShape,
    argmax: DeviceBuffer<i32>,
    flag: DeviceBuffer<i32>,
    accept_len: DeviceBuffer<i32>,
    accept_nodes: DeviceBuffer<i32>,
    accept_tokens: DeviceBuffer<i32>,
    bonus: DeviceBuffer<i32>,
    keep: DeviceBuffer<i32>,
    status: DeviceBuffer<i32>,
}

impl<'g> GpuGreedy<'g> {
    /// Allocates scratch and outputs for `batch` trees of `max_nodes` nodes and `max_depth` levels.
    pub fn new(
        gpu: &'g Gpu,
        batch: usize,
        max_nodes: usize,
        max_depth: usize,
    ) -> Result<Self, Error> {
        let shape = TreeShape {
            batch,
            max_nodes,
            max_depth,
        };
        shape.validate()?;
        let s = shape.slots();
        Ok(GpuGreedy {
            gpu,
            shape,
            argmax: DeviceBuffer::new(gpu, s)?,
            flag: DeviceBuffer::new(gpu, s)?,
            accept_len: DeviceBuffer::new(gpu, batch)?,
            accept_nodes: DeviceBuffer::new(gpu, batch * (max_depth + 1))?,
            accept_tokens: DeviceBuffer::new(gpu, batch * (max_depth + 1))?,
            bonus: DeviceBuffer::new(gpu, batch)?,
            keep: DeviceBuffer::new(gpu, batch * (max_depth + 2))?,
            status: DeviceBuffer::new(gpu, batch)?,
        })
    }

    /// Scratch addresses (the per-row argmax is useful on its own).
    pub fn argmax_ptrs(&self) -> ArgmaxPtrs {
        ArgmaxPtrs {
            argmax: self.argmax.ptr(),
            flag: self.flag.ptr(),
        }
    }

    /// Output addresses.
    pub fn accept_ptrs(&self) -> AcceptPtrs {
        AcceptPtrs {
            accept_len: self.accept_len.ptr(),
            accept_nodes: self.accept_nodes.ptr(),
            accept_tokens: self.accept_tokens.ptr(),
            bonus: self.bonus.ptr(),
            keep: self.keep.ptr(),
            status: self.status.ptr(),
        }
    }

    /// Poisons scratch and outputs with 0xFF bytes (tests).
    pub fn poison_outputs(&mut self) -> Result<(), Error> {
        self.argmax.fill_bytes(0xFF)?;
        self.flag.fill_bytes(0xFF)?;
        self.accept_len.fill_bytes(0xFF)?;
        self.accept_nodes.fill_bytes(0xFF)?;
        self.accept_tokens.fill_bytes(0xFF)?;
        self.bonus.fill_bytes(0xFF)?;
        self.keep.fill_bytes(0xFF)?;
        self.status.fill_bytes(0xFF)
    }

    /// Queues greedy acceptance of `tree` from logits at device address `logits`.
    ///
    /// # Safety
    /// `logits` must hold `batch * cap * vocab` elements of `dtype` on this GPU.
    pub unsafe fn greedy(
        &self,
        stream: &Stream,
        tree: &GpuTree<'_>,
        logits: u64,
        vocab: usize,
        dtype: LogitsDtype,
    ) -> Result<(), Error> {
        if tree.shape() != self.shape {
            return Err(Error::ShapeMismatch {
                what: "tree batch shape (batch * cap)",
                expected: self.shape.slots(),
                got: tree.shape().slots(),
            });
        }
        // SAFETY: owned scratch and outputs sized for the shape; logits per the caller.
        unsafe {
            greedy_raw(
                self.gpu,
                stream,
                &self.shape,
                &tree.output_ptrs(),
                logits,
                vocab,
                dtype,
                &self.argmax_ptrs(),
                &self.accept_ptrs(),
            )
        }
    }

    /// [`greedy`](Self::greedy) from an f32 device buffer, its size checked.
    pub fn greedy_f32(
        &self,
        stream: &Stream,
        tree: &GpuTree<'_>,
        logits: &DeviceBuffer<f32>,
        vocab: usize,
    ) -> Result<(), Error> {
        self.check_logits(logits.len(), vocab)?;
        // SAFETY: the buffer holds batch * cap * vocab floats.
        unsafe { self.greedy(stream, tree, logits.ptr(), vocab, LogitsDtype::F32) }
    }

    /// [`greedy`](Self::greedy) from a bf16 device buffer (`u16` bit patterns), its size checked.
    pub fn greedy_bf16(
        &self,
        stream: &Stream,
        tree: &GpuTree<'_>,
        logits: &DeviceBuffer<u16>,
        vocab: usize,
    ) -> Result<(), Error> {
        self.check_logits(logits.len(), vocab)?;
        // SAFETY: the buffer holds batch * cap * vocab bf16 values.
        unsafe { self.greedy(stream, tree, logits.ptr(), vocab, LogitsDtype::Bf16) }
    }

    fn check_logits(&self, len: usize, vocab: usize) -> Result<(), Error> {
        let expected = self
            .shape
            .slots()
            .checked_mul(vocab)
            .ok_or(Error::InvalidArgument("logits size overflows"))?;
        if len < expected {
            return Err(Error::BufferTooSmall {
                what: "logits (batch * cap * vocab)",
                needed: expected,
                got: len,
            });
        }
        Ok(())
    }

    /// The per-row argmax of the last run (`batch * cap`, rows past a tree's length unspecified).
    pub fn download_argmax(&self) -> Result<(Vec<i32>, Vec<i32>), Error> {
        Ok((self.argmax.to_vec()?, self.flag.to_vec()?))
    }

    /// Downloads every tree's acceptance (synchronously; synchronize the stream first).
    pub fn download(&self) -> Result<Vec<HostAcceptance>, Error> {
        let d = self.shape.max_depth;
        // The walk accepts up to `max_depth + 1` nodes (the width of its rows).
        self.buffers().read(self.shape.batch, d, d + 1)
    }

    fn buffers(&self) -> AcceptBuffers<'_> {
        AcceptBuffers {
            accept_len: &self.accept_len,
            accept_nodes: &self.accept_nodes,
            accept_tokens: &self.accept_tokens,
            bonus: &self.bonus,
            keep: &self.keep,
            status: &self.status,
        }
    }
}

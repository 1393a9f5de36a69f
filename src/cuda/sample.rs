//! Lossless sampling acceptance on the GPU (`kernels/accept_sample.cu`): the device twin of
//! [`verify::sample`](crate::verify::sample), for a batch of finalized draft trees at once.
//!
//! One thread block per sequence walks its tree; every visited row is reduced block-wide (maximum,
//! top-k and top-p cuts by radix search over order-preserving keys, the normaliser), never
//! materialising a softmax row. Token weights are bit-identical to the CPU's; masses are exact
//! fixed-point sums, so an outcome can differ from the CPU only when a coin lies within about 1e-7
//! (relative) of a decision boundary, where the CPU's own f32-lane sums are that far from exact.
//!
//! # Device format
//!
//! `cap = max_nodes + 1` slots per tree; tree `b` uses slots `[b * cap, (b + 1) * cap)`:
//! `len: i32[batch]`, `token, first_child, next_sibling: i32[batch * cap]` (children in ascending id
//! order, `-1` ends a list; parent ids are not needed). Logits are row-major `[batch, cap, vocab]`, f32
//! or bf16; row `i` of tree `b` is the target's prediction after node `i`. Only `len[b]` rows are read.
//!
//! Per-sequence parameters live in buffers owned by [`SampleAccept`] ([`SampleAccept::set_params`]),
//! as do the outputs: `accept_len: i32[batch]`, `accept_nodes, accept_tokens: i32[batch *
//! (max_depth + 1)]`, `bonus: i32[batch]`, `keep: i32[batch * (max_depth + 2)]` (`[0, nodes...]`) and
//! `status: i32[batch]` (0, or the [`Status`](crate::Status) code the CPU returns for that sequence).
//! Every output slot is written: unused slots hold -1; a failed sequence has `accept_len = 0`,
//! `bonus = -1` and all-`-1` lists.

use core::ffi::c_void;
use std::vec::Vec;

use super::accept::AcceptBuffers;
use super::{DeviceBuffer, Function, Gpu, Module, Stream, arg};
use crate::error::Error;
use crate::verify::Sampling;

/// Threads per block of the kernel (one block per sequence); matches `NT` in the kernel.
const THREADS: u32 = 512;
/// Largest vocabulary the kernel handles (its residual chunk table covers 2^20 tokens).
pub const MAX_VOCAB: usize = 1 << 20;

/// The device arrays of a batch of finalized trees (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct TreeBuffers<'a> {
    /// Nodes per tree including the root: `i32[batch]`.
    pub len: &'a DeviceBuffer<i32>,
    /// Token of every node: `i32[batch * cap]`.
    pub token: &'a DeviceBuffer<i32>,
    /// First child of every node, -1 for leaves: `i32[batch * cap]`.
    pub first_child: &'a DeviceBuffer<i32>,
    /// Next sibling of every node, -1 for the last: `i32[batch * cap]`.
    pub next_sibling: &'a DeviceBuffer<i32>,
}

/// Raw device addresses of the tree arrays, for [`SampleAccept::launch_raw`] (the C API).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreePtrs {
    /// `i32[batch]`.
    pub len: u64,
    /// `i32[batch * cap]`.
    pub token: u64,
    /// `i32[batch * cap]`.
    pub first_child: u64,
    /// `i32[batch * cap]`.
    pub next_sibling: u64,
}

/// Element type of the logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogitsType {
    /// IEEE f32.
    F32,
    /// bfloat16 (the top half of an f32), widened exactly on load.
    Bf16,
}

/// The acceptance of one sequence, downloaded by [`SampleAccept::read`]: the shared
/// [`HostAcceptance`](super::accept::HostAcceptance) (keep is empty on error).
pub type SampleOutput = super::accept::HostAcceptance;

/// GPU sampling acceptance for `batch` trees of up to `max_nodes` nodes over a `vocab`-token target:
/// the kernels, the per-sequence parameters and the outputs, all allocated once at creation.
#[derive(Debug)]
pub struct SampleAccept {
    batch: usize,
    max_nodes: usize,
    max_depth: usize,
    vocab: usize,
    f32_fn: Function,
    bf16_fn: Function,
    temperature: DeviceBuffer<f32>,
    top_k: DeviceBuffer<i32>,
    top_p: DeviceBuffer<f32>,
    seed: DeviceBuffer<u64>,
    accept_len: DeviceBuffer<i32>,
    accept_nodes: DeviceBuffer<i32>,
    accept_tokens: DeviceBuffer<i32>,
    bonus: DeviceBuffer<i32>,
    keep: DeviceBuffer<i32>,
    status: DeviceBuffer<i32>,
}

impl SampleAccept {
    /// Loads the kernels and allocates every buffer. Parameters start at temperature 1, no top-k, no
    /// top-p, seed 0. Limits: `batch >= 1`, `max_nodes` in `1..=MAX_NODES`, `max_depth` in
    /// `1..=MAX_DEPTH`, `vocab` in `1..=MAX_VOCAB`.
    pub fn new(
        gpu: &Gpu,
        batch: usize,
        max_nodes: usize,
        max_depth: usize,
        vocab: usize,
    ) -> Result<SampleAccept, Error> {
        if batch == 0 || batch > i32::MAX as usize {
            return Err(Error::InvalidArgument("batch must be >= 1"));
        }
        if max_nodes == 0 || max_nodes > crate::MAX_NODES {
            return Err(Error::InvalidArgument(
                "max_nodes must be in 1..=65536 (SB_MAX_NODES)",
            ));
        }
        if max_depth == 0 || max_depth > crate::MAX_DEPTH {
            return Err(Error::InvalidArgument(
                "max_depth must be in 1..=64 (SB_MAX_DEPTH)",
            ));
        }
        if vocab == 0 || vocab > MAX_VOCAB {
            return Err(Error::InvalidArgument(
                "vocab must be in 1..=1048576 for the GPU sampler",
            ));
        }
        let cap = max_nodes + 1;
        if batch.checked_mul(cap).is_none_or(|n| n > i32::MAX as usize) {
            return Err(Error::InvalidArgument(
                "batch * (max_nodes + 1) overflows i32",
            ));
        }
        gpu.bind()?;
        let f32_fn = gpu.function(Module::AcceptSample, c"sb_accept_sample_f32")?;
        let bf16_fn = gpu.function(Module::AcceptSample, c"sb_accept_sample_bf16")?;
        let mut s = SampleAccept {
            batch,
            max_nodes,
            max_depth,
            vocab,
            f32_fn,
            bf16_fn,
            temperature: DeviceBuffer::new(gpu, batch)?,
            top_k: DeviceBuffer::new(gpu, batch)?,
            top_p: DeviceBuffer::new(gpu, batch)?,
            seed: DeviceBuffer::new(gpu, batch)?,
            accept_len: DeviceBuffer::new(gpu, batch)?,
            accept_nodes: DeviceBuffer::new(gpu, batch * (max_depth + 1))?,
            accept_tokens: DeviceBuffer::new(gpu, batch * (max_depth + 1))?,
            bonus: DeviceBuffer::new(gpu, batch)?,
            keep: DeviceBuffer::new(gpu, batch * (max_depth + 2))?,
            status: DeviceBuffer::new(gpu, batch)?,
        };
        let defaults = std::vec![Sampling::default(); batch];
        let seeds = std::vec![0u64; batch];
        s.set_params(&defaults, &seeds)?;
        Ok(s)
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Slots per tree: `max_nodes + 1`.
    pub fn cap(&self) -> usize {
        self.max_nodes + 1
    }

    /// The deepest acceptance (root excluded); deeper walks report `DepthLimit`.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Vocabulary size (logits row length).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Uploads per-sequence sampling parameters and RNG seeds (synchronously; call it when they
    /// change, not necessarily every step). Out-of-range values are not rejected here: the kernel
    /// reports `InvalidArgument` for that sequence, as the CPU would.
    pub fn set_params(&mut self, sampling: &[Sampling], seeds: &[u64]) -> Result<(), Error> {
        if sampling.len() != self.batch || seeds.len() != self.batch {
            return Err(Error::ShapeMismatch {
                what: "sampling params and seeds (one per sequence)",
                expected: self.batch,
                got: if sampling.len() != self.batch {
                    sampling.len()
                } else {
                    seeds.len()
                },
            });
        }
        let t: Vec<f32> = sampling.iter().map(|s| s.temperature).collect();
        let k: Vec<i32> = sampling.iter().map(|s| s.top_k).collect();
        let p: Vec<f32> = sampling.iter().map(|s| s.top_p).collect();
        self.temperature.upload(&t)?;
        self.top_k.upload(&k)?;
        self.top_p.upload(&p)?;
        // `upload` returns once the data is on the device (it waits for the legacy stream).
        self.seed.upload(seeds)
    }

    /// Queues the acceptance of every sequence on `stream` (no host synchronisation). Checks that the
    /// buffers are large enough for `batch` trees of `cap` slots and `vocab` columns.
    pub fn launch_f32(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        tree: &TreeBuffers<'_>,
        logits: &DeviceBuffer<f32>,
    ) -> Result<(), Error> {
        self.check_tree(tree, logits.len())?;
        // SAFETY: every buffer was just checked to hold the slots the kernel reads.
        unsafe {
            self.launch_raw(
                gpu,
                stream,
                &Self::ptrs(tree),
                logits.ptr(),
                LogitsType::F32,
            )
        }
    }

    /// [`launch_f32`](Self::launch_f32) for bf16 logits (stored as their `u16` bit patterns).
    pub fn launch_bf16(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        tree: &TreeBuffers<'_>,
        logits: &DeviceBuffer<u16>,
    ) -> Result<(), Error> {
        self.check_tree(tree, logits.len())?;
        // SAFETY: as in `launch_f32`.
        unsafe {
            self.launch_raw(
                gpu,
                stream,
                &Self::ptrs(tree),
                logits.ptr(),
                LogitsType::Bf16,
            )
        }
    }

    fn ptrs(tree: &TreeBuffers<'_>) -> TreePtrs {
        TreePtrs {
            len: tree.len.ptr(),
            token: tree.token.ptr(),
            first_child: tree.first_child.ptr(),
            next_sibling: tree.next_sibling.ptr(),
        }
    }

    fn check_tree(&self, tree: &TreeBuffers<'_>, logits_len: usize) -> Result<(), Error> {
        let slots = self.batch * self.cap();
        let need = |what, got: usize, needed: usize| {
            if got < needed {
                Err(Error::BufferTooSmall { what, needed, got })
            } else {
                Ok(())
            }
        };
        need("tree len", tree.len.len(), self.batch)?;
        need("tree token", tree.token.len(), slots)?;
        need("tree first_child", tree.first_child.len(), slots)?;
        need("tree next_sibling", tree.next_sibling.len(), slots)?;
        let cells = slots
            .checked_mul(self.vocab)
            .ok_or(Error::InvalidArgument("logits size overflows"))?;
        need("logits", logits_len, cells)
    }

    /// Queues the kernel with raw device addresses (the C API's entry point).
    ///
    /// # Safety
    /// Every address must be a live device allocation of this GPU's context holding the sizes in the
    /// [module docs](self) (`batch` trees of `cap` slots, `batch * cap * vocab` logits of `dtype`),
    /// and nothing may write them until the kernel has run.
    pub unsafe fn launch_raw(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        tree: &TreePtrs,
        logits: u64,
        dtype: LogitsType,
    ) -> Result<(), Error> {
        gpu.bind()?;
        let f = match dtype {
            LogitsType::F32 => self.f32_fn,
            LogitsType::Bf16 => self.bf16_fn,
        };
        let batch = self.batch as i32;
        let cap = self.cap() as i32;
        let vocab = self.vocab as i32;
        let max_depth = self.max_depth as i32;
        let (t, k, p, sd) = (
            self.temperature.ptr(),
            self.top_k.ptr(),
            self.top_p.ptr(),
            self.seed.ptr(),
        );
        let (al, an, at, bo, ke, st) = (
            self.accept_len.ptr(),
            self.accept_nodes.ptr(),
            self.accept_tokens.ptr(),
            self.bonus.ptr(),
            self.keep.ptr(),
            self.status.ptr(),
        );
        let mut args: [*mut c_void; 19] = [
            arg(&tree.len),
            arg(&tree.token),
            arg(&tree.first_child),
            arg(&tree.next_sibling),
            arg(&logits),
            arg(&t),
            arg(&k),
            arg(&p),
            arg(&sd),
            arg(&batch),
            arg(&cap),
            arg(&vocab),
            arg(&max_depth),
            arg(&al),
            arg(&an),
            arg(&at),
            arg(&bo),
            arg(&ke),
            arg(&st),
        ];
        // SAFETY: one pointer per kernel parameter with the parameter's exact type (u64 device
        // addresses, i32 sizes); the caller guarantees the input allocations, the outputs are ours.
        unsafe {
            gpu.launch(
                f,
                (self.batch as u32, 1, 1),
                (THREADS, 1, 1),
                0,
                stream,
                &mut args,
            )
        }
    }

    /// `status: i32[batch]`.
    pub fn status_buffer(&self) -> &DeviceBuffer<i32> {
        &self.status
    }

    /// `accept_len: i32[batch]`.
    pub fn accept_len_buffer(&self) -> &DeviceBuffer<i32> {
        &self.accept_len
    }

    /// `accept_nodes: i32[batch * (max_depth + 1)]`.
    pub fn accept_nodes_buffer(&self) -> &DeviceBuffer<i32> {
        &self.accept_nodes
    }

    /// `accept_tokens: i32[batch * (max_depth + 1)]`.
    pub fn accept_tokens_buffer(&self) -> &DeviceBuffer<i32> {
        &self.accept_tokens
    }

    /// `bonus: i32[batch]`.
    pub fn bonus_buffer(&self) -> &DeviceBuffer<i32> {
        &self.bonus
    }

    /// `keep: i32[batch * (max_depth + 2)]`.
    pub fn keep_buffer(&self) -> &DeviceBuffer<i32> {
        &self.keep
    }

    /// Fills every output with `0xFF` bytes (-1), so a test sees any slot the kernel failed to write.
    pub fn poison_outputs(&mut self) -> Result<(), Error> {
        self.accept_len.fill_bytes(0xFF)?;
        self.accept_nodes.fill_bytes(0xFF)?;
        self.accept_tokens.fill_bytes(0xFF)?;
        self.bonus.fill_bytes(0xFF)?;
        self.keep.fill_bytes(0xFF)?;
        // Status gets a value no kernel path writes, so an unwritten status cannot pass as an error.
        self.status.fill_bytes(0x7F)
    }

    /// Waits for `stream` and downloads every sequence's outputs (a host helper for tests and tools).
    pub fn read(&self, stream: &Stream) -> Result<Vec<SampleOutput>, Error> {
        stream.synchronize()?;
        let mut out = AcceptBuffers {
            accept_len: &self.accept_len,
            accept_nodes: &self.accept_nodes,
            accept_tokens: &self.accept_tokens,
            bonus: &self.bonus,
            keep: &self.keep,
            status: &self.status,
        }
        .read(self.batch, self.max_depth, self.max_depth)?;
        for o in &mut out {
            if o.status != 0 {
                o.keep.clear();
            }
        }
        Ok(out)
    }
}

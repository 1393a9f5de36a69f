//! GPU draft-tree finalize (`kernels/tree.cu`), for a batch of trees; the verification layouts of a
//! finalized batch are in [`super::layout`].
//!
//! Device format: `cap = max_nodes + 1` slots per tree, tree `b` uses slots `[b * cap, (b + 1) * cap)`.
//!
//! - Raw input, as a drafter emits nodes (parents before children): `len: i32[batch]` (nodes including
//!   the root), `token: i32[batch*cap]` (slot 0 = root token), `parent: i32[batch*cap]` (the root's is
//!   ignored), `logprob: f32[batch*cap]` (edge log-probability; the root's is ignored),
//!   `meta: u32[batch*cap]` ([`pack_meta`]), `budget: i32[batch]`.
//! - [`sb_tree_finalize`](GpuTree::finalize) writes `status: i32[batch]` (0, or the [`Status`] code the
//!   CPU [`DraftTree`] returns for the same input; a failed tree gets `len` 0) and the finalized tree:
//!   `len, num_leaves, deepest: i32[batch]`, `token, parent, depth, source, first_child, next_sibling:
//!   i32[batch*cap]`, `cum, logprob: f32[batch*cap]`, `meta: u32[batch*cap]`, identical to
//!   [`DraftTree`]'s accessors after `finalize` (slots past `len` are unspecified).
//! - [`GpuLayouts`] writes every layout of `crate::layout` for a finalized
//!   batch; tokens, parents, depths, first child and next sibling are the finalize outputs themselves.
//!
//! Limit: `max_nodes <= 1024` ([`MAX_GPU_NODES`]): one block of 1024 threads per tree with the tree in
//! shared memory. Larger trees get [`Error::Capacity`].
//!
//! [`Status`]: crate::Status

use std::vec;
use std::vec::Vec;

use crate::cuda::{DeviceBuffer, Function, Gpu, Module, Stream, arg};
use crate::error::Error;
use crate::tree::{DraftTree, NodeMeta};

// The layouts moved to `super::layout`; their old paths here keep working.
#[doc(no_inline)]
pub use super::layout::{
    DeviceOut, GpuLayouts, HostLayouts, LayoutPtrs, LayoutShape, SeqIds, layouts_raw,
};

/// Largest `max_nodes` the GPU finalize supports.
pub const MAX_GPU_NODES: usize = 1024;

/// Threads per block: about one per node (the kernels loop over nodes with any block size), at least
/// `min` so small trees still spread the layout work; at most 1024.
fn threads_for(cap: usize, min: usize) -> u32 {
    (cap.div_ceil(32) * 32).clamp(min, 1024) as u32
}

/// Packs [`NodeMeta`] as the device stores it: `block | slot << 8 | rank_class << 16 | user << 24`.
pub fn pack_meta(m: NodeMeta) -> u32 {
    m.block as u32 | (m.slot as u32) << 8 | (m.rank_class as u32) << 16 | (m.user as u32) << 24
}

/// Inverse of [`pack_meta`].
pub fn unpack_meta(u: u32) -> NodeMeta {
    NodeMeta {
        block: u as u8,
        slot: (u >> 8) as u8,
        rank_class: (u >> 16) as u8,
        user: (u >> 24) as u8,
    }
}

/// Batch size and tree capacities of a device batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeShape {
    /// Number of trees.
    pub batch: usize,
    /// Non-root node capacity of every tree (as [`crate::tree::TreeParams::max_nodes`]).
    pub max_nodes: usize,
    /// Maximum depth (as [`crate::tree::TreeParams::max_depth`]).
    pub max_depth: usize,
}

impl TreeShape {
    /// Slots per tree: `max_nodes + 1`.
    pub fn cap(&self) -> usize {
        self.max_nodes + 1
    }

    /// Checks the limits: batch >= 1 (at most 65535), `1 <= max_nodes <= 1024`, `1 <= max_depth <= 64`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.batch == 0 || self.batch > 65535 {
            return Err(Error::InvalidArgument("batch must be in 1..=65535"));
        }
        if self.max_nodes > MAX_GPU_NODES {
            return Err(Error::Capacity {
                what: "GPU tree nodes (max_nodes)",
                capacity: MAX_GPU_NODES,
            });
        }
        if self.max_nodes == 0 {
            return Err(Error::InvalidArgument("max_nodes must be >= 1"));
        }
        if self.max_depth == 0 || self.max_depth > crate::MAX_DEPTH {
            return Err(Error::InvalidArgument("max_depth must be in 1..=64"));
        }
        Ok(())
    }

    /// Slots of the whole batch (`batch * cap`).
    pub fn slots(&self) -> usize {
        self.batch * self.cap()
    }
}

/// Entries of the finalize kernel's per-level group hash table: a power of two >= 2 * cap.
fn table_size(cap: usize) -> usize {
    (2 * cap).next_power_of_two()
}

/// Dynamic shared memory of `sb_tree_finalize` (must match the kernel's carving).
fn finalize_shared_bytes(cap: usize) -> usize {
    table_size(cap) * 16 + cap * 8 + cap * 4 * 13
}

/// Device addresses of a raw (unfinalized) batch; see the [module docs](self) for the format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawTreePtrs {
    /// `i32[batch]` nodes including the root.
    pub len: u64,
    /// `i32[batch*cap]`.
    pub token: u64,
    /// `i32[batch*cap]`.
    pub parent: u64,
    /// `f32[batch*cap]`.
    pub logprob: u64,
    /// `u32[batch*cap]`.
    pub meta: u64,
    /// `i32[batch]`.
    pub budget: u64,
}

/// Device addresses of a finalized batch; see the [module docs](self) for the format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FinalTreePtrs {
    /// `i32[batch]` status per tree.
    pub status: u64,
    /// `i32[batch]` nodes including the root (0 for a failed tree).
    pub len: u64,
    /// `i32[batch*cap]`.
    pub token: u64,
    /// `i32[batch*cap]` (-1 for the root).
    pub parent: u64,
    /// `i32[batch*cap]`.
    pub depth: u64,
    /// `i32[batch*cap]` insertion id.
    pub source: u64,
    /// `f32[batch*cap]`.
    pub cum: u64,
    /// `f32[batch*cap]`.
    pub logprob: u64,
    /// `u32[batch*cap]`.
    pub meta: u64,
    /// `i32[batch*cap]`.
    pub first_child: u64,
    /// `i32[batch*cap]`.
    pub next_sibling: u64,
    /// `i32[batch]`.
    pub num_leaves: u64,
    /// `i32[batch]`.
    pub deepest: u64,
}

/// The finalize kernel with its shared-memory limit raised for `shape`.
fn finalize_function(gpu: &Gpu, shape: &TreeShape) -> Result<Function, Error> {
    shape.validate()?;
    let f = gpu.function(Module::Tree, c"sb_tree_finalize")?;
    gpu.set_max_dynamic_shared(f, finalize_shared_bytes(shape.cap()) as u32)?;
    Ok(f)
}

/// Launches finalize with a prepared function (see [`finalize_raw`]).
///
/// # Safety
/// As [`finalize_raw`].
unsafe fn launch_finalize(
    gpu: &Gpu,
    f: Function,
    stream: &Stream,
    shape: &TreeShape,
    input: &RawTreePtrs,
    out: &FinalTreePtrs,
) -> Result<(), Error> {
    let cap = shape.cap();
    let (batch, max_nodes, max_depth) = (
        shape.batch as i32,
        shape.max_nodes as i32,
        shape.max_depth as i32,
    );
    let table = table_size(cap) as i32;
    let i = input;
    let o = out;
    // SAFETY: argument types match the kernel's signature; the caller vouches for the buffers.
    unsafe {
        gpu.launch(
            f,
            (shape.batch as u32, 1, 1),
            (threads_for(cap, 64), 1, 1),
            finalize_shared_bytes(cap) as u32,
            stream,
            &mut [
                arg(&batch),
                arg(&max_nodes),
                arg(&max_depth),
                arg(&table),
                arg(&i.len),
                arg(&i.token),
                arg(&i.parent),
                arg(&i.logprob),
                arg(&i.meta),
                arg(&i.budget),
                arg(&o.status),
                arg(&o.len),
                arg(&o.token),
                arg(&o.parent),
                arg(&o.depth),
                arg(&o.source),
                arg(&o.cum),
                arg(&o.logprob),
                arg(&o.meta),
                arg(&o.first_child),
                arg(&o.next_sibling),
                arg(&o.num_leaves),
                arg(&o.deepest),
            ],
        )
    }
}

/// Finalizes a batch of raw trees held in caller device memory (one launch on `stream`, no sync).
///
/// # Safety
/// Every pointer must be a device address of `gpu`'s context holding the element counts the
/// [module docs](self) give for `shape`, inputs initialised, outputs writable, none overlapping.
pub unsafe fn finalize_raw(
    gpu: &Gpu,
    stream: &Stream,
    shape: &TreeShape,
    input: &RawTreePtrs,
    out: &FinalTreePtrs,
) -> Result<(), Error> {
    let f = finalize_function(gpu, shape)?;
    // SAFETY: forwarded contract.
    unsafe { launch_finalize(gpu, f, stream, shape, input, out) }
}

/// Raw trees on the host in the device format, for uploads (tests, engines without a GPU drafter).
#[derive(Clone, Debug, PartialEq)]
pub struct HostRawTrees {
    /// The batch shape.
    pub shape: TreeShape,
    /// Nodes including the root per tree (may exceed `cap` to provoke Capacity).
    pub len: Vec<i32>,
    /// Tokens, `batch * cap`.
    pub token: Vec<i32>,
    /// Parents, `batch * cap`.
    pub parent: Vec<i32>,
    /// Edge log-probabilities, `batch * cap`.
    pub logprob: Vec<f32>,
    /// Packed metadata, `batch * cap`.
    pub meta: Vec<u32>,
    /// Budget per tree.
    pub budget: Vec<i32>,
}

impl HostRawTrees {
    /// An empty batch: every tree is a lone root with token 0 and budget 0.
    pub fn new(shape: TreeShape) -> Self {
        let s = shape.slots();
        HostRawTrees {
            shape,
            len: vec![1; shape.batch],
            token: vec![0; s],
            parent: vec![-1; s],
            logprob: vec![0.0; s],
            meta: vec![0; s],
            budget: vec![0; shape.batch],
        }
    }

    /// Sets tree `b`: the root token, then `(parent, token, logprob, meta)` per added node in order
    /// (ids 1, 2, ...), and the budget. Fails with Capacity when the nodes do not fit in `cap`.
    pub fn set(
        &mut self,
        b: usize,
        root_token: i32,
        nodes: &[(i32, i32, f32, NodeMeta)],
        budget: i32,
    ) -> Result<(), Error> {
        let cap = self.shape.cap();
        if b >= self.shape.batch {
            return Err(Error::InvalidArgument("tree index past the batch"));
        }
        if nodes.len() + 1 > cap {
            return Err(Error::Capacity {
                what: "GPU tree slots (max_nodes + 1)",
                capacity: cap,
            });
        }
        let o = b * cap;
        self.len[b] = nodes.len() as i32 + 1;
        self.token[o] = root_token;
        self.parent[o] = -1;
        self.logprob[o] = 0.0;
        self.meta[o] = 0;
        for (k, &(p, t, lp, m)) in nodes.iter().enumerate() {
            self.token[o + 1 + k] = t;
            self.parent[o + 1 + k] = p;
            self.logprob[o + 1 + k] = lp;
            self.meta[o + 1 + k] = pack_meta(m);
        }
        self.budget[b] = budget;
        Ok(())
    }
}

/// One finalized tree downloaded to the host (the first `len` slots of each array).
#[derive(Clone, Debug, PartialEq)]
pub struct HostFinalTree {
    /// 0, or the status code of the failure.
    pub status: i32,
    /// Tokens.
    pub token: Vec<i32>,
    /// Parents (-1 for the root).
    pub parent: Vec<i32>,
    /// Depths.
    pub depth: Vec<i32>,
    /// Insertion ids.
    pub source: Vec<i32>,
    /// Cumulative log-probabilities.
    pub cum: Vec<f32>,
    /// Edge log-probabilities.
    pub logprob: Vec<f32>,
    /// Packed metadata.
    pub meta: Vec<u32>,
    /// First child (-1 for leaves).
    pub first_child: Vec<i32>,
    /// Next sibling (-1 for the last).
    pub next_sibling: Vec<i32>,
    /// Leaves.
    pub num_leaves: i32,
    /// Depth of the deepest node.
    pub deepest: i32,
}

impl HostFinalTree {
    /// The same fields read from a finalized CPU tree (status 0), for comparisons.
    pub fn from_cpu(t: &DraftTree) -> Self {
        HostFinalTree {
            status: 0,
            token: t.tokens().to_vec(),
            parent: t.parents().to_vec(),
            depth: t.depths().iter().map(|&d| d as i32).collect(),
            source: t.source_ids().to_vec(),
            cum: t.cum_logprobs().to_vec(),
            logprob: t.logprobs().to_vec(),
            meta: t.metas().iter().map(|&m| pack_meta(m)).collect(),
            first_child: t.first_child().to_vec(),
            next_sibling: t.next_sibling().to_vec(),
            num_leaves: t.num_leaves() as i32,
            deepest: t.deepest() as i32,
        }
    }
}

/// A batch of trees on the device: the raw input buffers, the finalized output buffers (all allocated
/// at creation) and the prepared finalize kernel.
#[derive(Debug)]
pub struct GpuTree<'g> {
    gpu: &'g Gpu,
    shape: TreeShape,
    func: Function,
    in_len: DeviceBuffer<i32>,
    in_token: DeviceBuffer<i32>,
    in_parent: DeviceBuffer<i32>,
    in_logprob: DeviceBuffer<f32>,
    in_meta: DeviceBuffer<u32>,
    in_budget: DeviceBuffer<i32>,
    status: DeviceBuffer<i32>,
    len: DeviceBuffer<i32>,
    token: DeviceBuffer<i32>,
    parent: DeviceBuffer<i32>,
    depth: DeviceBuffer<i32>,
    source: DeviceBuffer<i32>,
    cum: DeviceBuffer<f32>,
    logprob: DeviceBuffer<f32>,
    meta: DeviceBuffer<u32>,
    first_child: DeviceBuffer<i32>,
    next_sibling: DeviceBuffer<i32>,
    num_leaves: DeviceBuffer<i32>,
    deepest: DeviceBuffer<i32>,
}

impl<'g> GpuTree<'g> {
    /// Allocates every buffer for `batch` trees of `max_nodes` nodes and `max_depth` levels.
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
        let func = finalize_function(gpu, &shape)?;
        let s = shape.slots();
        let mut t = GpuTree {
            gpu,
            shape,
            func,
            in_len: DeviceBuffer::new(gpu, batch)?,
            in_token: DeviceBuffer::new(gpu, s)?,
            in_parent: DeviceBuffer::new(gpu, s)?,
            in_logprob: DeviceBuffer::new(gpu, s)?,
            in_meta: DeviceBuffer::new(gpu, s)?,
            in_budget: DeviceBuffer::new(gpu, batch)?,
            status: DeviceBuffer::new(gpu, batch)?,
            len: DeviceBuffer::new(gpu, batch)?,
            token: DeviceBuffer::new(gpu, s)?,
            parent: DeviceBuffer::new(gpu, s)?,
            depth: DeviceBuffer::new(gpu, s)?,
            source: DeviceBuffer::new(gpu, s)?,
            cum: DeviceBuffer::new(gpu, s)?,
            logprob: DeviceBuffer::new(gpu, s)?,
            meta: DeviceBuffer::new(gpu, s)?,
            first_child: DeviceBuffer::new(gpu, s)?,
            next_sibling: DeviceBuffer::new(gpu, s)?,
            num_leaves: DeviceBuffer::new(gpu, batch)?,
            deepest: DeviceBuffer::new(gpu, batch)?,
        };
        // A finalize-less batch reads as "not finalized" (len 0) rather than garbage.
        t.len.fill_bytes(0)?;
        t.in_len.fill_bytes(0)?;
        Ok(t)
    }

    /// The batch shape.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// Device addresses of the raw input buffers (a GPU drafter writes here).
    pub fn input_ptrs(&self) -> RawTreePtrs {
        RawTreePtrs {
            len: self.in_len.ptr(),
            token: self.in_token.ptr(),
            parent: self.in_parent.ptr(),
            logprob: self.in_logprob.ptr(),
            meta: self.in_meta.ptr(),
            budget: self.in_budget.ptr(),
        }
    }

    /// Device addresses of the finalized output buffers.
    pub fn output_ptrs(&self) -> FinalTreePtrs {
        FinalTreePtrs {
            status: self.status.ptr(),
            len: self.len.ptr(),
            token: self.token.ptr(),
            parent: self.parent.ptr(),
            depth: self.depth.ptr(),
            source: self.source.ptr(),
            cum: self.cum.ptr(),
            logprob: self.logprob.ptr(),
            meta: self.meta.ptr(),
            first_child: self.first_child.ptr(),
            next_sibling: self.next_sibling.ptr(),
            num_leaves: self.num_leaves.ptr(),
            deepest: self.deepest.ptr(),
        }
    }

    /// Copies raw trees from the host (synchronously). The shape must match.
    pub fn upload(&mut self, raw: &HostRawTrees) -> Result<(), Error> {
        if raw.shape != self.shape {
            return Err(Error::ShapeMismatch {
                what: "raw trees shape (batch * cap)",
                expected: self.shape.slots(),
                got: raw.shape.slots(),
            });
        }
        self.in_len.upload(&raw.len)?;
        self.in_token.upload(&raw.token)?;
        self.in_parent.upload(&raw.parent)?;
        self.in_logprob.upload(&raw.logprob)?;
        self.in_meta.upload(&raw.meta)?;
        self.in_budget.upload(&raw.budget)
    }

    /// Poisons every output buffer with 0xFF bytes (tests).
    pub fn poison_outputs(&mut self) -> Result<(), Error> {
        self.status.fill_bytes(0xFF)?;
        self.len.fill_bytes(0xFF)?;
        self.token.fill_bytes(0xFF)?;
        self.parent.fill_bytes(0xFF)?;
        self.depth.fill_bytes(0xFF)?;
        self.source.fill_bytes(0xFF)?;
        self.cum.fill_bytes(0xFF)?;
        self.logprob.fill_bytes(0xFF)?;
        self.meta.fill_bytes(0xFF)?;
        self.first_child.fill_bytes(0xFF)?;
        self.next_sibling.fill_bytes(0xFF)?;
        self.num_leaves.fill_bytes(0xFF)?;
        self.deepest.fill_bytes(0xFF)
    }

    /// Queues finalize of the uploaded (or drafter-written) raw batch on `stream`: one launch.
    pub fn finalize(&self, stream: &Stream) -> Result<(), Error> {
        // SAFETY: every buffer is owned and sized for `shape`.
        unsafe {
            launch_finalize(
                self.gpu,
                self.func,
                stream,
                &self.shape,
                &self.input_ptrs(),
                &self.output_ptrs(),
            )
        }
    }

    /// Downloads every finalized tree (synchronously; synchronize the stream first).
    pub fn download(&self) -> Result<Vec<HostFinalTree>, Error> {
        let cap = self.shape.cap();
        let (status, len) = (self.status.to_vec()?, self.len.to_vec()?);
        let (token, parent, depth) = (
            self.token.to_vec()?,
            self.parent.to_vec()?,
            self.depth.to_vec()?,
        );
        let (source, cum, logprob) = (
            self.source.to_vec()?,
            self.cum.to_vec()?,
            self.logprob.to_vec()?,
        );
        let (meta, fc, ns) = (
            self.meta.to_vec()?,
            self.first_child.to_vec()?,
            self.next_sibling.to_vec()?,
        );
        let (leaves, deepest) = (self.num_leaves.to_vec()?, self.deepest.to_vec()?);
        let mut out = Vec::with_capacity(self.shape.batch);
        for b in 0..self.shape.batch {
            let n = (len[b].clamp(0, cap as i32)) as usize;
            let r = b * cap..b * cap + n;
            out.push(HostFinalTree {
                status: status[b],
                token: token[r.clone()].to_vec(),
                parent: parent[r.clone()].to_vec(),
                depth: depth[r.clone()].to_vec(),
                source: source[r.clone()].to_vec(),
                cum: cum[r.clone()].to_vec(),
                logprob: logprob[r.clone()].to_vec(),
                meta: meta[r.clone()].to_vec(),
                first_child: fc[r.clone()].to_vec(),
                next_sibling: ns[r].to_vec(),
                num_leaves: leaves[b],
                deepest: deepest[b],
            });
        }
        Ok(out)
    }

    /// Tree lengths only (synchronously).
    pub fn download_len(&self) -> Result<Vec<i32>, Error> {
        self.len.to_vec()
    }
}

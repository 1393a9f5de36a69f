//! GPU draft-tree finalize and verification layouts (`kernels/tree.cu`), for a batch of trees.
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
//! - [`GpuLayouts`] writes every layout of `crate::layout` for a finalized batch; tokens, parents,
//!   depths, first child and next sibling are the finalize outputs themselves.
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

// ------------------------------------------------------------------------------------------------
// Layouts

/// Shape of a layout batch: the trees plus the widest prefix the prefix-carrying masks hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutShape {
    /// The trees.
    pub tree: TreeShape,
    /// Largest `prefix_len` any tree may have (bit rows with prefix, flat bits).
    pub max_prefix: u32,
    /// Row width of the retrieve paths (>= `max_depth + 1`).
    pub row_width: usize,
}

impl LayoutShape {
    /// Per-tree elements of positions, sequence starts and counts (`cap`).
    pub fn nodes_stride(&self) -> usize {
        self.tree.cap()
    }
    /// Per-tree elements of the dense mask and the bias (`cap * cap`).
    pub fn dense_stride(&self) -> usize {
        self.tree.cap() * self.tree.cap()
    }
    /// Per-tree words of the bit rows without prefix (`cap * ceil(cap / 32)`).
    pub fn bits_stride(&self) -> usize {
        self.tree.cap() * self.tree.cap().div_ceil(32)
    }
    /// Per-tree words of the bit rows with prefix (`cap * ceil((max_prefix + cap) / 32)`).
    pub fn bits_prefix_stride(&self) -> usize {
        self.tree.cap() * (self.max_prefix as usize + self.tree.cap()).div_ceil(32)
    }
    /// Per-tree bytes of the flat bits (`ceil(cap * (max_prefix + cap) / 8)`).
    pub fn flat_stride(&self) -> usize {
        (self.tree.cap() * (self.max_prefix as usize + self.tree.cap())).div_ceil(8)
    }
    /// Per-tree elements of the retrieve paths (`cap * row_width`).
    pub fn paths_stride(&self) -> usize {
        self.tree.cap() * self.row_width
    }

    fn validate(&self) -> Result<(), Error> {
        self.tree.validate()?;
        if self.max_prefix > i32::MAX as u32 - MAX_GPU_NODES as u32 - 1 {
            return Err(Error::InvalidArgument("max_prefix too large"));
        }
        if self.row_width < self.tree.max_depth + 1 {
            return Err(Error::BufferTooSmall {
                what: "retrieve path row width",
                needed: self.tree.max_depth + 1,
                got: self.row_width,
            });
        }
        Ok(())
    }
}

/// A device output: address and capacity in elements (address 0 = not wanted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceOut {
    /// Device address, or 0.
    pub ptr: u64,
    /// Elements the allocation holds.
    pub len: usize,
}

/// Where the layouts go. Tree `b`'s layout sits at `b * stride` (strides from [`LayoutShape`]) and is
/// packed there exactly as the CPU function writes it for that tree's length and prefix.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayoutPtrs {
    /// `i32[batch]`: 0, or the status code of the first failing layout check.
    pub status: DeviceOut,
    /// `i32`, [`crate::layout::positions`].
    pub positions: DeviceOut,
    /// `u8`, [`crate::layout::mask_dense`].
    pub dense: DeviceOut,
    /// `f32`, [`crate::layout::mask_bias`].
    pub bias: DeviceOut,
    /// `u32`, [`crate::layout::mask_bits`] with prefix 0. Required (the source of the masks).
    pub bits: DeviceOut,
    /// `u32`, [`crate::layout::mask_bits`] with the tree's prefix.
    pub bits_prefix: DeviceOut,
    /// `u8`, [`crate::layout::mask_flat_bits`] with the tree's prefix.
    pub flat: DeviceOut,
    /// `i32`, [`crate::layout::retrieve_paths`] (rows = that tree's leaves).
    pub paths: DeviceOut,
    /// `i32`, [`crate::layout::seq_ranges`] starts.
    pub seq_first: DeviceOut,
    /// `i32`, [`crate::layout::seq_ranges`] counts.
    pub seq_count: DeviceOut,
}

/// Checks every wanted output's capacity for `shape` (BufferTooSmall otherwise).
fn check_layout_ptrs(shape: &LayoutShape, o: &LayoutPtrs) -> Result<(), Error> {
    let b = shape.tree.batch;
    let need = |what: &'static str, d: DeviceOut, per_tree: usize, required: bool| {
        if d.ptr == 0 {
            return if required {
                Err(Error::InvalidArgument(
                    "a required layout output is missing",
                ))
            } else {
                Ok(())
            };
        }
        let needed = per_tree * b;
        if d.len < needed {
            return Err(Error::BufferTooSmall {
                what,
                needed,
                got: d.len,
            });
        }
        Ok(())
    };
    need("layout status", o.status, 1, true)?;
    need("bit mask", o.bits, shape.bits_stride(), true)?;
    need("positions", o.positions, shape.nodes_stride(), false)?;
    need("dense mask", o.dense, shape.dense_stride(), false)?;
    need("mask bias", o.bias, shape.dense_stride(), false)?;
    need(
        "bit mask with prefix",
        o.bits_prefix,
        shape.bits_prefix_stride(),
        false,
    )?;
    need("flat bit mask", o.flat, shape.flat_stride(), false)?;
    need("retrieve paths", o.paths, shape.paths_stride(), false)?;
    need(
        "sequence range starts",
        o.seq_first,
        shape.nodes_stride(),
        false,
    )?;
    need(
        "sequence range counts",
        o.seq_count,
        shape.nodes_stride(),
        false,
    )
}

/// llama.cpp sequence ids: leaf `k` of a tree is sequence `first_seq_id + k`; a tree with
/// `first_seq_id + leaves > max_seq` fails its layouts with Capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqIds {
    /// First sequence id (>= 0).
    pub first_seq_id: i32,
    /// llama.cpp's `n_seq_max`.
    pub max_seq: u32,
}

/// Dynamic shared memory of `sb_tree_layouts` (must match the kernel's carving).
fn layouts_shared_bytes(shape: &TreeShape) -> usize {
    let cap = shape.cap();
    (6 * cap + shape.max_depth + 2) * 4 + cap * cap.div_ceil(32) * 4
}

/// The layouts kernel with its shared-memory limit raised for `shape`.
fn layouts_function(gpu: &Gpu, shape: &TreeShape) -> Result<Function, Error> {
    shape.validate()?;
    let f = gpu.function(Module::Tree, c"sb_tree_layouts")?;
    gpu.set_max_dynamic_shared(f, layouts_shared_bytes(shape) as u32)?;
    Ok(f)
}

/// Writes every wanted layout of a finalized batch (one launch on `stream`, no sync). `prefix_len` is a
/// device `u32[batch]`; sequence ranges follow `seq` ([`SeqIds`]). Output capacities are checked here
/// first ([`Error::BufferTooSmall`]).
///
/// # Safety
/// `tree` must point at a finalized batch of `shape.tree` (written by finalize), `prefix_len` at
/// `batch` readable `u32`, and every non-zero output at a writable device allocation of at least its
/// stated `len` elements, none overlapping.
pub unsafe fn layouts_raw(
    gpu: &Gpu,
    stream: &Stream,
    shape: &LayoutShape,
    tree: &FinalTreePtrs,
    prefix_len: u64,
    out: &LayoutPtrs,
    seq: SeqIds,
) -> Result<(), Error> {
    let f = layouts_function(gpu, &shape.tree)?;
    // SAFETY: forwarded contract.
    unsafe { launch_layouts(gpu, f, stream, shape, tree, prefix_len, out, seq) }
}

/// Launches the layouts kernel with a prepared function after the host-side checks.
///
/// # Safety
/// As [`layouts_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn launch_layouts(
    gpu: &Gpu,
    f: Function,
    stream: &Stream,
    shape: &LayoutShape,
    tree: &FinalTreePtrs,
    prefix_len: u64,
    out: &LayoutPtrs,
    seq: SeqIds,
) -> Result<(), Error> {
    shape.validate()?;
    check_layout_ptrs(shape, out)?;
    let (first_seq_id, max_seq) = (seq.first_seq_id, seq.max_seq);
    if first_seq_id < 0 {
        return Err(Error::InvalidArgument("first_seq_id must be >= 0"));
    }
    let t = &shape.tree;
    let (batch, max_nodes, max_depth) = (t.batch as i32, t.max_nodes as i32, t.max_depth as i32);
    let (row_width, max_prefix) = (shape.row_width as i32, shape.max_prefix as i32);
    let want_seq = (out.seq_first.ptr != 0 || out.seq_count.ptr != 0) as i32;
    // SAFETY: argument types match the kernel; the caller vouches for the buffers, whose sizes were
    // checked above.
    unsafe {
        gpu.launch(
            f,
            (t.batch as u32, 1, 1),
            // Layout writes are instruction-bound on one SM per tree: use every thread a block has.
            (1024, 1, 1),
            layouts_shared_bytes(t) as u32,
            stream,
            &mut [
                arg(&batch),
                arg(&max_nodes),
                arg(&max_depth),
                arg(&row_width),
                arg(&max_prefix),
                arg(&first_seq_id),
                arg(&max_seq),
                arg(&want_seq),
                arg(&tree.len),
                arg(&tree.parent),
                arg(&tree.depth),
                arg(&tree.first_child),
                arg(&tree.next_sibling),
                arg(&tree.num_leaves),
                arg(&tree.deepest),
                arg(&prefix_len),
                arg(&out.status.ptr),
                arg(&out.positions.ptr),
                arg(&out.dense.ptr),
                arg(&out.bias.ptr),
                arg(&out.bits.ptr),
                arg(&out.bits_prefix.ptr),
                arg(&out.flat.ptr),
                arg(&out.paths.ptr),
                arg(&out.seq_first.ptr),
                arg(&out.seq_count.ptr),
            ],
        )
    }
}

/// Every layout buffer for a batch, allocated at creation, plus the per-tree prefix lengths.
#[derive(Debug)]
pub struct GpuLayouts<'g> {
    gpu: &'g Gpu,
    shape: LayoutShape,
    func: Function,
    prefix_len: DeviceBuffer<u32>,
    status: DeviceBuffer<i32>,
    positions: DeviceBuffer<i32>,
    dense: DeviceBuffer<u8>,
    bias: DeviceBuffer<f32>,
    bits: DeviceBuffer<u32>,
    bits_prefix: DeviceBuffer<u32>,
    flat: DeviceBuffer<u8>,
    paths: DeviceBuffer<i32>,
    seq_first: DeviceBuffer<i32>,
    seq_count: DeviceBuffer<i32>,
}

/// One tree's layouts downloaded to the host, each trimmed to what the CPU function writes.
#[derive(Clone, Debug, PartialEq)]
pub struct HostLayouts {
    /// 0, or the status code.
    pub status: i32,
    /// Positions.
    pub positions: Vec<i32>,
    /// Dense mask.
    pub dense: Vec<u8>,
    /// Additive bias.
    pub bias: Vec<f32>,
    /// Bit rows without prefix.
    pub bits: Vec<u32>,
    /// Bit rows with the prefix.
    pub bits_prefix: Vec<u32>,
    /// Flat bits with the prefix.
    pub flat: Vec<u8>,
    /// Retrieve paths (leaves x row_width).
    pub paths: Vec<i32>,
    /// Sequence range starts.
    pub seq_first: Vec<i32>,
    /// Sequence range counts.
    pub seq_count: Vec<i32>,
}

impl<'g> GpuLayouts<'g> {
    /// Allocates every layout for `batch` trees; retrieve-path rows are `max_depth + 1` wide.
    pub fn new(
        gpu: &'g Gpu,
        batch: usize,
        max_nodes: usize,
        max_depth: usize,
        max_prefix: u32,
    ) -> Result<Self, Error> {
        let shape = LayoutShape {
            tree: TreeShape {
                batch,
                max_nodes,
                max_depth,
            },
            max_prefix,
            row_width: max_depth + 1,
        };
        shape.validate()?;
        let func = layouts_function(gpu, &shape.tree)?;
        let mut l = GpuLayouts {
            gpu,
            shape,
            func,
            prefix_len: DeviceBuffer::new(gpu, batch)?,
            status: DeviceBuffer::new(gpu, batch)?,
            positions: DeviceBuffer::new(gpu, batch * shape.nodes_stride())?,
            dense: DeviceBuffer::new(gpu, batch * shape.dense_stride())?,
            bias: DeviceBuffer::new(gpu, batch * shape.dense_stride())?,
            bits: DeviceBuffer::new(gpu, batch * shape.bits_stride())?,
            bits_prefix: DeviceBuffer::new(gpu, batch * shape.bits_prefix_stride())?,
            flat: DeviceBuffer::new(gpu, batch * shape.flat_stride())?,
            paths: DeviceBuffer::new(gpu, batch * shape.paths_stride())?,
            seq_first: DeviceBuffer::new(gpu, batch * shape.nodes_stride())?,
            seq_count: DeviceBuffer::new(gpu, batch * shape.nodes_stride())?,
        };
        l.prefix_len.fill_bytes(0)?;
        Ok(l)
    }

    /// The layout shape.
    pub fn shape(&self) -> LayoutShape {
        self.shape
    }

    /// Device address of the `u32[batch]` prefix lengths (an engine may write them there directly).
    pub fn prefix_len_ptr(&self) -> u64 {
        self.prefix_len.ptr()
    }

    /// Sets the prefix lengths (synchronously).
    pub fn set_prefix_len(&mut self, prefix_len: &[u32]) -> Result<(), Error> {
        if prefix_len.len() != self.shape.tree.batch {
            return Err(Error::ShapeMismatch {
                what: "prefix lengths (batch)",
                expected: self.shape.tree.batch,
                got: prefix_len.len(),
            });
        }
        self.prefix_len.upload(prefix_len)
    }

    /// The output addresses and capacities.
    pub fn ptrs(&self) -> LayoutPtrs {
        let d = |ptr, len| DeviceOut { ptr, len };
        LayoutPtrs {
            status: d(self.status.ptr(), self.status.len()),
            positions: d(self.positions.ptr(), self.positions.len()),
            dense: d(self.dense.ptr(), self.dense.len()),
            bias: d(self.bias.ptr(), self.bias.len()),
            bits: d(self.bits.ptr(), self.bits.len()),
            bits_prefix: d(self.bits_prefix.ptr(), self.bits_prefix.len()),
            flat: d(self.flat.ptr(), self.flat.len()),
            paths: d(self.paths.ptr(), self.paths.len()),
            seq_first: d(self.seq_first.ptr(), self.seq_first.len()),
            seq_count: d(self.seq_count.ptr(), self.seq_count.len()),
        }
    }

    /// Poisons every output with 0xFF bytes (tests).
    pub fn poison_outputs(&mut self) -> Result<(), Error> {
        self.status.fill_bytes(0xFF)?;
        self.positions.fill_bytes(0xFF)?;
        self.dense.fill_bytes(0xFF)?;
        self.bias.fill_bytes(0xFF)?;
        self.bits.fill_bytes(0xFF)?;
        self.bits_prefix.fill_bytes(0xFF)?;
        self.flat.fill_bytes(0xFF)?;
        self.paths.fill_bytes(0xFF)?;
        self.seq_first.fill_bytes(0xFF)?;
        self.seq_count.fill_bytes(0xFF)
    }

    /// Queues every layout of `tree`'s finalized batch on `stream` (one launch).
    pub fn layouts(
        &self,
        stream: &Stream,
        tree: &GpuTree<'_>,
        first_seq_id: i32,
        max_seq: u32,
    ) -> Result<(), Error> {
        if tree.shape() != self.shape.tree {
            return Err(Error::ShapeMismatch {
                what: "tree batch shape (batch * cap)",
                expected: self.shape.tree.slots(),
                got: tree.shape().slots(),
            });
        }
        let seq = SeqIds {
            first_seq_id,
            max_seq,
        };
        // SAFETY: owned buffers sized for the shape; the tree's buffers belong to a `GpuTree` of it.
        unsafe {
            launch_layouts(
                self.gpu,
                self.func,
                stream,
                &self.shape,
                &tree.output_ptrs(),
                self.prefix_len.ptr(),
                &self.ptrs(),
                seq,
            )
        }
    }

    /// Downloads tree `b`'s layouts (synchronously), trimmed with its length `n`, prefix and leaves.
    pub fn download(
        &self,
        b: usize,
        n: usize,
        prefix_len: u32,
        leaves: usize,
    ) -> Result<HostLayouts, Error> {
        let s = &self.shape;
        let cap = s.tree.cap();
        if b >= s.tree.batch || n > cap || prefix_len > s.max_prefix || leaves > cap {
            return Err(Error::InvalidArgument("layout download out of range"));
        }
        fn part<T: crate::cuda::DeviceCopy>(
            buf: &DeviceBuffer<T>,
            start: usize,
            len: usize,
        ) -> Result<Vec<T>, Error> {
            let all = buf.to_vec()?;
            Ok(all[start..start + len].to_vec())
        }
        let p = prefix_len as usize;
        Ok(HostLayouts {
            status: part(&self.status, b, 1)?[0],
            positions: part(&self.positions, b * s.nodes_stride(), n)?,
            dense: part(&self.dense, b * s.dense_stride(), n * n)?,
            bias: part(&self.bias, b * s.dense_stride(), n * n)?,
            bits: part(&self.bits, b * s.bits_stride(), n * n.div_ceil(32))?,
            bits_prefix: part(
                &self.bits_prefix,
                b * s.bits_prefix_stride(),
                n * (p + n).div_ceil(32),
            )?,
            flat: part(&self.flat, b * s.flat_stride(), (n * (p + n)).div_ceil(8))?,
            paths: part(&self.paths, b * s.paths_stride(), leaves * s.row_width)?,
            seq_first: part(&self.seq_first, b * s.nodes_stride(), n)?,
            seq_count: part(&self.seq_count, b * s.nodes_stride(), n)?,
        })
    }
}

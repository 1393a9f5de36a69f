//! GPU verification layouts (`kernels/tree.cu`'s `sb_tree_layouts`) for a batch of finalized trees:
//! the device twin of [`crate::layout`], as [`super::tree`] is the twin of [`crate::tree`]'s finalize.
//!
//! [`GpuLayouts`] writes every layout of `crate::layout` for a batch finalized by
//! [`GpuTree`] (device format: see [`super::tree`]); tokens, parents, depths,
//! first child and next sibling are the finalize outputs themselves. [`layouts_raw`] does the same from
//! caller device memory. Tree `b`'s layout sits at `b * stride` (strides from [`LayoutShape`]), packed
//! exactly as the CPU function writes it for that tree's length and prefix.

use std::vec::Vec;

use super::tree::{FinalTreePtrs, GpuTree, MAX_GPU_NODES, TreeShape};
use super::{DeviceBuffer, Function, Gpu, Module, Stream, arg};
use crate::error::Error;

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

//! The SpecBlock drafter block forward on the GPU (docs/drafter-forward.md): cuBLAS bf16 GEMMs
//! ([`super::blas`]) composed with the non-GEMM kernels of `kernels/drafter.cu` ([`ops`]).
//!
//! [`GpuDrafter`] holds the weights (bf16 matrices, f32 norm weights), uploaded once, a context cache
//! per sequence of a fixed batch (f32 post-RoPE keys and values, `[kv_head][entries*K][head_dim]` per
//! sequence and layer), and every working buffer, all allocated at creation. A forward queues its work
//! on a caller's stream without synchronising and without allocating:
//!
//! 1. `plan_*` validates a call against the capacities, writes the per-row metadata (positions, visible
//!    cache prefix, own-slot count) into a host staging array and queues its upload (an async copy);
//! 2. `launch_*` queues the kernels and GEMMs of the plan; it does nothing on the host that a CUDA graph
//!    capture would miss, so one plan can be captured once and replayed (the benchmark does);
//! 3. `commit_context` records the appended entries in the host-side bookkeeping.
//!
//! [`GpuDrafter::context_forward`] and [`GpuDrafter::seed_forward`] do the three steps. Outputs stay on
//! the device: logits, rank logits, pre-norm hiddens, normed hiddens and the top candidates of every row
//! (rows are group-major, `group * K + slot`, groups in sequence order).
//!
//! Precision: weights and GEMM inputs bf16, accumulation and GEMM outputs f32, the residual stream, the
//! norms, RoPE, attention, softmax and the rank features in f32 (see `kernels/drafter.cu`).
//!
//! The module mirrors [`crate::drafter`]: [`ops`] holds the launch wrappers of the per-op kernels, as
//! [`crate::drafter::ops`] holds their CPU twins. (The GPU drafter used to be `cuda::block` and the ops
//! `cuda::drafter`; the old names still resolve, deprecated.)
mod deprecated;
mod forward;
pub mod ops;
mod weights;

use core::ffi::c_void;
use std::vec::Vec;

use cudarc::driver::sys;

use super::blas::Blas;
use super::{DeviceBuffer, Gpu, Stream, check};
use crate::drafter::DrafterConfig;
use crate::error::Error;
#[allow(deprecated)]
pub use deprecated::*;
pub use weights::fill_random;
use weights::{Scratch, Weights};

// The rank head's hidden width, defined once with the CPU drafter.
use crate::drafter::ops::RANK_HIDDEN;

/// The drafter's shape (the subset of [`DrafterConfig`] the forward needs).
#[derive(Clone, Debug, PartialEq)]
pub struct GpuDrafterDims {
    /// Hidden size H.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// FFN width.
    pub ffn: usize,
    /// Target vocabulary (rows of the token embedding).
    pub vocab: usize,
    /// Draft vocabulary (rows of the LM head).
    pub draft_vocab: usize,
    /// Target hidden size (features are `3 x target_hidden` wide).
    pub target_hidden: usize,
    /// Slots per entry K.
    pub slots: usize,
    /// Rank-feature top-T.
    pub rank_topk: usize,
    /// Rank classes.
    pub rank_classes: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE theta.
    pub rope_theta: f32,
}

impl GpuDrafterDims {
    /// The dims of a drafter config.
    pub fn from_config(c: &DrafterConfig) -> Self {
        GpuDrafterDims {
            hidden: c.hidden,
            layers: c.layers,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            ffn: c.ffn,
            vocab: c.vocab,
            draft_vocab: c.draft_vocab,
            target_hidden: c.target_hidden,
            slots: c.slots,
            rank_topk: c.rank_topk,
            rank_classes: c.rank_classes,
            rms_eps: c.rms_eps,
            rope_theta: c.rope_theta,
        }
    }

    /// A SpecBlock drafter for Llama-3.1-8B: H 4096, 2 layers, 32 heads / 8 KV heads of 128, FFN 14336,
    /// draft vocabulary 32000, target vocabulary 128256, features 3 x 4096, K 4, T 10, 4 rank classes.
    pub fn llama31_8b() -> Self {
        GpuDrafterDims {
            hidden: 4096,
            layers: 2,
            heads: 32,
            kv_heads: 8,
            head_dim: 128,
            ffn: 14336,
            vocab: 128_256,
            draft_vocab: 32_000,
            target_hidden: 4096,
            slots: 4,
            rank_topk: 10,
            rank_classes: 4,
            rms_eps: 1e-5,
            rope_theta: 500_000.0,
        }
    }

    fn qkv(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    fn check(&self) -> Result<(), Error> {
        let ok = self.hidden > 0
            && self.layers > 0
            && self.kv_heads > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.head_dim.is_multiple_of(4)
            && (4..=ops::MAX_HEAD_DIM).contains(&self.head_dim)
            && (1..=ops::MAX_SLOTS).contains(&self.slots)
            && (10..=ops::MAX_SELECT).contains(&self.rank_topk)
            && self.rank_topk <= self.draft_vocab
            && self.rank_classes > 0
            && self.ffn > 0
            && self.vocab > 0
            && self.target_hidden > 0;
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "GPU drafter dims out of the kernels' range",
            ))
        }
    }
}

/// Capacities fixed at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuDrafterCapacity {
    /// Sequences (independent context caches).
    pub sequences: usize,
    /// Largest number of groups (entries or seeds, all sequences together) in one forward.
    pub max_groups: usize,
    /// Committed entries each sequence's cache holds.
    pub context_entries: usize,
    /// Top candidates written per row (0..=64).
    pub candidates: usize,
}

/// One sequence's rows in the planned forward.
#[derive(Clone, Copy, Debug, Default)]
struct SeqRows {
    seq: usize,
    first_row: usize,
    rows: usize,
    /// Cache row where a context forward appends (entries already committed x K).
    append_at: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlanKind {
    None,
    Context,
    Seeds,
}

/// The drafter block forward on one GPU for a fixed batch of sequences (see the module docs).
pub struct GpuDrafter<'g> {
    gpu: &'g Gpu,
    k: ops::DrafterKernels,
    blas: Blas,
    dims: GpuDrafterDims,
    cap: GpuDrafterCapacity,
    w: Weights,
    s: Scratch,
    /// Per layer: keys and values of every sequence, `[seq][kv_head][context_entries*K][head_dim]`.
    cache_k: Vec<DeviceBuffer<f32>>,
    cache_v: Vec<DeviceBuffer<f32>>,
    /// Committed entries and last base position per sequence (host bookkeeping).
    entries: Vec<usize>,
    last_base: Vec<u32>,
    /// Host staging for `meta` (reused; never reallocated).
    staging: Vec<i32>,
    plan: Vec<SeqRows>,
    plan_kind: PlanKind,
    plan_groups: usize,
    /// Entries the planned context forward appends, per sequence, and their last base.
    plan_append: Vec<(usize, u32)>,
    /// `rank_in` row stride: `H + 15` rounded up to 8 elements (16-byte rows for cuBLAS).
    rank_stride: usize,
}

impl core::fmt::Debug for GpuDrafter<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GpuDrafter")
            .field("dims", &self.dims)
            .field("capacity", &self.cap)
            .finish_non_exhaustive()
    }
}

impl<'g> GpuDrafter<'g> {
    /// The drafter's shape.
    pub fn dims(&self) -> &GpuDrafterDims {
        &self.dims
    }

    /// The capacities fixed at creation.
    pub fn capacity(&self) -> GpuDrafterCapacity {
        self.cap
    }

    /// Committed entries of sequence `seq`.
    pub fn entries(&self, seq: usize) -> usize {
        self.entries.get(seq).copied().unwrap_or(0)
    }

    /// Forgets every entry of sequence `seq` (its cache rows are overwritten by later appends).
    pub fn reset(&mut self, seq: usize) {
        if let Some(e) = self.entries.get_mut(seq) {
            *e = 0;
        }
    }

    /// Bytes of weights one forward reads (each matrix once; the embedding rows, norms and caches are
    /// not counted): with or without `W_cond` (context forwards use it, seed forwards do not).
    pub fn weight_bytes(&self, with_cond: bool) -> usize {
        let w = &self.w;
        let mut n = w.fuse.len() + w.lm.len() + w.rank1.len() + w.rank2.len();
        n += w.shift.iter().map(|b| b.len()).sum::<usize>();
        for l in &w.layers {
            n += l.wqkv.len() + l.wo.len() + l.w_gate_up.len() + l.w_down.len();
        }
        if with_cond {
            n += w.cond.len();
        }
        2 * n
    }

    /// Bytes of context cache (keys and values, all layers) a forward over `rows_per_seq` planned
    /// sequences reads when every sequence holds `entries` entries.
    pub fn cache_bytes(&self, sequences: usize, entries: usize) -> usize {
        let d = &self.dims;
        2 * d.layers * sequences * d.kv_heads * entries * d.slots * d.head_dim * 4
    }

    /// f32 `[rows, draft_vocab]` logits of the last forward.
    pub fn logits(&self) -> &DeviceBuffer<f32> {
        &self.s.logits
    }

    /// f32 `[rows, rank_classes]` rank logits of the last forward.
    pub fn rank_logits(&self) -> &DeviceBuffer<f32> {
        &self.s.rank_logits
    }

    /// f32 `[rows, hidden]` pre-norm hiddens of the last forward (they condition the next block).
    pub fn hidden(&self) -> &DeviceBuffer<f32> {
        &self.s.x
    }

    /// f32 `[rows, hidden]` normed hiddens of the last forward.
    pub fn normed(&self) -> &DeviceBuffer<f32> {
        &self.s.normed
    }

    /// i32 `[rows, candidates]` target ids of each row's top candidates, best first.
    pub fn candidate_ids(&self) -> &DeviceBuffer<i32> {
        &self.s.cand_ids
    }

    /// f32 `[rows, candidates]` their log-softmax over the draft vocabulary.
    pub fn candidate_logprobs(&self) -> &DeviceBuffer<f32> {
        &self.s.cand_logprobs
    }

    /// Tests: fills every output buffer with 0xFF bytes (NaN for f32, -1 for ids), so a value the next
    /// forward fails to write cannot pass for a result.
    pub fn poison_outputs(&mut self) -> Result<(), Error> {
        let s = &mut self.s;
        s.logits.fill_bytes(0xFF)?;
        s.rank_logits.fill_bytes(0xFF)?;
        s.x.fill_bytes(0xFF)?;
        s.normed.fill_bytes(0xFF)?;
        s.cand_ids.fill_bytes(0xFF)?;
        s.cand_logprobs.fill_bytes(0xFF)?;
        // The memsets run on the legacy stream, which does not order against non-blocking streams.
        self.gpu.bind()?;
        // SAFETY: plain driver call with this GPU's context current.
        check("cuCtxSynchronize", unsafe { sys::cuCtxSynchronize() })
    }

    /// Reads the status word of the last forward (synchronises `stream`): a token outside the
    /// embedding is [`Error::TokenOutOfRange`] (its row was computed with a zero token vector).
    pub fn check_status(&self, stream: &Stream) -> Result<(), Error> {
        stream.synchronize()?;
        let mut st = [0i32];
        self.s.status.download(&mut st)?;
        if st[0] & ops::STATUS_TOKEN_OUT_OF_RANGE != 0 {
            return Err(Error::TokenOutOfRange {
                what: "GPU drafter input",
                token: -1,
                vocab: self.dims.vocab,
            });
        }
        Ok(())
    }

    /// Queues the upload of the first `n` staged metadata rows (positions, prefix, own) to `meta`.
    fn upload_meta(&self, stream: &Stream, rows: usize) -> Result<(), Error> {
        let max_rows = self.staging.len() / 3;
        // The three arrays sit at 0, max_rows and 2 max_rows in both the staging and `meta`; copy each
        // planned prefix. Pageable host memory: the driver stages it before returning (no device sync).
        for part in 0..3 {
            let off = part * max_rows;
            if rows == 0 {
                continue;
            }
            // SAFETY: `rows <= max_rows`, so both ranges are inside their allocations.
            check("cuMemcpyHtoDAsync", unsafe {
                sys::cuMemcpyHtoDAsync_v2(
                    self.s.meta.ptr_at(off),
                    self.staging[off..off + rows].as_ptr() as *const c_void,
                    rows * 4,
                    stream.raw() as sys::CUstream,
                )
            })?;
        }
        Ok(())
    }

    /// Plans a context forward: sequence `seq` appends `entries[seq]` entries (groups in sequence
    /// order, entry-major), entry `g` at base position `bases[g]`. Validates the capacities and queues
    /// the metadata upload; [`launch_context`](Self::launch_context) then runs it and
    /// [`commit_context`](Self::commit_context) records it.
    pub fn plan_context(
        &mut self,
        stream: &Stream,
        entries: &[usize],
        bases: &[u32],
    ) -> Result<(), Error> {
        let k = self.dims.slots;
        if entries.len() > self.cap.sequences {
            return Err(Error::Capacity {
                what: "GPU drafter sequences",
                capacity: self.cap.sequences,
            });
        }
        let groups: usize = entries.iter().sum();
        if groups != bases.len() {
            return Err(Error::ShapeMismatch {
                what: "bases (one per new entry)",
                expected: groups,
                got: bases.len(),
            });
        }
        if groups > self.cap.max_groups {
            return Err(Error::Capacity {
                what: "GPU drafter groups per forward",
                capacity: self.cap.max_groups,
            });
        }
        for (seq, &n) in entries.iter().enumerate() {
            if self.entries[seq] + n > self.cap.context_entries {
                return Err(Error::Capacity {
                    what: "GPU drafter context entries",
                    capacity: self.cap.context_entries,
                });
            }
        }
        let max_rows = self.staging.len() / 3;
        self.plan.clear();
        let mut g = 0;
        for (seq, &n) in entries.iter().enumerate() {
            let before = self.entries[seq];
            self.plan_append[seq] = (n, if n > 0 { bases[g + n - 1] } else { 0 });
            if n == 0 {
                continue;
            }
            self.plan.push(SeqRows {
                seq,
                first_row: g * k,
                rows: n * k,
                append_at: before * k,
            });
            for i in 0..n {
                for slot in 0..k {
                    let r = (g + i) * k + slot;
                    self.staging[r] = (bases[g + i] as usize + slot) as i32;
                    // Earlier entries, earlier new entries of this batch, own slots 0..=slot.
                    self.staging[max_rows + r] = ((before + i) * k + slot + 1) as i32;
                    self.staging[2 * max_rows + r] = 0;
                }
            }
            g += n;
        }
        for rest in &mut self.plan_append[entries.len()..] {
            *rest = (0, 0);
        }
        self.upload_meta(stream, groups * k)?;
        self.plan_kind = PlanKind::Context;
        self.plan_groups = groups;
        Ok(())
    }

    /// Plans a seed forward (block 2): sequence `seq` runs `seeds[seq]` seeds from its last committed
    /// entry; seed `g` sees that entry's slots `0..=visibility[g]`. Positions are the entry's.
    pub fn plan_seeds(
        &mut self,
        stream: &Stream,
        seeds: &[usize],
        visibility: &[u32],
    ) -> Result<(), Error> {
        let k = self.dims.slots;
        if seeds.len() > self.cap.sequences {
            return Err(Error::Capacity {
                what: "GPU drafter sequences",
                capacity: self.cap.sequences,
            });
        }
        let groups: usize = seeds.iter().sum();
        if groups != visibility.len() {
            return Err(Error::ShapeMismatch {
                what: "seed visibilities",
                expected: groups,
                got: visibility.len(),
            });
        }
        if groups > self.cap.max_groups {
            return Err(Error::Capacity {
                what: "GPU drafter groups per forward",
                capacity: self.cap.max_groups,
            });
        }
        if visibility.iter().any(|&v| v as usize >= k) {
            return Err(Error::InvalidArgument("seed visibility must be < slots"));
        }
        if seeds
            .iter()
            .enumerate()
            .any(|(seq, &n)| n > 0 && self.entries[seq] == 0)
        {
            return Err(Error::InvalidState("seed forward needs a committed entry"));
        }
        let max_rows = self.staging.len() / 3;
        self.plan.clear();
        let mut g = 0;
        for (seq, &n) in seeds.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let origin = self.entries[seq] - 1;
            let base = self.last_base[seq] as usize;
            self.plan.push(SeqRows {
                seq,
                first_row: g * k,
                rows: n * k,
                append_at: 0,
            });
            for i in 0..n {
                for slot in 0..k {
                    let r = (g + i) * k + slot;
                    self.staging[r] = (base + slot) as i32;
                    self.staging[max_rows + r] =
                        (origin * k + visibility[g + i] as usize + 1) as i32;
                    self.staging[2 * max_rows + r] = (slot + 1) as i32;
                }
            }
            g += n;
        }
        self.upload_meta(stream, groups * k)?;
        self.plan_kind = PlanKind::Seeds;
        self.plan_groups = groups;
        Ok(())
    }

    /// Records the planned context forward's entries as committed (after its launch).
    pub fn commit_context(&mut self) -> Result<(), Error> {
        if self.plan_kind != PlanKind::Context {
            return Err(Error::InvalidState("no planned context forward to commit"));
        }
        for (seq, &(n, last)) in self.plan_append.iter().enumerate() {
            if n > 0 {
                self.entries[seq] += n;
                self.last_base[seq] = last;
            }
        }
        self.plan_kind = PlanKind::None;
        Ok(())
    }

    /// Context forward: plan, launch and commit (see [`plan_context`](Self::plan_context)).
    ///
    /// # Safety
    /// `features` must be device memory of this GPU holding f32 `[groups, 3 target_hidden]` (dense)
    /// and `tokens` i32 `[groups]`, both left untouched until the queued work has run.
    pub unsafe fn context_forward(
        &mut self,
        stream: &Stream,
        features: u64,
        tokens: u64,
        entries: &[usize],
        bases: &[u32],
    ) -> Result<(), Error> {
        self.plan_context(stream, entries, bases)?;
        // SAFETY: forwarded contract.
        if let Err(e) = unsafe { self.launch_context(stream, features, tokens) } {
            // Nothing is committed: the entries' rows are overwritten by the next append.
            self.plan_kind = PlanKind::None;
            return Err(e);
        }
        self.commit_context()
    }

    /// Seed forward: plan and launch (see [`plan_seeds`](Self::plan_seeds)).
    ///
    /// # Safety
    /// `hidden` must be device memory of this GPU holding f32 `[groups, hidden]` (dense) and `tokens`
    /// i32 `[groups]`, both left untouched until the queued work has run; `hidden` must not be
    /// [`hidden`](Self::hidden)'s buffer (the forward overwrites it).
    pub unsafe fn seed_forward(
        &mut self,
        stream: &Stream,
        hidden: u64,
        tokens: u64,
        seeds: &[usize],
        visibility: &[u32],
    ) -> Result<(), Error> {
        self.plan_seeds(stream, seeds, visibility)?;
        // SAFETY: forwarded contract.
        unsafe { self.launch_seeds(stream, hidden, tokens) }
    }

    /// Queues the planned context forward (capturable in a graph; appends at the planned cache rows,
    /// so replays overwrite the same rows until [`commit_context`](Self::commit_context)).
    ///
    /// # Safety
    /// As [`context_forward`](Self::context_forward).
    pub unsafe fn launch_context(
        &self,
        stream: &Stream,
        features: u64,
        tokens: u64,
    ) -> Result<(), Error> {
        if self.plan_kind != PlanKind::Context {
            return Err(Error::InvalidState("no planned context forward"));
        }
        let (d, g) = (&self.dims, self.plan_groups);
        if features == 0 || tokens == 0 {
            return Err(Error::InvalidArgument("null features or tokens"));
        }
        let fw = 3 * d.target_hidden;
        // SAFETY: the scratch buffers are sized for max_groups >= g; the caller vouches for inputs.
        unsafe {
            self.k.f32_to_bf16(
                self.gpu,
                stream,
                &ops::Elementwise {
                    x: features,
                    x_stride: fw,
                    rows: g,
                    n: fw,
                    out: self.s.feat.ptr(),
                    out_stride: fw,
                },
            )?;
            self.gemm(
                stream,
                g,
                d.hidden,
                fw,
                self.s.feat.ptr(),
                fw,
                &self.w.cond,
                self.s.cond.ptr(),
                d.hidden,
                0.0,
            )?;
            self.launch_body(stream, self.s.cond.ptr(), tokens, true)
        }
    }

    /// Queues the planned seed forward (capturable in a graph).
    ///
    /// # Safety
    /// As [`seed_forward`](Self::seed_forward).
    pub unsafe fn launch_seeds(
        &self,
        stream: &Stream,
        hidden: u64,
        tokens: u64,
    ) -> Result<(), Error> {
        if self.plan_kind != PlanKind::Seeds {
            return Err(Error::InvalidState("no planned seed forward"));
        }
        if hidden == 0 || tokens == 0 {
            return Err(Error::InvalidArgument("null seed hiddens or tokens"));
        }
        // SAFETY: forwarded contract.
        unsafe { self.launch_body(stream, hidden, tokens, false) }
    }

    /// `c = a · w^T + beta c` (bf16 x bf16 -> f32) on the handle.
    ///
    /// # Safety
    /// Addresses valid for the shapes.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        &self,
        stream: &Stream,
        rows: usize,
        out: usize,
        inner: usize,
        a: u64,
        lda: usize,
        w: &DeviceBuffer<u16>,
        c: u64,
        ldc: usize,
        beta: f32,
    ) -> Result<(), Error> {
        debug_assert!(w.len() >= out * inner);
        // SAFETY: forwarded contract.
        unsafe {
            self.blas
                .gemm_bf16_raw(stream, rows, out, inner, a, lda, w.ptr(), c, ldc, beta)
        }
    }
}

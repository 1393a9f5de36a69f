//! Launch wrappers for `kernels/drafter.cu`: the SpecBlock drafter block forward's non-GEMM ops
//! (docs/drafter-forward.md). The GEMMs (cuBLAS, bf16 x bf16 -> f32) are composed with these by
//! [`GpuDrafter`](super::GpuDrafter).
//!
//! Precision: the residual stream, GEMM outputs and the attention caches are f32; every op that
//! produces a GEMM input writes bf16 (round-to-nearest-even, `u16` device buffers on the Rust side).
//! Matrices are row-major and every `*_stride` is in elements, so an output may be a column slice of a
//! wider buffer (pass the address of its first column): concats are formed without copies.
//!
//! Every wrapper is a thin `unsafe fn` on [`DrafterKernels`] taking raw device addresses (`u64`, 0 =
//! null where a field says "nullable") in an argument struct; it validates what it can see (sizes,
//! strides, null pointers) and returns [`Error::InvalidArgument`], [`Error::ShapeMismatch`] or
//! [`Error::Capacity`] before launching. Nothing synchronises. The CPU twins are in
//! [`crate::drafter::ops`].
//!
//! Attention comes in two forms: [`DrafterKernels::attention`] (one pass, one row per block, no
//! workspace) and [`DrafterKernels::attention_split`] (rows share key tiles and the keys are split
//! over blocks, merged by a second kernel; needs an f32 workspace of [`attention_workspace_len`]).
//! On an H100, 64 rows x 9 heads (3 KV heads, d 64) over 4096 keys take about 360 us one-pass and
//! 130 us split; 16 rows split about 63 us. Prefer the split form.

use core::ffi::{CStr, c_void};

use crate::cuda::{Function, Gpu, Module, Stream, arg, check};
use crate::error::Error;

/// Bit ORed into the status word by [`DrafterKernels::fuse_inputs`] when a token is outside the
/// embedding's rows.
pub const STATUS_TOKEN_OUT_OF_RANGE: i32 = 1;
/// Largest `slots` (K) [`DrafterKernels::fuse_inputs`] accepts.
pub const MAX_SLOTS: usize = 64;
/// Largest `head_dim` [`DrafterKernels::attention`] accepts (it must also be a multiple of 4).
pub const MAX_HEAD_DIM: usize = 128;
/// Largest `topk_t` and `kc` of [`DrafterKernels::head_features`].
pub const MAX_SELECT: usize = 64;
/// Number of rank features (docs/drafter-forward.md §4); defined once, with the CPU drafter's weights.
pub use crate::drafter::ops::RANK_FEATURES;

const BLOCK: u32 = 256;
/// `ATT_THREADS` and `ATT_MAX_Q` (query vectors, rows x heads, per block) of kernels/drafter.cu.
const ATT_THREADS: u32 = 256;
const ATT_MAX_Q: usize = 16;
/// Threads of `sb_head_features` (its `__launch_bounds__`).
const HEAD_THREADS: u32 = 1024;
/// Keys per attention tile (`ATT_TILE`).
const ATT_TILE: usize = 32;
/// Most key splits [`DrafterKernels::attention_split`] uses.
pub const MAX_SPLITS: usize = 32;

/// Workspace (f32 elements) with which [`DrafterKernels::attention_split`] may use every split it
/// wants for `rows` rows of `n_heads` heads of `head_dim`.
pub fn attention_workspace_len(rows: usize, n_heads: usize, head_dim: usize) -> usize {
    rows * n_heads * MAX_SPLITS * (head_dim + 2)
}

/// Every kernel of `kernels/drafter.cu`, looked up once.
#[derive(Clone, Copy, Debug)]
pub struct DrafterKernels {
    fuse_inputs: Function,
    rmsnorm: Function,
    add_rmsnorm: Function,
    rope: Function,
    cache_append: Function,
    attention: Function,
    attention_combine: Function,
    swiglu: Function,
    silu_bf16: Function,
    shift_concat: Function,
    f32_to_bf16: Function,
    head_features: Function,
}

/// Arguments of [`DrafterKernels::fuse_inputs`].
#[derive(Clone, Copy, Debug, Default)]
pub struct FuseInputs {
    /// f32 `[groups, hidden]` conditions (`W_cond f` for features, a drafter hidden for seeds).
    pub cond: u64,
    /// Row stride of `cond` (>= hidden).
    pub cond_stride: usize,
    /// i32 `[groups]` token ids (checked on the device against `vocab`).
    pub tokens: u64,
    /// bf16 `[vocab, hidden]` token embedding.
    pub embed: u64,
    /// Rows of `embed`.
    pub vocab: usize,
    /// f32 `[slots, hidden]` position queries `P` (not normed).
    pub queries: u64,
    /// f32 `[hidden]` `condition_norm` weight.
    pub w_cond: u64,
    /// f32 `[hidden]` `token_norm` weight.
    pub w_tok: u64,
    /// f32 `[hidden]` `query_norm` weight.
    pub w_query: u64,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// Entries or seeds.
    pub groups: usize,
    /// Slots per group (K, <= [`MAX_SLOTS`]).
    pub slots: usize,
    /// Hidden size H.
    pub hidden: usize,
    /// bf16 `[groups * slots, 3 * hidden]` output.
    pub out: u64,
    /// Row stride of `out` (>= 3 * hidden).
    pub out_stride: usize,
    /// i32 status word: [`STATUS_TOKEN_OUT_OF_RANGE`] is ORed in for a bad token (never cleared by
    /// the kernel: see [`DrafterKernels::clear_status`]).
    pub status: u64,
}

/// Arguments of [`DrafterKernels::rmsnorm`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RmsNorm {
    /// f32 `[rows, n]` input.
    pub x: u64,
    /// Row stride of `x` (>= n).
    pub x_stride: usize,
    /// f32 `[n]` weight.
    pub w: u64,
    /// Epsilon.
    pub eps: f32,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub n: usize,
    /// bf16 `[rows, n]` output.
    pub out: u64,
    /// Row stride of `out` (>= n).
    pub out_stride: usize,
    /// Nullable f32 `[rows, n]` copy of the output.
    pub out_f32: u64,
    /// Row stride of `out_f32` (>= n when it is given).
    pub out_f32_stride: usize,
}

/// Arguments of [`DrafterKernels::add_rmsnorm`].
#[derive(Clone, Copy, Debug, Default)]
pub struct AddRmsNorm {
    /// f32 `[rows, n]` residual stream (contiguous), updated in place: `x += delta`.
    pub x: u64,
    /// f32 `[rows, n]` (contiguous) addend, e.g. the o_proj or down_proj GEMM output.
    pub delta: u64,
    /// f32 `[n]` weight.
    pub w: u64,
    /// Epsilon.
    pub eps: f32,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub n: usize,
    /// bf16 `[rows, n]` RMSNorm of the updated `x`.
    pub out: u64,
    /// Row stride of `out` (>= n).
    pub out_stride: usize,
    /// Nullable f32 `[rows, n]` copy of the normed output (e.g. the final `n_k`).
    pub out_f32: u64,
    /// Row stride of `out_f32` (>= n when it is given).
    pub out_f32_stride: usize,
}

/// Arguments of [`DrafterKernels::rope`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Rope {
    /// f32 `[rows, n_heads * head_dim]` queries, rotated in place.
    pub q: u64,
    /// Row stride of `q` (e.g. `(n_heads + 2 n_kv) head_dim` inside a fused QKV GEMM output).
    pub q_stride: usize,
    /// f32 `[rows, n_kv * head_dim]` keys, rotated in place.
    pub k: u64,
    /// Row stride of `k`.
    pub k_stride: usize,
    /// i32 `[rows]` positions (entry base + slot).
    pub positions: u64,
    /// f32 `[head_dim / 2]` inverse frequencies, computed on the host like the CPU drafter
    /// ([`crate::drafter::ops::rope_inv_freq`]).
    pub inv_freq: u64,
    /// Rows.
    pub rows: usize,
    /// Query heads.
    pub n_heads: usize,
    /// KV heads.
    pub n_kv: usize,
    /// Head dimension (even).
    pub head_dim: usize,
}

/// Arguments of [`DrafterKernels::cache_append`].
#[derive(Clone, Copy, Debug, Default)]
pub struct CacheAppend {
    /// f32 `[rows, n_kv * head_dim]` post-RoPE keys.
    pub k_src: u64,
    /// f32 `[rows, n_kv * head_dim]` values.
    pub v_src: u64,
    /// Row stride of `k_src` and `v_src`.
    pub src_stride: usize,
    /// Rows to append.
    pub rows: usize,
    /// KV heads.
    pub n_kv: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// f32 `[n_kv, capacity, head_dim]` key cache of one layer.
    pub cache_k: u64,
    /// f32 value cache, same layout.
    pub cache_v: u64,
    /// Cache rows per KV head (entries x slots).
    pub capacity: usize,
    /// First cache row written.
    pub row_offset: usize,
}

/// Arguments of [`DrafterKernels::attention`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Attention {
    /// f32 `[rows, n_heads * head_dim]` post-RoPE queries.
    pub q: u64,
    /// Row stride of `q`.
    pub q_stride: usize,
    /// f32 `[n_kv, capacity, head_dim]` key cache of the layer (16-byte aligned).
    pub cache_k: u64,
    /// f32 value cache, same layout (16-byte aligned).
    pub cache_v: u64,
    /// Cache rows per KV head.
    pub capacity: usize,
    /// i32 `[rows]`: row `r` sees cache rows `0..prefix_len[r]` (clamped to `0..=capacity`).
    pub prefix_len: u64,
    /// f32 `[rows, n_kv * head_dim]` own-group keys (nullable when `own_len` is null; 16-byte
    /// aligned).
    pub own_k: u64,
    /// f32 own-group values, same layout (16-byte aligned).
    pub own_v: u64,
    /// Row stride of `own_k` and `own_v` (a multiple of 4).
    pub own_stride: usize,
    /// Nullable i32 `[rows]`: row `r` also sees own rows `r - own_len[r] + 1 ..= r` (clamped to
    /// `0..=r + 1` keys), after the cache keys. Seeds: `k + 1` for slot k; context rows: 0.
    pub own_len: u64,
    /// Rows (<= 65535).
    pub rows: usize,
    /// Query heads.
    pub n_heads: usize,
    /// KV heads (divides `n_heads`; head j uses KV head `j / (n_heads / n_kv)`).
    pub n_kv: usize,
    /// Head dimension (a multiple of 4, up to [`MAX_HEAD_DIM`]).
    pub head_dim: usize,
    /// Score scale, normally `1 / sqrt(head_dim)`.
    pub scale: f32,
    /// bf16 `[rows, n_heads * head_dim]` output (the o_proj GEMM input).
    pub out: u64,
    /// Row stride of `out`.
    pub out_stride: usize,
}

/// Arguments of [`DrafterKernels::swiglu`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Swiglu {
    /// f32 gate `[rows, ffn]`.
    pub gate: u64,
    /// f32 up `[rows, ffn]`; for a fused `[rows, 2 ffn]` gate-up buffer: `gate + 4 ffn` bytes.
    pub up: u64,
    /// Row stride shared by `gate` and `up` (`2 ffn` for the fused buffer).
    pub in_stride: usize,
    /// Rows.
    pub rows: usize,
    /// FFN width F.
    pub ffn: usize,
    /// bf16 `[rows, ffn]` output `silu(gate) * up`.
    pub out: u64,
    /// Row stride of `out`.
    pub out_stride: usize,
}

/// Arguments of an element-wise f32 -> bf16 op ([`DrafterKernels::silu_bf16`],
/// [`DrafterKernels::f32_to_bf16`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Elementwise {
    /// f32 `[rows, n]` input.
    pub x: u64,
    /// Row stride of `x`.
    pub x_stride: usize,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub n: usize,
    /// bf16 `[rows, n]` output.
    pub out: u64,
    /// Row stride of `out`.
    pub out_stride: usize,
}

/// Arguments of [`DrafterKernels::shift_concat`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ShiftConcat {
    /// f32 `[groups * slots, hidden]` slot vectors X.
    pub x: u64,
    /// Row stride of `x`.
    pub x_stride: usize,
    /// Groups (entries or seeds).
    pub groups: usize,
    /// Slots per group K.
    pub slots: usize,
    /// Hidden size H.
    pub hidden: usize,
    /// bf16 `[groups * slots, 2 hidden]` output `concat(X_k, X_{max(k-1,0)})`.
    pub out: u64,
    /// Row stride of `out` (>= 2 hidden).
    pub out_stride: usize,
}

/// Arguments of [`DrafterKernels::head_features`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadFeatures {
    /// f32 `[rows, vocab_d]` draft logits.
    pub logits: u64,
    /// Row stride of `logits`.
    pub logits_stride: usize,
    /// Rows.
    pub rows: usize,
    /// Draft vocabulary V_d.
    pub vocab_d: usize,
    /// T (`rank_topk`, 10..=[`MAX_SELECT`]): the features use the top T logits.
    pub topk_t: usize,
    /// Candidates per row (0..=[`MAX_SELECT`]); `max(topk_t, kc) <= vocab_d`.
    pub kc: usize,
    /// Nullable f32 `[rows, hidden]` normed hiddens `n_k`, copied as bf16 into `rank_in[:, ..hidden]`
    /// (null: those columns are left as they are, e.g. already written by [`DrafterKernels::add_rmsnorm`]).
    pub normed: u64,
    /// Row stride of `normed`.
    pub normed_stride: usize,
    /// Hidden size H (the features start at column H of `rank_in`).
    pub hidden: usize,
    /// bf16 `[rows, hidden + 15]` rank-head input.
    pub rank_in: u64,
    /// Row stride of `rank_in` (>= hidden + 15; may be padded for GEMM alignment).
    pub rank_stride: usize,
    /// i32 `[vocab_d]` draft-to-target offsets (target id = `i + d2t[i]`); the host converts the
    /// checkpoint's int64 `d2t`.
    pub d2t: u64,
    /// i32 `[rows, kc]` target ids of the top kc, best first (ties: lower draft id first).
    pub cand_ids: u64,
    /// f32 `[rows, kc]` their log-softmax over the whole draft vocabulary.
    pub cand_logprobs: u64,
    /// Nullable i32 `[rows, kc]` draft ids of the candidates.
    pub cand_draft_ids: u64,
    /// Nullable f32 `[rows]` log-sum-exp of each row.
    pub row_lse: u64,
}

/// Queues one drafter kernel: every launch of the GPU drafter (this module's ops and
/// [`fill_random`](super::fill_random)) goes through here. Binds `gpu`'s context on
/// the calling thread, then launches `f` on `stream` with a grid of `grid` blocks of `threads` threads
/// (1-D blocks, no dynamic shared memory) and checks the launch error. The callers validate their
/// arguments and convert them to the kernel's types first; `args` lists them in the kernel's order.
///
/// # Safety
/// As [`Gpu::launch`]: one pointer per kernel parameter, each at a value of exactly the parameter's
/// type, and every device address valid for what the kernel does.
pub(super) unsafe fn launch(
    gpu: &Gpu,
    stream: &Stream,
    f: Function,
    grid: (u32, u32, u32),
    threads: u32,
    args: &mut [*mut c_void],
) -> Result<(), Error> {
    gpu.bind()?;
    // SAFETY: forwarded contract.
    unsafe { gpu.launch(f, grid, (threads, 1, 1), 0, stream, args) }
}

/// `v` as a kernel `int`.
fn int(what: &'static str, v: usize) -> Result<i32, Error> {
    i32::try_from(v).map_err(|_| Error::InvalidArgument(what))
}

/// Blocks of `per` threads covering `total` threads.
fn blocks(total: usize, per: u32) -> Result<u32, Error> {
    u32::try_from(total.div_ceil(per as usize))
        .map_err(|_| Error::InvalidArgument("drafter kernel grid too large"))
}

fn non_null(what: &'static str, ptrs: &[u64]) -> Result<(), Error> {
    if ptrs.contains(&0) {
        Err(Error::InvalidArgument(what))
    } else {
        Ok(())
    }
}

fn stride(what: &'static str, stride: usize, min: usize) -> Result<(), Error> {
    if stride < min {
        Err(Error::ShapeMismatch {
            what,
            expected: min,
            got: stride,
        })
    } else {
        Ok(())
    }
}

impl DrafterKernels {
    /// Looks every kernel up in the `drafter` module of `gpu`.
    pub fn new(gpu: &Gpu) -> Result<Self, Error> {
        let f = |name: &CStr| gpu.function(Module::SpecBlockDrafter, name);
        Ok(DrafterKernels {
            fuse_inputs: f(c"sb_fuse_inputs")?,
            rmsnorm: f(c"sb_rmsnorm")?,
            add_rmsnorm: f(c"sb_add_rmsnorm")?,
            rope: f(c"sb_rope")?,
            cache_append: f(c"sb_cache_append")?,
            attention: f(c"sb_attention")?,
            attention_combine: f(c"sb_attention_combine")?,
            swiglu: f(c"sb_swiglu")?,
            silu_bf16: f(c"sb_silu_bf16")?,
            shift_concat: f(c"sb_shift_concat")?,
            f32_to_bf16: f(c"sb_f32_to_bf16")?,
            head_features: f(c"sb_head_features")?,
        })
    }

    /// Queues a zeroing of the i32 status word at `status` on `stream` (before
    /// [`fuse_inputs`](Self::fuse_inputs), which only ORs bits in).
    ///
    /// # Safety
    /// `status` must be a valid device address of at least 4 bytes.
    pub unsafe fn clear_status(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        status: u64,
    ) -> Result<(), Error> {
        non_null("status must not be null", &[status])?;
        gpu.bind()?;
        // SAFETY: caller contract; the stream belongs to the GPU's context.
        check("cuMemsetD32Async", unsafe {
            cudarc::driver::sys::cuMemsetD32Async(status, 0, 1, stream.raw() as _)
        })
    }

    /// `concat(RMSNorm_c(cond_g), RMSNorm_t(E[y_g]), RMSNorm_q(P[k]))` as bf16 for every group g and
    /// slot k (row `g * slots + k`): the fuse GEMM's input. Twin: [`crate::drafter::ops::fuse_inputs`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn fuse_inputs(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &FuseInputs,
    ) -> Result<(), Error> {
        if a.groups == 0 {
            return Ok(());
        }
        non_null(
            "fuse_inputs: null device pointer",
            &[
                a.cond, a.tokens, a.embed, a.queries, a.w_cond, a.w_tok, a.w_query, a.out, a.status,
            ],
        )?;
        if a.slots == 0 || a.slots > MAX_SLOTS || a.hidden == 0 || a.vocab == 0 {
            return Err(Error::InvalidArgument(
                "fuse_inputs: slots must be 1..=64, hidden and vocab non-zero",
            ));
        }
        stride("fuse_inputs cond stride", a.cond_stride, a.hidden)?;
        stride("fuse_inputs out stride", a.out_stride, 3 * a.hidden)?;
        let (cs, v, g, k, h, os) = (
            int("cond_stride", a.cond_stride)?,
            int("vocab", a.vocab)?,
            int("groups", a.groups)?,
            int("slots", a.slots)?,
            int("hidden", a.hidden)?,
            int("out_stride", a.out_stride)?,
        );
        int("fuse_inputs rows", a.groups * a.slots)?;
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.fuse_inputs,
                (g as u32, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.cond),
                    arg(&cs),
                    arg(&a.tokens),
                    arg(&a.embed),
                    arg(&v),
                    arg(&a.queries),
                    arg(&a.w_cond),
                    arg(&a.w_tok),
                    arg(&a.w_query),
                    arg(&a.eps),
                    arg(&g),
                    arg(&k),
                    arg(&h),
                    arg(&a.out),
                    arg(&os),
                    arg(&a.status),
                ],
            )
        }
    }

    /// bf16 RMSNorm of each row (plus an optional f32 copy). Twin: [`crate::cpu::rms_norm`] then
    /// bf16 rounding.
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn rmsnorm(&self, gpu: &Gpu, stream: &Stream, a: &RmsNorm) -> Result<(), Error> {
        if a.rows == 0 {
            return Ok(());
        }
        non_null("rmsnorm: null device pointer", &[a.x, a.w, a.out])?;
        if a.n == 0 {
            return Err(Error::InvalidArgument("rmsnorm: n must be non-zero"));
        }
        stride("rmsnorm x stride", a.x_stride, a.n)?;
        stride("rmsnorm out stride", a.out_stride, a.n)?;
        if a.out_f32 != 0 {
            stride("rmsnorm out_f32 stride", a.out_f32_stride, a.n)?;
        }
        let (xs, rows, n, os, fs) = (
            int("x_stride", a.x_stride)?,
            int("rows", a.rows)?,
            int("n", a.n)?,
            int("out_stride", a.out_stride)?,
            int("out_f32_stride", a.out_f32_stride)?,
        );
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.rmsnorm,
                (rows as u32, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.x),
                    arg(&xs),
                    arg(&a.w),
                    arg(&a.eps),
                    arg(&rows),
                    arg(&n),
                    arg(&a.out),
                    arg(&os),
                    arg(&a.out_f32),
                    arg(&fs),
                ],
            )
        }
    }

    /// `x += delta` (in place, f32), then the bf16 RMSNorm of the new `x` (plus an optional f32
    /// copy). Twin: [`crate::drafter::ops::add_rms_norm`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn add_rmsnorm(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &AddRmsNorm,
    ) -> Result<(), Error> {
        if a.rows == 0 {
            return Ok(());
        }
        non_null(
            "add_rmsnorm: null device pointer",
            &[a.x, a.delta, a.w, a.out],
        )?;
        if a.n == 0 {
            return Err(Error::InvalidArgument("add_rmsnorm: n must be non-zero"));
        }
        stride("add_rmsnorm out stride", a.out_stride, a.n)?;
        if a.out_f32 != 0 {
            stride("add_rmsnorm out_f32 stride", a.out_f32_stride, a.n)?;
        }
        let (rows, n, os, fs) = (
            int("rows", a.rows)?,
            int("n", a.n)?,
            int("out_stride", a.out_stride)?,
            int("out_f32_stride", a.out_f32_stride)?,
        );
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.add_rmsnorm,
                (rows as u32, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.x),
                    arg(&a.delta),
                    arg(&a.w),
                    arg(&a.eps),
                    arg(&rows),
                    arg(&n),
                    arg(&a.out),
                    arg(&os),
                    arg(&a.out_f32),
                    arg(&fs),
                ],
            )
        }
    }

    /// Rotate-half RoPE in place on the query and key heads of every row. Twin:
    /// [`crate::drafter::ops::rope`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn rope(&self, gpu: &Gpu, stream: &Stream, a: &Rope) -> Result<(), Error> {
        if a.rows == 0 {
            return Ok(());
        }
        non_null(
            "rope: null device pointer",
            &[a.q, a.k, a.positions, a.inv_freq],
        )?;
        if a.head_dim < 2 || !a.head_dim.is_multiple_of(2) {
            return Err(Error::InvalidArgument(
                "rope: head_dim must be even and >= 2",
            ));
        }
        stride("rope q stride", a.q_stride, a.n_heads * a.head_dim)?;
        stride("rope k stride", a.k_stride, a.n_kv * a.head_dim)?;
        let total = a.rows * (a.n_heads + a.n_kv) * (a.head_dim / 2);
        if total == 0 {
            return Ok(());
        }
        let (qs, ks, rows, nh, nkv, d) = (
            int("q_stride", a.q_stride)?,
            int("k_stride", a.k_stride)?,
            int("rows", a.rows)?,
            int("n_heads", a.n_heads)?,
            int("n_kv", a.n_kv)?,
            int("head_dim", a.head_dim)?,
        );
        let grid = blocks(total, BLOCK)?;
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.rope,
                (grid, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.q),
                    arg(&qs),
                    arg(&a.k),
                    arg(&ks),
                    arg(&a.positions),
                    arg(&a.inv_freq),
                    arg(&rows),
                    arg(&nh),
                    arg(&nkv),
                    arg(&d),
                ],
            )
        }
    }

    /// Copies `rows` post-RoPE K/V rows into one layer's head-major cache at `row_offset`. Twin:
    /// [`crate::drafter::ops::cache_append`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn cache_append(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &CacheAppend,
    ) -> Result<(), Error> {
        if a.rows == 0 {
            return Ok(());
        }
        non_null(
            "cache_append: null device pointer",
            &[a.k_src, a.v_src, a.cache_k, a.cache_v],
        )?;
        if a.row_offset + a.rows > a.capacity {
            return Err(Error::Capacity {
                what: "drafter device cache rows",
                capacity: a.capacity,
            });
        }
        stride("cache_append src stride", a.src_stride, a.n_kv * a.head_dim)?;
        let total = a.rows * a.n_kv * a.head_dim;
        if total == 0 {
            return Ok(());
        }
        let (ss, rows, nkv, d, cap, off) = (
            int("src_stride", a.src_stride)?,
            int("rows", a.rows)?,
            int("n_kv", a.n_kv)?,
            int("head_dim", a.head_dim)?,
            int("capacity", a.capacity)?,
            int("row_offset", a.row_offset)?,
        );
        let grid = blocks(total, BLOCK)?;
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.cache_append,
                (grid, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.k_src),
                    arg(&a.v_src),
                    arg(&ss),
                    arg(&rows),
                    arg(&nkv),
                    arg(&d),
                    arg(&a.cache_k),
                    arg(&a.cache_v),
                    arg(&cap),
                    arg(&off),
                ],
            )
        }
    }

    /// Attention of every row and query head over a cache prefix plus the row's own-group keys,
    /// online softmax in f32, bf16 output. Twin: [`crate::drafter::ops::attention`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`; `prefix_len` and `own_len` are read on
    /// the device and clamped there, so bad lengths cannot read out of bounds.
    pub unsafe fn attention(&self, gpu: &Gpu, stream: &Stream, a: &Attention) -> Result<(), Error> {
        // SAFETY: forwarded contract; no workspace, one split.
        unsafe { self.attention_impl(gpu, stream, a, 0, 0) }
    }

    /// [`attention`](Self::attention) with the keys split across several blocks per (row, head)
    /// (flash-decoding): far more parallel for long prefixes and few rows. Partial results go to
    /// `workspace` (f32, `workspace_len` elements; [`attention_workspace_len`] is always enough, less
    /// only lowers the split count) and a second kernel merges them into `a.out`. The split count is
    /// chosen from the GPU's size and the cache capacity; the result equals the one-pass kernel's up
    /// to f32 rounding.
    ///
    /// # Safety
    /// As [`attention`](Self::attention); `workspace` must be valid for `workspace_len` f32 and not
    /// be used by other work queued concurrently.
    pub unsafe fn attention_split(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &Attention,
        workspace: u64,
        workspace_len: usize,
    ) -> Result<(), Error> {
        // SAFETY: forwarded contract.
        unsafe { self.attention_impl(gpu, stream, a, workspace, workspace_len) }
    }

    unsafe fn attention_impl(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &Attention,
        workspace: u64,
        workspace_len: usize,
    ) -> Result<(), Error> {
        if a.rows == 0 {
            return Ok(());
        }
        non_null(
            "attention: null device pointer",
            &[a.q, a.cache_k, a.cache_v, a.prefix_len, a.out],
        )?;
        if a.own_len != 0 {
            non_null(
                "attention: own_len needs own_k and own_v",
                &[a.own_k, a.own_v],
            )?;
            stride("attention own stride", a.own_stride, a.n_kv * a.head_dim)?;
        }
        if a.head_dim == 0 || a.head_dim > MAX_HEAD_DIM || !a.head_dim.is_multiple_of(4) {
            return Err(Error::InvalidArgument(
                "attention: head_dim must be a multiple of 4 in 4..=128",
            ));
        }
        if a.n_kv == 0 || a.n_heads == 0 || !a.n_heads.is_multiple_of(a.n_kv) {
            return Err(Error::InvalidArgument(
                "attention: n_kv must be non-zero and divide n_heads",
            ));
        }
        // Keys and values are read as float4.
        let own_aligned = a.own_len == 0
            || ([a.own_k, a.own_v].iter().all(|p| p.is_multiple_of(16))
                && a.own_stride.is_multiple_of(4));
        if !a.cache_k.is_multiple_of(16) || !a.cache_v.is_multiple_of(16) || !own_aligned {
            return Err(Error::InvalidArgument(
                "attention: cache and own K/V must be 16-byte aligned, own_stride a multiple of 4",
            ));
        }
        // Query heads per block: the largest divisor of the GQA group size that fits, so a block
        // loads each key/value tile once for all its heads.
        let group = a.n_heads / a.n_kv;
        let hpb = (1..=ATT_MAX_Q)
            .rev()
            .find(|g| group.is_multiple_of(*g))
            .unwrap_or(1);
        if a.rows > 65_535 {
            return Err(Error::InvalidArgument("attention: at most 65535 rows"));
        }
        stride("attention q stride", a.q_stride, a.n_heads * a.head_dim)?;
        stride("attention out stride", a.out_stride, a.n_heads * a.head_dim)?;
        let (qs, cap, os, rows, nh, nkv, d, outs) = (
            int("q_stride", a.q_stride)?,
            int("capacity", a.capacity)?,
            int("own_stride", a.own_stride)?,
            int("rows", a.rows)?,
            int("n_heads", a.n_heads)?,
            int("n_kv", a.n_kv)?,
            int("head_dim", a.head_dim)?,
            int("out_stride", a.out_stride)?,
        );
        // With a workspace, blocks also share each tile among consecutive rows (their prefixes are
        // nearly equal) and the keys are split to win back the parallelism; without one, one row per
        // block keeps the grid large.
        let record = a.rows * a.n_heads * (a.head_dim + 2);
        let can_split = workspace != 0 && workspace_len >= 2 * record;
        let rpb = if can_split { ATT_MAX_Q / hpb } else { 1 };
        let (hpb_i, rpb_i) = (hpb as i32, rpb as i32);
        // Splits: enough blocks for about 4 per SM, each split at least 4 tiles of a full-capacity
        // row, at most MAX_SPLITS, and what the workspace holds.
        let base_blocks = (a.n_heads / hpb) * a.rows.div_ceil(rpb);
        let splits = if !can_split {
            1
        } else {
            (4 * gpu.multiprocessors().max(1) as usize)
                .div_ceil(base_blocks)
                .min((a.capacity + a.rows).div_ceil(4 * ATT_TILE))
                .min(MAX_SPLITS)
                .min(workspace_len / record)
                .max(1)
        };
        let (splits_i, partial) = (splits as i32, if splits > 1 { workspace } else { 0 });
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.attention,
                (
                    (a.n_heads / hpb) as u32,
                    a.rows.div_ceil(rpb) as u32,
                    splits as u32,
                ),
                ATT_THREADS,
                &mut [
                    arg(&a.q),
                    arg(&qs),
                    arg(&a.cache_k),
                    arg(&a.cache_v),
                    arg(&cap),
                    arg(&a.prefix_len),
                    arg(&a.own_k),
                    arg(&a.own_v),
                    arg(&os),
                    arg(&a.own_len),
                    arg(&rows),
                    arg(&nh),
                    arg(&nkv),
                    arg(&d),
                    arg(&hpb_i),
                    arg(&rpb_i),
                    arg(&a.scale),
                    arg(&a.out),
                    arg(&outs),
                    arg(&splits_i),
                    arg(&partial),
                ],
            )?;
        }
        if splits == 1 {
            return Ok(());
        }
        let grid = blocks(a.rows * a.n_heads * a.head_dim, BLOCK)?;
        // SAFETY: argument types match sb_attention_combine; the records were just written.
        unsafe {
            launch(
                gpu,
                stream,
                self.attention_combine,
                (grid, 1, 1),
                BLOCK,
                &mut [
                    arg(&partial),
                    arg(&rows),
                    arg(&nh),
                    arg(&d),
                    arg(&splits_i),
                    arg(&a.out),
                    arg(&outs),
                ],
            )
        }
    }

    /// `silu(gate) * up` as bf16. Twin: [`crate::cpu::swiglu`] then bf16 rounding.
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn swiglu(&self, gpu: &Gpu, stream: &Stream, a: &Swiglu) -> Result<(), Error> {
        let total = a.rows * a.ffn;
        if total == 0 {
            return Ok(());
        }
        non_null("swiglu: null device pointer", &[a.gate, a.up, a.out])?;
        stride("swiglu in stride", a.in_stride, a.ffn)?;
        stride("swiglu out stride", a.out_stride, a.ffn)?;
        let (is, rows, f, os) = (
            int("in_stride", a.in_stride)?,
            int("rows", a.rows)?,
            int("ffn", a.ffn)?,
            int("out_stride", a.out_stride)?,
        );
        let grid = blocks(total, BLOCK)?;
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.swiglu,
                (grid, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.gate),
                    arg(&a.up),
                    arg(&is),
                    arg(&rows),
                    arg(&f),
                    arg(&a.out),
                    arg(&os),
                ],
            )
        }
    }

    /// Launches one of the element-wise f32 -> bf16 kernels.
    unsafe fn elementwise(
        &self,
        f: Function,
        what: &'static str,
        gpu: &Gpu,
        stream: &Stream,
        a: &Elementwise,
    ) -> Result<(), Error> {
        let total = a.rows * a.n;
        if total == 0 {
            return Ok(());
        }
        non_null(what, &[a.x, a.out])?;
        stride("elementwise x stride", a.x_stride, a.n)?;
        stride("elementwise out stride", a.out_stride, a.n)?;
        let (xs, rows, n, os) = (
            int("x_stride", a.x_stride)?,
            int("rows", a.rows)?,
            int("n", a.n)?,
            int("out_stride", a.out_stride)?,
        );
        let grid = blocks(total, BLOCK)?;
        // SAFETY: argument types match both kernels' signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                f,
                (grid, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.x),
                    arg(&xs),
                    arg(&rows),
                    arg(&n),
                    arg(&a.out),
                    arg(&os),
                ],
            )
        }
    }

    /// `silu(x)` as bf16 (the rank head's hidden). Twin: [`crate::drafter::ops::silu`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn silu_bf16(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &Elementwise,
    ) -> Result<(), Error> {
        // SAFETY: forwarded contract.
        unsafe {
            self.elementwise(
                self.silu_bf16,
                "silu_bf16: null device pointer",
                gpu,
                stream,
                a,
            )
        }
    }

    /// A plain f32 -> bf16 cast of a strided matrix (e.g. target features before the W_cond GEMM).
    /// Twin: [`crate::cpu::kernels::f32_to_bf16`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn f32_to_bf16(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &Elementwise,
    ) -> Result<(), Error> {
        // SAFETY: forwarded contract.
        unsafe {
            self.elementwise(
                self.f32_to_bf16,
                "f32_to_bf16: null device pointer",
                gpu,
                stream,
                a,
            )
        }
    }

    /// `concat(X_k, X_{max(k-1,0)})` per group as bf16: the layer-wise shift's GEMM input. Twin:
    /// [`crate::drafter::ops::shift_concat`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`.
    pub unsafe fn shift_concat(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &ShiftConcat,
    ) -> Result<(), Error> {
        let total = a.groups * a.slots * 2 * a.hidden;
        if total == 0 {
            return Ok(());
        }
        non_null("shift_concat: null device pointer", &[a.x, a.out])?;
        stride("shift_concat x stride", a.x_stride, a.hidden)?;
        stride("shift_concat out stride", a.out_stride, 2 * a.hidden)?;
        int("shift_concat rows", a.groups * a.slots)?;
        let (xs, g, k, h, os) = (
            int("x_stride", a.x_stride)?,
            int("groups", a.groups)?,
            int("slots", a.slots)?,
            int("hidden", a.hidden)?,
            int("out_stride", a.out_stride)?,
        );
        let grid = blocks(total, BLOCK)?;
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.shift_concat,
                (grid, 1, 1),
                BLOCK,
                &mut [
                    arg(&a.x),
                    arg(&xs),
                    arg(&g),
                    arg(&k),
                    arg(&h),
                    arg(&a.out),
                    arg(&os),
                ],
            )
        }
    }

    /// Per row of draft logits: top-T rank features (bf16, after `n_k` in the rank-head input), the
    /// top-kc candidates as target ids with their log-softmax, and optionally the row's log-sum-exp.
    /// Twin: [`crate::drafter::ops::head_features`].
    ///
    /// # Safety
    /// Every address must be valid for the shapes in `a`; `d2t` offsets must map into the target
    /// vocabulary (the kernel only adds them).
    pub unsafe fn head_features(
        &self,
        gpu: &Gpu,
        stream: &Stream,
        a: &HeadFeatures,
    ) -> Result<(), Error> {
        if a.rows == 0 {
            return Ok(());
        }
        non_null("head_features: null device pointer", &[a.logits, a.rank_in])?;
        if a.kc > 0 {
            non_null(
                "head_features: kc > 0 needs d2t, cand_ids and cand_logprobs",
                &[a.d2t, a.cand_ids, a.cand_logprobs],
            )?;
        }
        if !(10..=MAX_SELECT).contains(&a.topk_t) || a.kc > MAX_SELECT {
            return Err(Error::InvalidArgument(
                "head_features: topk_t must be 10..=64 and kc <= 64",
            ));
        }
        if a.topk_t.max(a.kc) > a.vocab_d {
            return Err(Error::InvalidArgument(
                "head_features: max(topk_t, kc) must not exceed the draft vocabulary",
            ));
        }
        stride("head_features logits stride", a.logits_stride, a.vocab_d)?;
        stride(
            "head_features rank_in stride",
            a.rank_stride,
            a.hidden + RANK_FEATURES,
        )?;
        if a.normed != 0 {
            stride("head_features normed stride", a.normed_stride, a.hidden)?;
        }
        let (ls, rows, v, t, kc, ns, h, rs) = (
            int("logits_stride", a.logits_stride)?,
            int("rows", a.rows)?,
            int("vocab_d", a.vocab_d)?,
            int("topk_t", a.topk_t)?,
            int("kc", a.kc)?,
            int("normed_stride", a.normed_stride)?,
            int("hidden", a.hidden)?,
            int("rank_stride", a.rank_stride)?,
        );
        // SAFETY: argument types match the kernel signature; addresses per caller contract.
        unsafe {
            launch(
                gpu,
                stream,
                self.head_features,
                (rows as u32, 1, 1),
                HEAD_THREADS,
                &mut [
                    arg(&a.logits),
                    arg(&ls),
                    arg(&rows),
                    arg(&v),
                    arg(&t),
                    arg(&kc),
                    arg(&a.normed),
                    arg(&ns),
                    arg(&h),
                    arg(&a.rank_in),
                    arg(&rs),
                    arg(&a.d2t),
                    arg(&a.cand_ids),
                    arg(&a.cand_logprobs),
                    arg(&a.cand_draft_ids),
                    arg(&a.row_lse),
                ],
            )
        }
    }
}

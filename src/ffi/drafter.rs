//! C functions for the SpecBlock drafter and its per-sequence sessions.

use std::boxed::Box;
use std::ffi::{CStr, c_char};
use std::path::Path;
use std::string::ToString;
use std::sync::Arc;
use std::vec::Vec;

use super::tree::{SB_MAX_KEEP, sb_tree, sb_tree_params};
use super::{guard, obj_mut, obj_ref, read_params, read_params_from, slice_ref, write_out};
use crate::adapt::{Algorithm, Arm, PolicyParams, Shape};
use crate::drafter::eagle3::Eagle3Policy;
use crate::drafter::{AnyDrafter, AnySession, DraftPolicy, DrafterKind, Speculator, default_arms};
use crate::error::Status;

/// A loaded drafter (SpecBlock or EAGLE-3). Immutable after loading: thread-safe, shareable by any
/// number of sessions on any threads. Sessions keep it alive: `sb_drafter_free` may come before the
/// last `sb_session_free` (the memory goes with the last of them). It borrows the target's token
/// embedding given at load: that buffer must stay valid until the drafter and all its sessions are
/// freed.
pub struct sb_drafter {
    pub(super) inner: Arc<LoadedDrafter>,
}

/// What a drafter handle and its sessions share.
pub(crate) struct LoadedDrafter {
    pub(super) drafter: AnyDrafter,
    embed: *const f32,
    embed_len: usize,
}

// SAFETY: the embedding is only read, and the caller guarantees it stays valid and unchanged while the
// drafter or a session lives; everything else in the drafter is Send + Sync.
unsafe impl Send for LoadedDrafter {}
// SAFETY: as above.
unsafe impl Sync for LoadedDrafter {}

impl LoadedDrafter {
    fn embedding(&self) -> &[f32] {
        if self.embed_len == 0 {
            // An EAGLE-3 drafter with its own embedding may be loaded with (NULL, 0).
            return &[];
        }
        // SAFETY: checked non-NULL with this length at load; valid for the drafter's life (contract).
        unsafe { core::slice::from_raw_parts(self.embed, self.embed_len) }
    }
}

/// One sequence's drafting state and its draft-shape policy. Not thread-safe: use a session from one
/// thread at a time (different sessions of one drafter may run on different threads).
pub struct sb_session {
    // Declared (so dropped) before `drafter`, which it borrows.
    pub(super) speculator: Speculator<'static>,
    pub(super) drafter: Arc<LoadedDrafter>,
}

/// Loading parameters for `sb_drafter_load`. Get them from `sb_drafter_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_drafter_params {
    /// `sizeof(sb_drafter_params)`; set by `sb_drafter_default_params`.
    pub struct_size: u32,
    /// Threads for the drafter's forward passes (>= 1).
    pub threads: u32,
}

/// Shape of a loaded drafter.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct sb_drafter_info {
    /// Drafter width (must equal the target's hidden size: it reads the target's embedding).
    pub hidden: u32,
    /// Width of one target feature row: 3 x the target hidden size.
    pub feature_width: u32,
    /// Target vocabulary (rows of the embedding).
    pub vocab: u32,
    /// Draft vocabulary.
    pub draft_vocab: u32,
    /// Slots per block (K); 1 for EAGLE-3.
    pub slots: u32,
    /// `SB_DRAFTER_KIND_SPECBLOCK` (0) or `SB_DRAFTER_KIND_EAGLE3` (1).
    pub kind: u32,
}

/// `sb_drafter_info.kind` of a SpecBlock drafter.
pub const SB_DRAFTER_KIND_SPECBLOCK: u32 = 0;
/// `sb_drafter_info.kind` of an EAGLE-3 drafter.
pub const SB_DRAFTER_KIND_EAGLE3: u32 = 1;

/// Session parameters for `sb_session_new`. Get them from `sb_session_default_params()`.
///
/// Fields after `eagle_top_k` were added with the draft-shape policy; a caller compiled against the
/// first layout (`struct_size` 24) keeps working and gets a fixed shape at its `budget`, as before.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_session_params {
    /// `sizeof(sb_session_params)`; set by `sb_session_default_params`.
    pub struct_size: u32,
    /// Committed entries the context can hold (about the longest sequence, prompt included).
    pub max_entries: u32,
    /// Fixed shape: draft-tree budget, non-root nodes kept per iteration (default 90; an EAGLE-3
    /// session left at 90 uses EAGLE's 59).
    pub budget: u32,
    /// Largest branching width of any slot (SpecBlock).
    pub beam_width: u32,
    /// Fixed shape: drafting steps per tree (EAGLE-3 depth).
    pub eagle_depth: u32,
    /// Fixed shape: children per node and frontier width (EAGLE-3 top-k).
    pub eagle_top_k: u32,
    /// `SB_POLICY_ADAPTIVE` (the default: the session picks each iteration's shape, plain decoding
    /// included, from `sb_session_feedback`) or `SB_POLICY_FIXED` (every draft has the shape above).
    pub policy: u32,
    /// Fixed shape, SpecBlock: most block-2 seeds (0 = block 1 only; `UINT32_MAX` = all, the default).
    pub max_seeds: u32,
    /// Fixed shape: confidence stop; keep only nodes whose path probability under the drafter is at
    /// least this (0 = off, the default).
    pub min_confidence: f32,
    /// Adaptive: per-iteration decay of the policy's statistics, in (0, 1] (default 0.997).
    pub discount: f32,
    /// Adaptive: width of the upper confidence bound in standard deviations (default 0.35; 0 = greedy).
    pub exploration: f32,
    /// Adaptive: the arms to choose from, `n_arms` of them (NULL = the default ladder for the drafter's
    /// kind). Read by `sb_session_new` only.
    pub arms: *const sb_arm,
    /// Number of `arms` (1 to 32; ignored when `arms` is NULL).
    pub n_arms: u32,
}

/// `sb_session_params.policy`: the draft-shape policy chooses each iteration's shape.
pub const SB_POLICY_ADAPTIVE: u32 = 0;
/// `sb_session_params.policy`: every draft has the shape of the params.
pub const SB_POLICY_FIXED: u32 = 1;

/// The first published size of `sb_session_params` (six `uint32_t`).
const SESSION_PARAMS_V1: usize = 24;

/// `sb_arm.kind`: no drafting, one plain target step (the tree is the root alone).
pub const SB_ARM_PLAIN: u32 = 0;
/// `sb_arm.kind`: a SpecBlock tree (`budget`, `max_seeds`).
pub const SB_ARM_SPECBLOCK: u32 = 1;
/// `sb_arm.kind`: an EAGLE-3 tree (`budget`, `depth`, `top_k`).
pub const SB_ARM_EAGLE3: u32 = 2;

/// One draft shape the adaptive policy may choose.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct sb_arm {
    /// `SB_ARM_PLAIN`, `SB_ARM_SPECBLOCK` or `SB_ARM_EAGLE3` (matching the drafter's kind).
    pub kind: u32,
    /// Non-root nodes kept (>= 1; unused for plain).
    pub budget: u32,
    /// SpecBlock: most block-2 seeds (0 = block 1 only, `UINT32_MAX` = all).
    pub max_seeds: u32,
    /// EAGLE-3: drafting steps (>= 1).
    pub depth: u32,
    /// EAGLE-3: children per node and frontier width (>= 1).
    pub top_k: u32,
    /// Confidence stop: keep nodes whose path probability is at least this (0 = off).
    pub min_confidence: f32,
}

impl sb_arm {
    fn to_arm(self) -> Result<Arm, Status> {
        let shape = match self.kind {
            SB_ARM_PLAIN => Shape::Plain,
            SB_ARM_SPECBLOCK => Shape::SpecBlock {
                budget: self.budget,
                max_seeds: self.max_seeds,
            },
            SB_ARM_EAGLE3 => Shape::Eagle3 {
                budget: self.budget,
                depth: self.depth,
                top_k: self.top_k,
            },
            _ => return Err(Status::InvalidArgument),
        };
        Ok(Arm {
            shape,
            min_confidence: self.min_confidence,
        })
    }

    fn from_arm(a: &Arm) -> Self {
        let mut out = sb_arm {
            min_confidence: a.min_confidence,
            ..sb_arm::default()
        };
        match a.shape {
            Shape::Plain => out.kind = SB_ARM_PLAIN,
            Shape::SpecBlock { budget, max_seeds } => {
                out.kind = SB_ARM_SPECBLOCK;
                out.budget = budget;
                out.max_seeds = max_seeds;
            }
            Shape::Eagle3 {
                budget,
                depth,
                top_k,
            } => {
                out.kind = SB_ARM_EAGLE3;
                out.budget = budget;
                out.depth = depth;
                out.top_k = top_k;
            }
        }
        out
    }
}

/// What the engine measured in one iteration, for `sb_session_feedback`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_feedback {
    /// `sizeof(sb_feedback)`.
    pub struct_size: u32,
    /// Rows verified: the tree's length, root included (1 for a plain step).
    pub rows: u32,
    /// Tokens emitted: accepted draft tokens plus the bonus token (1 to `rows`).
    pub tokens: u32,
    /// `SB_FEEDBACK_DRAFT_MEASURED` when `draft_seconds` holds the engine's own timing of the draft and
    /// commit calls; otherwise the session's clock of them is used.
    pub flags: u32,
    /// Seconds of the target's verification: forward over the tree, acceptance, KV clean-up (>= 0).
    pub verify_seconds: f64,
    /// Seconds of drafting (see `flags`; >= 0).
    pub draft_seconds: f64,
}

/// `sb_feedback.flags`: `draft_seconds` is set.
pub const SB_FEEDBACK_DRAFT_MEASURED: u32 = 1;

/// A session's policy statistics (`sb_session_get_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct sb_session_stats {
    /// Iterations fed back.
    pub iterations: u64,
    /// Mean tokens per iteration (accepted + bonus) over them.
    pub mean_accept_length: f64,
    /// Index of the arm of the last draft.
    pub current_arm: u32,
    /// Number of arms.
    pub n_arms: u32,
}

/// One arm's statistics (`sb_session_get_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct sb_arm_stats {
    /// The arm.
    pub arm: sb_arm,
    /// Iterations it ran.
    pub pulls: u64,
    /// Tokens it emitted.
    pub tokens: u64,
    /// Seconds it took (drafting and verification).
    pub seconds: f64,
    /// Mean reward: tokens per second over its iterations (0 before the first).
    pub tokens_per_second: f64,
}

/// Default loading parameters: 1 thread.
#[unsafe(no_mangle)]
pub extern "C" fn sb_drafter_default_params() -> sb_drafter_params {
    sb_drafter_params {
        struct_size: size_of::<sb_drafter_params>() as u32,
        threads: 1,
    }
}

/// Default session parameters: 4096 entries, the adaptive draft-shape policy over the default arms;
/// for `SB_POLICY_FIXED`, the SpecBlock authors' tree (budget 90, beam width 10, every seed) and
/// EAGLE's (depth 7, top-k 10; EAGLE-3 sessions use budget 59 when `budget` is left at 90).
#[unsafe(no_mangle)]
pub extern "C" fn sb_session_default_params() -> sb_session_params {
    let p = DraftPolicy::default();
    let e = Eagle3Policy::default();
    let q = PolicyParams::default();
    sb_session_params {
        struct_size: size_of::<sb_session_params>() as u32,
        max_entries: 4096,
        budget: p.budget,
        beam_width: p.beam_width,
        eagle_depth: e.depth,
        eagle_top_k: e.top_k,
        policy: SB_POLICY_ADAPTIVE,
        max_seeds: p.max_seeds,
        min_confidence: 0.0,
        discount: q.discount as f32,
        exploration: q.exploration as f32,
        arms: core::ptr::null(),
        n_arms: 0,
    }
}

/// Copies `msg` into `buf` (NUL-terminated, truncated to `cap`); nothing if `buf` is NULL or `cap` 0.
fn write_message(buf: *mut c_char, cap: usize, msg: &str) {
    if buf.is_null() || cap == 0 {
        return;
    }
    let n = msg.len().min(cap - 1);
    // SAFETY: the caller provides `cap` writable bytes at `buf`.
    unsafe {
        core::ptr::copy_nonoverlapping(msg.as_ptr(), buf as *mut u8, n);
        *buf.add(n) = 0;
    }
}

/// Loads a drafter from a directory holding `config.json` and `model.safetensors` (f32, f16 or bf16):
/// a SpecBlock drafter (the authors' tensor names) or, when `architectures` in config.json names
/// EAGLE-3 (`LlamaForCausalLMEagle3`), the EAGLE-3 baseline (EAGLE / SpecForge names). `embedding` is
/// the target's token embedding, `vocab x hidden` f32 row-major with `embedding_len` values; it is
/// borrowed, not copied (an EAGLE-3 checkpoint with its own `embed_tokens.weight` uses that one, and
/// then `(NULL, 0)` is accepted here). On failure returns
/// `SB_STATUS_INVALID_ARGUMENT` (or a more specific status) and, if `error_buf` is not NULL, writes a
/// message naming the file, tensor or field (at most `error_cap` bytes with the terminating NUL); every
/// failure writes one. `threads` must be in 1..=256.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_drafter_load(
    dir: *const c_char,
    params: *const sb_drafter_params,
    embedding: *const f32,
    embedding_len: u64,
    out_drafter: *mut *mut sb_drafter,
    error_buf: *mut c_char,
    error_cap: usize,
) -> Status {
    // Every failure leaves a message in `error_buf` (when given), even one caught as a panic.
    let status = guard(|| {
        let fail = |s: Status, msg: &str| {
            write_message(error_buf, error_cap, msg);
            Err(s)
        };
        // SAFETY: caller contract for every pointer.
        let p = match unsafe { read_params(params) } {
            Ok(p) => p,
            Err(s) => return fail(s, "params: NULL, misaligned or wrong struct_size"),
        };
        if dir.is_null() || out_drafter.is_null() {
            return fail(Status::NullArgument, "dir and out_drafter must not be NULL");
        }
        let Ok(len) = usize::try_from(embedding_len) else {
            return fail(Status::InvalidArgument, "embedding_len is too large");
        };
        // SAFETY: caller contract: `embedding_len` readable floats at `embedding`.
        let embed = match unsafe { slice_ref(embedding, len) } {
            Ok(e) => e,
            Err(Status::NullArgument) => {
                return fail(
                    Status::NullArgument,
                    "embedding is NULL with a non-zero length",
                );
            }
            Err(s) => return fail(s, "embedding is misaligned or embedding_len is too large"),
        };
        // SAFETY: non-NULL, NUL-terminated (caller contract).
        let Ok(dir) = unsafe { CStr::from_ptr(dir) }.to_str() else {
            return fail(Status::InvalidArgument, "dir is not valid UTF-8");
        };
        if p.threads == 0 || p.threads > MAX_THREADS {
            return fail(Status::InvalidArgument, "threads must be in 1..=256");
        }
        let dir = Path::new(dir);
        let loaded = AnyDrafter::load_dir(dir, p.threads as usize);
        let drafter = match loaded {
            Ok(d) => d,
            Err(e) => {
                write_message(error_buf, error_cap, &e.to_string());
                return Err(Status::InvalidArgument);
            }
        };
        let c = &drafter;
        let own = drafter.has_own_embedding();
        if !(own && embed.is_empty()) && embed.len() != c.vocab() * c.hidden() {
            write_message(
                error_buf,
                error_cap,
                "embedding length is not vocab_size x hidden_size of the drafter",
            );
            return Err(Status::ShapeMismatch);
        }
        let handle = Box::into_raw(Box::new(sb_drafter {
            inner: Arc::new(LoadedDrafter {
                drafter,
                embed: embed.as_ptr(),
                embed_len: embed.len(),
            }),
        }));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_drafter, handle) }
    });
    if status == Status::Panic {
        write_message(
            error_buf,
            error_cap,
            "internal panic while loading (a specblock bug, please report it)",
        );
    }
    status
}

/// Most threads a drafter's pool may have.
const MAX_THREADS: u32 = 256;

/// Frees a drafter handle. `NULL` is a no-op. Its sessions stay usable; the drafter's memory is freed
/// with the last of them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_drafter_free(drafter: *mut sb_drafter) {
    if drafter.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: the handle came from `sb_drafter_load` and is freed once (caller contract).
        drop(unsafe { Box::from_raw(drafter) });
        Ok(())
    });
}

/// Writes the drafter's shape to `*out`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_drafter_get_info(
    drafter: *const sb_drafter,
    out: *mut sb_drafter_info,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        let d = &unsafe { obj_ref(drafter) }?.inner;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        let c = &d.drafter;
        let info = sb_drafter_info {
            hidden: c.hidden() as u32,
            feature_width: c.feature_width() as u32,
            vocab: c.vocab() as u32,
            draft_vocab: c.draft_vocab() as u32,
            slots: c.slots() as u32,
            kind: match d.drafter.kind() {
                DrafterKind::SpecBlock => SB_DRAFTER_KIND_SPECBLOCK,
                DrafterKind::Eagle3 => SB_DRAFTER_KIND_EAGLE3,
            },
        };
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, info) }
    })
}

/// Target layers whose outputs make one feature row: `SB_AUX_LAYERS`.
pub const SB_AUX_LAYERS: u32 = 3;
const _: () = assert!(SB_AUX_LAYERS as usize == crate::drafter::AUX_LAYERS);

/// Which target layers to capture for this drafter's features, for a target of `target_layers`
/// decoder layers: writes `SB_AUX_LAYERS` layer indices (0-based) to `out` (`cap` >= `SB_AUX_LAYERS`),
/// in feature order: a feature row is the outputs (residual stream after the layer) of these layers,
/// concatenated. They come from the drafter's `config.json` (`aux_layer_ids`), else the EAGLE-3
/// default `{1, L/2 - 1, L - 4}`. Errors: `SB_STATUS_BUFFER_TOO_SMALL`; `SB_STATUS_INVALID_ARGUMENT`
/// when a configured layer is not below `target_layers` (the drafter was trained on another target)
/// or, without configured layers, `target_layers` < 4.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_drafter_get_aux_layers(
    drafter: *const sb_drafter,
    target_layers: u32,
    out: *mut u32,
    cap: usize,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        let d = &unsafe { obj_ref(drafter) }?.inner;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        if cap < crate::drafter::AUX_LAYERS {
            return Err(Status::BufferTooSmall);
        }
        let layers = d.drafter.aux_layers(target_layers as usize)?;
        // SAFETY: non-NULL, `cap` writable elements (caller contract), `layers.len()` <= cap.
        let dst = unsafe { super::slice_mut(out, layers.len()) }?;
        for (o, &l) in dst.iter_mut().zip(&layers) {
            *o = l as u32;
        }
        Ok(())
    })
}

/// The arms a session's params ask for.
fn session_arms(p: &sb_session_params, eagle3: bool) -> Result<Vec<Arm>, Status> {
    if p.policy == SB_POLICY_FIXED {
        let e3_budget = if p.budget == DraftPolicy::default().budget {
            Eagle3Policy::default().budget
        } else {
            p.budget
        };
        let shape = if eagle3 {
            Shape::Eagle3 {
                budget: e3_budget,
                depth: p.eagle_depth,
                top_k: p.eagle_top_k,
            }
        } else {
            Shape::SpecBlock {
                budget: p.budget,
                max_seeds: p.max_seeds,
            }
        };
        return Ok(std::vec![Arm {
            shape,
            min_confidence: p.min_confidence,
        }]);
    }
    if p.policy != SB_POLICY_ADAPTIVE {
        return Err(Status::InvalidArgument);
    }
    if p.arms.is_null() {
        return Ok(default_arms(eagle3).to_vec());
    }
    // SAFETY: caller contract: `n_arms` readable arms at `arms`.
    let given = unsafe { slice_ref(p.arms, p.n_arms as usize) }?;
    if given.is_empty() || given.len() > crate::adapt::MAX_ARMS {
        return Err(Status::InvalidArgument);
    }
    given.iter().map(|a| a.to_arm()).collect()
}

/// Creates a session on `drafter` (which it keeps alive: see `sb_drafter_free`), with the draft-shape policy of `params`:
/// adaptive by default (each `sb_session_draft` picks a shape from the policy's arms, plain decoding
/// included, learning from `sb_session_feedback`), or one fixed shape. Errors:
/// `SB_STATUS_INVALID_ARGUMENT` for zero entries, budgets, depths or top-k, a budget above
/// `SB_MAX_NODES`, an unknown policy or arm kind, an arm of the other drafter kind, more than 32 arms,
/// a confidence outside [0, 1], a discount outside (0, 1] or a negative exploration;
/// `SB_STATUS_STRUCT_SIZE` for a `struct_size` other than a published layout's (the first, 24 bytes,
/// or this library's `sizeof(sb_session_params)`); `SB_STATUS_CAPACITY` for sizes whose session would
/// need more memory than a session may reserve; `SB_STATUS_OUT_OF_MEMORY`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_new(
    drafter: *const sb_drafter,
    params: *const sb_session_params,
    out_session: *mut *mut sb_session,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let shared = Arc::clone(&unsafe { obj_ref(drafter) }?.inner);
        // SAFETY: the session holds `shared` and drops its speculator (which borrows the drafter) first.
        let d: &'static LoadedDrafter = unsafe { &*Arc::as_ptr(&shared) };
        let old = sb_session_params {
            policy: SB_POLICY_FIXED,
            ..sb_session_default_params()
        };
        let p = unsafe { read_params_from(params, &[SESSION_PARAMS_V1], Some(old)) }?;
        if out_session.is_null() {
            return Err(Status::NullArgument);
        }
        if p.max_entries == 0 || p.budget as usize > crate::MAX_NODES {
            return Err(Status::InvalidArgument);
        }
        let eagle3 = d.drafter.kind() == DrafterKind::Eagle3;
        let arms = session_arms(&p, eagle3)?;
        if arms
            .iter()
            .any(|a| a.shape.max_rows() as usize > crate::MAX_NODES + 1)
        {
            return Err(Status::InvalidArgument);
        }
        let params = PolicyParams {
            discount: p.discount as f64,
            exploration: p.exploration as f64,
            algorithm: Algorithm::CostModel,
            ..PolicyParams::default()
        };
        let widths = DraftPolicy {
            budget: p.budget.max(1),
            beam_width: p.beam_width,
            ..DraftPolicy::default()
        };
        let session = d
            .drafter
            .new_session(p.max_entries as usize, &arms, widths)?;
        let speculator = Speculator::new(session, &arms, params)?;
        let handle = Box::into_raw(Box::new(sb_session {
            speculator,
            drafter: shared,
        }));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_session, handle) }
    })
}

/// Frees a session. `NULL` is a no-op.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_free(session: *mut sb_session) {
    if session.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: the handle came from `sb_session_new` and is freed once (caller contract).
        drop(unsafe { Box::from_raw(session) });
        Ok(())
    });
}

/// The tree a session's drafts need: `sb_tree_new` with these params holds every candidate before the
/// prune (of any arm of its policy).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_get_tree_params(
    session: *const sb_session,
    out: *mut sb_tree_params,
) -> Status {
    guard(|| {
        // SAFETY: caller contract.
        let s = unsafe { obj_ref(session) }?;
        let d = Arc::clone(&s.drafter);
        let c = &d.drafter;
        let mut max_nodes = 1024u32;
        let mut max_depth = (2 * c.slots() as u32).max(2);
        // SpecBlock candidates (`SpecBlockSession::draft`): block 1 adds at most the slot-0 width (up to
        // `beam_width`) plus a base width (the width table's largest, capped by `beam_width`) per
        // other slot; each block-2 seed (a block-1 node or the tail seed, at most `budget` of them
        // after the seed prune, at most `max_seeds`) adds at most a base width per slot.
        let specblock = match s.speculator.session() {
            AnySession::SpecBlock(sess) => {
                let p = sess.policy();
                let beam = u64::from(p.beam_width.max(1));
                let base = p.width_table.iter().copied().max().unwrap_or(1);
                Some((
                    beam,
                    u64::from(base.min(p.beam_width).max(1)),
                    p.prune_seeds,
                ))
            }
            AnySession::Eagle3(_) => None,
        };
        for a in s.speculator.policy().arms() {
            match a.shape {
                Shape::Plain => {}
                Shape::SpecBlock { budget, max_seeds } => {
                    let mut need = u64::from(budget);
                    if let Some((beam, base, prune_seeds)) = specblock {
                        let k = c.slots() as u64;
                        let block1 = beam + k.saturating_sub(1) * base;
                        let mut seeds = (block1 + 1).min(u64::from(max_seeds));
                        if prune_seeds {
                            seeds = seeds.min(u64::from(budget) + 1);
                        }
                        need = need.max(block1 + seeds * k * base);
                    }
                    max_nodes = max_nodes.max(need.min(crate::MAX_NODES as u64) as u32);
                }
                Shape::Eagle3 {
                    budget,
                    depth,
                    top_k,
                } => {
                    max_nodes = max_nodes.max(budget).max(top_k * (1 + depth * top_k));
                    max_depth = max_depth.max(depth + 1);
                }
            }
        }
        let p = sb_tree_params {
            max_nodes: max_nodes.min(crate::MAX_NODES as u32),
            max_depth: max_depth.min(crate::MAX_DEPTH as u32),
            ..super::tree::sb_tree_default_params()
        };
        // SAFETY: caller contract.
        unsafe { write_out(out, p) }
    })
}

/// Deprecated name of `sb_session_get_tree_params` (kept for callers built against 0.1 headers).
#[deprecated(note = "renamed sb_session_get_tree_params")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_tree_params(
    session: *const sb_session,
    out: *mut sb_tree_params,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { sb_session_get_tree_params(session, out) }
}

/// Checks tokens against the vocabulary into `out` (no allocation); returns how many.
fn tokens_into(tokens: &[i32], vocab: usize, out: &mut [u32]) -> Result<usize, Status> {
    if tokens.len() > out.len() {
        return Err(Status::Capacity);
    }
    for (o, &t) in out.iter_mut().zip(tokens) {
        if t < 0 || t as usize >= vocab {
            return Err(Status::TokenOutOfRange);
        }
        *o = t as u32;
    }
    Ok(tokens.len())
}

fn tokens_u32(tokens: &[i32], vocab: usize) -> Result<Vec<u32>, Status> {
    tokens
        .iter()
        .map(|&t| {
            if t >= 0 && (t as usize) < vocab {
                Ok(t as u32)
            } else {
                Err(Status::TokenOutOfRange)
            }
        })
        .collect()
}

/// After the target's prefill of `n_tokens - 1` prompt tokens (with `features`, one row of
/// `feature_width` per prompt position) and its first sampled token (the last of `tokens`): fills the
/// drafter context and computes block 1. The sampled token becomes the root of the next draft. A new
/// sequence on an old session keeps what its policy learned. An error found in the arguments (NULLs,
/// counts, tokens out of range) changes nothing; an error from the drafter's forward
/// (`SB_STATUS_NON_FINITE` features, `SB_STATUS_CAPACITY` for a prompt longer than the context) also
/// ends the session's current sequence: prefill again before drafting.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_prefill(
    session: *mut sb_session,
    features: *const f32,
    n_feature_rows: u32,
    tokens: *const i32,
    n_tokens: u32,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { obj_mut(session) }?;
        let d = Arc::clone(&s.drafter);
        let c = &d.drafter;
        let rows = (n_feature_rows as usize)
            .checked_mul(c.feature_width())
            .ok_or(Status::InvalidArgument)?;
        let feats = unsafe { slice_ref(features, rows) }?;
        let toks = tokens_u32(unsafe { slice_ref(tokens, n_tokens as usize) }?, c.vocab())?;
        if u64::from(n_tokens) != u64::from(n_feature_rows) + 1 {
            return Err(Status::ShapeMismatch);
        }
        s.speculator.prefill(d.embedding(), feats, &toks)?;
        Ok(())
    })
}

/// Grows the next draft tree into `tree` (reset, filled and finalized). Under the adaptive policy the
/// shape is this iteration's choice: the tree may be the root alone (a plain step: verify the root
/// only, then commit nothing accepted). `tree` must hold every candidate before the prune: create it
/// with `sb_session_get_tree_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_draft(session: *mut sb_session, tree: *mut sb_tree) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { obj_mut(session) }?;
        let t = unsafe { obj_mut(tree) }?;
        let d = Arc::clone(&s.drafter);
        s.speculator.draft(d.embedding(), &mut t.0)?;
        Ok(())
    })
}

/// After verification: the `n_accepted` accepted draft tokens and the `bonus` token, with target
/// features of [root, accepted...] (`n_accepted + 1` rows of `feature_width`). Appends them to the
/// drafter context and computes the next block 1 (after a plain step the drafter's forward waits for
/// the next real draft); `bonus` becomes the root. Allocates nothing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_commit(
    session: *mut sb_session,
    accepted: *const i32,
    n_accepted: u32,
    bonus: i32,
    features: *const f32,
    n_feature_rows: u32,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { obj_mut(session) }?;
        let d = Arc::clone(&s.drafter);
        let c = &d.drafter;
        let mut acc = [0u32; SB_MAX_KEEP];
        let n = if n_accepted == 0 {
            0
        } else {
            tokens_into(
                unsafe { slice_ref(accepted, n_accepted as usize) }?,
                c.vocab(),
                &mut acc,
            )?
        };
        let mut b = [0u32; 1];
        tokens_into(&[bonus], c.vocab(), &mut b)?;
        if n_feature_rows != n_accepted + 1 {
            return Err(Status::ShapeMismatch);
        }
        let rows = (n_feature_rows as usize)
            .checked_mul(c.feature_width())
            .ok_or(Status::InvalidArgument)?;
        let feats = unsafe { slice_ref(features, rows) }?;
        s.speculator.commit(d.embedding(), &acc[..n], b[0], feats)?;
        Ok(())
    })
}

/// Reports the iteration just verified (call it once per `sb_session_draft`, after the commit or, at
/// the end of a sequence, instead of it): the adaptive policy learns each shape's speed from it.
/// Errors: `SB_STATUS_NON_FINITE` for NaN or infinite seconds; `SB_STATUS_INVALID_ARGUMENT` for
/// negative seconds, `rows` or `tokens` 0, or more tokens than rows; `SB_STATUS_STRUCT_SIZE`;
/// `SB_STATUS_INVALID_STATE` when no draft succeeded since the last feedback (one report per draft).
/// Nothing changes on error.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_feedback(
    session: *mut sb_session,
    feedback: *const sb_feedback,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { obj_mut(session) }?;
        let f = unsafe { read_params(feedback) }?;
        let draft = (f.flags & SB_FEEDBACK_DRAFT_MEASURED != 0).then_some(f.draft_seconds);
        if f.flags & !SB_FEEDBACK_DRAFT_MEASURED != 0 {
            return Err(Status::InvalidArgument);
        }
        s.speculator
            .feedback(f.rows, f.tokens, f.verify_seconds, draft)?;
        Ok(())
    })
}

/// The session's policy statistics into `*out`, and the first `arms_cap` arms' statistics into `arms`
/// (`(NULL, 0)` for none; `out->n_arms` says how many exist).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_get_stats(
    session: *const sb_session,
    out: *mut sb_session_stats,
    arms: *mut sb_arm_stats,
    arms_cap: usize,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { obj_ref(session) }?;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        let dst = unsafe { super::slice_mut(arms, arms_cap) }?;
        let sp = &s.speculator;
        let st = sp.stats();
        let all = sp.policy().arms();
        for (i, slot) in dst.iter_mut().enumerate().take(all.len()) {
            let m = sp.arm_summary(i).unwrap_or_default();
            *slot = sb_arm_stats {
                arm: sb_arm::from_arm(&all[i]),
                pulls: m.pulls,
                tokens: m.tokens,
                seconds: m.seconds,
                tokens_per_second: m.tokens_per_second(),
            };
        }
        let stats = sb_session_stats {
            iterations: st.iterations,
            mean_accept_length: st.mean_accept_length,
            current_arm: st.current_arm as u32,
            n_arms: all.len() as u32,
        };
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, stats) }
    })
}

//! C functions for the SpecBlock drafter and its per-sequence sessions.

use std::boxed::Box;
use std::ffi::{CStr, c_char};
use std::path::Path;
use std::string::ToString;
use std::vec::Vec;

use super::tree::sb_tree;
use super::{guard, obj_mut, obj_ref, read_params, slice_ref, write_out};
use crate::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
use crate::drafter::{DraftPolicy, Drafter, Session};
use crate::error::Status;

/// A loaded SpecBlock drafter. Immutable after loading: thread-safe, shareable by any number of
/// sessions on any threads. It borrows the target's token embedding given at load; that buffer must
/// outlive the drafter, and the drafter must outlive its sessions.
pub struct sb_drafter {
    drafter: AnyDrafter,
    embed: *const f32,
    embed_len: usize,
}

/// The two drafter kinds behind one handle.
enum AnyDrafter {
    SpecBlock(Drafter),
    Eagle3(Eagle3Drafter),
}

/// What the C layer needs to know of either kind.
struct Shape {
    hidden: usize,
    feature_width: usize,
    vocab: usize,
    draft_vocab: usize,
    slots: usize,
}

impl AnyDrafter {
    fn shape(&self) -> Shape {
        match self {
            AnyDrafter::SpecBlock(d) => {
                let c = d.config();
                Shape {
                    hidden: c.hidden,
                    feature_width: 3 * c.target_hidden,
                    vocab: c.vocab,
                    draft_vocab: c.draft_vocab,
                    slots: c.slots,
                }
            }
            AnyDrafter::Eagle3(d) => {
                let c = d.config();
                Shape {
                    hidden: c.hidden,
                    feature_width: d.feature_width(),
                    vocab: c.vocab,
                    draft_vocab: c.draft_vocab,
                    slots: 1,
                }
            }
        }
    }
}

/// Whether `dir/config.json` declares an EAGLE-3 drafter (`architectures` naming Eagle3).
fn is_eagle3_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("architectures")?.as_array().map(|a| {
                a.iter().any(|x| {
                    x.as_str()
                        .is_some_and(|s| s.to_ascii_lowercase().contains("eagle3"))
                })
            })
        })
        .unwrap_or(false)
}

// SAFETY: the embedding is only read, and the caller guarantees it stays valid and unchanged while the
// drafter lives; everything else in the drafter is Send + Sync.
unsafe impl Send for sb_drafter {}
// SAFETY: as above.
unsafe impl Sync for sb_drafter {}

impl sb_drafter {
    fn embedding(&self) -> &[f32] {
        if self.embed_len == 0 {
            // An EAGLE-3 drafter with its own embedding may be loaded with (NULL, 0).
            return &[];
        }
        // SAFETY: checked non-NULL with this length at load; valid for the drafter's life (contract).
        unsafe { core::slice::from_raw_parts(self.embed, self.embed_len) }
    }
}

/// One sequence's drafting state. Not thread-safe: use a session from one thread at a time.
pub struct sb_session {
    session: AnySession,
    drafter: *const sb_drafter,
}

/// A session of either drafter kind.
enum AnySession {
    SpecBlock(Session<'static>),
    Eagle3(Eagle3Session<'static>),
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
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_session_params {
    /// `sizeof(sb_session_params)`; set by `sb_session_default_params`.
    pub struct_size: u32,
    /// Committed entries the context can hold (about the longest sequence, prompt included).
    pub max_entries: u32,
    /// Draft-tree budget: non-root nodes kept per iteration.
    pub budget: u32,
    /// Largest branching width of any slot (SpecBlock).
    pub beam_width: u32,
    /// Drafting steps per tree (EAGLE-3 depth).
    pub eagle_depth: u32,
    /// Children per node and frontier width (EAGLE-3 top-k).
    pub eagle_top_k: u32,
}

/// Default loading parameters: 1 thread.
#[unsafe(no_mangle)]
pub extern "C" fn sb_drafter_default_params() -> sb_drafter_params {
    sb_drafter_params {
        struct_size: size_of::<sb_drafter_params>() as u32,
        threads: 1,
    }
}

/// Default session parameters: 4096 entries, the SpecBlock authors' policy (budget 90, beam width 10)
/// and EAGLE's tree (depth 7, top-k 10; EAGLE's own budget is 59).
#[unsafe(no_mangle)]
pub extern "C" fn sb_session_default_params() -> sb_session_params {
    let p = DraftPolicy::default();
    let e = Eagle3Policy::default();
    sb_session_params {
        struct_size: size_of::<sb_session_params>() as u32,
        max_entries: 4096,
        budget: p.budget,
        beam_width: p.beam_width,
        eagle_depth: e.depth,
        eagle_top_k: e.top_k,
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
/// message naming the file, tensor or field (at most `error_cap` bytes with the terminating NUL).
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
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let p = unsafe { read_params(params) }?;
        if dir.is_null() || out_drafter.is_null() {
            return Err(Status::NullArgument);
        }
        let embed = unsafe { slice_ref(embedding, embedding_len as usize) }?;
        // SAFETY: non-NULL, NUL-terminated (caller contract).
        let dir = unsafe { CStr::from_ptr(dir) }
            .to_str()
            .map_err(|_| Status::InvalidArgument)?;
        if p.threads == 0 {
            write_message(error_buf, error_cap, "threads must be >= 1");
            return Err(Status::InvalidArgument);
        }
        let dir = Path::new(dir);
        let loaded = if is_eagle3_dir(dir) {
            Eagle3Drafter::load_dir(dir, p.threads as usize).map(AnyDrafter::Eagle3)
        } else {
            Drafter::load_dir(dir, p.threads as usize).map(AnyDrafter::SpecBlock)
        };
        let drafter = match loaded {
            Ok(d) => d,
            Err(e) => {
                write_message(error_buf, error_cap, &e.to_string());
                return Err(Status::InvalidArgument);
            }
        };
        let c = drafter.shape();
        let own = matches!(&drafter, AnyDrafter::Eagle3(d) if d.has_own_embedding());
        if !(own && embed.is_empty()) && embed.len() != c.vocab * c.hidden {
            write_message(
                error_buf,
                error_cap,
                "embedding length is not vocab_size x hidden_size of the drafter",
            );
            return Err(Status::ShapeMismatch);
        }
        let handle = Box::into_raw(Box::new(sb_drafter {
            drafter,
            embed: embed.as_ptr(),
            embed_len: embed.len(),
        }));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_drafter, handle) }
    })
}

/// Frees a drafter. `NULL` is a no-op. Free its sessions first.
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
        let d = unsafe { obj_ref(drafter) }?;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        let c = d.drafter.shape();
        let info = sb_drafter_info {
            hidden: c.hidden as u32,
            feature_width: c.feature_width as u32,
            vocab: c.vocab as u32,
            draft_vocab: c.draft_vocab as u32,
            slots: c.slots as u32,
            kind: match d.drafter {
                AnyDrafter::SpecBlock(_) => SB_DRAFTER_KIND_SPECBLOCK,
                AnyDrafter::Eagle3(_) => SB_DRAFTER_KIND_EAGLE3,
            },
        };
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, info) }
    })
}

/// Creates a session on `drafter` (which must outlive it).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_new(
    drafter: *const sb_drafter,
    params: *const sb_session_params,
    out_session: *mut *mut sb_session,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let d: &'static sb_drafter = unsafe { obj_ref(drafter) }?;
        let p = unsafe { read_params(params) }?;
        if out_session.is_null() {
            return Err(Status::NullArgument);
        }
        if p.max_entries == 0 || p.budget as usize > crate::MAX_NODES {
            return Err(Status::InvalidArgument);
        }
        let session = match &d.drafter {
            AnyDrafter::SpecBlock(dr) => {
                let policy = DraftPolicy {
                    budget: p.budget,
                    beam_width: p.beam_width,
                    ..DraftPolicy::default()
                };
                AnySession::SpecBlock(Session::new(dr, p.max_entries as usize, policy)?)
            }
            AnyDrafter::Eagle3(dr) => {
                let policy = Eagle3Policy {
                    depth: p.eagle_depth,
                    top_k: p.eagle_top_k,
                    budget: p.budget,
                };
                AnySession::Eagle3(Eagle3Session::new(dr, p.max_entries as usize, policy)?)
            }
        };
        let handle = Box::into_raw(Box::new(sb_session { session, drafter }));
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
/// drafter context and computes block 1. The sampled token becomes the root of the next draft.
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
        let d = unsafe { obj_ref(s.drafter) }?;
        let c = d.drafter.shape();
        let rows = (n_feature_rows as usize)
            .checked_mul(c.feature_width)
            .ok_or(Status::InvalidArgument)?;
        let feats = unsafe { slice_ref(features, rows) }?;
        let toks = tokens_u32(unsafe { slice_ref(tokens, n_tokens as usize) }?, c.vocab)?;
        if n_tokens != n_feature_rows + 1 {
            return Err(Status::ShapeMismatch);
        }
        match &mut s.session {
            AnySession::SpecBlock(x) => x.prefill(d.embedding(), feats, &toks)?,
            AnySession::Eagle3(x) => x.prefill(d.embedding(), feats, &toks)?,
        }
        Ok(())
    })
}

/// Grows the next draft tree into `tree` (reset, filled and finalized to the session's budget). The
/// tree needs room for every candidate before the prune: create it with `max_nodes` >= 1024 and
/// `max_depth` >= 2 x slots.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_session_draft(session: *mut sb_session, tree: *mut sb_tree) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { obj_mut(session) }?;
        let t = unsafe { obj_mut(tree) }?;
        let d = unsafe { obj_ref(s.drafter) }?;
        match &mut s.session {
            AnySession::SpecBlock(x) => x.draft(d.embedding(), &mut t.0)?,
            AnySession::Eagle3(x) => x.draft(d.embedding(), &mut t.0)?,
        }
        Ok(())
    })
}

/// After verification: the `n_accepted` accepted draft tokens and the `bonus` token, with target
/// features of [root, accepted...] (`n_accepted + 1` rows of `feature_width`). Appends them to the
/// drafter context and computes the next block 1; `bonus` becomes the root.
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
        let d = unsafe { obj_ref(s.drafter) }?;
        let c = d.drafter.shape();
        let acc = if n_accepted == 0 {
            Vec::new()
        } else {
            tokens_u32(
                unsafe { slice_ref(accepted, n_accepted as usize) }?,
                c.vocab,
            )?
        };
        let bonus = tokens_u32(&[bonus], c.vocab)?[0];
        if n_feature_rows != n_accepted + 1 {
            return Err(Status::ShapeMismatch);
        }
        let rows = (n_feature_rows as usize)
            .checked_mul(c.feature_width)
            .ok_or(Status::InvalidArgument)?;
        let feats = unsafe { slice_ref(features, rows) }?;
        match &mut s.session {
            AnySession::SpecBlock(x) => x.commit(d.embedding(), &acc, bonus, feats)?,
            AnySession::Eagle3(x) => x.commit(d.embedding(), &acc, bonus, feats)?,
        }
        Ok(())
    })
}

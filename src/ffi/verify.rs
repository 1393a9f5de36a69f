//! C functions for acceptance.

use super::tree::{SB_MAX_DEPTH, SB_MAX_KEEP, sb_tree};
use super::{guard, obj_ref, read_params, slice_ref, write_out};
use crate::error::Status;
use crate::verify::{self, Acceptance, Sampling};

/// The target's sampling parameters for `sb_verify_sample`. Get them from `sb_sampling_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_sampling {
    /// `sizeof(sb_sampling)`; set by `sb_sampling_default_params`.
    pub struct_size: u32,
    /// Temperature (finite, >= 0); 0 = greedy.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (ties at the boundary kept); 0 = off.
    pub top_k: i32,
    /// Keep the smallest most-likely set with at least `top_p` of the mass, in (0, 1]; 1 = off.
    pub top_p: f32,
}

/// Result of verification.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_accept {
    /// Number of accepted draft nodes (root excluded).
    pub n_accepted: u32,
    /// Accepted node ids (finalized ids), root to leaf; the first `n_accepted` are valid.
    pub nodes: [i32; SB_MAX_DEPTH],
    /// Their tokens.
    pub tokens: [i32; SB_MAX_DEPTH],
    /// Token the target emits after the last accepted node (after the root if none was accepted).
    pub bonus_token: i32,
    /// Entries of `keep`: `n_accepted + 1`.
    pub n_keep: u32,
    /// KV keep-list: tree rows whose KV the engine keeps, in order (`0`, then `nodes`). Row `keep[j]` goes
    /// to cache position `prefix_len + j`; every other tree row is discarded.
    pub keep: [i32; SB_MAX_KEEP],
}

impl From<Acceptance> for sb_accept {
    fn from(a: Acceptance) -> Self {
        let mut keep = [-1; SB_MAX_KEEP];
        let n_keep = a.keep_list(&mut keep).unwrap_or(0) as u32;
        sb_accept {
            n_accepted: a.n_accepted,
            nodes: a.nodes,
            tokens: a.tokens,
            bonus_token: a.bonus_token,
            n_keep,
            keep,
        }
    }
}

/// Default sampling: temperature 1, top-k off, top-p off.
#[unsafe(no_mangle)]
pub extern "C" fn sb_sampling_default_params() -> sb_sampling {
    let d = Sampling::default();
    sb_sampling {
        struct_size: size_of::<sb_sampling>() as u32,
        temperature: d.temperature,
        top_k: d.top_k,
        top_p: d.top_p,
    }
}

/// Greedy acceptance. `target_argmax[i]` is the target's argmax after node `i` of the finalized tree;
/// `n` must equal `sb_tree_len` (else `SB_STATUS_SHAPE_MISMATCH`); a negative entry gives
/// `SB_STATUS_INVALID_ARGUMENT`. The result equals plain greedy decoding.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_verify_greedy(
    tree: *const sb_tree,
    target_argmax: *const i32,
    n: u32,
    out: *mut sb_accept,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let t = unsafe { obj_ref(tree) }?;
        let argmax = unsafe { slice_ref(target_argmax, n as usize) }?;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        let a = verify::greedy(&t.0, argmax)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, a.into()) }
    })
}

/// Lossless sampling acceptance. `logits` is row-major `n x vocab` (row `i` = target logits after node
/// `i`), `n` must equal `sb_tree_len`. Temperature, top-k and top-p from `sampling` define the target
/// distribution; the emitted tokens are distributed exactly as plain sampling from it. Same inputs and
/// `seed` give the same result on every platform. Only the rows the walk visits are read and checked:
/// NaN or +inf there gives `SB_STATUS_NON_FINITE` (-inf is a masked token) and a row with no finite
/// value `SB_STATUS_INVALID_ARGUMENT`. A temperature whose reciprocal overflows (subnormal) acts as 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_verify_sample(
    tree: *const sb_tree,
    logits: *const f32,
    n: u32,
    vocab: u32,
    sampling: *const sb_sampling,
    seed: u64,
    out: *mut sb_accept,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let t = unsafe { obj_ref(tree) }?;
        let s = unsafe { read_params(sampling) }?;
        let total = (n as usize)
            .checked_mul(vocab as usize)
            .ok_or(Status::InvalidArgument)?;
        let logits = unsafe { slice_ref(logits, total) }?;
        if out.is_null() {
            return Err(Status::NullArgument);
        }
        if n as usize != t.0.len() {
            return Err(Status::ShapeMismatch);
        }
        let sampling = Sampling {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
        };
        let a = verify::sample(&t.0, logits, vocab as usize, &sampling, seed)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, a.into()) }
    })
}

/// Plain decoding's sampler: writes one token drawn from the target distribution of one logits row
/// (`vocab` values) under `sampling` to `*out_token`. It is the distribution `sb_verify_sample` accepts
/// against, so a speculative run and a plain run emit tokens with the same law. The coin is the
/// counter-based generator at (`seed`, `counter`). Temperature 0 gives the argmax (ties to the lowest id).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_sampling_sample_token(
    logits: *const f32,
    vocab: u32,
    sampling: *const sb_sampling,
    seed: u64,
    counter: u64,
    out_token: *mut i32,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for every pointer.
        let s = unsafe { read_params(sampling) }?;
        let row = unsafe { slice_ref(logits, vocab as usize) }?;
        if out_token.is_null() {
            return Err(Status::NullArgument);
        }
        let sampling = Sampling {
            temperature: s.temperature,
            top_k: s.top_k,
            top_p: s.top_p,
        };
        let t = verify::sample_row(row, &sampling, seed, counter)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(out_token, t as i32) }
    })
}

/// Deprecated name of `sb_sampling_default_params` (kept for callers built against 0.1 headers).
#[deprecated(note = "renamed sb_sampling_default_params")]
#[unsafe(no_mangle)]
pub extern "C" fn sb_sampling_default() -> sb_sampling {
    sb_sampling_default_params()
}

/// Deprecated name of `sb_sampling_sample_token` (kept for callers built against 0.1 headers).
#[deprecated(note = "renamed sb_sampling_sample_token")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_sample_token(
    logits: *const f32,
    vocab: u32,
    sampling: *const sb_sampling,
    seed: u64,
    counter: u64,
    out_token: *mut i32,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { sb_sampling_sample_token(logits, vocab, sampling, seed, counter, out_token) }
}

//! C functions that write verification inputs (see `crate::layout` for the formats).

use super::tree::sb_tree;
use super::{guard, obj_ref, slice_mut};
use crate::error::{Error, Status};
use crate::layout;
use crate::tree::DraftTree;

/// Runs a layout writer on a tree handle and a caller buffer.
unsafe fn write_layout<T>(
    tree: *const sb_tree,
    out: *mut T,
    cap: usize,
    write: impl FnOnce(&DraftTree, &mut [T]) -> Result<usize, Error>,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for `tree` and `(out, cap)`.
        let t = unsafe { obj_ref(tree) }?;
        let out = unsafe { slice_mut(out, cap) }?;
        write(&t.0, out)?;
        Ok(())
    })
}

/// Token of each node of the finalized tree, root first. `cap` >= `sb_tree_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_tokens(tree: *const sb_tree, out: *mut i32, cap: usize) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, layout::tokens) }
}

/// Parent of each node; the root's is -1. Parents precede children.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_parents(
    tree: *const sb_tree,
    out: *mut i32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, layout::parents) }
}

/// Depth of each node; the root's is 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_depths(tree: *const sb_tree, out: *mut i32, cap: usize) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, layout::depths) }
}

/// Target position of each node: `prefix_len + depth`, where `prefix_len` counts the committed tokens
/// before the root.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_positions(
    tree: *const sb_tree,
    prefix_len: u32,
    out: *mut i32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, |t, o| layout::positions(t, prefix_len, o)) }
}

/// First child of each node, -1 for leaves (SGLang `retrive_next_token`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_first_child(
    tree: *const sb_tree,
    out: *mut i32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, layout::first_child) }
}

/// Next sibling of each node, -1 for the last (SGLang `retrive_next_sibling`); siblings ascend by id.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_next_sibling(
    tree: *const sb_tree,
    out: *mut i32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, layout::next_sibling) }
}

/// Dense ancestor-or-self mask, row-major `n x n` bytes (`n = sb_tree_len`): `out[i*n + j] = 1` iff node
/// `j` is node `i` or one of its ancestors, else 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_mask_dense(
    tree: *const sb_tree,
    out: *mut u8,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, layout::mask_dense) }
}

/// Additive attention bias, row-major `n x n` floats: 0 where `sb_tree_mask_dense` is 1, -INFINITY elsewhere.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_mask_bias(
    tree: *const sb_tree,
    out: *mut f32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, layout::mask_bias) }
}

/// Words per row of `sb_tree_mask_bits`: `ceil((prefix_len + sb_tree_len) / 32)`. 0 for NULL or a tree that
/// is not finalized.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_mask_words_per_row(tree: *const sb_tree, prefix_len: u32) -> u32 {
    super::guard_or(0, || {
        // SAFETY: caller contract for `tree`.
        unsafe { obj_ref(tree) }
            .ok()
            .filter(|t| t.0.is_finalized())
            .map_or(0, |t| {
                layout::mask_words_per_row(t.0.len(), prefix_len) as u32
            })
    })
}

/// Bit-packed ancestor-or-self mask: `n` rows of `sb_tree_mask_words_per_row(tree, prefix_len)`
/// little-endian `uint32_t` words. Column `c` is bit `c % 32` of word `c / 32`; columns `0..prefix_len` are
/// the committed prefix (all 1) and column `prefix_len + j` is node `j`. `prefix_len = 0` gives the
/// TRT-LLM packed tree mask; a real prefix gives a query x KV mask with word-aligned rows.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_mask_bits(
    tree: *const sb_tree,
    prefix_len: u32,
    out: *mut u32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { write_layout(tree, out, cap, |t, o| layout::mask_bits(t, prefix_len, o)) }
}

/// Bytes `sb_tree_mask_flat_bits` writes: `ceil(n * (prefix_len + n) / 8)`. 0 for NULL or a tree that is
/// not finalized.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_mask_flat_bytes(tree: *const sb_tree, prefix_len: u32) -> usize {
    super::guard_or(0, || {
        // SAFETY: caller contract for `tree`.
        unsafe { obj_ref(tree) }
            .ok()
            .filter(|t| t.0.is_finalized())
            .map_or(0, |t| layout::mask_flat_bytes(t.0.len(), prefix_len))
    })
}

/// FlashInfer's packed `custom_mask` for one request: the row-major `n x (prefix_len + n)` query x KV
/// matrix flattened and packed with little bit order (bit `k` is bit `k % 8` of byte `k / 8`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_mask_flat_bits(
    tree: *const sb_tree,
    prefix_len: u32,
    out: *mut u8,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe {
        write_layout(tree, out, cap, |t, o| {
            layout::mask_flat_bits(t, prefix_len, o)
        })
    }
}

/// Root-to-leaf paths (EAGLE `retrieve_indices`): one row of `row_width` node ids per leaf (see
/// `sb_tree_num_leaves`), padded with -1, in lexicographic order. `row_width` >= `sb_tree_depth + 1`
/// and `cap` >= leaves * row_width, else `SB_STATUS_BUFFER_TOO_SMALL`. Writes the number of rows to `*out_rows` (may be NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_retrieve_paths(
    tree: *const sb_tree,
    row_width: u32,
    out: *mut i32,
    cap: usize,
    out_rows: *mut u32,
) -> Status {
    let mut rows = 0;
    // SAFETY: forwarded caller contract.
    let status = unsafe {
        write_layout(tree, out, cap, |t, o| {
            rows = layout::retrieve_paths(t, row_width as usize, o)?;
            Ok(rows)
        })
    };
    if status == Status::Ok && !out_rows.is_null() {
        // SAFETY: non-NULL, caller contract.
        unsafe { out_rows.write(rows as u32) };
    }
    status
}

/// llama.cpp multi-sequence encoding: leaf `k` (in `sb_tree_retrieve_paths` order) is sequence
/// `first_seq_id + k`; node `i` belongs to sequences `out_first[i] .. out_first[i] + out_count[i] - 1`
/// (the leaves below it). Give batch token `i` those `out_count[i]` ids. Fails with
/// `SB_STATUS_CAPACITY` if `first_seq_id + leaves > max_seq` (llama.cpp's `n_seq_max`) and
/// `SB_STATUS_INVALID_ARGUMENT` if `first_seq_id` is negative or the last id would pass `INT32_MAX`. Both buffers hold
/// `cap` >= `sb_tree_len` entries and must not overlap (overlapping buffers give
/// `SB_STATUS_INVALID_ARGUMENT`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_seq_ranges(
    tree: *const sb_tree,
    first_seq_id: i32,
    max_seq: u32,
    out_first: *mut i32,
    out_count: *mut i32,
    cap: usize,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for `tree` and both buffers.
        let t = unsafe { obj_ref(tree) }?;
        // Two `&mut` slices over overlapping memory would be undefined behaviour: refuse them.
        // (A byte count that overflows is no buffer that can exist: `slice_mut` refuses it below.)
        let bytes = cap.saturating_mul(size_of::<i32>());
        let (a, b) = (out_first as usize, out_count as usize);
        if cap > 0
            && !out_first.is_null()
            && !out_count.is_null()
            && a < b.saturating_add(bytes)
            && b < a.saturating_add(bytes)
        {
            return Err(Status::InvalidArgument);
        }
        let first = unsafe { slice_mut(out_first, cap) }?;
        let count = unsafe { slice_mut(out_count, cap) }?;
        layout::seq_ranges(&t.0, first_seq_id, max_seq, first, count)?;
        Ok(())
    })
}

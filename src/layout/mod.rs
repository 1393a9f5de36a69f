//! Verification inputs, in every common engine format, from one finalized [`DraftTree`].
//!
//! Row and column `i` of every matrix is node `i` of the finalized tree (node 0 is the root, the last
//! committed token, which the engine feeds as the first query row). Every function writes into a caller
//! buffer, checks its size first, writes nothing on error, and returns the number of elements written.
//!
//! | format | function | shape |
//! |---|---|---|
//! | tokens, parents, depths | [`tokens`], [`parents`], [`depths`] | `n` |
//! | positions `prefix_len + depth` | [`positions`] | `n` |
//! | dense ancestor-or-self mask (`u8` 0/1) | [`mask_dense`] | `n * n` |
//! | additive mask bias (0 / `-inf`, vLLM style) | [`mask_bias`] | `n * n` |
//! | bit rows, little-endian `u32` words, optional prefix columns (TRT-LLM / FlashInfer rows) | [`mask_bits`] | `n * words_per_row` |
//! | one flat little-endian bit string over `n x (prefix + n)` (FlashInfer `custom_mask`, packed) | [`mask_flat_bits`] | `ceil(n * (prefix + n) / 8)` bytes |
//! | root-to-leaf paths padded with -1 (EAGLE / Medusa `retrieve_indices`) | [`retrieve_paths`] | `leaves * row_width` |
//! | first child / next sibling (SGLang) | [`first_child`], [`next_sibling`] | `n` |
//! | llama.cpp sequence ids: one per leaf, each node's contiguous id range | [`seq_ranges`] | `n` + `n` |

use crate::error::{Error, check_buffer};
use crate::tree::DraftTree;

/// Copies `src` into the front of `out` after checking its size.
fn write_all<T: Copy>(what: &'static str, src: &[T], out: &mut [T]) -> Result<usize, Error> {
    check_buffer(what, src.len(), out.len())?;
    out[..src.len()].copy_from_slice(src);
    Ok(src.len())
}

/// Node tokens (root first).
pub fn tokens(t: &DraftTree, out: &mut [i32]) -> Result<usize, Error> {
    t.require_finalized()?;
    write_all("tokens", t.tokens(), out)
}

/// Parent of each node; -1 for the root.
pub fn parents(t: &DraftTree, out: &mut [i32]) -> Result<usize, Error> {
    t.require_finalized()?;
    write_all("parents", t.parents(), out)
}

/// First child of each node, -1 for leaves (SGLang `retrive_next_token`).
pub fn first_child(t: &DraftTree, out: &mut [i32]) -> Result<usize, Error> {
    t.require_finalized()?;
    write_all("first_child", t.first_child(), out)
}

/// Next sibling of each node, -1 for the last child (SGLang `retrive_next_sibling`). Siblings ascend by id,
/// which is descending cumulative draft probability.
pub fn next_sibling(t: &DraftTree, out: &mut [i32]) -> Result<usize, Error> {
    t.require_finalized()?;
    write_all("next_sibling", t.next_sibling(), out)
}

/// Writes `base + depth` for every node, checked against `i32` overflow.
fn offset_depths(
    t: &DraftTree,
    base: u32,
    what: &'static str,
    out: &mut [i32],
) -> Result<usize, Error> {
    t.require_finalized()?;
    let n = t.len();
    check_buffer(what, n, out.len())?;
    if base as u64 + t.deepest() as u64 > i32::MAX as u64 {
        return Err(Error::InvalidArgument(
            "prefix_len + depth does not fit in int32",
        ));
    }
    for (o, &d) in out[..n].iter_mut().zip(t.depths()) {
        *o = (base + d) as i32;
    }
    Ok(n)
}

/// Depth of each node (root 0).
pub fn depths(t: &DraftTree, out: &mut [i32]) -> Result<usize, Error> {
    offset_depths(t, 0, "depths", out)
}

/// Target position of each node: `prefix_len + depth`, where `prefix_len` is the number of committed
/// tokens before the root (so the root sits at position `prefix_len`).
pub fn positions(t: &DraftTree, prefix_len: u32, out: &mut [i32]) -> Result<usize, Error> {
    offset_depths(t, prefix_len, "positions", out)
}

/// Dense ancestor-or-self mask, row-major `n x n`: `out[i * n + j] = 1` iff `j` is `i` or an ancestor of `i`.
pub fn mask_dense(t: &DraftTree, out: &mut [u8]) -> Result<usize, Error> {
    t.require_finalized()?;
    let n = t.len();
    check_buffer("dense mask", n * n, out.len())?;
    let out = &mut out[..n * n];
    out[..n].fill(0);
    out[0] = 1;
    for i in 1..n {
        let p = t.parents()[i] as usize;
        // Parents precede children, so the parent's row is complete.
        let (done, rest) = out.split_at_mut(i * n);
        let row = &mut rest[..n];
        row.copy_from_slice(&done[p * n..p * n + n]);
        row[i] = 1;
    }
    Ok(n * n)
}

/// Additive attention bias, row-major `n x n`: 0 where the dense mask is 1, `-inf` elsewhere.
pub fn mask_bias(t: &DraftTree, out: &mut [f32]) -> Result<usize, Error> {
    t.require_finalized()?;
    let n = t.len();
    check_buffer("mask bias", n * n, out.len())?;
    let out = &mut out[..n * n];
    out[..n].fill(f32::NEG_INFINITY);
    out[0] = 0.0;
    for i in 1..n {
        let p = t.parents()[i] as usize;
        let (done, rest) = out.split_at_mut(i * n);
        let row = &mut rest[..n];
        row.copy_from_slice(&done[p * n..p * n + n]);
        row[i] = 0.0;
    }
    Ok(n * n)
}

/// `u32` words per row of [`mask_bits`] for a tree of `n` nodes and `prefix_len` prefix columns.
pub fn mask_words_per_row(n: usize, prefix_len: u32) -> usize {
    (prefix_len as usize + n).div_ceil(32)
}

/// Bit-packed ancestor-or-self mask. Row `i` has `mask_words_per_row` little-endian `u32` words; column
/// `c` is bit `c % 32` of word `c / 32`. Columns `0..prefix_len` are the committed prefix (all set), and
/// column `prefix_len + j` is node `j`. With `prefix_len = 0` this is TRT-LLM's packed tree mask; with
/// the prefix it is a query x KV mask with each row starting on a word boundary.
pub fn mask_bits(t: &DraftTree, prefix_len: u32, out: &mut [u32]) -> Result<usize, Error> {
    t.require_finalized()?;
    let n = t.len();
    let words = mask_words_per_row(n, prefix_len);
    let total = n
        .checked_mul(words)
        .ok_or(Error::InvalidArgument("mask size overflows"))?;
    check_buffer("bit mask", total, out.len())?;
    let out = &mut out[..total];
    let prefix = prefix_len as usize;
    let row0 = &mut out[..words];
    row0.fill(0);
    set_bit_range_u32(row0, 0, prefix + 1);
    for i in 1..n {
        let p = t.parents()[i] as usize;
        let (done, rest) = out.split_at_mut(i * words);
        let row = &mut rest[..words];
        row.copy_from_slice(&done[p * words..(p + 1) * words]);
        let c = prefix + i;
        row[c / 32] |= 1 << (c % 32);
    }
    Ok(total)
}

/// Sets bits `start..end` of a little-endian `u32` bit string.
fn set_bit_range_u32(words: &mut [u32], start: usize, end: usize) {
    let mut c = start;
    while c < end && !c.is_multiple_of(32) {
        words[c / 32] |= 1 << (c % 32);
        c += 1;
    }
    while c + 32 <= end {
        words[c / 32] = u32::MAX;
        c += 32;
    }
    while c < end {
        words[c / 32] |= 1 << (c % 32);
        c += 1;
    }
}

/// Sets bits `start..end` of a little-endian byte bit string.
fn set_bit_range_u8(bytes: &mut [u8], start: usize, end: usize) {
    let mut c = start;
    while c < end && !c.is_multiple_of(8) {
        bytes[c / 8] |= 1 << (c % 8);
        c += 1;
    }
    while c + 8 <= end {
        bytes[c / 8] = u8::MAX;
        c += 8;
    }
    while c < end {
        bytes[c / 8] |= 1 << (c % 8);
        c += 1;
    }
}

/// Bytes [`mask_flat_bits`] writes for `n` nodes and `prefix_len` prefix columns.
pub fn mask_flat_bytes(n: usize, prefix_len: u32) -> usize {
    (n * (prefix_len as usize + n)).div_ceil(8)
}

/// FlashInfer's packed `custom_mask` for one request: the row-major `n x (prefix_len + n)` query x KV
/// matrix flattened and packed into bytes with little bit order (bit `k` of the string is bit `k % 8` of
/// byte `k / 8`). Rows are not byte-aligned. Prefix columns are set; tree columns follow the ancestor mask.
pub fn mask_flat_bits(t: &DraftTree, prefix_len: u32, out: &mut [u8]) -> Result<usize, Error> {
    t.require_finalized()?;
    let n = t.len();
    let prefix = prefix_len as usize;
    let kv = prefix
        .checked_add(n)
        .ok_or(Error::InvalidArgument("mask size overflows"))?;
    let bytes = n
        .checked_mul(kv)
        .ok_or(Error::InvalidArgument("mask size overflows"))?
        .div_ceil(8);
    check_buffer("flat bit mask", bytes, out.len())?;
    let out = &mut out[..bytes];
    out.fill(0);
    for i in 0..n {
        let row = i * kv;
        set_bit_range_u8(out, row, row + prefix);
        let mut a = i as i32;
        while a >= 0 {
            let c = row + prefix + a as usize;
            out[c / 8] |= 1 << (c % 8);
            a = t.parents()[a as usize];
        }
    }
    Ok(bytes)
}

/// Depth-first walk over the finalized tree, children in ascending id order, without a stack:
/// `visit(node, true)` on the way down, `visit(node, false)` once its subtree is done.
fn walk(t: &DraftTree, mut visit: impl FnMut(usize, bool)) {
    let (fc, ns, parent) = (t.first_child(), t.next_sibling(), t.parents());
    let mut node = 0usize;
    loop {
        visit(node, true);
        if fc[node] >= 0 {
            node = fc[node] as usize;
            continue;
        }
        loop {
            visit(node, false);
            if node == 0 {
                return;
            }
            if ns[node] >= 0 {
                node = ns[node] as usize;
                break;
            }
            node = parent[node] as usize;
        }
    }
}

/// Root-to-leaf paths (EAGLE's `retrieve_indices`): one row of `row_width` node ids per leaf, padded
/// with -1, in depth-first order, which is lexicographic order of the rows. `row_width` must be at least
/// `deepest + 1`. Returns the number of rows (leaves); `out` must hold `leaves * row_width`.
pub fn retrieve_paths(t: &DraftTree, row_width: usize, out: &mut [i32]) -> Result<usize, Error> {
    t.require_finalized()?;
    if row_width < t.deepest() + 1 {
        return Err(Error::BufferTooSmall {
            what: "retrieve path row width",
            needed: t.deepest() + 1,
            got: row_width,
        });
    }
    let rows = t.num_leaves();
    let total = rows
        .checked_mul(row_width)
        .ok_or(Error::InvalidArgument("retrieve paths size overflows"))?;
    check_buffer("retrieve paths", total, out.len())?;
    let (fc, parent, depth) = (t.first_child(), t.parents(), t.depths());
    let mut r = 0;
    walk(t, |node, entering| {
        if entering && fc[node] < 0 {
            let row = &mut out[r * row_width..(r + 1) * row_width];
            row.fill(-1);
            let mut a = node as i32;
            while a >= 0 {
                row[depth[a as usize] as usize] = a;
                a = parent[a as usize];
            }
            r += 1;
        }
    });
    Ok(rows)
}

/// llama.cpp's multi-sequence encoding of a tree: leaf `k` (in [`retrieve_paths`] order) is sequence
/// `first_seq_id + k`, and every node belongs to the sequences of the leaves below it, which form the
/// contiguous range `first[i] .. first[i] + count[i]`. Put node `i` in the batch with `count[i]` sequence
/// ids starting at `first[i]`. Fails with a capacity error when the sequences would not fit below
/// `max_seq` (llama.cpp's `n_seq_max`). Returns the number of sequences used (leaves).
pub fn seq_ranges(
    t: &DraftTree,
    first_seq_id: i32,
    max_seq: u32,
    first: &mut [i32],
    count: &mut [i32],
) -> Result<usize, Error> {
    t.require_finalized()?;
    if first_seq_id < 0 {
        return Err(Error::InvalidArgument("first_seq_id must be >= 0"));
    }
    let n = t.len();
    check_buffer("sequence range starts", n, first.len())?;
    check_buffer("sequence range counts", n, count.len())?;
    let leaves = t.num_leaves();
    if first_seq_id as u64 + leaves as u64 > max_seq as u64 {
        return Err(Error::Capacity {
            what: "llama.cpp sequences (first_seq_id + leaves > max_seq)",
            capacity: max_seq as usize,
        });
    }
    // The last id handed out is first_seq_id + leaves - 1; it must be an i32.
    if first_seq_id as i64 + leaves as i64 - 1 > i32::MAX as i64 {
        return Err(Error::InvalidArgument(
            "first_seq_id + leaves - 1 exceeds i32::MAX (llama_seq_id is 32-bit)",
        ));
    }
    let fc = t.first_child();
    // One past the last id handed out; i64 because it reaches i32::MAX + 1 after the last leaf.
    let mut next_leaf = first_seq_id as i64;
    walk(t, |node, entering| {
        if entering {
            first[node] = next_leaf as i32;
            if fc[node] < 0 {
                next_leaf += 1;
            }
        } else {
            count[node] = (next_leaf - first[node] as i64) as i32;
        }
    });
    Ok(leaves)
}

#[cfg(test)]
mod tests;

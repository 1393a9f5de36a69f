//! C functions for the draft tree handle.

use std::boxed::Box;

use super::{guard, guard_or, obj_mut, obj_ref, read_params, slice_mut, write_out};
use crate::error::Status;
use crate::tree::{DraftTree, NodeMeta, TreeParams};

/// A draft tree: a node arena with a capacity fixed at creation.
///
/// Thread safety: a tree may be moved between threads. Calls taking a `const sb_tree *` only read it and
/// may run concurrently with each other; a call taking `sb_tree *` must not run concurrently with any
/// other call on the same tree.
pub struct sb_tree(pub(crate) DraftTree);

/// Creation parameters for `sb_tree_new`. Get them from `sb_tree_default_params()`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct sb_tree_params {
    /// `sizeof(sb_tree_params)`; set by `sb_tree_default_params`.
    pub struct_size: u32,
    /// Most non-root nodes that can be added between resets (1..=`SB_MAX_NODES`); also the largest budget.
    pub max_nodes: u32,
    /// Deepest node allowed (1..=`SB_MAX_DEPTH`); the root has depth 0.
    pub max_depth: u32,
}

/// Largest `max_depth` (and length of the node arrays in `sb_accept`).
pub const SB_MAX_DEPTH: usize = 64;
/// Length of `sb_accept.keep`: the root plus `SB_MAX_DEPTH` accepted nodes.
pub const SB_MAX_KEEP: usize = 65;
/// Largest `max_nodes`.
pub const SB_MAX_NODES: usize = 65536;

const _: () = assert!(SB_MAX_DEPTH == crate::MAX_DEPTH && SB_MAX_KEEP == SB_MAX_DEPTH + 1);
const _: () = assert!(SB_MAX_NODES == crate::MAX_NODES);

/// Default tree parameters: 128 nodes, depth 16 (room for SpecBlock's 90-node, depth-8 default tree).
#[unsafe(no_mangle)]
pub extern "C" fn sb_tree_default_params() -> sb_tree_params {
    let d = TreeParams::default();
    sb_tree_params {
        struct_size: size_of::<sb_tree_params>() as u32,
        max_nodes: d.max_nodes,
        max_depth: d.max_depth,
    }
}

/// Creates a tree; all memory it will ever use is allocated here. On success writes the handle to
/// `*out_tree`; free it with `sb_tree_free`. Call `sb_tree_reset` before adding nodes.
///
/// Errors: NULL argument; `SB_STATUS_STRUCT_SIZE` if `params->struct_size` is wrong;
/// `SB_STATUS_INVALID_ARGUMENT` for capacities out of range; `SB_STATUS_OUT_OF_MEMORY`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_new(
    params: *const sb_tree_params,
    out_tree: *mut *mut sb_tree,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for `params`.
        let p = unsafe { read_params(params) }?;
        if out_tree.is_null() {
            return Err(Status::NullArgument);
        }
        let tree = DraftTree::new(TreeParams {
            max_nodes: p.max_nodes,
            max_depth: p.max_depth,
        })?;
        let handle = Box::into_raw(Box::new(sb_tree(tree)));
        // SAFETY: checked non-NULL above.
        unsafe { write_out(out_tree, handle) }
    })
}

/// Frees a tree. `NULL` is a no-op.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_free(tree: *mut sb_tree) {
    if tree.is_null() {
        return;
    }
    // SAFETY: the handle came from `sb_tree_new` (caller contract) and is freed once.
    let _ = guard(|| {
        drop(unsafe { Box::from_raw(tree) });
        Ok(())
    });
}

/// Starts a new tree whose root (node 0) is `root_token`, the last committed token (>= 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_reset(tree: *mut sb_tree, root_token: i32) -> Status {
    guard(|| {
        // SAFETY: caller contract for `tree`.
        let t = unsafe { obj_mut(tree) }?;
        Ok(t.0.reset(root_token)?)
    })
}

/// Adds a node under `parent` (0 = root, or an id returned earlier by `sb_tree_add`) with `token` and its
/// draft log-probability given the parent (values above 0 are treated as 0; NaN and +inf are rejected).
/// Writes the new node's id to `*out_node` (may be NULL if not needed).
///
/// Errors: `SB_STATUS_INVALID_NODE` (unknown parent), `SB_STATUS_CAPACITY` (arena full),
/// `SB_STATUS_DEPTH_LIMIT`, `SB_STATUS_NON_FINITE`, `SB_STATUS_INVALID_ARGUMENT` (negative token),
/// `SB_STATUS_INVALID_STATE` (no reset yet, or already finalized).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_add(
    tree: *mut sb_tree,
    parent: i32,
    token: i32,
    logprob: f32,
    out_node: *mut i32,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { sb_tree_add_meta(tree, parent, token, logprob, NodeMeta::default(), out_node) }
}

/// `sb_tree_add` with drafter metadata attached to the node (read back with `sb_tree_node_meta`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_add_meta(
    tree: *mut sb_tree,
    parent: i32,
    token: i32,
    logprob: f32,
    meta: NodeMeta,
    out_node: *mut i32,
) -> Status {
    guard(|| {
        // SAFETY: caller contract for `tree`.
        let t = unsafe { obj_mut(tree) }?;
        let id = t.0.add_with_meta(parent, token, logprob, meta)?;
        if !out_node.is_null() {
            // SAFETY: non-NULL, caller contract.
            unsafe { out_node.write(id) };
        }
        Ok(())
    })
}

/// Dedups (same parent and token: the higher cumulative log-probability survives and adopts the other's
/// children), prunes to exactly `min(budget, surviving nodes)` non-root nodes by cumulative
/// log-probability (ancestors always kept), and renumbers nodes topologically (root 0, then by depth, then
/// by cumulative log-probability descending). `budget` may not exceed `max_nodes`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_finalize(tree: *mut sb_tree, budget: u32) -> Status {
    guard(|| {
        // SAFETY: caller contract for `tree`.
        let t = unsafe { obj_mut(tree) }?;
        Ok(t.0.finalize(budget)?)
    })
}

/// Number of nodes including the root (after finalize, the finalized count). 0 for NULL or before the
/// first reset.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_len(tree: *const sb_tree) -> u32 {
    // SAFETY: caller contract for `tree`.
    guard_or(0, || {
        unsafe { obj_ref(tree) }.map_or(0, |t| t.0.len() as u32)
    })
}

/// 1 if the tree is finalized (layouts and verification can be read), else 0 (also for NULL).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_is_finalized(tree: *const sb_tree) -> u32 {
    // SAFETY: caller contract for `tree`.
    guard_or(0, || {
        unsafe { obj_ref(tree) }.map_or(0, |t| t.0.is_finalized() as u32)
    })
}

/// Number of leaves of the finalized tree (= rows of `sb_tree_retrieve_paths`, = llama.cpp sequences).
/// 0 for NULL or a tree that is not finalized.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_num_leaves(tree: *const sb_tree) -> u32 {
    // SAFETY: caller contract for `tree`.
    guard_or(0, || {
        unsafe { obj_ref(tree) }
            .ok()
            .filter(|t| t.0.is_finalized())
            .map_or(0, |t| t.0.num_leaves() as u32)
    })
}

/// Depth of the deepest node of the finalized tree (0 for NULL, a lone root, or a tree not finalized).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_depth(tree: *const sb_tree) -> u32 {
    // SAFETY: caller contract for `tree`.
    guard_or(0, || {
        unsafe { obj_ref(tree) }
            .ok()
            .filter(|t| t.0.is_finalized())
            .map_or(0, |t| t.0.deepest() as u32)
    })
}

/// Copies a per-node array of the finalized tree into `(out, cap)`.
pub(crate) unsafe fn copy_node_array<T: Copy>(
    tree: *const sb_tree,
    out: *mut T,
    cap: usize,
    what: &'static str,
    get: impl FnOnce(&DraftTree) -> &[T],
) -> Status {
    guard(|| {
        // SAFETY: caller contract for `tree` and `(out, cap)`.
        let t = unsafe { obj_ref(tree) }?;
        let out = unsafe { slice_mut(out, cap) }?;
        t.0.require_finalized()?;
        let src = get(&t.0);
        crate::error::check_buffer(what, src.len(), out.len())?;
        out[..src.len()].copy_from_slice(src);
        Ok(())
    })
}

/// Cumulative draft log-probability of each node (root 0): the sum along the path it was added under;
/// a node that dedup moved under a better duplicate keeps its value. `cap` >= `sb_tree_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_cum_logprobs(
    tree: *const sb_tree,
    out: *mut f32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { copy_node_array(tree, out, cap, "cum_logprobs", DraftTree::cum_logprobs) }
}

/// Drafter metadata of each node. `cap` >= `sb_tree_len`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_node_meta(
    tree: *const sb_tree,
    out: *mut NodeMeta,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { copy_node_array(tree, out, cap, "node_meta", DraftTree::metas) }
}

/// The id each node had when it was added (root 0), so a drafter can find its own per-candidate data.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sb_tree_source_ids(
    tree: *const sb_tree,
    out: *mut i32,
    cap: usize,
) -> Status {
    // SAFETY: forwarded caller contract.
    unsafe { copy_node_array(tree, out, cap, "source_ids", DraftTree::source_ids) }
}

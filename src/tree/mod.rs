//! The bounded draft tree.
//!
//! A [`DraftTree`] is a node arena whose capacity is fixed at creation. A drafter calls
//! [`DraftTree::reset`] with the last committed token (the root, node 0), then [`DraftTree::add`] for every
//! candidate under an existing node, then [`DraftTree::finalize`] with a node budget. Finalize
//!
//! 1. **dedups** at every depth: two nodes with the same parent and token merge into the one with the
//!    higher cumulative log-probability (ties: the earlier one); the loser's children move under the winner
//!    and are themselves deduped against the winner's children;
//! 2. **prunes** to exactly `min(budget, live nodes)` non-root nodes, keeping the highest cumulative
//!    log-probabilities; because a child's cumulative log-probability never exceeds its parent's, ranking
//!    by (cumulative log-prob desc, depth asc, insertion order) keeps every kept node's ancestors;
//! 3. **orders** the result topologically: root first, then by depth, then by cumulative log-prob
//!    (descending), then by insertion order. After finalize, node ids are positions in this order.
//!
//! Nothing allocates after [`DraftTree::new`].

mod finalize;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::error::Error;
use crate::{MAX_DEPTH, MAX_NODES};

/// Capacities fixed when a tree is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeParams {
    /// Maximum number of non-root nodes that can be added between resets. Also the largest budget.
    pub max_nodes: u32,
    /// Maximum depth of a node (the root has depth 0). At most [`MAX_DEPTH`].
    pub max_depth: u32,
}

impl Default for TreeParams {
    /// 128 nodes, depth 16: room for SpecBlock's default tree (90 nodes, depth 8) and EAGLE's (60, depth 7).
    fn default() -> Self {
        TreeParams {
            max_nodes: 128,
            max_depth: 16,
        }
    }
}

/// Metadata a drafter attaches to a node; it travels with the node through finalize.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NodeMeta {
    /// Drafter block that produced the node (SpecBlock: 0 = block 1, 1 = block 2).
    pub block: u8,
    /// Slot inside the block (0..K).
    pub slot: u8,
    /// Rank-head class predicted for the slot.
    pub rank_class: u8,
    /// Free for the drafter's own use.
    pub user: u8,
}

/// Where a tree is in its life cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Created, no root yet.
    Empty,
    /// Root set; nodes may be added.
    Building,
    /// Finalized; layouts and verification may be read.
    Finalized,
}

/// A draft tree with a fixed capacity. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct DraftTree {
    max_nodes: usize,
    max_depth: usize,
    phase: Phase,
    /// Nodes including the root.
    len: usize,
    token: Box<[i32]>,
    parent: Box<[i32]>,
    logprob: Box<[f32]>,
    cum: Box<[f32]>,
    depth: Box<[u32]>,
    meta: Box<[NodeMeta]>,
    source: Box<[i32]>,
    first_child: Box<[i32]>,
    next_sibling: Box<[i32]>,
    /// Children of node `i` sorted by token are `child_by_token[child_start[i]..child_start[i + 1]]`.
    child_start: Box<[u32]>,
    child_by_token: Box<[i32]>,
    scratch: finalize::Scratch,
    num_leaves: usize,
    deepest: usize,
}

/// Allocates a boxed slice of `n` copies of `value`, reporting failure instead of aborting.
pub(crate) fn try_filled<T: Copy>(n: usize, value: T) -> Result<Box<[T]>, Error> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::OutOfMemory)?;
    v.resize(n, value);
    Ok(v.into_boxed_slice())
}

impl DraftTree {
    /// Creates an empty tree. Call [`reset`](Self::reset) before adding nodes.
    pub fn new(params: TreeParams) -> Result<Self, Error> {
        let max_nodes = params.max_nodes as usize;
        let max_depth = params.max_depth as usize;
        if max_nodes == 0 || max_nodes > MAX_NODES {
            return Err(Error::InvalidArgument(
                "max_nodes must be in 1..=65536 (SB_MAX_NODES)",
            ));
        }
        if max_depth == 0 || max_depth > MAX_DEPTH {
            return Err(Error::InvalidArgument(
                "max_depth must be in 1..=64 (SB_MAX_DEPTH)",
            ));
        }
        let n = max_nodes + 1;
        Ok(DraftTree {
            max_nodes,
            max_depth,
            phase: Phase::Empty,
            len: 0,
            token: try_filled(n, 0)?,
            parent: try_filled(n, -1)?,
            logprob: try_filled(n, 0.0)?,
            cum: try_filled(n, 0.0)?,
            depth: try_filled(n, 0)?,
            meta: try_filled(n, NodeMeta::default())?,
            source: try_filled(n, 0)?,
            first_child: try_filled(n, -1)?,
            next_sibling: try_filled(n, -1)?,
            child_start: try_filled(n + 1, 0)?,
            child_by_token: try_filled(n, 0)?,
            scratch: finalize::Scratch::new(n)?,
            num_leaves: 0,
            deepest: 0,
        })
    }

    /// The capacities this tree was created with.
    pub fn params(&self) -> TreeParams {
        TreeParams {
            max_nodes: self.max_nodes as u32,
            max_depth: self.max_depth as u32,
        }
    }

    /// Starts a new tree whose root (node 0) is `root_token`, the last committed token.
    pub fn reset(&mut self, root_token: i32) -> Result<(), Error> {
        if root_token < 0 {
            return Err(Error::InvalidArgument("root_token must be >= 0"));
        }
        self.phase = Phase::Building;
        self.len = 1;
        self.token[0] = root_token;
        self.parent[0] = -1;
        self.logprob[0] = 0.0;
        self.cum[0] = 0.0;
        self.depth[0] = 0;
        self.meta[0] = NodeMeta::default();
        self.source[0] = 0;
        self.num_leaves = 0;
        self.deepest = 0;
        Ok(())
    }

    /// Adds a node under `parent` (0 = root, otherwise an id returned earlier by `add`) with the draft
    /// log-probability of `token` given the parent. Returns the new node's id.
    ///
    /// A `logprob` above 0 (rounding in a log-softmax) is treated as 0; NaN and `+inf` are rejected.
    pub fn add(&mut self, parent: i32, token: i32, logprob: f32) -> Result<i32, Error> {
        self.add_with_meta(parent, token, logprob, NodeMeta::default())
    }

    /// [`add`](Self::add) with drafter metadata attached to the node.
    pub fn add_with_meta(
        &mut self,
        parent: i32,
        token: i32,
        logprob: f32,
        meta: NodeMeta,
    ) -> Result<i32, Error> {
        match self.phase {
            Phase::Empty => return Err(Error::InvalidState("call reset before adding nodes")),
            Phase::Finalized => {
                return Err(Error::InvalidState(
                    "the tree is finalized; call reset to start a new one",
                ));
            }
            Phase::Building => {}
        }
        if parent < 0 || parent as usize >= self.len {
            return Err(Error::InvalidNode {
                node: parent as i64,
                len: self.len,
            });
        }
        if token < 0 {
            return Err(Error::InvalidArgument("token must be >= 0"));
        }
        if logprob.is_nan() || logprob == f32::INFINITY {
            return Err(Error::NonFinite {
                what: "logprob",
                row: self.len,
                col: 0,
            });
        }
        if self.len > self.max_nodes {
            return Err(Error::Capacity {
                what: "tree nodes (max_nodes)",
                capacity: self.max_nodes,
            });
        }
        let p = parent as usize;
        let depth = self.depth[p] as usize + 1;
        if depth > self.max_depth {
            return Err(Error::DepthLimit {
                max_depth: self.max_depth,
            });
        }
        let lp = if logprob > 0.0 { 0.0 } else { logprob };
        let id = self.len;
        self.token[id] = token;
        self.parent[id] = parent;
        self.logprob[id] = lp;
        self.cum[id] = self.cum[p] + lp;
        self.depth[id] = depth as u32;
        self.meta[id] = meta;
        self.source[id] = id as i32;
        self.len += 1;
        Ok(id as i32)
    }

    /// Dedups, prunes to `budget` non-root nodes and orders the tree (see the [module docs](self)).
    /// Finalizing a finalized tree again applies the same steps to it (with the same budget it changes
    /// nothing). `budget` may not exceed `max_nodes`.
    pub fn finalize(&mut self, budget: u32) -> Result<(), Error> {
        if self.phase == Phase::Empty {
            return Err(Error::InvalidState("call reset before finalize"));
        }
        if budget as usize > self.max_nodes {
            return Err(Error::Capacity {
                what: "budget (max_nodes)",
                capacity: self.max_nodes,
            });
        }
        finalize::run(self, budget as usize);
        self.phase = Phase::Finalized;
        Ok(())
    }

    /// Whether [`finalize`](Self::finalize) has run since the last reset.
    pub fn is_finalized(&self) -> bool {
        self.phase == Phase::Finalized
    }

    /// Returns an error unless the tree is finalized; layouts and verification call this first.
    pub fn require_finalized(&self) -> Result<(), Error> {
        if self.is_finalized() {
            Ok(())
        } else {
            Err(Error::InvalidState("finalize the tree first"))
        }
    }

    /// Number of nodes including the root (0 before the first reset).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first reset.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token of every node (finalized order after finalize, insertion order before).
    pub fn tokens(&self) -> &[i32] {
        &self.token[..self.len]
    }

    /// Parent of every node; the root's is -1.
    pub fn parents(&self) -> &[i32] {
        &self.parent[..self.len]
    }

    /// Depth of every node; the root's is 0.
    pub fn depths(&self) -> &[u32] {
        &self.depth[..self.len]
    }

    /// Cumulative draft log-probability of every node as inserted (the sum along the path it was added
    /// under; the root's is 0). A node that dedup moved under a better duplicate keeps its value, which
    /// is still at most its new parent's.
    pub fn cum_logprobs(&self) -> &[f32] {
        &self.cum[..self.len]
    }

    /// Draft log-probability of every node given the parent it was added under.
    pub fn logprobs(&self) -> &[f32] {
        &self.logprob[..self.len]
    }

    /// Drafter metadata of every node.
    pub fn metas(&self) -> &[NodeMeta] {
        &self.meta[..self.len]
    }

    /// The id each node had when it was added (its insertion id), so a drafter can find its own data.
    pub fn source_ids(&self) -> &[i32] {
        &self.source[..self.len]
    }

    /// First child of every node, -1 for leaves (finalized trees only; children ascend by id).
    pub fn first_child(&self) -> &[i32] {
        &self.first_child[..self.len]
    }

    /// Next sibling of every node, -1 for the last (finalized trees only).
    pub fn next_sibling(&self) -> &[i32] {
        &self.next_sibling[..self.len]
    }

    /// Number of leaves of the finalized tree (a lone root counts as one leaf).
    pub fn num_leaves(&self) -> usize {
        self.num_leaves
    }

    /// Depth of the deepest node of the finalized tree.
    pub fn deepest(&self) -> usize {
        self.deepest
    }

    /// The children of `node` sorted by ascending token (finalized trees). Tokens of siblings are
    /// distinct after dedup.
    pub fn children_by_token(&self, node: usize) -> &[i32] {
        match (self.child_start.get(node), self.child_start.get(node + 1)) {
            (Some(&a), Some(&b)) if node < self.len => &self.child_by_token[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Iterates over the children of `node` in ascending id order (finalized trees).
    pub fn children(&self, node: usize) -> Children<'_> {
        Children {
            next_sibling: self.next_sibling(),
            next: self.first_child.get(node).copied().unwrap_or(-1),
        }
    }
}

/// Iterator over a node's children, from [`DraftTree::children`].
pub struct Children<'a> {
    next_sibling: &'a [i32],
    next: i32,
}

impl Iterator for Children<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.next < 0 {
            return None;
        }
        let node = self.next as usize;
        self.next = self.next_sibling[node];
        Some(node)
    }
}

#[cfg(test)]
mod tests;

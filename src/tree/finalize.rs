//! Finalize: dedup, budget prune and topological order, in place, without allocating.

use alloc::boxed::Box;
use core::cmp::Ordering;

use super::{DraftTree, NodeMeta, try_filled};
use crate::error::Error;

/// Work arrays sized at creation.
#[derive(Clone, Debug)]
pub(super) struct Scratch {
    /// Union-find representative: a merged-away node points at the node that absorbed it.
    rep: Box<[i32]>,
    /// Candidate node ids, then the kept ones in final order.
    order: Box<[u32]>,
    /// Old id -> new id (-1 = dropped).
    new_id: Box<[i32]>,
    i32s: Box<[i32]>,
    f32s: Box<[f32]>,
    u32s: Box<[u32]>,
    metas: Box<[NodeMeta]>,
}

impl Scratch {
    pub(super) fn new(n: usize) -> Result<Self, Error> {
        Ok(Scratch {
            rep: try_filled(n, 0)?,
            order: try_filled(n, 0)?,
            new_id: try_filled(n, -1)?,
            i32s: try_filled(n, 0)?,
            f32s: try_filled(n, 0.0)?,
            u32s: try_filled(n, 0)?,
            metas: try_filled(n, NodeMeta::default())?,
        })
    }
}

/// Follows merge links to the surviving node, compressing the path.
fn find(rep: &mut [i32], mut node: usize) -> usize {
    let mut root = node;
    while rep[root] as usize != root {
        root = rep[root] as usize;
    }
    while rep[node] as usize != root {
        let next = rep[node] as usize;
        rep[node] = root as i32;
        node = next;
    }
    root
}

/// Merges nodes that share a parent and a token. Nodes are visited in their current (topological)
/// order, so a node's parent has been resolved before the node. Leaves `first_child`/`next_sibling`
/// describing the surviving nodes and `rep[i] == i` exactly for survivors.
fn dedup(t: &mut DraftTree) {
    let n = t.len;
    let rep = &mut t.scratch.rep[..n];
    for (i, r) in rep.iter_mut().enumerate() {
        *r = i as i32;
    }
    t.first_child[..n].fill(-1);
    t.next_sibling[..n].fill(-1);
    for i in 1..n {
        let p = find(rep, t.parent[i] as usize);
        t.parent[i] = p as i32;
        t.depth[i] = t.depth[p] + 1;
        let mut prev = -1i32;
        let mut c = t.first_child[p];
        while c >= 0 && t.token[c as usize] != t.token[i] {
            prev = c;
            c = t.next_sibling[c as usize];
        }
        if c < 0 {
            t.next_sibling[i] = t.first_child[p];
            t.first_child[p] = i as i32;
            continue;
        }
        let w = c as usize;
        if t.cum[i] > t.cum[w] {
            // i displaces w: it takes w's place among the siblings and adopts w's children. Nodes after
            // i cannot be i's children yet, so i has none of its own to merge.
            if prev < 0 {
                t.first_child[p] = i as i32;
            } else {
                t.next_sibling[prev as usize] = i as i32;
            }
            t.next_sibling[i] = t.next_sibling[w];
            t.first_child[i] = t.first_child[w];
            let mut ch = t.first_child[w];
            while ch >= 0 {
                t.parent[ch as usize] = i as i32;
                ch = t.next_sibling[ch as usize];
            }
            t.first_child[w] = -1;
            rep[w] = i as i32;
        } else {
            rep[i] = w as i32;
        }
    }
}

/// Rank for the budget: higher cumulative log-prob first, then shallower, then earlier. A child never
/// ranks before its parent, so any prefix of this ranking is closed under ancestors.
fn budget_rank(t: &DraftTree, a: u32, b: u32) -> Ordering {
    let (a, b) = (a as usize, b as usize);
    t.cum[b]
        .total_cmp(&t.cum[a])
        .then(t.depth[a].cmp(&t.depth[b]))
        .then(a.cmp(&b))
}

/// Final order: by depth, then the budget rank (so siblings come out most probable first).
fn topo_rank(t: &DraftTree, a: u32, b: u32) -> Ordering {
    t.depth[a as usize]
        .cmp(&t.depth[b as usize])
        .then_with(|| budget_rank(t, a, b))
}

/// Rewrites `data[..n]` so position `k` holds the old element `order[k]`.
fn permute<T: Copy>(data: &mut [T], scratch: &mut [T], order: &[u32]) {
    for (k, &old) in order.iter().enumerate() {
        scratch[k] = data[old as usize];
    }
    data[..order.len()].copy_from_slice(&scratch[..order.len()]);
}

pub(super) fn run(t: &mut DraftTree, budget: usize) {
    dedup(t);
    let n = t.len;

    // Survivors (root excluded), then the best `budget` of them.
    let mut order = core::mem::take(&mut t.scratch.order);
    let mut live = 0;
    for i in 1..n {
        if t.scratch.rep[i] as usize == i {
            order[live] = i as u32;
            live += 1;
        }
    }
    let kept = live.min(budget);
    if kept < live && kept > 0 {
        order[..live].select_nth_unstable_by(kept - 1, |&a, &b| budget_rank(t, a, b));
    }
    // Root first, then the kept nodes in topological order.
    order.copy_within(0..kept, 1);
    order[0] = 0;
    order[1..=kept].sort_unstable_by(|&a, &b| topo_rank(t, a, b));
    let order_slice = &order[..=kept];

    let new_id = &mut t.scratch.new_id[..n];
    new_id.fill(-1);
    for (k, &old) in order_slice.iter().enumerate() {
        new_id[old as usize] = k as i32;
    }
    let s = &mut t.scratch;
    permute(&mut t.token, &mut s.i32s, order_slice);
    permute(&mut t.source, &mut s.i32s, order_slice);
    permute(&mut t.parent, &mut s.i32s, order_slice);
    permute(&mut t.logprob, &mut s.f32s, order_slice);
    permute(&mut t.cum, &mut s.f32s, order_slice);
    permute(&mut t.depth, &mut s.u32s, order_slice);
    permute(&mut t.meta, &mut s.metas, order_slice);
    t.scratch.order = order;

    let len = kept + 1;
    t.len = len;
    for i in 1..len {
        // Ancestors of kept nodes are kept (see `budget_rank`), so the lookup never yields -1.
        t.parent[i] = t.scratch.new_id[t.parent[i] as usize];
    }
    t.parent[0] = -1;

    // Child lists in ascending id order: prepend while walking ids downwards.
    t.first_child[..len].fill(-1);
    t.next_sibling[..len].fill(-1);
    let mut deepest = 0;
    for i in (1..len).rev() {
        let p = t.parent[i] as usize;
        t.next_sibling[i] = t.first_child[p];
        t.first_child[p] = i as i32;
        deepest = deepest.max(t.depth[i] as usize);
    }
    t.num_leaves = t.first_child[..len].iter().filter(|&&c| c < 0).count();
    t.deepest = deepest;
    index_children_by_token(t);
}

/// Builds the children-by-token index (a CSR over parents) that sampling uses to skip the children's
/// tokens in one ordered pass over the vocabulary.
fn index_children_by_token(t: &mut DraftTree) {
    let len = t.len;
    let start = &mut t.child_start[..=len];
    start.fill(0);
    for i in 1..len {
        start[t.parent[i] as usize + 1] += 1;
    }
    for i in 0..len {
        start[i + 1] += start[i];
    }
    let cursor = &mut t.scratch.u32s[..len];
    cursor.copy_from_slice(&start[..len]);
    for i in 1..len {
        let p = t.parent[i] as usize;
        t.child_by_token[cursor[p] as usize] = i as i32;
        cursor[p] += 1;
    }
    for p in 0..len {
        let (a, b) = (start[p] as usize, start[p + 1] as usize);
        let token = &t.token;
        t.child_by_token[a..b].sort_unstable_by_key(|&c| token[c as usize]);
    }
}

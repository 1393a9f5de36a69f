//! Attention of the EAGLE-3 layer with the contract's visibility: a committed entry sees the committed
//! rows up to its own; a tree node sees every committed row, the draft rows on its parent chain, and
//! its own key. Per KV head, the GQA group's queries of up to [`ATTN_ROWS`] rows score the committed
//! keys in one matmul (the nodes of a drafting step share that prefix); chain and own keys are a few
//! dot products each.

use super::forward::{Eagle3Scratch, Input, fit};
use super::{Eagle3Cache, Eagle3Drafter};
use crate::cpu::{matmul_local, softmax_in_place, weighted_rows};
use crate::drafter::forward::dot;

/// Query rows whose attention is computed together: bounds the score buffers (`rows x keys`) while
/// letting one drafting step's nodes share one score matmul over the committed keys.
pub(super) const ATTN_ROWS: usize = 16;

/// Chain marker for "the query's own key" (not a draft row).
const OWN: i32 = -2;

impl Eagle3Drafter {
    /// Attention of chunk rows `a0..a1` (their K/V rows already written at `row0..`), into
    /// `sc.attn`. Per KV head, the group's queries of all these rows score the committed keys in one
    /// matmul; an entry masks the committed rows after its own, a node adds its parent chain's draft
    /// rows and its own key.
    pub(super) fn attend(
        &self,
        cache: &Eagle3Cache,
        input: Input<'_>,
        row0: usize,
        a0: usize,
        a1: usize,
        sc: &mut Eagle3Scratch,
    ) {
        let c = &self.cfg;
        let d = c.head_dim;
        let (qd, kvd) = (c.heads * d, c.kv_heads * d);
        let stride = qd + 2 * kvd;
        let group = c.heads / c.kv_heads;
        let na = a1 - a0;
        let m = na * group;
        let scale = 1.0 / (d as f32).sqrt();
        // Committed keys visible to some row here, and the extra (non-committed) keys per row.
        let (prefix, extra) = match input {
            Input::Context { .. } => (row0 + a1, 0),
            Input::Draft { parent_rows, .. } => {
                let longest = parent_rows[a0..a1]
                    .iter()
                    .map(|&p| chain_len(&cache.draft_parent, p))
                    .max()
                    .unwrap_or(0);
                (cache.entries, longest + 1)
            }
        };
        // chain[i * extra + j]: draft row j of row i's parent chain, OWN, or -1 (nothing).
        fit(&mut sc.chain, na * extra, -1);
        if let Input::Draft { parent_rows, .. } = input {
            for i in 0..na {
                let slots = &mut sc.chain[i * extra..(i + 1) * extra];
                let mut p = parent_rows[a0 + i];
                let mut j = 0;
                while p >= 0 {
                    slots[j] = p;
                    p = cache.draft_parent[p as usize];
                    j += 1;
                }
                slots[j] = OWN;
            }
        }
        let width = prefix + extra;
        let (ccap, dcap) = (cache.capacity, cache.draft_capacity);
        for kvh in 0..c.kv_heads {
            fit(&mut sc.q, m * d, 0.0);
            for i in 0..na {
                for g in 0..group {
                    let src = (a0 + i) * stride + (kvh * group + g) * d;
                    let dst = &mut sc.q[(i * group + g) * d..(i * group + g + 1) * d];
                    for (o, &x) in dst.iter_mut().zip(&sc.qkv[src..src + d]) {
                        *o = x * scale;
                    }
                }
            }
            let off = kvh * ccap * d;
            fit(&mut sc.cache_scores, m * prefix, 0.0);
            if prefix > 0 {
                matmul_local(
                    &cache.k[off..off + prefix * d],
                    prefix,
                    d,
                    &sc.q,
                    m,
                    &mut sc.cache_scores,
                );
            }
            fit(&mut sc.scores, m * width, 0.0);
            for qi in 0..m {
                let i = qi / group;
                let qv = &sc.q[qi * d..(qi + 1) * d];
                let row = &mut sc.scores[qi * width..(qi + 1) * width];
                row[..prefix].copy_from_slice(&sc.cache_scores[qi * prefix..(qi + 1) * prefix]);
                if let Input::Context { .. } = input {
                    // Committed rows after the entry's own are in the cache but not yet visible.
                    row[row0 + a0 + i + 1..prefix].fill(f32::NEG_INFINITY);
                }
                for (j, &slot) in sc.chain[i * extra..(i + 1) * extra].iter().enumerate() {
                    row[prefix + j] = match slot {
                        OWN => {
                            let src = (a0 + i) * stride + qd + kvh * d;
                            dot(qv, &sc.qkv[src..src + d])
                        }
                        -1 => f32::NEG_INFINITY,
                        r => {
                            let src = (kvh * dcap + r as usize) * d;
                            dot(qv, &cache.dk[src..src + d])
                        }
                    };
                }
                softmax_in_place(row);
            }
            fit(&mut sc.acc, m * d, 0.0);
            if prefix > 0 {
                // weighted_rows wants the committed probabilities contiguous: gather them.
                for qi in 0..m {
                    sc.cache_scores[qi * prefix..(qi + 1) * prefix]
                        .copy_from_slice(&sc.scores[qi * width..qi * width + prefix]);
                }
                weighted_rows(
                    &sc.cache_scores,
                    m,
                    prefix,
                    &cache.v[off..off + prefix * d],
                    d,
                    &mut sc.acc,
                );
            }
            for qi in 0..m {
                let i = qi / group;
                for (j, &slot) in sc.chain[i * extra..(i + 1) * extra].iter().enumerate() {
                    let p = sc.scores[qi * width + prefix + j];
                    if p == 0.0 {
                        continue;
                    }
                    let v = match slot {
                        OWN => {
                            let src = (a0 + i) * stride + qd + kvd + kvh * d;
                            &sc.qkv[src..src + d]
                        }
                        -1 => continue,
                        r => {
                            let src = (kvh * dcap + r as usize) * d;
                            &cache.dv[src..src + d]
                        }
                    };
                    for (o, &x) in sc.acc[qi * d..(qi + 1) * d].iter_mut().zip(v) {
                        *o += p * x;
                    }
                }
            }
            for i in 0..na {
                for g in 0..group {
                    let dst = (a0 + i) * qd + (kvh * group + g) * d;
                    let qi = i * group + g;
                    sc.attn[dst..dst + d].copy_from_slice(&sc.acc[qi * d..(qi + 1) * d]);
                }
            }
        }
    }
}

/// Draft rows on the chain from `row` up to a child of the root (0 for -1).
fn chain_len(parents: &[i32], mut row: i32) -> usize {
    let mut n = 0;
    while row >= 0 {
        n += 1;
        row = parents[row as usize];
    }
    n
}

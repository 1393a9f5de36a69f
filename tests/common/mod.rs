//! Shared helpers for the integration tests: a seeded generator, random draft-tree specs, and an
//! independent reference model of finalize (dedup by token path, budget prune, final order).
//!
//! Nothing here calls into the code under test except to build a tree from a spec.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::collections::BTreeMap;

use specblock::tree::{DraftTree, NodeMeta, TreeParams};

/// SplitMix64 (Steele, Lea, Flood 2014): a small, seeded, deterministic generator.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(lo <= hi);
        lo + self.below((hi - lo) as u64 + 1) as i64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// One `add_with_meta` call.
#[derive(Clone, Copy, Debug)]
pub struct Add {
    pub parent: i32,
    pub token: i32,
    pub logprob: f32,
    pub meta: NodeMeta,
}

/// Everything needed to build one tree: capacities, root token and the add calls, in order. Every add
/// is valid (parent exists, depth within the limit, capacity not exceeded).
#[derive(Clone, Debug)]
pub struct TreeSpec {
    pub max_nodes: u32,
    pub max_depth: u32,
    pub root: i32,
    pub adds: Vec<Add>,
}

impl TreeSpec {
    pub fn params(&self) -> TreeParams {
        TreeParams {
            max_nodes: self.max_nodes,
            max_depth: self.max_depth,
        }
    }

    /// Largest token used (root excluded), or -1.
    pub fn max_token(&self) -> i32 {
        self.adds.iter().map(|a| a.token).max().unwrap_or(-1)
    }
}

/// Knobs for [`random_spec`].
#[derive(Clone, Copy, Debug)]
pub struct GenOptions {
    pub max_nodes_hi: u32,
    /// Largest alphabet; most trees use 1..=4 tokens so duplicates are frequent.
    pub alphabet_hi: i32,
    /// Allow token offsets so tokens are not always small.
    pub big_tokens: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_nodes_hi: 200,
            alphabet_hi: 40,
            big_tokens: true,
        }
    }
}

/// A random log-probability: mostly from a small pool (so ties are common), including 0, -0.0, -inf
/// and small positive values (which the tree treats as 0), otherwise uniform in [-6, 0].
pub fn random_logprob(rng: &mut SplitMix64) -> f32 {
    const POOL: [f32; 12] = [
        0.0,
        -0.0,
        -0.5,
        -1.0,
        -1.0,
        -2.0,
        f32::NEG_INFINITY,
        1e-6,
        0.25,
        -1e-45, // subnormal
        -3e38,  // two of these overflow the cumulative sum to -inf
        f32::MIN,
    ];
    if rng.chance(0.6) {
        *rng.pick(&POOL)
    } else {
        rng.uniform(-6.0, 0.0) as f32
    }
}

/// A random, valid tree spec: size 1..=`max_nodes_hi` capacity, a random number of adds up to the
/// capacity, various depth limits, branching styles and alphabets.
pub fn random_spec(rng: &mut SplitMix64, opt: GenOptions) -> TreeSpec {
    let max_nodes = rng.range(1, opt.max_nodes_hi as i64) as u32;
    let max_depth = match rng.below(4) {
        0 => rng.range(1, 3) as u32,
        1 => rng.range(1, 8) as u32,
        2 => *rng.pick(&[16, 32, 64]),
        _ => rng.range(2, 12) as u32,
    };
    let n_adds = match rng.below(4) {
        0 => max_nodes as usize,
        1 => rng.below(6) as usize,
        _ => rng.range(0, max_nodes as i64) as usize,
    }
    .min(max_nodes as usize);
    let alphabet = if rng.chance(0.7) {
        rng.range(1, 4) as i32
    } else {
        rng.range(1, opt.alphabet_hi as i64) as i32
    };
    let offset = if opt.big_tokens && rng.chance(0.2) {
        if rng.chance(0.2) {
            i32::MAX - alphabet + 1
        } else {
            rng.range(0, 100_000) as i32
        }
    } else {
        0
    };
    // 0: uniform parent, 1: recent nodes (deep chains), 2: root-heavy, 3: mixture.
    let style = rng.below(4);
    let root = if rng.chance(0.05) {
        i32::MAX
    } else {
        rng.range(0, 1_000_000) as i32
    };
    let mut depth = vec![0u32];
    let mut adds = Vec::with_capacity(n_adds);
    while adds.len() < n_adds {
        let len = depth.len();
        let parent = match style {
            0 => rng.below(len as u64) as usize,
            1 => len - 1 - rng.below(len.min(3) as u64) as usize,
            2 => {
                if rng.chance(0.5) {
                    0
                } else {
                    rng.below(len as u64) as usize
                }
            }
            _ => {
                if rng.chance(0.5) {
                    len - 1 - rng.below(len.min(4) as u64) as usize
                } else {
                    rng.below(len as u64) as usize
                }
            }
        };
        // Too deep: fall back to the root, which always has room (max_depth >= 1).
        let parent = if depth[parent] >= max_depth {
            0
        } else {
            parent
        };
        push_add(rng, &mut adds, &mut depth, parent, alphabet, offset);
    }
    TreeSpec {
        max_nodes,
        max_depth,
        root,
        adds,
    }
}

fn push_add(
    rng: &mut SplitMix64,
    adds: &mut Vec<Add>,
    depth: &mut Vec<u32>,
    parent: usize,
    alphabet: i32,
    offset: i32,
) {
    let token = offset + rng.below(alphabet as u64) as i32;
    let meta = NodeMeta {
        block: rng.below(256) as u8,
        slot: rng.below(256) as u8,
        rank_class: rng.below(256) as u8,
        user: rng.below(256) as u8,
    };
    adds.push(Add {
        parent: parent as i32,
        token,
        logprob: random_logprob(rng),
        meta,
    });
    depth.push(depth[parent] + 1);
}

/// Resets `t` to `spec`'s root and replays its adds, checking the returned ids are 1, 2, ...
pub fn fill(t: &mut DraftTree, spec: &TreeSpec) {
    t.reset(spec.root).unwrap();
    for (k, a) in spec.adds.iter().enumerate() {
        let id = t
            .add_with_meta(a.parent, a.token, a.logprob, a.meta)
            .unwrap();
        assert_eq!(id, k as i32 + 1, "insertion ids are 1, 2, ...");
    }
}

/// A fresh tree built from `spec` (not finalized).
pub fn build(spec: &TreeSpec) -> DraftTree {
    let mut t = DraftTree::new(spec.params()).unwrap();
    fill(&mut t, spec);
    t
}

/// The documented clamp: a log-probability above 0 is treated as 0.
pub fn clamp_lp(lp: f32) -> f32 {
    if lp > 0.0 { 0.0 } else { lp }
}

/// Reference model of a spec, indexed by insertion id (0 = root).
///
/// Two nodes are duplicates iff their root-to-node token paths are equal. Of each class the survivor
/// is the node with the highest cumulative log-prob (ties: the lowest insertion id). The live set is the
/// set of distinct token paths.
#[derive(Clone, Debug)]
pub struct Model {
    pub root: i32,
    pub parent: Vec<usize>,
    pub token: Vec<i32>,
    pub lp: Vec<f32>,
    pub cum: Vec<f32>,
    pub depth: Vec<u32>,
    pub meta: Vec<NodeMeta>,
    /// Token path of every inserted node (root excluded from the path; the root's path is empty).
    pub path: Vec<Vec<i32>>,
    /// Surviving insertion id of every distinct non-empty token path.
    pub survivor: BTreeMap<Vec<i32>, usize>,
}

impl Model {
    pub fn new(spec: &TreeSpec) -> Model {
        let mut m = Model {
            root: spec.root,
            parent: vec![usize::MAX],
            token: vec![spec.root],
            lp: vec![0.0],
            cum: vec![0.0],
            depth: vec![0],
            meta: vec![NodeMeta::default()],
            path: vec![Vec::new()],
            survivor: BTreeMap::new(),
        };
        for (k, a) in spec.adds.iter().enumerate() {
            let id = k + 1;
            let p = a.parent as usize;
            let lp = clamp_lp(a.logprob);
            m.parent.push(p);
            m.token.push(a.token);
            m.lp.push(lp);
            m.cum.push(m.cum[p] + lp);
            m.depth.push(m.depth[p] + 1);
            m.meta.push(a.meta);
            let mut path = m.path[p].clone();
            path.push(a.token);
            m.path.push(path.clone());
            match m.survivor.get(&path) {
                // Cumulative log-probs are never NaN (NaN and +inf log-probs are rejected).
                Some(&w) if m.cum[id] <= m.cum[w] => {}
                _ => {
                    m.survivor.insert(path, id);
                }
            }
        }
        m
    }

    /// Number of live (distinct-path) non-root nodes.
    pub fn live(&self) -> usize {
        self.survivor.len()
    }

    /// Budget rank: cumulative log-prob descending, then depth ascending, then insertion id.
    pub fn budget_cmp(&self, a: usize, b: usize) -> Ordering {
        self.cum[b]
            .total_cmp(&self.cum[a])
            .then(self.depth[a].cmp(&self.depth[b]))
            .then(a.cmp(&b))
    }

    /// Survivors ranked by [`Self::budget_cmp`].
    pub fn ranked(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.survivor.values().copied().collect();
        v.sort_by(|&a, &b| self.budget_cmp(a, b));
        v
    }

    /// Insertion ids of the finalized tree in final order: root, then the best `min(budget, live)`
    /// survivors sorted by depth ascending, cumulative log-prob descending, insertion id.
    pub fn expected(&self, budget: u32) -> Vec<usize> {
        let ranked = self.ranked();
        let kept = (budget as usize).min(ranked.len());
        let mut v = ranked[..kept].to_vec();
        v.sort_by(|&a, &b| {
            self.depth[a]
                .cmp(&self.depth[b])
                .then(self.cum[b].total_cmp(&self.cum[a]))
                .then(a.cmp(&b))
        });
        let mut out = vec![0];
        out.extend(v);
        out
    }
}

/// Token path (root excluded) of every node of a tree, from its parents and tokens.
pub fn token_paths(tokens: &[i32], parents: &[i32]) -> Vec<Vec<i32>> {
    (0..tokens.len())
        .map(|i| {
            let mut p = Vec::new();
            let mut a = i;
            while a != 0 {
                p.push(tokens[a]);
                a = parents[a] as usize;
            }
            p.reverse();
            p
        })
        .collect()
}

/// Children of every node (ascending id), from a parent array.
pub fn children_lists(parents: &[i32]) -> Vec<Vec<usize>> {
    let mut ch = vec![Vec::new(); parents.len()];
    for (i, &p) in parents.iter().enumerate().skip(1) {
        ch[p as usize].push(i);
    }
    ch
}

/// Root-to-leaf node-id paths of a tree (from its parent array), sorted lexicographically.
pub fn root_to_leaf_paths(parents: &[i32]) -> Vec<Vec<usize>> {
    let ch = children_lists(parents);
    let mut out: Vec<Vec<usize>> = (0..parents.len())
        .filter(|&i| ch[i].is_empty())
        .map(|leaf| {
            let mut p = vec![leaf];
            let mut a = leaf;
            while a != 0 {
                a = parents[a] as usize;
                p.push(a);
            }
            p.reverse();
            p
        })
        .collect();
    out.sort();
    out
}

//! Property tests of `DraftTree::finalize` and every layout over thousands of seeded random trees,
//! against the independent reference model in `common` (dedup by token path, best-`budget` prune,
//! depth / cum-logprob / insertion order).

mod common;

use std::collections::BTreeSet;

use common::{
    GenOptions, Model, SplitMix64, TreeSpec, build, children_lists, random_spec,
    root_to_leaf_paths, token_paths,
};
use specblock::Error;
use specblock::layout;
use specblock::tree::{DraftTree, NodeMeta};

const TREES: u64 = 6000;

/// Everything finalize leaves behind, for before/after comparisons.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    tokens: Vec<i32>,
    parents: Vec<i32>,
    depths: Vec<u32>,
    cum_bits: Vec<u32>,
    lp_bits: Vec<u32>,
    metas: Vec<NodeMeta>,
    sources: Vec<i32>,
    first_child: Vec<i32>,
    next_sibling: Vec<i32>,
    num_leaves: usize,
    deepest: usize,
}

fn snapshot(t: &DraftTree) -> Snapshot {
    Snapshot {
        tokens: t.tokens().to_vec(),
        parents: t.parents().to_vec(),
        depths: t.depths().to_vec(),
        cum_bits: t.cum_logprobs().iter().map(|x| x.to_bits()).collect(),
        lp_bits: t.logprobs().iter().map(|x| x.to_bits()).collect(),
        metas: t.metas().to_vec(),
        sources: t.source_ids().to_vec(),
        first_child: t.first_child().to_vec(),
        next_sibling: t.next_sibling().to_vec(),
        num_leaves: t.num_leaves(),
        deepest: t.deepest(),
    }
}

fn path_set(t: &DraftTree) -> BTreeSet<Vec<i32>> {
    token_paths(t.tokens(), t.parents())
        .into_iter()
        .skip(1)
        .collect()
}

/// Checks a finalized tree against the reference model for `budget`.
fn check_finalized(t: &DraftTree, m: &Model, budget: u32, ctx: &str) {
    let n = t.len();
    let live = m.live();
    let kept = (budget as usize).min(live);
    assert!(t.is_finalized(), "{ctx}");
    assert_eq!(
        n,
        kept + 1,
        "{ctx}: exactly min(budget, live) non-root nodes"
    );
    for s in [
        t.tokens().len(),
        t.parents().len(),
        t.depths().len(),
        t.cum_logprobs().len(),
        t.logprobs().len(),
        t.metas().len(),
        t.source_ids().len(),
        t.first_child().len(),
        t.next_sibling().len(),
    ] {
        assert_eq!(s, n, "{ctx}: accessor lengths");
    }

    // Root.
    assert_eq!(t.tokens()[0], m.root, "{ctx}");
    assert_eq!(t.parents()[0], -1, "{ctx}");
    assert_eq!(t.depths()[0], 0, "{ctx}");
    assert_eq!(t.cum_logprobs()[0], 0.0, "{ctx}");
    assert_eq!(t.source_ids()[0], 0, "{ctx}");

    // Structure: topological, depths consistent, sorted by (depth asc, cum desc), siblings distinct,
    // cum never increases along an edge.
    for i in 1..n {
        let p = t.parents()[i];
        assert!(p >= 0 && (p as usize) < i, "{ctx}: parent {p} of {i}");
        let p = p as usize;
        assert_eq!(t.depths()[i], t.depths()[p] + 1, "{ctx}: depth of {i}");
        assert!(
            t.cum_logprobs()[i] <= t.cum_logprobs()[p],
            "{ctx}: cum of {i} above its parent's"
        );
    }
    for i in 2..n {
        let (da, db) = (t.depths()[i - 1], t.depths()[i]);
        let (ca, cb) = (t.cum_logprobs()[i - 1], t.cum_logprobs()[i]);
        assert!(
            da < db || (da == db && ca >= cb),
            "{ctx}: nodes {} and {i} out of (depth asc, cum desc) order",
            i - 1
        );
    }
    let ch = children_lists(t.parents());
    for (p, kids) in ch.iter().enumerate() {
        let toks: BTreeSet<i32> = kids.iter().map(|&c| t.tokens()[c]).collect();
        assert_eq!(
            toks.len(),
            kids.len(),
            "{ctx}: siblings under {p} share a token"
        );
    }

    // Exact agreement with the reference: the surviving insertion id of every node, in final order.
    let expected = m.expected(budget);
    let sources: Vec<usize> = t.source_ids().iter().map(|&s| s as usize).collect();
    assert_eq!(sources, expected, "{ctx}: source ids / final order");
    let paths = token_paths(t.tokens(), t.parents());
    for i in 0..n {
        let s = sources[i];
        assert_eq!(paths[i], m.path[s], "{ctx}: token path of node {i}");
        assert_eq!(t.tokens()[i], m.token[s], "{ctx}");
        assert_eq!(t.depths()[i], m.depth[s], "{ctx}");
        assert_eq!(
            t.cum_logprobs()[i].to_bits(),
            m.cum[s].to_bits(),
            "{ctx}: cum of node {i}"
        );
        assert_eq!(
            t.logprobs()[i].to_bits(),
            m.lp[s].to_bits(),
            "{ctx}: logprob of node {i}"
        );
        assert_eq!(t.metas()[i], m.meta[s], "{ctx}: metadata of node {i}");
    }
    // Survivors only, and the kept token-path set is the reference's best `kept` paths.
    for &s in &sources[1..] {
        assert_eq!(
            m.survivor[&m.path[s]], s,
            "{ctx}: node {s} is not the survivor"
        );
    }
    let want: BTreeSet<Vec<i32>> = m.ranked()[..kept]
        .iter()
        .map(|&s| m.path[s].clone())
        .collect();
    assert_eq!(path_set(t), want, "{ctx}: kept token paths");

    // Best-budget property stated directly: no dropped live node outranks a kept one.
    let kept_ids: BTreeSet<usize> = sources[1..].iter().copied().collect();
    let worst_kept = kept_ids.iter().copied().max_by(|&a, &b| m.budget_cmp(a, b));
    let best_dropped = m
        .survivor
        .values()
        .copied()
        .filter(|s| !kept_ids.contains(s))
        .min_by(|&a, &b| m.budget_cmp(a, b));
    if let (Some(k), Some(d)) = (worst_kept, best_dropped) {
        assert!(
            m.cum[d] <= m.cum[k],
            "{ctx}: dropped node {d} (cum {}) beats kept {k} (cum {})",
            m.cum[d],
            m.cum[k]
        );
        assert_eq!(
            m.budget_cmp(k, d),
            std::cmp::Ordering::Less,
            "{ctx}: tie rule"
        );
    }

    // Derived accessors.
    let leaves = ch.iter().filter(|c| c.is_empty()).count();
    assert_eq!(t.num_leaves(), leaves, "{ctx}: num_leaves");
    let deepest = t.depths().iter().copied().max().unwrap_or(0) as usize;
    assert_eq!(t.deepest(), deepest, "{ctx}: deepest");
    for (p, kids) in ch.iter().enumerate() {
        let got: Vec<usize> = t.children(p).collect();
        assert_eq!(&got, kids, "{ctx}: children({p})");
        let by_token: Vec<usize> = t.children_by_token(p).iter().map(|&c| c as usize).collect();
        let mut want = kids.clone();
        want.sort_by_key(|&c| t.tokens()[c]);
        assert_eq!(by_token, want, "{ctx}: children_by_token({p})");
    }
}

/// Ancestor-or-self sets, from the parents only.
fn ancestors_or_self(parents: &[i32]) -> Vec<Vec<bool>> {
    let n = parents.len();
    (0..n)
        .map(|i| {
            let mut row = vec![false; n];
            let mut a = i as i32;
            while a >= 0 {
                row[a as usize] = true;
                a = parents[a as usize];
            }
            row
        })
        .collect()
}

const SLACK: usize = 5;

/// Checks every layout against the tree's parent relation.
fn check_layouts(t: &DraftTree, rng: &mut SplitMix64, ctx: &str) {
    let n = t.len();
    let anc = ancestors_or_self(t.parents());

    // Plain copies, each into a buffer with slack that must stay untouched.
    let mut buf = vec![i32::MIN; n + SLACK];
    assert_eq!(layout::tokens(t, &mut buf).unwrap(), n);
    assert_eq!(&buf[..n], t.tokens(), "{ctx}");
    assert!(buf[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    buf.fill(i32::MIN);
    assert_eq!(layout::parents(t, &mut buf).unwrap(), n);
    assert_eq!(&buf[..n], t.parents(), "{ctx}");
    assert!(buf[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    buf.fill(i32::MIN);
    assert_eq!(layout::depths(t, &mut buf).unwrap(), n);
    for (&got, &d) in buf.iter().zip(t.depths()) {
        assert_eq!(got, d as i32, "{ctx}");
    }
    assert!(buf[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    for prefix in [0u32, 1, 37, 1_000_000] {
        buf.fill(i32::MIN);
        assert_eq!(layout::positions(t, prefix, &mut buf).unwrap(), n);
        for (&got, &d) in buf.iter().zip(t.depths()) {
            assert_eq!(got as i64, prefix as i64 + d as i64, "{ctx}: position");
        }
        assert!(buf[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    }

    // Dense mask and bias.
    let mut dense = vec![7u8; n * n + SLACK];
    assert_eq!(layout::mask_dense(t, &mut dense).unwrap(), n * n);
    for i in 0..n {
        for j in 0..n {
            assert_eq!(
                dense[i * n + j],
                anc[i][j] as u8,
                "{ctx}: dense mask [{i}][{j}]"
            );
        }
    }
    assert!(dense[n * n..].iter().all(|&x| x == 7), "{ctx}: slack");
    let mut bias = vec![1.5f32; n * n + SLACK];
    assert_eq!(layout::mask_bias(t, &mut bias).unwrap(), n * n);
    for k in 0..n * n {
        let want = if dense[k] == 1 {
            0.0
        } else {
            f32::NEG_INFINITY
        };
        assert_eq!(bias[k].to_bits(), want.to_bits(), "{ctx}: bias {k}");
    }
    assert!(bias[n * n..].iter().all(|&x| x == 1.5), "{ctx}: slack");

    // Bit rows, with and without prefix columns.
    let extra_prefix = rng.range(1, 100) as u32;
    for prefix in [0u32, 37, extra_prefix] {
        let words = layout::mask_words_per_row(n, prefix);
        assert_eq!(words, (prefix as usize + n).div_ceil(32), "{ctx}");
        let mut bits = vec![0xdead_beefu32; n * words + SLACK];
        assert_eq!(layout::mask_bits(t, prefix, &mut bits).unwrap(), n * words);
        for i in 0..n {
            for c in 0..words * 32 {
                let got = bits[i * words + c / 32] >> (c % 32) & 1 == 1;
                let want = if c < prefix as usize {
                    true
                } else if c < prefix as usize + n {
                    anc[i][c - prefix as usize]
                } else {
                    false
                };
                assert_eq!(
                    got, want,
                    "{ctx}: mask_bits prefix {prefix} row {i} col {c}"
                );
            }
        }
        assert!(
            bits[n * words..].iter().all(|&x| x == 0xdead_beef),
            "{ctx}: slack"
        );

        let bytes = layout::mask_flat_bytes(n, prefix);
        let kv = prefix as usize + n;
        assert_eq!(bytes, (n * kv).div_ceil(8), "{ctx}");
        let mut flat = vec![0xa5u8; bytes + SLACK];
        assert_eq!(layout::mask_flat_bits(t, prefix, &mut flat).unwrap(), bytes);
        for k in 0..bytes * 8 {
            let got = flat[k / 8] >> (k % 8) & 1 == 1;
            let want = if k < n * kv {
                let (i, c) = (k / kv, k % kv);
                c < prefix as usize || anc[i][c - prefix as usize]
            } else {
                false
            };
            assert_eq!(got, want, "{ctx}: flat bit {k} (prefix {prefix})");
        }
        assert!(flat[bytes..].iter().all(|&x| x == 0xa5), "{ctx}: slack");
    }

    // First child / next sibling reconstruct the parent relation, siblings ascending.
    let mut fc = vec![i32::MIN; n + SLACK];
    let mut ns = vec![i32::MIN; n + SLACK];
    assert_eq!(layout::first_child(t, &mut fc).unwrap(), n);
    assert_eq!(layout::next_sibling(t, &mut ns).unwrap(), n);
    assert!(fc[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    assert!(ns[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    assert_eq!(&fc[..n], t.first_child(), "{ctx}");
    assert_eq!(&ns[..n], t.next_sibling(), "{ctx}");
    let mut rebuilt = vec![-2i32; n];
    rebuilt[0] = -1;
    let mut seen = 1;
    for (p, &head) in fc[..n].iter().enumerate() {
        let mut c = head;
        let mut prev = -1;
        while c >= 0 {
            assert!((c as usize) < n, "{ctx}: child id {c} out of range");
            assert!(c > prev, "{ctx}: siblings under {p} not ascending");
            assert_eq!(rebuilt[c as usize], -2, "{ctx}: node {c} listed twice");
            rebuilt[c as usize] = p as i32;
            seen += 1;
            prev = c;
            c = ns[c as usize];
        }
        assert_eq!(c, -1, "{ctx}: list terminator");
    }
    assert_eq!(seen, n, "{ctx}: every node is some node's child");
    assert_eq!(
        rebuilt,
        t.parents(),
        "{ctx}: parent relation from sibling lists"
    );

    // Root-to-leaf paths, lexicographic, padded with -1.
    let want_paths = root_to_leaf_paths(t.parents());
    let leaves = want_paths.len();
    let deepest = t.depths().iter().copied().max().unwrap() as usize;
    for width in [deepest + 1, deepest + 1 + rng.below(4) as usize] {
        let mut rp = vec![i32::MIN; leaves * width + SLACK];
        assert_eq!(layout::retrieve_paths(t, width, &mut rp).unwrap(), leaves);
        for (r, path) in want_paths.iter().enumerate() {
            let row = &rp[r * width..(r + 1) * width];
            for (d, &x) in row.iter().enumerate() {
                let want = path.get(d).map_or(-1, |&v| v as i32);
                assert_eq!(x, want, "{ctx}: retrieve row {r} col {d}");
            }
        }
        assert!(
            rp[leaves * width..].iter().all(|&x| x == i32::MIN),
            "{ctx}: slack"
        );
    }

    // llama.cpp sequence ranges: node i's range is the set of leaves whose path contains i.
    let first_seq = *rng.pick(&[0i32, 1, 7]);
    let max_seq = first_seq as u32 + leaves as u32 + rng.below(3) as u32;
    let mut first = vec![i32::MIN; n + SLACK];
    let mut count = vec![i32::MIN; n + SLACK];
    assert_eq!(
        layout::seq_ranges(t, first_seq, max_seq, &mut first, &mut count).unwrap(),
        leaves
    );
    for i in 0..n {
        let want: Vec<i32> = want_paths
            .iter()
            .enumerate()
            .filter(|(_, p)| p.contains(&i))
            .map(|(k, _)| first_seq + k as i32)
            .collect();
        let got: Vec<i32> = (first[i]..first[i] + count[i]).collect();
        assert_eq!(got, want, "{ctx}: sequences of node {i}");
    }
    assert!(first[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    assert!(count[n..].iter().all(|&x| x == i32::MIN), "{ctx}: slack");
    // One sequence fewer does not fit.
    let tight = first_seq as u32 + leaves as u32 - 1;
    assert!(matches!(
        layout::seq_ranges(t, first_seq, tight, &mut first, &mut count),
        Err(Error::Capacity { capacity, .. }) if capacity == tight as usize
    ));
}

fn random_budget(rng: &mut SplitMix64, spec: &TreeSpec, live: usize) -> u32 {
    let cap = spec.max_nodes;
    match rng.below(6) {
        0 => 0,
        1 => cap,
        2 => (live as u32).min(cap),
        3 => (live as u32).saturating_sub(1),
        _ => rng.range(0, cap as i64) as u32,
    }
}

#[test]
fn finalize_matches_reference_and_layouts_agree() {
    let mut rng = SplitMix64::new(0x7e57_0001);
    let mut stats = (0usize, 0usize, 0usize); // trees with merges, trees with pruning, total nodes
    for case in 0..TREES {
        let spec = random_spec(&mut rng, GenOptions::default());
        let m = Model::new(&spec);
        let budget = random_budget(&mut rng, &spec, m.live());
        let ctx = format!("case {case} budget {budget} spec {spec:?}");
        if m.live() < spec.adds.len() {
            stats.0 += 1;
        }
        if (budget as usize) < m.live() {
            stats.1 += 1;
        }
        stats.2 += spec.adds.len();

        let mut t = build(&spec);
        assert_eq!(t.len(), spec.adds.len() + 1);
        t.finalize(budget).unwrap();
        check_finalized(&t, &m, budget, &ctx);
        check_layouts(&t, &mut rng, &ctx);

        // Idempotence: the same budget again changes nothing.
        let snap = snapshot(&t);
        t.finalize(budget).unwrap();
        assert_eq!(
            snapshot(&t),
            snap,
            "{ctx}: finalize twice with the same budget"
        );

        // A smaller budget on the finalized tree equals finalizing the original with it.
        let smaller = rng.range(0, budget as i64) as u32;
        t.finalize(smaller).unwrap();
        let mut fresh = build(&spec);
        fresh.finalize(smaller).unwrap();
        assert_eq!(
            path_set(&t),
            path_set(&fresh),
            "{ctx}: re-finalize with {smaller}"
        );
        assert_eq!(
            snapshot(&t),
            snapshot(&fresh),
            "{ctx}: re-finalize with {smaller} (full state)"
        );
        check_finalized(&t, &m, smaller, &format!("{ctx} re-finalized to {smaller}"));
        // A larger budget cannot bring dropped nodes back: nothing changes.
        let snap = snapshot(&t);
        t.finalize(spec.max_nodes).unwrap();
        assert_eq!(
            snapshot(&t),
            snap,
            "{ctx}: re-finalize with a larger budget"
        );
    }
    // The generator really exercises merges and pruning.
    assert!(stats.0 > TREES as usize / 3, "merges in {} trees", stats.0);
    assert!(stats.1 > TREES as usize / 3, "pruning in {} trees", stats.1);
    assert!(stats.2 > 30 * TREES as usize, "{} nodes in all", stats.2);
}

/// Reusing one tree across resets gives the same result as fresh trees.
#[test]
fn reset_reuse_matches_fresh_trees() {
    let mut rng = SplitMix64::new(0x7e57_0002);
    let mut t = DraftTree::new(specblock::tree::TreeParams {
        max_nodes: 200,
        max_depth: 64,
    })
    .unwrap();
    for case in 0..500 {
        let mut spec = random_spec(&mut rng, GenOptions::default());
        spec.max_depth = 64; // the shared tree's limit; the spec stays valid
        spec.max_nodes = 200;
        let m = Model::new(&spec);
        let budget = rng.range(0, 200) as u32;
        common::fill(&mut t, &spec);
        t.finalize(budget).unwrap();
        check_finalized(&t, &m, budget, &format!("reuse case {case}"));
        let mut fresh = build(&spec);
        fresh.finalize(budget).unwrap();
        assert_eq!(snapshot(&t), snapshot(&fresh), "reuse case {case}");
    }
}

/// Heavy duplication: many copies of the same few paths, inserted in random order with tied and
/// untied log-probs, including losers whose subtrees must move under the winner.
#[test]
fn heavy_duplication_matches_reference() {
    let mut rng = SplitMix64::new(0x7e57_0003);
    for case in 0..1500 {
        let mut spec = random_spec(
            &mut rng,
            GenOptions {
                max_nodes_hi: 120,
                alphabet_hi: 2,
                big_tokens: false,
            },
        );
        // Also force some chains of depth >= 3 under duplicated prefixes.
        if spec.max_depth >= 3 && spec.adds.len() + 6 <= spec.max_nodes as usize {
            for _ in 0..2 {
                let base = spec.adds.len() as i32;
                let tok = rng.below(2) as i32;
                let lp = common::random_logprob(&mut rng);
                spec.adds.push(common::Add {
                    parent: 0,
                    token: tok,
                    logprob: lp,
                    meta: NodeMeta::default(),
                });
                spec.adds.push(common::Add {
                    parent: base + 1,
                    token: 0,
                    logprob: common::random_logprob(&mut rng),
                    meta: NodeMeta {
                        user: 1,
                        ..NodeMeta::default()
                    },
                });
                spec.adds.push(common::Add {
                    parent: base + 2,
                    token: 1,
                    logprob: common::random_logprob(&mut rng),
                    meta: NodeMeta {
                        user: 2,
                        ..NodeMeta::default()
                    },
                });
            }
        }
        let m = Model::new(&spec);
        let budget = random_budget(&mut rng, &spec, m.live());
        let mut t = build(&spec);
        t.finalize(budget).unwrap();
        let ctx = format!("dup case {case} budget {budget} spec {spec:?}");
        check_finalized(&t, &m, budget, &ctx);
        check_layouts(&t, &mut rng, &ctx);
    }
}

/// A few large trees (thousands of nodes, depth up to 64) against the reference.
#[test]
fn large_trees_match_reference() {
    let mut rng = SplitMix64::new(0x7e57_0004);
    let mut biggest = 0;
    for case in 0..8 {
        let mut spec = random_spec(
            &mut rng,
            GenOptions {
                max_nodes_hi: 6000,
                alphabet_hi: 6,
                big_tokens: false,
            },
        );
        spec.max_nodes = spec.max_nodes.max(2000);
        let m = Model::new(&spec);
        let budget = random_budget(&mut rng, &spec, m.live());
        let mut t = build(&spec);
        t.finalize(budget).unwrap();
        check_finalized(
            &t,
            &m,
            budget,
            &format!("large case {case} budget {budget}"),
        );
        biggest = biggest.max(spec.adds.len());
    }
    assert!(biggest >= 2000, "largest tree has {biggest} nodes");
}

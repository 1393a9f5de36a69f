//! Statistical check that `verify::sample` is lossless: at every tree node the walk reaches, the token
//! emitted right after it (the accepted child's token, or the residual / bonus token) must follow the
//! target's sampling distribution exactly (temperature, then top-k, then top-p), computed here
//! independently in f64. Chi-square goodness of fit at alpha = 1e-6 per test, cells merged to an
//! expected count >= 5; a negative control shows the same test rejects a wrong distribution.

mod common;

use std::collections::BTreeMap;

use common::{SplitMix64, children_lists};
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify::{self, Acceptance, Sampling};

// ---------------------------------------------------------------------------------------------
// Reference distribution and chi-square test.

/// The target distribution of one logits row, in f64: softmax(logits / T), then top-k (ties at the
/// k-th largest value kept), renormalised, then top-p (keep a token iff the tokens strictly more
/// probable than it hold less than `top_p` of the mass), renormalised.
fn reference_dist(row: &[f32], s: &Sampling) -> Vec<f64> {
    assert!(s.temperature > 0.0);
    let t = s.temperature as f64;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let mut p: Vec<f64> = row
        .iter()
        .map(|&l| {
            if l == f32::NEG_INFINITY {
                0.0
            } else {
                ((l as f64 - max) / t).exp()
            }
        })
        .collect();
    normalise(&mut p);
    let k = s.top_k as usize;
    if k > 0 && k < row.len() {
        let mut sorted = row.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[k - 1];
        for (pj, &l) in p.iter_mut().zip(row) {
            if l < kth {
                *pj = 0.0;
            }
        }
        normalise(&mut p);
    }
    if s.top_p < 1.0 {
        let top_p = s.top_p as f64;
        // Probability is monotone in the logit, so "strictly more probable" is "strictly larger
        // logit": walk the tokens by logit, descending, one group of equal logits at a time.
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let mut above = 0.0f64;
        let mut g = 0;
        while g < order.len() {
            let mut end = g;
            while end < order.len() && row[order[end]] == row[order[g]] {
                end += 1;
            }
            let group_mass: f64 = order[g..end].iter().map(|&j| p[j]).sum();
            if above >= top_p {
                for &j in &order[g..end] {
                    p[j] = 0.0;
                }
            }
            above += group_mass;
            g = end;
        }
        normalise(&mut p);
    }
    p
}

fn normalise(p: &mut [f64]) {
    let z: f64 = p.iter().sum();
    assert!(z > 0.0);
    for x in p {
        *x /= z;
    }
}

/// Upper 1e-6 quantile of the standard normal.
const Z_1E6: f64 = 4.753_424_308_822_899;

/// Wilson–Hilferty approximation of the chi-square quantile with `df` degrees of freedom at the
/// normal quantile `z`.
fn chi2_critical(df: usize, z: f64) -> f64 {
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

#[derive(Debug)]
struct ChiSquare {
    stat: f64,
    df: usize,
    critical: f64,
    n: u64,
}

impl ChiSquare {
    fn rejects(&self) -> bool {
        self.df > 0 && self.stat > self.critical
    }
}

/// Pearson chi-square of `observed` counts against probabilities `probs` (same length). Cells with
/// probability exactly 0 must be empty (panics otherwise, with `ctx`); the others are merged, smallest
/// expectation first, into groups of expected count >= 5.
fn chi_square(observed: &[u64], probs: &[f64], ctx: &str) -> ChiSquare {
    assert_eq!(observed.len(), probs.len());
    let n: u64 = observed.iter().sum();
    let total_p: f64 = probs.iter().sum();
    assert!(
        (total_p - 1.0).abs() < 1e-9,
        "{ctx}: probabilities sum to {total_p}"
    );
    for (j, (&o, &p)) in observed.iter().zip(probs).enumerate() {
        assert!(
            p > 0.0 || o == 0,
            "{ctx}: cell {j} has probability 0 but was observed {o} times"
        );
    }
    let mut cells: Vec<(f64, u64)> = observed
        .iter()
        .zip(probs)
        .filter(|(_, p)| **p > 0.0)
        .map(|(&o, &p)| (p * n as f64, o))
        .collect();
    cells.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut groups: Vec<(f64, u64)> = Vec::new();
    let mut cur = (0.0, 0u64);
    for (e, o) in cells {
        cur.0 += e;
        cur.1 += o;
        if cur.0 >= 5.0 {
            groups.push(cur);
            cur = (0.0, 0);
        }
    }
    if cur.0 > 0.0 {
        match groups.last_mut() {
            Some(g) => {
                g.0 += cur.0;
                g.1 += cur.1;
            }
            None => groups.push(cur),
        }
    }
    let stat = groups
        .iter()
        .map(|&(e, o)| (o as f64 - e).powi(2) / e)
        .sum();
    let df = groups.len().saturating_sub(1);
    let critical = if df > 0 {
        chi2_critical(df, Z_1E6)
    } else {
        f64::INFINITY
    };
    ChiSquare {
        stat,
        df,
        critical,
        n,
    }
}

// ---------------------------------------------------------------------------------------------
// Trees, logits and the sampling harness.

/// Builds and finalizes a tree from token paths (each path's prefixes must come earlier in the list).
fn tree_from_paths(paths: &[&[i32]]) -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: 64,
        max_depth: 16,
    })
    .unwrap();
    t.reset(0).unwrap();
    let mut ids: BTreeMap<Vec<i32>, i32> = BTreeMap::new();
    for (k, p) in paths.iter().enumerate() {
        let parent = if p.len() == 1 {
            0
        } else {
            ids[&p[..p.len() - 1]]
        };
        // Scrambled log-probs, so sibling order (by id) differs from token order.
        let lp = -(((k * 7) % 11) as f32) * 0.1 - 0.01;
        let id = t.add(parent, p[p.len() - 1], lp).unwrap();
        ids.insert(p.to_vec(), id);
    }
    t.finalize(64).unwrap();
    assert_eq!(t.len(), paths.len() + 1, "paths must be distinct");
    let scrambled = (0..t.len()).any(|v| {
        let toks: Vec<i32> = t.children(v).map(|c| t.tokens()[c]).collect();
        toks.windows(2).any(|w| w[0] > w[1])
    });
    assert!(
        scrambled || paths.len() < 6,
        "some siblings out of token order"
    );
    t
}

/// Siblings under several nodes, depth 4.
fn bushy_tree() -> DraftTree {
    tree_from_paths(&[
        &[1],
        &[4],
        &[7],
        &[1, 2],
        &[1, 3],
        &[1, 9],
        &[4, 0],
        &[4, 5],
        &[7, 8],
        &[1, 2, 6],
        &[1, 2, 7],
        &[1, 3, 1],
        &[4, 0, 2],
        &[4, 0, 3],
        &[1, 2, 6, 4],
        &[1, 2, 6, 5],
    ])
}

/// A single chain of depth 5.
fn chain_tree() -> DraftTree {
    tree_from_paths(&[&[3], &[3, 1], &[3, 1, 4], &[3, 1, 4, 1], &[3, 1, 4, 1, 5]])
}

/// The root has every token of a vocabulary of 6 as a child; some children have children.
fn full_root_tree() -> DraftTree {
    tree_from_paths(&[
        &[0],
        &[1],
        &[2],
        &[3],
        &[4],
        &[5],
        &[0, 1],
        &[0, 2],
        &[3, 3],
        &[3, 4],
        &[3, 5],
        &[3, 4, 0],
    ])
}

#[derive(Clone, Copy, Debug)]
struct LogitStyle {
    /// Integer logits (ties, also at the top-k boundary).
    integer: bool,
    /// Probability that a non-child token is masked with -inf.
    p_inf: f64,
    /// Probability that a node with children gets one child masked with -inf.
    p_dead_child: f64,
}

/// One logits row per finalized node; children's tokens get higher logits so the walk goes deep.
fn make_logits(t: &DraftTree, vocab: usize, style: LogitStyle, rng: &mut SplitMix64) -> Vec<f32> {
    let ch = children_lists(t.parents());
    let mut logits = vec![0f32; t.len() * vocab];
    for v in 0..t.len() {
        let row = &mut logits[v * vocab..(v + 1) * vocab];
        let child_tokens: Vec<usize> = ch[v].iter().map(|&c| t.tokens()[c] as usize).collect();
        for (j, x) in row.iter_mut().enumerate() {
            let is_child = child_tokens.contains(&j);
            *x = match (style.integer, is_child) {
                (false, true) => rng.uniform(0.0, 2.0) as f32,
                (false, false) => rng.uniform(-2.0, 1.0) as f32,
                (true, true) => rng.range(0, 2) as f32,
                (true, false) => rng.range(-2, 1) as f32,
            };
            if !is_child && rng.chance(style.p_inf) {
                *x = f32::NEG_INFINITY;
            }
        }
        if !child_tokens.is_empty() && rng.chance(style.p_dead_child) {
            row[*rng.pick(&child_tokens)] = f32::NEG_INFINITY;
        }
        if row.iter().all(|&x| x == f32::NEG_INFINITY) {
            row[rng.below(vocab as u64) as usize] = 0.0;
        }
    }
    logits
}

/// Counts of the token emitted right after every node, over `seeds` runs.
struct Counts {
    /// `emitted[v][x]`: runs in which the walk reached node `v` and emitted token `x` after it.
    emitted: Vec<Vec<u64>>,
    /// Joint counts of (first emitted token, second emitted token or `vocab` = none).
    joint: Vec<Vec<u64>>,
}

fn run(t: &DraftTree, logits: &[f32], vocab: usize, s: &Sampling, seeds: u64) -> Counts {
    let n = t.len();
    let ch = children_lists(t.parents());
    let mut emitted = vec![vec![0u64; vocab]; n];
    let mut joint = vec![vec![0u64; vocab + 1]; vocab];
    for seed in 0..seeds {
        let a = verify::sample(t, logits, vocab, s, seed).unwrap();
        check_walk(t, &ch, &a, vocab);
        let mut v = 0usize;
        let mut seq = Vec::with_capacity(a.n_accepted as usize + 1);
        for &c in a.nodes() {
            emitted[v][t.tokens()[c as usize] as usize] += 1;
            seq.push(t.tokens()[c as usize] as usize);
            v = c as usize;
        }
        emitted[v][a.bonus_token as usize] += 1;
        seq.push(a.bonus_token as usize);
        joint[seq[0]][seq.get(1).copied().unwrap_or(vocab)] += 1;
    }
    Counts { emitted, joint }
}

/// Structural sanity of one acceptance: a root-down chain of nodes, their tokens, and a bonus token in
/// the vocabulary that is not one of the last node's children (those were rejected).
fn check_walk(t: &DraftTree, ch: &[Vec<usize>], a: &Acceptance, vocab: usize) {
    let mut v = 0usize;
    for (k, &c) in a.nodes().iter().enumerate() {
        assert_eq!(
            t.parents()[c as usize],
            v as i32,
            "accepted nodes form a path"
        );
        assert_eq!(a.tokens()[k], t.tokens()[c as usize]);
        v = c as usize;
    }
    assert!((0..vocab as i32).contains(&a.bonus_token));
    assert!(
        ch[v].iter().all(|&c| t.tokens()[c] != a.bonus_token),
        "bonus token {} is a rejected child of node {v}",
        a.bonus_token
    );
}

/// Runs one configuration and tests every node reached at least `min_reach` times.
/// Returns the number of nodes tested.
fn check_config(
    name: &str,
    t: &DraftTree,
    vocab: usize,
    style: LogitStyle,
    s: Sampling,
    seeds: u64,
    logit_seed: u64,
) -> (usize, Counts, Vec<f32>) {
    let mut rng = SplitMix64::new(logit_seed);
    let logits = make_logits(t, vocab, style, &mut rng);
    let counts = run(t, &logits, vocab, &s, seeds);
    let mut tested = 0;
    let mut report = Vec::new();
    for v in 0..t.len() {
        let obs = &counts.emitted[v];
        let reach: u64 = obs.iter().sum();
        if reach < 200 {
            continue;
        }
        let want = reference_dist(&logits[v * vocab..(v + 1) * vocab], &s);
        let ctx = format!("{name}: node {v} (depth {})", t.depths()[v]);
        let chi = chi_square(obs, &want, &ctx);
        assert_eq!(chi.n, reach, "{ctx}");
        report.push(format!("{ctx}: {chi:?}"));
        assert!(
            !chi.rejects(),
            "{ctx}: emitted tokens do not follow the target distribution: {chi:?}\nobserved {obs:?}\nexpected {:?}",
            want.iter().map(|p| p * reach as f64).collect::<Vec<_>>()
        );
        tested += 1;
    }
    assert_eq!(
        counts.emitted[0].iter().sum::<u64>(),
        seeds,
        "{name}: root reached every run"
    );
    eprintln!("{}", report.join("\n"));
    (tested, counts, logits)
}

const SEEDS: u64 = 100_000;

const PLAIN: LogitStyle = LogitStyle {
    integer: false,
    p_inf: 0.1,
    p_dead_child: 0.0,
};

fn sampling(temperature: f32, top_k: i32, top_p: f32) -> Sampling {
    Sampling {
        temperature,
        top_k,
        top_p,
    }
}

// ---------------------------------------------------------------------------------------------
// Configurations.

#[test]
fn temperature_1_bushy_and_joint_of_first_two_tokens() {
    let t = bushy_tree();
    assert!(t.deepest() >= 3);
    let vocab = 10;
    let s = sampling(1.0, 0, 1.0);
    let (tested, counts, logits) = check_config("T=1 bushy", &t, vocab, PLAIN, s, SEEDS, 11);
    assert!(tested >= 10, "only {tested} nodes tested");

    // Joint law of the first two emitted tokens: P(x1 = c, x2 = y) = p_root(c) * p_c(y) for a root
    // child c; P(x1 = x, stop) = p_root(x) for any other x.
    let p_root = reference_dist(&logits[..vocab], &s);
    let root_children: BTreeMap<usize, usize> =
        t.children(0).map(|c| (t.tokens()[c] as usize, c)).collect();
    let mut obs = Vec::new();
    let mut probs = Vec::new();
    for (x1, &p1) in p_root.iter().enumerate() {
        match root_children.get(&x1) {
            Some(&c) => {
                let p_c = reference_dist(&logits[c * vocab..(c + 1) * vocab], &s);
                for (x2, pc) in p_c.iter().enumerate() {
                    obs.push(counts.joint[x1][x2]);
                    probs.push(p1 * pc);
                }
                assert_eq!(
                    counts.joint[x1][vocab], 0,
                    "a root child always emits a second token"
                );
            }
            None => {
                obs.push(counts.joint[x1][vocab]);
                probs.push(p1);
                assert!(
                    counts.joint[x1][..vocab].iter().all(|&x| x == 0),
                    "a non-child first token ends the step"
                );
            }
        }
    }
    let chi = chi_square(&obs, &probs, "joint of the first two tokens");
    eprintln!("joint: {chi:?}");
    assert!(chi.df >= 20, "{chi:?}");
    assert!(!chi.rejects(), "joint law of the first two tokens: {chi:?}");
}

#[test]
fn temperature_0_7_bushy() {
    let t = bushy_tree();
    let (tested, _, _) = check_config(
        "T=0.7 bushy",
        &t,
        10,
        PLAIN,
        sampling(0.7, 0, 1.0),
        SEEDS,
        12,
    );
    assert!(tested >= 10, "only {tested} nodes tested");
}

#[test]
fn top_k_with_ties_bushy() {
    let t = bushy_tree();
    let style = LogitStyle {
        integer: true,
        p_inf: 0.05,
        p_dead_child: 0.0,
    };
    let (tested, _, logits) = check_config(
        "top-k=4 ties",
        &t,
        10,
        style,
        sampling(1.0, 4, 1.0),
        SEEDS,
        13,
    );
    assert!(tested >= 8, "only {tested} nodes tested");
    // The configuration really has ties at the k-th value that top-k must keep together.
    let ties = (0..t.len())
        .filter(|&v| {
            let mut r = logits[v * 10..(v + 1) * 10].to_vec();
            r.sort_by(|a, b| b.total_cmp(a));
            r[3] == r[4]
        })
        .count();
    assert!(
        ties >= 3,
        "only {ties} rows with a tie at the top-k boundary"
    );
}

#[test]
fn top_p_bushy() {
    let t = bushy_tree();
    let (tested, _, _) = check_config(
        "top-p=0.75",
        &t,
        10,
        PLAIN,
        sampling(1.0, 0, 0.75),
        SEEDS,
        14,
    );
    assert!(tested >= 8, "only {tested} nodes tested");
}

#[test]
fn top_k_and_top_p_at_temperature_0_7() {
    let t = bushy_tree();
    let style = LogitStyle {
        integer: false,
        p_inf: 0.1,
        p_dead_child: 0.3,
    };
    let (tested, _, _) = check_config(
        "T=0.7 top-k=5 top-p=0.8",
        &t,
        12,
        style,
        sampling(0.7, 5, 0.8),
        SEEDS,
        15,
    );
    assert!(tested >= 6, "only {tested} nodes tested");
}

#[test]
fn chain_of_depth_5() {
    let t = chain_tree();
    assert_eq!(t.deepest(), 5);
    let (tested, _, _) = check_config("chain T=1", &t, 6, PLAIN, sampling(1.0, 0, 1.0), SEEDS, 16);
    assert!(tested >= 5, "only {tested} nodes tested");
    let (tested, _, _) = check_config(
        "chain T=0.8 top-p=0.9",
        &t,
        6,
        PLAIN,
        sampling(0.8, 0, 0.9),
        SEEDS / 2,
        17,
    );
    assert!(tested >= 4, "only {tested} nodes tested");
}

#[test]
fn root_with_every_token_as_a_child() {
    let t = full_root_tree();
    assert_eq!(t.children(0).count(), 6);
    let (tested, _, _) = check_config(
        "full root T=1",
        &t,
        6,
        PLAIN,
        sampling(1.0, 0, 1.0),
        SEEDS / 2,
        18,
    );
    assert!(tested >= 8, "only {tested} nodes tested");
    // With top-k = 2 four of the root's children have probability 0 and must never be accepted.
    let (tested, counts, logits) = check_config(
        "full root top-k=2",
        &t,
        6,
        PLAIN,
        sampling(1.0, 2, 1.0),
        SEEDS / 2,
        19,
    );
    assert!(tested >= 2, "only {tested} nodes tested");
    let zero = (0..6).filter(|&x| counts.emitted[0][x] == 0).count();
    let finite = logits[..6].iter().filter(|x| x.is_finite()).count();
    assert!(
        finite > 2 && zero >= 4,
        "top-k=2 leaves {} tokens",
        6 - zero
    );
}

/// Children whose target probability is zero (masked with -inf, or cut by top-k / top-p) are never
/// accepted, and the other tokens keep their exact probabilities.
#[test]
fn children_with_zero_target_probability() {
    let t = bushy_tree();
    let style = LogitStyle {
        integer: false,
        p_inf: 0.0,
        p_dead_child: 0.6,
    };
    let mut dead_children = 0;
    for (name, s, seed) in [
        ("dead children T=1", sampling(1.0, 0, 1.0), 20),
        ("dead children top-k=2", sampling(1.0, 2, 1.0), 21),
        ("dead children top-p=0.5", sampling(1.3, 0, 0.5), 24),
    ] {
        let (tested, counts, logits) = check_config(name, &t, 10, style, s, SEEDS / 2, seed);
        assert!(tested >= 3, "{name}: only {tested} nodes tested");
        for c in 1..t.len() {
            let v = t.parents()[c] as usize;
            let p = reference_dist(&logits[v * 10..(v + 1) * 10], &s);
            let tok = t.tokens()[c] as usize;
            if p[tok] == 0.0 {
                dead_children += 1;
                // chi_square already requires zero counts; restate it where it matters.
                assert_eq!(counts.emitted[v][tok], 0, "{name}: dead child {c} accepted");
            }
        }
    }
    assert!(
        dead_children >= 10,
        "only {dead_children} zero-probability children"
    );
}

/// Token ids on both sides of the library's 1024-token residual chunks (and the last token).
fn big_vocab_tree(vocab: i32) -> DraftTree {
    let last = vocab - 1;
    tree_from_paths(&[
        &[1023],
        &[1024],
        &[2047],
        &[2048],
        &[5],
        &[last],
        &[1024, 1023],
        &[1024, 0],
        &[1024, 2048],
        &[1023, 1024],
        &[1023, last],
        &[2048, 2047],
        &[1024, 1023, 3],
        &[1024, 1023, 1500],
        &[1024, 1023, last],
    ])
}

/// Logits for vocabularies spanning several residual chunks: children and a few non-child tokens next
/// to the chunk boundaries carry most of the mass; the rest is mostly -inf with some low values.
fn make_big_logits(t: &DraftTree, vocab: usize, rng: &mut SplitMix64) -> Vec<f32> {
    let ch = children_lists(t.parents());
    let hot = [0usize, 1022, 1025, 2046, 2049, vocab - 2, 1200, 2300];
    let mut logits = vec![f32::NEG_INFINITY; t.len() * vocab];
    for v in 0..t.len() {
        let row = &mut logits[v * vocab..(v + 1) * vocab];
        for x in row.iter_mut() {
            if rng.chance(0.2) {
                *x = rng.uniform(-6.0, -2.0) as f32;
            }
        }
        for &h in &hot {
            if h < vocab && rng.chance(0.7) {
                row[h] = rng.uniform(-0.5, 1.5) as f32;
            }
        }
        for &c in &ch[v] {
            row[t.tokens()[c] as usize] = rng.uniform(0.0, 2.0) as f32;
        }
        if rng.chance(0.3) && !ch[v].is_empty() {
            row[t.tokens()[*rng.pick(&ch[v])] as usize] = f32::NEG_INFINITY;
        }
    }
    logits
}

/// Vocabularies larger than one residual chunk (the residual draw scans chunk masses first), with
/// children and mass on both sides of every chunk boundary.
#[test]
fn vocabulary_spanning_several_residual_chunks() {
    for (name, vocab, s, seeds, seed) in [
        (
            "V=2500 T=1",
            2500usize,
            sampling(1.0, 0, 1.0),
            30_000u64,
            30u64,
        ),
        (
            "V=2100 T=0.8 top-k=12 top-p=0.9",
            2100,
            sampling(0.8, 12, 0.9),
            10_000,
            31,
        ),
    ] {
        let t = big_vocab_tree(vocab as i32);
        let mut rng = SplitMix64::new(seed);
        let logits = make_big_logits(&t, vocab, &mut rng);
        let counts = run(&t, &logits, vocab, &s, seeds);
        let mut tested = 0;
        for v in 0..t.len() {
            let obs = &counts.emitted[v];
            let reach: u64 = obs.iter().sum();
            if reach < 200 {
                continue;
            }
            let want = reference_dist(&logits[v * vocab..(v + 1) * vocab], &s);
            let ctx = format!("{name}: node {v}");
            let chi = chi_square(obs, &want, &ctx);
            eprintln!("{ctx}: {chi:?}");
            assert!(!chi.rejects(), "{ctx}: {chi:?}");
            tested += 1;
        }
        assert!(tested >= 5, "{name}: only {tested} nodes tested");
        // The residual really lands in every chunk.
        let chunks: std::collections::BTreeSet<usize> = counts
            .emitted
            .iter()
            .flat_map(|row| {
                row.iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(x, _)| x / 1024)
            })
            .collect();
        assert_eq!(
            chunks.len(),
            vocab.div_ceil(1024),
            "{name}: chunks hit {chunks:?}"
        );
    }
}

/// Negative controls: the same test rejects counts sampled at temperature 0.7 compared with the
/// temperature-1 distribution, counts sampled with top-k = 6 compared with no top-k, and the right
/// distribution skewed by 2%; and it accepts the right distribution. So the checks above have power.
#[test]
fn negative_control_rejects_wrong_distributions() {
    let t = bushy_tree();
    let vocab = 10;
    let mut rng = SplitMix64::new(12);
    let logits = make_logits(&t, vocab, PLAIN, &mut rng);
    let counts = run(&t, &logits, vocab, &sampling(0.7, 0, 1.0), 20_000);
    let wrong = reference_dist(&logits[..vocab], &sampling(1.0, 0, 1.0));
    let chi = chi_square(&counts.emitted[0], &wrong, "T=0.7 counts vs T=1 reference");
    assert!(chi.rejects(), "the test failed to reject: {chi:?}");
    // And with the right reference, the same counts pass.
    let right = reference_dist(&logits[..vocab], &sampling(0.7, 0, 1.0));
    assert!(!chi_square(&counts.emitted[0], &right, "right").rejects());

    // A subtler error: sampling with top-k = 6 but expecting no top-k. Cut tokens have positive
    // expected counts under the wrong reference but are never observed.
    let counts = run(&t, &logits, vocab, &sampling(1.0, 6, 1.0), 20_000);
    let wrong = reference_dist(&logits[..vocab], &sampling(1.0, 0, 1.0));
    let chi = chi_square(&counts.emitted[0], &wrong, "top-k=6 counts vs no top-k");
    assert!(chi.rejects(), "the test failed to reject: {chi:?}");
    // A distribution off by a little: move 2% of the mass between the two most likely tokens.
    let counts = run(&t, &logits, vocab, &sampling(1.0, 0, 1.0), SEEDS / 2);
    let mut skewed = reference_dist(&logits[..vocab], &sampling(1.0, 0, 1.0));
    let mut order: Vec<usize> = (0..vocab).collect();
    order.sort_by(|&a, &b| skewed[b].total_cmp(&skewed[a]));
    skewed[order[0]] -= 0.02;
    skewed[order[1]] += 0.02;
    let chi = chi_square(&counts.emitted[0], &skewed, "2% skew");
    assert!(
        chi.rejects(),
        "the test failed to reject a 2% skew: {chi:?}"
    );
    // A zero-probability cell that is observed fails outright.
    let result = std::panic::catch_unwind(|| {
        let mut p = vec![0.0; vocab];
        p[0] = 1.0;
        chi_square(&[1, 1, 0, 0, 0, 0, 0, 0, 0, 0], &p, "zero cell")
    });
    assert!(result.is_err());
}

/// Wilson–Hilferty is close to exact chi-square quantiles (checked at alpha = 0.05 against table
/// values, where the normal quantile is 1.6448536).
#[test]
fn wilson_hilferty_is_accurate() {
    for (df, table) in [
        (5usize, 11.0705),
        (10, 18.3070),
        (30, 43.7730),
        (100, 124.3421),
    ] {
        let wh = chi2_critical(df, 1.644_853_6);
        assert!(
            (wh - table).abs() / table < 0.005,
            "df {df}: {wh} vs {table}"
        );
    }
}

/// Same seed, same acceptance; different seeds differ at least sometimes; order of calls is irrelevant.
#[test]
fn seeded_and_deterministic() {
    let t = bushy_tree();
    let vocab = 10;
    let mut rng = SplitMix64::new(99);
    let logits = make_logits(&t, vocab, PLAIN, &mut rng);
    let s = sampling(0.9, 7, 0.95);
    let first: Vec<Acceptance> = (0..300)
        .map(|seed| verify::sample(&t, &logits, vocab, &s, seed).unwrap())
        .collect();
    // Again, in reverse order, on a copy of the inputs.
    let logits2 = logits.clone();
    for seed in (0..300u64).rev() {
        let a = verify::sample(&t, &logits2, vocab, &s, seed).unwrap();
        assert_eq!(a, first[seed as usize], "seed {seed}");
    }
    let distinct: std::collections::BTreeSet<(Vec<i32>, i32)> = first
        .iter()
        .map(|a| (a.tokens().to_vec(), a.bonus_token))
        .collect();
    assert!(
        distinct.len() >= 20,
        "only {} distinct outcomes",
        distinct.len()
    );
    let changed = (0..300)
        .filter(|&k| first[k] != first[(k + 1) % 300])
        .count();
    assert!(
        changed > 100,
        "consecutive seeds gave equal results {} times",
        300 - changed
    );
    // Large and extreme seeds work too.
    for seed in [u64::MAX, u64::MAX - 1, 1 << 63] {
        let a = verify::sample(&t, &logits, vocab, &s, seed).unwrap();
        assert_eq!(a, verify::sample(&t, &logits, vocab, &s, seed).unwrap());
    }
}

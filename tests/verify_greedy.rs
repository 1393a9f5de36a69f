//! Greedy acceptance against a brute-force reference over random trees, and `verify::sample` at
//! temperature 0 against `verify::greedy` on the argmax of the same logits.

mod common;

use common::{
    GenOptions, SplitMix64, TreeSpec, build, children_lists, random_spec, root_to_leaf_paths,
};
use specblock::tree::DraftTree;
use specblock::verify::{self, Acceptance, Sampling};

/// Brute force: for every root-to-leaf path, the longest prefix whose every node's token equals the
/// argmax at its parent; the longest over all paths wins. Returns (accepted nodes, bonus token).
fn reference_greedy(t: &DraftTree, argmax: &[i32]) -> (Vec<usize>, i32) {
    let tokens = t.tokens();
    let mut best: Option<Vec<usize>> = None;
    for path in root_to_leaf_paths(t.parents()) {
        let mut k = 0;
        while k + 1 < path.len() && tokens[path[k + 1]] == argmax[path[k]] {
            k += 1;
        }
        let accepted = path[1..=k].to_vec();
        match &best {
            Some(b) if b.len() > accepted.len() => {}
            Some(b) if b.len() == accepted.len() => {
                // Siblings have distinct tokens, so equal-length accepted prefixes are the same nodes.
                assert_eq!(b, &accepted, "greedy path not unique");
            }
            _ => best = Some(accepted),
        }
    }
    let best = best.expect("a tree has at least one root-to-leaf path");
    let last = best.last().copied().unwrap_or(0);
    (best, argmax[last])
}

fn check_acceptance(t: &DraftTree, acc: &Acceptance, nodes: &[usize], bonus: i32, ctx: &str) {
    let got: Vec<usize> = acc.nodes().iter().map(|&x| x as usize).collect();
    assert_eq!(got, nodes, "{ctx}: accepted nodes");
    assert_eq!(acc.n_accepted as usize, nodes.len(), "{ctx}");
    let toks: Vec<i32> = nodes.iter().map(|&v| t.tokens()[v]).collect();
    assert_eq!(acc.tokens(), &toks[..], "{ctx}: accepted tokens");
    assert_eq!(acc.bonus_token, bonus, "{ctx}: bonus");
    assert_eq!(acc.last_node(), nodes.last().copied().unwrap_or(0), "{ctx}");
    assert_eq!(acc.keep_len(), nodes.len() + 1, "{ctx}");
    let mut keep = vec![-7; nodes.len() + 3];
    assert_eq!(acc.keep_list(&mut keep).unwrap(), nodes.len() + 1, "{ctx}");
    assert_eq!(keep[0], 0, "{ctx}");
    for (j, &v) in nodes.iter().enumerate() {
        assert_eq!(keep[j + 1], v as i32, "{ctx}: keep list");
    }
    assert!(
        keep[nodes.len() + 1..].iter().all(|&x| x == -7),
        "{ctx}: slack"
    );
}

fn random_tree(rng: &mut SplitMix64, alphabet_hi: i32, big_tokens: bool) -> (TreeSpec, DraftTree) {
    let spec = random_spec(
        rng,
        GenOptions {
            max_nodes_hi: 150,
            alphabet_hi,
            big_tokens,
        },
    );
    let mut t = build(&spec);
    let budget = if rng.chance(0.5) {
        spec.max_nodes
    } else {
        rng.range(0, spec.max_nodes as i64) as u32
    };
    t.finalize(budget).unwrap();
    (spec, t)
}

#[test]
fn greedy_matches_brute_force() {
    let mut rng = SplitMix64::new(0x6ee0_0001);
    let (mut deep, mut total_accepted) = (0usize, 0usize);
    for case in 0..4000 {
        let (spec, t) = random_tree(&mut rng, 40, true);
        let ch = children_lists(t.parents());
        // Tokens up to a little past the tree's largest (which may be i32::MAX).
        let token_hi = (spec.max_token() as i64 + 2).min(i32::MAX as i64);
        let hit = rng.uniform(0.3, 1.0);
        let argmax: Vec<i32> = (0..t.len())
            .map(|v| {
                if !ch[v].is_empty() && rng.chance(hit) {
                    t.tokens()[*rng.pick(&ch[v])]
                } else {
                    rng.range(0, token_hi) as i32
                }
            })
            .collect();
        let (nodes, bonus) = reference_greedy(&t, &argmax);
        let acc = verify::greedy(&t, &argmax).unwrap();
        check_acceptance(&t, &acc, &nodes, bonus, &format!("case {case}"));
        total_accepted += nodes.len();
        if nodes.len() >= 3 {
            deep += 1;
        }
    }
    // The argmax arrays really do walk deep into the trees.
    assert!(deep > 400, "only {deep} cases accepted 3+ nodes");
    assert!(total_accepted > 4000, "{total_accepted} accepted in all");
}

/// Temperature 0 is greedy decoding: `sample` must agree with `greedy` on the argmax (ties to the
/// lowest token id) of the same logits, whatever the seed, top-k and top-p.
#[test]
fn sample_at_temperature_zero_is_greedy_on_argmax() {
    let mut rng = SplitMix64::new(0x6ee0_0002);
    let mut deep = 0usize;
    for case in 0..2500 {
        let (spec, t) = random_tree(&mut rng, 12, false);
        let ch = children_lists(t.parents());
        let vocab = (spec.max_token() + 1 + rng.range(1, 4) as i32) as usize;
        let mut logits = vec![0f32; t.len() * vocab];
        for v in 0..t.len() {
            let row = &mut logits[v * vocab..(v + 1) * vocab];
            // Half-integer logits: ties for the maximum are common.
            for x in row.iter_mut() {
                *x = if rng.chance(0.1) {
                    f32::NEG_INFINITY
                } else {
                    rng.range(-6, 6) as f32 * 0.5
                };
            }
            if rng.chance(0.2) {
                row[rng.below(vocab as u64) as usize] = 3.0; // guaranteed finite maximum
            }
            if !ch[v].is_empty() && rng.chance(0.75) {
                let c = *rng.pick(&ch[v]);
                row[t.tokens()[c] as usize] = 3.0; // may tie with another 3.0
            }
            if row.iter().all(|&x| x == f32::NEG_INFINITY) {
                row[0] = 0.0;
            }
        }
        let argmax: Vec<i32> = (0..t.len())
            .map(|v| {
                let row = &logits[v * vocab..(v + 1) * vocab];
                let mut best = 0;
                for j in 1..vocab {
                    if row[j] > row[best] {
                        best = j;
                    }
                }
                best as i32
            })
            .collect();
        let sampling = Sampling {
            temperature: if rng.chance(0.2) { -0.0 } else { 0.0 },
            top_k: rng.range(0, 5) as i32,
            top_p: *rng.pick(&[1.0f32, 0.5, 0.01]),
        };
        let ctx = format!("case {case} sampling {sampling:?}");
        let want = verify::greedy(&t, &argmax).unwrap();
        let (nodes, bonus) = reference_greedy(&t, &argmax);
        check_acceptance(&t, &want, &nodes, bonus, &ctx);
        for seed in [0u64, 1, rng.next_u64()] {
            let got = verify::sample(&t, &logits, vocab, &sampling, seed).unwrap();
            assert_eq!(got, want, "{ctx} seed {seed}");
        }
        if nodes.len() >= 3 {
            deep += 1;
        }
    }
    assert!(deep > 200, "only {deep} cases accepted 3+ nodes");
}

/// Random trees with logits whose every row has a unique maximum (often on a child's token, so walks
/// go deep), spaced at least 0.5 apart. Returns (tree, logits, vocab, argmax per row).
fn one_hot_case(rng: &mut SplitMix64) -> (DraftTree, Vec<f32>, usize, Vec<i32>) {
    let (spec, t) = random_tree(rng, 12, false);
    let ch = children_lists(t.parents());
    let vocab = (spec.max_token() + 1 + rng.range(1, 4) as i32) as usize;
    let mut logits = vec![0f32; t.len() * vocab];
    let mut argmax = vec![0i32; t.len()];
    for v in 0..t.len() {
        // A random permutation of 0, 0.5, 1, ... (minus an offset) over the row.
        let mut vals: Vec<f32> = (0..vocab).map(|k| k as f32 * 0.5 - 3.0).collect();
        for i in (1..vocab).rev() {
            vals.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let row = &mut logits[v * vocab..(v + 1) * vocab];
        row.copy_from_slice(&vals);
        if !ch[v].is_empty() && rng.chance(0.8) {
            let tok = t.tokens()[*rng.pick(&ch[v])] as usize;
            let top = (0..vocab)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            row.swap(tok, top);
        }
        // Some masked tokens (never the maximum).
        let top = (0..vocab)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        for (j, x) in row.iter_mut().enumerate() {
            if j != top && rng.chance(0.15) {
                *x = f32::NEG_INFINITY;
            }
        }
        argmax[v] = top as i32;
    }
    (t, logits, vocab, argmax)
}

/// With a unique maximum per row, the target distribution is one-hot on the argmax whenever the
/// temperature is tiny (exp(-0.5 / T) is exactly 0), or top-k = 1, or top-p is below the top token's
/// probability. Then every seed must give exactly the greedy walk.
#[test]
fn one_hot_targets_make_sample_greedy() {
    let mut rng = SplitMix64::new(0x6ee0_0003);
    let configs = [
        (1e-30f32, 0, 1.0f32),
        (f32::MIN_POSITIVE, 0, 1.0),
        (1.0, 1, 1.0),
        (3.0, 1, 0.9),
        (0.7, 0, 1e-6),
        (1.0, 0, f32::MIN_POSITIVE),
    ];
    let mut deep = 0;
    for case in 0..600 {
        let (t, logits, vocab, argmax) = one_hot_case(&mut rng);
        let want = verify::greedy(&t, &argmax).unwrap();
        for (temperature, top_k, top_p) in configs {
            let s = Sampling {
                temperature,
                top_k,
                top_p,
            };
            s.validate().unwrap();
            for seed in [case as u64, rng.next_u64()] {
                let got = verify::sample(&t, &logits, vocab, &s, seed);
                assert_eq!(got, Ok(want), "case {case} {s:?} seed {seed}");
            }
        }
        if want.n_accepted >= 3 {
            deep += 1;
        }
    }
    assert!(deep > 50, "only {deep} cases accepted 3+ nodes");
}

/// The same for subnormal temperatures, which `Sampling::validate` accepts ("finite and >= 0"):
/// the target is still one-hot on the argmax, so `sample` must return the greedy walk.
#[test]
fn subnormal_temperature_is_greedy() {
    let mut rng = SplitMix64::new(0x6ee0_0004);
    for case in 0..200 {
        let (t, logits, vocab, argmax) = one_hot_case(&mut rng);
        let want = verify::greedy(&t, &argmax).unwrap();
        for temperature in [1e-39f32, 1e-40, f32::from_bits(1)] {
            let s = Sampling {
                temperature,
                top_k: 0,
                top_p: 1.0,
            };
            assert_eq!(s.validate(), Ok(()), "{s:?} is documented as valid");
            let got = verify::sample(&t, &logits, vocab, &s, case);
            assert_eq!(got, Ok(want), "case {case} {s:?}");
        }
    }
}

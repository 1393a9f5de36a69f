//! After `DraftTree::new`, drafting, finalize, every layout and both verifiers perform no heap
//! allocation. A counting global allocator counts allocations made by the current thread while
//! counting is switched on; this file holds a single test.

mod common;
mod counting;

use counting::counted;

use std::hint::black_box;

use common::{GenOptions, SplitMix64, TreeSpec, children_lists, random_spec};
use specblock::layout;
use specblock::tree::{DraftTree, NodeMeta, TreeParams};
use specblock::verify::{self, Acceptance, Sampling};

const MAX_NODES: usize = 200;
const MAX_DEPTH: usize = 64;
const VOCAB: usize = 49_152;
/// Trees verified with `sample` stay below this size so the logits (rows x 49152) stay small.
const SAMPLE_NODES: u32 = 48;
const PREFIX: u32 = 37;

/// Output buffers for every layout, sized for the largest tree.
struct Buffers {
    i32s: Vec<i32>,
    i32s_b: Vec<i32>,
    dense: Vec<u8>,
    bias: Vec<f32>,
    bits: Vec<u32>,
    flat: Vec<u8>,
    paths: Vec<i32>,
    keep: Vec<i32>,
    argmax: Vec<i32>,
}

impl Buffers {
    fn new() -> Self {
        let n = MAX_NODES + 1;
        Buffers {
            i32s: vec![0; n],
            i32s_b: vec![0; n],
            dense: vec![0; n * n],
            bias: vec![0.0; n * n],
            bits: vec![0; n * layout::mask_words_per_row(n, PREFIX)],
            flat: vec![0; layout::mask_flat_bytes(n, PREFIX)],
            paths: vec![0; n * (MAX_DEPTH + 1)],
            keep: vec![0; MAX_DEPTH + 1],
            argmax: vec![0; n],
        }
    }
}

/// Drafts `spec` into `t`, finalizes and calls every layout and `greedy`. Meant to run while counting;
/// returns a checksum so nothing is optimised away.
fn draft_and_lay_out(t: &mut DraftTree, spec: &TreeSpec, budget: u32, b: &mut Buffers) -> i64 {
    let mut sum = 0i64;
    t.reset(spec.root).unwrap();
    for (k, a) in spec.adds.iter().enumerate() {
        let id = if k % 2 == 0 {
            t.add(a.parent, a.token, a.logprob).unwrap()
        } else {
            t.add_with_meta(a.parent, a.token, a.logprob, a.meta)
                .unwrap()
        };
        sum += id as i64;
    }
    // Failed calls do not allocate either.
    sum += t.add(-1, 0, 0.0).is_err() as i64;
    sum += t.add(0, 0, f32::NAN).is_err() as i64;
    t.finalize(budget).unwrap();
    t.finalize(budget).unwrap();
    let n = t.len();

    sum += layout::tokens(t, &mut b.i32s).unwrap() as i64;
    sum += layout::parents(t, &mut b.i32s).unwrap() as i64;
    sum += layout::first_child(t, &mut b.i32s).unwrap() as i64;
    sum += layout::next_sibling(t, &mut b.i32s).unwrap() as i64;
    sum += layout::depths(t, &mut b.i32s).unwrap() as i64;
    sum += layout::positions(t, PREFIX, &mut b.i32s).unwrap() as i64;
    sum += layout::mask_dense(t, &mut b.dense).unwrap() as i64;
    sum += layout::mask_bias(t, &mut b.bias).unwrap() as i64;
    for prefix in [0, PREFIX] {
        let words = layout::mask_words_per_row(n, prefix);
        sum += layout::mask_bits(t, prefix, &mut b.bits[..n * words]).unwrap() as i64;
        let bytes = layout::mask_flat_bytes(n, prefix);
        sum += layout::mask_flat_bits(t, prefix, &mut b.flat[..bytes]).unwrap() as i64;
    }
    let width = t.deepest() + 1;
    sum += layout::retrieve_paths(t, width, &mut b.paths).unwrap() as i64;
    sum += layout::seq_ranges(t, 0, 1 << 20, &mut b.i32s, &mut b.i32s_b).unwrap() as i64;
    sum += layout::tokens(t, &mut b.i32s[..0]).is_err() as i64;
    sum += layout::retrieve_paths(t, 0, &mut b.paths).is_err() as i64;
    for v in 0..n {
        sum += t.children(v).count() as i64 + t.children_by_token(v).len() as i64;
    }
    sum += t.num_leaves() as i64 + t.source_ids()[n - 1] as i64 + t.metas()[n - 1].user as i64;

    // Greedy: the argmax after every node is the token of its first child, or 7 at leaves.
    for v in 0..n {
        let fc = t.first_child()[v];
        b.argmax[v] = if fc >= 0 { t.tokens()[fc as usize] } else { 7 };
    }
    let acc = verify::greedy(t, &b.argmax[..n]).unwrap();
    sum += acc.keep_list(&mut b.keep).unwrap() as i64 + acc.bonus_token as i64;
    sum += verify::greedy(t, &b.argmax[..n.saturating_sub(1)]).is_err() as i64;
    sum
}

fn sample_all(t: &DraftTree, logits: &[f32], seed: u64, keep: &mut [i32]) -> (i64, u32) {
    let configs = [
        Sampling {
            temperature: 1.0,
            top_k: 50,
            top_p: 0.9,
        },
        Sampling {
            temperature: 0.7,
            top_k: 0,
            top_p: 0.5,
        },
        Sampling {
            temperature: 1.3,
            top_k: 3,
            top_p: 1.0,
        },
        Sampling::default(),
        Sampling {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.8,
        },
    ];
    let (mut sum, mut deepest) = (0i64, 0u32);
    for (k, s) in configs.iter().enumerate() {
        s.validate().unwrap();
        let a: Acceptance = verify::sample(t, logits, VOCAB, s, seed + k as u64).unwrap();
        sum += a.keep_list(keep).unwrap() as i64 + a.bonus_token as i64;
        deepest = deepest.max(a.n_accepted);
    }
    (sum, deepest)
}

#[test]
fn drafting_finalize_layouts_and_verification_do_not_allocate() {
    // The counter counts: explicit allocations inside the counted region are seen.
    let (_, n) = counted(|| black_box(Vec::<u64>::with_capacity(16)));
    assert_eq!(n, 1, "one Vec allocation");
    let (_, n) = counted(|| {
        let mut v = black_box(Vec::<u8>::new());
        for i in 0..100 {
            v.push(i); // grows by reallocation
        }
        black_box(Box::new(v.len()))
    });
    assert!(n >= 3, "Vec growth and a Box counted {n} times");
    let (t, n) = counted(|| {
        DraftTree::new(TreeParams {
            max_nodes: MAX_NODES as u32,
            max_depth: MAX_DEPTH as u32,
        })
    });
    assert!(n > 0, "DraftTree::new allocates its arena ({n})");
    let mut t = t.unwrap();
    let (_, n) = counted(|| 0u64);
    assert_eq!(n, 0, "an empty region counts nothing");

    let mut rng = SplitMix64::new(0xa110c);
    let mut b = Buffers::new();

    // Drafting, finalize, layouts and greedy over many random trees of up to 200 nodes.
    let mut total = 0i64;
    for case in 0..400 {
        let mut spec = random_spec(
            &mut rng,
            GenOptions {
                max_nodes_hi: MAX_NODES as u32,
                alphabet_hi: 40,
                big_tokens: true,
            },
        );
        spec.max_nodes = MAX_NODES as u32;
        spec.max_depth = MAX_DEPTH as u32;
        let budget = rng.range(0, MAX_NODES as i64) as u32;
        let (sum, allocs) = counted(|| draft_and_lay_out(&mut t, &spec, budget, &mut b));
        assert_eq!(
            allocs, 0,
            "case {case}: {allocs} allocations (spec {spec:?})"
        );
        total += sum;
    }
    assert!(total > 0);

    // Sampling over a vocabulary of 49152 with top-k and top-p. Background logits are random in
    // [-10, 0]; the children of each node get large logits so walks go deep.
    let rows = SAMPLE_NODES as usize + 1;
    let mut logits: Vec<f32> = (0..rows * VOCAB)
        .map(|_| rng.uniform(-10.0, 0.0) as f32)
        .collect();
    let mut deepest_accept = 0;
    for case in 0..24 {
        let mut spec = random_spec(
            &mut rng,
            GenOptions {
                max_nodes_hi: SAMPLE_NODES,
                alphabet_hi: 40,
                big_tokens: false,
            },
        );
        spec.max_nodes = MAX_NODES as u32;
        spec.max_depth = MAX_DEPTH as u32;
        // Spread the small alphabet over the vocabulary (keeps duplicates, uses high token ids).
        for a in &mut spec.adds {
            a.token = (a.token * 1229 + 17) % VOCAB as i32;
            a.meta = NodeMeta::default();
        }
        let ((), allocs) = counted(|| {
            draft_and_lay_out(&mut t, &spec, SAMPLE_NODES, &mut b);
        });
        assert_eq!(allocs, 0, "case {case}: drafting allocated");
        let n = t.len();
        let ch = children_lists(t.parents());
        let mut boosted = Vec::new();
        for (v, kids) in ch.iter().enumerate() {
            for &c in kids {
                let idx = v * VOCAB + t.tokens()[c] as usize;
                boosted.push((idx, logits[idx]));
                logits[idx] = 6.0 + rng.uniform(0.0, 2.0) as f32;
            }
        }
        let seed = rng.next_u64();
        let ((sum, deepest), allocs) =
            counted(|| sample_all(&t, &logits[..n * VOCAB], seed, &mut b.keep));
        assert_eq!(allocs, 0, "case {case}: sampling allocated (spec {spec:?})");
        total += sum;
        deepest_accept = deepest_accept.max(deepest);
        for (idx, old) in boosted {
            logits[idx] = old;
        }
    }
    assert!(
        deepest_accept >= 3,
        "walks accepted at most {deepest_accept} nodes"
    );
    black_box(total);
}

//! Core benchmarks (plain harness): finalize + every layout + greedy verify at budgets 16/64/128, and
//! sampling verify at vocab 49152. Run with `make bench` on an idle machine; prints a markdown table of
//! medians over 31 samples.

use std::hint::black_box;
use std::time::Instant;

use specblock::layout;
use specblock::rng::CounterRng;
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify::{self, Sampling};

const VOCAB: usize = 49_152;
const PREFIX: u32 = 512;
const SAMPLES: usize = 31;

/// Candidate draft for one step, shaped like SpecBlock's: a beam that expands the best nodes of each
/// depth into several children, with log-probabilities from a peaked softmax, and some duplicate tokens
/// so dedup has work. Returns (parent, token, logprob) in insertion order.
fn candidates(n: usize, seed: u64) -> Vec<(i32, i32, f32)> {
    let rng = CounterRng::new(seed);
    let mut c = 0u64;
    let mut next = || {
        c += 1;
        rng.uniform(c)
    };
    let mut out: Vec<(i32, i32, f32)> = Vec::with_capacity(n);
    let mut frontier = vec![(0i32, 0.0f32)]; // (node id, cum logprob)
    let mut depth = 0;
    while out.len() < n && depth < 8 {
        let mut next_frontier = Vec::new();
        for &(node, cum) in &frontier {
            let width = 1 + (next() * 5.0) as usize;
            let mut mass = 1.0f32;
            for _ in 0..width {
                if out.len() >= n {
                    break;
                }
                let p = mass * (0.3 + 0.6 * next() as f32);
                mass -= p;
                let token = (next() * 40.0) as i32; // small alphabet: some duplicates
                let lp = p.max(1e-6).ln();
                out.push((node, token, lp));
                next_frontier.push((out.len() as i32, cum + lp));
            }
        }
        next_frontier.sort_by(|a, b| b.1.total_cmp(&a.1));
        next_frontier.truncate(6);
        frontier = next_frontier;
        depth += 1;
    }
    out
}

/// Median nanoseconds per call of `f`, calibrated so each sample lasts about 2 ms.
fn median_ns(mut f: impl FnMut()) -> f64 {
    let mut iters = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed().as_micros() >= 2000 || iters >= 1 << 24 {
            break;
        }
        iters *= 2;
    }
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

struct Buffers {
    i32s: Vec<i32>,
    i32s_b: Vec<i32>,
    dense: Vec<u8>,
    bits: Vec<u32>,
    paths: Vec<i32>,
}

fn all_layouts(t: &DraftTree, b: &mut Buffers) {
    layout::tokens(t, &mut b.i32s).unwrap();
    layout::parents(t, &mut b.i32s).unwrap();
    layout::positions(t, PREFIX, &mut b.i32s).unwrap();
    layout::mask_dense(t, &mut b.dense).unwrap();
    layout::mask_bits(t, 0, &mut b.bits).unwrap();
    layout::first_child(t, &mut b.i32s).unwrap();
    layout::next_sibling(t, &mut b.i32s_b).unwrap();
    layout::retrieve_paths(t, t.deepest() + 1, &mut b.paths).unwrap();
    layout::seq_ranges(t, 0, 1 << 20, &mut b.i32s, &mut b.i32s_b).unwrap();
}

fn build(t: &mut DraftTree, cands: &[(i32, i32, f32)]) {
    t.reset(7).unwrap();
    for &(p, tok, lp) in cands {
        t.add(p, tok, lp).unwrap();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    println!("specblock core benchmarks: median of {SAMPLES} samples, ns per call\n");
    println!(
        "| budget | candidates | add all | finalize | all layouts | greedy verify | finalize + layouts + greedy |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for budget in [16usize, 64, 128] {
        let cands = candidates(2 * budget, budget as u64);
        let mut t = DraftTree::new(TreeParams {
            max_nodes: 512,
            max_depth: 16,
        })
        .unwrap();
        build(&mut t, &cands);
        t.finalize(budget as u32).unwrap();
        let n = t.len();
        let mut b = Buffers {
            i32s: vec![0; n],
            i32s_b: vec![0; n],
            dense: vec![0; n * n],
            bits: vec![0; n * layout::mask_words_per_row(n, 0)],
            paths: vec![0; t.num_leaves() * (t.deepest() + 1)],
        };
        // An argmax that follows the first child four levels down.
        let mut argmax = vec![1i32; n];
        let mut cur = 0usize;
        for _ in 0..4 {
            if let Some(c) = t.children(cur).next() {
                argmax[cur] = t.tokens()[c];
                cur = c;
            }
        }
        let add_ns = median_ns(|| build(black_box(&mut t), &cands));
        let build_and_finalize = median_ns(|| {
            build(&mut t, &cands);
            t.finalize(black_box(budget as u32)).unwrap();
        });
        let layouts_ns = median_ns(|| all_layouts(black_box(&t), &mut b));
        let greedy_ns = median_ns(|| {
            black_box(verify::greedy(black_box(&t), &argmax).unwrap());
        });
        let finalize_ns = build_and_finalize - add_ns;
        println!(
            "| {budget} | {} | {add_ns:.0} | {finalize_ns:.0} | {layouts_ns:.0} | {greedy_ns:.0} | {:.0} |",
            cands.len(),
            finalize_ns + layouts_ns + greedy_ns
        );
    }

    println!(
        "\nSampling verify, vocab {VOCAB}, budget 64 (the walk reads only the rows it visits):\n"
    );
    println!("| sampling | accepted (mean) | ns per verify | ns per visited row |");
    println!("|---|---:|---:|---:|");
    let cands = candidates(128, 64);
    let mut t = DraftTree::new(TreeParams {
        max_nodes: 512,
        max_depth: 16,
    })
    .unwrap();
    build(&mut t, &cands);
    t.finalize(64).unwrap();
    let rng = CounterRng::new(99);
    let mut logits: Vec<f32> = (0..t.len() * VOCAB)
        .map(|i| (rng.uniform(i as u64) * 8.0) as f32)
        .collect();
    // Make each node's first child likely so walks go a few levels deep.
    for node in 0..t.len() {
        if let Some(c) = t.children(node).next() {
            logits[node * VOCAB + t.tokens()[c] as usize] = 20.0;
        }
    }
    let configs = [
        ("T=1", Sampling::default()),
        (
            "T=0.7, top-k 50, top-p 0.9",
            Sampling {
                temperature: 0.7,
                top_k: 50,
                top_p: 0.9,
            },
        ),
        (
            "T=1, top-p 0.95",
            Sampling {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.95,
            },
        ),
    ];
    for (name, s) in configs {
        let mut seed = 0u64;
        let mut accepted = 0u64;
        let mut calls = 0u64;
        let ns = median_ns(|| {
            seed += 1;
            let a = verify::sample(black_box(&t), &logits, VOCAB, &s, seed).unwrap();
            accepted += a.n_accepted as u64;
            calls += 1;
        });
        let mean = accepted as f64 / calls as f64;
        println!(
            "| {name} | {mean:.2} | {ns:.0} | {:.0} |",
            ns / (mean + 1.0)
        );
    }
}

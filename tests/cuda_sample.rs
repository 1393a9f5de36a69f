#![cfg(feature = "cuda")]
//! GPU sampling acceptance (`kernels/accept_sample.cu`) against its CPU twin `verify::sample`.
//!
//! Random finalized trees (chains, wide, random, bushy; 1..200 nodes) in batches, random logits
//! (peaked, flat, heavy ties, -inf entries, wide), every combination of temperature, top-k and top-p,
//! child tokens often made likely so walks go deep. Integer outputs must match exactly; the only
//! tolerated mismatch is a sequence where, recomputed in f64, a coin (or the top-p target) lies within
//! 1e-5 relative of a decision boundary at the node where the two walks part. Those are printed,
//! counted and must stay at or below 1%. Outputs are poisoned before every launch.

mod cuda_common;

use specblock::cuda::sample::{SampleAccept, SampleOutput, TreeBuffers};
use specblock::cuda::{DeviceBuffer, Gpu, Stream};
use specblock::rng::CounterRng;
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify::{self, Acceptance, Sampling};

/// xorshift64* for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.unit()).sum::<f32>() * 1.732 - 3.464
    }
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    Chain,
    Wide,
    Random,
    Bushy,
}

#[derive(Clone, Copy, Debug)]
enum Dist {
    Peaked,
    Flat,
    Ties,
    NegInf,
    Wide,
}

fn build_tree(rng: &mut Rng, max_nodes: usize, max_depth: usize, vocab: usize) -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: max_nodes as u32,
        max_depth: max_depth as u32,
    })
    .unwrap();
    t.reset(rng.below(vocab) as i32).unwrap();
    let shape = [Shape::Chain, Shape::Wide, Shape::Random, Shape::Bushy][rng.below(4)];
    let n = 1 + rng.below(max_nodes);
    // Small token pools make siblings collide (dedup) and children share tokens across levels.
    let pool = if rng.below(2) == 0 {
        vocab
    } else {
        vocab.min(40)
    };
    for _ in 0..n {
        let len = t.len();
        let parent = match shape {
            Shape::Chain => len - 1,
            Shape::Wide => 0,
            Shape::Random => rng.below(len),
            Shape::Bushy => len - 1 - rng.below(len.min(8)),
        } as i32;
        let token = rng.below(pool) as i32;
        let lp = -3.0 * rng.unit();
        if t.add(parent, token, lp).is_err() {
            t.add(0, token, lp).unwrap(); // depth limit: hang it under the root instead
        }
    }
    let budget = t.len() as u32 - 1;
    t.finalize(budget).unwrap();
    t
}

/// Logits rows for every slot of one tree (`cap * vocab`); rows past the tree are NaN, which the
/// kernel must never read.
fn make_logits(rng: &mut Rng, t: &DraftTree, cap: usize, vocab: usize, likely: bool) -> Vec<f32> {
    let dist = [
        Dist::Peaked,
        Dist::Flat,
        Dist::Ties,
        Dist::NegInf,
        Dist::Wide,
    ][rng.below(5)];
    let mut out = vec![f32::NAN; cap * vocab];
    for v in 0..t.len() {
        let row = &mut out[v * vocab..(v + 1) * vocab];
        for x in row.iter_mut() {
            *x = match dist {
                Dist::Peaked => rng.normal() * 3.0,
                Dist::Flat => rng.unit() - 0.5,
                Dist::Ties => (rng.below(5) as f32) - 2.0,
                Dist::NegInf => {
                    if rng.below(10) == 0 {
                        f32::NEG_INFINITY
                    } else {
                        rng.normal() * 2.0
                    }
                }
                Dist::Wide => rng.normal() * 10.0,
            };
        }
        if let Dist::Peaked = dist {
            row[rng.below(vocab)] = 15.0;
        }
        if likely {
            let top = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut c = t.first_child()[v];
            while c >= 0 {
                let tok = t.tokens()[c as usize] as usize;
                row[tok] = match dist {
                    Dist::Ties => top, // ties with the row maximum
                    _ => top + 3.0 * rng.unit() - 1.0,
                };
                c = t.next_sibling()[c as usize];
            }
        }
    }
    out
}

fn random_sampling(rng: &mut Rng) -> Sampling {
    let temperature = [0.0, 0.7, 1.0, 1.3, 1.0, 0.7, 1e-40][rng.below(7)];
    Sampling {
        temperature,
        top_k: [0, 1, 20, 50][rng.below(4)],
        top_p: [1.0, 0.9, 0.5][rng.below(3)],
    }
}

/// One batch on the device: tree arrays, logits and the uploads.
struct Batch {
    len: DeviceBuffer<i32>,
    token: DeviceBuffer<i32>,
    first_child: DeviceBuffer<i32>,
    next_sibling: DeviceBuffer<i32>,
}

impl Batch {
    fn upload(gpu: &Gpu, trees: &[DraftTree], cap: usize) -> Batch {
        let mut len = Vec::new();
        let mut token = vec![-1i32; trees.len() * cap];
        let mut fc = vec![-1i32; trees.len() * cap];
        let mut ns = vec![-1i32; trees.len() * cap];
        for (b, t) in trees.iter().enumerate() {
            len.push(t.len() as i32);
            let base = b * cap;
            token[base..base + t.len()].copy_from_slice(t.tokens());
            fc[base..base + t.len()].copy_from_slice(t.first_child());
            ns[base..base + t.len()].copy_from_slice(t.next_sibling());
        }
        Batch {
            len: DeviceBuffer::from_slice(gpu, &len).unwrap(),
            token: DeviceBuffer::from_slice(gpu, &token).unwrap(),
            first_child: DeviceBuffer::from_slice(gpu, &fc).unwrap(),
            next_sibling: DeviceBuffer::from_slice(gpu, &ns).unwrap(),
        }
    }

    fn buffers(&self) -> TreeBuffers<'_> {
        TreeBuffers {
            len: &self.len,
            token: &self.token,
            first_child: &self.first_child,
            next_sibling: &self.next_sibling,
        }
    }
}

/// Runs the kernel (f32 or bf16 logits) on a batch and returns the outputs.
fn run_gpu(
    gpu: &Gpu,
    sa: &mut SampleAccept,
    trees: &[DraftTree],
    logits: &[f32],
    params: &[Sampling],
    seeds: &[u64],
    bf16: bool,
) -> Vec<SampleOutput> {
    let stream = Stream::new(gpu).unwrap();
    let batch = Batch::upload(gpu, trees, sa.cap());
    sa.set_params(params, seeds).unwrap();
    sa.poison_outputs().unwrap();
    if bf16 {
        let bits: Vec<u16> = logits.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
        let d = DeviceBuffer::from_slice(gpu, &bits).unwrap();
        sa.launch_bf16(gpu, &stream, &batch.buffers(), &d).unwrap();
        sa.read(&stream).unwrap()
    } else {
        let d = DeviceBuffer::from_slice(gpu, logits).unwrap();
        sa.launch_f32(gpu, &stream, &batch.buffers(), &d).unwrap();
        sa.read(&stream).unwrap()
    }
}

/// Rounds f32 logits to bf16 (round to nearest even), keeping NaN and infinities.
fn to_bf16_values(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|&v| {
            if v.is_nan() {
                return v;
            }
            let b = v.to_bits();
            let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) & 0xffff_0000;
            f32::from_bits(r)
        })
        .collect()
}

/// The smallest relative distance, at node `v`, between a decision quantity and its threshold,
/// recomputed in f64 with an exact sort: the accept coin against the children's running sums, the
/// residual target against the running non-child mass around the tokens either side chose, and the
/// top-p target against the tie-group masses next to the cut.
fn boundary_margin(
    t: &DraftTree,
    row: &[f32],
    s: &Sampling,
    seed: u64,
    v: usize,
    picked: &[i32],
) -> f64 {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / s.temperature;
    let vocab = row.len();
    let w = |l: f32, cut: f32| {
        if l >= cut {
            (((l - max) * inv_t) as f64).exp()
        } else {
            0.0
        }
    };
    let mut sorted: Vec<f32> = row.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut cut = f32::NEG_INFINITY;
    if s.top_k > 0 && (s.top_k as usize) < vocab {
        cut = sorted[s.top_k as usize - 1];
    }
    let mut margin = f64::INFINITY;
    let mut z: f64 = row.iter().map(|&l| w(l, cut)).sum();
    if s.top_p < 1.0 {
        let target = s.top_p as f64 * z;
        let mut above = 0.0;
        let mut i = 0;
        let mut pcut = cut;
        while i < sorted.len() && sorted[i] >= cut {
            let g = sorted[i];
            let mut mass = 0.0;
            while i < sorted.len() && sorted[i] == g {
                mass += w(sorted[i], cut);
                i += 1;
            }
            margin = margin.min((above + mass - target).abs() / target);
            if above + mass >= target {
                pcut = g;
                break;
            }
            above += mass;
        }
        if pcut > cut {
            cut = pcut;
            z = row.iter().map(|&l| w(l, cut)).sum();
        }
    }
    let rng = CounterRng::new(seed);
    let u = rng.uniform(2 * v as u64);
    let mut cdf = 0.0;
    let mut excluded = Vec::new();
    for c in t.children(v) {
        let tok = t.tokens()[c] as usize;
        excluded.push(tok);
        cdf += w(row[tok], cut) / z;
        if cdf > 0.0 {
            margin = margin.min((u - cdf).abs() / cdf);
        }
    }
    excluded.sort_unstable();
    excluded.dedup();
    let ex_mass: f64 = excluded.iter().map(|&tok| w(row[tok], cut)).sum();
    let rest = z - ex_mass;
    if rest > 0.0 {
        let target = rng.uniform(2 * v as u64 + 1) * rest;
        let mut acc = 0.0;
        for (j, &l) in row.iter().enumerate() {
            if excluded.binary_search(&j).is_ok() {
                continue;
            }
            let before = acc;
            acc += w(l, cut);
            if picked.contains(&(j as i32)) {
                margin = margin.min((target - before).abs() / rest);
                margin = margin.min((target - acc).abs() / rest);
            }
        }
    }
    margin
}

/// Compares one sequence; `Ok(None)` on an exact match, `Ok(Some(margin))` on a tolerated boundary
/// case, `Err` otherwise.
fn compare(
    t: &DraftTree,
    logits: &[f32],
    vocab: usize,
    (s, seed): (&Sampling, u64),
    cpu: &Result<Acceptance, specblock::Error>,
    gpu: &SampleOutput,
    max_depth: usize,
) -> Result<Option<f64>, String> {
    // Padding is always written.
    let check_pad = |raw: &[i32], from: usize, what: &str| -> Result<(), String> {
        if raw[from..].iter().any(|&x| x != -1) {
            return Err(format!("{what} padding not -1: {raw:?}"));
        }
        Ok(())
    };
    match cpu {
        Err(e) => {
            if gpu.status != e.status() as i32 || gpu.accept_len != 0 || gpu.bonus != -1 {
                return Err(format!("cpu error {e:?}, gpu {gpu:?}"));
            }
            check_pad(&gpu.raw_nodes, 0, "nodes")?;
            check_pad(&gpu.raw_tokens, 0, "tokens")?;
            check_pad(&gpu.raw_keep, 0, "keep")?;
            Ok(None)
        }
        Ok(acc) => {
            if gpu.status != 0 {
                return Err(format!("cpu ok {acc:?}, gpu status {}", gpu.status));
            }
            let n = gpu.accept_len as usize;
            if gpu.accept_len < 0 || n > max_depth {
                return Err(format!("bad accept_len {}", gpu.accept_len));
            }
            check_pad(&gpu.raw_nodes, n, "nodes")?;
            check_pad(&gpu.raw_tokens, n, "tokens")?;
            check_pad(&gpu.raw_keep, n + 1, "keep")?;
            if gpu.raw_keep[0] != 0 || gpu.raw_keep[1..=n] != gpu.nodes[..] {
                return Err(format!(
                    "keep list {:?} for nodes {:?}",
                    gpu.raw_keep, gpu.nodes
                ));
            }
            for (i, &node) in gpu.nodes.iter().enumerate() {
                if gpu.tokens[i] != t.tokens()[node as usize] {
                    return Err(format!("token of node {node} wrong"));
                }
            }
            if acc.nodes() == &gpu.nodes[..] && acc.bonus_token == gpu.bonus {
                return Ok(None);
            }
            let greedy = s.temperature == 0.0 || (1.0 / s.temperature).is_infinite();
            if greedy {
                return Err(format!("greedy mismatch: cpu {acc:?}, gpu {gpu:?}"));
            }
            // Where the walks part: the last common node.
            let common = acc
                .nodes()
                .iter()
                .zip(&gpu.nodes)
                .take_while(|(a, b)| a == b)
                .count();
            let v = if common == 0 {
                0
            } else {
                gpu.nodes[common - 1] as usize
            };
            let pick = |nodes: &[i32], bonus: i32| -> i32 {
                if nodes.len() > common { -1 } else { bonus }
            };
            let picked = [
                pick(acc.nodes(), acc.bonus_token),
                pick(&gpu.nodes, gpu.bonus),
            ];
            let row = &logits[v * vocab..(v + 1) * vocab];
            let m = boundary_margin(t, row, s, seed, v, &picked);
            if m <= 1e-5 {
                Ok(Some(m))
            } else {
                Err(format!(
                    "mismatch at node {v} (margin {m:e}): cpu nodes {:?} bonus {}, gpu nodes {:?} bonus {}",
                    acc.nodes(),
                    acc.bonus_token,
                    gpu.nodes,
                    gpu.bonus
                ))
            }
        }
    }
}

/// Draws `launches` random batches for one (batch, max_nodes, max_depth, vocab) configuration and
/// compares every sequence; returns (sequences, boundary cases, accepted nodes in total).
/// One parity configuration: launches of `batch` trees of up to `max_nodes` nodes.
#[derive(Clone, Copy)]
struct Config {
    launches: usize,
    batch: usize,
    max_nodes: usize,
    max_depth: usize,
    vocab: usize,
    bf16: bool,
}

fn parity_run(gpu: &Gpu, seed: u64, cfg: Config) -> (usize, usize, usize) {
    let Config {
        launches,
        batch,
        max_nodes,
        max_depth,
        vocab,
        bf16,
    } = cfg;
    let mut rng = Rng(seed | 1);
    let mut sa = SampleAccept::new(gpu, batch, max_nodes, max_depth, vocab).unwrap();
    let cap = sa.cap();
    let (mut seqs, mut boundary, mut accepted) = (0, 0, 0);
    let mut failures = Vec::new();
    for launch in 0..launches {
        let trees: Vec<DraftTree> = (0..batch)
            .map(|_| build_tree(&mut rng, max_nodes, max_depth, vocab))
            .collect();
        let mut logits = Vec::with_capacity(batch * cap * vocab);
        for t in &trees {
            let likely = rng.below(10) < 7;
            logits.extend(make_logits(&mut rng, t, cap, vocab, likely));
        }
        if bf16 {
            logits = to_bf16_values(&logits);
        }
        let params: Vec<Sampling> = (0..batch).map(|_| random_sampling(&mut rng)).collect();
        let seeds: Vec<u64> = (0..batch).map(|_| rng.next()).collect();
        let out = run_gpu(gpu, &mut sa, &trees, &logits, &params, &seeds, bf16);
        for b in 0..batch {
            let t = &trees[b];
            let rows = &logits[b * cap * vocab..(b * cap + t.len()) * vocab];
            let cpu = verify::sample(t, rows, vocab, &params[b], seeds[b]);
            if let Ok(a) = &cpu {
                accepted += a.n_accepted as usize;
            }
            seqs += 1;
            match compare(
                t,
                rows,
                vocab,
                (&params[b], seeds[b]),
                &cpu,
                &out[b],
                max_depth,
            ) {
                Ok(None) => {}
                Ok(Some(m)) => {
                    boundary += 1;
                    println!(
                        "boundary case (launch {launch}, seq {b}, {:?}, margin {m:e}): cpu {:?} gpu nodes {:?} bonus {}",
                        params[b], cpu, out[b].nodes, out[b].bonus
                    );
                }
                Err(e) => failures.push(format!(
                    "launch {launch} seq {b} (len {}, {:?}, seed {}): {e}",
                    t.len(),
                    params[b],
                    seeds[b]
                )),
            }
        }
    }
    for f in failures.iter().take(20) {
        println!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} of {seqs} sequences differ from the CPU",
        failures.len()
    );
    assert!(
        boundary * 100 <= seqs,
        "{boundary} boundary cases in {seqs} sequences (> 1%)"
    );
    println!(
        "vocab {vocab} batch {batch} max_nodes {max_nodes}{}: {seqs} sequences, {boundary} boundary cases, {accepted} accepted nodes",
        if bf16 { " bf16" } else { "" }
    );
    (seqs, boundary, accepted)
}

#[test]
fn sample_matches_cpu_f32() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let mut accepted = 0;
    let mut seqs = 0;
    for (i, &(launches, batch, max_nodes, max_depth, vocab)) in [
        (40, 6, 200, 12, 300),
        (30, 5, 200, 16, 2053),
        (20, 4, 120, 10, 5000),
        (6, 3, 24, 8, 50_000),
        (20, 8, 8, 4, 1),
        (20, 8, 12, 6, 3),
    ]
    .iter()
    .enumerate()
    {
        let cfg = Config {
            launches,
            batch,
            max_nodes,
            max_depth,
            vocab,
            bf16: false,
        };
        let (s, _, a) = parity_run(&gpu, 0x5eed_0000 + i as u64, cfg);
        seqs += s;
        accepted += a;
    }
    // The likely-children mode must actually exercise deep walks.
    assert!(
        accepted > seqs,
        "only {accepted} nodes accepted over {seqs} sequences"
    );
}

#[test]
fn sample_matches_cpu_bf16() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let cfg = |launches, batch, max_nodes, max_depth, vocab| Config {
        launches,
        batch,
        max_nodes,
        max_depth,
        vocab,
        bf16: true,
    };
    parity_run(&gpu, 0xbf16, cfg(20, 5, 150, 12, 3001));
    parity_run(&gpu, 0xbf17, cfg(4, 2, 20, 6, 32_768));
}

/// NaN / +inf / all -inf rows and bad parameters give the CPU's status for that sequence only; a NaN
/// in a row the walk never visits is harmless; a walk deeper than max_depth reports DepthLimit.
#[test]
fn errors_are_per_sequence() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let (batch, max_nodes, max_depth, vocab) = (8, 30, 8, 1000);
    let mut rng = Rng(0xe77);
    let mut sa = SampleAccept::new(&gpu, batch, max_nodes, max_depth, vocab).unwrap();
    let cap = sa.cap();
    for round in 0..6 {
        let trees: Vec<DraftTree> = (0..batch)
            .map(|_| build_tree(&mut rng, max_nodes, max_depth, vocab))
            .collect();
        let mut logits = Vec::new();
        for t in &trees {
            logits.extend(make_logits(&mut rng, t, cap, vocab, true));
        }
        let mut params: Vec<Sampling> = (0..batch).map(|_| random_sampling(&mut rng)).collect();
        let seeds: Vec<u64> = (0..batch).map(|_| rng.next()).collect();
        let at = |b: usize, row: usize, col: usize| (b * cap + row) * vocab + col;
        logits[at(0, 0, rng.below(vocab))] = f32::NAN; // row 0 is always visited
        logits[at(1, 0, rng.below(vocab))] = f32::INFINITY;
        for c in 0..vocab {
            logits[at(2, 0, c)] = f32::NEG_INFINITY;
        }
        params[3].top_p = 0.0;
        params[4].temperature = f32::NAN;
        params[5].top_k = -1;
        if trees[6].len() > 1 {
            // A NaN in the last row: only visited if the walk gets there.
            let last = trees[6].len() - 1;
            logits[at(6, last, rng.below(vocab))] = f32::NAN;
        }
        let bf16 = round % 2 == 1;
        let logits = if bf16 {
            to_bf16_values(&logits)
        } else {
            logits
        };
        let out = run_gpu(&gpu, &mut sa, &trees, &logits, &params, &seeds, bf16);
        for b in 0..batch {
            let t = &trees[b];
            let rows = &logits[b * cap * vocab..(b * cap + t.len()) * vocab];
            let cpu = verify::sample(t, rows, vocab, &params[b], seeds[b]);
            match b {
                0 | 1 => assert_eq!(out[b].status, specblock::Status::NonFinite as i32),
                2..=5 => assert_eq!(out[b].status, specblock::Status::InvalidArgument as i32),
                _ => {}
            }
            if let Err(e) = compare(
                t,
                rows,
                vocab,
                (&params[b], seeds[b]),
                &cpu,
                &out[b],
                max_depth,
            ) {
                panic!("round {round} seq {b}: {e}");
            }
        }
    }

    // Depth limit: chains of very likely children, a sampler that stops at depth 2.
    let mut sa = SampleAccept::new(&gpu, 4, 16, 2, 500).unwrap();
    let cap = sa.cap();
    let mut trees = Vec::new();
    let mut logits = Vec::new();
    for _ in 0..4 {
        let mut t = DraftTree::new(TreeParams {
            max_nodes: 16,
            max_depth: 16,
        })
        .unwrap();
        t.reset(1).unwrap();
        for i in 0..6 {
            t.add(i, 10 + i, -0.1).unwrap();
        }
        t.finalize(6).unwrap();
        let mut rows = vec![0.0f32; cap * 500];
        for v in 0..t.len() {
            if v + 1 < t.len() {
                rows[v * 500 + t.tokens()[v + 1] as usize] = 100.0;
            }
        }
        logits.extend(rows);
        trees.push(t);
    }
    let params = vec![Sampling::default(); 4];
    let seeds: Vec<u64> = (0..4).collect();
    let out = run_gpu(&gpu, &mut sa, &trees, &logits, &params, &seeds, false);
    for o in &out {
        assert_eq!(o.status, specblock::Status::DepthLimit as i32, "{o:?}");
    }
}

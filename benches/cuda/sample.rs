//! Sampling acceptance on the GPU (`SampleAccept`, one block per sequence) beside the CPU's
//! `verify::sample` on the same trees, logits, parameters and seeds (per batch: the sum over its
//! sequences), measured in the same run.
//!
//! Cases: vocab 49152 and 128256; a 64-node tree of depth 6 per sequence whose child tokens are likely
//! (the walk usually reaches the bottom); batch 1, 8, 32; (T=1) and (T=0.7, top-k 50, top-p 0.9).
//! Each GPU timing is one launch between CUDA events (median of 60 after 5 warm-ups). The visited rows
//! (about 7 per sequence) stay in L2 between repeats for small batches, as they would right after the
//! target's LM head wrote them.

use crate::report::{Report, Row, median};
use specblock::cuda::sample::{SampleAccept, TreeBuffers};
use specblock::cuda::{DeviceBuffer, Gpu, Stream, Timer};
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify::{self, Sampling};
use std::time::Instant;

const NODES: usize = 64;
const DEPTH: usize = 6;
const BATCHES: [usize; 3] = [1, 8, 32];
const GPU_REPS: usize = 60;
const CPU_REPS: usize = 11;

/// xorshift64 for bench data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A 64-node tree of depth 6: about 11 nodes per level, each under a random node of the level above.
fn make_tree(rng: &mut Rng, vocab: usize) -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: NODES as u32,
        max_depth: DEPTH as u32,
    })
    .expect("tree");
    t.reset(rng.below(vocab) as i32).expect("reset");
    let mut prev: Vec<i32> = vec![0];
    let mut added = 0;
    for level in 0..DEPTH {
        let n = if level + 1 == DEPTH {
            NODES - added
        } else {
            NODES / DEPTH
        };
        let mut cur = Vec::new();
        for i in 0..n {
            let parent = prev[rng.below(prev.len())];
            // Decreasing log-probabilities keep the insertion order through finalize.
            let lp = -0.01 * (added + i) as f32;
            cur.push(t.add(parent, rng.below(vocab) as i32, lp).expect("add"));
        }
        added += n;
        prev = cur;
    }
    t.finalize(NODES as u32).expect("finalize");
    t
}

/// Logits for one tree (`cap * vocab`): uniform noise in [-4, 4), the first child of every node at 16
/// and the other children at 14, so the walk usually goes deep.
fn make_logits(rng: &mut Rng, t: &DraftTree, cap: usize, vocab: usize, out: &mut Vec<f32>) {
    let start = out.len();
    out.resize(start + cap * vocab, 0.0);
    let rows = &mut out[start..];
    for v in 0..t.len() {
        let row = &mut rows[v * vocab..(v + 1) * vocab];
        for x in row.iter_mut() {
            *x = (rng.next() >> 40) as f32 * (8.0 / (1u64 << 24) as f32) - 4.0;
        }
        let mut c = t.first_child()[v];
        let mut boost = 16.0;
        while c >= 0 {
            row[t.tokens()[c as usize] as usize] = boost;
            boost = 14.0;
            c = t.next_sibling()[c as usize];
        }
    }
}

/// Runs the sampling-acceptance cases.
pub fn run(gpu: &Gpu, report: &mut Report) {
    if let Err(e) = run_inner(gpu, report) {
        eprintln!("sample bench failed: {e}");
    }
}

fn run_inner(gpu: &Gpu, report: &mut Report) -> Result<(), specblock::Error> {
    let stream = Stream::new(gpu)?;
    let timer = Timer::new(gpu)?;
    let cap = NODES + 1;
    let max_batch = *BATCHES.iter().max().unwrap_or(&1);
    for vocab in [49_152usize, 128_256] {
        let mut rng = Rng(0x5a_3b1e ^ vocab as u64);
        let trees: Vec<DraftTree> = (0..max_batch).map(|_| make_tree(&mut rng, vocab)).collect();
        let mut logits = Vec::with_capacity(max_batch * cap * vocab);
        for t in &trees {
            make_logits(&mut rng, t, cap, vocab, &mut logits);
        }
        let mut len = Vec::new();
        let mut token = vec![-1i32; max_batch * cap];
        let mut fc = vec![-1i32; max_batch * cap];
        let mut ns = vec![-1i32; max_batch * cap];
        for (b, t) in trees.iter().enumerate() {
            len.push(t.len() as i32);
            let base = b * cap;
            token[base..base + t.len()].copy_from_slice(t.tokens());
            fc[base..base + t.len()].copy_from_slice(t.first_child());
            ns[base..base + t.len()].copy_from_slice(t.next_sibling());
        }
        let d_len = DeviceBuffer::from_slice(gpu, &len)?;
        let d_token = DeviceBuffer::from_slice(gpu, &token)?;
        let d_fc = DeviceBuffer::from_slice(gpu, &fc)?;
        let d_ns = DeviceBuffer::from_slice(gpu, &ns)?;
        let d_logits = DeviceBuffer::from_slice(gpu, &logits)?;
        // The uploads ran on the legacy stream, which the non-blocking bench stream does not wait for.
        // SAFETY: the NULL stream is valid in the current context and is not destroyed.
        unsafe { Stream::borrowed(std::ptr::null_mut()) }.synchronize()?;
        let tree = TreeBuffers {
            len: &d_len,
            token: &d_token,
            first_child: &d_fc,
            next_sibling: &d_ns,
        };
        let seeds: Vec<u64> = (0..max_batch as u64).map(|s| s * 7919 + 1).collect();
        for (label, sampling) in [
            ("T=1", Sampling::default()),
            (
                "T=0.7 k=50 p=0.9",
                Sampling {
                    temperature: 0.7,
                    top_k: 50,
                    top_p: 0.9,
                },
            ),
        ] {
            for &batch in &BATCHES {
                let mut sa = SampleAccept::new(gpu, batch, NODES, DEPTH, vocab)?;
                sa.set_params(&vec![sampling; batch], &seeds[..batch])?;
                // The tree and logits buffers hold max_batch sequences; the first `batch` are used.
                for _ in 0..5 {
                    sa.launch_f32(gpu, &stream, &tree, &d_logits)?;
                }
                stream.synchronize()?;
                let mut gpu_us = Vec::with_capacity(GPU_REPS);
                for _ in 0..GPU_REPS {
                    timer.start(&stream)?;
                    sa.launch_f32(gpu, &stream, &tree, &d_logits)?;
                    gpu_us.push(timer.stop_ms(&stream)? as f64 * 1e3);
                }
                let out = sa.read(&stream)?;
                let mut accepted = 0usize;
                let mut mismatches = 0usize;
                let mut cpu_us = Vec::with_capacity(CPU_REPS);
                for rep in 0..CPU_REPS {
                    let t0 = Instant::now();
                    for b in 0..batch {
                        let rows = &logits[b * cap * vocab..(b * cap + trees[b].len()) * vocab];
                        let acc = verify::sample(&trees[b], rows, vocab, &sampling, seeds[b])?;
                        if rep == 0 {
                            accepted += acc.n_accepted as usize;
                            mismatches += usize::from(
                                acc.nodes() != &out[b].nodes[..] || acc.bonus_token != out[b].bonus,
                            );
                        }
                    }
                    cpu_us.push(t0.elapsed().as_secs_f64() * 1e6);
                }
                report.row(Row {
                    group: "sampling acceptance",
                    case: format!("vocab {vocab} {label} batch {batch}"),
                    median_us: median(&mut gpu_us),
                    baseline: Some(("CPU verify::sample (sum over batch)", median(&mut cpu_us))),
                    note: format!(
                        "64-node depth-6 trees, mean accepted {:.2}, {mismatches} differ from CPU; \
                         SGLang publishes 17-37 us at batch 1 for its tree sampling verify",
                        accepted as f64 / batch as f64
                    ),
                });
            }
        }
    }
    Ok(())
}

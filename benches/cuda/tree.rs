//! Finalize + every layout + greedy acceptance (argmax over bf16 logits, vocab 49152) end to end on
//! the GPU, as plain stream launches and as a CUDA graph replay, beside the CPU library doing finalize +
//! layouts + greedy for the same trees (argmax excluded from the CPU side: it is given the argmax ids).

use crate::report::{Report, Row, median};
use specblock::cuda::greedy::{GpuGreedy, LogitsDtype};
use specblock::cuda::layout::GpuLayouts;
use specblock::cuda::tree::{GpuTree, HostRawTrees, TreeShape};
use specblock::cuda::{DeviceBuffer, Gpu, Graph, Stream, Timer};
use specblock::layout;
use specblock::tree::{DraftTree, NodeMeta, TreeParams};
use specblock::verify;
use std::time::Instant;

const VOCAB: usize = 49152;
const PREFIX: u32 = 500;
const REPEATS: usize = 60;
const INNER: usize = 10;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

type Node = (i32, i32, f32, NodeMeta);

/// A drafter-like tree: `n` candidates, up to depth 8, a few duplicate tokens under one parent.
fn drafter_tree(rng: &mut Rng, n: usize) -> Vec<Node> {
    let mut depth = vec![0usize];
    let mut nodes = Vec::with_capacity(n);
    for id in 1..=n {
        let mut p = id - 1 - rng.below(id.min(8) as u64) as usize;
        if depth[p] >= 8 {
            p = 0;
        }
        let tok = rng.below(64) as i32 * 700 + rng.below(3) as i32;
        let lp = -((rng.below(4000) as f32) / 1000.0);
        nodes.push((p as i32, tok, lp, NodeMeta::default()));
        depth.push(depth[p] + 1);
    }
    nodes
}

/// The CPU library's whole step for one tree (build, finalize, every layout, greedy from argmax).
struct CpuWork {
    tree: DraftTree,
    buf_i: Vec<i32>,
    buf_u8: Vec<u8>,
    buf_f: Vec<f32>,
    buf_u32: Vec<u32>,
    seq: (Vec<i32>, Vec<i32>),
}

impl CpuWork {
    fn new(max_nodes: usize) -> Self {
        let cap = max_nodes + 1;
        CpuWork {
            tree: DraftTree::new(TreeParams {
                max_nodes: max_nodes as u32,
                max_depth: 8,
            })
            .unwrap(),
            buf_i: vec![0; cap * 9],
            buf_u8: vec![0; cap * (cap + PREFIX as usize)],
            buf_f: vec![0.0; cap * cap],
            buf_u32: vec![0; cap * (cap + PREFIX as usize).div_ceil(32)],
            seq: (vec![0; cap], vec![0; cap]),
        }
    }

    fn step(&mut self, root: i32, nodes: &[Node], budget: u32, argmax: &[i32]) -> u32 {
        let t = &mut self.tree;
        t.reset(root).unwrap();
        for &(p, tok, lp, m) in nodes {
            t.add_with_meta(p, tok, lp, m).unwrap();
        }
        t.finalize(budget).unwrap();
        let t = &self.tree;
        layout::positions(t, PREFIX, &mut self.buf_i).unwrap();
        layout::mask_dense(t, &mut self.buf_u8).unwrap();
        layout::mask_bias(t, &mut self.buf_f).unwrap();
        layout::mask_bits(t, 0, &mut self.buf_u32).unwrap();
        layout::mask_bits(t, PREFIX, &mut self.buf_u32).unwrap();
        layout::mask_flat_bits(t, PREFIX, &mut self.buf_u8).unwrap();
        layout::retrieve_paths(t, 9, &mut self.buf_i).unwrap();
        let (f, c) = &mut self.seq;
        layout::seq_ranges(t, 0, 1 << 20, f, c).unwrap();
        verify::greedy(t, &argmax[..t.len()]).unwrap().n_accepted
    }
}

fn case(
    gpu: &Gpu,
    report: &mut Report,
    nodes: usize,
    batch: usize,
) -> Result<(), specblock::Error> {
    let max_nodes = nodes + nodes / 2; // the drafter proposes more than the budget keeps
    let shape = TreeShape {
        batch,
        max_nodes,
        max_depth: 8,
    };
    let cap = shape.cap();
    let mut rng = Rng(0x5EED ^ (nodes * 1000 + batch) as u64);
    let mut raw = HostRawTrees::new(shape);
    let mut trees = Vec::new();
    for b in 0..batch {
        let t = drafter_tree(&mut rng, max_nodes);
        raw.set(b, 11, &t, nodes as i32)?;
        trees.push(t);
    }
    let stream = Stream::new(gpu)?;
    let mut gt = GpuTree::new(gpu, batch, max_nodes, 8)?;
    let mut lay = GpuLayouts::new(gpu, batch, max_nodes, 8, PREFIX)?;
    let gg = GpuGreedy::new(gpu, batch, max_nodes, 8)?;
    gt.upload(&raw)?;
    lay.set_prefix_len(&vec![PREFIX; batch])?;
    // Logits: random bf16 in [-4, 4); rotate copies so small batches do not run from L2.
    let per = batch * cap * VOCAB;
    let copies = (64 << 20) / (per * 2) + 1;
    let copies = copies.min(8);
    let mut bufs = Vec::new();
    for c in 0..copies {
        let host: Vec<u16> = (0..per)
            .map(|i| {
                let v = ((i as u64 * 2654435761 + c as u64 * 97) % 128) as f32 / 16.0 - 4.0;
                (v.to_bits() >> 16) as u16
            })
            .collect();
        bufs.push(DeviceBuffer::from_slice(gpu, &host)?);
    }
    let step = |s: &Stream, logits: &DeviceBuffer<u16>| -> Result<(), specblock::Error> {
        gt.finalize(s)?;
        lay.layouts(s, &gt, 0, 1 << 20)?;
        // SAFETY: the buffer holds batch * cap * VOCAB bf16 values.
        unsafe { gg.greedy(s, &gt, logits.ptr(), VOCAB, LogitsDtype::Bf16) }
    };
    // Warm up, then plain launches.
    for c in 0..copies * 4 {
        step(&stream, &bufs[c % copies])?;
    }
    stream.synchronize()?;
    let timer = Timer::new(gpu)?;
    let mut plain = Vec::new();
    for r in 0..REPEATS {
        timer.start(&stream)?;
        for k in 0..INNER {
            step(&stream, &bufs[(r * INNER + k) % copies])?;
        }
        plain.push(timer.stop_ms(&stream)? as f64 * 1000.0 / INNER as f64);
    }
    let graphs: Vec<Graph> = bufs
        .iter()
        .map(|b| Graph::capture(&stream, |s| step(s, b)))
        .collect::<Result<_, _>>()?;
    for g in &graphs {
        g.launch(&stream)?;
    }
    stream.synchronize()?;
    let mut replay = Vec::new();
    for r in 0..REPEATS {
        timer.start(&stream)?;
        for k in 0..INNER {
            graphs[(r * INNER + k) % copies].launch(&stream)?;
        }
        replay.push(timer.stop_ms(&stream)? as f64 * 1000.0 / INNER as f64);
    }
    // Each stage alone (plain launches), to see where the time goes.
    let mut stages = [Vec::new(), Vec::new(), Vec::new()];
    for r in 0..REPEATS {
        for (k, times) in stages.iter_mut().enumerate() {
            timer.start(&stream)?;
            for j in 0..INNER {
                match k {
                    0 => gt.finalize(&stream)?,
                    1 => lay.layouts(&stream, &gt, 0, 1 << 20)?,
                    // SAFETY: the buffer holds batch * cap * VOCAB bf16 values.
                    _ => unsafe {
                        let b = &bufs[(r * INNER + j) % copies];
                        gg.greedy(&stream, &gt, b.ptr(), VOCAB, LogitsDtype::Bf16)?
                    },
                }
            }
            times.push(timer.stop_ms(&stream)? as f64 * 1000.0 / INNER as f64);
        }
    }
    let stage_note = format!(
        "stages alone: finalize {:.2} us, layouts {:.2} us, argmax+walk {:.2} us",
        median(&mut stages[0]),
        median(&mut stages[1]),
        median(&mut stages[2])
    );
    // Sanity: every tree finalized and accepted without error.
    let accepted = gg.download()?;
    assert!(
        accepted.iter().all(|a| a.status == 0),
        "bench acceptance failed"
    );

    // CPU baseline: argmax ids given (not timed), the same trees.
    let argmax: Vec<i32> = (0..cap).map(|i| (i as i32 * 700) % 44800).collect();
    let mut work = CpuWork::new(max_nodes);
    let mut cpu = Vec::new();
    let mut sink = 0u32;
    for _ in 0..REPEATS {
        let t0 = Instant::now();
        for t in &trees {
            sink = sink.wrapping_add(work.step(11, t, nodes as u32, &argmax));
        }
        cpu.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    let cpu_us = median(&mut cpu);
    std::hint::black_box(sink);
    let goal = if batch == 1 { "goal <= 10 us; " } else { "" };
    let case_name = |how: &str| format!("{nodes} nodes, batch {batch}, {how}");
    report.row(Row {
        group: "finalize+layouts+greedy",
        case: case_name("plain launches"),
        median_us: median(&mut plain),
        baseline: Some(("CPU library, argmax excluded", cpu_us)),
        note: format!("{goal}4 launches, bf16 vocab {VOCAB}, prefix {PREFIX}; {stage_note}"),
    });
    report.row(Row {
        group: "finalize+layouts+greedy",
        case: case_name("graph replay"),
        median_us: median(&mut replay),
        baseline: Some(("CPU library, argmax excluded", cpu_us)),
        note: format!("{goal}one graph of 4 kernels"),
    });
    Ok(())
}

/// Runs this family.
pub fn run(gpu: &Gpu, report: &mut Report) {
    for nodes in [64, 90] {
        for batch in [1, 8, 32] {
            if let Err(e) = case(gpu, report, nodes, batch) {
                eprintln!("tree bench {nodes} nodes batch {batch} failed: {e}");
            }
        }
    }
}

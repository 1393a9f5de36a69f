//! GPU tree finalize and layouts against the CPU library: random trees (duplicates under one parent at
//! several depths, tied and positive log-probabilities, -0.0, -inf, every budget regime, sizes 1..1024,
//! mixed sizes in a batch), poisoned outputs, exact comparison; invalid trees give the CPU's status and
//! leave the other trees of the batch intact.
#![cfg(feature = "cuda")]

mod cuda_common;

use specblock::cuda::layout::GpuLayouts;
use specblock::cuda::tree::{GpuTree, HostFinalTree, HostRawTrees, TreeShape};
use specblock::cuda::{Gpu, Stream};
use specblock::layout;
use specblock::tree::{DraftTree, NodeMeta, TreeParams};
use specblock::{Error, Status};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

type Node = (i32, i32, f32, NodeMeta);

/// A random valid tree of `n_add` nodes: small token alphabets so siblings collide, parents mostly
/// recent (deep chains) or anywhere, log-probabilities from a mix of ties, zeros, -0.0, positives,
/// subnormals and -inf.
fn random_tree(rng: &mut Rng, n_add: usize, max_depth: usize, alphabet: u64) -> (i32, Vec<Node>) {
    let root = rng.below(50_000) as i32;
    let mut depth = vec![0usize];
    let mut nodes = Vec::with_capacity(n_add);
    for id in 1..=n_add {
        let mut p = match rng.below(4) {
            0 => 0,
            1 => rng.below(id as u64) as usize,
            _ => id - 1 - rng.below(id.min(6) as u64) as usize,
        };
        if depth[p] >= max_depth {
            p = 0;
        }
        let token = rng.below(alphabet) as i32;
        let lp = match rng.below(12) {
            0 => -0.5,
            1 => -1.0,
            2 => -0.0,
            3 => 0.0,
            4 => 0.25, // positive: treated as 0
            5 => -1e-40,
            6 if rng.below(8) == 0 => f32::NEG_INFINITY,
            _ => -rng.unit() * 4.0,
        };
        let m = rng.next() as u32;
        let meta = NodeMeta {
            block: m as u8,
            slot: (m >> 8) as u8,
            rank_class: (m >> 16) as u8,
            user: (m >> 24) as u8,
        };
        nodes.push((p as i32, token, lp, meta));
        depth.push(depth[p] + 1);
    }
    (root, nodes)
}

/// The CPU library on the same input: the finalized tree, or the status of the first failing call.
/// `len_override` > nodes + 1 simulates a drafter that claims more nodes than fit.
fn cpu_finalize(
    shape: &TreeShape,
    root: i32,
    nodes: &[Node],
    budget: i32,
    extra_nodes: bool,
) -> Result<DraftTree, Status> {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: shape.max_nodes as u32,
        max_depth: shape.max_depth as u32,
    })
    .map_err(|e| e.status())?;
    t.reset(root).map_err(|e| e.status())?;
    for &(p, tok, lp, m) in nodes {
        t.add_with_meta(p, tok, lp, m).map_err(|e| e.status())?;
    }
    if extra_nodes {
        // One more node than fits: the CPU's Capacity (the GPU sees len > cap).
        t.add(0, 1, -1.0).map_err(|e| e.status())?;
    }
    t.finalize(budget as u32).map_err(|e| e.status())?;
    Ok(t)
}

fn assert_tree_eq(gpu: &HostFinalTree, cpu: &HostFinalTree, what: &str) {
    assert_eq!(gpu.status, 0, "{what}: status");
    assert_eq!(gpu.token, cpu.token, "{what}: token");
    assert_eq!(gpu.parent, cpu.parent, "{what}: parent");
    assert_eq!(gpu.depth, cpu.depth, "{what}: depth");
    assert_eq!(gpu.source, cpu.source, "{what}: source");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&gpu.cum), bits(&cpu.cum), "{what}: cum");
    assert_eq!(bits(&gpu.logprob), bits(&cpu.logprob), "{what}: logprob");
    assert_eq!(gpu.meta, cpu.meta, "{what}: meta");
    assert_eq!(gpu.first_child, cpu.first_child, "{what}: first_child");
    assert_eq!(gpu.next_sibling, cpu.next_sibling, "{what}: next_sibling");
    assert_eq!(gpu.num_leaves, cpu.num_leaves, "{what}: num_leaves");
    assert_eq!(gpu.deepest, cpu.deepest, "{what}: deepest");
}

/// Every CPU layout of `t` for `prefix`, compared with the GPU's.
#[allow(clippy::too_many_arguments)]
fn check_layouts(
    lay: &GpuLayouts<'_>,
    b: usize,
    t: &DraftTree,
    prefix: u32,
    first_seq_id: i32,
    max_seq: u32,
    what: &str,
) {
    let n = t.len();
    let g = lay.download(b, n, prefix, t.num_leaves()).unwrap();
    assert_eq!(g.status, 0, "{what}: layout status");
    let mut pos = vec![0; n];
    layout::positions(t, prefix, &mut pos).unwrap();
    assert_eq!(g.positions, pos, "{what}: positions");
    let mut dense = vec![0u8; n * n];
    layout::mask_dense(t, &mut dense).unwrap();
    assert_eq!(g.dense, dense, "{what}: dense");
    let mut bias = vec![0f32; n * n];
    layout::mask_bias(t, &mut bias).unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&g.bias), bits(&bias), "{what}: bias");
    let mut b0 = vec![0u32; n * layout::mask_words_per_row(n, 0)];
    layout::mask_bits(t, 0, &mut b0).unwrap();
    assert_eq!(g.bits, b0, "{what}: bits");
    let mut bp = vec![0u32; n * layout::mask_words_per_row(n, prefix)];
    layout::mask_bits(t, prefix, &mut bp).unwrap();
    assert_eq!(g.bits_prefix, bp, "{what}: bits with prefix {prefix}");
    let mut flat = vec![0u8; layout::mask_flat_bytes(n, prefix)];
    layout::mask_flat_bits(t, prefix, &mut flat).unwrap();
    assert_eq!(g.flat, flat, "{what}: flat bits with prefix {prefix}");
    let row_width = lay.shape().row_width;
    let mut paths = vec![0; t.num_leaves() * row_width];
    let rows = layout::retrieve_paths(t, row_width, &mut paths).unwrap();
    assert_eq!(rows, t.num_leaves());
    assert_eq!(g.paths, paths, "{what}: retrieve paths");
    let (mut first, mut count) = (vec![0; n], vec![0; n]);
    layout::seq_ranges(t, first_seq_id, max_seq, &mut first, &mut count).unwrap();
    assert_eq!(g.seq_first, first, "{what}: seq first");
    assert_eq!(g.seq_count, count, "{what}: seq count");
}

/// Random batches of valid trees: finalize and every layout equal the CPU's.
fn run_valid(gpu: &Gpu, stream: &Stream, shape: TreeShape, alphabet: u64, seed: u64, reps: usize) {
    let max_prefix = 100;
    let mut rng = Rng::new(seed);
    let mut gt = GpuTree::new(gpu, shape.batch, shape.max_nodes, shape.max_depth).unwrap();
    let mut lay = GpuLayouts::new(
        gpu,
        shape.batch,
        shape.max_nodes,
        shape.max_depth,
        max_prefix,
    )
    .unwrap();
    for rep in 0..reps {
        let mut raw = HostRawTrees::new(shape);
        let mut cpu = Vec::new();
        for b in 0..shape.batch {
            let n_add = match rng.below(4) {
                0 => shape.max_nodes,
                1 => rng.below(4).min(shape.max_nodes as u64) as usize,
                _ => rng.below(shape.max_nodes as u64 + 1) as usize,
            };
            let (root, nodes) = random_tree(&mut rng, n_add, shape.max_depth, alphabet);
            // Budgets below, at, above the live count, 0 and max_nodes.
            let budget = match rng.below(5) {
                0 => 0,
                1 => shape.max_nodes as i32,
                2 => n_add as i32,
                _ => rng.below(shape.max_nodes as u64 + 1) as i32,
            };
            raw.set(b, root, &nodes, budget).unwrap();
            let t = cpu_finalize(&shape, root, &nodes, budget, false).expect("valid tree");
            cpu.push(t);
        }
        gt.upload(&raw).unwrap();
        gt.poison_outputs().unwrap();
        lay.poison_outputs().unwrap();
        let prefixes: Vec<u32> = (0..shape.batch)
            .map(|_| [0, 1, 31, 32, 33, 64, max_prefix][rng.below(7) as usize])
            .collect();
        lay.set_prefix_len(&prefixes).unwrap();
        let first_seq_id = rng.below(5) as i32;
        let max_seq = 1 << 20;
        gt.finalize(stream).unwrap();
        lay.layouts(stream, &gt, first_seq_id, max_seq).unwrap();
        stream.synchronize().unwrap();
        let got = gt.download().unwrap();
        for (b, t) in cpu.iter().enumerate() {
            let what = format!("{shape:?} seed {seed} rep {rep} tree {b} (n {})", t.len());
            assert_tree_eq(&got[b], &HostFinalTree::from_cpu(t), &what);
            check_layouts(&lay, b, t, prefixes[b], first_seq_id, max_seq, &what);
        }
    }
}

#[test]
fn no_device_is_a_skip_or_the_api_works() {
    match Gpu::open(0) {
        Ok(gpu) => {
            // Above the GPU limit: Capacity, not a launch failure.
            let e = GpuTree::new(&gpu, 1, 1025, 8).unwrap_err();
            assert_eq!(e.status(), Status::Capacity, "{e}");
            let e = GpuTree::new(&gpu, 0, 8, 8).unwrap_err();
            assert_eq!(e.status(), Status::InvalidArgument, "{e}");
        }
        Err(e) => {
            assert!(matches!(e, Error::NoDevice(_)), "{e}");
            if std::env::var("SPECBLOCK_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("SPECBLOCK_REQUIRE_GPU=1 but no GPU: {e}");
            }
            // The shared helper prints the skip message and yields no device.
            assert!(cuda_common::gpu().is_none());
        }
    }
}

#[test]
fn small_trees_match_the_cpu() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    for (k, (max_nodes, max_depth, batch, alphabet)) in [
        (1, 1, 1, 2),
        (1, 4, 3, 1),
        (7, 3, 5, 2),
        (8, 8, 4, 3),
        (16, 2, 6, 2),
        (31, 5, 3, 4),
        (33, 6, 3, 3),
    ]
    .into_iter()
    .enumerate()
    {
        let shape = TreeShape {
            batch,
            max_nodes,
            max_depth,
        };
        for seed in 0..3 {
            run_valid(&gpu, &stream, shape, alphabet, 100 * k as u64 + seed, 6);
        }
    }
}

#[test]
fn drafter_sized_trees_match_the_cpu() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    for (k, (max_nodes, max_depth, batch, alphabet)) in [
        (64, 8, 8, 4),
        (90, 8, 32, 3),
        (90, 16, 5, 1000),
        (128, 16, 4, 2),
        (200, 12, 3, 5),
    ]
    .into_iter()
    .enumerate()
    {
        let shape = TreeShape {
            batch,
            max_nodes,
            max_depth,
        };
        for seed in 0..3 {
            run_valid(
                &gpu,
                &stream,
                shape,
                alphabet,
                7000 + 10 * k as u64 + seed,
                3,
            );
        }
    }
}

#[test]
fn large_trees_match_the_cpu() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    for (k, (max_nodes, max_depth, batch, alphabet)) in [
        (1024, 64, 2, 3),
        (1024, 8, 2, 2),
        (1024, 3, 2, 50_000),
        (1000, 20, 3, 6),
        (513, 64, 2, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let shape = TreeShape {
            batch,
            max_nodes,
            max_depth,
        };
        run_valid(&gpu, &stream, shape, alphabet, 9000 + k as u64, 2);
    }
}

/// The ways a raw tree can be malformed, each applied to a valid random tree.
#[derive(Clone, Copy, Debug)]
enum Fault {
    ParentSelf,
    ParentNegative,
    ParentAhead,
    NegativeToken,
    NanLogprob,
    PosInfLogprob,
    RootToken,
    TooDeep,
    BudgetAbove,
    BudgetNegative,
    TooManyNodes,
    Empty,
}

const FAULTS: [Fault; 12] = [
    Fault::ParentSelf,
    Fault::ParentNegative,
    Fault::ParentAhead,
    Fault::NegativeToken,
    Fault::NanLogprob,
    Fault::PosInfLogprob,
    Fault::RootToken,
    Fault::TooDeep,
    Fault::BudgetAbove,
    Fault::BudgetNegative,
    Fault::TooManyNodes,
    Fault::Empty,
];

#[test]
fn invalid_trees_give_the_cpu_status_and_spare_the_others() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    let shape = TreeShape {
        batch: 6,
        max_nodes: 40,
        max_depth: 6,
    };
    let mut gt = GpuTree::new(&gpu, shape.batch, shape.max_nodes, shape.max_depth).unwrap();
    let mut lay = GpuLayouts::new(&gpu, shape.batch, shape.max_nodes, shape.max_depth, 8).unwrap();
    let mut rng = Rng::new(4242);
    for rep in 0..60 {
        let fault = FAULTS[rep % FAULTS.len()];
        let mut raw = HostRawTrees::new(shape);
        let mut expect: Vec<Result<DraftTree, Status>> = Vec::new();
        for b in 0..shape.batch {
            let bad = b % 2 == rep % 2;
            let n_add = if bad && matches!(fault, Fault::TooManyNodes) {
                shape.max_nodes
            } else {
                1 + rng.below(shape.max_nodes as u64) as usize
            };
            let (mut root, mut nodes) = random_tree(&mut rng, n_add, shape.max_depth, 3);
            let mut budget = rng.below(shape.max_nodes as u64 + 1) as i32;
            let mut extra = false;
            let mut empty = false;
            if bad {
                // One or two faults; the CPU reports whichever comes first.
                for _ in 0..1 + rng.below(2) {
                    let k = rng.below(nodes.len() as u64) as usize;
                    let id = k as i32 + 1;
                    match fault {
                        Fault::ParentSelf => nodes[k].0 = id,
                        Fault::ParentNegative => nodes[k].0 = -1 - rng.below(3) as i32,
                        Fault::ParentAhead => nodes[k].0 = id + 1 + rng.below(5) as i32,
                        Fault::NegativeToken => nodes[k].1 = -1 - rng.below(100) as i32,
                        Fault::NanLogprob => nodes[k].2 = f32::NAN,
                        Fault::PosInfLogprob => nodes[k].2 = f32::INFINITY,
                        Fault::RootToken => root = -7,
                        Fault::TooDeep => {
                            // A chain from node k down past max_depth.
                            let mut p = id;
                            nodes.truncate(k + 1);
                            for _ in 0..shape.max_depth + 1 {
                                if nodes.len() >= shape.max_nodes {
                                    break;
                                }
                                nodes.push((p, 1, -0.1, NodeMeta::default()));
                                p = nodes.len() as i32;
                            }
                        }
                        Fault::BudgetAbove => budget = shape.max_nodes as i32 + 1,
                        Fault::BudgetNegative => budget = -1,
                        Fault::TooManyNodes => extra = true,
                        Fault::Empty => empty = true,
                    }
                }
            }
            raw.set(b, root, &nodes, budget).unwrap();
            if extra {
                raw.len[b] = shape.cap() as i32 + 1 + rng.below(3) as i32;
            }
            if empty {
                raw.len[b] = 0;
                expect.push(Err(Status::InvalidState));
            } else {
                expect.push(cpu_finalize(&shape, root, &nodes, budget, extra));
            }
        }
        gt.upload(&raw).unwrap();
        gt.poison_outputs().unwrap();
        lay.poison_outputs().unwrap();
        lay.set_prefix_len(&vec![3; shape.batch]).unwrap();
        gt.finalize(&stream).unwrap();
        lay.layouts(&stream, &gt, 0, 1 << 20).unwrap();
        stream.synchronize().unwrap();
        let got = gt.download().unwrap();
        let lens = gt.download_len().unwrap();
        for (b, e) in expect.iter().enumerate() {
            let what = format!("rep {rep} fault {fault:?} tree {b}");
            match e {
                Ok(t) => {
                    assert_tree_eq(&got[b], &HostFinalTree::from_cpu(t), &what);
                    check_layouts(&lay, b, t, 3, 0, 1 << 20, &what);
                }
                Err(s) => {
                    assert_eq!(got[b].status, *s as i32, "{what}: status");
                    assert_eq!(lens[b], 0, "{what}: failed tree len");
                    let l = lay.download(b, 0, 0, 0).unwrap();
                    assert_eq!(l.status, Status::InvalidState as i32, "{what}: layouts");
                }
            }
        }
    }
}

#[test]
fn layout_limits_give_the_cpu_status() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    let shape = TreeShape {
        batch: 4,
        max_nodes: 30,
        max_depth: 5,
    };
    let mut gt = GpuTree::new(&gpu, shape.batch, shape.max_nodes, shape.max_depth).unwrap();
    let mut lay = GpuLayouts::new(&gpu, shape.batch, shape.max_nodes, shape.max_depth, 40).unwrap();
    let mut rng = Rng::new(77);
    let mut raw = HostRawTrees::new(shape);
    let mut cpu = Vec::new();
    for b in 0..shape.batch {
        let (root, nodes) = random_tree(&mut rng, 30, shape.max_depth, 1000);
        raw.set(b, root, &nodes, 30).unwrap();
        cpu.push(cpu_finalize(&shape, root, &nodes, 30, false).unwrap());
    }
    gt.upload(&raw).unwrap();
    gt.finalize(&stream).unwrap();
    // Tree 1's prefix exceeds max_prefix; max_seq admits only trees with few leaves.
    lay.set_prefix_len(&[40, 41, 0, 17]).unwrap();
    let first_seq_id = 2;
    let max_seq = cpu.iter().map(|t| t.num_leaves()).min().unwrap() as u32 + 2;
    lay.poison_outputs().unwrap();
    lay.layouts(&stream, &gt, first_seq_id, max_seq).unwrap();
    stream.synchronize().unwrap();
    for (b, t) in cpu.iter().enumerate() {
        let prefix = [40, 41, 0, 17][b];
        let l = lay.download(b, 0, 0, 0).unwrap();
        let (mut f, mut c) = (vec![0; t.len()], vec![0; t.len()]);
        let seq = layout::seq_ranges(t, first_seq_id, max_seq, &mut f, &mut c);
        if b == 1 {
            assert_eq!(l.status, Status::BufferTooSmall as i32);
        } else if let Err(e) = seq {
            assert_eq!(l.status, e.status() as i32, "tree {b}");
        } else {
            check_layouts(
                &lay,
                b,
                t,
                prefix,
                first_seq_id,
                max_seq,
                &format!("tree {b}"),
            );
        }
    }
    // Host-side checks: negative first_seq_id.
    let e = lay.layouts(&stream, &gt, -1, 10).unwrap_err();
    assert_eq!(e.status(), Status::InvalidArgument);
}

//! GPU greedy acceptance (argmax fused with the walk) against the CPU library: `verify::sample` at
//! temperature 0 from the same logits (f32 and bf16), `verify::greedy` from the argmax; ties to the
//! lowest id, NaN / +inf / all -inf rows, rows past the tree never read (poisoned with NaN), mixed
//! tree sizes in a batch, poisoned outputs.
#![cfg(feature = "cuda")]

mod cuda_common;

use specblock::Status;
use specblock::cuda::greedy::GpuGreedy;
use specblock::cuda::tree::{GpuTree, HostRawTrees, TreeShape};
use specblock::cuda::{DeviceBuffer, Gpu, Stream};
use specblock::tree::{DraftTree, NodeMeta, TreeParams};
use specblock::verify::{self, Sampling};

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
}

type Node = (i32, i32, f32, NodeMeta);

fn random_tree(rng: &mut Rng, n_add: usize, max_depth: usize, alphabet: u64) -> (i32, Vec<Node>) {
    let root = rng.below(alphabet) as i32;
    let mut depth = vec![0usize];
    let mut nodes = Vec::new();
    for id in 1..=n_add {
        let mut p = if rng.below(3) == 0 {
            rng.below(id as u64) as usize
        } else {
            id - 1 - rng.below(id.min(4) as u64) as usize
        };
        if depth[p] >= max_depth {
            p = 0;
        }
        let lp = -((rng.below(1000) as f32) / 250.0);
        nodes.push((
            p as i32,
            rng.below(alphabet) as i32,
            lp,
            NodeMeta::default(),
        ));
        depth.push(depth[p] + 1);
    }
    (root, nodes)
}

/// Logits that bf16 represents exactly (multiples of 1/16 in [-4, 4]); rows usually peak at a child's
/// token (deep acceptance), sometimes with a tie at a lower id, sometimes hold NaN / +inf / only -inf.
/// Rows past the tree's length are NaN: the kernels must not read them.
fn logits_for(
    rng: &mut Rng,
    trees: &[DraftTree],
    cap: usize,
    vocab: usize,
    faults: bool,
) -> Vec<f32> {
    let mut x = vec![f32::NAN; trees.len() * cap * vocab];
    for (b, t) in trees.iter().enumerate() {
        for i in 0..t.len() {
            let row = &mut x[(b * cap + i) * vocab..(b * cap + i + 1) * vocab];
            for v in row.iter_mut() {
                *v = (rng.below(129) as f32 - 64.0) / 16.0;
            }
            let children: Vec<usize> = t.children(i).collect();
            if !children.is_empty() && rng.below(10) < 8 {
                let c = children[rng.below(children.len() as u64) as usize];
                let tok = t.tokens()[c] as usize;
                row[tok] = 8.0;
                if rng.below(4) == 0 {
                    row[rng.below(vocab as u64) as usize] = 8.0; // a tie: the lower id wins
                }
            }
            if faults {
                match rng.below(40) {
                    0 => row[rng.below(vocab as u64) as usize] = f32::NAN,
                    1 => row[rng.below(vocab as u64) as usize] = f32::INFINITY,
                    2 => row.fill(f32::NEG_INFINITY),
                    3 => row[rng.below(vocab as u64) as usize] = -0.0,
                    _ => {}
                }
            }
        }
    }
    x
}

fn to_bf16_bits(x: &[f32]) -> Vec<u16> {
    // Every value is bf16-exact (or NaN / inf), so truncation is exact.
    x.iter()
        .map(|v| {
            if v.is_nan() {
                0x7FC0
            } else {
                (v.to_bits() >> 16) as u16
            }
        })
        .collect()
}

fn host_argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &l) in row.iter().enumerate() {
        if l > row[best] {
            best = j;
        }
    }
    best
}

#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &Gpu,
    stream: &Stream,
    shape: TreeShape,
    vocab: usize,
    alphabet: u64,
    bf16: bool,
    faults: bool,
    seed: u64,
    reps: usize,
) {
    let mut rng = Rng::new(seed);
    let cap = shape.cap();
    let gt = &mut GpuTree::new(gpu, shape.batch, shape.max_nodes, shape.max_depth).unwrap();
    let mut gg = GpuGreedy::new(gpu, shape.batch, shape.max_nodes, shape.max_depth).unwrap();
    for rep in 0..reps {
        let mut raw = HostRawTrees::new(shape);
        let mut cpu = Vec::new();
        for b in 0..shape.batch {
            let n_add = rng.below(shape.max_nodes as u64 + 1) as usize;
            let (root, nodes) = random_tree(&mut rng, n_add, shape.max_depth, alphabet);
            let budget = rng.below(shape.max_nodes as u64 + 1) as i32;
            raw.set(b, root, &nodes, budget).unwrap();
            let mut t = DraftTree::new(TreeParams {
                max_nodes: shape.max_nodes as u32,
                max_depth: shape.max_depth as u32,
            })
            .unwrap();
            t.reset(root).unwrap();
            for &(p, tok, lp, m) in &nodes {
                t.add_with_meta(p, tok, lp, m).unwrap();
            }
            t.finalize(budget as u32).unwrap();
            cpu.push(t);
        }
        let logits = logits_for(&mut rng, &cpu, cap, vocab, faults);
        gt.upload(&raw).unwrap();
        gt.poison_outputs().unwrap();
        gg.poison_outputs().unwrap();
        gt.finalize(stream).unwrap();
        let _keep_alive_f32;
        let _keep_alive_bf16;
        if bf16 {
            let d = DeviceBuffer::from_slice(gpu, &to_bf16_bits(&logits)).unwrap();
            gg.greedy_bf16(stream, gt, &d, vocab).unwrap();
            stream.synchronize().unwrap();
            _keep_alive_bf16 = Some(d);
        } else {
            let d = DeviceBuffer::from_slice(gpu, &logits).unwrap();
            gg.greedy_f32(stream, gt, &d, vocab).unwrap();
            stream.synchronize().unwrap();
            _keep_alive_f32 = Some(d);
        }
        let got = gg.download().unwrap();
        let (amax, flag) = gg.download_argmax().unwrap();
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        };
        for (b, t) in cpu.iter().enumerate() {
            let what =
                format!("{shape:?} vocab {vocab} bf16 {bf16} seed {seed} rep {rep} tree {b}");
            let rows = &logits[b * cap * vocab..(b * cap + t.len()) * vocab];
            // Per-row argmax and flags wherever the row is finite.
            for i in 0..t.len() {
                let row = &rows[i * vocab..(i + 1) * vocab];
                let bad = row.iter().any(|v| v.is_nan() || *v == f32::INFINITY);
                let all_neg_inf = row.iter().all(|v| *v == f32::NEG_INFINITY);
                let f = flag[b * cap + i];
                assert_eq!(
                    f,
                    if bad {
                        1
                    } else if all_neg_inf {
                        2
                    } else {
                        0
                    },
                    "{what}: flag row {i}"
                );
                if !bad {
                    assert_eq!(
                        amax[b * cap + i],
                        host_argmax(row) as i32,
                        "{what}: argmax row {i}"
                    );
                }
            }
            let g = &got[b];
            match verify::sample(t, rows, vocab, &greedy, 1) {
                Ok(acc) => {
                    assert_eq!(g.status, 0, "{what}: status");
                    assert_eq!(g.nodes, acc.nodes(), "{what}: nodes");
                    assert_eq!(g.tokens, acc.tokens(), "{what}: tokens");
                    assert_eq!(g.bonus, acc.bonus_token, "{what}: bonus");
                    let mut keep = vec![0; acc.keep_len()];
                    acc.keep_list(&mut keep).unwrap();
                    assert_eq!(g.keep, keep, "{what}: keep");
                    let k = g.nodes.len();
                    assert!(
                        g.raw_nodes[k..].iter().all(|&x| x == -1),
                        "{what}: node padding"
                    );
                    assert!(
                        g.raw_tokens[k..].iter().all(|&x| x == -1),
                        "{what}: token padding"
                    );
                    assert!(
                        g.raw_keep[k + 1..].iter().all(|&x| x == -1),
                        "{what}: keep padding"
                    );
                    // The argmax path agrees with verify::greedy.
                    let am: Vec<i32> = (0..t.len()).map(|i| amax[b * cap + i]).collect();
                    if am.iter().all(|&a| a >= 0) {
                        let acc2 = verify::greedy(t, &am).unwrap();
                        assert_eq!(acc2, acc, "{what}: greedy from argmax");
                    }
                }
                Err(e) => {
                    assert_eq!(g.status, e.status() as i32, "{what}: error status ({e})");
                    assert!(
                        g.nodes.is_empty() && g.bonus == -1,
                        "{what}: failed outputs"
                    );
                }
            }
        }
    }
}

#[test]
fn no_device_is_a_skip_or_the_api_checks_shapes() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    let gt = GpuTree::new(&gpu, 2, 8, 4).unwrap();
    let gg = GpuGreedy::new(&gpu, 2, 8, 4).unwrap();
    let small = DeviceBuffer::<f32>::new(&gpu, 2 * 9 * 10 - 1).unwrap();
    let e = gg.greedy_f32(&stream, &gt, &small, 10).unwrap_err();
    assert_eq!(e.status(), Status::BufferTooSmall);
    let other = GpuTree::new(&gpu, 3, 8, 4).unwrap();
    let ok = DeviceBuffer::<f32>::new(&gpu, 3 * 9 * 10).unwrap();
    let e = gg.greedy_f32(&stream, &other, &ok, 10).unwrap_err();
    assert_eq!(e.status(), Status::ShapeMismatch);
}

#[test]
fn greedy_f32_matches_the_cpu() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    let cases = [
        (
            TreeShape {
                batch: 1,
                max_nodes: 1,
                max_depth: 1,
            },
            7,
            3,
        ),
        (
            TreeShape {
                batch: 5,
                max_nodes: 16,
                max_depth: 4,
            },
            1000,
            3,
        ),
        (
            TreeShape {
                batch: 8,
                max_nodes: 64,
                max_depth: 8,
            },
            1001,
            4,
        ),
        (
            TreeShape {
                batch: 3,
                max_nodes: 200,
                max_depth: 16,
            },
            2048,
            2,
        ),
    ];
    for (k, (shape, vocab, alphabet)) in cases.into_iter().enumerate() {
        for seed in 0..3 {
            run(
                &gpu,
                &stream,
                shape,
                vocab,
                alphabet,
                false,
                false,
                10 * k as u64 + seed,
                4,
            );
            run(
                &gpu,
                &stream,
                shape,
                vocab,
                alphabet,
                false,
                true,
                500 + 10 * k as u64 + seed,
                4,
            );
        }
    }
}

#[test]
fn greedy_bf16_matches_the_cpu() {
    let Some(gpu) = cuda_common::gpu() else {
        return;
    };
    let stream = Stream::new(&gpu).unwrap();
    let cases = [
        (
            TreeShape {
                batch: 4,
                max_nodes: 32,
                max_depth: 6,
            },
            1000,
            3,
        ),
        (
            TreeShape {
                batch: 3,
                max_nodes: 90,
                max_depth: 8,
            },
            999,
            5,
        ),
        (
            TreeShape {
                batch: 2,
                max_nodes: 90,
                max_depth: 8,
            },
            49152,
            4,
        ),
        (
            TreeShape {
                batch: 2,
                max_nodes: 1024,
                max_depth: 64,
            },
            64,
            2,
        ),
    ];
    for (k, (shape, vocab, alphabet)) in cases.into_iter().enumerate() {
        for seed in 0..2 {
            run(
                &gpu,
                &stream,
                shape,
                vocab,
                alphabet,
                true,
                false,
                1000 + 10 * k as u64 + seed,
                3,
            );
            run(
                &gpu,
                &stream,
                shape,
                vocab,
                alphabet,
                true,
                true,
                2000 + 10 * k as u64 + seed,
                3,
            );
        }
    }
}

//! The C device API end to end on a GPU: raw trees in device memory -> `sb_cuda_tree_finalize` ->
//! `sb_cuda_verify_greedy` and `sb_cuda_verify_sample`, compared with the CPU library per sequence.
//! Without a GPU it checks that every call reports `NoDevice` or a NULL-argument status, never a panic.
#![cfg(feature = "cuda")]

mod cuda_common;

use std::ptr::{null, null_mut};

use specblock::Status;
use specblock::cuda::tree::HostRawTrees;
use specblock::cuda::tree::TreeShape;
use specblock::cuda::{DeviceBuffer, Stream};
use specblock::ffi::*;
use specblock::rng::CounterRng;
use specblock::tree::{DraftTree, NodeMeta, TreeParams};
use specblock::verify::{self, Sampling};

const BATCH: usize = 5;
const MAX_NODES: usize = 40;
const MAX_DEPTH: usize = 8;
const VOCAB: usize = 700;

/// A random tree: (parent, token, logprob) per node in insertion order, plus the budget.
fn random_tree(rng: &CounterRng, salt: u64) -> (i32, Vec<(i32, i32, f32)>, u32) {
    let mut c = salt * 10_000;
    let mut next = || {
        c += 1;
        rng.uniform(c)
    };
    let n = 1 + (next() * MAX_NODES as f64) as usize;
    let mut depth = vec![0usize];
    let mut nodes = Vec::new();
    for i in 1..=n.min(MAX_NODES) {
        let mut p = (next() * i as f64) as usize;
        while depth[p] >= MAX_DEPTH {
            p = 0;
        }
        depth.push(depth[p] + 1);
        // A small alphabet makes duplicates (dedup) and likely tokens (acceptance).
        let token = (next() * 6.0) as i32;
        let lp = -(next() * 3.0) as f32;
        nodes.push((p as i32, token, lp));
    }
    let budget = (next() * (MAX_NODES + 1) as f64) as u32;
    ((next() * 6.0) as i32, nodes, budget)
}

#[test]
fn c_device_api_matches_the_cpu() {
    let Some(gpu) = cuda_common::gpu() else {
        // No GPU: open reports NoDevice and the other calls reject NULL handles cleanly.
        let mut dev = null_mut();
        // SAFETY: valid out-pointer.
        let s = unsafe { sb_cuda_device_open(0, &mut dev) };
        assert_eq!(s, Status::NoDevice);
        // SAFETY: NULL handles are rejected before anything is read.
        let s = unsafe { sb_cuda_tree_finalize(null(), null(), null(), null(), null_mut()) };
        assert_eq!(s, Status::NullArgument);
        return;
    };
    let mut dev = null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { sb_cuda_device_open(0, &mut dev) }, Status::Ok);
    // Buffers come from the test's own `Gpu`: both handles share the device's primary context.
    let gpu = &gpu;
    let shape = TreeShape {
        batch: BATCH,
        max_nodes: MAX_NODES,
        max_depth: MAX_DEPTH,
    };
    let cap = shape.cap();
    let rng = CounterRng::new(20261127);
    for round in 0..20u64 {
        // Host trees, CPU references.
        let mut raw = HostRawTrees::new(shape);
        let mut cpu = Vec::new();
        for b in 0..BATCH {
            let (root, nodes, budget) = random_tree(&rng, round * 100 + b as u64);
            let with_meta: Vec<_> = nodes
                .iter()
                .map(|&(p, t, lp)| (p, t, lp, NodeMeta::default()))
                .collect();
            raw.set(b, root, &with_meta, budget as i32).unwrap();
            let mut t = DraftTree::new(TreeParams {
                max_nodes: MAX_NODES as u32,
                max_depth: MAX_DEPTH as u32,
            })
            .unwrap();
            t.reset(root).unwrap();
            for &(p, tok, lp) in &nodes {
                t.add(p, tok, lp).unwrap();
            }
            t.finalize(budget).unwrap();
            cpu.push(t);
        }
        let up_i32 = |v: &[i32]| DeviceBuffer::from_slice(gpu, v).unwrap();
        let (d_len, d_tok, d_par, d_bud) = (
            up_i32(&raw.len),
            up_i32(&raw.token),
            up_i32(&raw.parent),
            up_i32(&raw.budget),
        );
        let d_lp = DeviceBuffer::from_slice(gpu, &raw.logprob).unwrap();
        let d_meta = DeviceBuffer::from_slice(gpu, &raw.meta).unwrap();
        let slots = BATCH * cap;
        let poisoned = |n: usize| {
            let mut b = DeviceBuffer::<i32>::new(gpu, n).unwrap();
            b.fill_bytes(0xEE).unwrap();
            b
        };
        let (o_status, o_len, o_tok, o_par, o_dep, o_src) = (
            poisoned(BATCH),
            poisoned(BATCH),
            poisoned(slots),
            poisoned(slots),
            poisoned(slots),
            poisoned(slots),
        );
        let (o_fc, o_ns, o_leaves, o_deep) = (
            poisoned(slots),
            poisoned(slots),
            poisoned(BATCH),
            poisoned(BATCH),
        );
        let o_cum = DeviceBuffer::<f32>::new(gpu, slots).unwrap();
        let o_lp = DeviceBuffer::<f32>::new(gpu, slots).unwrap();
        let o_meta = DeviceBuffer::<u32>::new(gpu, slots).unwrap();
        let c_shape = sb_cuda_tree_shape {
            batch: BATCH as u32,
            max_nodes: MAX_NODES as u32,
            max_depth: MAX_DEPTH as u32,
        };
        let input = sb_cuda_raw_trees {
            len: d_len.ptr() as *const i32,
            token: d_tok.ptr() as *const i32,
            parent: d_par.ptr() as *const i32,
            logprob: d_lp.ptr() as *const f32,
            meta: d_meta.ptr() as *const u32,
            budget: d_bud.ptr() as *const i32,
        };
        let trees = sb_cuda_trees {
            status: o_status.ptr() as *mut i32,
            len: o_len.ptr() as *mut i32,
            token: o_tok.ptr() as *mut i32,
            parent: o_par.ptr() as *mut i32,
            depth: o_dep.ptr() as *mut i32,
            source: o_src.ptr() as *mut i32,
            cum: o_cum.ptr() as *mut f32,
            logprob: o_lp.ptr() as *mut f32,
            meta: o_meta.ptr() as *mut u32,
            first_child: o_fc.ptr() as *mut i32,
            next_sibling: o_ns.ptr() as *mut i32,
            num_leaves: o_leaves.ptr() as *mut i32,
            deepest: o_deep.ptr() as *mut i32,
        };
        let stream = Stream::new(gpu).unwrap();
        // SAFETY: every buffer has the documented size for `c_shape`.
        let s = unsafe { sb_cuda_tree_finalize(dev, &c_shape, &input, &trees, stream.raw()) };
        assert_eq!(s, Status::Ok);
        stream.synchronize().unwrap();
        let (len, tok, par) = (
            o_len.to_vec().unwrap(),
            o_tok.to_vec().unwrap(),
            o_par.to_vec().unwrap(),
        );
        assert!(o_status.to_vec().unwrap().iter().all(|&s| s == 0));
        for (b, t) in cpu.iter().enumerate() {
            let n = len[b] as usize;
            assert_eq!(n, t.len(), "round {round} tree {b}");
            assert_eq!(&tok[b * cap..b * cap + n], t.tokens());
            assert_eq!(&par[b * cap..b * cap + n], t.parents());
        }

        // Logits: random, with each tree's likely children boosted so walks go deep.
        let mut logits = vec![f32::NAN; slots * VOCAB];
        for (b, t) in cpu.iter().enumerate() {
            for row in 0..t.len() {
                let base = (b * cap + row) * VOCAB;
                for v in 0..VOCAB {
                    let u = rng.uniform(round << 40 | (base + v) as u64);
                    logits[base + v] = (u * 4.0 - 2.0) as f32;
                }
                let mut c = t.first_child()[row];
                while c >= 0 {
                    logits[base + t.tokens()[c as usize] as usize] += 3.0;
                    c = t.next_sibling()[c as usize];
                }
            }
        }
        let d_logits = DeviceBuffer::from_slice(gpu, &logits).unwrap();
        let (scratch_a, scratch_f) = (poisoned(slots), poisoned(slots));
        let w1 = BATCH * (MAX_DEPTH + 1);
        let (a_len, a_nodes, a_tok, a_bonus, a_keep, a_status) = (
            poisoned(BATCH),
            poisoned(w1),
            poisoned(w1),
            poisoned(BATCH),
            poisoned(BATCH * (MAX_DEPTH + 2)),
            poisoned(BATCH),
        );
        let acc = sb_cuda_acceptance {
            accept_len: a_len.ptr() as *mut i32,
            accept_nodes: a_nodes.ptr() as *mut i32,
            accept_tokens: a_tok.ptr() as *mut i32,
            bonus: a_bonus.ptr() as *mut i32,
            keep: a_keep.ptr() as *mut i32,
            status: a_status.ptr() as *mut i32,
        };
        // SAFETY: as above.
        let s = unsafe {
            sb_cuda_verify_greedy(
                dev,
                &c_shape,
                &trees,
                d_logits.ptr() as *const _,
                VOCAB as u32,
                0,
                scratch_a.ptr() as *mut i32,
                scratch_f.ptr() as *mut i32,
                &acc,
                stream.raw(),
            )
        };
        assert_eq!(s, Status::Ok);
        stream.synchronize().unwrap();
        let (g_len, g_tok, g_bonus) = (
            a_len.to_vec().unwrap(),
            a_tok.to_vec().unwrap(),
            a_bonus.to_vec().unwrap(),
        );
        let greedy = Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        };
        for (b, t) in cpu.iter().enumerate() {
            let rows = &logits[b * cap * VOCAB..(b * cap + t.len()) * VOCAB];
            let want = verify::sample(t, rows, VOCAB, &greedy, 0).unwrap();
            let n = g_len[b] as usize;
            assert_eq!(
                &g_tok[b * (MAX_DEPTH + 1)..b * (MAX_DEPTH + 1) + n],
                want.tokens()
            );
            assert_eq!(g_bonus[b], want.bonus_token);
        }

        // Sampling through the sampler handle, with per-sequence params and seeds.
        let mut sampler = null_mut();
        // SAFETY: valid device and out-pointer.
        let s = unsafe {
            sb_cuda_sampler_new(
                dev,
                BATCH as u32,
                MAX_NODES as u32,
                MAX_DEPTH as u32,
                VOCAB as u32,
                &mut sampler,
            )
        };
        assert_eq!(s, Status::Ok);
        let mut params = Vec::new();
        let mut seeds = Vec::new();
        for b in 0..BATCH {
            let mut p = sb_sampling_default_params();
            p.temperature = [1.0, 0.7, 1.3, 0.0, 1.0][b];
            p.top_k = [0, 20, 0, 0, 5][b];
            p.top_p = [1.0, 0.9, 0.95, 1.0, 1.0][b];
            params.push(p);
            seeds.push(round * 1000 + b as u64);
        }
        // SAFETY: arrays of BATCH elements.
        let s = unsafe {
            sb_cuda_sampler_set_params(sampler, params.as_ptr(), seeds.as_ptr(), BATCH as u32)
        };
        assert_eq!(s, Status::Ok);
        let mut out = acc;
        // SAFETY: as above.
        let s = unsafe {
            sb_cuda_verify_sample(
                sampler,
                &trees,
                d_logits.ptr() as *const _,
                0,
                stream.raw(),
                &mut out,
            )
        };
        assert_eq!(s, Status::Ok);
        stream.synchronize().unwrap();
        let read = |p: *mut i32, n: usize| {
            let mut v = vec![0i32; n];
            // SAFETY: `p` is a device address of at least n i32 owned by the sampler.
            let r = unsafe {
                cudarc::driver::sys::cuMemcpyDtoH_v2(v.as_mut_ptr() as *mut _, p as u64, n * 4)
            };
            assert_eq!(r, cudarc::driver::sys::CUresult::CUDA_SUCCESS);
            v
        };
        let (s_len, s_tok, s_bonus) = (
            read(out.accept_len, BATCH),
            read(out.accept_tokens, w1),
            read(out.bonus, BATCH),
        );
        for (b, t) in cpu.iter().enumerate() {
            let rows = &logits[b * cap * VOCAB..(b * cap + t.len()) * VOCAB];
            let sp = Sampling {
                temperature: params[b].temperature,
                top_k: params[b].top_k,
                top_p: params[b].top_p,
            };
            let want = verify::sample(t, rows, VOCAB, &sp, seeds[b]).unwrap();
            let n = s_len[b] as usize;
            assert_eq!(
                &s_tok[b * (MAX_DEPTH + 1)..b * (MAX_DEPTH + 1) + n],
                want.tokens(),
                "round {round} seq {b}"
            );
            assert_eq!(s_bonus[b], want.bonus_token, "round {round} seq {b}");
        }
        // SAFETY: created above.
        unsafe { sb_cuda_sampler_free(sampler) };
    }
    // SAFETY: opened above; everything created from it is freed.
    unsafe { sb_cuda_device_free(dev) };
}

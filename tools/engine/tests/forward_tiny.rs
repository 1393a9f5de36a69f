//! Forward-pass invariants on a tiny random Llama (no model file needed): tree verification equals
//! plain decoding along every path bit for bit (f32 and bf16), batched sequences equal separate runs, KV compaction to an accepted
//! path equals having decoded that path, and bf16 weights stay close to f32.

use std::collections::BTreeMap;

use specblock::layout;
use specblock::tree::{DraftTree, TreeParams};
use specblock_engine::model::{Capture, Llama, Logits, Mask, Segment, WeightFormat};
use specblock_engine::weights::{LlamaConfig, LoadedModel, Tensor};

fn tiny_config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 3,
        hidden: 48,
        ffn: 80,
        n_heads: 6,
        n_kv_heads: 2,
        head_dim: 8,
        vocab: 97,
        rope_theta: 10000.0,
        rms_eps: 1e-5,
        max_ctx: 256,
        tie_embeddings: true,
    }
}

fn tiny_model(seed: u64) -> LoadedModel {
    let c = tiny_config();
    let mut state = seed;
    let mut rnd = |scale: f32| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5) * 2.0 * scale
    };
    let mut tensors = BTreeMap::new();
    let mut put = |name: String, shape: Vec<usize>, scale: f32, base: f32| {
        let n = shape.iter().product();
        let data = (0..n).map(|_| base + rnd(scale)).collect();
        tensors.insert(name, Tensor { shape, data });
    };
    let (h, qd, kvd) = (c.hidden, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    put(
        "model.embed_tokens.weight".into(),
        vec![c.vocab, h],
        1.0,
        0.0,
    );
    put("model.norm.weight".into(), vec![h], 0.1, 1.0);
    for i in 0..c.n_layers {
        let p = |s: &str| format!("model.layers.{i}.{s}.weight");
        put(p("input_layernorm"), vec![h], 0.1, 1.0);
        put(p("post_attention_layernorm"), vec![h], 0.1, 1.0);
        put(p("self_attn.q_proj"), vec![qd, h], 0.3, 0.0);
        put(p("self_attn.k_proj"), vec![kvd, h], 0.3, 0.0);
        put(p("self_attn.v_proj"), vec![kvd, h], 0.3, 0.0);
        put(p("self_attn.o_proj"), vec![h, qd], 0.2, 0.0);
        put(p("mlp.gate_proj"), vec![c.ffn, h], 0.2, 0.0);
        put(p("mlp.up_proj"), vec![c.ffn, h], 0.2, 0.0);
        put(p("mlp.down_proj"), vec![h, c.ffn], 0.2, 0.0);
    }
    LoadedModel { config: c, tensors }
}

fn model(format: WeightFormat) -> Llama {
    Llama::new(tiny_model(7), format, 2).expect("tiny model builds")
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

/// Logits after each token of `tokens`, decoding one token at a time after `prefix`.
fn plain_logits(m: &Llama, prefix: &[u32], tokens: &[u32]) -> Vec<Vec<f32>> {
    let mut kv = m.new_cache(64);
    let pos: Vec<u32> = (0..prefix.len() as u32).collect();
    let mut last = m
        .forward(
            Segment {
                kv: &mut kv,
                tokens: prefix,
                positions: &pos,
                mask: Mask::Causal,
                logits: Logits::Last,
            },
            &Capture::default(),
        )
        .unwrap()
        .logits;
    let mut out = vec![];
    for &t in tokens {
        out.push(last);
        let p = [kv.len() as u32];
        last = m
            .forward(
                Segment {
                    kv: &mut kv,
                    tokens: &[t],
                    positions: &p,
                    mask: Mask::Causal,
                    logits: Logits::Last,
                },
                &Capture::default(),
            )
            .unwrap()
            .logits;
    }
    out.push(last);
    out
}

#[test]
fn prefill_equals_token_by_token() {
    let m = model(WeightFormat::F32);
    let tokens: Vec<u32> = vec![3, 14, 15, 92, 65, 35, 89, 79];
    let mut kv = m.new_cache(64);
    let pos: Vec<u32> = (0..8).collect();
    let all = m
        .forward(
            Segment {
                kv: &mut kv,
                tokens: &tokens,
                positions: &pos,
                mask: Mask::Causal,
                logits: Logits::All,
            },
            &Capture::default(),
        )
        .unwrap();
    let steps = plain_logits(&m, &tokens[..1], &tokens[1..]);
    let v = m.config().vocab;
    for (i, step) in steps.iter().enumerate() {
        close(
            &all.logits[i * v..(i + 1) * v],
            step,
            0.0,
            &format!("row {i}"),
        );
    }
}

#[test]
fn tree_verify_equals_plain_decoding_on_every_path_and_compaction_keeps_the_path() {
    // Bit for bit, bf16 too: no output element's arithmetic depends on how many rows share the pass
    // or where masked keys sit (the softmax sums by key position).
    for format in [WeightFormat::F32, WeightFormat::Bf16] {
        tree_verify_case(&model(format));
    }
}

fn tree_verify_case(m: &Llama) {
    let v = m.config().vocab;
    // Longer than the softmax's 16 partial sums, so the tree keys land on lanes that already hold
    // prefix keys: the sums must be keyed by position, not by where a key sits in the row.
    let prefix: Vec<u32> = (0..21u32).map(|i| (i * 7 + 5) % 97).collect();
    // A tree with branching at several depths and a duplicate token on different branches.
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 32,
        max_depth: 8,
    })
    .unwrap();
    tree.reset(40).unwrap();
    let a = tree.add(0, 11, -0.1).unwrap();
    let b = tree.add(0, 12, -0.5).unwrap();
    let a1 = tree.add(a, 13, -0.2).unwrap();
    let _a2 = tree.add(a, 14, -0.9).unwrap();
    let b1 = tree.add(b, 13, -0.3).unwrap();
    let a11 = tree.add(a1, 15, -0.1).unwrap();
    tree.add(a11, 16, -0.1).unwrap();
    tree.add(b1, 17, -0.1).unwrap();
    tree.finalize(20).unwrap();
    let n = tree.len();
    let mut mask = vec![0u8; n * n];
    layout::mask_dense(&tree, &mut mask).unwrap();

    let mut kv = m.new_cache(64);
    let pos: Vec<u32> = (0..prefix.len() as u32).collect();
    m.forward(
        Segment {
            kv: &mut kv,
            tokens: &prefix,
            positions: &pos,
            mask: Mask::Causal,
            logits: Logits::None,
        },
        &Capture::default(),
    )
    .unwrap();
    let base = kv.len();
    let mut pos_i32 = vec![0i32; n];
    layout::positions(&tree, base as u32, &mut pos_i32).unwrap();
    let positions: Vec<u32> = pos_i32.iter().map(|&p| p as u32).collect();
    let tokens: Vec<u32> = tree.tokens().iter().map(|&t| t as u32).collect();
    let out = m
        .forward(
            Segment {
                kv: &mut kv,
                tokens: &tokens,
                positions: &positions,
                mask: Mask::Tree(&mask),
                logits: Logits::All,
            },
            &Capture::default(),
        )
        .unwrap();
    // Every node's logits equal plain decoding of its root-to-node path.
    for node in 0..n {
        let mut path = vec![node];
        while let Some(&p) = path.last() {
            let parent = tree.parents()[p];
            if parent < 0 {
                break;
            }
            path.push(parent as usize);
        }
        path.reverse();
        let path_tokens: Vec<u32> = path.iter().map(|&i| tokens[i]).collect();
        let mut full = prefix.clone();
        full.push(path_tokens[0]);
        let plain = plain_logits(m, &full, &path_tokens[1..]);
        close(
            &out.logits[node * v..(node + 1) * v],
            plain.last().unwrap(),
            0.0,
            &format!("node {node}"),
        );
    }
    // Accept the deepest branch: root, a, a1, a11, a111 and compact; continuing must equal plain decoding.
    let accepted: Vec<u32> = {
        let mut deepest = 0;
        for i in 0..n {
            if tree.depths()[i] > tree.depths()[deepest] {
                deepest = i;
            }
        }
        let mut path = vec![deepest as u32];
        while let Some(&p) = path.last() {
            let parent = tree.parents()[p as usize];
            if parent < 0 {
                break;
            }
            path.push(parent as u32);
        }
        path.reverse();
        path
    };
    kv.compact(base, &accepted).unwrap();
    assert_eq!(kv.len(), base + accepted.len());
    let next = 42u32;
    let p = [kv.len() as u32];
    let cont = m
        .forward(
            Segment {
                kv: &mut kv,
                tokens: &[next],
                positions: &p,
                mask: Mask::Causal,
                logits: Logits::Last,
            },
            &Capture::default(),
        )
        .unwrap();
    let mut full = prefix.clone();
    full.extend(accepted.iter().map(|&i| tokens[i as usize]));
    let plain = plain_logits(m, &full, &[next]);
    close(&cont.logits, plain.last().unwrap(), 0.0, "after compaction");
}

#[test]
fn batched_sequences_equal_separate_runs_and_capture_layers() {
    let m = model(WeightFormat::F32);
    let seqs: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![50, 60, 70, 80, 90], vec![7]];
    let cap = Capture {
        layers: vec![0, 2],
        final_hidden: true,
    };
    let mut caches: Vec<_> = seqs.iter().map(|_| m.new_cache(16)).collect();
    let positions: Vec<Vec<u32>> = seqs.iter().map(|s| (0..s.len() as u32).collect()).collect();
    let mut segs: Vec<Segment> = caches
        .iter_mut()
        .zip(&seqs)
        .zip(&positions)
        .map(|((kv, t), p)| Segment {
            kv,
            tokens: t,
            positions: p,
            mask: Mask::Causal,
            logits: Logits::All,
        })
        .collect();
    let batched = m.forward_batch(&mut segs, &cap).unwrap();
    assert_eq!(batched.logits_rows, vec![3, 5, 1]);
    let (v, h) = (m.config().vocab, m.config().hidden);
    let mut row = 0;
    for (s, p) in seqs.iter().zip(&positions) {
        let mut kv = m.new_cache(16);
        let one = m
            .forward(
                Segment {
                    kv: &mut kv,
                    tokens: s,
                    positions: p,
                    mask: Mask::Causal,
                    logits: Logits::All,
                },
                &cap,
            )
            .unwrap();
        let k = s.len();
        close(
            &batched.logits[row * v..(row + k) * v],
            &one.logits,
            1e-5,
            "batched logits",
        );
        close(
            &batched.features[row * 2 * h..(row + k) * 2 * h],
            &one.features,
            1e-5,
            "features",
        );
        close(
            &batched.final_hidden[row * h..(row + k) * h],
            &one.final_hidden,
            1e-5,
            "final hidden",
        );
        row += k;
    }
}

#[test]
fn bf16_weights_stay_close_to_f32() {
    let (a, b) = (model(WeightFormat::F32), model(WeightFormat::Bf16));
    let tokens: Vec<u32> = vec![9, 8, 7, 6];
    let pos: Vec<u32> = (0..4).collect();
    let run = |m: &Llama| {
        let mut kv = m.new_cache(8);
        m.forward(
            Segment {
                kv: &mut kv,
                tokens: &tokens,
                positions: &pos,
                mask: Mask::Causal,
                logits: Logits::All,
            },
            &Capture::default(),
        )
        .unwrap()
        .logits
    };
    let (x, y) = (run(&a), run(&b));
    let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = x
        .iter()
        .zip(&y)
        .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(err < 0.05 * max, "bf16 error {err} vs scale {max}");
    assert!(err > 0.0, "bf16 must actually round the weights");
}

#[test]
fn bad_inputs_are_errors_and_leave_the_cache_unchanged() {
    let m = model(WeightFormat::F32);
    let mut kv = m.new_cache(4);
    let cap = Capture::default();
    let mut run = |tokens: &[u32], positions: &[u32], mask: Mask| {
        m.forward(
            Segment {
                kv: &mut kv,
                tokens,
                positions,
                mask,
                logits: Logits::All,
            },
            &cap,
        )
        .map(|_| ())
    };
    assert!(
        run(&[1, 2], &[0], Mask::Causal).is_err(),
        "positions length"
    );
    assert!(
        run(&[1000], &[0], Mask::Causal).is_err(),
        "token out of vocab"
    );
    assert!(
        run(&[1, 2], &[0, 1], Mask::Tree(&[1, 0, 1])).is_err(),
        "mask shape"
    );
    assert!(
        run(&[1, 2], &[0, 1], Mask::Tree(&[1, 0, 1, 0])).is_err(),
        "token must see itself"
    );
    assert!(
        run(&[1, 2, 3, 4, 5], &[0, 1, 2, 3, 4], Mask::Causal).is_err(),
        "capacity"
    );
    let bad_layer = Capture {
        layers: vec![3],
        final_hidden: false,
    };
    assert!(
        m.forward(
            Segment {
                kv: &mut kv,
                tokens: &[1],
                positions: &[0],
                mask: Mask::Causal,
                logits: Logits::All
            },
            &bad_layer
        )
        .is_err()
    );
    assert_eq!(kv.len(), 0);
    assert!(kv.compact(0, &[0]).is_err(), "keep beyond the rows in use");
}

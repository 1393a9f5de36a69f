//! The EAGLE-3 drafting session and loader: input and call-order errors leave the session usable,
//! reuse after reset is exact, long prefills run in chunks, draft and commit allocate nothing, and
//! synthetic checkpoints (f16/bf16, `model.` prefix, missing or mis-shaped tensors, absent d2t, an
//! own embedding, configs outside the contract) load or fail as the contract says.

mod counting;

use std::path::PathBuf;

use specblock::drafter::eagle3::{
    Eagle3Config, Eagle3Drafter, Eagle3Policy, Eagle3Session, write_random_eagle3,
};
use specblock::error::Error;
use specblock::io::safetensors::{Dtype, SafeTensors, TensorData, f32_to_f16, serialize};
use specblock::tree::{DraftTree, TreeParams};

fn tiny() -> (Eagle3Drafter, Vec<f32>) {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures/eagle3_tiny"
    ));
    let d = Eagle3Drafter::load_dir(&dir, 1).unwrap();
    let embed = SafeTensors::open(&dir.join("embed.safetensors"))
        .unwrap()
        .f32("model.embed_tokens.weight")
        .unwrap()
        .1;
    (d, embed)
}

fn features(n: usize, width: usize, seed: u32) -> Vec<f32> {
    (0..n * width)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn new_tree() -> DraftTree {
    DraftTree::new(TreeParams {
        max_nodes: 128,
        max_depth: 16,
    })
    .unwrap()
}

/// A finalized tree as comparable values: (token, parent, depth, cumulative log-prob bits).
fn snapshot(t: &DraftTree) -> Vec<(i32, i32, u32, u32)> {
    (0..t.len())
        .map(|i| {
            (
                t.tokens()[i],
                t.parents()[i],
                t.depths()[i],
                t.cum_logprobs()[i].to_bits(),
            )
        })
        .collect()
}

/// Prefill, then `rounds` of draft + commit (accepting the first child of the root when there is
/// one); returns every tree.
fn run_rounds(
    s: &mut Eagle3Session<'_>,
    embed: &[f32],
    rounds: usize,
) -> Vec<Vec<(i32, i32, u32, u32)>> {
    let w = s.drafter().feature_width();
    s.prefill(embed, &features(6, w, 1), &[3, 1, 4, 1, 5, 9, 2])
        .unwrap();
    let mut trees = Vec::new();
    let mut tree = new_tree();
    for r in 0..rounds {
        s.draft(embed, &mut tree).unwrap();
        trees.push(snapshot(&tree));
        let accepted: Vec<u32> = tree.tokens()[1..2].iter().map(|&t| t as u32).collect();
        let rows = accepted.len() + 1;
        s.commit(
            embed,
            &accepted,
            7 + r as u32,
            &features(rows, w, 10 + r as u32),
        )
        .unwrap();
    }
    trees
}

#[test]
fn default_policy_is_eagles() {
    assert_eq!(
        Eagle3Policy::default(),
        Eagle3Policy {
            depth: 7,
            top_k: 10,
            budget: 59
        }
    );
}

#[test]
fn call_order_and_input_errors_leave_the_session_usable() {
    let (d, embed) = tiny();
    let w = d.feature_width();
    let v = d.vocab() as u32;
    let policy = Eagle3Policy {
        depth: 3,
        top_k: 4,
        budget: 20,
    };
    for bad in [
        Eagle3Policy { depth: 0, ..policy },
        Eagle3Policy { top_k: 0, ..policy },
        Eagle3Policy {
            top_k: d.config().draft_vocab as u32 + 1,
            ..policy
        },
    ] {
        assert!(matches!(
            Eagle3Session::new(&d, 16, bad).err(),
            Some(Error::InvalidArgument(_))
        ));
    }
    let mut s = Eagle3Session::new(&d, 12, policy).unwrap();
    let mut tree = new_tree();
    assert!(matches!(
        s.draft(&embed, &mut tree),
        Err(Error::InvalidState(_))
    ));
    assert!(s.prefill(&embed, &features(1, w, 1), &[5]).is_err());
    assert!(matches!(
        s.prefill(&embed, &features(3, w, 1)[1..], &[5, 6, 7, 8]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        s.prefill(&embed, &features(3, w, 1), &[5, v, 7, 8]),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        s.prefill(&embed[1..], &features(3, w, 1), &[5, 6, 7, 8]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        s.prefill(&embed, &features(13, w, 1), &[1; 14]),
        Err(Error::Capacity { .. })
    ));
    let mut nan = features(3, w, 1);
    nan[5] = f32::NAN;
    assert!(matches!(
        s.prefill(&embed, &nan, &[5, 6, 7, 8]),
        Err(Error::NonFinite { .. })
    ));
    s.prefill(&embed, &features(3, w, 1), &[5, 6, 7, 8])
        .unwrap();
    assert_eq!((s.root(), s.context_entries()), (Some(8), 3));
    assert!(matches!(
        s.commit(&embed, &[], 9, &features(1, w, 2)),
        Err(Error::InvalidState(_))
    ));
    s.draft(&embed, &mut tree).unwrap();
    assert_eq!(tree.len(), 21);
    assert!(tree.deepest() <= 4);
    let before = snapshot(&tree);
    assert!(matches!(
        s.commit(&embed, &[1], 9, &features(1, w, 2)),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        s.commit(&embed, &[1], v, &features(2, w, 2)),
        Err(Error::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        s.commit(&embed, &[1; 9], 9, &features(10, w, 2)),
        Err(Error::Capacity { .. })
    ));
    assert_eq!((s.root(), s.context_entries()), (Some(8), 3));
    // The failed commits changed nothing: the same draft comes out again.
    s.draft(&embed, &mut tree).unwrap();
    assert_eq!(snapshot(&tree), before);
    s.commit(&embed, &[1], 9, &features(2, w, 2)).unwrap();
    assert_eq!((s.root(), s.context_entries()), (Some(9), 5));
    assert!(matches!(
        s.commit(&embed, &[], 9, &features(1, w, 2)),
        Err(Error::InvalidState(_))
    ));
    s.draft(&embed, &mut tree).unwrap();
    // A tree too small for the budget or too shallow for the depth is an error, not a cut.
    let mut small = DraftTree::new(TreeParams {
        max_nodes: 8,
        max_depth: 16,
    })
    .unwrap();
    assert!(matches!(
        s.draft(&embed, &mut small),
        Err(Error::Capacity { .. })
    ));
    let mut shallow = DraftTree::new(TreeParams {
        max_nodes: 128,
        max_depth: 3,
    })
    .unwrap();
    assert!(matches!(
        s.draft(&embed, &mut shallow),
        Err(Error::DepthLimit { .. })
    ));
    s.draft(&embed, &mut tree).unwrap();
    s.commit(&embed, &[], 11, &features(1, w, 3)).unwrap();
    assert_eq!(s.context_entries(), 6);
}

#[test]
fn tree_shape_follows_the_policy() {
    let (d, embed) = tiny();
    let w = d.feature_width();
    for (depth, top_k, budget) in [(7u32, 10u32, 59u32), (1, 1, 1), (2, 5, 100), (3, 3, 0)] {
        let policy = Eagle3Policy {
            depth,
            top_k,
            budget,
        };
        let mut s = Eagle3Session::new(&d, 16, policy).unwrap();
        s.prefill(&embed, &features(4, w, 5), &[1, 2, 3, 4, 5])
            .unwrap();
        let mut tree = new_tree();
        s.draft(&embed, &mut tree).unwrap();
        let pool = (top_k + depth * top_k * top_k) as usize;
        assert_eq!(s.candidates().scores.len(), pool);
        assert_eq!(tree.len(), 1 + pool.min(budget as usize));
        assert_eq!(tree.tokens()[0], 5);
        assert!(tree.deepest() <= depth as usize + 1);
        for i in 1..tree.len() {
            let p = tree.parents()[i] as usize;
            assert!(p < i);
            assert!(tree.cum_logprobs()[i] <= tree.cum_logprobs()[p]);
            assert!((tree.tokens()[i] as usize) < d.vocab());
        }
    }
}

#[test]
fn reset_and_fresh_sessions_draft_identically() {
    let (d, embed) = tiny();
    let policy = Eagle3Policy::default();
    let mut s = Eagle3Session::new(&d, 64, policy).unwrap();
    let first = run_rounds(&mut s, &embed, 4);
    s.reset();
    assert_eq!((s.root(), s.context_entries()), (None, 0));
    let again = run_rounds(&mut s, &embed, 4);
    assert_eq!(first, again);
    let mut fresh = Eagle3Session::new(&d, 64, policy).unwrap();
    assert_eq!(first, run_rounds(&mut fresh, &embed, 4));
    // Prefill also restarts the sequence without an explicit reset.
    assert_eq!(first, run_rounds(&mut s, &embed, 4));
}

#[test]
fn long_prefill_runs_in_chunks_with_the_same_result() {
    let (d, embed) = tiny();
    let w = d.feature_width();
    let s_len = 150;
    let feats = features(s_len, w, 42);
    let tokens: Vec<u32> = (0..=s_len as u32).map(|i| (i * 7 + 3) % 300).collect();
    let positions: Vec<u32> = (0..s_len as u32).collect();
    let mut cache = d.new_cache(s_len, 0);
    let whole = d
        .context_forward(&mut cache, &embed, &feats, &tokens[1..], &positions)
        .unwrap();
    let vd = d.config().draft_vocab;
    let last = &whole.logits[(s_len - 1) * vd..];
    let max = last.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let lse = last.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    let mut order: Vec<usize> = (0..vd).collect();
    order.sort_by(|&a, &b| last[b].total_cmp(&last[a]).then(a.cmp(&b)));

    let mut s = Eagle3Session::new(&d, 200, Eagle3Policy::default()).unwrap();
    s.prefill(&embed, &feats, &tokens).unwrap();
    assert_eq!(s.context_entries(), s_len);
    let mut tree = new_tree();
    s.draft(&embed, &mut tree).unwrap();
    let c = s.candidates();
    for j in 0..10 {
        assert_eq!(c.draft_ids[j] as usize, order[j], "root child {j}");
        let want = (last[order[j]] - max) - lse;
        assert!(
            (c.scores[j] - want).abs() < 1e-4,
            "{} vs {want}",
            c.scores[j]
        );
    }
}

#[test]
fn draft_and_commit_do_not_allocate() {
    let (d, embed) = tiny();
    let w = d.feature_width();
    let feats = features(8, w, 3);
    let mut s = Eagle3Session::new(&d, 256, Eagle3Policy::default()).unwrap();
    let mut tree = new_tree();
    s.prefill(&embed, &feats[..4 * w], &[1, 2, 3, 4, 5])
        .unwrap();
    for step in 0..10u32 {
        let accepted = [10 + step, 20 + step, 30 + step][..(step % 4).min(3) as usize].to_vec();
        let rows = accepted.len() + 1;
        let (r, draft_allocs) = counting::counted(|| s.draft(&embed, &mut tree));
        r.unwrap();
        let (r, commit_allocs) =
            counting::counted(|| s.commit(&embed, &accepted, 40 + step, &feats[..rows * w]));
        r.unwrap();
        assert_eq!(
            (draft_allocs, commit_allocs),
            (0, 0),
            "step {step}: allocations in (draft, commit)"
        );
    }
}

// --- synthetic checkpoints ---

fn synth_config(vocab: usize, draft_vocab: usize) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama",
        "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "intermediate_size": 48, "num_hidden_layers": 1, "vocab_size": vocab,
        "draft_vocab_size": draft_vocab, "target_hidden_size": 24, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "rope_scaling": null, "tie_word_embeddings": false
    })
}

/// Every tensor of a checkpoint as (name, shape, f32 values or i64 values).
type Tensors = Vec<(String, Vec<usize>, Result<Vec<f32>, Vec<i64>>)>;

/// A random checkpoint written by `write_random_eagle3`, read back.
fn synth(vocab: usize, draft_vocab: usize) -> (Eagle3Config, Tensors) {
    let cfg = synth_config(vocab, draft_vocab);
    let dir = std::env::temp_dir().join(format!(
        "specblock-eagle3-{}-{vocab}-{draft_vocab}",
        std::process::id()
    ));
    write_random_eagle3(&dir, &cfg, 7).unwrap();
    let st = SafeTensors::open(&dir.join("model.safetensors")).unwrap();
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let c = Eagle3Config::from_json(&text, "config.json").unwrap();
    let tensors = st
        .entries
        .iter()
        .map(|(name, e)| {
            let data = match e.dtype {
                Dtype::I64 => Err(st.i64(name).unwrap().1),
                _ => Ok(st.f32(name).unwrap().1),
            };
            (name.clone(), e.shape.clone(), data)
        })
        .collect();
    (c, tensors)
}

#[derive(Clone, Copy)]
enum Store {
    F32,
    F16,
    Bf16,
}

fn bytes(tensors: &Tensors, store: Store) -> Vec<u8> {
    let halves: Vec<Vec<u16>> = tensors
        .iter()
        .map(|(_, _, d)| match (d, store) {
            (Ok(v), Store::F16) => v.iter().map(|&x| f32_to_f16(x)).collect(),
            (Ok(v), Store::Bf16) => v.iter().map(|&x| (x.to_bits() >> 16) as u16).collect(),
            _ => Vec::new(),
        })
        .collect();
    let list: Vec<(&str, Vec<usize>, TensorData<'_>)> = tensors
        .iter()
        .zip(&halves)
        .map(|((n, s, d), h)| {
            let data = match (d, store) {
                (Err(i), _) => TensorData::I64(i),
                (Ok(v), Store::F32) => TensorData::F32(v),
                (Ok(_), Store::F16) => TensorData::F16(h),
                (Ok(_), Store::Bf16) => TensorData::BF16(h),
            };
            (n.as_str(), s.clone(), data)
        })
        .collect();
    serialize(&list).unwrap()
}

fn load(c: &Eagle3Config, tensors: &Tensors, store: Store) -> Result<Eagle3Drafter, String> {
    let st = SafeTensors::parse(bytes(tensors, store), "synthetic").map_err(|e| e.0)?;
    Eagle3Drafter::from_safetensors(c.clone(), &st, 1).map_err(|e| e.0)
}

/// Rounds every float to what `store` keeps (truncating bf16, as `bytes` writes it).
fn rounded(tensors: &Tensors, store: Store) -> Tensors {
    let round = |x: f32| match store {
        Store::F32 => x,
        Store::F16 => specblock::io::safetensors::f16_to_f32(f32_to_f16(x)),
        Store::Bf16 => f32::from_bits(x.to_bits() & 0xffff_0000),
    };
    tensors
        .iter()
        .map(|(n, s, d)| {
            let d = match d {
                Ok(v) => Ok(v.iter().map(|&x| round(x)).collect()),
                Err(i) => Err(i.clone()),
            };
            (n.clone(), s.clone(), d)
        })
        .collect()
}

fn embedding(vocab: usize, hidden: usize, seed: u32) -> Vec<f32> {
    features(vocab, hidden, seed)
}

fn trees_of(d: &Eagle3Drafter, embed: &[f32]) -> Vec<Vec<(i32, i32, u32, u32)>> {
    let mut s = Eagle3Session::new(
        d,
        64,
        Eagle3Policy {
            depth: 4,
            top_k: 5,
            budget: 30,
        },
    )
    .unwrap();
    run_rounds(&mut s, embed, 3)
}

#[test]
fn half_precision_and_prefixed_checkpoints_draft_like_f32() {
    let (c, tensors) = synth(200, 80);
    let embed = embedding(c.vocab, c.hidden, 9);
    let reference = trees_of(&load(&c, &tensors, Store::F32).unwrap(), &embed);
    assert_eq!(reference[0].len(), 31);
    for store in [Store::F16, Store::Bf16] {
        // The half file holds exactly the rounded values: the same drafts as an f32 file of them.
        let want = trees_of(
            &load(&c, &rounded(&tensors, store), Store::F32).unwrap(),
            &embed,
        );
        let got = trees_of(&load(&c, &tensors, store).unwrap(), &embed);
        assert_eq!(got, want);
    }
    let prefixed: Tensors = tensors
        .iter()
        .map(|(n, s, d)| (format!("model.{n}"), s.clone(), d.clone()))
        .collect();
    assert_eq!(
        trees_of(&load(&c, &prefixed, Store::F32).unwrap(), &embed),
        reference
    );
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    let (c, tensors) = synth(200, 80);
    for name in [
        "midlayer.mlp.up_proj.weight",
        "fc.weight",
        "midlayer.hidden_norm.weight",
        "lm_head.weight",
    ] {
        let without: Tensors = tensors.iter().filter(|t| t.0 != name).cloned().collect();
        let err = load(&c, &without, Store::F32)
            .err()
            .expect("missing tensor");
        assert!(err.contains(name) && err.contains("missing"), "{err}");
    }
    for name in ["midlayer.self_attn.k_proj.weight", "norm.weight", "d2t"] {
        let bad: Tensors = tensors
            .iter()
            .map(|(n, s, d)| {
                if n != name {
                    return (n.clone(), s.clone(), d.clone());
                }
                let d = match d {
                    Ok(v) => Ok(v[..v.len() - s[s.len() - 1]].to_vec()),
                    Err(i) => Err(i[1..].to_vec()),
                };
                let mut s = s.clone();
                if s.len() == 2 {
                    s[0] -= 1;
                } else {
                    s[0] -= if n == "d2t" { 1 } else { s[0] };
                }
                (n.clone(), s, d)
            })
            .collect();
        let err = load(&c, &bad, Store::F32).err().expect("mis-shaped tensor");
        assert!(err.contains(name) && err.contains("shape"), "{err}");
    }
    // d2t entries must land inside the vocabulary and be one-to-one.
    for bad_value in [500i64, 0] {
        let bad: Tensors = tensors
            .iter()
            .map(|(n, s, d)| match (n.as_str(), d) {
                ("d2t", Err(i)) => {
                    let mut i = i.clone();
                    i[1] = if bad_value == 0 { i[0] - 1 } else { bad_value };
                    (n.clone(), s.clone(), Err(i))
                }
                _ => (n.clone(), s.clone(), d.clone()),
            })
            .collect();
        let err = load(&c, &bad, Store::F32).err().expect("bad d2t");
        assert!(err.contains("d2t"), "{err}");
    }
}

#[test]
fn d2t_may_be_absent_only_for_the_full_vocabulary() {
    let (c, tensors) = synth(200, 80);
    let no_d2t: Tensors = tensors.iter().filter(|t| t.0 != "d2t").cloned().collect();
    let err = load(&c, &no_d2t, Store::F32).err().expect("d2t required");
    assert!(err.contains("d2t"), "{err}");
    let (c, tensors) = synth(90, 90);
    let no_d2t: Tensors = tensors.iter().filter(|t| t.0 != "d2t").cloned().collect();
    let d = load(&c, &no_d2t, Store::F32).unwrap();
    assert_eq!(d.draft_to_target(89), Some(89));
    let embed = embedding(c.vocab, c.hidden, 4);
    assert_eq!(
        trees_of(&d, &embed),
        trees_of(&load(&c, &tensors, Store::F32).unwrap(), &embed),
        "the written d2t of a full vocabulary is the identity"
    );
}

#[test]
fn an_own_embedding_replaces_the_borrowed_one() {
    let (c, tensors) = synth(200, 80);
    let own = embedding(c.vocab, c.hidden, 77);
    let mut with = tensors.clone();
    with.push((
        "embed_tokens.weight".into(),
        vec![c.vocab, c.hidden],
        Ok(own.clone()),
    ));
    let d_own = load(&c, &with, Store::F32).unwrap();
    assert!(d_own.has_own_embedding());
    let d_borrow = load(&c, &tensors, Store::F32).unwrap();
    assert!(!d_borrow.has_own_embedding());
    let want = trees_of(&d_borrow, &own);
    // The borrowed argument is ignored (even an empty one).
    assert_eq!(trees_of(&d_own, &embedding(c.vocab, c.hidden, 1)), want);
    assert_eq!(trees_of(&d_own, &[]), want);
    assert_ne!(trees_of(&d_borrow, &embedding(c.vocab, c.hidden, 1)), want);
    // A mis-shaped own embedding is named.
    let mut bad = tensors.clone();
    bad.push((
        "model.embed_tokens.weight".into(),
        vec![c.vocab - 1, c.hidden],
        Ok(own[c.hidden..].to_vec()),
    ));
    let err = load(&c, &bad, Store::F32).err().unwrap();
    assert!(
        err.contains("embed_tokens.weight") && err.contains("shape"),
        "{err}"
    );
}

#[test]
fn configs_outside_the_contract_are_rejected() {
    let base = synth_config(200, 80);
    let parse = |v: &serde_json::Value| Eagle3Config::from_json(&v.to_string(), "config.json");
    let c = parse(&base).unwrap();
    assert_eq!(
        (c.feature_width(), c.draft_vocab, c.rope_theta),
        (72, 80, 10000.0)
    );
    for (key, value, needle) in [
        (
            "num_hidden_layers",
            serde_json::json!(2),
            "num_hidden_layers",
        ),
        (
            "rope_scaling",
            serde_json::json!({"type": "llama3", "factor": 8.0}),
            "rope_scaling",
        ),
        ("bias", serde_json::json!(true), "bias"),
        (
            "draft_vocab_size",
            serde_json::json!(201),
            "draft_vocab_size",
        ),
        ("num_key_value_heads", serde_json::json!(3), "KV heads"),
        ("hidden_size", serde_json::json!("big"), "hidden_size"),
    ] {
        let mut v = base.clone();
        v[key] = value;
        let err = parse(&v).expect_err(key);
        assert!(err.0.contains(needle), "{key}: {err}");
    }
    // Defaults: V_d = V, H_t = H, theta 10000, head_dim = H / heads.
    let mut v = base.clone();
    for key in [
        "draft_vocab_size",
        "target_hidden_size",
        "rope_theta",
        "head_dim",
        "num_hidden_layers",
    ] {
        v.as_object_mut().unwrap().remove(key);
    }
    v["bias"] = serde_json::json!(false);
    let c = parse(&v).unwrap();
    assert_eq!(
        (c.draft_vocab, c.target_hidden, c.rope_theta, c.head_dim),
        (200, 32, 10000.0, 8)
    );
}

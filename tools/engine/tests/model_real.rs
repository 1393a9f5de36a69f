//! The engine on the real SmolLM2-135M-Instruct: logits and layer features match Hugging Face
//! transformers (fixture from `scripts/reference_fixture.py`), greedy continuations are identical, tree
//! verification reproduces plain decoding at every node, and a speculative greedy loop built on the
//! library's verification emits exactly the plain greedy tokens.

mod support;

use std::sync::OnceLock;

use serde_json::Value;
use specblock::layout;
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify;
use specblock_engine::bench::argmax;
use specblock_engine::decode::generate_ids;
use specblock_engine::model::{Capture, Llama, Logits, Mask, Segment, WeightFormat};

fn model() -> Option<&'static Llama> {
    static MODEL: OnceLock<Option<Llama>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = support::model_path("model_real")?;
            let (loaded, _) = specblock_engine::load::load_gguf(&path).expect("model loads");
            Some(Llama::new(loaded, WeightFormat::F32, 2).expect("model builds"))
        })
        .as_ref()
}

fn fixture() -> Value {
    let text = include_str!("fixtures/reference_logits.json");
    serde_json::from_str(text).expect("fixture parses")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn prefill(
    m: &Llama,
    prompt: &[u32],
    cap: &Capture,
) -> (specblock_engine::model::KvCache, Vec<f32>, Vec<f32>) {
    let mut kv = m.new_cache(prompt.len() + 128);
    let pos: Vec<u32> = (0..prompt.len() as u32).collect();
    let out = m
        .forward(
            Segment {
                kv: &mut kv,
                tokens: prompt,
                positions: &pos,
                mask: Mask::Causal,
                logits: Logits::All,
            },
            cap,
        )
        .expect("prefill");
    (kv, out.logits, out.features)
}

#[test]
fn logits_and_features_match_transformers() {
    let Some(m) = model() else { return };
    let fx = fixture();
    let v = m.config().vocab;
    let h = m.config().hidden;
    let layers = vec![1usize, 14, 26];
    let cap = Capture {
        layers: layers.clone(),
        final_hidden: false,
    };
    let mut worst = 0f64;
    for case in fx["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let (_, logits, features) = prefill(m, &prompt, &cap);
        for row in case["rows"].as_array().unwrap() {
            let p = row["position"].as_u64().unwrap() as usize;
            let r = &logits[p * v..(p + 1) * v];
            assert_eq!(
                argmax(r) as u64,
                row["argmax"].as_u64().unwrap(),
                "argmax at position {p}"
            );
            let want: Vec<f64> = row["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let scale = want.iter().fold(1f64, |a, b| a.max(b.abs()));
            for (id, w) in ids(&row["ids"]).iter().zip(&want) {
                let got = r[*id as usize] as f64;
                let rel = (got - w).abs() / scale;
                worst = worst.max(rel);
                assert!(
                    rel <= 1e-3,
                    "position {p} token {id}: {got} vs transformers {w} (rel {rel:.2e})"
                );
            }
        }
        // Layer outputs at the last position.
        let last = prompt.len() - 1;
        for (slot, f) in case["features_last_position"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            assert_eq!(f["layer"].as_u64().unwrap() as usize, layers[slot]);
            let row = &features[last * 3 * h + slot * h..last * 3 * h + (slot + 1) * h];
            let norm = f["norm"].as_f64().unwrap();
            let got_norm = row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            assert!(
                (got_norm - norm).abs() <= 1e-3 * norm,
                "layer {} norm {got_norm} vs {norm}",
                layers[slot]
            );
            for (j, w) in f["first"].as_array().unwrap().iter().enumerate() {
                let w = w.as_f64().unwrap();
                assert!(
                    (row[j] as f64 - w).abs() <= 1e-3 * norm / (h as f64).sqrt() * 4.0 + 1e-4,
                    "layer {} value {j}: {} vs {w}",
                    layers[slot],
                    row[j]
                );
            }
        }
    }
    eprintln!("worst relative logit difference vs transformers: {worst:.2e}");
}

/// Near-ties (top-two logits closer than this) may legitimately break either way between two f32
/// implementations; comparison stops at the first one.
const TIE_MARGIN: f64 = 0.02;

#[test]
fn greedy_continuations_equal_transformers() {
    let Some(m) = model() else { return };
    let fx = fixture();
    let greedy = specblock::verify::Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    let mut compared = 0;
    for case in fx["cases"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy"]);
        let margins: Vec<f64> = case["greedy_top2_margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let decided = margins
            .iter()
            .position(|&g| g < TIE_MARGIN)
            .unwrap_or(want.len());
        let stats = generate_ids(m, &prompt, want.len(), &greedy, 0, None, |_| {}).unwrap();
        assert_eq!(
            stats.tokens[..decided],
            want[..decided],
            "greedy continuation of {} (the first {decided} tokens have no near-tie)",
            case["messages"]
        );
        compared += decided;
    }
    assert!(
        compared >= 100,
        "only {compared} greedy tokens were clear of near-ties"
    );
}

/// Builds a draft tree from the true greedy continuation (a main branch that goes wrong at `miss`)
/// plus side branches of plausible but wrong tokens.
fn draft_tree(root: u32, truth: &[u32], miss: usize) -> DraftTree {
    let mut t = DraftTree::new(TreeParams {
        max_nodes: 64,
        max_depth: 12,
    })
    .unwrap();
    t.reset(root as i32).unwrap();
    let mut parent = 0;
    for (d, &tok) in truth.iter().enumerate().take(8) {
        let tok = if d == miss { (tok + 1) % 49152 } else { tok };
        let node = t.add(parent, tok as i32, -0.1).unwrap();
        // A sibling at each depth that is always wrong.
        t.add(parent, ((tok + 7) % 49152) as i32, -1.0 - d as f32)
            .unwrap();
        parent = node;
    }
    t.finalize(40).unwrap();
    t
}

#[test]
fn tree_verification_reproduces_plain_decoding_and_speculative_greedy_is_lossless() {
    let Some(m) = model() else { return };
    let fx = fixture();
    let v = m.config().vocab;
    let case = &fx["cases"][0];
    let prompt = ids(&case["prompt_ids"]);
    let greedy = ids(&case["greedy"]);
    for miss in [0usize, 3, 8] {
        let (mut kv, logits, _) = prefill(m, &prompt, &Capture::default());
        let last = prompt.len() - 1;
        let first = argmax(&logits[last * v..(last + 1) * v]);
        assert_eq!(first, greedy[0]);
        // The root is the first generated token; the tree drafts the ones after it.
        let tree = draft_tree(first, &greedy[1..], miss);
        let n = tree.len();
        let mut toks = vec![0i32; n];
        layout::tokens(&tree, &mut toks).unwrap();
        let tokens: Vec<u32> = toks.iter().map(|&t| t as u32).collect();
        let mut pos = vec![0i32; n];
        layout::positions(&tree, kv.len() as u32, &mut pos).unwrap();
        let positions: Vec<u32> = pos.iter().map(|&p| p as u32).collect();
        let mut mask = vec![0u8; n * n];
        layout::mask_dense(&tree, &mut mask).unwrap();
        let base = kv.len();
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
        // Every node's logits equal plain decoding along its path (walking every leaf's path covers
        // every node).
        // (All leaves for the first tree; the deepest path for the others, to keep the test short.)
        let leaves: Vec<usize> = if miss == 0 {
            (0..n)
                .filter(|&i| !tree.parents().contains(&(i as i32)))
                .collect()
        } else {
            vec![n - 1]
        };
        for node in leaves {
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
            let (mut kv2, _, _) = prefill(m, &prompt, &Capture::default());
            for (step, (&node_id, &tok)) in path.iter().zip(&path_tokens).enumerate() {
                let p = [(prompt.len() + step) as u32];
                let o = m
                    .forward(
                        Segment {
                            kv: &mut kv2,
                            tokens: &[tok],
                            positions: &p,
                            mask: Mask::Causal,
                            logits: Logits::Last,
                        },
                        &Capture::default(),
                    )
                    .unwrap();
                let tree_row = &out.logits[node_id * v..(node_id + 1) * v];
                let scale = o.logits.iter().fold(1f32, |a, b| a.max(b.abs()));
                let diff = o
                    .logits
                    .iter()
                    .zip(tree_row)
                    .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
                assert!(
                    diff <= 1e-4 * scale,
                    "node {node_id}: tree logits differ from plain decoding by {diff}"
                );
            }
        }
        // Greedy acceptance: the accepted tokens are a prefix of the plain greedy continuation.
        let argmaxes: Vec<i32> = (0..n)
            .map(|i| argmax(&out.logits[i * v..(i + 1) * v]) as i32)
            .collect();
        let acc = verify::greedy(&tree, &argmaxes).unwrap();
        let emitted: Vec<u32> = acc
            .tokens()
            .iter()
            .map(|&t| t as u32)
            .chain([acc.bonus_token as u32])
            .collect();
        assert_eq!(
            acc.n_accepted as usize,
            miss.min(8),
            "accepted length with the first miss at {miss}"
        );
        assert_eq!(
            &emitted[..],
            &greedy[1..emitted.len() + 1],
            "speculative greedy output"
        );
        // Compact the cache to the accepted path and continue: the next token equals plain greedy.
        let mut keep = vec![0i32; acc.n_accepted as usize + 1];
        acc.keep_list(&mut keep).unwrap();
        kv.compact(base, &keep.iter().map(|&r| r as u32).collect::<Vec<_>>())
            .unwrap();
        let p = [kv.len() as u32];
        let o = m
            .forward(
                Segment {
                    kv: &mut kv,
                    tokens: &[acc.bonus_token as u32],
                    positions: &p,
                    mask: Mask::Causal,
                    logits: Logits::Last,
                },
                &Capture::default(),
            )
            .unwrap();
        assert_eq!(
            argmax(&o.logits),
            greedy[emitted.len() + 1],
            "token after the compacted path"
        );
    }
}

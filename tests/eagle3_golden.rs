//! The Rust EAGLE-3 drafter against the PyTorch reference (tools/train/eagle3_golden.py): on the tiny
//! random drafter, the context forward over 5 entries, drafting steps 1 and 2 (parent-chain
//! visibility), the RoPE tables, and a fresh EAGLE-2 tree (D 3, k 3, T 10) grown by a session. Floats
//! within 1e-4 relative; candidate lists and the tree exactly.

mod golden;

use golden::{close, f32s, fixture, i64s, u32s};
use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Output, Eagle3Policy, Eagle3Session};
use specblock::drafter::ops::rope_inv_freq;
use specblock::io::safetensors::SafeTensors;
use specblock::tree::{DraftTree, TreeParams};

fn check(out: &Eagle3Output, g: &SafeTensors, prefix: &str) {
    for (got, key) in [
        (&out.logits, "logits"),
        (&out.hidden, "h"),
        (&out.normed, "n"),
        (&out.k, "k"),
        (&out.v, "v"),
    ] {
        let name = format!("{prefix}.{key}");
        close(got, &f32s(g, &name), &name);
    }
}

fn setup() -> (Eagle3Drafter, Vec<f32>, SafeTensors) {
    let dir = fixture("eagle3_tiny");
    let drafter = Eagle3Drafter::load_dir(&dir, 2).expect("tiny EAGLE-3 drafter loads");
    assert!(!drafter.has_own_embedding());
    let embed = f32s(
        &SafeTensors::open(&dir.join("embed.safetensors")).unwrap(),
        "model.embed_tokens.weight",
    );
    let g = golden::open("eagle3_golden.safetensors");
    (drafter, embed, g)
}

#[test]
fn forwards_match_the_pytorch_reference() {
    let (d, embed, g) = setup();
    assert_eq!(d.feature_width(), 144);
    assert_eq!(d.vocab(), 300);
    let mut cache = d.new_cache(16, 6);
    let ctx = d
        .context_forward(
            &mut cache,
            &embed,
            &f32s(&g, "context.features"),
            &u32s(&g, "context.tokens"),
            &u32s(&g, "context.positions"),
        )
        .unwrap();
    check(&ctx, &g, "context");
    assert_eq!(cache.entries(), 5);
    close(&cache.keys_row_major(), &f32s(&g, "cache.k"), "cache.k");
    close(&cache.values_row_major(), &f32s(&g, "cache.v"), "cache.v");

    for step in ["step1", "step2"] {
        let parents: Vec<i32> = i64s(&g, &format!("{step}.parent_rows"))
            .iter()
            .map(|&p| p as i32)
            .collect();
        let tokens = u32s(&g, &format!("{step}.tokens"));
        for (&t, &di) in tokens
            .iter()
            .zip(&u32s(&g, &format!("{step}.draft_tokens")))
        {
            assert_eq!(d.draft_to_target(di as usize), Some(t), "{step}: d2t");
        }
        let out = d
            .draft_step(
                &mut cache,
                &embed,
                &f32s(&g, &format!("{step}.hidden")),
                &tokens,
                &u32s(&g, &format!("{step}.positions")),
                &parents,
            )
            .unwrap();
        check(&out, &g, step);
    }
    assert_eq!(
        cache.entries(),
        5,
        "drafting steps leave the committed cache alone"
    );
    assert_eq!(cache.draft_parents(), &[-1, -1, -1, 2, 0, 1]);
    close(
        &cache.draft_keys_row_major(),
        &f32s(&g, "draft.k"),
        "draft.k",
    );
    close(
        &cache.draft_values_row_major(),
        &f32s(&g, "draft.v"),
        "draft.v",
    );

    // RoPE tables for positions 0..15 from the shared inv_freq (angle = f32(pos) * inv_freq).
    let c = d.config();
    let inv = rope_inv_freq(c.head_dim, c.rope_theta);
    let (mut cos, mut sin) = (Vec::new(), Vec::new());
    for p in 0..16 {
        // rotate-half tables repeat the d/2 angles twice
        for _ in 0..2 {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
    }
    close(&cos, &f32s(&g, "rope.cos"), "rope.cos");
    close(&sin, &f32s(&g, "rope.sin"), "rope.sin");
}

#[test]
fn chunked_context_equals_one_batch() {
    let (d, embed, g) = setup();
    let feats = f32s(&g, "context.features");
    let (toks, pos) = (u32s(&g, "context.tokens"), u32s(&g, "context.positions"));
    let fw = d.feature_width();
    let mut cache = d.new_cache(16, 0);
    let a = d
        .context_forward(&mut cache, &embed, &feats[..3 * fw], &toks[..3], &pos[..3])
        .unwrap();
    let b = d
        .context_forward(&mut cache, &embed, &feats[3 * fw..], &toks[3..], &pos[3..])
        .unwrap();
    close(
        &[a.logits, b.logits].concat(),
        &f32s(&g, "context.logits"),
        "split logits",
    );
    close(
        &cache.keys_row_major(),
        &f32s(&g, "cache.k"),
        "split cache.k",
    );
}

#[test]
fn session_tree_matches_the_reference_tree() {
    let (d, embed, g) = setup();
    let params = i64s(&g, "tree.params");
    let policy = Eagle3Policy {
        depth: params[0] as u32,
        top_k: params[1] as u32,
        budget: params[2] as u32 - 1,
    };
    let mut s = Eagle3Session::new(&d, 32, policy).unwrap();
    // Prefill tokens x_0..x_5: the golden entries pair f_t with x_{t+1}; x_0 itself is never read.
    let mut tokens = vec![0u32];
    tokens.extend(u32s(&g, "context.tokens"));
    s.prefill(&embed, &f32s(&g, "context.features"), &tokens)
        .unwrap();
    assert_eq!(s.root(), tokens.last().copied());
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 64,
        max_depth: 8,
    })
    .unwrap();
    s.draft(&embed, &mut tree).unwrap();

    // The candidate pool, exactly (tokens, parents), scores within 1e-4.
    let cand = s.candidates();
    let targets: Vec<u32> = cand
        .draft_ids
        .iter()
        .map(|&i| d.draft_to_target(i as usize).unwrap())
        .collect();
    assert_eq!(targets, u32s(&g, "tree.cand_tokens"), "candidate tokens");
    let want_par: Vec<i32> = i64s(&g, "tree.cand_parents")
        .iter()
        .map(|&p| p as i32)
        .collect();
    assert_eq!(cand.parents, &want_par[..], "candidate parents");
    close(
        cand.scores,
        &f32s(&g, "tree.cand_scores"),
        "candidate scores",
    );
    let selected: Vec<i64> = (0..cand.nodes.len())
        .filter(|&c| cand.nodes[c] >= 0)
        .map(|c| c as i64)
        .collect();
    assert_eq!(selected, i64s(&g, "tree.selected"), "selected candidates");

    // The finalized tree holds exactly the reference nodes; map each back to its insertion id (the
    // reference's node number) to compare token, parent and depth exactly.
    let (wt, wp, wd, ws) = (
        i64s(&g, "tree.tokens"),
        i64s(&g, "tree.parents"),
        i64s(&g, "tree.depths"),
        f32s(&g, "tree.scores"),
    );
    assert_eq!(
        tree.len(),
        wt.len() + 1,
        "budget keeps every reference node"
    );
    let src = tree.source_ids();
    let mut seen = vec![false; wt.len()];
    for i in 1..tree.len() {
        let r = src[i] as usize - 1;
        seen[r] = true;
        assert_eq!(tree.tokens()[i] as i64, wt[r], "node {i} token");
        let parent = tree.parents()[i] as usize;
        assert!(parent < i, "parents precede children");
        assert_eq!(src[parent] as i64, wp[r], "node {i} parent");
        assert_eq!(tree.depths()[i] as i64, wd[r], "node {i} depth");
        close(
            &[tree.cum_logprobs()[i]],
            &[ws[r]],
            &format!("node {i} score"),
        );
    }
    assert!(seen.iter().all(|&x| x));
}

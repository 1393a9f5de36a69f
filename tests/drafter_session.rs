//! The drafting session on the tiny reference drafter: call-order errors, the block-1 greedy chain in
//! the tree, widths from the policy, the budget, and reuse across sequences.

use std::path::PathBuf;

use specblock::drafter::{DraftPolicy, SpecBlockDrafter, SpecBlockSession};
use specblock::io::safetensors::SafeTensors;
use specblock::tree::{DraftTree, TreeParams};

fn setup() -> (SpecBlockDrafter, Vec<f32>) {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures/drafter_tiny"
    ));
    let d = SpecBlockDrafter::load_dir(&dir, 1).unwrap();
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

#[test]
fn call_order_and_input_errors_leave_the_session_usable() {
    let (d, embed) = setup();
    let w = 3 * d.config().target_hidden;
    let mut s = SpecBlockSession::new(&d, 64, DraftPolicy::default()).unwrap();
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 1024,
        max_depth: 16,
    })
    .unwrap();
    assert!(s.draft(&embed, &mut tree).is_err(), "draft before prefill");
    assert!(
        s.prefill(&embed, &features(3, w, 1), &[5]).is_err(),
        "prefill needs the sampled token"
    );
    assert!(
        s.prefill(&embed, &features(2, w, 1), &[5, 6, 7, 8])
            .is_err(),
        "feature rows"
    );
    s.prefill(&embed, &features(3, w, 1), &[5, 6, 7, 8])
        .unwrap();
    assert_eq!(s.root(), Some(8));
    assert!(
        s.commit(&embed, &[], 9, &features(1, w, 2)).is_err(),
        "commit without a draft"
    );
    s.draft(&embed, &mut tree).unwrap();
    assert!(
        s.commit(&embed, &[1], 9, &features(1, w, 2)).is_err(),
        "two entries need two feature rows"
    );
    s.commit(&embed, &[1], 9, &features(2, w, 2)).unwrap();
    assert_eq!(s.root(), Some(9));
    s.draft(&embed, &mut tree).unwrap();
}

#[test]
fn tree_holds_the_greedy_chain_and_respects_the_budget() {
    let (d, embed) = setup();
    let c = d.config().clone();
    let w = 3 * c.target_hidden;
    for budget in [4u32, 20, 90] {
        let mut s = SpecBlockSession::new(
            &d,
            64,
            DraftPolicy {
                budget,
                ..DraftPolicy::default()
            },
        )
        .unwrap();
        let mut tree = DraftTree::new(TreeParams {
            max_nodes: 2048,
            max_depth: 16,
        })
        .unwrap();
        s.prefill(&embed, &features(5, w, 3), &[1, 2, 3, 4, 5, 6])
            .unwrap();
        s.draft(&embed, &mut tree).unwrap();
        assert!(
            tree.len() - 1 <= budget as usize,
            "budget {budget}: {} nodes",
            tree.len() - 1
        );
        assert!(
            tree.deepest() <= 2 * c.slots,
            "two blocks of {} slots",
            c.slots
        );
        assert_eq!(tree.tokens()[0], 6, "root is the last committed token");
        if budget >= 20 {
            assert!(
                tree.deepest() > c.slots / 2 + 1,
                "block 2 extends block 1 (deepest {})",
                tree.deepest()
            );
            let blocks: Vec<u8> = tree.metas().iter().skip(1).map(|m| m.block).collect();
            assert!(blocks.contains(&0) && blocks.contains(&1));
        }
        // Every token is a target id from the draft vocabulary.
        for &t in &tree.tokens()[1..] {
            assert!(
                (0..c.draft_vocab).any(|i| d.draft_to_target(i) == Some(t as u32)),
                "token {t}"
            );
        }
    }
}

#[test]
fn sessions_are_deterministic_and_reusable() {
    let (d, embed) = setup();
    let w = 3 * d.config().target_hidden;
    let run = |s: &mut SpecBlockSession| {
        let mut tree = DraftTree::new(TreeParams {
            max_nodes: 2048,
            max_depth: 16,
        })
        .unwrap();
        s.prefill(&embed, &features(4, w, 7), &[9, 8, 7, 6, 5])
            .unwrap();
        s.draft(&embed, &mut tree).unwrap();
        (tree.tokens().to_vec(), tree.parents().to_vec())
    };
    let mut s = SpecBlockSession::new(&d, 64, DraftPolicy::default()).unwrap();
    let a = run(&mut s);
    let b = run(&mut s);
    assert_eq!(
        a, b,
        "a reused session drafts the same tree for the same input"
    );
}

/// The authors' context protocol: a duplicate draft entry after prefill, popped and replaced when
/// nothing is accepted, kept and followed by a+1 entries otherwise.
#[test]
fn reference_protocol_bookkeeping() {
    let src = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures/drafter_tiny"
    ));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("drafter_tiny_reference");
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"training\"", "\"reference\""),
    )
    .unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let d = SpecBlockDrafter::load_dir(&dir, 1).unwrap();
    assert_eq!(
        d.config().protocol,
        specblock::drafter::ContextProtocol::Reference
    );
    let embed = SafeTensors::open(&src.join("embed.safetensors"))
        .unwrap()
        .f32("model.embed_tokens.weight")
        .unwrap()
        .1;
    let w = 3 * d.config().target_hidden;
    let mut s = SpecBlockSession::new(&d, 64, DraftPolicy::default()).unwrap();
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 2048,
        max_depth: 16,
    })
    .unwrap();
    s.prefill(&embed, &features(4, w, 5), &[1, 2, 3, 4, 5])
        .unwrap();
    assert_eq!(s.context_entries(), 5, "4 prompt entries + the draft entry");
    s.draft(&embed, &mut tree).unwrap();
    s.commit(&embed, &[], 9, &features(1, w, 6)).unwrap();
    assert_eq!(
        s.context_entries(),
        5,
        "nothing accepted: the draft entry is replaced"
    );
    s.draft(&embed, &mut tree).unwrap();
    s.commit(&embed, &[7, 8], 10, &features(3, w, 7)).unwrap();
    assert_eq!(
        s.context_entries(),
        8,
        "two accepted: three entries appended after the draft entry"
    );
    assert_eq!(s.root(), Some(10));
    s.draft(&embed, &mut tree).unwrap();
    assert!(
        s.commit(&embed, &[7], 10, &features(1, w, 7)).is_err(),
        "feature rows must be accepted + 1"
    );
    assert_eq!(s.context_entries(), 8);
}

#[test]
fn seed_pruning_changes_no_tree_and_cuts_block2_at_small_budgets() {
    let (d, embed) = setup();
    let w = 3 * d.config().target_hidden;
    let mut pruned_any = false;
    for budget in [1u32, 2, 3, 5, 8, 13, 20, 90] {
        let policy = |prune_seeds| DraftPolicy {
            budget,
            prune_seeds,
            ..DraftPolicy::default()
        };
        let mut on = SpecBlockSession::new(&d, 64, policy(true)).unwrap();
        let mut off = SpecBlockSession::new(&d, 64, policy(false)).unwrap();
        let params = TreeParams {
            max_nodes: 2048,
            max_depth: 16,
        };
        let (mut t_on, mut t_off) = (
            DraftTree::new(params).unwrap(),
            DraftTree::new(params).unwrap(),
        );
        on.prefill(&embed, &features(4, w, budget), &[3, 1, 4, 1, 5])
            .unwrap();
        off.prefill(&embed, &features(4, w, budget), &[3, 1, 4, 1, 5])
            .unwrap();
        for step in 0..4u32 {
            on.draft(&embed, &mut t_on).unwrap();
            off.draft(&embed, &mut t_off).unwrap();
            assert_eq!(t_on.tokens(), t_off.tokens(), "budget {budget} step {step}");
            assert_eq!(
                t_on.parents(),
                t_off.parents(),
                "budget {budget} step {step}"
            );
            assert_eq!(t_on.cum_logprobs(), t_off.cum_logprobs());
            assert!(on.block2_seeds() <= off.block2_seeds());
            assert!(on.block2_seeds() <= budget as usize);
            pruned_any |= on.block2_seeds() < off.block2_seeds();
            // Accept the first child of the root (if any), then a bonus token.
            let acc: Vec<u32> = if t_on.len() > 1 {
                vec![t_on.tokens()[1] as u32]
            } else {
                vec![]
            };
            let f = features(acc.len() + 1, w, 100 + step);
            on.commit(&embed, &acc, 7 + step, &f).unwrap();
            off.commit(&embed, &acc, 7 + step, &f).unwrap();
        }
    }
    assert!(pruned_any, "small budgets should drop seeds");
}

#[test]
fn max_seeds_limits_block2_to_the_best_seeds() {
    let (d, embed) = setup();
    let w = 3 * d.config().target_hidden;
    let k = d.config().slots;
    let params = TreeParams {
        max_nodes: 2048,
        max_depth: 16,
    };
    let run = |max_seeds: u32| {
        let mut s = SpecBlockSession::new(
            &d,
            64,
            DraftPolicy {
                max_seeds,
                ..DraftPolicy::default()
            },
        )
        .unwrap();
        let mut tree = DraftTree::new(params).unwrap();
        s.prefill(&embed, &features(4, w, 9), &[3, 1, 4, 1, 5])
            .unwrap();
        s.draft(&embed, &mut tree).unwrap();
        (s.block2_seeds(), tree)
    };
    let (all, full) = run(u32::MAX);
    assert!(all > 2, "the tiny drafter seeds more than two ({all})");
    let (none, block1) = run(0);
    assert_eq!(none, 0);
    assert!(block1.deepest() <= k, "block 1 only: depth <= K");
    let (two, pruned) = run(2);
    assert_eq!(two, 2);
    assert!(pruned.deepest() <= 2 * k);
    // Fewer seeds, fewer nodes (the budget of 90 is not what limits these trees).
    assert!(block1.len() < pruned.len());
    assert!(pruned.len() < full.len());
}

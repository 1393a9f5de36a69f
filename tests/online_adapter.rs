//! Online adaptation on the tiny reference drafters: what a verified path records (the drafting rows,
//! the target's tokens, the accepted flags, down to the first rejection), an identity adapter leaves
//! every draft bit-identical, a trained adapter changes the drafts, shapes are checked, and an
//! adapted speculator's iterations (updates included) allocate nothing.

mod counting;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use specblock::adapt::online::{UpdateMode, UpdateParams};
use specblock::adapt::{Arm, PolicyParams, Shape};
use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
use specblock::drafter::online::{AdapterParams, OnlineAdapter, SlotRecord};
use specblock::drafter::{AnyDrafter, DraftPolicy, SpecBlockDrafter, SpecBlockSession};
use specblock::io::safetensors::SafeTensors;
use specblock::tree::{DraftTree, TreeParams};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures"
    ))
    .join(name)
}

fn embedding(dir: &std::path::Path) -> Vec<f32> {
    SafeTensors::open(&dir.join("embed.safetensors"))
        .unwrap()
        .f32("model.embed_tokens.weight")
        .unwrap()
        .1
}

fn features(n: usize, width: usize, seed: u32) -> Vec<f32> {
    (0..n * width)
        .map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn tree() -> DraftTree {
    DraftTree::new(TreeParams {
        max_nodes: 2048,
        max_depth: 16,
    })
    .unwrap()
}

/// An owned copy of a record.
#[derive(Debug)]
struct Rec {
    normed: Vec<f32>,
    logits: Vec<f32>,
    target: u32,
    accepted: bool,
    drafted: bool,
}

fn collect(f: impl FnOnce(&mut dyn FnMut(SlotRecord<'_>))) -> Vec<Rec> {
    let mut out = Vec::new();
    f(&mut |r: SlotRecord<'_>| {
        out.push(Rec {
            normed: r.normed.to_vec(),
            logits: r.logits.to_vec(),
            target: r.target,
            accepted: r.accepted,
            drafted: r.drafted,
        })
    });
    out
}

/// The child of `node` that block 1 drafted greedily at `slot` (the best of its block-1 children).
fn block1_greedy_child(t: &DraftTree, node: usize, slot: u8) -> Option<usize> {
    (0..t.len())
        .filter(|&i| {
            t.parents()[i] == node as i32 && t.metas()[i].block == 0 && t.metas()[i].slot == slot
        })
        .max_by(|&a, &b| t.cum_logprobs()[a].total_cmp(&t.cum_logprobs()[b]))
}

#[test]
fn a_specblock_path_records_its_block1_rows_down_to_the_first_rejection() {
    let dir = fixture("drafter_tiny");
    let (d, embed) = (
        SpecBlockDrafter::load_dir(&dir, 1).unwrap(),
        embedding(&dir),
    );
    let (k, h, vd) = (d.config().slots, d.config().hidden, d.config().draft_vocab);
    let fw = 3 * d.config().target_hidden;
    let prompt = [3u32, 5, 7, 9, 11];
    let feats = features(4, fw, 1);
    let mut s = SpecBlockSession::new(&d, 64, DraftPolicy::default()).unwrap();
    s.set_recording(true).unwrap();
    s.prefill(&embed, &feats, &prompt).unwrap();
    let mut t = tree();
    s.draft(&embed, &mut t).unwrap();

    // The same block 1 from an independent forward: the last entry's K rows.
    let mut cache = d.new_cache(16);
    let bases: Vec<u32> = (1..=4).collect();
    let out = d
        .context_forward(&mut cache, &embed, &feats, &prompt[1..], &bases)
        .unwrap();
    let last = (out.entries - 1) * k;

    // Accept block 1's greedy chain for two slots, then a token no child has (the rejection).
    let a = block1_greedy_child(&t, 0, 0).expect("a depth-1 node");
    let b = block1_greedy_child(&t, a, 1).expect("a depth-2 node");
    let accepted = [t.tokens()[a] as u32, t.tokens()[b] as u32];
    let bonus = 1u32;
    let recs = collect(|sink| s.record_path(&accepted, bonus, sink));
    assert_eq!(recs.len(), 3, "two accepted slots and the rejection");
    for (i, r) in recs.iter().enumerate() {
        let row = last + i;
        assert_eq!(
            r.normed,
            out.normed[row * h..(row + 1) * h],
            "slot {i} normed"
        );
        assert_eq!(
            r.logits,
            out.logits[row * vd..(row + 1) * vd],
            "slot {i} logits"
        );
    }
    assert_eq!(
        recs.iter()
            .map(|r| (r.target, r.accepted))
            .collect::<Vec<_>>(),
        vec![(accepted[0], true), (accepted[1], true), (bonus, false)]
    );
    // Nothing accepted: one record, block 1's slot 0.
    let recs = collect(|sink| s.record_path(&[], 2, sink));
    assert_eq!(recs.len(), 1);
    assert!(!recs[0].accepted);
    assert_eq!(recs[0].normed, out.normed[last * h..(last + 1) * h]);
    // A path through a seed's block 2 records the block-2 rows (different from block 1's).
    let seed_child = (0..t.len()).find(|&i| t.metas()[i].block == 1 && t.depths()[i] >= 2);
    if let Some(c) = seed_child {
        let mut path = vec![c];
        while t.parents()[*path.last().unwrap()] > 0 {
            path.push(t.parents()[*path.last().unwrap()] as usize);
        }
        path.reverse();
        let acc: Vec<u32> = path.iter().map(|&n| t.tokens()[n] as u32).collect();
        let recs = collect(|sink| s.record_path(&acc, 0, sink));
        assert!(recs.len() >= 2 && recs.len() <= acc.len() + 1);
        assert!(recs[..recs.len() - 1].iter().all(|r| r.accepted));
        assert!(
            recs[1..]
                .iter()
                .any(|r| r.normed != out.normed[(last + 1) * h..(last + 2) * h]),
            "a block-2 row differs from block 1's"
        );
    }
    // Not recording: nothing.
    s.set_recording(false).unwrap();
    assert!(collect(|sink| s.record_path(&accepted, bonus, sink)).is_empty());
}

#[test]
fn plain_steps_give_teacher_forced_slots() {
    let dir = fixture("drafter_tiny");
    let (d, embed) = (
        SpecBlockDrafter::load_dir(&dir, 1).unwrap(),
        embedding(&dir),
    );
    let (k, h) = (d.config().slots, d.config().hidden);
    assert_eq!(k, 4, "the counts below assume K = 4");
    let fw = 3 * d.config().target_hidden;
    let prompt = [3u32, 5, 7, 9, 11];
    let feats = features(4, fw, 1);
    let mut s = SpecBlockSession::new(&d, 64, DraftPolicy::default()).unwrap();
    s.set_recording(true).unwrap();
    s.prefill(&embed, &feats, &prompt).unwrap();
    let mut t = tree();
    let bonuses = [21u32, 22, 23];
    for (i, &b) in bonuses.iter().enumerate() {
        s.draft_plain(&mut t).unwrap();
        s.commit(&embed, &[], b, &features(1, fw, 10 + i as u32))
            .unwrap();
    }
    assert!(
        collect(|sink| s.record_stream(sink)).is_empty(),
        "nothing before the flush"
    );
    s.draft(&embed, &mut t).unwrap();
    let recs = collect(|sink| s.record_stream(sink));
    // Block 1 before the plain steps: slots 0..3 -> 21, 22, 23; then entry 21's slots 0, 1 -> 22, 23
    // and entry 22's slot 0 -> 23.
    assert_eq!(
        recs.iter().map(|r| r.target).collect::<Vec<_>>(),
        vec![21, 22, 23, 22, 23, 23]
    );
    assert!(
        recs.iter()
            .all(|r| !r.accepted && !r.drafted && r.logits.is_empty())
    );
    let mut cache = d.new_cache(16);
    let bases: Vec<u32> = (1..=4).collect();
    let out = d
        .context_forward(&mut cache, &embed, &feats, &prompt[1..], &bases)
        .unwrap();
    let last = (out.entries - 1) * k;
    for (i, r) in recs.iter().take(3).enumerate() {
        assert_eq!(r.normed, out.normed[(last + i) * h..(last + i + 1) * h]);
    }
    // The flushed entries' rows, from the same forward continued: entries 21, 22, 23 at bases 5..7.
    let mut more = Vec::new();
    for i in 0..3 {
        more.extend(features(1, fw, 10 + i));
    }
    let out2 = d
        .context_forward(&mut cache, &embed, &more, &bonuses, &[5, 6, 7])
        .unwrap();
    for (r, row) in recs[3..].iter().zip([0usize, 1, k]) {
        assert_eq!(r.normed, out2.normed[row * h..(row + 1) * h]);
    }
    assert!(
        collect(|sink| s.record_stream(sink)).is_empty(),
        "taken once"
    );
}

#[test]
fn an_eagle3_path_records_its_drafting_rows() {
    let dir = fixture("eagle3_tiny");
    let (d, embed) = (Eagle3Drafter::load_dir(&dir, 1).unwrap(), embedding(&dir));
    let fw = d.feature_width();
    let h = d.config().hidden;
    let pol = Eagle3Policy {
        depth: 3,
        top_k: 3,
        budget: 12,
    };
    let prompt = [3u32, 5, 7, 9, 11];
    let feats = features(4, fw, 1);
    let mut s = Eagle3Session::new(&d, 64, pol).unwrap();
    s.set_recording(true).unwrap();
    s.prefill(&embed, &feats, &prompt).unwrap();
    let mut t = tree();
    s.draft(&embed, &mut t).unwrap();
    // Row 0: the last prompt entry's normed output.
    let mut cache = d.new_cache(16, 16);
    let positions: Vec<u32> = (0..4).collect();
    let out = d
        .context_forward(&mut cache, &embed, &feats, &prompt[1..], &positions)
        .unwrap();
    let row0 = &out.normed[(out.rows - 1) * h..out.rows * h];
    // Accept the deepest path.
    let deepest = (0..t.len()).max_by_key(|&i| t.depths()[i]).unwrap();
    let mut path = vec![deepest];
    while t.parents()[*path.last().unwrap()] > 0 {
        path.push(t.parents()[*path.last().unwrap()] as usize);
    }
    path.reverse();
    let acc: Vec<u32> = path.iter().map(|&n| t.tokens()[n] as u32).collect();
    let recs = collect(|sink| s.record_path(&acc, 0, sink));
    assert_eq!(recs[0].normed, row0);
    assert!(recs.iter().all(|r| r.logits.is_empty()));
    assert!(recs[..acc.len().min(recs.len())].iter().all(|r| r.accepted));
    // Every accepted node was expanded except possibly the deepest (depth = policy depth + 1).
    assert!(
        recs.len() >= acc.len(),
        "{} records for {} accepted",
        recs.len(),
        acc.len()
    );
    let recs = collect(|sink| s.record_path(&[], 9, sink));
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].target, recs[0].accepted), (9, false));
}

fn any(name: &str) -> (AnyDrafter, Vec<f32>, usize) {
    let dir = fixture(name);
    let d = AnyDrafter::load_dir(&dir, 1).unwrap();
    let fw = d.feature_width();
    (d, embedding(&dir), fw)
}

fn fixed_arm(eagle3: bool) -> Arm {
    Arm::new(if eagle3 {
        Shape::Eagle3 {
            budget: 8,
            depth: 3,
            top_k: 3,
        }
    } else {
        Shape::SpecBlock {
            budget: 12,
            max_seeds: u32::MAX,
        }
    })
}

fn small_update(mode: UpdateMode) -> AdapterParams {
    AdapterParams {
        capacity: 256,
        update: UpdateParams {
            mode,
            decide_every: 8,
            holdout: 8,
            min_train: 8,
            batch: 32,
            ..UpdateParams::default()
        },
        ..AdapterParams::default()
    }
}

/// Drafts `n` iterations (accepting each tree's first child when it has one) and returns the trees.
fn run(
    sp: &mut specblock::drafter::Speculator<'_>,
    embed: &[f32],
    fw: usize,
    n: usize,
) -> Vec<Vec<(i32, i32)>> {
    let mut t = tree();
    sp.prefill(embed, &features(4, fw, 1), &[1, 2, 3, 4, 5])
        .unwrap();
    let mut out = Vec::new();
    for i in 0..n as u32 {
        sp.draft(embed, &mut t).unwrap();
        out.push(
            (0..t.len())
                .map(|j| (t.tokens()[j], t.parents()[j]))
                .collect(),
        );
        let first = [t.tokens().get(1).copied().unwrap_or(0) as u32];
        let acc: &[u32] = if t.len() > 1 && i % 3 != 0 {
            &first
        } else {
            &[]
        };
        sp.commit(
            embed,
            acc,
            20 + i % 11,
            &features(acc.len() + 1, fw, 50 + i),
        )
        .unwrap();
        sp.feedback(t.len() as u32, acc.len() as u32 + 1, 0.01, Some(0.001))
            .unwrap();
    }
    out
}

#[test]
fn an_identity_adapter_changes_no_draft_and_the_signal_is_recorded() {
    for name in ["drafter_tiny", "eagle3_tiny"] {
        let (d, embed, fw) = any(name);
        let arms = [fixed_arm(name == "eagle3_tiny")];
        let mut plain = d
            .new_speculator(256, &arms, PolicyParams::default())
            .unwrap();
        let mut adapted = d
            .new_speculator(256, &arms, PolicyParams::default())
            .unwrap();
        // Mode Off never updates: the adapter stays the identity.
        let a = OnlineAdapter::new(&d, small_update(UpdateMode::Off))
            .unwrap()
            .into_shared();
        adapted.attach_adapter(a.clone()).unwrap();
        assert_eq!(
            run(&mut plain, &embed, fw, 20),
            run(&mut adapted, &embed, fw, 20),
            "{name}"
        );
        assert_eq!(
            a.lock().unwrap().stats().slots_recorded,
            0,
            "off records nothing"
        );

        let b = OnlineAdapter::new(&d, small_update(UpdateMode::Bandit))
            .unwrap()
            .into_shared();
        let mut rec = d
            .new_speculator(256, &arms, PolicyParams::default())
            .unwrap();
        rec.attach_adapter(b.clone()).unwrap();
        run(&mut rec, &embed, fw, 30);
        let st = b.lock().unwrap().stats();
        assert!(st.slots_recorded >= 30, "{name}: {st:?}");
        assert!(st.updates.decisions > 0, "{name}: {st:?}");
        assert!(rec.detach_adapter().is_some());
        assert!(rec.adapter().is_none());
    }
}

#[test]
fn an_adapter_of_another_shape_is_refused() {
    let (sb, _, _) = any("drafter_tiny");
    let (e3, _, _) = any("eagle3_tiny");
    let a = OnlineAdapter::new(&e3, AdapterParams::default())
        .unwrap()
        .into_shared();
    let mut sp = sb
        .new_speculator(64, &[fixed_arm(false)], PolicyParams::default())
        .unwrap();
    assert!(sp.attach_adapter(a).is_err());
    assert!(sp.adapter().is_none());
    // Bad params.
    for p in [
        AdapterParams {
            rank: 0,
            ..AdapterParams::default()
        },
        AdapterParams {
            capacity: 10,
            ..AdapterParams::default()
        },
        AdapterParams {
            update: UpdateParams {
                horizon_tokens: -1.0,
                ..UpdateParams::default()
            },
            ..AdapterParams::default()
        },
    ] {
        assert!(OnlineAdapter::new(&sb, p).is_err());
    }
}

/// A poisoned or busy adapter never stops drafting.
#[test]
fn a_busy_adapter_skips_recording_without_blocking() {
    let (d, embed, fw) = any("drafter_tiny");
    let a: Arc<Mutex<OnlineAdapter>> = OnlineAdapter::new(&d, small_update(UpdateMode::Bandit))
        .unwrap()
        .into_shared();
    let mut sp = d
        .new_speculator(256, &[fixed_arm(false)], PolicyParams::default())
        .unwrap();
    sp.attach_adapter(a.clone()).unwrap();
    let guard = a.lock().unwrap();
    // Another thread drafts while this one holds the adapter.
    let trees = std::thread::scope(|s| s.spawn(|| run(&mut sp, &embed, fw, 5)).join().unwrap());
    assert_eq!(trees.len(), 5);
    assert_eq!(guard.stats().slots_recorded, 0);
    drop(guard);
}

/// With an adapter attached, whole iterations allocate nothing after warm-up, the iterations that
/// update the adapter included (its buffers are sized at creation), for both drafter kinds and both
/// update modes.
#[test]
fn adapted_iterations_do_not_allocate() {
    for name in ["drafter_tiny", "eagle3_tiny"] {
        for mode in [UpdateMode::Bandit, UpdateMode::Always] {
            let (d, embed, fw) = any(name);
            let eagle3 = name == "eagle3_tiny";
            // Plain steps and drafts: a plain-decoding arm and a drafting one under a policy that
            // explores both.
            let arms = [Arm::new(Shape::Plain), fixed_arm(eagle3)];
            let mut sp = d
                .new_speculator(2048, &arms, PolicyParams::default())
                .unwrap();
            let mut p = small_update(mode);
            // A wide bound: the bandit keeps trying updates, so some run while allocations are counted.
            p.update.exploration = 1e9;
            let a = OnlineAdapter::new(&d, p).unwrap().into_shared();
            sp.attach_adapter(a.clone()).unwrap();
            let mut t = tree();
            sp.prefill(&embed, &features(4, fw, 1), &[1, 2, 3, 4, 5])
                .unwrap();
            let feats = features(4, fw, 9);
            let mut counted_updates = 0;
            for i in 0..300u32 {
                let before = a.lock().unwrap().stats().updates.tried;
                let ((), x) = counting::counted(|| sp.draft(&embed, &mut t).map(|_| ()).unwrap());
                let first = [t.tokens().get(1).copied().unwrap_or(0) as u32];
                let acc: &[u32] = if t.len() > 1 && i % 2 == 0 {
                    &first
                } else {
                    &[]
                };
                let rows = acc.len() + 1;
                let ((), y) = counting::counted(|| {
                    sp.commit(&embed, acc, 40 + i % 9, &feats[..rows * fw])
                        .unwrap()
                });
                let ((), z) = counting::counted(|| {
                    // Flat verification cost (a GPU's): drafting pays, plain steps are probed.
                    sp.feedback(t.len() as u32, rows as u32, 0.001, Some(0.0))
                        .unwrap()
                });
                let updated = a.lock().unwrap().stats().updates.tried != before;
                if i >= 60 {
                    assert_eq!(
                        (x, y, z),
                        (0, 0, 0),
                        "{name} {mode:?} iteration {i} (update: {updated})"
                    );
                    counted_updates += updated as u32;
                }
            }
            let st = a.lock().unwrap().stats();
            assert!(
                counted_updates > 0,
                "{name} {mode:?}: an update ran while counting: {st:?}"
            );
            assert!(
                st.slots_recorded > st.slots_drafted,
                "{name} {mode:?}: plain steps gave teacher-forced slots: {st:?}"
            );
        }
    }
}

//! Drafting under the draft-shape policy, on the tiny reference drafters (SpecBlock and EAGLE-3):
//! deferred plain-step commits give the drafter exactly the context that one commit per step gives
//! (a run longer than the plain-context window: its last entries, at their exact positions),
//! the confidence stop keeps only confident nodes, arms are checked against the session, and a whole
//! adaptive iteration (choose, draft or plain step, commit, feedback) allocates nothing.

mod counting;

use std::path::PathBuf;

use specblock::adapt::{Arm, PolicyParams, Shape};
use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
use specblock::drafter::{
    AnySession, DraftPolicy, PLAIN_CONTEXT_WINDOW, SpecBlockDrafter, SpecBlockSession, Speculator,
    default_arms,
};
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

fn snapshot(t: &DraftTree) -> Vec<(i32, i32, u32)> {
    (0..t.len())
        .map(|i| (t.tokens()[i], t.parents()[i], t.cum_logprobs()[i].to_bits()))
        .collect()
}

/// The operations both session kinds share, for one test body over both.
trait Steps {
    fn prefill(&mut self, e: &[f32], f: &[f32], t: &[u32]);
    fn draft(&mut self, e: &[f32], t: &mut DraftTree);
    fn plain(&mut self, t: &mut DraftTree);
    fn commit(&mut self, e: &[f32], a: &[u32], b: u32, f: &[f32]);
    fn pending(&self) -> usize;
    fn next_position(&self) -> u32;
    fn context_entries(&self) -> usize;
}

macro_rules! steps {
    ($t:ty) => {
        impl Steps for $t {
            fn prefill(&mut self, e: &[f32], f: &[f32], t: &[u32]) {
                <$t>::prefill(self, e, f, t).unwrap()
            }
            fn draft(&mut self, e: &[f32], t: &mut DraftTree) {
                <$t>::draft(self, e, t).unwrap()
            }
            fn plain(&mut self, t: &mut DraftTree) {
                self.draft_plain(t).unwrap()
            }
            fn commit(&mut self, e: &[f32], a: &[u32], b: u32, f: &[f32]) {
                <$t>::commit(self, e, a, b, f).unwrap()
            }
            fn pending(&self) -> usize {
                self.pending_entries()
            }
            fn next_position(&self) -> u32 {
                <$t>::next_position(self)
            }
            fn context_entries(&self) -> usize {
                <$t>::context_entries(self)
            }
        }
    };
}
steps!(SpecBlockSession<'_>);
steps!(Eagle3Session<'_>);

/// `plain` steps deferred then one draft, against one drafted-and-committed step each: same tree, bit
/// for bit (the drafter's forward is batch-invariant) for runs up to the window; a longer run keeps its
/// last `PLAIN_CONTEXT_WINDOW` entries at their exact positions.
fn deferred_equals_immediate(
    a: &mut dyn Steps,
    b: &mut dyn Steps,
    embed: &[f32],
    fw: usize,
    plain: usize,
) {
    let (mut ta, mut tb) = (tree(), tree());
    let prompt = [3u32, 5, 7, 9, 11];
    a.prefill(embed, &features(4, fw, 1), &prompt);
    b.prefill(embed, &features(4, fw, 1), &prompt);
    for i in 0..plain as u32 {
        let f = features(1, fw, 100 + i);
        a.plain(&mut ta);
        assert_eq!(ta.len(), 1, "a plain step is the root alone");
        a.commit(embed, &[], 20 + i % 7, &f);
        b.draft(embed, &mut tb);
        b.commit(embed, &[], 20 + i % 7, &f);
    }
    assert_eq!(
        a.pending(),
        plain.min(PLAIN_CONTEXT_WINDOW),
        "queued entries (the last {PLAIN_CONTEXT_WINDOW} of a longer run)"
    );
    assert_eq!(a.next_position(), b.next_position(), "positions stay exact");
    let entries = a.context_entries();
    a.draft(embed, &mut ta);
    b.draft(embed, &mut tb);
    assert_eq!(a.pending(), 0);
    assert_eq!(
        a.context_entries(),
        entries + plain.min(PLAIN_CONTEXT_WINDOW),
        "the queue reached the drafter in the draft"
    );
    assert_eq!(a.next_position(), b.next_position());
    if plain > PLAIN_CONTEXT_WINDOW {
        // The oldest entries never reached the drafter: the drafts see a context with a gap.
        assert_eq!(
            b.context_entries() - a.context_entries(),
            plain - PLAIN_CONTEXT_WINDOW
        );
        assert!(ta.len() > 1 && tb.len() > 1, "both still draft");
        return;
    }
    assert_eq!(snapshot(&ta), snapshot(&tb), "after {plain} plain steps");
    // And the sequences go on identically.
    let accepted = [ta.tokens()[1] as u32];
    let f = features(2, fw, 7);
    a.commit(embed, &accepted, 30, &f);
    b.commit(embed, &accepted, 30, &f);
    a.draft(embed, &mut ta);
    b.draft(embed, &mut tb);
    assert_eq!(snapshot(&ta), snapshot(&tb));
}

#[test]
fn deferred_plain_steps_give_the_same_drafts() {
    let dir = fixture("drafter_tiny");
    let (d, embed) = (
        SpecBlockDrafter::load_dir(&dir, 1).unwrap(),
        embedding(&dir),
    );
    let fw = 3 * d.config().target_hidden;
    for plain in [1, 5, PLAIN_CONTEXT_WINDOW, 70] {
        let mut a = SpecBlockSession::new(&d, 256, DraftPolicy::default()).unwrap();
        let mut b = SpecBlockSession::new(&d, 256, DraftPolicy::default()).unwrap();
        deferred_equals_immediate(&mut a, &mut b, &embed, fw, plain);
    }
    let dir = fixture("eagle3_tiny");
    let (d, embed) = (Eagle3Drafter::load_dir(&dir, 1).unwrap(), embedding(&dir));
    let fw = d.feature_width();
    let pol = Eagle3Policy {
        depth: 3,
        top_k: 3,
        budget: 8,
    };
    for plain in [1, 5, PLAIN_CONTEXT_WINDOW, 70] {
        let mut a = Eagle3Session::new(&d, 256, pol).unwrap();
        let mut b = Eagle3Session::new(&d, 256, pol).unwrap();
        deferred_equals_immediate(&mut a, &mut b, &embed, fw, plain);
    }
}

#[test]
fn plain_steps_are_checked() {
    let dir = fixture("drafter_tiny");
    let (d, embed) = (
        SpecBlockDrafter::load_dir(&dir, 1).unwrap(),
        embedding(&dir),
    );
    let fw = 3 * d.config().target_hidden;
    let mut s = SpecBlockSession::new(&d, 8, DraftPolicy::default()).unwrap();
    let mut t = tree();
    assert!(s.draft_plain(&mut t).is_err(), "before prefill");
    s.prefill(&embed, &features(4, fw, 1), &[1, 2, 3, 4, 5])
        .unwrap();
    s.draft_plain(&mut t).unwrap();
    assert!(
        s.commit(&embed, &[6], 7, &features(2, fw, 2)).is_err(),
        "a plain step accepts nothing"
    );
    assert!(
        s.commit(&embed, &[], 7, &features(2, fw, 2)).is_err(),
        "one feature row"
    );
    let mut bad = features(1, fw, 3);
    bad[5] = f32::NAN;
    assert!(s.commit(&embed, &[], 7, &bad).is_err(), "NaN features");
    assert!(
        s.commit(&embed, &[], 1 << 30, &features(1, fw, 3)).is_err(),
        "token range"
    );
    s.commit(&embed, &[], 7, &features(1, fw, 3)).unwrap();
    assert_eq!(s.root(), Some(7));
    // The context holds 8 entries: 4 prompt entries + 4 plain steps fit, the fifth does not.
    for i in 0..3 {
        s.draft_plain(&mut t).unwrap();
        s.commit(&embed, &[], 8 + i, &features(1, fw, 4)).unwrap();
    }
    s.draft_plain(&mut t).unwrap();
    assert!(
        s.commit(&embed, &[], 11, &features(1, fw, 5)).is_err(),
        "context capacity"
    );
    s.draft(&embed, &mut t).unwrap();
    assert_eq!(s.context_entries(), 8);
}

#[test]
fn confidence_stop_keeps_only_confident_nodes() {
    let dir = fixture("drafter_tiny");
    let (d, embed) = (
        SpecBlockDrafter::load_dir(&dir, 1).unwrap(),
        embedding(&dir),
    );
    let fw = 3 * d.config().target_hidden;
    let mut s = SpecBlockSession::new(&d, 64, DraftPolicy::default()).unwrap();
    s.prefill(&embed, &features(4, fw, 1), &[1, 2, 3, 4, 5])
        .unwrap();
    let mut t = tree();
    s.set_shape(90, u32::MAX, 0.0).unwrap();
    s.draft(&embed, &mut t).unwrap();
    let full = t.len();
    let best = t.cum_logprobs()[1..]
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    for c in [0.001f32, 0.01, 0.05] {
        s.set_shape(90, u32::MAX, c).unwrap();
        s.draft(&embed, &mut t).unwrap();
        assert!(t.len() <= full);
        assert!(
            t.cum_logprobs()[1..].iter().all(|&lp| lp >= c.ln()),
            "threshold {c}"
        );
    }
    // Above the most probable node: the root alone.
    s.set_shape(90, u32::MAX, (best.exp() * 1.01).min(1.0))
        .unwrap();
    s.draft(&embed, &mut t).unwrap();
    assert_eq!(t.len(), 1);
    assert!(s.set_shape(0, 0, 0.0).is_err() && s.set_shape(4, 0, 1.5).is_err());
}

#[test]
fn arms_must_fit_the_session() {
    let dir = fixture("eagle3_tiny");
    let d = Eagle3Drafter::load_dir(&dir, 1).unwrap();
    let small = Eagle3Policy {
        depth: 3,
        top_k: 3,
        budget: 8,
    };
    let deep = Arm::new(Shape::Eagle3 {
        budget: 8,
        depth: 7,
        top_k: 3,
    });
    let s = Eagle3Session::new(&d, 64, small).unwrap();
    assert!(Speculator::new(AnySession::Eagle3(s), &[deep], PolicyParams::default()).is_err());
    let s = Eagle3Session::new(&d, 64, small).unwrap();
    let sb = Arm::new(Shape::SpecBlock {
        budget: 4,
        max_seeds: 0,
    });
    assert!(Speculator::new(AnySession::Eagle3(s), &[sb], PolicyParams::default()).is_err());
    let s = Eagle3Session::new(&d, 64, small).unwrap();
    assert!(Speculator::new(AnySession::Eagle3(s), &[], PolicyParams::default()).is_err());
}

/// An adaptive iteration: the policy's choice, the draft (or plain step), a commit and the feedback.
fn iterate(
    sp: &mut Speculator,
    embed: &[f32],
    t: &mut DraftTree,
    fw: usize,
    feats: &[f32],
    i: u32,
) {
    let ((), a) = counting::counted(|| {
        sp.draft(embed, t).unwrap();
    });
    let first = [t.tokens().get(1).copied().unwrap_or(0) as u32];
    let accepted: &[u32] = if t.len() > 1 { &first } else { &[] };
    let rows = accepted.len() + 1;
    let ((), b) = counting::counted(|| {
        sp.commit(embed, accepted, 40 + i % 9, &feats[..rows * fw])
            .unwrap()
    });
    let ((), c) = counting::counted(|| {
        // Verification cost that grows with the tree, then a flat one (a GPU): the policy moves from
        // plain steps to drafting, so both run while allocations are counted.
        let verify = if i < 120 {
            0.001 * t.len() as f64
        } else {
            0.001
        };
        sp.feedback(t.len() as u32, rows as u32, verify, Some(0.0))
            .unwrap()
    });
    if i >= 40 {
        assert_eq!(
            (a, b, c),
            (0, 0, 0),
            "iteration {i}: allocations in draft, commit, feedback"
        );
    }
}

#[test]
fn adaptive_iterations_do_not_allocate() {
    for eagle3 in [false, true] {
        let dir = fixture(if eagle3 {
            "eagle3_tiny"
        } else {
            "drafter_tiny"
        });
        let embed = embedding(&dir);
        let (sd, ed);
        let (session, fw) = if eagle3 {
            ed = Eagle3Drafter::load_dir(&dir, 1).unwrap();
            let fw = ed.feature_width();
            (
                AnySession::Eagle3(Eagle3Session::new(&ed, 2048, Eagle3Policy::default()).unwrap()),
                fw,
            )
        } else {
            sd = SpecBlockDrafter::load_dir(&dir, 1).unwrap();
            let fw = 3 * sd.config().target_hidden;
            (
                AnySession::SpecBlock(
                    SpecBlockSession::new(&sd, 2048, DraftPolicy::default()).unwrap(),
                ),
                fw,
            )
        };
        let mut sp =
            Speculator::new(session, default_arms(eagle3), PolicyParams::default()).unwrap();
        let feats = features(4, fw, 9);
        let mut t = tree();
        sp.prefill(&embed, &features(4, fw, 1), &[1, 2, 3, 4, 5])
            .unwrap();
        // Warm-up: every arm's buffers reach their size.
        for i in 0..40 {
            iterate(&mut sp, &embed, &mut t, fw, &feats, i);
        }
        let mut arms = std::collections::HashSet::new();
        for i in 40..400 {
            iterate(&mut sp, &embed, &mut t, fw, &feats, i);
            arms.insert(sp.current_arm().shape == Shape::Plain);
        }
        assert_eq!(arms.len(), 2, "plain steps and drafts both ran");
        assert!(
            sp.feedback(3, 4, 0.01, None).is_err(),
            "more tokens than rows"
        );
        assert!(sp.feedback(3, 1, f64::NAN, None).is_err(), "NaN seconds");
        assert!(
            sp.feedback(3, 1, 0.01, Some(-1.0)).is_err(),
            "negative seconds"
        );
    }
}

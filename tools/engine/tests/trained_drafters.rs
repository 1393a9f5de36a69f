//! The committed trained drafters (models/drafters/) on the real SmolLM2-135M with bf16 weights, the
//! benchmark's setting: greedy speculative output is token for token the plain greedy output, and the
//! drafters really draft — their mean accept length is well above an untrained drafter's 1.0.

#[allow(dead_code)] // this binary uses the prompts, the bf16 model and the greedy check
mod speculation;
mod support;

use std::path::PathBuf;

use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session};
use specblock::drafter::{DraftPolicy, SpecBlockDrafter, SpecBlockSession};
use specblock_engine::model::Llama;
use specblock_engine::speculate::DraftSession;
use speculation::{PROMPTS, assert_greedy_matches_plain, model_bf16};

fn committed(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/drafters"
    ))
    .join(name)
}

/// Greedy speculation over every test prompt (96 tokens each) equals plain greedy decoding; returns
/// the mean accept length over all iterations.
fn greedy_accept_length(m: &Llama, session: &mut dyn DraftSession, what: &str) -> f64 {
    assert_greedy_matches_plain(m, session, &PROMPTS, 96, what)
}

#[test]
fn trained_eagle3_is_lossless_and_accepts() {
    let Some(m) = model_bf16() else { return };
    let mut d = Eagle3Drafter::load_dir(&committed("eagle3"), 2).expect("committed EAGLE-3 loads");
    d.use_bf16_weights();
    for policy in [
        Eagle3Policy::default(),
        Eagle3Policy {
            depth: 4,
            top_k: 4,
            budget: 8,
        },
    ] {
        let mut s = Eagle3Session::new(&d, 512, policy).unwrap();
        let tau = greedy_accept_length(m, &mut s, &format!("trained EAGLE-3 {policy:?}"));
        eprintln!("trained EAGLE-3 {policy:?}: tau {tau:.3}");
        assert!(tau > 1.3, "trained EAGLE-3 {policy:?}: tau {tau:.3}");
    }
}

#[test]
fn trained_specblock_is_lossless_and_accepts() {
    let Some(m) = model_bf16() else { return };
    let mut d =
        SpecBlockDrafter::load_dir(&committed("specblock"), 2).expect("committed SpecBlock loads");
    d.use_bf16_weights();
    // The paper's 90-node tree verifies 91 rows per iteration: one prompt, 48 tokens.
    for (budget, prompts, n) in [(90u32, &PROMPTS[..1], 48), (8, &PROMPTS[..], 96)] {
        let policy = DraftPolicy {
            budget,
            ..DraftPolicy::default()
        };
        let mut s = SpecBlockSession::new(&d, 512, policy).unwrap();
        let what = format!("trained SpecBlock budget {budget}");
        let tau = assert_greedy_matches_plain(m, &mut s, prompts, n, &what);
        eprintln!("trained SpecBlock budget {budget}: tau {tau:.3}");
        assert!(tau > 1.3, "trained SpecBlock budget {budget}: tau {tau:.3}");
    }
}

/// The default adaptive policy (every arm of the ladder, plain steps included, shapes switching between
/// iterations) with both committed drafters: greedy output stays token for token the plain output.
#[test]
fn adaptive_policy_is_lossless_with_both_drafters() {
    use specblock::drafter::AnyDrafter;
    use specblock::drafter::default_arms;
    use specblock_engine::generate::new_speculator;
    let Some(m) = model_bf16() else { return };
    let mut sb =
        AnyDrafter::load_dir(&committed("specblock"), 2).expect("committed SpecBlock loads");
    sb.use_bf16_weights();
    let mut e3 = AnyDrafter::load_dir(&committed("eagle3"), 2).expect("committed EAGLE-3 loads");
    e3.use_bf16_weights();
    let mut s = new_speculator(&sb, 512, default_arms(false)).unwrap();
    let tau = greedy_accept_length(m, &mut s, "adaptive SpecBlock");
    let arms: Vec<u64> = (0..s.policy().arms().len())
        .map(|i| s.arm_summary(i).unwrap().pulls)
        .collect();
    eprintln!("adaptive SpecBlock: tau {tau:.3}, pulls per arm {arms:?}");
    assert!(
        arms.iter().filter(|&&n| n > 0).count() >= 2,
        "several shapes ran: {arms:?}"
    );
    let mut s = new_speculator(&e3, 512, default_arms(true)).unwrap();
    let tau = greedy_accept_length(m, &mut s, "adaptive EAGLE-3");
    eprintln!("adaptive EAGLE-3: tau {tau:.3}");
}

/// Online adaptation with both committed drafters, in the mode that changes the drafter's head most
/// often (an update adopted at every decision point, every few iterations): greedy output stays token
/// for token the plain output while the head the drafts come from keeps changing.
#[test]
fn online_adaptation_is_lossless_with_both_drafters() {
    use specblock::adapt::online::{UpdateMode, UpdateParams};
    use specblock::adapt::{Arm, PolicyParams, Shape};
    use specblock::drafter::AnyDrafter;
    use specblock::drafter::online::{AdapterParams, OnlineAdapter};
    let Some(m) = model_bf16() else { return };
    for (name, arm) in [
        (
            "specblock",
            Shape::SpecBlock {
                budget: 4,
                max_seeds: 0,
            },
        ),
        (
            "eagle3",
            Shape::Eagle3 {
                budget: 4,
                depth: 4,
                top_k: 1,
            },
        ),
    ] {
        let mut d = AnyDrafter::load_dir(&committed(name), 2).expect("committed drafter loads");
        d.use_bf16_weights();
        let mut s = d
            .new_speculator(512, &[Arm::new(arm)], PolicyParams::default())
            .unwrap();
        let params = AdapterParams {
            capacity: 128,
            update: UpdateParams {
                mode: UpdateMode::Always,
                decide_every: 6,
                holdout: 8,
                min_train: 8,
                batch: 32,
                ..UpdateParams::default()
            },
            ..AdapterParams::default()
        };
        let a = OnlineAdapter::new(&d, params).unwrap().into_shared();
        s.attach_adapter(a.clone()).unwrap();
        let tau = greedy_accept_length(m, &mut s, name);
        let st = a.lock().unwrap().stats();
        eprintln!("{name} adapted (always): tau {tau:.3}, {st:?}");
        assert!(st.updates.adopted >= 5, "{name}: the head changed: {st:?}");
        assert!(!a.lock().unwrap().live().is_identity(), "{name}");
    }
}

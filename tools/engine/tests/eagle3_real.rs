//! Speculative decoding with the EAGLE-3 baseline drafter on the real SmolLM2-135M: greedy output is
//! token for token the plain greedy output (random-weight drafters, the paper's tree and a small one),
//! and sampled output has the plain sampler's distribution (empirical total variation over many seeds).

mod speculation;
mod support;

use std::path::PathBuf;

use serde_json::json;
use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session, write_random_eagle3};
use specblock::verify::Sampling;
use speculation::{PROMPTS, assert_greedy_matches_plain, model, model_bf16, sampled_distance};

/// A random EAGLE-3 drafter shaped for SmolLM2 (H 576, features 3 x 576, vocab 49152).
fn drafter(seed: u64) -> Eagle3Drafter {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("random_eagle3_{seed}"));
    let cfg = json!({
        "architectures": ["LlamaForCausalLMEagle3"],
        "hidden_size": 576, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "intermediate_size": 512, "vocab_size": 49152, "draft_vocab_size": 2048,
        "target_hidden_size": 576, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
    });
    write_random_eagle3(&dir, &cfg, seed).expect("write random EAGLE-3 drafter");
    Eagle3Drafter::load_dir(&dir, 1).expect("random EAGLE-3 drafter loads")
}

#[test]
fn greedy_eagle3_equals_plain_greedy() {
    let Some(m) = model() else { return };
    // The paper's tree (depth 7, top-k 10, 59 nodes) on one prompt for 40 tokens, a small tree for
    // 128 tokens on the rest.
    for (seed, policy, prompts, tokens) in [
        (31u64, Eagle3Policy::default(), &PROMPTS[..1], 40),
        (
            32,
            Eagle3Policy {
                depth: 3,
                top_k: 4,
                budget: 10,
            },
            &PROMPTS[..],
            128,
        ),
    ] {
        let d = drafter(seed);
        let mut session = Eagle3Session::new(&d, 512, policy).unwrap();
        assert_greedy_matches_plain(
            m,
            &mut session,
            prompts,
            tokens,
            &format!("seed {seed}, {policy:?}"),
        );
    }
}

#[test]
fn sampled_eagle3_has_the_plain_distribution() {
    // Sampling acceptance does not depend on the weight format: the faster bf16 model.
    let Some(m) = model_bf16() else { return };
    let s = Sampling {
        temperature: 0.9,
        top_k: 20,
        top_p: 0.95,
    };
    let d = drafter(41);
    let policy = Eagle3Policy {
        depth: 2,
        top_k: 3,
        budget: 6,
    };
    let mut session = Eagle3Session::new(&d, 128, policy).unwrap();
    let (tv, _) = sampled_distance(m, &mut session, PROMPTS[1], &s, 2, 300);
    // Two independent samples of 300 from the same law rarely differ by more than this.
    assert!(
        tv < 0.2,
        "total variation {tv:.3} between plain and EAGLE-3 speculative (first two tokens)"
    );
}

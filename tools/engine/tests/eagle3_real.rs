//! Speculative decoding with the EAGLE-3 baseline drafter on the real SmolLM2-135M: greedy output is
//! token for token the plain greedy output (random-weight drafters, the paper's tree and a small one),
//! and sampled output has the plain sampler's distribution (empirical total variation over many seeds).

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::json;
use specblock::drafter::eagle3::{Eagle3Drafter, Eagle3Policy, Eagle3Session, write_random_eagle3};
use specblock::verify::Sampling;
use specblock_engine::decode::generate_ids;
use specblock_engine::model::{Llama, WeightFormat};
use specblock_engine::speculate::speculative_generate;

fn model() -> Option<&'static Llama> {
    static MODEL: OnceLock<Option<Llama>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = support::model_path("eagle3_real")?;
            let (loaded, _) = specblock_engine::load::load_gguf(&path).expect("model loads");
            Some(Llama::new(loaded, WeightFormat::F32, 2).expect("model builds"))
        })
        .as_ref()
}

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

const PROMPTS: [&[u32]; 3] = [
    &[
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 407, 19712, 8182, 2, 198, 1, 4093,
        198,
    ],
    &[504, 3575, 282, 4649, 314],
    &[1, 4093, 198, 4113, 253, 1456, 3917, 281, 29],
];

#[test]
fn greedy_eagle3_equals_plain_greedy() {
    let Some(m) = model() else { return };
    let greedy = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    // The paper's tree (depth 7, top-k 10, 59 nodes) on one prompt, a small tree on the rest.
    for (seed, policy, prompts) in [
        (31u64, Eagle3Policy::default(), &PROMPTS[..1]),
        (
            32,
            Eagle3Policy {
                depth: 3,
                top_k: 4,
                budget: 10,
            },
            &PROMPTS[..],
        ),
    ] {
        let d = drafter(seed);
        let mut session = Eagle3Session::new(&d, 512, policy).unwrap();
        for &prompt in prompts {
            let plain = generate_ids(m, prompt, 128, &greedy, 0, None, |_| {}).unwrap();
            let spec = speculative_generate(m, &mut session, prompt, 128, &greedy, 0, None, |_| {})
                .unwrap();
            assert_eq!(
                spec.tokens, plain.tokens,
                "seed {seed}, {policy:?}, prompt {prompt:?}"
            );
            assert!(spec.iterations > 0);
        }
    }
}

#[test]
fn sampled_eagle3_has_the_plain_distribution() {
    let Some(m) = model() else { return };
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
    let prompt = PROMPTS[1];
    let runs = 300u64;
    let (mut plain, mut spec): (HashMap<Vec<u32>, f64>, HashMap<Vec<u32>, f64>) =
        Default::default();
    for seed in 0..runs {
        let a = generate_ids(m, prompt, 2, &s, seed, None, |_| {})
            .unwrap()
            .tokens;
        let b = speculative_generate(
            m,
            &mut session,
            prompt,
            2,
            &s,
            seed + 2_000_000,
            None,
            |_| {},
        )
        .unwrap()
        .tokens;
        *plain.entry(a).or_default() += 1.0 / runs as f64;
        *spec.entry(b).or_default() += 1.0 / runs as f64;
    }
    let keys: std::collections::HashSet<_> = plain.keys().chain(spec.keys()).cloned().collect();
    let tv: f64 = keys
        .iter()
        .map(|k| (plain.get(k).unwrap_or(&0.0) - spec.get(k).unwrap_or(&0.0)).abs())
        .sum::<f64>()
        / 2.0;
    // Two independent samples of 300 from the same law rarely differ by more than this.
    assert!(
        tv < 0.2,
        "total variation {tv:.3} between plain and EAGLE-3 speculative (first two tokens)"
    );
}

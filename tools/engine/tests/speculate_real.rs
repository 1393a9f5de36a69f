//! Speculative decoding on the real SmolLM2-135M: greedy output is token for token the plain greedy
//! output, and sampled output has the plain sampler's distribution (empirical total variation over many
//! seeds) — with random-weight SpecBlock drafters (acceptance near zero) and with a perturbed oracle
//! drafter (the true continuation with wrong tokens and wrong siblings mixed in), whose trees are
//! accepted several tokens deep, so acceptance, KV compaction and commits are exercised too.

mod speculation;
mod support;

use std::path::PathBuf;

use serde_json::json;
use specblock::drafter::{DraftPolicy, SpecBlockDrafter, SpecBlockSession, write_random_drafter};
use specblock::verify::Sampling;
use specblock_engine::decode::generate_ids;
use specblock_engine::speculate::speculative_generate;
use speculation::{
    Frequencies, PROMPTS, assert_greedy_matches_plain, model, model_bf16, sampled_distance,
    total_variation,
};

/// A random SpecBlock drafter shaped for SmolLM2 (H 576, features 3 x 576, vocab 49152).
fn drafter(seed: u64) -> SpecBlockDrafter {
    drafter_with(seed, "training")
}

fn drafter_with(seed: u64, protocol: &str) -> SpecBlockDrafter {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("random_drafter_{seed}_{protocol}"));
    let cfg = json!({
        "context_protocol": protocol,
        "hidden_size": 576, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "intermediate_size": 512, "vocab_size": 49152, "draft_vocab_size": 2048,
        "diffspec_draft_token_num": 4, "rank_classes": 4, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
    });
    write_random_drafter(&dir, &cfg, seed).expect("write random drafter");
    SpecBlockDrafter::load_dir(&dir, 1).expect("random drafter loads")
}

#[test]
fn greedy_speculation_equals_plain_greedy() {
    let Some(m) = model() else { return };
    // The full default budget (90 nodes: every iteration verifies 91 rows) on one prompt for 40 tokens,
    // a small budget for 128 tokens on the rest, to keep the test short: random drafters are rejected
    // almost everywhere, so the budget does not change what is checked.
    for (seed, budget, prompts, tokens, protocol) in [
        (11u64, 90, &PROMPTS[..1], 40, "training"),
        (12, 12, &PROMPTS[..], 128, "training"),
        (13, 12, &PROMPTS[..1], 128, "reference"),
    ] {
        let d = drafter_with(seed, protocol);
        let mut session = SpecBlockSession::new(
            &d,
            512,
            DraftPolicy {
                budget,
                ..DraftPolicy::default()
            },
        )
        .unwrap();
        assert_greedy_matches_plain(
            m,
            &mut session,
            prompts,
            tokens,
            &format!("drafter seed {seed}"),
        );
    }
}

#[test]
fn sampled_speculation_has_the_plain_distribution() {
    // Sampling acceptance does not depend on the weight format: the faster bf16 model.
    let Some(m) = model_bf16() else { return };
    let s = Sampling {
        temperature: 0.9,
        top_k: 20,
        top_p: 0.95,
    };
    let d = drafter(21);
    let mut session = SpecBlockSession::new(
        &d,
        128,
        DraftPolicy {
            budget: 8,
            ..DraftPolicy::default()
        },
    )
    .unwrap();
    let (tv, most) = sampled_distance(m, &mut session, PROMPTS[1], &s, 2, 300);
    // Two independent samples of 300 from the same law rarely differ by more than this.
    assert!(
        tv < 0.2,
        "total variation {tv:.3} between plain and speculative (first two tokens)"
    );
    assert!(
        most < 0.9,
        "the test needs a non-degenerate distribution (top pair has {most:.2})"
    );
}

/// A drafter that knows the answer, perturbed: it proposes the true greedy continuation with some tokens
/// replaced by wrong ones, plus a wrong sibling at every depth, so verification accepts several tokens
/// per iteration, rejects at a perturbed node, and compacts the KV cache around wrong siblings — the
/// acceptance paths that random drafters (acceptance near zero) never reach.
struct PerturbedOracle {
    truth: Vec<u32>,
    /// Tokens emitted so far; the root is `truth[pos - 1]`.
    pos: usize,
    rng: specblock::rng::CounterRng,
    draws: u64,
    accepted: usize,
    /// Greedy runs check every commit against the truth; sampled runs leave it and only propose.
    strict: bool,
    /// The current root (sampled runs may leave the greedy trajectory).
    root: u32,
}

impl PerturbedOracle {
    fn new(truth: Vec<u32>, seed: u64, strict: bool) -> Self {
        PerturbedOracle {
            truth,
            pos: 0,
            rng: specblock::rng::CounterRng::new(seed),
            draws: 0,
            accepted: 0,
            strict,
            root: 0,
        }
    }

    fn coin(&mut self) -> f64 {
        self.draws += 1;
        self.rng.uniform(self.draws)
    }
}

impl specblock_engine::speculate::DraftSession for PerturbedOracle {
    fn prefill(&mut self, _: &[f32], _: &[f32], tokens: &[u32]) -> Result<(), specblock::Error> {
        self.root = *tokens.last().unwrap();
        if self.strict {
            assert_eq!(self.root, self.truth[0]);
        }
        self.pos = 1;
        Ok(())
    }
    fn draft(
        &mut self,
        _: &[f32],
        tree: &mut specblock::tree::DraftTree,
    ) -> Result<(), specblock::Error> {
        tree.reset(self.root as i32)?;
        // Off the greedy trajectory (sampling), the truth says nothing: propose a short random chain.
        let on_track = self.truth.get(self.pos - 1) == Some(&self.root);
        let depth = 1 + (self.coin() * 7.0) as usize;
        let mut parent = 0;
        for d in 0..depth {
            let Some(&right) = self.truth.get(self.pos + d) else {
                break;
            };
            let right = if on_track {
                right
            } else {
                (right * 7 + 13) % 49152
            };
            let wrong = (right + 1 + (self.coin() * 1000.0) as u32) % 49152;
            let token = if self.coin() < 0.85 { right } else { wrong };
            // The wrong sibling first, so the accepted node is not always the first child.
            tree.add(parent, wrong as i32, -1.0)?;
            parent = tree.add(parent, token as i32, -0.1)?;
        }
        tree.finalize(64)
    }
    fn commit(
        &mut self,
        _: &[f32],
        accepted: &[u32],
        bonus: u32,
        _: &[f32],
    ) -> Result<(), specblock::Error> {
        let a = accepted.len();
        if self.strict {
            assert_eq!(accepted, &self.truth[self.pos..self.pos + a]);
            assert_eq!(bonus, self.truth[self.pos + a]);
        }
        self.pos += a + 1;
        self.root = bonus;
        self.accepted += a;
        Ok(())
    }
}

#[test]
fn greedy_speculation_with_a_perturbed_oracle_accepts_and_stays_lossless() {
    let Some(m) = model() else { return };
    let greedy = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    for (k, &prompt) in PROMPTS.iter().enumerate() {
        let plain = generate_ids(m, prompt, 128 + 8, &greedy, 0, None, |_| {}).unwrap();
        let mut oracle = PerturbedOracle::new(plain.tokens.clone(), 7 + k as u64, true);
        let spec =
            speculative_generate(m, &mut oracle, prompt, 128, &greedy, 0, None, |_| {}).unwrap();
        assert_eq!(spec.tokens, plain.tokens[..128], "prompt {prompt:?}");
        assert!(
            spec.mean_accept_length() > 2.0,
            "the oracle should be accepted often (mean accept length {})",
            spec.mean_accept_length()
        );
        // The last iteration is not committed (generation ends), so the oracle saw at most that many.
        assert!(
            oracle.accepted <= spec.accepted && oracle.accepted > 0,
            "oracle saw {} accepted, the loop counted {}",
            oracle.accepted,
            spec.accepted
        );
    }
}

#[test]
fn sampled_speculation_with_a_perturbed_oracle_has_the_plain_distribution() {
    // Sampling acceptance does not depend on the weight format: the faster bf16 model.
    let Some(m) = model_bf16() else { return };
    let s = Sampling {
        temperature: 0.9,
        top_k: 20,
        top_p: 0.95,
    };
    let greedy = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    let prompt = PROMPTS[1];
    let truth = generate_ids(m, prompt, 12, &greedy, 0, None, |_| {})
        .unwrap()
        .tokens;
    let runs = 300u64;
    let (mut plain, mut spec): (Frequencies, Frequencies) = Default::default();
    let mut accepted = 0;
    for seed in 0..runs {
        let a = generate_ids(m, prompt, 3, &s, seed, None, |_| {})
            .unwrap()
            .tokens;
        let mut oracle = PerturbedOracle::new(truth.clone(), seed, false);
        let st = speculative_generate(
            m,
            &mut oracle,
            prompt,
            3,
            &s,
            seed + 3_000_000,
            None,
            |_| {},
        )
        .unwrap();
        accepted += st.accepted;
        *plain.entry(a).or_default() += 1.0 / runs as f64;
        *spec.entry(st.tokens).or_default() += 1.0 / runs as f64;
    }
    let tv = total_variation(&plain, &spec);
    assert!(
        accepted as u64 > runs / 4,
        "the oracle should be accepted often ({accepted} tokens)"
    );
    // Two independent samples of 300 from the same law (three tokens) rarely differ by more than this.
    assert!(
        tv < 0.25,
        "total variation {tv:.3} between plain and speculative (first three tokens)"
    );
}

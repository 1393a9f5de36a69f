//! Shared by the speculative-decoding tests on the real model: the model, the prompts and the
//! distribution distance.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use specblock::verify::Sampling;
use specblock_engine::decode::generate_ids;
use specblock_engine::model::{Llama, WeightFormat};
use specblock_engine::speculate::{DraftSession, speculative_generate};

/// SmolLM2-135M with f32 weights on 2 threads, loaded once per test binary (None: skipped).
pub fn model() -> Option<&'static Llama> {
    static MODEL: OnceLock<Option<Llama>> = OnceLock::new();
    MODEL.get_or_init(|| load(WeightFormat::F32)).as_ref()
}

/// The same with bf16 weights (the benchmark's setting).
#[allow(dead_code)] // not every test binary runs the bf16 model
pub fn model_bf16() -> Option<&'static Llama> {
    static MODEL: OnceLock<Option<Llama>> = OnceLock::new();
    MODEL.get_or_init(|| load(WeightFormat::Bf16)).as_ref()
}

fn load(format: WeightFormat) -> Option<Llama> {
    let path = crate::support::model_path("speculative decoding on the real model")?;
    let (loaded, _) = specblock_engine::load::load_gguf(&path).expect("model loads");
    Some(Llama::new(loaded, format, 2).expect("model builds"))
}

/// A chat-formatted question, a bare sentence start, and a short chat turn.
pub const PROMPTS: [&[u32]; 3] = [
    &[
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 407, 19712, 8182, 2, 198, 1, 4093,
        198,
    ],
    &[504, 3575, 282, 4649, 314],
    &[1, 4093, 198, 4113, 253, 1456, 3917, 281, 29],
];

/// Empirical frequencies of outcomes, each sample weighing `1 / n`.
pub type Frequencies = HashMap<Vec<u32>, f64>;

/// Total variation distance between two empirical distributions.
pub fn total_variation(a: &Frequencies, b: &Frequencies) -> f64 {
    let keys: HashSet<_> = a.keys().chain(b.keys()).collect();
    keys.iter()
        .map(|k| (a.get(*k).unwrap_or(&0.0) - b.get(*k).unwrap_or(&0.0)).abs())
        .sum::<f64>()
        / 2.0
}

/// Plain greedy decoding of `n` tokens after `prompt`, computed once per model, prompt and length in
/// a test binary: several tests compare against the same plain answers.
pub fn plain_greedy(m: &Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    type Key = (usize, Vec<u32>, usize);
    static CACHE: OnceLock<Mutex<HashMap<Key, Vec<u32>>>> = OnceLock::new();
    let key = (m as *const Llama as usize, prompt.to_vec(), n);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap().get(&key) {
        return t.clone();
    }
    let greedy = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    let tokens = generate_ids(m, prompt, n, &greedy, 0, None, |_| {})
        .unwrap()
        .tokens;
    cache.lock().unwrap().insert(key, tokens.clone());
    tokens
}

/// Greedy speculative output equals plain greedy output, `n` tokens per prompt, with `session`
/// reused across the prompts. Returns the mean accept length over all iterations.
pub fn assert_greedy_matches_plain(
    m: &Llama,
    session: &mut dyn DraftSession,
    prompts: &[&[u32]],
    n: usize,
    what: &str,
) -> f64 {
    let greedy = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
    };
    let (mut emitted, mut iterations) = (0usize, 0usize);
    for &prompt in prompts {
        let plain = plain_greedy(m, prompt, n);
        let spec = speculative_generate(m, session, prompt, n, &greedy, 0, None, |_| {}).unwrap();
        assert_eq!(spec.tokens, plain, "{what}, prompt {prompt:?}");
        assert!(spec.iterations > 0);
        emitted += spec.accepted + spec.iterations;
        iterations += spec.iterations;
    }
    emitted as f64 / iterations as f64
}

/// Plain and speculative sampling of the first `new_tokens` tokens after `prompt` over `runs` seeds
/// each (independent seeds): returns the total variation between the two empirical distributions and
/// the largest plain frequency (the test needs a non-degenerate distribution).
pub fn sampled_distance(
    m: &Llama,
    session: &mut dyn DraftSession,
    prompt: &[u32],
    s: &Sampling,
    new_tokens: usize,
    runs: u64,
) -> (f64, f64) {
    let (mut plain, mut spec): (Frequencies, Frequencies) = Default::default();
    for seed in 0..runs {
        let a = generate_ids(m, prompt, new_tokens, s, seed, None, |_| {})
            .unwrap()
            .tokens;
        let b = speculative_generate(
            m,
            session,
            prompt,
            new_tokens,
            s,
            seed + 1_000_000,
            None,
            |_| {},
        )
        .unwrap()
        .tokens;
        *plain.entry(a).or_default() += 1.0 / runs as f64;
        *spec.entry(b).or_default() += 1.0 / runs as f64;
    }
    let most = plain.values().cloned().fold(0.0, f64::max);
    (total_variation(&plain, &spec), most)
}

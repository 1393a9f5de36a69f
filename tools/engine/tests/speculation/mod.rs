//! Shared by the speculative-decoding tests on the real model: the model, the prompts and the
//! distribution distance.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use specblock_engine::model::{Llama, WeightFormat};

/// SmolLM2-135M with f32 weights on 2 threads, loaded once per test binary (None: skipped).
pub fn model() -> Option<&'static Llama> {
    static MODEL: OnceLock<Option<Llama>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = crate::support::model_path("speculative decoding on the real model")?;
            let (loaded, _) = specblock_engine::load::load_gguf(&path).expect("model loads");
            Some(Llama::new(loaded, WeightFormat::F32, 2).expect("model builds"))
        })
        .as_ref()
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

//! The target layers a drafter reads come from its config (`aux_layer_ids`), not from a constant of
//! the engine: a drafter trained on other layers receives exactly those layers' outputs, and one that
//! names a layer the target lacks is refused before anything runs.

#[allow(dead_code)] // the shared helpers this file does not use
mod speculation;
mod support;

use std::path::PathBuf;

use serde_json::json;
use specblock::drafter::{
    DraftPolicy, DraftSession, SpecBlockDrafter, SpecBlockSession, write_random_drafter,
};
use specblock::tree::DraftTree;
use specblock::verify::Sampling;
use specblock_engine::model::{Capture, Logits, Mask, Segment};
use specblock_engine::speculate::speculative_generate;
use speculation::{PROMPTS, model};

/// A random SpecBlock drafter shaped for SmolLM2 whose features come from `layers`.
fn drafter(layers: &[usize], name: &str) -> SpecBlockDrafter {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("aux_layers_{name}"));
    let cfg = json!({
        "hidden_size": 576, "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 64, "intermediate_size": 256, "vocab_size": 49152, "draft_vocab_size": 1024,
        "diffspec_draft_token_num": 4, "rank_classes": 4, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
        "aux_layer_ids": layers,
    });
    write_random_drafter(&dir, &cfg, 5).expect("write random drafter");
    SpecBlockDrafter::load_dir(&dir, 1).expect("random drafter loads")
}

/// A session that records the feature rows the engine hands it.
struct Recording<'d> {
    inner: SpecBlockSession<'d>,
    prefill_features: Vec<f32>,
}

impl DraftSession for Recording<'_> {
    fn prefill(
        &mut self,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
    ) -> Result<(), specblock::Error> {
        self.prefill_features = features.to_vec();
        self.inner.prefill(embed, features, tokens)
    }
    fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), specblock::Error> {
        self.inner.draft(embed, tree)
    }
    fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), specblock::Error> {
        self.inner.commit(embed, accepted, bonus, features)
    }
    fn aux_layers(&self, target_layers: usize) -> Result<Vec<usize>, specblock::Error> {
        DraftSession::aux_layers(&self.inner, target_layers)
    }
}

/// The target's outputs of `layers` over `prompt`, concatenated per position.
fn target_features(
    m: &specblock_engine::model::Llama,
    prompt: &[u32],
    layers: &[usize],
) -> Vec<f32> {
    let mut kv = m.new_cache(prompt.len());
    let positions: Vec<u32> = (0..prompt.len() as u32).collect();
    m.forward(
        Segment {
            kv: &mut kv,
            tokens: prompt,
            positions: &positions,
            mask: Mask::Causal,
            logits: Logits::Last,
        },
        &Capture {
            layers: layers.to_vec(),
            final_hidden: false,
        },
    )
    .expect("target forward")
    .features
}

#[test]
fn features_come_from_the_drafters_configured_layers() {
    let Some(m) = model() else { return };
    let layers = [3usize, 9, 22];
    let d = drafter(&layers, "3_9_22");
    let mut rec = Recording {
        inner: SpecBlockSession::new(&d, 256, DraftPolicy::default()).unwrap(),
        prefill_features: Vec::new(),
    };
    let prompt = PROMPTS[0];
    let greedy = Sampling {
        temperature: 0.0,
        ..Sampling::default()
    };
    speculative_generate(m, &mut rec, prompt, 4, &greedy, 0, None, |_| {}).unwrap();
    assert_eq!(rec.prefill_features.len(), prompt.len() * 3 * 576);
    assert_eq!(
        rec.prefill_features,
        target_features(m, prompt, &layers),
        "the drafter got other layers than its aux_layer_ids"
    );
    // The default layers ([1, 14, 26] for 30 layers) give other features: the check above can fail.
    let default = specblock::drafter::default_aux_layers(m.config().n_layers);
    assert_ne!(rec.prefill_features, target_features(m, prompt, &default));
}

#[test]
fn a_drafter_naming_a_missing_layer_is_refused() {
    let Some(m) = model() else { return };
    let d = drafter(&[3, 9, 30], "3_9_30");
    let mut s = SpecBlockSession::new(&d, 256, DraftPolicy::default()).unwrap();
    let greedy = Sampling {
        temperature: 0.0,
        ..Sampling::default()
    };
    let e = speculative_generate(m, &mut s, PROMPTS[0], 4, &greedy, 0, None, |_| {})
        .expect_err("layer 30 of a 30-layer target");
    assert!(e.to_string().contains("aux_layer_ids"), "{e}");
}

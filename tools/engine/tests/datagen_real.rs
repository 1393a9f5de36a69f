//! `specblock datagen` on the real model: shards hold consistent tokens, masks and features; the
//! features of a batched, incrementally generated sequence equal one prefill over that sequence; a
//! second run resumes with new prompts.

mod support;

use std::path::PathBuf;

use specblock::io::safetensors::SafeTensors;
use specblock_engine::datagen::{DatagenConfig, run};
use specblock_engine::model::{Capture, Llama, Logits, Mask, Segment, WeightFormat};
use specblock_engine::speculate::aux_layers;
use specblock_engine::tokenizer::Tokenizer;

/// The real model (f32) and its tokenizer, and an emptied output directory `dir` under the target's
/// temporary folder; `None` when the model is absent and may be skipped.
fn setup(dir: &str) -> Option<(Llama, Tokenizer, PathBuf)> {
    let path = support::model_path("datagen_real")?;
    let (loaded, gguf) = specblock_engine::load::load_gguf(&path).unwrap();
    let tok = Tokenizer::from_gguf(&gguf).unwrap();
    let m = Llama::new(loaded, WeightFormat::F32, 2).unwrap();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(dir);
    let _ = std::fs::remove_dir_all(&out);
    Some((m, tok, out))
}

/// The target's aux features from one causal prefill over all but the last token of `seq` (the rows
/// datagen stores for that sequence).
fn prefill_features(m: &Llama, seq: &[u32]) -> Vec<f32> {
    let mut kv = m.new_cache(seq.len());
    let pos: Vec<u32> = (0..seq.len() as u32 - 1).collect();
    let cap = Capture {
        layers: aux_layers(m.config().n_layers),
        final_hidden: false,
    };
    m.forward(
        Segment {
            kv: &mut kv,
            tokens: &seq[..seq.len() - 1],
            positions: &pos,
            mask: Mask::Causal,
            logits: Logits::None,
        },
        &cap,
    )
    .unwrap()
    .features
}

/// Stored features (f16 in the shard) equal `want` within f16 rounding of its largest value.
fn assert_f16_close(stored: &[f32], want: &[f32]) {
    assert_eq!(stored.len(), want.len());
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    for (x, y) in stored.iter().zip(want) {
        assert!((x - y).abs() <= 2e-3 * scale, "{x} vs {y}");
    }
}

#[test]
fn shards_are_consistent_and_runs_resume() {
    let Some((m, tok, out)) = setup("datagen") else {
        return;
    };
    let prompts: Vec<String> = [
        "Name a prime number.",
        "Say hi.",
        "What is 2+2?",
        "Spell cat.",
    ]
    .map(String::from)
    .to_vec();
    let cfg = DatagenConfig {
        max_new_tokens: 6,
        batch: 2,
        target_tokens: 8,
        shard_sequences: 2,
        seed: 3,
    };
    run(&m, &tok, &prompts, &out, &cfg).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let first_done = manifest["done_prompts"].as_array().unwrap().len();
    assert!(first_done >= 2, "{manifest}");

    let shard = SafeTensors::open(&out.join("shard-00000.safetensors")).unwrap();
    let tokens = shard.i64("tokens").unwrap().1;
    let mask = shard.i64("loss_mask").unwrap().1;
    let offsets = shard.i64("seq_offsets").unwrap().1;
    let (fshape, feats) = shard.f32("features").unwrap();
    let h = m.config().hidden;
    assert_eq!(fshape, vec![tokens.len(), 3 * h]);
    assert_eq!(mask.len(), tokens.len());
    assert_eq!(*offsets.last().unwrap() as usize, tokens.len());
    // The first sequence: its features equal a single prefill over all but its last token.
    let (a, b) = (offsets[0] as usize, offsets[1] as usize);
    let seq: Vec<u32> = tokens[a..b].iter().map(|&t| t as u32).collect();
    assert!(
        mask[a..b].contains(&1) && mask[a] == 0,
        "prompt then assistant tokens"
    );
    assert_f16_close(
        &feats[a * 3 * h..(b - 1) * 3 * h],
        &prefill_features(&m, &seq),
    );
    assert!(
        feats[(b - 1) * 3 * h..b * 3 * h].iter().all(|&x| x == 0.0),
        "the last token was never fed"
    );

    // Resume: more tokens wanted, new prompts only.
    let more = DatagenConfig {
        target_tokens: 16,
        ..cfg
    };
    run(&m, &tok, &prompts, &out, &more).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let done: Vec<u64> = manifest["done_prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(done.len() > first_done);
    let mut sorted = done.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        done.len(),
        "no prompt generated twice: {done:?}"
    );
}

/// Teacher forcing: each sequence is the prompt, then the given answer (cut at `max_new_tokens`, or
/// closed by the end-of-turn token), with the target's features over all but its last token.
#[test]
fn teacher_forced_shards_hold_the_given_answers() {
    let Some((m, tok, out)) = setup("datagen-answers") else {
        return;
    };
    let prompts: Vec<String> = ["Say hi.", "Name a colour."].map(String::from).to_vec();
    let answers: Vec<String> = [
        "Hi!",
        "Blue is a colour, and so are red, green and many others.",
    ]
    .map(String::from)
    .to_vec();
    let cfg = DatagenConfig {
        max_new_tokens: 6,
        batch: 2,
        target_tokens: 1000,
        shard_sequences: 8,
        seed: 3,
    };
    assert!(
        specblock_engine::datagen::run_with_answers(&m, &tok, &prompts, &answers[..1], &out, &cfg)
            .is_err(),
        "one answer per prompt"
    );
    specblock_engine::datagen::run_with_answers(&m, &tok, &prompts, &answers, &out, &cfg).unwrap();
    let shard = SafeTensors::open(&out.join("shard-00000.safetensors")).unwrap();
    let tokens = shard.i64("tokens").unwrap().1;
    let mask = shard.i64("loss_mask").unwrap().1;
    let offsets = shard.i64("seq_offsets").unwrap().1;
    let (_, feats) = shard.f32("features").unwrap();
    let fw = 3 * m.config().hidden;
    assert_eq!(offsets.len(), 3, "both sequences: {offsets:?}");
    let mut seen = Vec::new();
    for s in 0..2 {
        let (a, b) = (offsets[s] as usize, offsets[s + 1] as usize);
        let seq: Vec<u32> = tokens[a..b].iter().map(|&t| t as u32).collect();
        let p = mask[a..b].iter().position(|&x| x == 1).unwrap();
        let i = prompts
            .iter()
            .position(|q| {
                tok.encode(&tok.apply_chat_template(&[("user", q)], true), true) == seq[..p]
            })
            .expect("the sequence starts with one of the prompts");
        let mut want = tok.encode(&answers[i], false);
        if want.len() >= 6 {
            want.truncate(6);
        } else {
            want.push(tok.eos().unwrap());
        }
        assert_eq!(seq[p..], want[..], "answer {i}");
        assert!(feats[a * fw..(b - 1) * fw].iter().any(|&x| x != 0.0));
        assert!(feats[(b - 1) * fw..b * fw].iter().all(|&x| x == 0.0));
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, [0, 1]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    let answer_tokens = mask.iter().filter(|&&x| x == 1).count() as u64;
    assert_eq!(manifest["assistant_tokens"].as_u64(), Some(answer_tokens));
}

/// Later turns: the whole conversation is the context, but the stored sequence starts at its last user
/// turn, and its features are those of the full-context prefill (not of the last turn alone).
#[test]
fn later_turns_store_the_last_turn_with_the_whole_context() {
    let Some((m, tok, out)) = setup("datagen-turns") else {
        return;
    };
    let msg = |role: &str, text: &str| (role.to_string(), text.to_string());
    let conv = vec![
        msg("user", "My name is Ada. Say hi."),
        msg("assistant", "Hi Ada! How can I help you today?"),
        msg("user", "What is my name?"),
    ];
    let cfg = DatagenConfig {
        max_new_tokens: 6,
        batch: 1,
        target_tokens: 1000,
        shard_sequences: 8,
        seed: 3,
    };
    let bad = vec![conv[..2].to_vec()];
    assert!(
        specblock_engine::datagen::run_conversations(&m, &tok, &bad, &out, &cfg).is_err(),
        "a conversation must end on a user turn"
    );
    specblock_engine::datagen::run_conversations(&m, &tok, std::slice::from_ref(&conv), &out, &cfg)
        .unwrap();

    let full = tok.encode(&tok.apply_chat_template(&conv, true), true);
    let earlier = tok.encode(&tok.apply_chat_template(&conv[..2], false), true);
    assert_eq!(
        full[..earlier.len()],
        earlier[..],
        "the template's turns are token prefixes"
    );
    let shard = SafeTensors::open(&out.join("shard-00000.safetensors")).unwrap();
    let tokens: Vec<u32> = shard
        .i64("tokens")
        .unwrap()
        .1
        .iter()
        .map(|&t| t as u32)
        .collect();
    let mask = shard.i64("loss_mask").unwrap().1;
    let (_, feats) = shard.f32("features").unwrap();
    let fw = 3 * m.config().hidden;
    let p = mask.iter().position(|&x| x == 1).unwrap();
    assert_eq!(
        tokens[..p],
        full[earlier.len()..],
        "the stored prompt is the last turn"
    );
    assert!(tokens.len() > p);

    // The features of the stored rows equal a prefill over the whole conversation and the answer.
    let seq: Vec<u32> = earlier.iter().chain(&tokens).copied().collect();
    assert_f16_close(
        &feats[..(tokens.len() - 1) * fw],
        &prefill_features(&m, &seq)[earlier.len() * fw..],
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["assistant_tokens"].as_u64(),
        Some((tokens.len() - p) as u64)
    );
}

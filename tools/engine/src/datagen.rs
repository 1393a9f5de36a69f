//! `specblock datagen`: self-distilled training data. The target answers training prompts (a
//! temperature drawn per conversation: half greedy, half sampled), several sequences per forward, and
//! every position's aux features (layers [1, L/2-1, L-4]) and final normed hidden are kept. Shards are
//! safetensors files; `manifest.json` lists them with counts and hashes and makes runs resumable.
//!
//! [`run_with_answers`] is the cheaper alternative: given each prompt's original answer (ShareGPT's
//! reply), it feeds prompt and answer through the target in one prefill (teacher forcing) instead of
//! generating, and stores the same rows. The soft labels (the final hidden) are still the target's;
//! the text the drafter conditions on is a human's or another model's, not the target's own.
//!
//! [`run_conversations`] answers later turns: each item is a whole conversation so far (earlier replies
//! included) ending on a user turn. The whole conversation is prefilled, but only the rows from the last
//! user turn on are stored, so a shard row costs the same whatever the turn.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};
use specblock::io::safetensors::{TensorData, f32_to_f16, serialize};
use specblock::rng::CounterRng;
use specblock::verify::{self, Sampling};

use crate::error::{Error, Result};
use crate::model::{Capture, KvCache, Llama, Logits, Mask, Segment};
use crate::speculate::aux_layers;
use crate::tokenizer::Tokenizer;

/// What to generate.
#[derive(Clone, Debug)]
pub struct DatagenConfig {
    /// Most new tokens per answer.
    pub max_new_tokens: usize,
    /// Sequences decoded together.
    pub batch: usize,
    /// Stop once this many assistant tokens exist (over all shards).
    pub target_tokens: usize,
    /// Sequences per shard.
    pub shard_sequences: usize,
    /// Seed for temperatures and sampling.
    pub seed: u64,
}

/// One chat message of a training conversation: (role, content), e.g. ("user", "Hi").
pub type Message = (String, String);

/// One sequence being generated.
struct Active {
    prompt_index: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Rows before this (the earlier turns of a conversation) are fed but not stored.
    keep_from: usize,
    kv: KvCache,
    /// Rows of features / final hidden, one per fed position.
    features: Vec<f32>,
    hidden: Vec<f32>,
    sampling: Sampling,
    pending: Vec<u32>,
    done: bool,
}

/// A finished sequence ready for a shard.
struct Finished {
    prompt_index: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    features: Vec<f32>,
    hidden: Vec<f32>,
}

fn load_manifest(path: &Path) -> Result<Value> {
    if !path.exists() {
        return Ok(json!({"shards": [], "done_prompts": [], "assistant_tokens": 0}));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Format(format!("{}: {e}", path.display())))
}

/// Runs data generation over `prompts` (texts) into `out_dir`, resuming from its manifest.
pub fn run(
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[String],
    out_dir: &Path,
    cfg: &DatagenConfig,
) -> Result<()> {
    run_inner(model, tok, &single_turns(prompts), None, out_dir, cfg)
}

/// Runs data generation over whole `conversations` into `out_dir`, resuming from its manifest: the
/// target answers each conversation's last message, which must be a user turn. The earlier turns are
/// fed as context; the stored sequence starts at the last user turn (see the module docs).
pub fn run_conversations(
    model: &Llama,
    tok: &Tokenizer,
    conversations: &[Vec<Message>],
    out_dir: &Path,
    cfg: &DatagenConfig,
) -> Result<()> {
    for (n, conv) in conversations.iter().enumerate() {
        match conv.last() {
            Some((role, _)) if role == "user" => {}
            _ => {
                return Err(Error::Format(format!(
                    "conversation {n} does not end on a user turn"
                )));
            }
        }
    }
    run_inner(model, tok, conversations, None, out_dir, cfg)
}

fn single_turns(prompts: &[String]) -> Vec<Vec<Message>> {
    prompts
        .iter()
        .map(|p| vec![("user".to_string(), p.clone())])
        .collect()
}

/// Where the stored rows of a conversation start: the first token of its last turn when the earlier
/// turns tokenise to a prefix of the whole (the chat template's special tokens make that the rule);
/// otherwise 0, storing everything.
fn last_turn_start(tok: &Tokenizer, conv: &[Message], ids: &[u32]) -> usize {
    if conv.len() < 2 {
        return 0;
    }
    let earlier = tok.encode(
        &tok.apply_chat_template(&conv[..conv.len() - 1], false),
        true,
    );
    if earlier.len() < ids.len() && ids[..earlier.len()] == earlier[..] {
        earlier.len()
    } else {
        0
    }
}

/// Teacher-forced data over `prompts` and their `answers` (one per prompt) into `out_dir`, resuming
/// from its manifest: each answer (its first `cfg.max_new_tokens` tokens, then the end-of-turn token
/// when it fits) is fed after its prompt in one prefill; `cfg.batch` sequences share a forward.
pub fn run_with_answers(
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[String],
    answers: &[String],
    out_dir: &Path,
    cfg: &DatagenConfig,
) -> Result<()> {
    if answers.len() != prompts.len() {
        return Err(Error::Format(format!(
            "{} answers for {} prompts",
            answers.len(),
            prompts.len()
        )));
    }
    run_inner(
        model,
        tok,
        &single_turns(prompts),
        Some(answers),
        out_dir,
        cfg,
    )
}

fn run_inner(
    model: &Llama,
    tok: &Tokenizer,
    prompts: &[Vec<Message>],
    answers: Option<&[String]>,
    out_dir: &Path,
    cfg: &DatagenConfig,
) -> Result<()> {
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error::Io(format!("{}: {e}", out_dir.display())))?;
    let manifest_path = out_dir.join("manifest.json");
    let mut manifest = load_manifest(&manifest_path)?;
    let done: std::collections::HashSet<usize> = manifest["done_prompts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().map(|x| x as usize))
                .collect()
        })
        .unwrap_or_default();
    let mut total = manifest["assistant_tokens"].as_u64().unwrap_or(0) as usize;
    let eos = tok.eos();
    let c = model.config();
    let cap = Capture {
        layers: aux_layers(c.n_layers),
        final_hidden: true,
    };
    let (fw, h) = (3 * c.hidden, c.hidden);
    let rng = CounterRng::new(cfg.seed);
    let mut queue = (0..prompts.len()).filter(|i| !done.contains(i));
    let mut active: Vec<Active> = Vec::new();
    let mut finished: Vec<Finished> = Vec::new();
    let start = Instant::now();
    let start_total = total;
    let mut last_report = Instant::now();
    eprintln!(
        "datagen: {} prompts, {} already done, {total} assistant tokens so far; target {}",
        prompts.len(),
        done.len(),
        cfg.target_tokens
    );
    loop {
        // Refill the batch with new prompts until the target is reached; then finish what is in flight.
        while total < cfg.target_tokens && active.len() < cfg.batch {
            let Some(i) = queue.next() else { break };
            let text = tok.apply_chat_template(&prompts[i], true);
            let ids = tok.encode(&text, true);
            if ids.len() + cfg.max_new_tokens + 1 > c.max_ctx {
                continue;
            }
            let keep_from = last_turn_start(tok, &prompts[i], &ids);
            let mut tokens = ids.clone();
            if let Some(answers) = answers {
                let mut answer = tok.encode(&answers[i], false);
                if answer.len() >= cfg.max_new_tokens {
                    answer.truncate(cfg.max_new_tokens);
                } else if let Some(e) = eos {
                    answer.push(e);
                }
                if answer.is_empty() {
                    continue;
                }
                tokens.extend_from_slice(&answer);
            }
            // Generation feeds the prompt; teacher forcing every token but the last, which (as in
            // generation) is never an input.
            let pending = match answers {
                None => ids.clone(),
                Some(_) => tokens[..tokens.len() - 1].to_vec(),
            };
            // Half the conversations greedy, half sampled at a temperature in [0.5, 1.0).
            let u = rng.uniform(2 * i as u64);
            let sampling = if u < 0.5 {
                crate::decode::GREEDY
            } else {
                Sampling {
                    temperature: u as f32,
                    top_k: 0,
                    top_p: 0.95,
                }
            };
            active.push(Active {
                prompt_index: i,
                prompt_len: ids.len(),
                keep_from,
                kv: model.new_cache(ids.len() + cfg.max_new_tokens + 1),
                pending,
                tokens,
                features: Vec::new(),
                hidden: Vec::new(),
                sampling,
                done: false,
            });
        }
        if active.is_empty() {
            break;
        }
        let positions: Vec<Vec<u32>> = active
            .iter()
            .map(|a| (a.kv.len() as u32..(a.kv.len() + a.pending.len()) as u32).collect())
            .collect();
        let pendings: Vec<Vec<u32>> = active.iter().map(|a| a.pending.clone()).collect();
        let mut segs: Vec<Segment> = active
            .iter_mut()
            .zip(&pendings)
            .zip(&positions)
            .map(|((a, p), pos)| Segment {
                kv: &mut a.kv,
                tokens: p,
                positions: pos,
                mask: Mask::Causal,
                // Teacher forcing samples nothing: no logits to compute.
                logits: if answers.is_some() {
                    Logits::None
                } else {
                    Logits::Last
                },
            })
            .collect();
        let out = model.forward_batch(&mut segs, &cap)?;
        drop(segs);
        let mut row = 0;
        for (s, a) in active.iter_mut().enumerate() {
            let n = pendings[s].len();
            a.features
                .extend_from_slice(&out.features[row * fw..(row + n) * fw]);
            a.hidden
                .extend_from_slice(&out.final_hidden[row * h..(row + n) * h]);
            row += n;
            if answers.is_some() {
                // Teacher forcing: the whole answer went in at once.
                total += a.tokens.len() - a.prompt_len;
                a.done = true;
                continue;
            }
            let logits = &out.logits[s * c.vocab..(s + 1) * c.vocab];
            let step = (a.tokens.len() - a.prompt_len) as u64;
            let next = verify::sample_row(
                logits,
                &a.sampling,
                cfg.seed ^ (a.prompt_index as u64) << 20,
                step,
            )?;
            a.tokens.push(next);
            total += 1;
            a.pending = vec![next];
            if Some(next) == eos || a.tokens.len() - a.prompt_len >= cfg.max_new_tokens {
                a.done = true;
            }
        }
        for a in active.iter_mut().filter(|a| a.done) {
            let k = a.keep_from;
            finished.push(Finished {
                prompt_index: a.prompt_index,
                tokens: a.tokens.split_off(k),
                prompt_len: a.prompt_len - k,
                features: a.features.split_off(k * fw),
                hidden: a.hidden.split_off(k * h),
            });
        }
        active.retain(|a| !a.done);
        if finished.len() >= cfg.shard_sequences {
            write_shard(out_dir, &mut manifest, &mut finished, fw, h)?;
            std::fs::write(
                &manifest_path,
                serde_json::to_string_pretty(&manifest).unwrap_or_default(),
            )
            .map_err(|e| Error::Io(format!("{}: {e}", manifest_path.display())))?;
        }
        if last_report.elapsed().as_secs_f64() >= 2.0 {
            last_report = Instant::now();
            let rate = (total - start_total) as f64 / start.elapsed().as_secs_f64().max(1e-9);
            let eta = (cfg.target_tokens.saturating_sub(total)) as f64 / rate.max(1e-9);
            eprint!(
                "\rdatagen: {total}/{} tokens, {rate:.0} tok/s, ETA {:.0} min   ",
                cfg.target_tokens,
                eta / 60.0
            );
            let _ = std::io::stderr().flush();
        }
    }
    if !finished.is_empty() {
        write_shard(out_dir, &mut manifest, &mut finished, fw, h)?;
    }
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest).unwrap_or_default(),
    )
    .map_err(|e| Error::Io(format!("{}: {e}", manifest_path.display())))?;
    eprintln!(
        "\ndatagen: {} assistant tokens written in {} shards ({})",
        manifest["assistant_tokens"],
        manifest["shards"].as_array().map_or(0, |a| a.len()),
        out_dir.display()
    );
    Ok(())
}

/// Writes the finished sequences as one shard: `tokens` [T] and `loss_mask` [T] (I64; 1 on assistant
/// tokens), `seq_offsets` [n + 1], `features` [T, 3H] and `final_hidden` [T, H] in f16 (the last
/// token of each sequence was never fed, so its rows are zero).
fn write_shard(
    dir: &Path,
    manifest: &mut Value,
    finished: &mut Vec<Finished>,
    fw: usize,
    h: usize,
) -> Result<()> {
    let index = manifest["shards"].as_array().map_or(0, |a| a.len());
    let (mut tokens, mut mask, mut offsets) = (Vec::new(), Vec::new(), vec![0i64]);
    let (mut feats, mut hidden) = (Vec::new(), Vec::new());
    for f in finished.iter() {
        for (j, &t) in f.tokens.iter().enumerate() {
            tokens.push(t as i64);
            mask.push(i64::from(j >= f.prompt_len));
        }
        feats.extend(f.features.iter().map(|&x| f32_to_f16(x)));
        feats.extend(std::iter::repeat_n(0u16, fw));
        hidden.extend(f.hidden.iter().map(|&x| f32_to_f16(x)));
        hidden.extend(std::iter::repeat_n(0u16, h));
        offsets.push(tokens.len() as i64);
    }
    let t = tokens.len();
    let bytes = serialize(&[
        ("tokens", vec![t], TensorData::I64(&tokens)),
        ("loss_mask", vec![t], TensorData::I64(&mask)),
        (
            "seq_offsets",
            vec![offsets.len()],
            TensorData::I64(&offsets),
        ),
        ("features", vec![t, fw], TensorData::F16(&feats)),
        ("final_hidden", vec![t, h], TensorData::F16(&hidden)),
    ])
    .map_err(|e| Error::Format(e.to_string()))?;
    let name = format!("shard-{index:05}.safetensors");
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.partial"));
    std::fs::write(&tmp, &bytes).map_err(|e| Error::Io(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let sha = crate::fetch::to_hex(&crate::fetch::sha256(&bytes));
    let prompts: Vec<usize> = finished.iter().map(|f| f.prompt_index).collect();
    if let Some(a) = manifest["shards"].as_array_mut() {
        a.push(json!({"file": name, "sequences": finished.len(), "tokens": t, "sha256": sha}));
    }
    if let Some(a) = manifest["done_prompts"].as_array_mut() {
        a.extend(prompts.iter().map(|&p| json!(p)));
    }
    // Only written sequences count, so a resumed run regenerates what was in flight.
    let added: usize = finished.iter().map(|f| f.tokens.len() - f.prompt_len).sum();
    let before = manifest["assistant_tokens"].as_u64().unwrap_or(0) as usize;
    manifest["assistant_tokens"] = json!(before + added);
    finished.clear();
    Ok(())
}

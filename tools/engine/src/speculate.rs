//! Speculative decoding with a drafter session (SpecBlock or the EAGLE-3 baseline): prefill with feature
//! capture, then per iteration draft a tree (library session), verify it in one target forward with the
//! library's mask and positions, accept greedily or by lossless sampling, compact the KV cache with the
//! keep-list and commit the accepted path's features to the drafter.

use std::time::Instant;

use specblock::layout;
use specblock::tree::{DraftTree, TreeParams};
use specblock::verify::{self, Sampling};

use crate::error::{Error, Result};
use crate::model::{Capture, Llama, Logits, Mask, Segment};

/// What a speculative generation did.
#[derive(Clone, Debug, Default)]
pub struct SpecStats {
    /// Generated tokens (the end-of-turn token included if produced).
    pub tokens: Vec<u32>,
    /// Draft-verify iterations.
    pub iterations: usize,
    /// Draft tokens accepted over all iterations.
    pub accepted: usize,
    /// Seconds in the drafter (tree growth and context refresh).
    pub draft_s: f64,
    /// Seconds in target verification (forward, acceptance, KV compaction).
    pub verify_s: f64,
    /// Seconds of the target prefill (and the drafter's).
    pub prefill_s: f64,
    /// `accepted_at_depth[d]`: iterations that accepted at least `d + 1` draft tokens (so
    /// `accepted_at_depth[d] / iterations` is the acceptance rate at depth `d + 1`).
    pub accepted_at_depth: Vec<usize>,
    /// The arm of each iteration (index into the policy's arms), for sessions with a draft-shape
    /// policy; empty otherwise.
    pub arm_trace: Vec<usize>,
}

impl SpecStats {
    /// Mean tokens emitted per iteration (accepted + bonus).
    pub fn mean_accept_length(&self) -> f64 {
        if self.iterations == 0 {
            0.0
        } else {
            (self.accepted + self.iterations) as f64 / self.iterations as f64
        }
    }
}

/// The library's per-sequence drafting protocol, re-exported where the engine's own trait used to be.
pub use specblock::drafter::DraftSession;

/// Target aux-feature layers of a drafter that names none: [1, L/2 - 1, L - 4] (the library's
/// [`default_aux_layers`](specblock::drafter::default_aux_layers)).
pub fn aux_layers(n_layers: usize) -> Vec<usize> {
    specblock::drafter::default_aux_layers(n_layers)
}

/// Generates up to `max_tokens` tokens after `prompt`, speculatively. Greedy output equals plain
/// greedy decoding token for token; sampled output has the same distribution.
#[allow(clippy::too_many_arguments)]
pub fn speculative_generate(
    model: &Llama,
    session: &mut dyn DraftSession,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    seed: u64,
    eos: Option<u32>,
    mut on_token: impl FnMut(u32),
) -> Result<SpecStats> {
    if prompt.is_empty() || max_tokens == 0 {
        return Err(Error::InvalidArgument(
            "empty prompt or max_tokens 0".into(),
        ));
    }
    let cfg = model.config();
    let (v, h) = (cfg.vocab, cfg.hidden);
    // The layers the session's drafter was trained on (its config's aux_layer_ids).
    let cap = Capture {
        layers: session.aux_layers(cfg.n_layers)?,
        final_hidden: false,
    };
    let fw = 3 * h;
    let embed = model.embedding();
    let greedy = sampling.temperature == 0.0;
    let mut stats = SpecStats::default();
    let budget_rows = 256;
    let mut kv = model.new_cache(prompt.len() + max_tokens + budget_rows + 1);
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 4096,
        max_depth: 64,
    })?;

    let t = Instant::now();
    let pos: Vec<u32> = (0..prompt.len() as u32).collect();
    let out = model.forward(
        Segment {
            kv: &mut kv,
            tokens: prompt,
            positions: &pos,
            mask: Mask::Causal,
            logits: Logits::Last,
        },
        &cap,
    )?;
    let first = verify::sample_row(&out.logits, sampling, seed, 0)?;
    let mut chain: Vec<u32> = prompt.to_vec();
    chain.push(first);
    session.prefill(embed, &out.features, &chain)?;
    stats.prefill_s = t.elapsed().as_secs_f64();
    stats.tokens.push(first);
    on_token(first);
    let mut done = Some(first) == eos || max_tokens == 1;

    let mut iteration = 0u64;
    while !done {
        iteration += 1;
        let t = Instant::now();
        session.draft(embed, &mut tree)?;
        stats.draft_s += t.elapsed().as_secs_f64();
        if let Some(arm) = session.current_arm() {
            stats.arm_trace.push(arm);
        }

        let t = Instant::now();
        let n = tree.len();
        let tokens: Vec<u32> = tree.tokens().iter().map(|&x| x as u32).collect();
        let mut pos = vec![0i32; n];
        layout::positions(&tree, kv.len() as u32, &mut pos)?;
        let positions: Vec<u32> = pos.iter().map(|&p| p as u32).collect();
        let mut mask = vec![0u8; n * n];
        layout::mask_dense(&tree, &mut mask)?;
        let base = kv.len();
        let out = model.forward(
            Segment {
                kv: &mut kv,
                tokens: &tokens,
                positions: &positions,
                // A root-only tree (a plain step) is one causal row: the plain decoding path.
                mask: if n == 1 {
                    Mask::Causal
                } else {
                    Mask::Tree(&mask)
                },
                logits: Logits::All,
            },
            &cap,
        )?;
        let acc = if greedy {
            let argmax: Vec<i32> = (0..n)
                .map(|i| crate::bench::argmax(&out.logits[i * v..(i + 1) * v]) as i32)
                .collect();
            verify::greedy(&tree, &argmax)?
        } else {
            // A fresh stream per iteration: the counter-based generator is keyed by (seed, iteration).
            verify::sample(
                &tree,
                &out.logits,
                v,
                sampling,
                seed ^ iteration.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            )?
        };
        let mut keep = vec![0i32; acc.n_accepted as usize + 1];
        acc.keep_list(&mut keep)?;
        let keep_u: Vec<u32> = keep.iter().map(|&r| r as u32).collect();
        kv.compact(base, &keep_u)?;
        let mut feats = Vec::with_capacity(keep.len() * fw);
        for &r in &keep {
            feats.extend_from_slice(&out.features[r as usize * fw..(r as usize + 1) * fw]);
        }
        let verify_s = t.elapsed().as_secs_f64();
        stats.verify_s += verify_s;
        stats.iterations += 1;
        stats.accepted += acc.n_accepted as usize;
        let depth = acc.n_accepted as usize;
        if stats.accepted_at_depth.len() < depth {
            stats.accepted_at_depth.resize(depth, 0);
        }
        for d in stats.accepted_at_depth.iter_mut().take(depth) {
            *d += 1;
        }

        let accepted: Vec<u32> = acc.tokens().iter().map(|&x| x as u32).collect();
        let bonus = acc.bonus_token as u32;
        for &tok in accepted.iter().chain([bonus].iter()) {
            stats.tokens.push(tok);
            on_token(tok);
            if Some(tok) == eos || stats.tokens.len() >= max_tokens {
                done = true;
                break;
            }
        }
        if !done {
            let t = Instant::now();
            session.commit(embed, &accepted, bonus, &feats)?;
            stats.draft_s += t.elapsed().as_secs_f64();
        }
        // The feedback may update an online adapter: drafting-side time, counted as such.
        let t = Instant::now();
        session.feedback(n as u32, acc.n_accepted + 1, verify_s)?;
        stats.draft_s += t.elapsed().as_secs_f64();
    }
    Ok(stats)
}

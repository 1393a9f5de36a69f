//! Plain decoding: prefill, then one token per forward, greedy or sampled with the library's sampler
//! (the same distribution speculative verification accepts against).

use std::time::Instant;

use specblock::verify::{self, Sampling};

use crate::error::{Error, Result};
use crate::model::{Capture, Llama, Logits, Mask, Segment};

/// What a generation did.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
    /// Generated token ids (the end-of-turn token included if it was produced).
    pub tokens: Vec<u32>,
    /// Seconds of prefill.
    pub prefill_s: f64,
    /// Seconds of decoding after the prefill.
    pub decode_s: f64,
}

/// Greedy decoding: temperature 0 (argmax), no top-k, no top-p.
pub const GREEDY: Sampling = Sampling {
    temperature: 0.0,
    top_k: 0,
    top_p: 1.0,
};

/// Plain decoding of `prompt` for up to `max_tokens` tokens, stopping after `eos`. `on_token` sees each
/// token as it is produced.
pub fn generate_ids(
    model: &Llama,
    prompt: &[u32],
    max_tokens: usize,
    sampling: &Sampling,
    seed: u64,
    eos: Option<u32>,
    mut on_token: impl FnMut(u32),
) -> Result<Stats> {
    if prompt.is_empty() {
        return Err(Error::InvalidArgument("empty prompt".into()));
    }
    let mut kv = model.new_cache(prompt.len() + max_tokens + 1);
    let mut stats = Stats {
        prompt_tokens: prompt.len(),
        ..Stats::default()
    };
    let t = Instant::now();
    let pos: Vec<u32> = (0..prompt.len() as u32).collect();
    let mut logits = model
        .forward(
            Segment {
                kv: &mut kv,
                tokens: prompt,
                positions: &pos,
                mask: Mask::Causal,
                logits: Logits::Last,
            },
            &Capture::default(),
        )?
        .logits;
    stats.prefill_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for step in 0..max_tokens {
        let next = verify::sample_row(&logits, sampling, seed, step as u64)?;
        stats.tokens.push(next);
        on_token(next);
        if Some(next) == eos || step + 1 == max_tokens {
            break;
        }
        let p = [kv.len() as u32];
        logits = model
            .forward(
                Segment {
                    kv: &mut kv,
                    tokens: &[next],
                    positions: &p,
                    mask: Mask::Causal,
                    logits: Logits::Last,
                },
                &Capture::default(),
            )?
            .logits;
    }
    stats.decode_s = t.elapsed().as_secs_f64();
    Ok(stats)
}

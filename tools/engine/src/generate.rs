//! `specblock generate`: a prompt through the chat template, plain decoding, streamed text.

use specblock::verify::Sampling;

use crate::decode::generate_ids;
use crate::error::Result;
use crate::gguf::GgufFile;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;

/// One generation request.
#[derive(Clone, Debug)]
pub struct Request {
    /// The user's message (or raw text when `chat` is false).
    pub prompt: String,
    /// Wrap the prompt in the model's chat template (with its default system turn).
    pub chat: bool,
    /// Maximum new tokens.
    pub max_tokens: usize,
    /// Target sampling parameters; temperature 0 is greedy.
    pub sampling: Sampling,
    /// Seed of the counter-based sampler (token `i` uses counter `i`).
    pub seed: u64,
}

/// The prompt's token ids for a request.
pub fn prompt_ids(tok: &Tokenizer, req: &Request) -> Vec<u32> {
    if req.chat {
        let text = tok.apply_chat_template(&[("user", req.prompt.as_str())], true);
        tok.encode(&text, true)
    } else {
        tok.encode(&req.prompt, false)
    }
}

/// `specblock generate`: streams the answer to stdout and a summary to stderr.
pub fn run_cli(model: &Llama, gguf: &GgufFile, req: &Request) -> Result<()> {
    use std::io::Write;
    let tok = Tokenizer::from_gguf(gguf)?;
    let prompt = prompt_ids(&tok, req);
    let mut stdout = std::io::stdout();
    let mut pending: Vec<u8> = Vec::new();
    let eos = tok.eos();
    let stats = generate_ids(
        model,
        &prompt,
        req.max_tokens,
        &req.sampling,
        req.seed,
        eos,
        |t| {
            if Some(t) == eos {
                return;
            }
            if let Ok(b) = tok.decode_token_bytes(t) {
                pending.extend_from_slice(b);
            }
            // Print whole UTF-8 characters only; keep a split multi-byte character for the next token.
            let valid = match std::str::from_utf8(&pending) {
                Ok(s) => s.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            let _ = stdout.write_all(&pending[..valid]);
            let _ = stdout.flush();
            pending.drain(..valid);
        },
    )?;
    let _ = stdout.write_all(&pending);
    println!();
    let n = stats.tokens.len();
    eprintln!(
        "[{} prompt tokens, prefill {:.2} s; {n} tokens in {:.2} s = {:.1} tok/s]",
        stats.prompt_tokens,
        stats.prefill_s,
        stats.decode_s,
        if stats.decode_s > 0.0 {
            (n.saturating_sub(1)) as f64 / stats.decode_s
        } else {
            0.0
        }
    );
    Ok(())
}

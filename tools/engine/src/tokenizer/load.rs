//! Building a [`Tokenizer`] from a vocabulary and merges (given directly or read from a GGUF), with the
//! checks that make every later lookup infallible: unique tokens, merges of known tokens whose result
//! is itself a token, and in-range special ids.

use std::collections::HashMap;

use super::{PreTokenizer, SpecialIds, TokenKind, Tokenizer, bpe, byte_level, special};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, MetaValue};

/// Everything a tokenizer is built from, after format-specific parsing.
pub(super) struct Parts {
    pub tokens: Vec<String>,
    pub kinds: Vec<TokenKind>,
    /// Merges in rank order, as (left, right) token texts.
    pub merges: Vec<(String, String)>,
    pub ids: SpecialIds,
    /// The token for a byte without a symbol (HF's `model.unk_token`); such bytes are dropped without one.
    pub unk_fallback: Option<u32>,
    pub pre: PreTokenizer,
    pub chat_template: Option<String>,
}

/// Splits a `"left right"` merge line.
pub(super) fn split_merge(line: &str, rank: usize) -> Result<(String, String)> {
    match line.split_once(' ') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
            Ok((a.to_string(), b.to_string()))
        }
        _ => Err(Error::Format(format!(
            "merge #{rank} {line:?} is not two tokens separated by one space"
        ))),
    }
}

impl Tokenizer {
    /// A tokenizer from a vocabulary (`tokens[id]`, in byte-level spelling), merges in rank order as
    /// `"left right"` lines, optional GGUF token types (1 normal, 3 control, 4 user-defined, ...) and
    /// the fixed-role ids. Without token types, the tokens named in `ids` are control tokens and the
    /// rest normal. The pre-tokenizer is [`PreTokenizer::SmolLm`]; see [`Tokenizer::with_pre_tokenizer`].
    /// Bytes whose byte-level symbol is not in the vocabulary are dropped when encoding, as HF's and
    /// llama.cpp's BPE do (SmolLM2 lacks the control bytes 04 06 13 14 16 1d and the non-UTF-8 bytes
    /// c0 c1 f5..ff), not replaced by `ids.unk`.
    pub fn from_parts(
        tokens: Vec<String>,
        merges: Vec<String>,
        token_types: Option<Vec<i64>>,
        ids: SpecialIds,
    ) -> Result<Self> {
        let kinds = match token_types {
            Some(types) => {
                if types.len() != tokens.len() {
                    return Err(Error::Format(format!(
                        "{} token types for {} tokens",
                        types.len(),
                        tokens.len()
                    )));
                }
                types
                    .iter()
                    .enumerate()
                    .map(|(i, &t)| {
                        TokenKind::from_gguf(t)
                            .map_err(|e| Error::Format(format!("token {i}: {e}")))
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            None => {
                let mut kinds = vec![TokenKind::Normal; tokens.len()];
                for id in [ids.bos, ids.eos, ids.unk, ids.pad].into_iter().flatten() {
                    if let Some(k) = kinds.get_mut(id as usize) {
                        *k = TokenKind::Control;
                    }
                }
                kinds
            }
        };
        let merges = merges
            .iter()
            .enumerate()
            .map(|(rank, line)| split_merge(line, rank))
            .collect::<Result<Vec<_>>>()?;
        Self::build(Parts {
            tokens,
            kinds,
            merges,
            ids,
            unk_fallback: None,
            pre: PreTokenizer::SmolLm,
            chat_template: None,
        })
    }

    /// The tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata. Requires
    /// `tokenizer.ggml.model = "gpt2"` (byte-level BPE) and `tokenizer.ggml.pre` of `smollm` or `gpt2`
    /// (absent means `gpt2`, as transformers' GGUF loader assumes).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::Unsupported(format!(
                "tokenizer.ggml.model = {model:?} (only \"gpt2\", byte-level BPE, is supported)"
            )));
        }
        let pre = match gguf.meta("tokenizer.ggml.pre") {
            None => PreTokenizer::Gpt2,
            Some(_) => match gguf.meta_str("tokenizer.ggml.pre")? {
                "smollm" => PreTokenizer::SmolLm,
                "gpt2" => PreTokenizer::Gpt2,
                other => {
                    return Err(Error::Unsupported(format!(
                        "tokenizer.ggml.pre = {other:?} (supported: \"smollm\", \"gpt2\")"
                    )));
                }
            },
        };
        let owned = |v: Vec<&str>| v.into_iter().map(str::to_string).collect::<Vec<_>>();
        let tokens = owned(gguf.meta_str_array("tokenizer.ggml.tokens")?);
        let merges = owned(gguf.meta_str_array("tokenizer.ggml.merges")?);
        let types = match gguf.meta("tokenizer.ggml.token_type") {
            None => None,
            Some(_) => Some(gguf.meta_int_array("tokenizer.ggml.token_type")?),
        };
        let id = |key: &str| -> Result<Option<u32>> {
            match gguf.meta(key) {
                None => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        Error::Format(format!("GGUF metadata {key} is {v:?}, not a token id"))
                    }),
            }
        };
        let ids = SpecialIds {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
        };
        let chat_template = match gguf.meta("tokenizer.chat_template") {
            Some(MetaValue::String(s)) => Some(s.clone()),
            _ => None,
        };
        let mut tok = Self::from_parts(tokens, merges, types, ids)?.with_pre_tokenizer(pre);
        tok.chat_template = chat_template;
        Ok(tok)
    }

    /// Validates the parts and builds the lookup tables.
    pub(super) fn build(parts: Parts) -> Result<Self> {
        let Parts {
            tokens,
            kinds,
            merges: merge_list,
            ids,
            unk_fallback,
            pre,
            chat_template,
        } = parts;
        let n = tokens.len();
        if n == 0 || u32::try_from(n).is_err() {
            return Err(Error::Format(format!("vocabulary of {n} tokens")));
        }
        if kinds.len() != n {
            return Err(Error::Format(format!(
                "{} token kinds for {n} tokens",
                kinds.len()
            )));
        }
        for (role, id) in [
            ("bos", ids.bos),
            ("eos", ids.eos),
            ("unk", ids.unk),
            ("pad", ids.pad),
        ] {
            if let Some(id) = id.filter(|&id| id as usize >= n) {
                return Err(Error::Format(format!(
                    "{role} token id {id} is out of range (vocabulary has {n} tokens)"
                )));
            }
        }
        let mut vocab = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            if let Some(prev) = vocab.insert(t.clone(), i as u32) {
                return Err(Error::Format(format!(
                    "duplicate token {t:?} at ids {prev} and {i}"
                )));
            }
        }
        let lookup = |t: &str, rank: usize| {
            vocab.get(t).copied().ok_or_else(|| {
                Error::Format(format!(
                    "merge #{rank} refers to {t:?}, which is not a token"
                ))
            })
        };
        let mut merges = bpe::Merges::default();
        for (rank, (a, b)) in merge_list.iter().enumerate() {
            let (left, right) = (lookup(a, rank)?, lookup(b, rank)?);
            let merged = lookup(&format!("{a}{b}"), rank)?;
            let rank32 = u32::try_from(rank)
                .map_err(|_| Error::Format(format!("{} merges", merge_list.len())))?;
            if !merges.insert(left, right, rank32, merged) {
                return Err(Error::Format(format!(
                    "merge #{rank} \"{a} {b}\" is a duplicate"
                )));
            }
        }
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let symbol = byte_level::byte_to_char(b as u8).to_string();
            *slot = vocab.get(&symbol).copied();
        }
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        for (t, kind) in tokens.iter().zip(&kinds) {
            // HF's ByteLevel decoder keeps a token with a non-alphabet character as its UTF-8 text.
            match byte_level::decode_token(t).filter(|_| !kind.is_literal()) {
                Some(b) => bytes.extend_from_slice(&b),
                None => bytes.extend_from_slice(t.as_bytes()),
            }
            offsets.push(bytes.len());
        }
        let specials = special::Matcher::new(
            tokens
                .iter()
                .zip(&kinds)
                .enumerate()
                .filter(|(_, (_, k))| k.is_literal())
                .map(|(i, (t, k))| (t.clone(), i as u32, *k == TokenKind::UserDefined)),
        );
        Ok(Tokenizer {
            tokens,
            kinds,
            bytes,
            offsets,
            vocab,
            byte_ids,
            merges,
            specials,
            ids,
            unk_fallback,
            pre,
            chat_template,
        })
    }
}

//! SmolLM2's tokenizer: byte-level BPE (GPT-2 alphabet) with the SmolLM pre-tokenizer (single digits,
//! then the GPT-2 regex), special tokens recognised in text on request, and its ChatML chat template.
//!
//! Built from a GGUF ([`Tokenizer::from_gguf`]), an HF `tokenizer.json` ([`Tokenizer::from_tokenizer_json`])
//! or plain parts ([`Tokenizer::from_parts`]). Encoding takes any `str` and never fails; a byte whose
//! symbol the vocabulary lacks is dropped, as transformers and llama.cpp do. Decoding checks ids.

mod bpe;
mod byte_level;
mod chat;
mod classes;
mod hf_json;
mod load;
mod pretokenize;
mod special;

use std::collections::HashMap;

pub use chat::SMOLLM2_CHAT_TEMPLATE;
pub use pretokenize::PreTokenizer;

use crate::error::{Error, Result};

/// What a vocabulary entry is, as GGUF's `tokenizer.ggml.token_type` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenKind {
    /// An ordinary BPE token (type 1).
    Normal,
    /// The unknown-token placeholder (type 2); recognised in text only with `parse_special`.
    Unknown,
    /// A control token such as `<|im_start|>` (type 3); recognised in text only with `parse_special`.
    Control,
    /// An added token (type 4); always recognised in text.
    UserDefined,
    /// A reserved, unused slot (type 5).
    Unused,
    /// A raw-byte token (type 6), kept as ordinary byte-level text here.
    Byte,
}

impl TokenKind {
    /// The kind for a GGUF token type number.
    pub fn from_gguf(t: i64) -> Result<Self> {
        Ok(match t {
            1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            other => return Err(Error::Format(format!("unknown token type {other}"))),
        })
    }

    /// Whether the token is written as its literal text rather than as byte-level symbols.
    fn is_literal(self) -> bool {
        matches!(
            self,
            TokenKind::Unknown | TokenKind::Control | TokenKind::UserDefined
        )
    }
}

/// Ids of the tokens with a fixed role; any may be absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecialIds {
    /// Beginning of sequence (`<|im_start|>` for SmolLM2).
    pub bos: Option<u32>,
    /// End of sequence (`<|im_end|>` for SmolLM2).
    pub eos: Option<u32>,
    /// Unknown token, used for a byte with no symbol in the vocabulary.
    pub unk: Option<u32>,
    /// Padding.
    pub pad: Option<u32>,
}

/// A byte-level BPE tokenizer.
#[derive(Clone, Debug)]
pub struct Tokenizer {
    /// Token text as stored in the vocabulary (byte-level spelling for ordinary tokens).
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    /// Decoded bytes of every token, concatenated; token `i` is `bytes[offsets[i]..offsets[i + 1]]`.
    bytes: Vec<u8>,
    offsets: Vec<usize>,
    vocab: HashMap<String, u32>,
    /// The initial symbol for each byte value (`None` if the vocabulary lacks it).
    byte_ids: [Option<u32>; 256],
    merges: bpe::Merges,
    specials: special::Matcher,
    ids: SpecialIds,
    /// Replaces a byte that has no symbol; `None` drops it.
    unk_fallback: Option<u32>,
    pre: PreTokenizer,
    chat_template: Option<String>,
}

impl Tokenizer {
    /// Number of tokens in the vocabulary; valid ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Number of merges.
    pub fn merge_count(&self) -> usize {
        self.merges.len()
    }

    /// The beginning-of-sequence id, if the vocabulary names one.
    pub fn bos(&self) -> Option<u32> {
        self.ids.bos
    }

    /// The end-of-sequence id, if the vocabulary names one.
    pub fn eos(&self) -> Option<u32> {
        self.ids.eos
    }

    /// All the fixed-role ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.ids
    }

    /// The pre-tokenizer in use.
    pub fn pre_tokenizer(&self) -> PreTokenizer {
        self.pre
    }

    /// Replaces the pre-tokenizer (e.g. for a vocabulary built with [`Tokenizer::from_parts`]).
    pub fn with_pre_tokenizer(mut self, pre: PreTokenizer) -> Self {
        self.pre = pre;
        self
    }

    /// The Jinja chat template the model file carries, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The id of a token given its vocabulary text (byte-level spelling, e.g. `"Ġthe"`).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// The token of the single byte `b`, if the vocabulary has its symbol. Bytes without one are
    /// dropped by [`Tokenizer::encode`] (unless a `tokenizer.json` names an `unk_token`).
    pub fn byte_token(&self, b: u8) -> Option<u32> {
        self.byte_ids[b as usize]
    }

    /// The vocabulary text of a token (byte-level spelling for ordinary tokens).
    pub fn id_to_token(&self, id: u32) -> Result<&str> {
        self.check(id)?;
        Ok(&self.tokens[id as usize])
    }

    /// The kind of a token.
    pub fn token_kind(&self, id: u32) -> Result<TokenKind> {
        self.check(id)?;
        Ok(self.kinds[id as usize])
    }

    fn check(&self, id: u32) -> Result<()> {
        if (id as usize) < self.tokens.len() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "token id {id} is out of range (vocabulary has {} tokens)",
                self.tokens.len()
            )))
        }
    }

    /// The bytes a token stands for: for streaming output, where one character may span tokens.
    /// Control and added tokens give their literal text.
    pub fn decode_token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.check(id)?;
        let i = id as usize;
        Ok(&self.bytes[self.offsets[i]..self.offsets[i + 1]])
    }

    /// The text of a token sequence: the tokens' bytes joined, with invalid UTF-8 replaced by U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = Vec::new();
        for &id in ids {
            out.extend_from_slice(self.decode_token_bytes(id)?);
        }
        Ok(match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Token ids for `text`. With `parse_special`, control tokens written in the text (such as
    /// `<|im_start|>`) become those tokens; without, they are tokenized as plain text. Added
    /// (user-defined) tokens are always recognised. No BOS is added (SmolLM2 has `add_bos = false`).
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = bpe::Scratch::default();
        let mut syms = Vec::new();
        self.specials
            .split(text, parse_special, |piece| match piece {
                special::Piece::Token(id) => out.push(id),
                special::Piece::Text(t) => pretokenize::split(t, self.pre, |word| {
                    self.encode_word(word.as_bytes(), &mut syms, &mut scratch);
                    out.extend_from_slice(&syms);
                }),
            });
        out
    }

    /// BPE for one pre-tokenized word, into `syms`.
    fn encode_word(&self, word: &[u8], syms: &mut Vec<u32>, scratch: &mut bpe::Scratch) {
        syms.clear();
        // A byte without a symbol is dropped (or made `unk` if a tokenizer.json says so), as in HF's BPE.
        let fallback = self.unk_fallback;
        syms.extend(
            word.iter()
                .filter_map(|&b| self.byte_ids[b as usize].or(fallback)),
        );
        bpe::merge_word(syms, &self.merges, scratch);
    }
}

//! Reading a Hugging Face `tokenizer.json` (BPE model, ByteLevel pre-tokenizer with or without
//! `Digits(individual_digits=true)` in front), plus the fixed-role tokens and chat template from a
//! `tokenizer_config.json` / `chat_template.jinja` beside it. Settings this tokenizer cannot honour
//! (a normalizer, dropout, byte fallback, word prefixes or suffixes, stripping added tokens) are
//! refused, not ignored.

use std::path::Path;

use serde_json::{Map, Value};

use super::load::{Parts, split_merge};
use super::{PreTokenizer, SpecialIds, TokenKind, Tokenizer};
use crate::error::{Error, Result};

fn bad(what: impl std::fmt::Display) -> Error {
    Error::Format(format!("tokenizer.json: {what}"))
}

fn unsupported(what: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("tokenizer.json: {what}"))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))
}

/// Whether an optional field is absent, null or equal to `ok`.
fn absent_or(obj: &Map<String, Value>, key: &str, ok: &Value) -> bool {
    matches!(obj.get(key), None | Some(Value::Null)) || obj.get(key) == Some(ok)
}

fn byte_level(v: &Value) -> Result<()> {
    // HF's ByteLevel defaults are add_prefix_space = true and use_regex = true.
    if v.get("add_prefix_space") != Some(&Value::Bool(false)) {
        return Err(unsupported(
            "ByteLevel with add_prefix_space (SmolLM2 has it off)",
        ));
    }
    if v.get("use_regex").is_some_and(|u| u != &Value::Bool(true)) {
        return Err(unsupported("ByteLevel without use_regex"));
    }
    Ok(())
}

fn pre_tokenizer(v: Option<&Value>) -> Result<PreTokenizer> {
    let kind = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let v = v
        .filter(|v| !v.is_null())
        .ok_or_else(|| unsupported("no pre_tokenizer"))?;
    match kind(v).as_str() {
        "ByteLevel" => byte_level(v).map(|()| PreTokenizer::Gpt2),
        "Sequence" => {
            let list = v
                .get("pretokenizers")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("Sequence pre_tokenizer without a pretokenizers list"))?;
            match list.as_slice() {
                [bl] if kind(bl) == "ByteLevel" => byte_level(bl).map(|()| PreTokenizer::Gpt2),
                [d, bl]
                    if kind(d) == "Digits"
                        && d.get("individual_digits") == Some(&Value::Bool(true))
                        && kind(bl) == "ByteLevel" =>
                {
                    byte_level(bl).map(|()| PreTokenizer::SmolLm)
                }
                _ => Err(unsupported(format!("pre_tokenizer {v}"))),
            }
        }
        other => Err(unsupported(format!("pre_tokenizer type {other:?}"))),
    }
}

/// Token slots by id, filled from the vocab and the added tokens.
type Slots = Vec<Option<(String, TokenKind)>>;

/// Places `text` at `id`, refusing a different text already there. `slots` is as long as the number of
/// entries, so an id past it would leave a hole: it is refused here, which also bounds the allocation.
fn place(slots: &mut Slots, id: u64, text: &str, kind: TokenKind) -> Result<()> {
    let i = usize::try_from(id)
        .ok()
        .filter(|&i| i < slots.len())
        .ok_or_else(|| {
            bad(format!(
                "id {id} of {text:?} leaves ids without a token ({} entries)",
                slots.len()
            ))
        })?;
    match &slots[i] {
        Some((old, _)) if old != text => Err(bad(format!("id {id} is both {old:?} and {text:?}"))),
        _ => {
            slots[i] = Some((text.to_string(), kind));
            Ok(())
        }
    }
}

/// The text of a `tokenizer_config.json` token field: a string or `{"content": ...}`.
fn config_token(config: &Value, key: &str) -> Option<String> {
    let v = config.get(key)?;
    v.as_str()
        .or_else(|| v.get("content").and_then(Value::as_str))
        .map(str::to_string)
}

impl Tokenizer {
    /// The tokenizer in an HF `tokenizer.json`. Bos, eos and pad come from a `tokenizer_config.json` in
    /// the same folder when there is one (otherwise they are unset), and the chat template from it or
    /// from `chat_template.jinja`.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let text = read(path)?;
        let mut tok = Self::from_tokenizer_json_str(&text).map_err(|e| match e {
            Error::Format(m) => Error::Format(format!("{}: {m}", path.display())),
            other => other,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let config_path = dir.join("tokenizer_config.json");
        if config_path.exists() {
            let config: Value = serde_json::from_str(&read(&config_path)?)
                .map_err(|e| Error::Format(format!("{}: {e}", config_path.display())))?;
            let id =
                |tok: &Tokenizer, key| config_token(&config, key).and_then(|t| tok.token_to_id(&t));
            tok.ids = SpecialIds {
                bos: id(&tok, "bos_token"),
                eos: id(&tok, "eos_token"),
                pad: id(&tok, "pad_token"),
                unk: tok.ids.unk.or(id(&tok, "unk_token")),
            };
            tok.chat_template = config
                .get("chat_template")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        let jinja = dir.join("chat_template.jinja");
        if tok.chat_template.is_none() && jinja.exists() {
            tok.chat_template = Some(read(&jinja)?);
        }
        Ok(tok)
    }

    /// The tokenizer in the text of an HF `tokenizer.json` (no fixed-role ids but `unk`, no template).
    pub fn from_tokenizer_json_str(json: &str) -> Result<Self> {
        let root: Value = serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
        let model = root
            .get("model")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no model object"))?;
        if !absent_or(model, "type", &Value::from("BPE")) {
            return Err(unsupported(format!("model type {:?}", model.get("type"))));
        }
        for (key, ok) in [
            ("dropout", Value::Null),
            ("continuing_subword_prefix", Value::from("")),
            ("end_of_word_suffix", Value::from("")),
            ("byte_fallback", Value::Bool(false)),
            ("ignore_merges", Value::Bool(false)),
        ] {
            if !absent_or(model, key, &ok) {
                return Err(unsupported(format!("model.{key} = {:?}", model.get(key))));
            }
        }
        if !root.get("normalizer").is_none_or(Value::is_null) {
            return Err(unsupported("a normalizer"));
        }
        let pre = pre_tokenizer(root.get("pre_tokenizer"))?;

        let vocab = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no model.vocab object"))?;
        let added = match root.get("added_tokens") {
            None | Some(Value::Null) => &[][..],
            Some(v) => v
                .as_array()
                .ok_or_else(|| bad("added_tokens is not a list"))?
                .as_slice(),
        };
        let mut slots: Slots = vec![None; vocab.len() + added.len()];
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| bad(format!("vocab id of {text:?} is {id}")))?;
            place(&mut slots, id, text, TokenKind::Normal)?;
        }
        for t in added {
            let id = t.get("id").and_then(Value::as_u64);
            let content = t.get("content").and_then(Value::as_str);
            let (Some(id), Some(content)) = (id, content) else {
                return Err(bad(format!("added token {t} lacks an id or content")));
            };
            // Stripping neighbouring spaces or whole-word matching would change where tokens match.
            for flag in ["lstrip", "rstrip", "single_word"] {
                if t.get(flag) == Some(&Value::Bool(true)) {
                    return Err(unsupported(format!("added token {content:?} with {flag}")));
                }
            }
            let special = t.get("special").and_then(Value::as_bool).unwrap_or(false);
            let kind = if special {
                TokenKind::Control
            } else {
                TokenKind::UserDefined
            };
            place(&mut slots, id, content, kind)?;
        }
        // Added tokens usually repeat vocab entries, leaving unused slots at the end; holes elsewhere are errors.
        while slots.last().is_some_and(Option::is_none) {
            slots.pop();
        }
        let mut tokens = Vec::with_capacity(slots.len());
        let mut kinds = Vec::with_capacity(slots.len());
        for (i, slot) in slots.into_iter().enumerate() {
            let (text, kind) = slot.ok_or_else(|| bad(format!("no token has id {i}")))?;
            tokens.push(text);
            kinds.push(kind);
        }

        let merge_values = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no model.merges list"))?;
        let mut merges = Vec::with_capacity(merge_values.len());
        for (rank, m) in merge_values.iter().enumerate() {
            merges.push(match m {
                Value::String(line) => split_merge(line, rank)?,
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => (a.clone(), b.clone()),
                    _ => return Err(bad(format!("merge #{rank} {m} is not a pair of strings"))),
                },
                _ => {
                    return Err(bad(format!(
                        "merge #{rank} {m} is neither \"a b\" nor [a, b]"
                    )));
                }
            });
        }
        let unk = match model.get("unk_token") {
            None | Some(Value::Null) => None,
            Some(Value::String(t)) => Some(
                tokens
                    .iter()
                    .position(|x| x == t)
                    .ok_or_else(|| bad(format!("unk_token {t:?} is not a token")))?
                    as u32,
            ),
            Some(v) => return Err(bad(format!("unk_token is {v}"))),
        };
        Self::build(Parts {
            tokens,
            kinds,
            merges,
            ids: SpecialIds {
                unk,
                ..SpecialIds::default()
            },
            unk_fallback: unk,
            pre,
            chat_template: None,
        })
    }
}

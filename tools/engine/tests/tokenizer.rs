//! The tokenizer against Hugging Face's: ids for ~80 strings (special tokens parsed and as text),
//! decodes, and chat-template renderings, from the real GGUF and from a small `tokenizer.json` saved by
//! `tokenizers` (fixtures from `scripts/tokenizer_fixture.py`); plus round trips, id checks, refused
//! malformed inputs, and a deterministic fuzz loop that must never panic.

mod support;

use std::sync::OnceLock;

use serde_json::Value;
use specblock_engine::Error;
use specblock_engine::gguf::GgufFile;
use specblock_engine::tokenizer::{
    PreTokenizer, SMOLLM2_CHAT_TEMPLATE, SpecialIds, TokenKind, Tokenizer,
};

const TINY_JSON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tokenizer_tiny.json"
);

struct Case {
    text: String,
    ids: Vec<u32>,
    ids_plain: Vec<u32>,
    decoded: String,
    tiny_ids: Vec<u32>,
    tiny_ids_plain: Vec<u32>,
    /// With the plain GPT-2 pre-tokenizer (what transformers builds from the GGUF without the fix).
    ids_gpt2: Vec<u32>,
    tiny_ids_gpt2: Vec<u32>,
}

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        serde_json::from_str(include_str!("fixtures/tokenizer_cases.json")).expect("fixture parses")
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("id list")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("id")).expect("u32 id"))
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str().expect("string").to_string()
}

fn cases() -> Vec<Case> {
    fixture()["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            text: text(&c["text"]),
            ids: ids(&c["ids"]),
            ids_plain: ids(&c["ids_plain"]),
            decoded: text(&c["decoded"]),
            tiny_ids: ids(&c["tiny_ids"]),
            tiny_ids_plain: ids(&c["tiny_ids_plain"]),
            ids_gpt2: ids(&c["ids_gpt2"]),
            tiny_ids_gpt2: ids(&c["tiny_ids_gpt2"]),
        })
        .collect()
}

/// The SmolLM2 tokenizer from the real GGUF, or `None` when the model is absent and skipping is allowed.
fn real() -> Option<&'static Tokenizer> {
    static TOK: OnceLock<Option<Tokenizer>> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = support::model_path("tokenizer")?;
        let gguf = GgufFile::open(&path).expect("GGUF parses");
        Some(Tokenizer::from_gguf(&gguf).expect("tokenizer loads"))
    })
    .as_ref()
}

fn tiny() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        Tokenizer::from_tokenizer_json(std::path::Path::new(TINY_JSON)).expect("tiny loads")
    })
}

/// Compares every case and reports all mismatches at once.
fn check_all(
    name: &str,
    got: impl Fn(&Case) -> (Vec<u32>, Vec<u32>),
    want: impl Fn(&Case) -> (Vec<u32>, Vec<u32>),
) {
    let cases = cases();
    assert!(cases.len() >= 60, "fixture has only {} cases", cases.len());
    let mut bad = Vec::new();
    for c in &cases {
        let (g, w) = (got(c), want(c));
        if g != w {
            bad.push(format!("{:?}:\n  got  {:?}\n  want {:?}", c.text, g, w));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

#[test]
fn gguf_ids_match_transformers() {
    let Some(tok) = real() else { return };
    check_all(
        "parse_special = true",
        |c| (tok.encode(&c.text, true), Vec::new()),
        |c| (c.ids.clone(), Vec::new()),
    );
    check_all(
        "parse_special = false",
        |c| (tok.encode(&c.text, false), Vec::new()),
        |c| (c.ids_plain.clone(), Vec::new()),
    );
}

#[test]
fn gguf_decode_round_trips() {
    let Some(tok) = real() else { return };
    let mut dropped = 0;
    for c in cases() {
        assert_eq!(
            tok.decode(&c.ids).unwrap(),
            c.decoded,
            "decode of {:?}",
            c.text
        );
        if c.decoded != c.text {
            // Only bytes without a symbol in the vocabulary may be lost, as in transformers.
            assert_eq!(c.decoded, without_unspellable(tok, &c.text));
            dropped += 1;
        }
        for parse in [true, false] {
            let ids = tok.encode(&c.text, parse);
            assert_eq!(
                tok.decode(&ids).unwrap(),
                c.decoded,
                "round trip (parse {parse})"
            );
            let streamed: Vec<u8> = ids
                .iter()
                .flat_map(|&id| tok.decode_token_bytes(id).unwrap().to_vec())
                .collect();
            assert_eq!(
                streamed,
                c.decoded.as_bytes(),
                "streamed bytes of {:?}",
                c.text
            );
        }
    }
    assert_eq!(dropped, 1, "one fixture case holds unspellable bytes");
    assert_eq!(tok.byte_token(4), None);
    assert_eq!(tok.encode("a\u{4}b", true), [81, 82]);
}

/// `text` without the bytes that have no symbol in the vocabulary (all ASCII controls for SmolLM2, so
/// the rest stays valid UTF-8).
fn without_unspellable(tok: &Tokenizer, text: &str) -> String {
    let kept: Vec<u8> = text
        .bytes()
        .filter(|&b| tok.byte_token(b).is_some())
        .collect();
    String::from_utf8_lossy(&kept).into_owned()
}

#[test]
fn gguf_metadata() {
    let Some(tok) = real() else { return };
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.merge_count(), 48900);
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    assert_eq!(
        tok.special_ids(),
        SpecialIds {
            bos: Some(1),
            eos: Some(2),
            unk: Some(0),
            pad: Some(2)
        }
    );
    assert_eq!(tok.pre_tokenizer(), PreTokenizer::SmolLm);
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.token_to_id("Ġthe"), Some(260));
    assert_eq!(tok.token_to_id("no such token"), None);
    assert_eq!(tok.id_to_token(260).unwrap(), "Ġthe");
    assert_eq!(tok.decode_token_bytes(260).unwrap(), b" the");
    assert_eq!(tok.token_kind(1).unwrap(), TokenKind::Control);
    assert_eq!(tok.token_kind(260).unwrap(), TokenKind::Normal);
    assert_eq!(tok.decode_token_bytes(1).unwrap(), b"<|im_start|>");
    assert_eq!(tok.chat_template(), Some(SMOLLM2_CHAT_TEMPLATE));
    assert_eq!(
        fixture()["chat_template"].as_str(),
        Some(SMOLLM2_CHAT_TEMPLATE)
    );
}

/// A conversation, whether a generation prompt was asked for, the rendering and its ids.
struct Chat {
    messages: Vec<(String, String)>,
    add_generation_prompt: bool,
    text: String,
    ids: Vec<u32>,
}

fn chats() -> Vec<Chat> {
    fixture()["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .map(|c| {
            let messages = c["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| (text(&m[0]), text(&m[1])))
                .collect();
            Chat {
                messages,
                add_generation_prompt: c["add_generation_prompt"].as_bool().expect("bool"),
                text: text(&c["text"]),
                ids: ids(&c["ids"]),
            }
        })
        .collect()
}

#[test]
fn chat_template_matches_transformers() {
    let chats = chats();
    assert!(chats.len() >= 5);
    for c in &chats {
        let rendered = tiny().apply_chat_template(&c.messages, c.add_generation_prompt);
        assert_eq!(rendered, c.text, "chat {:?}", c.messages);
    }
    // What the Jinja template renders for no messages (transformers refuses to call it).
    let none: &[(&str, &str)] = &[];
    assert_eq!(
        tiny().apply_chat_template(none, true),
        "<|im_start|>assistant\n"
    );
    assert_eq!(tiny().apply_chat_template(none, false), "");
    let Some(tok) = real() else { return };
    for c in &chats {
        let rendered = tok.apply_chat_template(&c.messages, c.add_generation_prompt);
        assert_eq!(tok.encode(&rendered, true), c.ids, "chat {:?}", c.messages);
        assert_eq!(tok.decode(&c.ids).unwrap(), c.text);
    }
}

#[test]
fn special_tokens_parse_on_and_off() {
    let Some(tok) = real() else { return };
    let text = "<|im_start|>user\nHi<|im_end|>";
    let parsed = tok.encode(text, true);
    assert_eq!(parsed.first(), Some(&1));
    assert_eq!(parsed.last(), Some(&2));
    assert_eq!(parsed.len(), 5, "{parsed:?}"); // <|im_start|> user \n Hi <|im_end|>
    let plain = tok.encode(text, false);
    assert!(
        plain
            .iter()
            .all(|&id| tok.token_kind(id).unwrap() == TokenKind::Normal),
        "{plain:?}"
    );
    assert!(plain.len() > parsed.len() + 8);
    assert_eq!(tok.decode(&plain).unwrap(), text);
    // Near misses stay text; the longest match wins.
    assert!(
        !tok.encode("<|im_start| <|IM_END|> <|im_end", true)
            .contains(&1)
    );
    assert_eq!(tok.encode("<|im_end|><|im_end|>", true), [2, 2]);
}

#[test]
fn tokenizer_json_matches_tokenizers() {
    let tok = tiny();
    assert_eq!(tok.pre_tokenizer(), PreTokenizer::SmolLm);
    assert_eq!(tok.vocab_size(), 701);
    assert_eq!(tok.token_kind(2).unwrap(), TokenKind::Control);
    assert_eq!(tok.token_kind(700).unwrap(), TokenKind::UserDefined);
    check_all(
        "tiny tokenizer.json",
        |c| (tok.encode(&c.text, true), tok.encode(&c.text, false)),
        |c| (c.tiny_ids.clone(), c.tiny_ids_plain.clone()),
    );
    for c in cases() {
        assert_eq!(tok.decode(&tok.encode(&c.text, true)).unwrap(), c.text);
    }
    // The older "a b" string form of merges gives the same tokenizer.
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(TINY_JSON).unwrap()).unwrap();
    let merges = json["model"]["merges"].as_array_mut().unwrap();
    for m in merges.iter_mut() {
        *m = Value::from(format!(
            "{} {}",
            m[0].as_str().unwrap(),
            m[1].as_str().unwrap()
        ));
    }
    let strings = Tokenizer::from_tokenizer_json_str(&json.to_string()).unwrap();
    for c in cases() {
        assert_eq!(strings.encode(&c.text, true), c.tiny_ids, "{:?}", c.text);
    }
}

#[test]
fn tokenizer_json_reads_its_config_and_template() {
    let dir = std::env::temp_dir().join(format!("specblock-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("tokenizer.json");
    std::fs::copy(TINY_JSON, &json).unwrap();
    let no_config = Tokenizer::from_tokenizer_json(&json).unwrap();
    assert_eq!(
        (no_config.bos(), no_config.eos(), no_config.chat_template()),
        (None, None, None)
    );
    std::fs::write(dir.join("chat_template.jinja"), "{{ jinja }}").unwrap();
    assert_eq!(
        Tokenizer::from_tokenizer_json(&json)
            .unwrap()
            .chat_template(),
        Some("{{ jinja }}")
    );
    let config = serde_json::json!({
        "bos_token": "<|im_start|>",
        "eos_token": {"content": "<|im_end|>", "special": true},
        "pad_token": "not a token",
        "chat_template": SMOLLM2_CHAT_TEMPLATE,
    });
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
    let tok = Tokenizer::from_tokenizer_json(&json).unwrap();
    assert_eq!(
        tok.special_ids(),
        SpecialIds {
            bos: Some(1),
            eos: Some(2),
            unk: None,
            pad: None
        }
    );
    assert_eq!(tok.chat_template(), Some(SMOLLM2_CHAT_TEMPLATE));
    std::fs::write(dir.join("tokenizer_config.json"), "{").unwrap();
    assert!(matches!(
        Tokenizer::from_tokenizer_json(&json),
        Err(Error::Format(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn gpt2_pre_tokenizer_matches_tokenizers() {
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(TINY_JSON).unwrap()).unwrap();
    let byte_level = json["pre_tokenizer"]["pretokenizers"][1].clone();
    json["pre_tokenizer"] = byte_level;
    let tiny = Tokenizer::from_tokenizer_json_str(&json.to_string()).unwrap();
    assert_eq!(tiny.pre_tokenizer(), PreTokenizer::Gpt2);
    check_all(
        "tiny, GPT-2 pre-tokenizer",
        |c| (tiny.encode(&c.text, true), Vec::new()),
        |c| (c.tiny_ids_gpt2.clone(), Vec::new()),
    );
    assert!(
        cases().iter().any(|c| c.tiny_ids_gpt2 != c.tiny_ids),
        "the modes never differ"
    );
    let Some(real) = real() else { return };
    let real = real.clone().with_pre_tokenizer(PreTokenizer::Gpt2);
    check_all(
        "GGUF, GPT-2 pre-tokenizer",
        |c| (real.encode(&c.text, true), Vec::new()),
        |c| (c.ids_gpt2.clone(), Vec::new()),
    );
}

#[test]
fn invalid_ids_are_errors() {
    let toks: Vec<&Tokenizer> = [Some(tiny()), real()].into_iter().flatten().collect();
    for tok in toks {
        let n = tok.vocab_size() as u32;
        for id in [n, n + 1, u32::MAX] {
            assert!(matches!(
                tok.decode(&[0, id]),
                Err(Error::InvalidArgument(_))
            ));
            assert!(tok.decode_token_bytes(id).is_err());
            assert!(tok.id_to_token(id).is_err());
            assert!(tok.token_kind(id).is_err());
        }
        assert!(tok.decode_token_bytes(n - 1).is_ok());
        assert_eq!(tok.decode(&[]).unwrap(), "");
    }
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Text from pieces that stress the splitter and matcher, random scalar values, and lossy random bytes.
fn random_text(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\u{a0}",
        "\u{3000}",
        "'",
        "'s",
        "'LL",
        "'re",
        "a",
        "Z",
        "é",
        "e\u{301}",
        "1",
        "42",
        "\u{663}",
        "½",
        "Ⅻ",
        "!",
        "<",
        ">",
        "|",
        "<|im_start|>",
        "<|im_end|>",
        "<|im_",
        "<|",
        "<extra>",
        "世界",
        "👨\u{200d}👩",
        "🦀",
        "\u{feff}",
        "\u{200b}",
        "\0",
        "x",
    ];
    let mut s = String::new();
    for _ in 0..rng.below(40) {
        match rng.below(10) {
            0 => {
                let bytes: Vec<u8> = (0..rng.below(12)).map(|_| rng.next() as u8).collect();
                s.push_str(&String::from_utf8_lossy(&bytes));
            }
            1 => s.extend(char::from_u32(rng.below(0x110000) as u32)),
            _ => s.push_str(PIECES[rng.below(PIECES.len())]),
        }
    }
    s
}

#[test]
fn fuzz_never_panics_and_round_trips() {
    let toks: Vec<&Tokenizer> = [Some(tiny()), real()].into_iter().flatten().collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for tok in toks {
        let n = tok.vocab_size();
        for _ in 0..3000 {
            let s = random_text(&mut rng);
            for parse in [true, false] {
                let ids = tok.encode(&s, parse);
                assert!(ids.iter().all(|&id| (id as usize) < n));
                assert_eq!(
                    tok.decode(&ids).unwrap(),
                    without_unspellable(tok, &s),
                    "round trip of {s:?} (parse {parse}, vocab {n}): {ids:?}"
                );
            }
            // Random id sequences decode (lossily) or fail cleanly.
            let ids: Vec<u32> = (0..rng.below(8))
                .map(|_| (rng.next() % (n as u64 + 3)) as u32)
                .collect();
            let valid = ids.iter().all(|&id| (id as usize) < n);
            assert_eq!(tok.decode(&ids).is_ok(), valid, "{ids:?}");
        }
    }
}

#[test]
fn long_words_are_merged() {
    let Some(tok) = real() else { return };
    // 5000 'x' is one pre-tokenized word; the heap path must agree with what the fixture saw for 500.
    let five_hundred = cases()
        .into_iter()
        .find(|c| c.text == "x".repeat(500))
        .unwrap();
    assert_eq!(tok.encode(&"x".repeat(500), true), five_hundred.ids);
    let ids = tok.encode(&"x".repeat(5000), true);
    assert!(ids.len() < 2500, "{} tokens for 5000 x", ids.len());
    assert_eq!(tok.decode(&ids).unwrap(), "x".repeat(5000));
}

/// `<s> a b ab Ġ` and `extra`.
fn vocab(extra: &[&str]) -> Vec<String> {
    ["<s>", "a", "b", "ab", "Ġ"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

#[test]
fn from_parts_builds_and_refuses_malformed_input() {
    let ids = SpecialIds {
        bos: Some(0),
        eos: Some(0),
        ..SpecialIds::default()
    };
    let tok = Tokenizer::from_parts(vocab(&[]), vec!["a b".into()], None, ids).unwrap();
    assert_eq!(tok.encode("ab a<s>", true), [3, 4, 1, 0]);
    assert_eq!(
        tok.encode("<s>", false),
        Vec::<u32>::new(),
        "bytes without symbols are dropped"
    );
    assert_eq!(tok.token_kind(0).unwrap(), TokenKind::Control);
    assert_eq!(tok.decode(&[0, 3, 4]).unwrap(), "<s>ab ");

    let err = |tokens: Vec<String>, merges: &[&str], types: Option<Vec<i64>>, ids: SpecialIds| {
        let merges = merges.iter().map(|s| s.to_string()).collect();
        match Tokenizer::from_parts(tokens, merges, types, ids) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let none = SpecialIds::default();
    assert!(err(vocab(&["a"]), &[], None, none).contains("duplicate token"));
    assert!(err(vocab(&[]), &["a c"], None, none).contains("\"c\""));
    assert!(err(vocab(&[]), &["b a"], None, none).contains("\"ba\""));
    assert!(err(vocab(&[]), &["ab"], None, none).contains("merge #0"));
    assert!(err(vocab(&[]), &["a  b"], None, none).contains("merge #0"));
    assert!(err(vocab(&[]), &["a b", "a b"], None, none).contains("duplicate"));
    assert!(err(vocab(&[]), &[], Some(vec![1; 4]), none).contains("token types"));
    assert!(err(vocab(&[]), &[], Some(vec![1, 1, 1, 1, 9]), none).contains("token type 9"));
    let bad_eos = SpecialIds {
        eos: Some(5),
        ..none
    };
    assert!(err(vocab(&[]), &[], None, bad_eos).contains("eos token id 5"));
    assert!(err(vec![], &[], None, none).contains("vocabulary of 0"));
}

#[test]
fn tokenizer_json_refuses_what_it_cannot_honour() {
    let base: Value = serde_json::from_str(&std::fs::read_to_string(TINY_JSON).unwrap()).unwrap();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        edit(&mut v);
        Tokenizer::from_tokenizer_json_str(&v.to_string()).map(|_| ())
    };
    assert!(with(&|_| {}).is_ok());
    let unsupported = |r: Result<(), Error>| matches!(r, Err(Error::Unsupported(_)));
    let format = |r: Result<(), Error>| matches!(r, Err(Error::Format(_)));
    assert!(unsupported(with(
        &|v| v["normalizer"] = serde_json::json!({"type": "NFC"})
    )));
    assert!(unsupported(with(
        &|v| v["model"]["type"] = "WordPiece".into()
    )));
    assert!(unsupported(with(
        &|v| v["model"]["byte_fallback"] = true.into()
    )));
    assert!(unsupported(with(&|v| v["model"]["dropout"] = 0.1.into())));
    assert!(unsupported(with(&|v| v["pre_tokenizer"] = Value::Null)));
    assert!(unsupported(with(
        &|v| v["added_tokens"][1]["lstrip"] = true.into()
    )));
    assert!(unsupported(with(&|v| v["pre_tokenizer"]["pretokenizers"]
        [1]["add_prefix_space"] =
        true.into())));
    assert!(format(with(
        &|v| v["model"]["merges"][0] = serde_json::json!(["x", "nope"])
    )));
    assert!(format(with(&|v| v["model"]["merges"][0] = 7.into())));
    assert!(format(with(
        &|v| v["model"]["vocab"]["zz-new"] = 5000.into()
    )));
    assert!(format(with(&|v| v["added_tokens"][0]["id"] = 5.into())));
    assert!(format(with(&|v| v["model"] = Value::Null)));
    assert!(matches!(
        Tokenizer::from_tokenizer_json_str("{not json"),
        Err(Error::Format(_))
    ));
    assert!(matches!(
        Tokenizer::from_tokenizer_json(std::path::Path::new("/nonexistent/tokenizer.json")),
        Err(Error::Io(_))
    ));
}

/// A GGUF holding only metadata, for `from_gguf` on synthetic files.
fn gguf_with(meta: &[(&str, Value)]) -> GgufFile {
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    let mut out = b"GGUF".to_vec();
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (key, value) in meta {
        string(&mut out, key);
        match value {
            Value::String(s) => {
                out.extend_from_slice(&8u32.to_le_bytes());
                string(&mut out, s);
            }
            Value::Number(n) => {
                out.extend_from_slice(&4u32.to_le_bytes());
                out.extend_from_slice(&(n.as_u64().unwrap() as u32).to_le_bytes());
            }
            Value::Array(items) => {
                out.extend_from_slice(&9u32.to_le_bytes());
                let strings = items.first().is_some_and(Value::is_string);
                out.extend_from_slice(&(if strings { 8u32 } else { 5u32 }).to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    match item {
                        Value::String(s) => string(&mut out, s),
                        n => out.extend_from_slice(&(n.as_i64().unwrap() as i32).to_le_bytes()),
                    }
                }
            }
            _ => unreachable!(),
        }
    }
    GgufFile::parse(out).expect("synthetic GGUF parses")
}

#[test]
fn from_gguf_checks_the_tokenizer_fields() {
    use serde_json::json;
    let good = |model: &str, pre: &str| {
        vec![
            ("tokenizer.ggml.model", json!(model)),
            ("tokenizer.ggml.pre", json!(pre)),
            (
                "tokenizer.ggml.tokens",
                json!(["<s>", "a", "b", "ab", "1", "Ġ"]),
            ),
            ("tokenizer.ggml.merges", json!(["a b"])),
            ("tokenizer.ggml.token_type", json!([3, 1, 1, 1, 1, 1])),
            ("tokenizer.ggml.bos_token_id", json!(0)),
        ]
    };
    let tok = Tokenizer::from_gguf(&gguf_with(&good("gpt2", "smollm"))).unwrap();
    assert_eq!(tok.encode("<s>ab 1", true), [0, 3, 5, 4]);
    assert_eq!(tok.bos(), Some(0));
    assert_eq!(tok.eos(), None);
    assert_eq!(tok.chat_template(), None);
    let gpt2 = Tokenizer::from_gguf(&gguf_with(&good("gpt2", "gpt2"))).unwrap();
    assert_eq!(gpt2.pre_tokenizer(), PreTokenizer::Gpt2);

    let fails = |meta: Vec<(&str, Value)>| Tokenizer::from_gguf(&gguf_with(&meta)).err().unwrap();
    assert!(matches!(
        fails(good("llama", "smollm")),
        Error::Unsupported(_)
    ));
    assert!(matches!(
        fails(good("gpt2", "llama3")),
        Error::Unsupported(_)
    ));
    let mut m = good("gpt2", "smollm");
    m.retain(|(k, _)| *k != "tokenizer.ggml.merges");
    assert!(fails(m).to_string().contains("tokenizer.ggml.merges"));
    let mut m = good("gpt2", "smollm");
    m[4].1 = json!([3, 1, 1]);
    assert!(fails(m).to_string().contains("token types"));
    let mut m = good("gpt2", "smollm");
    m[5].1 = json!(6);
    assert!(fails(m).to_string().contains("bos token id 6"));
}

/// Encode throughput on a few KB of English; prints MB/s, asserts only correctness. Run with
/// `cargo test --release -p specblock-engine --test tokenizer -- --ignored --nocapture throughput`.
#[test]
#[ignore = "measurement; run in release with --ignored --nocapture"]
fn encode_throughput() {
    let Some(tok) = real() else { return };
    let text = include_str!("../../../README.md");
    let reps = 200;
    let start = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..reps {
        n += tok.encode(text, true).len();
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (text.len() * reps) as f64 / 1e6;
    println!(
        "encode: {} bytes -> {} tokens, {:.1} MB/s, {:.2} M tokens/s",
        text.len(),
        n / reps,
        mb / secs,
        n as f64 / secs / 1e6
    );
    assert_eq!(tok.decode(&tok.encode(text, true)).unwrap(), text);
}

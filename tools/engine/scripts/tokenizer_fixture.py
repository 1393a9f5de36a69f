#!/usr/bin/env python3
"""Writes the reference data that tools/engine/tests/tokenizer.rs checks the Rust tokenizer against.

The reference is the tokenizer that transformers builds from the GGUF, with SmolLM2's upstream
`Digits(individual_digits=True)` pre-tokenizer put back in front of ByteLevel (the GGUF loader drops it).

Outputs (paths relative to tools/engine):
  tests/fixtures/tokenizer_cases.json   strings -> ids (special tokens parsed / as text / with the plain
                                        GPT-2 pre-tokenizer), decodes, chat-template renderings, and the
                                        same ids from a tiny trained tokenizer
  tests/fixtures/tokenizer_tiny.json    that tiny tokenizer, saved by `tokenizers` (HF tokenizer.json)
  tests/fixtures/tokenizer_char_classes.json
                                        which code points the reference treats as \\p{L}, \\p{N}, \\s, numeric
  src/tokenizer/classes.rs              the range tables the Rust pre-tokenizer uses

Usage (needs transformers, tokenizers, gguf):
  python tools/engine/scripts/tokenizer_fixture.py [--model PATH.gguf] [--skip-unicode]
--skip-unicode skips the two Unicode outputs (probing all 1.1M code points takes a few seconds).
"""

import argparse
import json
import os
import sys

from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, AddedToken
from transformers import AutoTokenizer

ENGINE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(os.path.dirname(ENGINE))
FIXTURES = os.path.join(ENGINE, "tests", "fixtures")

LONG_WORD = "Pneumonoultramicroscopicsilicovolcanoconiosis"

CASES = [
    # plain text
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog. The dog sleeps.",
    "",
    " ",
    "a",
    # digits and numbers
    "12345",
    "3.14159",
    "1,000,000 and 1.000.000,00",
    "2024-01-15T08:30:00Z",
    "$19.99 or €5,50",
    "0x1F 0b1010 1e-9 -42",
    "a  1 and x   42",
    "phone: +1 (555) 010-9999",
    "\u0661\u0662\u0663 Arabic-Indic, \u0967\u0968 Devanagari digits",
    "\u00bd \u00b2 \u2462 \u216b superscript and roman",
    # Unicode 17 digits: numeric for Digits (Rust std in tokenizers) but not \\p{N} for Oniguruma yet
    "new a\U00011de0\U00011de1b \U00016ff4x",
    # code
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{v:?}\");\n}\n",
    '{"name": "SmolLM2", "layers": 30, "tied": true, "dims": [576, 1536], "eps": 1e-05}',
    "if (a && b) { return !c; } else if (x != y) { x += 1; }",
    "<div class=\"x\">a &amp; b</div>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); }",
    "x=42;y=-7;z=x*y//3",
    # whitespace
    "a  b",
    "a   b",
    "   leading spaces",
    "trailing spaces   ",
    "\t\ttabs\tand\ttabs",
    "\n\n\n",
    "line1\nline2\r\nline3\rline4",
    "word \n\n word",
    "mixed \t \n whitespace \n",
    "  \n  \n",
    "\u00a0nbsp\u00a0and\u202fnarrow",
    "\u3000ideographic\u3000space",
    "        ",
    # contractions
    "I'm sure you're right, it's what we'll do; they've said he'd go and I'd stay.",
    "DON'T SHOUT, IT'S LOUD AND WE'LL HEAR",
    "rock 'n' roll, O'Neil's ''quoted'' text",
    "'s 't 're 've 'm 'll 'd",
    "it\u2019s a curly apostrophe",
    # accents and other scripts
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber stra\u00dfe",
    "\u00dcn\u00efc\u00f6d\u00e9 \u00c0\u00c9\u00ce\u00d5\u00dc",
    "e\u0301 decomposed and \u00e9 composed",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u05e9\u05dc\u05d5\u05dd \u05e2\u05d5\u05dc\u05dd",
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440 hello \u4e16\u754c 123 \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35\u0e04\u0e23\u0e31\u0e1a",
    "English \u0645\u0639 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 and \u05e2\u05d1\u05e8\u05d9\u05ea mixed",
    # emoji
    "\U0001f44d",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466 family",
    "\U0001f3f3\ufe0f\u200d\U0001f308 flag",
    "I \u2764\ufe0f Rust \U0001f980 and \U0001f44b\U0001f3fd",
    "flags \U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea",
    # control and invisible characters
    "\x00\x01\x7f control",
    # bytes 04 06 13 14 16 1d have no symbol in SmolLM2's vocabulary: HF (and llama.cpp) drop them
    "a\x04b \x06\x13\x14\x16\x1d dropped\x04",
    "zero\u200bwidth \ufeffBOM",
    # special tokens in text
    "<|im_start|>user\nHi there<|im_end|>\n",
    "<|endoftext|>",
    "text<|im_end|>more<|im_end|>",
    "<|im_start|<|im_start|>",
    "<repo_name>specblock<file_sep>main.rs<filename>",
    "<|im_end <|IM_END|> <im_end>",
    "<|im_start|><|im_start|>",
    # long words
    LONG_WORD,
    "x" * 500,
    "ab" * 300,
    "\U0001f600" * 40,
    "=" * 200,
    " " * 100,
    "https://example.com/a/very/long/path/with-many-segments?query=value&other=thing#fragment",
    "aGVsbG8gd29ybGQgdGhpcyBpcyBhIGJhc2U2NCBibG9iIHdpdGggbm8gc3BhY2VzIGF0IGFsbA==",
    LONG_WORD * 8,
    # a paragraph
    "Speculative decoding drafts several tokens with a small model, then verifies them with the "
    "large one in a single forward pass. Accepted tokens cost one step; rejected ones are resampled.",
]

CHATS = [
    ([("user", "Hello!")], True),
    ([("user", "What is 2+2?")], False),
    ([("system", "You are a pirate."), ("user", "Hi")], True),
    ([("user", "Hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")], True),
    ([("system", "Be brief."), ("user", "Capital of France?"), ("assistant", "Paris.")], False),
    ([("user", "line one\nline two\n\n  indented"), ("system", "late system")], True),
    ([("user", "")], True),
]


def smollm_pre_tokenizer():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def load_reference(model_path):
    directory, name = os.path.split(os.path.abspath(model_path))
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    backend = tok.backend_tokenizer
    before = backend.encode("a  1", add_special_tokens=False).ids
    backend.pre_tokenizer = smollm_pre_tokenizer()
    after = backend.encode("a  1", add_special_tokens=False).ids
    # Digits must split "12345" into single digits, and it changes how spaces before a digit group.
    assert len(backend.encode("12345", add_special_tokens=False).ids) == 5
    assert before != after, "the Digits pre-tokenizer did not take effect"
    return tok, backend


def encode(backend, text, parse_special):
    backend.encode_special_tokens = not parse_special
    try:
        return backend.encode(text, add_special_tokens=False).ids
    finally:
        backend.encode_special_tokens = False


def encode_gpt2(backend, text):
    """Ids with the plain GPT-2 ByteLevel pre-tokenizer (no Digits), special tokens parsed."""
    saved = backend.pre_tokenizer
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    try:
        return backend.encode(text, add_special_tokens=False).ids
    finally:
        backend.pre_tokenizer = saved


def train_tiny():
    """A small byte-level BPE trained on the cases, saved by `tokenizers` itself, to test the JSON reader."""
    tiny = Tokenizer(models.BPE())
    tiny.pre_tokenizer = smollm_pre_tokenizer()
    tiny.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tiny.train_from_iterator(CASES * 3, trainer=trainer)
    tiny.add_tokens([AddedToken("<extra>", special=False, normalized=False)])
    return tiny


def tiny_encode(tiny, text, parse_special):
    tiny.encode_special_tokens = not parse_special
    try:
        return tiny.encode(text, add_special_tokens=False).ids
    finally:
        tiny.encode_special_tokens = False


def probe_classes():
    """Which code points the reference ByteLevel regex (Oniguruma) puts in \\p{L}, \\p{N} and \\s, and which
    the Digits pre-tokenizer (Rust's `char::is_numeric` as compiled into `tokenizers`) splits off. The
    two number sets differ for code points newer than Oniguruma's Unicode tables."""
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    digits = pre_tokenizers.Digits(individual_digits=True)
    letters, numbers, spaces, numeric = [], [], [], []
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        if len(digits.pre_tokenize_str("a" + c + "b")) == 3:
            numeric.append(cp)
        if len(bl.pre_tokenize_str("a" + c)) == 1:  # joins a letter run
            letters.append(cp)
        elif len(bl.pre_tokenize_str("1" + c)) == 1:  # joins a number run
            numbers.append(cp)
        elif c == " " or len(bl.pre_tokenize_str(c + "!")) == 2:
            # not L/N and does not join "!" in a punctuation run: \\s (" !" is one piece, hence the test)
            spaces.append(cp)
    return {
        "letters": ranges(letters),
        "numbers": ranges(numbers),
        "whitespace": ranges(spaces),
        "numeric": ranges(numeric),
    }


def ranges(points):
    out = []
    for p in points:
        if out and out[-1][1] == p - 1:
            out[-1][1] = p
        else:
            out.append([p, p])
    return out


def rust_table(name, doc, table):
    # ASCII is handled in code; no range straddles 0x80 (0x7f and 0x80 are neither letters nor numbers).
    assert all(r[1] < 0x80 or r[0] >= 0x80 for r in table)
    non_ascii = [r for r in table if r[0] >= 0x80]
    lines = [f"/// {doc}", "#[rustfmt::skip]", f"static {name}: [(u32, u32); {len(non_ascii)}] = ["]
    line = "   "
    for a, b in non_ascii:
        item = f" (0x{a:x}, 0x{b:x}),"
        if len(line) + len(item) > 100:
            lines.append(line)
            line = "   "
        line += item
    lines += [line, "];", ""]
    return "\n".join(lines)


def write_classes_rs(classes):
    text = "\n".join(
        [
            "//! Unicode classes as the reference tokenizer sees them, as inclusive, sorted code point ranges",
            "//! outside ASCII. Generated by `tools/engine/scripts/tokenizer_fixture.py` by probing `tokenizers`'",
            "//! pre-tokenizers with every code point; do not edit by hand. Tables rather than std because std",
            "//! has no general-category query (`char::is_alphabetic` also takes combining marks), and because",
            "//! `char::is_numeric` follows the compiler's Unicode version while the reference is fixed.",
            "",
            rust_table("LETTERS", "`\\p{L}` of the ByteLevel regex (Oniguruma).", classes["letters"]),
            rust_table("NUMBERS", "`\\p{N}` of the ByteLevel regex (Oniguruma).", classes["numbers"]),
            rust_table(
                "NUMERIC",
                "What the `Digits` pre-tokenizer splits off (`char::is_numeric` as built into `tokenizers`).",
                classes["numeric"],
            ),
            "fn contains(table: &[(u32, u32)], c: char) -> bool {",
            "    let cp = c as u32;",
            "    // The last range starting at or below `cp` is the only one that can hold it.",
            "    let i = table.partition_point(|&(start, _)| start <= cp);",
            "    i > 0 && table[i - 1].1 >= cp",
            "}",
            "",
            "/// Whether a non-ASCII `c` is in `\\p{L}`.",
            "pub(super) fn is_letter(c: char) -> bool {",
            "    contains(&LETTERS, c)",
            "}",
            "",
            "/// Whether a non-ASCII `c` is in `\\p{N}`.",
            "pub(super) fn is_number(c: char) -> bool {",
            "    contains(&NUMBERS, c)",
            "}",
            "",
            "/// Whether `Digits` splits off a non-ASCII `c`.",
            "pub(super) fn is_numeric(c: char) -> bool {",
            "    contains(&NUMERIC, c)",
            "}",
            "",
        ]
    )
    path = os.path.join(ENGINE, "src", "tokenizer", "classes.rs")
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


def dump_one_item_per_line(obj):
    """JSON with each case and chat on its own line: readable diffs without one id per line."""
    parts = []
    for key, value in obj.items():
        if isinstance(value, list):
            items = ",\n  ".join(json.dumps(v, ensure_ascii=True) for v in value)
            parts.append(f"{json.dumps(key)}: [\n  {items}\n ]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=True)}")
    return "{\n " + ",\n ".join(parts) + "\n}\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=os.path.join(REPO, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--skip-unicode", action="store_true")
    args = ap.parse_args()

    tok, backend = load_reference(args.model)
    tiny = train_tiny()
    tiny_path = os.path.join(FIXTURES, "tokenizer_tiny.json")
    tiny.save(tiny_path)

    cases = []
    for text in CASES + ["an <extra> token", "<|im_end|><extra><|im_start|>"]:
        ids = encode(backend, text, True)
        assert ids == tok.encode(text, add_special_tokens=False), text
        decoded = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert decoded == text or "dropped" in text, (text, decoded)
        cases.append(
            {
                "text": text,
                "ids": ids,
                "ids_plain": encode(backend, text, False),
                "decoded": decoded,
                "tiny_ids": tiny_encode(tiny, text, True),
                "tiny_ids_plain": tiny_encode(tiny, text, False),
                "ids_gpt2": encode_gpt2(backend, text),
                "tiny_ids_gpt2": encode_gpt2(tiny, text),
            }
        )

    chats = []
    for messages, gen in CHATS:
        conv = [{"role": r, "content": c} for r, c in messages]
        text = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        chats.append(
            {
                "messages": [list(m) for m in messages],
                "add_generation_prompt": gen,
                "text": text,
                "ids": encode(backend, text, True),
            }
        )

    import tokenizers
    import transformers

    out = {
        "generated_by": "tools/engine/scripts/tokenizer_fixture.py",
        "reference": f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
        "GGUF tokenizer with Digits(individual_digits=True) before ByteLevel",
        "model": os.path.basename(args.model),
        "chat_template": tok.chat_template,
        "cases": cases,
        "chats": chats,
    }
    path = os.path.join(FIXTURES, "tokenizer_cases.json")
    with open(path, "w") as f:
        f.write(dump_one_item_per_line(out))
    print(f"wrote {path} ({len(cases)} cases, {len(chats)} chats), {tiny_path}")

    if not args.skip_unicode:
        classes = probe_classes()
        write_classes_rs(classes)
        path = os.path.join(FIXTURES, "tokenizer_char_classes.json")
        with open(path, "w") as f:
            json.dump(classes, f)
            f.write("\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())

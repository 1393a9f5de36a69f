//! Splitting text into words before BPE, hand-written to match (without a regex engine) the GPT-2
//! pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, optionally
//! preceded by `Digits(individual_digits=true)`, which makes every `\p{N}` character a word of its own.

use super::classes;

/// How text is split into words before BPE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreTokenizer {
    /// The GPT-2 ByteLevel regex alone (`tokenizer.ggml.pre = "gpt2"`).
    Gpt2,
    /// Each numeric character split off first, then the GPT-2 regex on the rest: SmolLM2 and
    /// StarCoder (`tokenizer.ggml.pre = "smollm"`; HF `Sequence[Digits(individual_digits), ByteLevel]`).
    SmolLm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
    /// A character the `Digits` step splits off (only with individual digits): a word by itself, and
    /// the end of the piece the regex sees.
    Digit,
}

const fn ascii_classes() -> [Class; 128] {
    let mut t = [Class::Other; 128];
    let mut b = 0u8;
    while b < 128 {
        t[b as usize] = if b.is_ascii_alphabetic() {
            Class::Letter
        } else if b.is_ascii_digit() {
            Class::Number
        } else if matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ') {
            Class::Space
        } else {
            Class::Other
        };
        b += 1;
    }
    t
}

static ASCII_CLASS: [Class; 128] = ascii_classes();

fn class_of(c: char, digits: bool) -> Class {
    if c.is_ascii() {
        match ASCII_CLASS[c as usize] {
            Class::Number if digits => Class::Digit,
            k => k,
        }
    } else if digits && classes::is_numeric(c) {
        Class::Digit
    } else if c.is_whitespace() {
        // White_Space is a stable property: std agrees with the reference (checked by a test).
        Class::Space
    } else if classes::is_number(c) {
        Class::Number
    } else if classes::is_letter(c) {
        Class::Letter
    } else {
        Class::Other
    }
}

/// Scans a string for words; `digits` selects individual-digit splitting.
struct Splitter<'a> {
    s: &'a str,
    digits: bool,
}

impl Splitter<'_> {
    /// The char at byte `i` with its class, or `None` at the end.
    fn at(&self, i: usize) -> Option<(char, Class)> {
        let c = self.s.get(i..)?.chars().next()?;
        Some((c, class_of(c, self.digits)))
    }

    /// The end of the run of `class` characters starting at `i`.
    fn run_end(&self, mut i: usize, class: Class) -> usize {
        let bytes = self.s.as_bytes();
        while let Some(&b) = bytes.get(i) {
            if b < 0x80 {
                if class_of(b as char, self.digits) != class {
                    break;
                }
                i += 1;
            } else {
                match self.at(i) {
                    Some((c, k)) if k == class => i += c.len_utf8(),
                    _ => break,
                }
            }
        }
        i
    }

    /// The end of the word that starts at `i` (< `s.len()`, on a char boundary).
    fn word_end(&self, i: usize) -> usize {
        let Some((c, class)) = self.at(i) else {
            return self.s.len();
        };
        if let Some(n) = contraction_len(&self.s.as_bytes()[i..]) {
            return i + n;
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: one leading space joins the run after it.
        let (start, class) = match (c, self.at(i + c.len_utf8())) {
            (' ', Some((_, k))) if k != Class::Space && k != Class::Digit => (i + 1, k),
            _ => (i, class),
        };
        match class {
            Class::Digit => i + c.len_utf8(),
            Class::Space => {
                let end = self.run_end(i, Class::Space);
                // `\s+(?!\S)`: a run followed by a non-space gives up its last char (which then leads the
                // next word), unless that would leave it empty (then `\s+` takes the one char). A digit
                // ends the piece the regex sees, so a run before one is at the end.
                match self.at(end) {
                    None | Some((_, Class::Digit)) => end,
                    Some(_) => {
                        let last = self.s[i..end].chars().next_back().map_or(0, char::len_utf8);
                        if end - last > i { end - last } else { end }
                    }
                }
            }
            k => self.run_end(start, k),
        }
    }
}

/// The byte length of the contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at the start of `rest`.
fn contraction_len(rest: &[u8]) -> Option<usize> {
    match rest {
        [b'\'', b's' | b't' | b'm' | b'd', ..] => Some(2),
        [b'\'', b'r', b'e', ..] | [b'\'', b'v', b'e', ..] | [b'\'', b'l', b'l', ..] => Some(3),
        _ => None,
    }
}

/// Calls `f` with each word of `text`, in order; the words concatenate to `text`.
pub(super) fn split<'a>(text: &'a str, mode: PreTokenizer, mut f: impl FnMut(&'a str)) {
    let splitter = Splitter {
        s: text,
        digits: mode == PreTokenizer::SmolLm,
    };
    let mut i = 0;
    while i < text.len() {
        let end = splitter.word_end(i).clamp(i + 1, text.len());
        // `end` is always a char boundary; `get` keeps a logic slip from ever panicking.
        match text.get(i..end) {
            Some(word) => f(word),
            None => return,
        }
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str, mode: PreTokenizer) -> Vec<&str> {
        let mut v = Vec::new();
        split(text, mode, |w| v.push(w));
        v
    }

    #[test]
    fn gpt2_pattern() {
        let g = |t| words(t, PreTokenizer::Gpt2);
        assert_eq!(g("Hello world"), ["Hello", " world"]);
        assert_eq!(g("a   b"), ["a", "  ", " b"]);
        assert_eq!(g("a\t\tb"), ["a", "\t", "\t", "b"]);
        assert_eq!(g("end   "), ["end", "   "]);
        assert_eq!(g("x 123 45"), ["x", " 123", " 45"]);
        assert_eq!(
            g("I'm we'll THEY'RE"),
            ["I", "'m", " we", "'ll", " THEY", "'", "RE"]
        );
        assert_eq!(g("!'s ''s"), ["!'", "s", " ''", "s"]);
        assert_eq!(g("a, b!!"), ["a", ",", " b", "!!"]);
        assert_eq!(g("\n\n\nx"), ["\n\n", "\n", "x"]);
        assert_eq!(g("été 世界"), ["été", " 世界"]);
        // U+0301 (combining acute) is a mark, not a letter: it is punctuation-like here.
        assert_eq!(g("e\u{301}x"), ["e", "\u{301}", "x"]);
        assert_eq!(g(""), Vec::<&str>::new());
    }

    #[test]
    fn individual_digits() {
        let s = |t| words(t, PreTokenizer::SmolLm);
        assert_eq!(s("x 123"), ["x", " ", "1", "2", "3"]);
        assert_eq!(s("a  1"), ["a", "  ", "1"]);
        assert_eq!(s("v1.2"), ["v", "1", ".", "2"]);
        assert_eq!(s("½²"), ["½", "²"]);
        assert_eq!(s("Ⅻ rows"), ["Ⅻ", " rows"]);
        assert_eq!(s("1 2"), ["1", " ", "2"]);
    }

    #[test]
    fn words_cover_any_text() {
        let text = "a\u{0}\u{85}\u{a0} \u{2028}'\u{10ffff}9\u{663}x  ";
        for mode in [PreTokenizer::Gpt2, PreTokenizer::SmolLm] {
            assert_eq!(words(text, mode).concat(), text);
        }
    }

    /// Every code point gets the class the reference gives it (fixture from probing `tokenizers`'
    /// pre-tokenizers; see scripts/tokenizer_fixture.py).
    #[test]
    fn char_classes_match_the_reference() {
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/tokenizer_char_classes.json"
        ))
        .expect("fixture parses");
        let set = |key: &str| {
            let mut member = vec![false; 0x110000];
            for r in v[key].as_array().expect("ranges") {
                let (a, b) = (r[0].as_u64().expect("start"), r[1].as_u64().expect("end"));
                member[a as usize..=b as usize].fill(true);
            }
            member
        };
        let (letters, numbers, spaces, numeric) = (
            set("letters"),
            set("numbers"),
            set("whitespace"),
            set("numeric"),
        );
        let mut wrong = Vec::new();
        for c in (0..0x110000u32).filter_map(char::from_u32) {
            let i = c as usize;
            let regex = if letters[i] {
                Class::Letter
            } else if numbers[i] {
                Class::Number
            } else if spaces[i] {
                Class::Space
            } else {
                Class::Other
            };
            let digits = if numeric[i] { Class::Digit } else { regex };
            if class_of(c, false) != regex || class_of(c, true) != digits {
                wrong.push(c as u32);
            }
        }
        assert!(
            wrong.is_empty(),
            "{} code points differ, first {:x?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
    }
}

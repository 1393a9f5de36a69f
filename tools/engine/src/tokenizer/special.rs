//! Finding special and added tokens in input text, leftmost-longest like the HF added-vocabulary
//! matcher, so that `<|im_start|>` in a prompt becomes one token instead of seven.

/// One token the matcher looks for.
#[derive(Clone, Debug)]
struct Entry {
    text: String,
    id: u32,
    /// Matched even when the caller asks for special tokens to be treated as text (user-defined tokens).
    always: bool,
}

/// A piece of input: plain text to pre-tokenize, or a recognised token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    /// Ordinary text.
    Text(&'a str),
    /// A special or added token found in the text.
    Token(u32),
}

/// The tokens recognised in text, indexed by first byte so most positions cost one table lookup.
#[derive(Clone, Debug)]
pub(super) struct Matcher {
    /// Per first byte, indices into `entries`, longest text first.
    by_first: Vec<Vec<usize>>,
    entries: Vec<Entry>,
}

impl Matcher {
    /// A matcher for `(text, id, always)` triples; empty texts are ignored (they would match everywhere).
    pub(super) fn new(tokens: impl IntoIterator<Item = (String, u32, bool)>) -> Self {
        let entries: Vec<Entry> = tokens
            .into_iter()
            .filter(|(text, _, _)| !text.is_empty())
            .map(|(text, id, always)| Entry { text, id, always })
            .collect();
        let mut by_first = vec![Vec::new(); 256];
        for (i, e) in entries.iter().enumerate() {
            by_first[e.text.as_bytes()[0] as usize].push(i);
        }
        for list in &mut by_first {
            list.sort_by_key(|&i| std::cmp::Reverse(entries[i].text.len()));
        }
        Matcher { by_first, entries }
    }

    /// The longest token matching at byte `i` of `text`, as (id, length).
    fn match_at(&self, text: &str, i: usize, parse_special: bool) -> Option<(u32, usize)> {
        let rest = &text.as_bytes()[i..];
        let list = self.by_first.get(usize::from(*rest.first()?))?;
        list.iter()
            .map(|&k| &self.entries[k])
            .find(|e| (parse_special || e.always) && rest.starts_with(e.text.as_bytes()))
            .map(|e| (e.id, e.text.len()))
    }

    /// Calls `f` with the pieces of `text` in order. Special tokens are only recognised when
    /// `parse_special`; user-defined ones always.
    pub(super) fn split<'a>(
        &self,
        text: &'a str,
        parse_special: bool,
        mut f: impl FnMut(Piece<'a>),
    ) {
        if self.entries.is_empty() {
            if !text.is_empty() {
                f(Piece::Text(text));
            }
            return;
        }
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            // A token's first byte is never a UTF-8 continuation byte, so matches start on char boundaries.
            match self.match_at(text, i, parse_special) {
                Some((id, len)) => {
                    if start < i {
                        f(Piece::Text(&text[start..i]));
                    }
                    f(Piece::Token(id));
                    i += len;
                    start = i;
                }
                None => i += 1,
            }
        }
        if start < bytes.len() {
            f(Piece::Text(&text[start..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces<'a>(m: &Matcher, text: &'a str, parse: bool) -> Vec<Piece<'a>> {
        let mut v = Vec::new();
        m.split(text, parse, |p| v.push(p));
        v
    }

    #[test]
    fn leftmost_longest_and_user_defined() {
        let m = Matcher::new([
            ("<a>".to_string(), 1, false),
            ("<a><b>".to_string(), 2, false),
            ("<u>".to_string(), 3, true),
            (String::new(), 4, true),
        ]);
        use Piece::*;
        assert_eq!(
            pieces(&m, "x<a><b>y<a>", true),
            [Text("x"), Token(2), Text("y"), Token(1)]
        );
        assert_eq!(
            pieces(&m, "x<a><b>y<u>", false),
            [Text("x<a><b>y"), Token(3)]
        );
        assert_eq!(
            pieces(&m, "<a<a>é", true),
            [Text("<a"), Token(1), Text("é")]
        );
        assert_eq!(pieces(&m, "", true), []);
        assert_eq!(pieces(&Matcher::new([]), "é", true), [Text("é")]);
    }
}

//! GPT-2's byte-level alphabet: each of the 256 byte values is spelled as one printable character, so
//! that any byte string is a string of vocabulary symbols and tokens never hold raw control bytes or
//! spaces (a space is `Ġ`, a newline `Ċ`).

/// Bytes that stand for themselves: the printable Latin-1 characters except the soft hyphen.
const fn is_printable(b: u32) -> bool {
    matches!(b, 0x21..=0x7e | 0xa1..=0xac | 0xae..=0xff)
}

/// Code points past the last byte-level character; chars from here up are not in the alphabet.
const REVERSE_LEN: usize = 256 + 68;

const fn build_tables() -> ([char; 256], [u16; REVERSE_LEN]) {
    let mut to_char = ['\0'; 256];
    let mut to_byte = [u16::MAX; REVERSE_LEN];
    // The 68 non-printable bytes take U+0100, U+0101, ... in byte order.
    let mut shifted = 256u32;
    let mut b = 0u32;
    while b < 256 {
        let cp = if is_printable(b) {
            b
        } else {
            shifted += 1;
            shifted - 1
        };
        to_char[b as usize] = match char::from_u32(cp) {
            Some(c) => c,
            None => '\0',
        };
        to_byte[cp as usize] = b as u16;
        b += 1;
    }
    (to_char, to_byte)
}

static TABLES: ([char; 256], [u16; REVERSE_LEN]) = build_tables();

/// The byte-level character that spells byte `b`.
pub(super) fn byte_to_char(b: u8) -> char {
    TABLES.0[b as usize]
}

/// The byte a byte-level character spells, or `None` for characters outside the alphabet.
pub(super) fn char_to_byte(c: char) -> Option<u8> {
    let b = *TABLES.1.get(c as usize)?;
    u8::try_from(b).ok()
}

/// The bytes a byte-level token stands for, or `None` if it holds a character outside the alphabet.
pub(super) fn decode_token(token: &str) -> Option<Vec<u8>> {
    token.chars().map(char_to_byte).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode_bytes(bytes: &[u8]) -> String {
        bytes.iter().map(|&b| byte_to_char(b)).collect()
    }

    #[test]
    fn the_mapping_is_a_bijection_with_gpt2_landmarks() {
        let mut seen = std::collections::HashSet::new();
        for b in 0..=255u8 {
            let c = byte_to_char(b);
            assert!(seen.insert(c), "byte {b} shares {c:?}");
            assert_eq!(char_to_byte(c), Some(b));
            assert!(
                !c.is_whitespace() && !c.is_control(),
                "byte {b} maps to {c:?}"
            );
        }
        assert_eq!(byte_to_char(b' '), 'Ġ');
        assert_eq!(byte_to_char(b'\n'), 'Ċ');
        assert_eq!(byte_to_char(b'\t'), 'ĉ');
        assert_eq!(byte_to_char(b'A'), 'A');
        assert_eq!(byte_to_char(0xad), 'Ń');
        assert_eq!(char_to_byte(' '), None);
        assert_eq!(char_to_byte('\u{144}'), None);
        assert_eq!(char_to_byte('€'), None);
    }

    #[test]
    fn tokens_round_trip() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_token(&encode_bytes(&bytes)), Some(bytes));
        assert_eq!(decode_token("ĠHello"), Some(b" Hello".to_vec()));
        assert_eq!(decode_token("a b"), None);
    }
}

//! The SpecBlock drafter's config.json parser: any text gives a config within the documented bounds or
//! an error naming the field. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specblock::drafter::DrafterConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = DrafterConfig::from_json(text, "fuzz/config.json") {
        // Accepted configs describe shapes whose products fit: the loader multiplies them.
        assert!(c.hidden > 0 && c.vocab > 0 && c.draft_vocab > 0 && c.layers > 0);
        assert!(c.vocab.checked_mul(c.hidden).is_some());
        assert!(c.heads.checked_mul(c.head_dim).is_some());
    }
});

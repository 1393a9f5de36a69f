//! The EAGLE-3 drafter's config.json parser: any text gives a config within the documented bounds or an
//! error naming the field. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specblock::drafter::eagle3::Eagle3Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = Eagle3Config::from_json(text, "fuzz/config.json") {
        assert!(c.hidden > 0 && c.vocab > 0 && c.draft_vocab > 0);
        assert!(c.vocab.checked_mul(c.hidden).is_some());
        assert!(c.feature_width() > 0);
    }
});

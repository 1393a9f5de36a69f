//! The Hugging Face tokenizer.json loader (`Tokenizer::from_tokenizer_json_str`), then encode and decode
//! on what it accepted: any text loads or gives an error, and a loaded tokenizer never emits an id outside
//! its vocabulary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specblock_engine::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tok) = Tokenizer::from_tokenizer_json_str(text) else {
        return;
    };
    for sample in [
        "Hello, world!",
        " <|im_start|>user\n123 ünïcode\t",
        "\u{0}\u{10FFFF}  x",
    ] {
        for special in [false, true] {
            let ids = tok.encode(sample, special);
            for &id in &ids {
                assert!((id as usize) < tok.vocab_size(), "encode gave id {id}");
            }
            let _ = tok.decode(&ids);
        }
    }
});

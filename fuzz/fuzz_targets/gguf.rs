//! The engine's GGUF reader and the loaders behind it: the metadata accessors, tensor dequantization,
//! the tokenizer (`Tokenizer::from_gguf`, then an encode/decode round) and the model loader
//! (`model_from_gguf`). Any bytes load or give an error; memory stays bounded by the file's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use specblock_engine::gguf::GgufFile;
use specblock_engine::load::model_from_gguf;
use specblock_engine::tokenizer::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data.to_vec()) else {
        return;
    };
    for key in file.metadata.keys() {
        let _ = file.meta_str(key);
        let _ = file.meta_u64(key);
        let _ = file.meta_f64(key);
        let _ = file.meta_str_array(key);
        let _ = file.meta_int_array(key);
    }
    for t in &file.tensors {
        if t.n_values <= 1 << 20 {
            if let Ok((_, values)) = file.tensor_f32(&t.name) {
                assert_eq!(values.len(), t.n_values, "{}", t.name);
            }
        }
    }
    if let Ok(tok) = Tokenizer::from_gguf(&file) {
        let ids = tok.encode("Hello, world! <|im_start|>user\n 123 ünïcode\t\n", true);
        for &id in &ids {
            assert!((id as usize) < tok.vocab_size(), "encode gave id {id}");
        }
        let _ = tok.decode(&ids);
        if let Some(template) = tok.chat_template() {
            let _ = template.len();
            let _ = tok.apply_chat_template(&[("user", "hi")], true);
        }
    }
    let _ = model_from_gguf(&file);
});

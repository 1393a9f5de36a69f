//! Finding the real SmolLM2 GGUF for tests that need it.

use std::path::PathBuf;

/// The model file name that `specblock fetch-model` writes under `models/`.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The real model's path: `$SPECBLOCK_MODEL`, else `models/SmolLM2-135M-Instruct.Q4_1.gguf` at the repo
/// root. When it is absent the test fails with instructions, unless `SPECBLOCK_SKIP_MODEL_TESTS=1`, in
/// which case this prints a skip line and returns `None`.
pub fn model_path(test: &str) -> Option<PathBuf> {
    let path = match std::env::var_os("SPECBLOCK_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")).join(MODEL_FILE)
        }
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("SPECBLOCK_SKIP_MODEL_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "skipping {test}: model not found at {} (SPECBLOCK_SKIP_MODEL_TESTS=1)",
            path.display()
        );
        return None;
    }
    panic!(
        "{test} needs the model at {}: run `specblock fetch-model` (or `cargo run -p specblock-engine -- \
         fetch-model`), point SPECBLOCK_MODEL at the GGUF, or set SPECBLOCK_SKIP_MODEL_TESTS=1 to skip",
        path.display()
    );
}

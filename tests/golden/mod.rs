//! Shared by the tests that compare with golden files written by the PyTorch references
//! (tools/train): fixture paths, typed tensor reads and the 1e-4 closeness check.
#![allow(dead_code)] // each test binary uses a subset

use std::path::PathBuf;

use specblock::io::safetensors::SafeTensors;

/// `tools/engine/tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures"
    ))
    .join(name)
}

/// Opens a golden file among the fixtures.
pub fn open(name: &str) -> SafeTensors {
    SafeTensors::open(&fixture(name)).unwrap_or_else(|e| panic!("golden fixture {name}: {e}"))
}

/// An f32 tensor (any stored float type), panicking with the tensor's name.
pub fn f32s(g: &SafeTensors, name: &str) -> Vec<f32> {
    g.f32(name).unwrap_or_else(|e| panic!("{name}: {e}")).1
}

/// An i64 tensor.
pub fn i64s(g: &SafeTensors, name: &str) -> Vec<i64> {
    g.i64(name).unwrap_or_else(|e| panic!("{name}: {e}")).1
}

/// An i64 tensor of ids, as u32.
pub fn u32s(g: &SafeTensors, name: &str) -> Vec<u32> {
    i64s(g, name).iter().map(|&x| x as u32).collect()
}

/// The target embedding a fixture directory carries (`embed.safetensors`).
pub fn embedding(dir: &std::path::Path) -> Vec<f32> {
    SafeTensors::open(&dir.join("embed.safetensors"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .f32("model.embed_tokens.weight")
        .unwrap_or_else(|e| panic!("{e}"))
        .1
}

/// Every element within 1e-4 of the reference, relative to the reference's largest magnitude.
pub fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * scale,
            "{what}[{i}]: {a} vs reference {b} (scale {scale})"
        );
    }
}

/// A drafter block output against the reference tensors `{prefix}.logits`, `.rank_logits`, `.h` (hidden)
/// and `.n` (normed), each with [`close`].
#[allow(dead_code)] // not every test binary compares SpecBlock block outputs
pub fn close_block(out: &specblock::drafter::BlockOutput, g: &SafeTensors, prefix: &str) {
    for (got, name) in [
        (&out.logits, "logits"),
        (&out.rank_logits, "rank_logits"),
        (&out.hidden, "h"),
        (&out.normed, "n"),
    ] {
        let what = format!("{prefix}.{name}");
        close(got, &f32s(g, &what), &what);
    }
}

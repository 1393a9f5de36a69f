//! Checkpoints written by the Python trainer's export (tools/train/train.py `export`, bf16 weights, the
//! authors' / EAGLE-3 names, d2t and t2d) load in the Rust drafters and reproduce the outputs that PyTorch
//! computed from the same files (tools/train/test_train.py `test_trained_export_fixture`, which writes
//! tools/engine/tests/fixtures/trained_{specblock,eagle3}/ with SPECBLOCK_WRITE_FIXTURES=1).

mod golden;

use golden::{close, close_block, embedding as embed, f32s, fixture, u32s};
use specblock::drafter::SpecBlockDrafter;
use specblock::drafter::eagle3::Eagle3Drafter;
use specblock::io::safetensors::SafeTensors;

#[test]
fn trained_specblock_export_matches_pytorch() {
    let dir = fixture("trained_specblock");
    let drafter = SpecBlockDrafter::load_dir(&dir, 2).expect("exported SpecBlock drafter loads");
    let embed = embed(&dir);
    let g = SafeTensors::open(&dir.join("expected.safetensors")).expect("expected outputs");
    let mut cache = drafter.new_cache(16);
    let ctx = drafter
        .context_forward(
            &mut cache,
            &embed,
            &f32s(&g, "context.features"),
            &u32s(&g, "context.tokens"),
            &u32s(&g, "context.bases"),
        )
        .unwrap();
    close_block(&ctx, &g, "context");
    let seeds = drafter
        .seed_forward(
            &cache,
            &embed,
            &f32s(&g, "seed.hidden"),
            &u32s(&g, "seed.tokens"),
            &u32s(&g, "seed.visibility"),
        )
        .unwrap();
    close_block(&seeds, &g, "seed");
}

#[test]
fn trained_eagle3_export_matches_pytorch() {
    let dir = fixture("trained_eagle3");
    let drafter = Eagle3Drafter::load_dir(&dir, 2).expect("exported EAGLE-3 drafter loads");
    assert!(!drafter.has_own_embedding());
    let embed = embed(&dir);
    let g = SafeTensors::open(&dir.join("expected.safetensors")).expect("expected outputs");
    let mut cache = drafter.new_cache(16, 4);
    let ctx = drafter
        .context_forward(
            &mut cache,
            &embed,
            &f32s(&g, "context.features"),
            &u32s(&g, "context.tokens"),
            &u32s(&g, "context.positions"),
        )
        .unwrap();
    close(&ctx.logits, &f32s(&g, "context.logits"), "context.logits");
    close(&ctx.hidden, &f32s(&g, "context.h"), "context.h");
    close(&ctx.normed, &f32s(&g, "context.n"), "context.n");
    let step = drafter
        .draft_step(
            &mut cache,
            &embed,
            &f32s(&g, "step.hidden"),
            &u32s(&g, "step.tokens"),
            &u32s(&g, "step.positions"),
            &[-1, -1],
        )
        .unwrap();
    close(&step.logits, &f32s(&g, "step.logits"), "step.logits");
    close(&step.hidden, &f32s(&g, "step.h"), "step.h");
    close(&step.normed, &f32s(&g, "step.n"), "step.n");
}

//! After creation (and one warm-up step), a drafting session's `draft` and `commit` perform no heap
//! allocation: counted by a counting global allocator on this thread (the drafter runs one thread).

mod counting;

use std::path::PathBuf;

use counting::counted;

use specblock::drafter::{DraftPolicy, SpecBlockDrafter, SpecBlockSession};
use specblock::io::safetensors::SafeTensors;
use specblock::tree::{DraftTree, TreeParams};

#[test]
fn draft_and_commit_do_not_allocate() {
    draft_and_commit_do_not_allocate_with(false);
}

/// bf16 weights round each matmul's activations into a per-thread buffer, reserved at session creation.
#[test]
fn draft_and_commit_do_not_allocate_with_bf16_weights() {
    draft_and_commit_do_not_allocate_with(true);
}

fn draft_and_commit_do_not_allocate_with(bf16: bool) {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures/drafter_tiny"
    ));
    let mut d = SpecBlockDrafter::load_dir(&dir, 1).unwrap();
    if bf16 {
        d.use_bf16_weights();
    }
    let embed = SafeTensors::open(&dir.join("embed.safetensors"))
        .unwrap()
        .f32("model.embed_tokens.weight")
        .unwrap()
        .1;
    let fw = 3 * d.config().target_hidden;
    let feats: Vec<f32> = (0..8 * fw)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let mut s = SpecBlockSession::new(&d, 256, DraftPolicy::default()).unwrap();
    let mut tree = DraftTree::new(TreeParams {
        max_nodes: 2048,
        max_depth: 16,
    })
    .unwrap();
    s.prefill(&embed, &feats[..4 * fw], &[1, 2, 3, 4, 5])
        .unwrap();
    s.draft(&embed, &mut tree).unwrap();
    s.commit(&embed, &[7, 8], 9, &feats[..3 * fw]).unwrap();
    let mut total = 0;
    for step in 0..10u32 {
        let accepted = [10 + step, 20 + step, 30 + step][..(step % 3) as usize].to_vec();
        let rows = accepted.len() + 1;
        let (_, draft_allocs) = counted(|| s.draft(&embed, &mut tree).unwrap());
        let (_, commit_allocs) = counted(|| {
            s.commit(&embed, &accepted, 40 + step, &feats[..rows * fw])
                .unwrap()
        });
        assert_eq!(
            (draft_allocs, commit_allocs),
            (0, 0),
            "step {step} ({} accepted): allocations in (draft, commit)",
            accepted.len()
        );
        total += draft_allocs + commit_allocs;
    }
    assert_eq!(
        total, 0,
        "draft/commit allocated {total} times over 10 steps"
    );
}

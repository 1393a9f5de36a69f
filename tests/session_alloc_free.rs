//! After creation (and one warm-up step), a drafting session's `draft` and `commit` perform no heap
//! allocation: counted by a counting global allocator on this thread (the drafter runs one thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;

use specblock::drafter::{DraftPolicy, Drafter, Session};
use specblock::io::safetensors::SafeTensors;
use specblock::tree::{DraftTree, TreeParams};

struct CountingAlloc;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.try_with(|c| c.get()).unwrap_or(false) {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        if std::env::var_os("SHOW_ALLOC").is_some() {
            COUNTING.with(|c| c.set(false));
            eprintln!("{}", std::backtrace::Backtrace::force_capture());
            COUNTING.with(|c| c.set(true));
        }
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` with counting on; returns its result and the allocations it made on this thread.
fn counted<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let r = f();
    COUNTING.with(|c| c.set(false));
    (r, ALLOCS.with(|c| c.get()))
}

#[test]
fn draft_and_commit_do_not_allocate() {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/engine/tests/fixtures/drafter_tiny"
    ));
    let d = Drafter::load_dir(&dir, 1).unwrap();
    let embed = SafeTensors::open(&dir.join("embed.safetensors"))
        .unwrap()
        .f32("model.embed_tokens.weight")
        .unwrap()
        .1;
    let fw = 3 * d.config().target_hidden;
    let feats: Vec<f32> = (0..8 * fw)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let mut s = Session::new(&d, 256, DraftPolicy::default()).unwrap();
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

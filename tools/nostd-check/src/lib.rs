//! A `#![no_std]` consumer of the specblock core, linked into a staticlib with its own panic handler and
//! allocator by `make nostd`. If the core (or anything it depends on) pulled in std, linking would fail
//! with a duplicate `panic_impl` lang item.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::panic::PanicInfo;

use specblock::tree::{DraftTree, TreeParams};
use specblock::verify;

/// An allocator that always fails: this crate is only linked, never run.
struct NoAlloc;

// SAFETY: returning NULL is a valid "allocation failed" answer; dealloc is never reached.
unsafe impl GlobalAlloc for NoAlloc {
    unsafe fn alloc(&self, _layout: Layout) -> *mut u8 {
        core::ptr::null_mut()
    }
    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: NoAlloc = NoAlloc;

#[panic_handler]
fn panic(_info: &PanicInfo) -> ! {
    loop {}
}

/// Exercises tree building, finalize, a layout and greedy acceptance so they are all linked.
#[unsafe(no_mangle)]
pub extern "C" fn specblock_nostd_probe(token: i32) -> i32 {
    let Ok(mut tree) = DraftTree::new(TreeParams { max_nodes: 8, max_depth: 4 }) else {
        return -1;
    };
    if tree.reset(token).is_err() || tree.add(0, token + 1, -0.5).is_err() || tree.finalize(8).is_err() {
        return -2;
    }
    let mut positions = [0i32; 2];
    if specblock::layout::positions(&tree, 3, &mut positions).is_err() {
        return -3;
    }
    match verify::greedy(&tree, &[token + 1, token + 2]) {
        Ok(a) => a.bonus_token + positions[1],
        Err(_) => -4,
    }
}

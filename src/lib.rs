//! # specblock
//!
//! SpecBlock speculative decoding for LLM inference engines. The engine owns the target model and its KV
//! cache; this library owns the drafting side and the bookkeeping between the two:
//!
//! - [`tree`]: a bounded draft tree (node arena with a fixed capacity, dedup, budget prune, topological order);
//! - [`layout`]: verification inputs in every common engine format (positions, masks, paths, sibling lists,
//!   llama.cpp sequence-id sets), written into caller buffers;
//! - [`verify`]: greedy and lossless sampling acceptance, with the KV keep-list;
//! - [`num`]: bf16 and IEEE-half conversions (the `half` crate, bit-identical to the former hand-written ones);
//! - [`adapt`]: the cost-aware draft-shape policy (a bandit over draft shapes, no drafting included,
//!   fed the engine's measured timings);
//! - [`drafter`] (feature `std`): the SpecBlock drafter (config, weights, context cache, block forward);
//! - [`io`] (feature `std`): checkpoint reading (safetensors);
//! - [`cpu`] (feature `std`): CPU numerics (thread pool, matmul and friends) for drafters and engines;
//! - [`cuda`] (feature `cuda`): GPU kernels for finalize, layouts, acceptance and the drafter's block
//!   forward, with CPU twins and parity tests;
//! - `ffi` (feature `std`): the C ABI declared in `include/specblock.h`.
//!
//! The core is `#![no_std]`: with only the `alloc` feature, every structure allocates once at creation and
//! draft / finalize / layout / verify perform no heap allocation.
//!
//! ## Typical use (Rust)
//!
//! ```
//! use specblock::tree::{DraftTree, TreeParams};
//! use specblock::verify;
//!
//! let mut tree = DraftTree::new(TreeParams { max_nodes: 16, max_depth: 4 }).unwrap();
//! tree.reset(100).unwrap(); // root = last committed token
//! let a = tree.add(0, 7, -0.1).unwrap();
//! let _b = tree.add(a, 8, -0.2).unwrap();
//! let _c = tree.add(0, 9, -1.5).unwrap();
//! tree.finalize(3).unwrap();
//! // Finalized order: root, then depth 1 by probability, then depth 2.
//! assert_eq!(tree.tokens(), &[100, 7, 9, 8]);
//! // Target argmax after each row: 7 after the root, 1 after "9", 8 after "7", 5 after "8".
//! let accept = verify::greedy(&tree, &[7, 8, 1, 5]).unwrap();
//! assert_eq!(accept.tokens(), &[7, 8]);
//! assert_eq!(accept.bonus_token, 5);
//! ```
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

#[cfg(feature = "std")]
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "std")]
pub mod drafter;
pub mod error;
#[cfg(feature = "std")]
pub mod io;
pub mod math;
pub mod num;
pub mod rng;

#[cfg(feature = "alloc")]
pub mod adapt;
#[cfg(feature = "alloc")]
pub mod layout;
#[cfg(feature = "alloc")]
pub mod tree;
#[cfg(feature = "alloc")]
pub mod verify;

#[cfg(feature = "std")]
pub mod ffi;

pub use error::{Error, Status};

/// The deepest tree the library handles (root excluded). Bounds the fixed arrays of [`verify::Acceptance`].
pub const MAX_DEPTH: usize = 64;

/// The largest `max_nodes` a tree may be created with. Keeps every node index inside `i32` and every
/// dense layout addressable.
pub const MAX_NODES: usize = 1 << 16;

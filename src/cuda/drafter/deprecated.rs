//! The per-op wrappers' old paths: until the GPU drafter moved here from `cuda::block`, this module
//! (`cuda::drafter`) held the kernel wrappers that now live in [`super::ops`]. Each old name stays
//! usable as a deprecated alias (a `#[deprecated]` on a `pub use` has no effect, so these are type
//! aliases, constants and a forwarding function), hidden from the docs.
#![allow(missing_docs)]

use super::ops;

macro_rules! moved_types {
    ($($name:ident),* $(,)?) => {$(
        #[doc(hidden)]
        #[deprecated(note = "moved to `specblock::cuda::drafter::ops`")]
        pub type $name = ops::$name;
    )*};
}

moved_types!(
    DrafterKernels,
    FuseInputs,
    RmsNorm,
    AddRmsNorm,
    Rope,
    CacheAppend,
    Attention,
    Swiglu,
    Elementwise,
    ShiftConcat,
    HeadFeatures,
);

macro_rules! moved_consts {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        #[doc(hidden)]
        #[deprecated(note = "moved to `specblock::cuda::drafter::ops`")]
        pub const $name: $ty = ops::$name;
    )*};
}

moved_consts!(
    STATUS_TOKEN_OUT_OF_RANGE: i32,
    MAX_SLOTS: usize,
    MAX_HEAD_DIM: usize,
    MAX_SELECT: usize,
    RANK_FEATURES: usize,
    MAX_SPLITS: usize,
);

#[doc(hidden)]
#[deprecated(note = "moved to `specblock::cuda::drafter::ops::attention_workspace_len`")]
pub fn attention_workspace_len(rows: usize, n_heads: usize, head_dim: usize) -> usize {
    ops::attention_workspace_len(rows, n_heads, head_dim)
}

//! TEMPORARY STUB (replaced by the helper's module at merge).
#![allow(missing_docs, dead_code, clippy::all)]
pub mod weights;
pub mod train;
pub use weights::{AdapterShape, HeadAdapter};
pub use train::{Records, TrainParams, Trainer};

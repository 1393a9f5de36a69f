//! Online drafter adaptation from verifier feedback: a small trainable adapter on a drafter's heads
//! and its trainer.
//!
//! The adapter ([`HeadAdapter`]) sits before the draft LM head `W` (`draft_vocab x hidden`): the
//! drafter's normed final hidden `n` becomes `n' = n + B (A n)` (rank `r`, `B` starts at zero), the
//! draft logits `W n' + bias`, and a SpecBlock drafter's rank head gets `rank_logits += D h1` on its
//! last layer (`h1` the rank head's SiLU hidden). EAGLE-3 drafters have no rank head: `D` is empty.
//!
//! [`Trainer`] fits the adapter to the target's tokens (cross-entropy on the draft logits plus the
//! rank head's cross-entropy) with a hand-written backward and AdamW, in buffers allocated once.

mod train;
mod weights;

pub use train::{NO_RANK_LABEL, Records, TrainParams, Trainer};
pub use weights::{AdapterShape, HeadAdapter, MAX_RANK};

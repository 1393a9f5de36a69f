//! Cost-aware adaptation of drafting: a draft-shape policy that picks each iteration's shape (or no
//! drafting at all) from what the engine measures.
//!
//! Speed-up = tokens per iteration / (draft time + verification time). Both sides depend on the
//! machine, the drafter, the text and the temperature: on a 2-core CPU the best shape is a 4-node chain
//! or no drafting; on a GPU, verifying 64 rows costs about what one row does and large trees win. So
//! the library does not ship one shape: [`Policy`] learns, per sequence, which [`Arm`] gives the most
//! tokens per second, from the engine's per-iteration [`Feedback`].
//!
//! The algorithm ([`Algorithm::CostModel`], the default) splits an arm's speed into parts that are
//! learned at different rates:
//! - a verification-cost model t_verify(rows), one line fitted to every iteration of every arm
//!   ([`CostModel`]), so a shape not yet tried can be judged by its size;
//! - each arm's drafting seconds (nearly constant per shape);
//! - each arm's tokens per iteration, the noisy part, with an upper confidence bound.
//!
//! The arm maximising `ucb(tokens) / (t_verify(rows) + t_draft)` is chosen. Statistics are
//! discounted (a weight that decays every iteration), so the policy follows a conversation whose
//! predictability changes, and an arm's confidence fades while it is not pulled, so even a bad arm is
//! probed again, rarely (the more it costs, the more rarely). `docs/adaptive.md` compares it with plain
//! discounted UCB over tokens per second ([`Algorithm::Throughput`]) on synthetic environments.
//!
//! Everything is sized at creation ([`MAX_ARMS`] arms at most): [`Policy::choose`] and
//! [`Policy::feedback`] allocate nothing, and the module needs only `alloc`.

mod cost;
pub mod online;
mod policy;
pub mod replay;
pub mod sim;
#[cfg(test)]
mod tests;

pub use cost::CostModel;
pub use policy::{Algorithm, Arm, ArmSummary, Feedback, Policy, PolicyParams, Shape};

/// The most arms one policy holds.
pub const MAX_ARMS: usize = 32;

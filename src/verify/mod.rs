//! Acceptance: which draft nodes the target accepts, the token it emits after them, and which tree rows
//! the engine keeps in its KV cache.
//!
//! Row `i` of the target's output (argmax or logits) is the target's prediction *after* node `i` of the
//! finalized tree, so the rows come straight from the verify forward over `[root, node 1, ...]`.
//!
//! - [`greedy`]: follow the child whose token equals the target argmax at its parent, as long as one exists;
//!   the bonus token is the argmax after the last accepted node. Identical to plain greedy decoding.
//! - [`sample`]: lossless speculative sampling with deterministic (top-k) children, the "target-only" rule:
//!   at node `v`, draw one coin `u` in `[0, 1)` and accept the first child `c_i` (ascending id order) with
//!   `u < p(c_1) + ... + p(c_i)` (strict, so zero-probability children are never accepted); if none, draw
//!   the emitted token from `p` restricted to the non-children with a *separate* coin; at a leaf, draw the
//!   bonus from `p` with that second coin. `p` is exactly the target's sampling distribution (temperature,
//!   then top-k, then top-p). Every emitted token is therefore distributed as plain sampling would emit it.
//!
//! Coins come from [`CounterRng`](crate::rng::CounterRng): node `v` uses counters `2v` (accept) and
//! `2v + 1` (residual / bonus), so results depend only on the inputs and the seed.

mod dist;

use crate::MAX_DEPTH;
use crate::error::Error;
use crate::rng::CounterRng;
use crate::tree::DraftTree;
use dist::RowDist;

/// The target's sampling parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Temperature; 0 means greedy (argmax, ties to the lowest id). Must be finite and >= 0.
    /// Subnormal temperatures whose reciprocal overflows `f32` (below about 2.9e-39) act as 0.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 turns it off. Must be >= 0.
    pub top_k: i32,
    /// Keep the smallest most-likely set holding at least `top_p` of the mass; 1 turns it off.
    /// Must be in `(0, 1]`.
    pub top_p: f32,
}

impl Default for Sampling {
    /// Temperature 1, no top-k, no top-p.
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl Sampling {
    /// Checks the documented ranges.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::InvalidArgument(
                "temperature must be finite and >= 0",
            ));
        }
        if self.top_k < 0 {
            return Err(Error::InvalidArgument("top_k must be >= 0 (0 = off)"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument("top_p must be in (0, 1] (1 = off)"));
        }
        Ok(())
    }
}

/// Result of verification. Plain data, no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Acceptance {
    /// Number of accepted draft nodes (root excluded).
    pub n_accepted: u32,
    /// Accepted node ids, root to leaf; the first `n_accepted` are valid.
    pub nodes: [i32; MAX_DEPTH],
    /// Their tokens.
    pub tokens: [i32; MAX_DEPTH],
    /// The token the target emits after the last accepted node (or after the root if none).
    pub bonus_token: i32,
}

impl Acceptance {
    fn empty() -> Self {
        Acceptance {
            n_accepted: 0,
            nodes: [-1; MAX_DEPTH],
            tokens: [-1; MAX_DEPTH],
            bonus_token: -1,
        }
    }

    fn push(&mut self, node: usize, token: i32) {
        let k = self.n_accepted as usize;
        self.nodes[k] = node as i32;
        self.tokens[k] = token;
        self.n_accepted += 1;
    }

    /// The accepted node ids.
    pub fn nodes(&self) -> &[i32] {
        &self.nodes[..self.n_accepted as usize]
    }

    /// The accepted tokens.
    pub fn tokens(&self) -> &[i32] {
        &self.tokens[..self.n_accepted as usize]
    }

    /// The node whose target row produced the bonus token: the last accepted node, or the root.
    pub fn last_node(&self) -> usize {
        self.nodes().last().map_or(0, |&n| n as usize)
    }

    /// Number of tree rows whose KV the engine keeps: the root plus the accepted nodes.
    pub fn keep_len(&self) -> usize {
        self.n_accepted as usize + 1
    }

    /// The KV keep-list: the tree rows the engine keeps, in order (`[0, nodes...]`). Row `keep[j]` moves to
    /// cache position `prefix_len + j`. Writes `keep_len()` entries.
    pub fn keep_list(&self, out: &mut [i32]) -> Result<usize, Error> {
        let n = self.keep_len();
        crate::error::check_buffer("keep list", n, out.len())?;
        out[0] = 0;
        out[1..n].copy_from_slice(self.nodes());
        Ok(n)
    }
}

/// Greedy acceptance from the target's argmax after every node (`target_argmax.len()` must equal the
/// tree length).
pub fn greedy(t: &DraftTree, target_argmax: &[i32]) -> Result<Acceptance, Error> {
    t.require_finalized()?;
    if target_argmax.len() != t.len() {
        return Err(Error::ShapeMismatch {
            what: "target_argmax rows (must equal the tree length)",
            expected: t.len(),
            got: target_argmax.len(),
        });
    }
    if target_argmax.iter().any(|&x| x < 0) {
        return Err(Error::InvalidArgument(
            "target_argmax holds a negative token",
        ));
    }
    walk_greedy(t, |node| Ok(target_argmax[node] as usize))
}

/// Follows the child whose token equals `predict(node)` while one exists.
fn walk_greedy(
    t: &DraftTree,
    mut predict: impl FnMut(usize) -> Result<usize, Error>,
) -> Result<Acceptance, Error> {
    let tokens = t.tokens();
    let mut acc = Acceptance::empty();
    let mut cur = 0usize;
    loop {
        let want = predict(cur)?;
        match t.children(cur).find(|&c| tokens[c] as usize == want) {
            Some(c) => {
                acc.push(c, tokens[c]);
                cur = c;
            }
            None => {
                acc.bonus_token = want as i32;
                return Ok(acc);
            }
        }
    }
}

/// Plain decoding's sampler: one token from the target distribution of `row` (temperature, top-k,
/// top-p as in [`sample`], whose emitted tokens follow exactly this distribution). Temperature 0 (or a
/// subnormal one) is the argmax, ties to the lowest id. The coin is `CounterRng::new(seed)` at
/// `counter`, so a run is reproducible. Errors on an empty row, NaN or `+inf`, or no finite value.
pub fn sample_row(row: &[f32], sampling: &Sampling, seed: u64, counter: u64) -> Result<u32, Error> {
    sampling.validate()?;
    if row.is_empty() {
        return Err(Error::InvalidArgument("empty logits row"));
    }
    if sampling.temperature == 0.0 || (1.0 / sampling.temperature).is_infinite() {
        dist::row_max(row, 0)?;
        return Ok(dist::argmax(row) as u32);
    }
    let p = RowDist::new(row, sampling, 0)?;
    let u = CounterRng::new(seed).uniform(counter);
    p.sample_excluding(row, core::iter::empty(), u)
        .map(|t| t as u32)
        .ok_or(Error::InvalidArgument(
            "a logits row gives no token positive probability",
        ))
}

/// Lossless sampling acceptance from the target's logits after every node: `logits` is row-major
/// `t.len() x vocab`. Only the rows the walk visits are read and validated (at most `deepest + 1`).
pub fn sample(
    t: &DraftTree,
    logits: &[f32],
    vocab: usize,
    sampling: &Sampling,
    seed: u64,
) -> Result<Acceptance, Error> {
    t.require_finalized()?;
    sampling.validate()?;
    if vocab == 0 {
        return Err(Error::InvalidArgument("vocab must be > 0"));
    }
    let expected = t
        .len()
        .checked_mul(vocab)
        .ok_or(Error::InvalidArgument("logits size overflows"))?;
    if logits.len() != expected {
        return Err(Error::ShapeMismatch {
            what: "logits (tree length x vocab)",
            expected,
            got: logits.len(),
        });
    }
    if let Some(&bad) = t.tokens()[1..].iter().find(|&&x| x as usize >= vocab) {
        return Err(Error::TokenOutOfRange {
            what: "draft tree",
            token: bad as i64,
            vocab,
        });
    }
    let row = |node: usize| &logits[node * vocab..(node + 1) * vocab];
    // A subnormal temperature has an infinite reciprocal: the distribution is one-hot, i.e. greedy.
    if sampling.temperature == 0.0 || (1.0 / sampling.temperature).is_infinite() {
        return walk_greedy(t, |node| {
            let r = row(node);
            dist::row_max(r, node)?;
            Ok(dist::argmax(r))
        });
    }

    let rng = CounterRng::new(seed);
    let tokens = t.tokens();
    let mut acc = Acceptance::empty();
    let mut cur = 0usize;
    loop {
        let r = row(cur);
        let p = RowDist::new(r, sampling, cur)?;
        let accept_coin = rng.uniform(2 * cur as u64);
        let final_coin = rng.uniform(2 * cur as u64 + 1);
        let mut cdf = 0.0f64;
        let mut last_possible = None;
        let mut accepted = None;
        for c in t.children(cur) {
            let pc = p.prob(r[tokens[c] as usize]);
            if pc > 0.0 {
                last_possible = Some(c);
            }
            cdf += pc;
            if accept_coin < cdf {
                accepted = Some(c);
                break;
            }
        }
        if accepted.is_none() {
            let excluded = t
                .children_by_token(cur)
                .iter()
                .map(|&c| tokens[c as usize] as usize);
            match p.sample_excluding(r, excluded, final_coin) {
                Some(tok) => {
                    acc.bonus_token = tok as i32;
                    return Ok(acc);
                }
                // The children hold all the mass and rounding kept the coin above their sum.
                None => accepted = last_possible,
            }
        }
        match accepted {
            Some(c) => {
                acc.push(c, tokens[c]);
                cur = c;
            }
            None => {
                return Err(Error::InvalidArgument(
                    "a logits row gives no token positive probability",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;

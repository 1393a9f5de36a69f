//! The draft-shape policy: a bandit over arms (draft shapes) fed the engine's measured timings.

use alloc::vec::Vec;

use super::{CostModel, MAX_ARMS};
use crate::error::Error;
use crate::math::{ln_f64, sqrt_f64};

/// Pulls after which an arm's own timing replaces the cost model's prediction.
const MIN_TIMED_PULLS: u32 = 2;

/// Weight of a new sample in an arm's running mean time once it has 20 samples (before: the plain
/// mean). Follows a cost that drifts (a sequence's context grows) over a few dozen pulls.
const TIME_MEAN_WEIGHT: f64 = 0.05;

/// A draft shape for one iteration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// No drafting: the tree is the root alone, one plain target step.
    Plain,
    /// A SpecBlock tree of `budget` nodes with at most `max_seeds` block-2 seeds (0: block 1 only).
    SpecBlock {
        /// Non-root nodes kept.
        budget: u32,
        /// Most block-2 seeds (`u32::MAX`: every seed, the authors' policy).
        max_seeds: u32,
    },
    /// An EAGLE-3 (EAGLE-2 dynamic) tree.
    Eagle3 {
        /// Non-root nodes kept.
        budget: u32,
        /// Drafting steps.
        depth: u32,
        /// Children per node and frontier width.
        top_k: u32,
    },
}

impl Shape {
    /// Most rows the verification of this shape can have (root included).
    pub fn max_rows(&self) -> u32 {
        match *self {
            Shape::Plain => 1,
            Shape::SpecBlock { budget, .. } | Shape::Eagle3 { budget, .. } => {
                budget.saturating_add(1)
            }
        }
    }

    /// Most tokens one iteration can emit (the deepest path plus the bonus token); `slots` is the
    /// SpecBlock drafter's K.
    pub fn max_tokens(&self, slots: u32) -> u32 {
        let depth = match *self {
            Shape::Plain => 0,
            Shape::SpecBlock { budget, max_seeds } => {
                budget.min(if max_seeds == 0 { slots } else { 2 * slots })
            }
            Shape::Eagle3 { budget, depth, .. } => budget.min(depth.saturating_add(1)),
        };
        depth + 1
    }
}

/// One arm: a shape, optionally with a confidence stop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arm {
    /// The tree to draft.
    pub shape: Shape,
    /// Confidence stop: keep only draft nodes whose path probability under the drafter is at least
    /// this (0 = off). When no node passes, the iteration is a plain step. Where the drafter is sure
    /// of the next token the target usually agrees; where it is not, drafting costs more than it gives.
    pub min_confidence: f32,
}

impl Arm {
    /// An arm without a confidence stop.
    pub const fn new(shape: Shape) -> Self {
        Arm {
            shape,
            min_confidence: 0.0,
        }
    }
}

/// Which statistics choose the arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Upper confidence bound on tokens per iteration over the time a shared verification-cost
    /// model and the arm's drafting time predict (the default; see the module docs).
    CostModel,
    /// Discounted UCB on each arm's measured tokens per second, arms judged independently.
    Throughput,
}

/// How the policy learns. Defaults: [`PolicyParams::default`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyParams {
    /// Per-iteration decay of every statistic, in (0, 1): about `1 / (1 - discount)` recent
    /// iterations count (default 0.997: about 330).
    pub discount: f64,
    /// Width of the upper confidence bound, in standard deviations of an arm's tokens per
    /// iteration (default 0.35: the best of a sweep replayed over real answers, docs/adaptive.md).
    pub exploration: f64,
    /// Spread of the tokens one iteration emits assumed for an arm that has run fewer than 3 times
    /// (default 1.0 token); afterwards its measured standard deviation is used.
    pub token_spread: f64,
    /// The drafter's K (slots per block), for each shape's most tokens per iteration (default 4).
    pub slots: u32,
    /// The algorithm (default [`Algorithm::CostModel`]).
    pub algorithm: Algorithm,
}

impl Default for PolicyParams {
    fn default() -> Self {
        PolicyParams {
            discount: 0.997,
            exploration: 0.35,
            token_spread: 1.0,
            slots: 4,
            algorithm: Algorithm::CostModel,
        }
    }
}

/// What the engine measured in one iteration.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Feedback {
    /// Rows verified (the tree's length, root included; 1 for a plain step).
    pub rows: u32,
    /// Tokens emitted (accepted draft tokens plus the bonus token; at least 1).
    pub tokens: u32,
    /// Seconds of the target's verification (forward, acceptance, KV clean-up).
    pub verify_s: f64,
    /// Seconds of drafting (tree growth and the drafter's commit), measured by whoever ran them.
    pub draft_s: f64,
}

impl Feedback {
    /// Checks the numbers: finite, non-negative seconds; `1 <= tokens <= rows`.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.verify_s.is_finite() || !self.draft_s.is_finite() {
            return Err(Error::NonFinite {
                what: "feedback seconds",
                row: 0,
                col: 0,
            });
        }
        if self.verify_s < 0.0 || self.draft_s < 0.0 {
            return Err(Error::InvalidArgument("feedback seconds must be >= 0"));
        }
        if self.rows == 0 || self.tokens == 0 {
            return Err(Error::InvalidArgument(
                "feedback needs rows >= 1 and tokens >= 1",
            ));
        }
        if self.tokens > self.rows {
            return Err(Error::InvalidArgument(
                "feedback tokens exceed rows (at most every draft node plus the bonus)",
            ));
        }
        Ok(())
    }
}

/// Statistics of one arm (for reports and the C stats call).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ArmSummary {
    /// Iterations this arm ran (not discounted).
    pub pulls: u64,
    /// Tokens it emitted (not discounted).
    pub tokens: u64,
    /// Seconds it took, drafting and verification (not discounted).
    pub seconds: f64,
    /// Tokens per iteration, discounted estimate (0 before the first pull).
    pub tokens_per_iteration: f64,
    /// Tokens per second the policy predicts for it now (0 before anything was measured).
    pub predicted_tokens_per_second: f64,
}

impl ArmSummary {
    /// Mean reward: tokens per second over all its iterations (0 before the first pull).
    pub fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.tokens as f64 / self.seconds
        } else {
            0.0
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct ArmStats {
    /// Discounted pulls, tokens, rows, draft, verification and total seconds.
    n: f64,
    tokens: f64,
    tokens_sq: f64,
    rows: f64,
    draft_s: f64,
    verify_s: f64,
    total_s: f64,
    /// Seconds per iteration, a running mean that does not decay with other arms' pulls (see
    /// [`Policy::predicted_time`]), and the pulls it has seen.
    time_mean: f64,
    timed: u32,
    summary: ArmSummary,
}

/// The draft-shape bandit of one sequence (or one stream of requests: statistics survive
/// [`Policy::reset_sequence`]). Sized at creation; `choose` and `feedback` allocate nothing.
#[derive(Clone, Debug)]
pub struct Policy {
    params: PolicyParams,
    arms: Vec<Arm>,
    stats: Vec<ArmStats>,
    cost: CostModel,
    current: usize,
    iterations: u64,
    tokens: u64,
    /// The first iteration's timing is still to be discarded (see [`Policy::feedback`]).
    warming_up: bool,
}

impl Policy {
    /// A policy over `arms` (1 to [`MAX_ARMS`]; a [`Shape::Plain`] arm should be among them so the
    /// policy can stop drafting).
    pub fn new(arms: &[Arm], params: PolicyParams) -> Result<Self, Error> {
        if arms.is_empty() || arms.len() > MAX_ARMS {
            return Err(Error::InvalidArgument("a policy needs 1 to 32 arms"));
        }
        if !(params.discount > 0.0 && params.discount <= 1.0) {
            return Err(Error::InvalidArgument("policy discount must be in (0, 1]"));
        }
        let exploration_ok = params.exploration >= 0.0 && params.exploration.is_finite();
        let spread_ok = params.token_spread > 0.0 && params.token_spread.is_finite();
        if !exploration_ok || !spread_ok || params.slots == 0 {
            return Err(Error::InvalidArgument(
                "policy exploration >= 0, token_spread > 0 and slots >= 1 are required",
            ));
        }
        for a in arms {
            let bad_budget = match a.shape {
                Shape::Plain => false,
                Shape::SpecBlock { budget, .. } => budget == 0,
                Shape::Eagle3 {
                    budget,
                    depth,
                    top_k,
                } => budget == 0 || depth == 0 || top_k == 0,
            };
            if bad_budget || !(0.0..=1.0).contains(&a.min_confidence) {
                return Err(Error::InvalidArgument(
                    "arm budgets, depths and top-k must be >= 1 and min_confidence in [0, 1]",
                ));
            }
        }
        let mut v = Vec::new();
        v.try_reserve_exact(arms.len())
            .map_err(|_| Error::OutOfMemory)?;
        v.extend_from_slice(arms);
        let mut stats = Vec::new();
        stats
            .try_reserve_exact(arms.len())
            .map_err(|_| Error::OutOfMemory)?;
        stats.resize(arms.len(), ArmStats::default());
        let current = arms
            .iter()
            .position(|a| a.shape == Shape::Plain)
            .unwrap_or(0);
        Ok(Policy {
            params,
            arms: v,
            stats,
            cost: CostModel::new(params.discount),
            current,
            iterations: 0,
            tokens: 0,
            warming_up: true,
        })
    }

    /// The arms, in the order given at creation.
    pub fn arms(&self) -> &[Arm] {
        &self.arms
    }

    /// The parameters.
    pub fn params(&self) -> &PolicyParams {
        &self.params
    }

    /// The arm chosen last (by [`choose`](Self::choose)).
    pub fn current(&self) -> usize {
        self.current
    }

    /// Iterations fed back so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// Mean tokens per iteration over every iteration fed back (0 before the first).
    pub fn mean_accept_length(&self) -> f64 {
        if self.iterations == 0 {
            0.0
        } else {
            self.tokens as f64 / self.iterations as f64
        }
    }

    /// The verification-cost model learned so far.
    pub fn cost_model(&self) -> &CostModel {
        &self.cost
    }

    /// Statistics of arm `i`.
    pub fn summary(&self, i: usize) -> Option<ArmSummary> {
        let s = self.stats.get(i)?;
        let mut out = s.summary;
        out.tokens_per_iteration = if s.n > 0.0 { s.tokens / s.n } else { 0.0 };
        out.predicted_tokens_per_second = self.predicted(i).unwrap_or(0.0);
        Some(out)
    }

    /// A new sequence begins: nothing to forget (the statistics describe the machine, the drafter and
    /// the kind of text, which a stream of requests shares), but the next choice starts fresh.
    pub fn reset_sequence(&mut self) {}

    /// Predicted seconds of one iteration of arm `i` (drafting + verification), if anything is known:
    /// the arm's own discounted means once it has run (timings vary little, unlike tokens), the
    /// cost model's line at its size before.
    ///
    /// The arm's own timing is a running mean that the discount does not erase: acceptance changes
    /// with the text and must be forgotten, the cost of a shape hardly does. Were it forgotten, a
    /// rarely pulled arm would fall back to the cost model's line, which is fitted mostly to the
    /// shapes in use and misjudges the others (a one-row plain step takes the decode path and
    /// costs less than the line through 2- and 5-row trees says: measured 12.5 ms against ~13.7).
    /// A plain step has no bound on its tokens (always exactly one), so nothing would make the
    /// policy measure it again, and it would keep drafting at a loss.
    fn predicted_time(&self, i: usize) -> Option<f64> {
        let s = &self.stats[i];
        if s.timed >= MIN_TIMED_PULLS {
            return Some(s.time_mean.max(1e-9));
        }
        let rows = if s.n > 0.0 {
            s.rows / s.n
        } else {
            self.arms[i].shape.max_rows() as f64
        };
        let verify = self.cost.predict(rows)?;
        let draft = if s.n > 0.0 { s.draft_s / s.n } else { 0.0 };
        Some((verify + draft).max(1e-9))
    }

    /// The spread of arm `i`'s tokens per iteration: its discounted standard deviation once it has
    /// run a few times (at least a tenth of [`PolicyParams::token_spread`]), the prior spread before.
    /// An arm that reliably emits few tokens is then ruled out after a few pulls.
    fn spread(&self, i: usize) -> f64 {
        let s = &self.stats[i];
        let prior = self.params.token_spread;
        if s.n < 3.0 {
            return prior;
        }
        let mean = s.tokens / s.n;
        let var = (s.tokens_sq / s.n - mean * mean).max(0.0);
        sqrt_f64(var).max(0.1 * prior)
    }

    /// Predicted tokens per second of arm `i` at its mean tokens per iteration.
    fn predicted(&self, i: usize) -> Option<f64> {
        let s = &self.stats[i];
        if s.n <= 0.0 {
            return None;
        }
        match self.params.algorithm {
            Algorithm::CostModel => Some(s.tokens / s.n / self.predicted_time(i)?),
            Algorithm::Throughput => (s.total_s > 0.0).then(|| s.tokens / s.total_s),
        }
    }

    /// Picks the arm for the next iteration (the index into [`arms`](Self::arms)).
    pub fn choose(&mut self) -> usize {
        if self.cost.is_empty() {
            // Nothing measured yet: the first iteration calibrates (a plain step when there is one).
            return self.current;
        }
        let total: f64 = self.stats.iter().map(|s| s.n).sum();
        let log_n = ln_f64(total.max(core::f64::consts::E));
        let c = self.params.exploration;
        // The reward scale of the throughput index: the best predicted speed.
        let scale = (0..self.arms.len())
            .filter_map(|i| self.predicted(i))
            .fold(0.0f64, f64::max);
        // An arm never run is judged by the best tokens per iteration any drafting arm has shown (1
        // before any has run) plus one prior-wide bound: cheap shapes are tried first, and expensive ones
        // only once the cheap ones suggest they could pay (on a GPU, where size costs little).
        let prior_tokens = (0..self.arms.len())
            .filter(|&i| self.arms[i].shape != Shape::Plain && self.stats[i].n > 1e-12)
            .map(|i| self.stats[i].tokens / self.stats[i].n)
            .fold(1.0f64, f64::max);
        let mut best = (f64::NEG_INFINITY, self.current);
        for i in 0..self.arms.len() {
            let s = &self.stats[i];
            let max_tokens = self.arms[i].shape.max_tokens(self.params.slots) as f64;
            let index = match self.params.algorithm {
                Algorithm::CostModel => {
                    let Some(t) = self.predicted_time(i) else {
                        continue;
                    };
                    let tokens = if s.n > 1e-12 {
                        let bound = c * self.spread(i) * sqrt_f64(log_n / s.n.max(1e-12));
                        (s.tokens / s.n + bound).min(max_tokens)
                    } else {
                        (prior_tokens + c * self.params.token_spread * sqrt_f64(log_n))
                            .min(max_tokens)
                    };
                    tokens / t
                }
                Algorithm::Throughput => {
                    if s.n <= 1e-12 || s.total_s <= 0.0 {
                        f64::INFINITY
                    } else {
                        s.tokens / s.total_s + c * scale * sqrt_f64(log_n / s.n)
                    }
                }
            };
            if index > best.0 {
                best = (index, i);
            }
        }
        self.current = best.1;
        best.1
    }

    /// Feeds back the iteration that ran arm `arm` (normally [`current`](Self::current)).
    pub fn feedback(&mut self, arm: usize, fb: &Feedback) -> Result<(), Error> {
        fb.validate()?;
        if arm >= self.arms.len() {
            return Err(Error::InvalidArgument(
                "feedback for an arm the policy does not have",
            ));
        }
        let total = fb.verify_s + fb.draft_s;
        let summary = &mut self.stats[arm].summary;
        summary.pulls += 1;
        summary.tokens += fb.tokens as u64;
        summary.seconds += total;
        self.iterations += 1;
        self.tokens += fb.tokens as u64;
        if self.warming_up {
            // The first iteration pays one-off costs (cold caches, first-touch memory, thread
            // start-up): measured here at several times a normal step. Its timing would become an
            // arm's only sample, and an arm judged by one slow sample is never chosen again (nothing
            // makes the policy re-measure a time). It is counted, not learned from; the next
            // iteration calibrates instead.
            self.warming_up = false;
            return Ok(());
        }
        let g = self.params.discount;
        for s in self.stats.iter_mut() {
            s.n *= g;
            s.tokens *= g;
            s.tokens_sq *= g;
            s.rows *= g;
            s.draft_s *= g;
            s.verify_s *= g;
            s.total_s *= g;
        }
        let s = &mut self.stats[arm];
        s.n += 1.0;
        s.tokens += fb.tokens as f64;
        s.tokens_sq += (fb.tokens as f64) * (fb.tokens as f64);
        s.rows += fb.rows as f64;
        s.draft_s += fb.draft_s;
        s.verify_s += fb.verify_s;
        s.total_s += total;
        s.timed = s.timed.saturating_add(1);
        let w = (1.0 / s.timed as f64).max(TIME_MEAN_WEIGHT);
        s.time_mean += w * (total - s.time_mean);
        self.cost.observe(fb.rows as f64, fb.verify_s);
        Ok(())
    }
}

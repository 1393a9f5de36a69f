//! Online adaptation of a drafter's head from the verifier's feedback (the deployment layer of the
//! SpecBlock paper), gated by the cost-aware update bandit of [`crate::adapt::online`].
//!
//! - **Signal.** After each verification, every drafted slot on the verified path (down to the first
//!   rejection, included) is a labelled example for free: the drafter's normed hidden there, the
//!   token the target chose, whether the draft was accepted, and the target token's rank class in
//!   the drafter's top 10 ([`SlotRecord`], kept in a [`FeedbackRing`] of fixed capacity).
//! - **What adapts.** A [`HeadAdapter`]: a low-rank residual `n + B A n` before the draft LM head, a
//!   bias over the draft vocabulary, and (SpecBlock) a delta on the rank head's output layer. The
//!   drafter's own weights never change; an identity adapter reproduces them bit for bit.
//! - **When.** At each decision point the [`UpdateBandit`] picks skip or 1/4/16 optimizer steps; the
//!   update is computed on a shadow copy, replayed on the most recent slots and adopted only when
//!   the seconds it saves exceed what it cost, at the replay's lower confidence bound.
//! - **Double buffering.** Sessions draft with their own copy of the adopted weights and pick up a
//!   new version at their next draft, so drafting never reads half-updated weights and never waits
//!   for an update computed elsewhere.
//!
//! # Sharing and threads
//! An [`OnlineAdapter`] is plain data (`Send`). Sessions share one through a [`SharedAdapter`]
//! (`Arc<Mutex<_>>`): a session that finds it locked (another session is updating it) skips that
//! iteration's recording and update, and keeps drafting with its copy. All buffers are allocated by
//! [`OnlineAdapter::new`]; recording and deciding allocate nothing, and updates reuse those buffers.

use std::sync::{Arc, Mutex};
use std::time::Instant;
use std::vec::Vec;

use super::adapter::{AdapterShape, HeadAdapter, NO_RANK_LABEL, Records, TrainParams, Trainer};
use super::{AnyDrafter, DrafterKind};
use crate::adapt::online::{
    Replay, StreamState, UpdateBandit, UpdateMode, UpdateParams, UpdateStats, Verdict,
};
use crate::cpu::{Matrix, Pool};
use crate::error::Error;

/// An adapter shared by the sessions of a stream.
pub type SharedAdapter = Arc<Mutex<OnlineAdapter>>;

/// One drafted slot on the verified path, as the session drafted it.
#[derive(Clone, Copy, Debug)]
pub struct SlotRecord<'a> {
    /// The drafter's normed final hidden state (before any adapter), `hidden` wide.
    pub normed: &'a [f32],
    /// The row's draft logits as drafted (adapter applied), `draft_vocab` wide; read for the rank
    /// head's label (SpecBlock; may be empty for EAGLE-3).
    pub logits: &'a [f32],
    /// The rank head's hidden activations (SpecBlock; empty for EAGLE-3).
    pub rank_hidden: &'a [f32],
    /// The rank head's logits as drafted (SpecBlock; empty for EAGLE-3).
    pub rank_logits: &'a [f32],
    /// The target's token at this position (target vocabulary).
    pub target: u32,
    /// Whether the drafted token there was accepted.
    pub accepted: bool,
    /// Whether the slot was drafted and verified; false for the committed stream's slots that plain
    /// steps never drafted (teacher-forced: the drafter's prediction against the token that came).
    pub drafted: bool,
}

/// Calls `sink` for each teacher-forced slot a session kept: `normed` holds one `hidden`-wide row per
/// entry of `targets` (no logits, no rank-head values, `drafted: false`).
pub(crate) fn emit_teacher_forced(
    normed: &[f32],
    targets: &[u32],
    hidden: usize,
    sink: &mut dyn FnMut(SlotRecord<'_>),
) {
    for (row, &target) in normed.chunks_exact(hidden).zip(targets) {
        sink(SlotRecord {
            normed: row,
            logits: &[],
            rank_hidden: &[],
            rank_logits: &[],
            target,
            accepted: false,
            drafted: false,
        });
    }
}

/// Upper bounds (exclusive ranks) of the rank classes below the last: top-1, ranks 2-4, ranks 5-10,
/// then "not in the top 10" (the trainer's `rank_labels`).
const RANK_BOUNDS: [usize; 3] = [1, 4, 10];

/// `accepted` of a teacher-forced slot (never drafted).
const NOT_DRAFTED: u8 = 2;

/// The rank head's hidden width.
const RANK_HIDDEN: usize = super::weights::RANK_HIDDEN;

/// Largest rank of an adapter's `B A`.
const MAX_RANK: usize = 64;

/// How an adapter is built and learns. Defaults: [`AdapterParams::default`].
#[derive(Clone, Copy, Debug)]
pub struct AdapterParams {
    /// Rank of `B A` (default 8; 1..=64).
    pub rank: usize,
    /// Slots the feedback ring holds (default 1024; at least `holdout + min_train`).
    pub capacity: usize,
    /// When to update.
    pub update: UpdateParams,
    /// The optimizer.
    pub train: TrainParams,
    /// Seed of `A`'s initialisation.
    pub seed: u64,
    /// Also learn from the committed stream's slots that plain steps never drafted (default true):
    /// where the draft-shape policy stops drafting, they are the only signal.
    pub teacher_forcing: bool,
}

impl Default for AdapterParams {
    fn default() -> Self {
        AdapterParams {
            rank: 8,
            capacity: 1024,
            update: UpdateParams::default(),
            train: TrainParams::default(),
            seed: 0x5eed_ada9,
            teacher_forcing: true,
        }
    }
}

/// What an adapter has done.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AdapterStats {
    /// The update bandits' counters since creation (decisions, updates tried, adopted, rejected,
    /// seconds), over policy changes.
    pub updates: UpdateStats,
    /// Slots recorded since creation.
    pub slots_recorded: u64,
    /// Of them, drafted and verified (the others are teacher-forced slots of plain steps).
    pub slots_drafted: u64,
    /// Of the drafted ones, accepted.
    pub slots_accepted: u64,
    /// Updates that failed (a non-finite loss); counted as rejected too.
    pub failed: u64,
    /// Version of the live weights (adoptions since creation or load).
    pub version: u64,
    /// The last verdict, if any update ran.
    pub last_verdict: Option<Verdict>,
}

/// The feedback ring: the most recent `capacity` slots, struct of arrays, allocated at creation.
pub struct FeedbackRing {
    capacity: usize,
    len: usize,
    next: usize,
    hidden: usize,
    vocab: usize,
    normed: Vec<f32>,
    base_logits: Vec<f32>,
    has_base: Vec<bool>,
    targets: Vec<i32>,
    accepted: Vec<u8>,
    rank_h: Vec<f32>,
    base_rank_logits: Vec<f32>,
    rank_labels: Vec<u8>,
}

fn zeros<T: Copy>(n: usize, v: T) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| Error::OutOfMemory)?;
    out.resize(n, v);
    Ok(out)
}

impl FeedbackRing {
    fn new(capacity: usize, shape: &AdapterShape) -> Result<Self, Error> {
        let (h, v, c, rh) = (
            shape.hidden,
            shape.draft_vocab,
            shape.rank_classes,
            shape.rank_hidden,
        );
        Ok(FeedbackRing {
            capacity,
            len: 0,
            next: 0,
            hidden: h,
            vocab: v,
            normed: zeros(capacity * h, 0.0)?,
            base_logits: zeros(capacity * v, 0.0)?,
            has_base: zeros(capacity, false)?,
            targets: zeros(capacity, -1)?,
            accepted: zeros(capacity, 0)?,
            rank_h: zeros(capacity * rh, 0.0)?,
            base_rank_logits: zeros(capacity * c, 0.0)?,
            rank_labels: zeros(capacity, 0)?,
        })
    }

    /// Slots held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot index of the `i`-th most recent record (0 = newest).
    fn recent(&self, i: usize) -> usize {
        (self.next + self.capacity - 1 - i) % self.capacity
    }

    fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }

    fn records(&self) -> Records<'_> {
        Records {
            normed: &self.normed,
            base_logits: &self.base_logits,
            targets: &self.targets,
            rank_hidden: &self.rank_h,
            base_rank_logits: &self.base_rank_logits,
            rank_labels: &self.rank_labels,
        }
    }
}

/// A drafter head adapter that learns online: the live weights sessions draft with, the feedback
/// ring, the trainer and the update bandit.
pub struct OnlineAdapter {
    kind: DrafterKind,
    shape: AdapterShape,
    params: AdapterParams,
    lm_head: Matrix,
    /// Draft id of each target token (-1: outside the draft vocabulary).
    target_to_draft: Vec<i32>,
    live: HeadAdapter,
    shadow: HeadAdapter,
    trainer: Trainer,
    ring: FeedbackRing,
    bandit: UpdateBandit,
    pool: std::sync::Arc<Pool>,
    stats: AdapterStats,
    new_since_decision: u32,
    /// Running means of the stream: seconds per iteration, draft depth.
    iteration_s: f64,
    depth: f64,
    drafting_share: f64,
    /// The candidate in `shadow`, trained at the last decision point and judged at the next.
    pending: Option<Pending>,
    idx_train: Vec<usize>,
    idx_hold: Vec<usize>,
    hits_before: Vec<u8>,
    hits_after: Vec<u8>,
}

/// The drafting share an update's seconds saved assume at least: where the draft-shape policy stopped
/// drafting, a better drafter is what can make it draft again.
const MIN_DRAFTING_SHARE: f64 = 0.25;

/// Drafted slots among the recent ones needed to take the acceptance from them.
const MIN_DRAFTED_FOR_ACCEPT: u32 = 16;

/// A trained candidate awaiting its replay.
#[derive(Clone, Copy, Debug)]
struct Pending {
    /// Optimizer steps it took.
    steps: u32,
    /// Seconds its training took.
    cost_s: f64,
    /// `slots_recorded` when it was trained: the slots after it are its replay.
    trained_at: u64,
}

/// Weight of a new iteration in the running means of the stream.
const STREAM_MEAN_WEIGHT: f64 = 0.05;

fn copy_matrix(m: &Matrix) -> Result<Matrix, Error> {
    Ok(match m {
        Matrix::F32(v) => {
            let mut out = Vec::new();
            out.try_reserve_exact(v.len())
                .map_err(|_| Error::OutOfMemory)?;
            out.extend_from_slice(v);
            Matrix::F32(out)
        }
        Matrix::Bf16(v) => {
            let mut out = Vec::new();
            out.try_reserve_exact(v.len())
                .map_err(|_| Error::OutOfMemory)?;
            out.extend_from_slice(v);
            Matrix::Bf16(out)
        }
        Matrix::Bf16Packed(p) => Matrix::Bf16Packed(p.try_clone().map_err(|_| Error::OutOfMemory)?),
    })
}

impl OnlineAdapter {
    /// An identity adapter for `drafter` (its LM head is copied: the adapter outlives no drafter and
    /// can be shared freely). Errors: invalid `params` (rank 1..=64, capacity at least `holdout +
    /// min_train` and at most 1M slots, [`UpdateParams::validate`]); [`Error::OutOfMemory`].
    pub fn new(drafter: &AnyDrafter, params: AdapterParams) -> Result<Self, Error> {
        params.update.validate()?;
        if !(1..=MAX_RANK).contains(&params.rank) {
            return Err(Error::InvalidArgument("adapter rank must be in 1..=64"));
        }
        let u = &params.update;
        if params.capacity < (u.holdout + u.min_train) as usize || params.capacity > 1 << 20 {
            return Err(Error::InvalidArgument(
                "adapter capacity must be in holdout + min_train ..= 1M slots",
            ));
        }
        let (lm_head, d2t, threads, rank_classes) = match drafter {
            AnyDrafter::SpecBlock(d) => {
                let (m, d2t, t) = d.head_parts();
                // The rank head adapts when its classes are the trainer's four.
                let c = d.config().rank_classes;
                (m, d2t, t, if c == RANK_BOUNDS.len() + 1 { c } else { 0 })
            }
            AnyDrafter::Eagle3(d) => {
                let (m, d2t, t) = d.head_parts();
                (m, d2t, t, 0)
            }
        };
        let shape = AdapterShape {
            hidden: drafter.hidden(),
            draft_vocab: drafter.draft_vocab(),
            rank: params.rank,
            rank_classes,
            rank_hidden: if rank_classes > 0 { RANK_HIDDEN } else { 0 },
        };
        let live = HeadAdapter::new(shape, params.seed)?;
        let mut shadow = HeadAdapter::new(shape, params.seed)?;
        shadow.copy_from(&live);
        let mut target_to_draft = zeros(drafter.vocab(), -1i32)?;
        for (d, &t) in d2t.iter().enumerate() {
            if let Some(slot) = target_to_draft.get_mut(t as usize) {
                *slot = d as i32;
            }
        }
        let batch = u.batch as usize;
        let hold = u.holdout as usize;
        Ok(OnlineAdapter {
            trainer: Trainer::new(shape, batch.max(hold), lm_head)?,
            lm_head: copy_matrix(lm_head)?,
            ring: FeedbackRing::new(params.capacity, &shape)?,
            bandit: UpdateBandit::new(params.update)?,
            pool: Pool::shared(threads.max(1)),
            kind: drafter.kind(),
            shape,
            params,
            target_to_draft,
            live,
            shadow,
            stats: AdapterStats::default(),
            new_since_decision: 0,
            iteration_s: 0.0,
            depth: 0.0,
            drafting_share: 1.0,
            pending: None,
            idx_train: zeros(batch, 0usize)?,
            idx_hold: zeros(hold, 0usize)?,
            hits_before: zeros(hold, 0u8)?,
            hits_after: zeros(hold, 0u8)?,
        })
    }

    /// Wraps `self` for sharing between sessions.
    pub fn into_shared(self) -> SharedAdapter {
        Arc::new(Mutex::new(self))
    }

    /// The adapter's shape (it fits drafters of the same hidden width, draft vocabulary and rank head).
    pub fn shape(&self) -> &AdapterShape {
        &self.shape
    }

    /// The parameters.
    pub fn params(&self) -> &AdapterParams {
        &self.params
    }

    /// The live weights (what sessions draft with).
    pub fn live(&self) -> &HeadAdapter {
        &self.live
    }

    /// Version of the live weights: it changes at each adoption and load.
    pub fn version(&self) -> u64 {
        self.stats.version
    }

    /// What the adapter has done since its creation.
    pub fn stats(&self) -> AdapterStats {
        AdapterStats {
            updates: add_update_stats(&self.stats.updates, self.bandit.stats()),
            ..self.stats
        }
    }

    /// Starts a new bandit with `update`; the counters of the old one are kept in `stats.updates`
    /// (which holds those of the bandits before the current one).
    fn restart_bandit(&mut self, update: UpdateParams) -> Result<(), Error> {
        let bandit = UpdateBandit::new(update)?;
        self.stats.updates = add_update_stats(&self.stats.updates, self.bandit.stats());
        self.bandit = bandit;
        Ok(())
    }

    /// The feedback ring.
    pub fn ring(&self) -> &FeedbackRing {
        &self.ring
    }

    /// Changes the update policy: the bandit's reward statistics restart (the counters of
    /// [`stats`](Self::stats) go on). Errors: as
    /// [`UpdateParams::validate`], or a holdout or batch above the sizes the adapter was created with.
    pub fn set_update_params(&mut self, update: UpdateParams) -> Result<(), Error> {
        update.validate()?;
        if update.holdout as usize > self.idx_hold.len()
            || update.batch as usize > self.idx_train.len()
            || ((update.holdout + update.min_train) as usize) > self.ring.capacity
        {
            return Err(Error::InvalidArgument(
                "holdout and batch at most the adapter's creation sizes; holdout + min_train at most its capacity",
            ));
        }
        self.restart_bandit(update)?;
        self.params.update = update;
        self.pending = None;
        Ok(())
    }

    /// The kind of drafter the adapter was made for.
    pub fn kind(&self) -> DrafterKind {
        self.kind
    }

    /// Changes the optimizer's parameters from the next update on (the live weights, the recorded
    /// slots and the bandit's statistics stay).
    pub fn set_train_params(&mut self, train: TrainParams) {
        self.params.train = train;
    }

    /// Makes `weights` the live weights (for example weights read by [`HeadAdapter::load`] without
    /// holding the adapter's lock); the version changes so sessions pick them up. Errors:
    /// [`Error::InvalidArgument`] for weights of another shape; nothing changes then.
    pub fn set_live(&mut self, weights: &HeadAdapter) -> Result<(), Error> {
        if weights.shape != self.shape {
            return Err(Error::InvalidArgument(
                "the weights were made for an adapter of another shape",
            ));
        }
        self.live.copy_from(weights);
        self.stats.version += 1;
        // A candidate trained from the old live head no longer applies.
        self.pending = None;
        Ok(())
    }

    /// Whether `drafter` is of the kind and shape this adapter was made for.
    pub fn fits(&self, drafter: &AnyDrafter) -> bool {
        let c = match drafter {
            AnyDrafter::SpecBlock(d) => d.config().rank_classes,
            AnyDrafter::Eagle3(_) => 0,
        };
        drafter.kind() == self.kind
            && drafter.hidden() == self.shape.hidden
            && drafter.draft_vocab() == self.shape.draft_vocab
            && (self.shape.rank_classes == 0 || c == self.shape.rank_classes)
            && drafter.vocab() == self.target_to_draft.len()
    }

    /// Records one slot of the verified path (see [`SlotRecord`]); ignored when updates are off or
    /// the record's widths do not match. Allocates nothing.
    pub fn record(&mut self, r: SlotRecord<'_>) {
        let s = &self.shape;
        if self.params.update.mode == UpdateMode::Off
            || (!r.drafted && !self.params.teacher_forcing)
            || r.normed.len() != s.hidden
        {
            return;
        }
        let target = self
            .target_to_draft
            .get(r.target as usize)
            .copied()
            .unwrap_or(-1);
        let ring = &mut self.ring;
        let i = ring.next;
        ring.normed[i * s.hidden..(i + 1) * s.hidden].copy_from_slice(r.normed);
        ring.has_base[i] = false;
        ring.targets[i] = target;
        ring.accepted[i] = if r.drafted {
            r.accepted as u8
        } else {
            NOT_DRAFTED
        };
        let (c, rh) = (s.rank_classes, s.rank_hidden);
        if c > 0 {
            let ok = r.rank_hidden.len() == rh
                && r.rank_logits.len() == c
                && r.logits.len() == s.draft_vocab;
            let hdst = &mut ring.rank_h[i * rh..(i + 1) * rh];
            let ldst = &mut ring.base_rank_logits[i * c..(i + 1) * c];
            if ok {
                hdst.copy_from_slice(r.rank_hidden);
                ldst.copy_from_slice(r.rank_logits);
                // The rank head's own logits: what was drafted minus the live delta.
                for (j, l) in ldst.iter_mut().enumerate() {
                    let delta: f32 = self.live.rank_delta[j * rh..(j + 1) * rh]
                        .iter()
                        .zip(r.rank_hidden)
                        .map(|(d, x)| d * x)
                        .sum();
                    *l -= delta;
                }
                ring.rank_labels[i] = rank_class(r.logits, target);
            } else {
                // No rank-head values (a teacher-forced slot): the rank loss skips the row.
                hdst.fill(0.0);
                ldst.fill(0.0);
                ring.rank_labels[i] = NO_RANK_LABEL;
            }
        }
        ring.next = (i + 1) % ring.capacity;
        ring.len = (ring.len + 1).min(ring.capacity);
        self.stats.slots_recorded += 1;
        self.stats.slots_drafted += r.drafted as u64;
        self.stats.slots_accepted += (r.drafted && r.accepted) as u64;
        self.new_since_decision = self.new_since_decision.saturating_add(1);
    }

    /// Reports one iteration of a session using the adapter: its seconds (drafting and
    /// verification) and the depth of its draft. Feeds the seconds-saved estimate of updates.
    pub fn observe_iteration(&mut self, seconds: f64, depth: u32) {
        if !seconds.is_finite() || seconds < 0.0 {
            return;
        }
        let w = STREAM_MEAN_WEIGHT;
        if self.iteration_s == 0.0 {
            self.iteration_s = seconds;
        } else {
            self.iteration_s += w * (seconds - self.iteration_s);
        }
        self.drafting_share += w * ((depth > 0) as u8 as f64 - self.drafting_share);
        // Plain steps (depth 0) say nothing about how deep drafts go.
        if depth > 0 {
            if self.depth == 0.0 {
                self.depth = depth as f64;
            } else {
                self.depth += w * (depth as f64 - self.depth);
            }
        }
    }

    /// A decision point when enough new slots came in. First the pending candidate (the update
    /// trained at the last decision point) is judged on the slots that arrived since it was trained
    /// (prequential: data it never saw, often from the next request): replayed against the live head,
    /// and adopted if the bandit's verdict says so. Then the bandit may train a new candidate on the
    /// most recent slots (a shadow copy of the live head), to be judged at the next decision point.
    /// In [`UpdateMode::Always`] an update is adopted at once, without replay. Returns the verdict of
    /// an update judged now. Errors only for internal shape inconsistencies; an update with a
    /// non-finite loss is counted as failed and rejected.
    pub fn maybe_update(&mut self) -> Result<Option<Verdict>, Error> {
        let u = self.params.update;
        if u.mode == UpdateMode::Off || self.new_since_decision < u.decide_every {
            return Ok(None);
        }
        if self.ring.len() < u.min_train as usize {
            return Ok(None);
        }
        self.new_since_decision = 0;
        let verdict = match self.pending.take() {
            Some(p) if u.mode == UpdateMode::Bandit => Some(self.judge_pending(p)?),
            _ => None,
        };
        let steps = self.bandit.choose();
        if steps == 0 {
            return Ok(verdict);
        }
        let t0 = Instant::now();
        let train_n = self.ring.len().min(u.batch as usize);
        self.fill_base_logits(train_n);
        for i in 0..train_n {
            self.idx_train[i] = self.ring.recent(i);
        }
        self.shadow.copy_from(&self.live);
        self.trainer.reset();
        let recs = self.ring.records();
        let trained = self.trainer.train(
            &self.pool,
            &self.lm_head,
            &mut self.shadow,
            &recs,
            &self.idx_train[..train_n],
            steps as usize,
            &self.params.train,
        );
        let cost = t0.elapsed().as_secs_f64();
        if trained.is_err() {
            self.stats.failed += 1;
            let v = self
                .bandit
                .judge(steps, &Replay::default(), &self.stream_state(0.0), cost);
            let v = Verdict { adopt: false, ..v };
            self.stats.last_verdict = Some(v);
            return Ok(Some(v));
        }
        if u.mode == UpdateMode::Always {
            let v = self
                .bandit
                .judge(steps, &Replay::default(), &self.stream_state(0.0), cost);
            self.adopt_shadow();
            self.stats.last_verdict = Some(v);
            return Ok(Some(v));
        }
        self.pending = Some(Pending {
            steps,
            cost_s: cost,
            trained_at: self.stats.slots_recorded,
        });
        Ok(verdict)
    }

    /// Replays the pending candidate (in `shadow`) against the live head on the slots recorded since
    /// it was trained, and adopts it if the bandit says so.
    fn judge_pending(&mut self, p: Pending) -> Result<Verdict, Error> {
        let t0 = Instant::now();
        let fresh = (self.stats.slots_recorded - p.trained_at) as usize;
        let n = fresh.min(self.idx_hold.len()).min(self.ring.len());
        self.fill_base_logits(n);
        for i in 0..n {
            self.idx_hold[i] = self.ring.recent(i);
        }
        let recs = self.ring.records();
        let idx = &self.idx_hold[..n];
        self.trainer.agreement(
            &self.pool,
            &self.lm_head,
            &self.live,
            &recs,
            idx,
            &mut self.hits_before[..n],
        )?;
        self.trainer.agreement(
            &self.pool,
            &self.lm_head,
            &self.shadow,
            &recs,
            idx,
            &mut self.hits_after[..n],
        )?;
        let mut r = Replay::default();
        for (&b, &a) in self.hits_before[..n].iter().zip(&self.hits_after[..n]) {
            if b > 1 || a > 1 {
                continue;
            }
            r.rows += 1;
            r.before_hits += b as u32;
            r.after_hits += a as u32;
            r.gained += (a > b) as u32;
            r.lost += (b > a) as u32;
        }
        let live_agreement = if r.rows > 0 {
            r.before_hits as f64 / r.rows as f64
        } else {
            0.0
        };
        let state = self.stream_state(live_agreement);
        let cost = p.cost_s + t0.elapsed().as_secs_f64();
        let v = self.bandit.judge(p.steps, &r, &state, cost);
        if v.adopt {
            self.adopt_shadow();
        }
        self.stats.last_verdict = Some(v);
        Ok(v)
    }

    fn adopt_shadow(&mut self) {
        self.live.copy_from(&self.shadow);
        self.stats.version += 1;
    }

    /// The stream as the seconds-saved model sees it. `live_agreement` stands in for the acceptance
    /// when few recent slots were drafted (greedy acceptance is top-1 agreement).
    fn stream_state(&self, live_agreement: f64) -> StreamState {
        let window = self
            .ring
            .len()
            .min(self.params.update.batch as usize + self.idx_hold.len());
        let (mut drafted, mut accepted) = (0u32, 0u32);
        for i in 0..window {
            match self.ring.accepted[self.ring.recent(i)] {
                NOT_DRAFTED => {}
                a => {
                    drafted += 1;
                    accepted += a as u32;
                }
            }
        }
        let accept = if drafted >= MIN_DRAFTED_FOR_ACCEPT {
            accepted as f64 / drafted as f64
        } else {
            live_agreement
        };
        StreamState {
            accept,
            depth: self.depth.max(1.0),
            iteration_s: self.iteration_s,
            // A better drafter can bring drafting back where the policy stopped: at least this share.
            drafting_share: self.drafting_share.max(MIN_DRAFTING_SHARE),
        }
    }

    /// Computes `W n` for the `recent` most recent slots that lack it (at most two runs of consecutive
    /// slots in the ring).
    fn fill_base_logits(&mut self, recent: usize) {
        let ring = &mut self.ring;
        let (h, v) = (ring.hidden, ring.vocab);
        let recent = recent.min(ring.len);
        let mut i = 0;
        while i < recent {
            let slot = ring.recent(i);
            if ring.has_base[slot] {
                i += 1;
                continue;
            }
            // A run going back in time is a run of descending slots: [low, slot].
            let mut low = slot;
            while i + 1 < recent
                && low > 0
                && ring.recent(i + 1) == low - 1
                && !ring.has_base[low - 1]
            {
                low -= 1;
                i += 1;
            }
            i += 1;
            Trainer::base_logits(
                &self.pool,
                &self.lm_head,
                &self.shape,
                &ring.normed[low * h..(slot + 1) * h],
                slot + 1 - low,
                &mut ring.base_logits[low * v..(slot + 1) * v],
            );
            ring.has_base[low..=slot].fill(true);
        }
    }

    /// Forgets the recorded slots and the bandit's history (the live weights and the counters of
    /// [`stats`](Self::stats) stay).
    pub fn clear_feedback(&mut self) -> Result<(), Error> {
        self.pending = None;
        self.restart_bandit(self.params.update)?;
        self.ring.clear();
        self.new_since_decision = 0;
        Ok(())
    }

    /// Saves the live weights (safetensors).
    pub fn save(&self, path: &std::path::Path) -> Result<(), crate::io::LoadError> {
        self.live.save(path)
    }

    /// Loads live weights saved by [`save`](Self::save) for a drafter of the same shape; the version
    /// changes so sessions pick them up. On error nothing changes.
    pub fn load(&mut self, path: &std::path::Path) -> Result<(), crate::io::LoadError> {
        let w = HeadAdapter::load(path, self.shape)?;
        self.live.copy_from(&w);
        self.stats.version += 1;
        self.pending = None;
        Ok(())
    }
}

/// The counters of two bandits run one after the other (`a` first).
fn add_update_stats(a: &UpdateStats, b: &UpdateStats) -> UpdateStats {
    let mut tried = a.tried;
    for (t, &n) in tried.iter_mut().zip(&b.tried) {
        *t += n;
    }
    UpdateStats {
        decisions: a.decisions + b.decisions,
        skipped: a.skipped + b.skipped,
        tried,
        adopted: a.adopted + b.adopted,
        rejected: a.rejected + b.rejected,
        update_seconds: a.update_seconds + b.update_seconds,
        expected_saved_seconds: a.expected_saved_seconds + b.expected_saved_seconds,
        // The last replay: `b`'s once it judged an update.
        last_delta: if b.tried.iter().any(|&n| n > 0) {
            b.last_delta
        } else {
            a.last_delta
        },
        replay_rows: a.replay_rows + b.replay_rows,
        replay_before_hits: a.replay_before_hits + b.replay_before_hits,
        replay_after_hits: a.replay_after_hits + b.replay_after_hits,
    }
}

/// The rank class of draft id `target` in `logits` (class 3: outside the top 10 or the vocabulary).
fn rank_class(logits: &[f32], target: i32) -> u8 {
    let last = RANK_BOUNDS.len() as u8;
    let Some(&t) = usize::try_from(target).ok().and_then(|t| logits.get(t)) else {
        return last;
    };
    if !t.is_finite() {
        return last;
    }
    // Rank = logits strictly above, then equal ones with a lower id (the tie rule of top-k).
    let mut rank = 0usize;
    for (i, &x) in logits.iter().enumerate() {
        if x > t || (x == t && i < target as usize) {
            rank += 1;
            if rank >= RANK_BOUNDS[RANK_BOUNDS.len() - 1] {
                return last;
            }
        }
    }
    RANK_BOUNDS.iter().position(|&b| rank < b).unwrap_or(0) as u8
}

#[cfg(test)]
mod tests {
    use super::rank_class;

    #[test]
    fn rank_classes_follow_the_trainer() {
        let logits: std::vec::Vec<f32> = (0..20).map(|i| 20.0 - i as f32).collect();
        assert_eq!(rank_class(&logits, 0), 0);
        assert_eq!(rank_class(&logits, 1), 1);
        assert_eq!(rank_class(&logits, 3), 1);
        assert_eq!(rank_class(&logits, 4), 2);
        assert_eq!(rank_class(&logits, 9), 2);
        assert_eq!(rank_class(&logits, 10), 3);
        assert_eq!(rank_class(&logits, -1), 3);
        assert_eq!(rank_class(&logits, 99), 3);
    }
}

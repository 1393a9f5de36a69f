//! One sequence's EAGLE-3 drafting state and the EAGLE-2 dynamic tree (docs/eagle3-forward.md,
//! "Growing the tree"): the last committed entry's output seeds the tree, `depth` drafting steps of
//! `top_k` nodes each grow a candidate pool, and the best `budget` candidates become the library's
//! [`DraftTree`].
//!
//! Protocol (the contract's (a)): prefill of x_0..x_S with the features of x_0..x_{S-1} commits the
//! entries (f_t, x_{t+1}) at positions t; a commit with the features of [root, acc_1..acc_a] commits
//! (f_root, acc_1) .. (f_acc_a, bonus) at the next a+1 positions. The bonus becomes the root.

use std::vec::Vec;

use super::{Eagle3Cache, Eagle3Drafter, Eagle3Scratch};
use crate::drafter::forward::check_finite;
use crate::drafter::plain_queue::PlainQueue;
use crate::error::Error;
use crate::math::exp_nonpositive;
use crate::tree::DraftTree;

/// [`Eagle3Policy::default`]'s `depth`: EAGLE's D = 7 drafting steps.
pub const DEFAULT_EAGLE3_DEPTH: u32 = 7;
/// [`Eagle3Policy::default`]'s `top_k`: EAGLE's k = 10 candidates per node.
pub const DEFAULT_EAGLE3_TOP_K: u32 = 10;
/// [`Eagle3Policy::default`]'s `budget`: EAGLE's `total_tokens` = 60, root excluded.
pub const DEFAULT_EAGLE3_BUDGET: u32 = 59;

/// The EAGLE-2 tree's shape (defaults: EAGLE's D = 7, k = 10, total_tokens = 60 with the root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eagle3Policy {
    /// Drafting steps D: the tree reaches depth D + 1.
    pub depth: u32,
    /// Candidates per expanded node and nodes expanded per step, k.
    pub top_k: u32,
    /// Draft nodes kept, root excluded (EAGLE's `total_tokens - 1`).
    pub budget: u32,
}

impl Default for Eagle3Policy {
    fn default() -> Self {
        Eagle3Policy {
            depth: DEFAULT_EAGLE3_DEPTH,
            top_k: DEFAULT_EAGLE3_TOP_K,
            budget: DEFAULT_EAGLE3_BUDGET,
        }
    }
}

impl Eagle3Policy {
    /// The smallest shape that holds every EAGLE-3 arm of `arms` (the deepest, widest and largest
    /// budget of them; at least 1 each): what a session serving those arms is created with.
    pub fn covering(arms: &[crate::adapt::Arm]) -> Self {
        let mut cap = Eagle3Policy {
            depth: 1,
            top_k: 1,
            budget: 1,
        };
        for a in arms {
            if let crate::adapt::Shape::Eagle3 {
                budget,
                depth,
                top_k,
            } = a.shape
            {
                cap = Eagle3Policy {
                    depth: cap.depth.max(depth),
                    top_k: cap.top_k.max(top_k),
                    budget: cap.budget.max(budget),
                };
            }
        }
        cap
    }
}

/// The candidate pool of the last draft, in creation order (for inspection and tests).
#[derive(Clone, Copy, Debug)]
pub struct Eagle3Candidates<'a> {
    /// Draft-vocabulary id of each candidate (see [`Eagle3Drafter::draft_to_target`]).
    pub draft_ids: &'a [u32],
    /// Parent candidate of each candidate (-1: a child of the root).
    pub parents: &'a [i32],
    /// Score of each candidate: the cumulative draft log-prob of its path.
    pub scores: &'a [f32],
    /// Insertion id in the tree (see [`DraftTree::source_ids`]) of each kept candidate, -1 otherwise.
    pub nodes: &'a [i32],
}

/// Most entries one commit appends: the root plus `MAX_DEPTH` accepted nodes.
const MAX_COMMIT: usize = crate::MAX_DEPTH + 1;

/// A sequence's EAGLE-3 drafting session. Create one per sequence; reuse it across requests with
/// `reset`. Every buffer is allocated at creation: `draft` and `commit` allocate nothing (prefill may
/// grow the positions buffer once for a long prompt).
pub struct Eagle3Session<'d> {
    drafter: &'d Eagle3Drafter,
    policy: Eagle3Policy,
    /// The policy the buffers were sized for (the largest depth and top-k a draft may use).
    capacity: Eagle3Policy,
    /// Confidence stop: keep only candidates whose path probability is at least this (0 = off).
    min_confidence: f32,
    /// The last draft was a plain step (root only): its commit is deferred.
    plain_drafted: bool,
    /// Entries of plain steps not yet run through the drafter; the next draft runs them first.
    pending: PlainQueue,
    cache: Eagle3Cache,
    scratch: Eagle3Scratch,
    /// Pre-norm output h and logits of the last committed entry: the tree's seed.
    last_h: Vec<f32>,
    last_logits: Vec<f32>,
    root: Option<u32>,
    /// Position of the next committed entry.
    next_pos: u32,
    drafted: bool,
    // Reused per-call buffers.
    tokens: Vec<u32>,
    positions: Vec<u32>,
    /// Best (index, value) pairs of one selection.
    top: Vec<(usize, f32)>,
    /// The candidate pool in creation order: draft id, parent candidate (-1 = root), score (path
    /// log-prob) and own log-prob.
    cand_tok: Vec<u32>,
    cand_parent: Vec<i32>,
    cand_score: Vec<f32>,
    cand_lp: Vec<f32>,
    /// The nodes expanded by the next step: candidate, parent draft row, incoming hidden.
    frontier: Vec<usize>,
    rows: Vec<i32>,
    hidden: Vec<f32>,
    /// Tree node of each candidate (-1 = not kept).
    node_of: Vec<i32>,
    /// What the drafts keep for [`record_path`](Self::record_path) (online adaptation).
    rec: Eagle3Recorder,
}

/// The drafter rows behind each candidate, kept while a session records for online adaptation: row
/// 0 is the last committed entry (it drafted depth 1), row `1 + (step - 1) k + j` is frontier node `j`
/// of draft step `step`.
#[derive(Default)]
struct Eagle3Recorder {
    on: bool,
    /// Normed hidden of row 0.
    last_normed: Vec<f32>,
    /// Normed hiddens of the draft steps' rows (`depth x k x hidden`).
    step_normed: Vec<f32>,
    /// Per candidate: the row that drafted its children (-1: not expanded).
    cand_row: Vec<i32>,
    /// Teacher-forced slots of the last flush of plain steps: normed hiddens and the tokens that came.
    stream_normed: Vec<f32>,
    stream_targets: Vec<u32>,
    /// The plain-step queue dropped entries since the last draft.
    stream_gap: bool,
}

impl<'d> Eagle3Session<'d> {
    /// A session whose context holds up to `max_entries` committed entries (about the sequence length).
    pub fn new(
        drafter: &'d Eagle3Drafter,
        max_entries: usize,
        policy: Eagle3Policy,
    ) -> Result<Self, Error> {
        let c = drafter.config();
        let (d, k) = (policy.depth as usize, policy.top_k as usize);
        if d == 0 || d >= crate::MAX_DEPTH {
            return Err(Error::InvalidArgument(
                "EAGLE-3 depth must be in 1..64 (the tree reaches depth + 1)",
            ));
        }
        if k == 0 || k > c.draft_vocab {
            return Err(Error::InvalidArgument(
                "EAGLE-3 top_k must be in 1..=draft_vocab_size",
            ));
        }
        if max_entries == 0 || max_entries > crate::drafter::MAX_SESSION_ENTRIES {
            return Err(Error::InvalidArgument(
                "max_entries must be in 1..=MAX_SESSION_ENTRIES (16M)",
            ));
        }
        if policy.budget as usize > crate::MAX_NODES {
            return Err(Error::InvalidArgument(
                "EAGLE-3 budget must be at most MAX_NODES",
            ));
        }
        let pool = k + d * k * k;
        let rows = k.max(MAX_COMMIT);
        // What creation reserves, in floats (bounded inputs: no overflow): refuse a session that could
        // not fit before allocating any of it.
        let kv = c.kv_heads * c.head_dim;
        let floats = 2 * (max_entries + d * k) * kv
            + rows * (8 * c.hidden + 3 * c.ffn + c.draft_vocab + 2 * c.heads * c.head_dim)
            + 4 * pool
            + 2 * (c.heads / c.kv_heads) * (max_entries + d + 1) * rows.min(64);
        if floats > crate::drafter::MAX_SESSION_FLOATS {
            return Err(Error::Capacity {
                what: "session memory (max_entries, depth, top_k); at most 16 GiB",
                capacity: crate::drafter::MAX_SESSION_FLOATS,
            });
        }
        Ok(Eagle3Session {
            drafter,
            cache: drafter.try_new_cache(max_entries, d * k)?,
            scratch: Eagle3Scratch::sized(drafter, rows, k, max_entries, d),
            last_h: Vec::with_capacity(c.hidden),
            last_logits: Vec::with_capacity(c.draft_vocab),
            root: None,
            next_pos: 0,
            drafted: false,
            tokens: Vec::with_capacity(rows),
            positions: Vec::with_capacity(rows),
            top: Vec::with_capacity(pool.max(k)),
            cand_tok: Vec::with_capacity(pool),
            cand_parent: Vec::with_capacity(pool),
            cand_score: Vec::with_capacity(pool),
            cand_lp: Vec::with_capacity(pool),
            frontier: Vec::with_capacity(k),
            rows: Vec::with_capacity(k),
            hidden: Vec::with_capacity(k * c.hidden),
            node_of: Vec::with_capacity(pool),
            policy,
            capacity: policy,
            min_confidence: 0.0,
            plain_drafted: false,
            pending: PlainQueue::new(drafter.feature_width()),
            rec: Eagle3Recorder::default(),
        })
    }

    /// The head adapter this session's forwards apply (a copy of an online adapter's live weights).
    pub(crate) fn head_adapter_slot(
        &mut self,
    ) -> &mut Option<crate::drafter::adapter::HeadAdapter> {
        &mut self.scratch.adapter
    }

    /// Keep (or stop keeping) what [`record_path`](Self::record_path) needs: the normed hidden of
    /// every drafting row and which candidate each expanded. Allocates its buffers when switched on.
    pub fn set_recording(&mut self, on: bool) -> Result<(), Error> {
        if on && !self.rec.on {
            let c = &self.drafter.cfg;
            let (d, k) = (self.capacity.depth as usize, self.capacity.top_k as usize);
            let r = &mut self.rec;
            r.last_normed
                .try_reserve(c.hidden)
                .and(r.step_normed.try_reserve(d * k * c.hidden))
                .and(r.cand_row.try_reserve(k + d * k * k))
                .and(
                    r.stream_normed
                        .try_reserve((crate::drafter::PLAIN_CONTEXT_WINDOW + 1) * c.hidden),
                )
                .and(
                    r.stream_targets
                        .try_reserve(crate::drafter::PLAIN_CONTEXT_WINDOW + 1),
                )
                .map_err(|_| Error::OutOfMemory)?;
            r.last_normed.clear();
        }
        self.rec.on = on;
        self.rec.cand_row.clear();
        self.rec.stream_normed.clear();
        self.rec.stream_targets.clear();
        Ok(())
    }

    /// Calls `sink` for the committed stream's slots that plain steps left undrafted (see
    /// [`SpecBlockSession::record_stream`](crate::drafter::SpecBlockSession::record_stream)), then
    /// forgets them. Allocates nothing.
    pub fn record_stream(&mut self, sink: &mut dyn FnMut(crate::drafter::online::SlotRecord<'_>)) {
        let h = self.drafter.cfg.hidden;
        let r = &mut self.rec;
        crate::drafter::online::emit_teacher_forced(&r.stream_normed, &r.stream_targets, h, sink);
        r.stream_normed.clear();
        r.stream_targets.clear();
    }

    /// After verification and before [`commit`](Self::commit): calls `sink` for each drafted slot on
    /// the verified path, from the root down to the first rejection included (see
    /// [`SpecBlockSession::record_path`](crate::drafter::SpecBlockSession::record_path)). Records carry
    /// no logits or rank-head values (EAGLE-3 has no rank head). Allocates nothing.
    pub fn record_path(
        &self,
        accepted: &[u32],
        bonus: u32,
        sink: &mut dyn FnMut(crate::drafter::online::SlotRecord<'_>),
    ) {
        let r = &self.rec;
        let h = self.drafter.cfg.hidden;
        if !r.on || !self.drafted || self.plain_drafted || r.last_normed.len() != h {
            return;
        }
        let d2t = &self.drafter.w.draft_to_target;
        let (mut parent, mut row) = (-1i32, 0i32);
        for d in 0..=accepted.len() {
            if row < 0 {
                return;
            }
            let normed = match row as usize {
                0 => &r.last_normed[..],
                x => match r.step_normed.get((x - 1) * h..x * h) {
                    Some(n) => n,
                    None => return,
                },
            };
            let is_accepted = d < accepted.len();
            let target = if is_accepted { accepted[d] } else { bonus };
            sink(crate::drafter::online::SlotRecord {
                normed,
                logits: &[],
                rank_hidden: &[],
                rank_logits: &[],
                target,
                accepted: is_accepted,
                drafted: true,
            });
            if !is_accepted {
                return;
            }
            let next = (0..self.cand_tok.len()).find(|&c| {
                self.cand_parent[c] == parent && d2t[self.cand_tok[c] as usize] == target
            });
            let Some(c) = next else { return };
            parent = c as i32;
            row = r.cand_row.get(c).copied().unwrap_or(-1);
        }
    }

    /// Sets the next drafts' tree shape and confidence stop (keep only candidates whose path
    /// probability is at least `min_confidence`; 0 = off). Depth and top-k may not exceed those the
    /// session was created with (its buffers are sized for them).
    pub fn set_shape(&mut self, policy: Eagle3Policy, min_confidence: f32) -> Result<(), Error> {
        let cap = self.capacity;
        if policy.depth == 0 || policy.top_k == 0 || policy.budget == 0 {
            return Err(Error::InvalidArgument(
                "EAGLE-3 depth, top_k and budget must be >= 1",
            ));
        }
        if policy.depth > cap.depth || policy.top_k > cap.top_k {
            return Err(Error::Capacity {
                what: "EAGLE-3 depth and top_k (the session's creation policy)",
                capacity: (cap.depth as usize) * (cap.top_k as usize),
            });
        }
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(Error::InvalidArgument("min_confidence must be in [0, 1]"));
        }
        self.policy = policy;
        self.min_confidence = min_confidence;
        Ok(())
    }

    /// A plain step instead of a draft: `tree` becomes the root alone and the drafter does nothing;
    /// the following commit is deferred to the next real draft (see [`SpecBlockSession::draft_plain`]
    /// (crate::drafter::Session::draft_plain)).
    pub fn draft_plain(&mut self, tree: &mut DraftTree) -> Result<(), Error> {
        let Some(root) = self.root else {
            return Err(Error::InvalidState("draft before prefill"));
        };
        tree.reset(root as i32)?;
        tree.finalize(0)?;
        self.drafted = true;
        self.plain_drafted = true;
        Ok(())
    }

    /// Entries of plain steps waiting for the drafter.
    pub fn pending_entries(&self) -> usize {
        self.pending.len()
    }

    /// Test hook: the position the next committed entry takes, queued entries counted (training
    /// context protocol).
    #[doc(hidden)]
    pub fn next_position(&self) -> u32 {
        self.next_pos + self.pending.len() as u32
    }

    /// The drafter this session runs.
    pub fn drafter(&self) -> &'d Eagle3Drafter {
        self.drafter
    }

    pub(crate) fn capacity_policy(&self) -> Eagle3Policy {
        self.capacity
    }

    /// The tree shape this session grows.
    pub fn policy(&self) -> Eagle3Policy {
        self.policy
    }

    /// The candidate pool of the last [`draft`](Self::draft).
    pub fn candidates(&self) -> Eagle3Candidates<'_> {
        Eagle3Candidates {
            draft_ids: &self.cand_tok,
            parents: &self.cand_parent,
            scores: &self.cand_score,
            nodes: &self.node_of,
        }
    }

    /// Forgets the sequence (buffers are kept).
    pub fn reset(&mut self) {
        self.cache.clear();
        self.root = None;
        self.next_pos = 0;
        self.drafted = false;
        self.plain_drafted = false;
        self.pending.clear();
    }

    /// Entries in the drafter's context cache.
    pub fn context_entries(&self) -> usize {
        self.cache.entries()
    }

    /// The root token of the next draft (the last committed token, not yet seen by the target).
    pub fn root(&self) -> Option<u32> {
        self.root
    }

    /// After the target's prefill of `tokens[..S]` (with `features` of those S positions, `S x 3H_t`)
    /// and its first sampled token `tokens[S]`: commits the S entries (f_t, x_{t+1}) at positions
    /// 0..S; `tokens[S]` becomes the root.
    pub fn prefill(
        &mut self,
        embed: &[f32],
        features: &[f32],
        tokens: &[u32],
    ) -> Result<(), Error> {
        if tokens.len() < 2 {
            return Err(Error::InvalidArgument(
                "prefill needs the prompt and the first sampled token",
            ));
        }
        let s = tokens.len() - 1;
        self.reset();
        self.positions.clear();
        self.positions.extend(0..s as u32);
        self.drafter.context(
            &mut self.cache,
            embed,
            features,
            &tokens[1..],
            &self.positions,
            &mut self.scratch,
            false,
        )?;
        self.finish_context(s, tokens[s]);
        Ok(())
    }

    /// After verification: `accepted` draft tokens, then the `bonus` token, with the target features
    /// of [root, accepted...] (`(accepted + 1) x 3H_t`). Commits those a+1 entries; `bonus` becomes the
    /// root. On error nothing changes (the same draft may be committed again).
    pub fn commit(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error> {
        if self.root.is_none() {
            return Err(Error::InvalidState("commit before prefill"));
        }
        if !self.drafted {
            return Err(Error::InvalidState("commit without a draft"));
        }
        if accepted.len() >= MAX_COMMIT {
            return Err(Error::Capacity {
                what: "accepted tokens per commit",
                capacity: MAX_COMMIT - 1,
            });
        }
        if self.plain_drafted {
            if !accepted.is_empty() {
                return Err(Error::InvalidArgument(
                    "a plain step (root-only tree) accepts no draft tokens",
                ));
            }
            return self.defer(bonus, features);
        }
        self.tokens.clear();
        self.tokens.extend_from_slice(accepted);
        self.tokens.push(bonus);
        self.append(embed, features)
    }

    /// Commits the entries `self.tokens` with `features` (one row each) at the next positions.
    fn append(&mut self, embed: &[f32], features: &[f32]) -> Result<(), Error> {
        let n = self.tokens.len() as u32;
        let bonus = self.tokens[self.tokens.len() - 1];
        self.positions.clear();
        self.positions.extend(self.next_pos..self.next_pos + n);
        self.drafter.context(
            &mut self.cache,
            embed,
            features,
            &self.tokens,
            &self.positions,
            &mut self.scratch,
            false,
        )?;
        self.finish_context(n as usize, bonus);
        Ok(())
    }

    /// The commit of a plain step: queues the entry (root features, bonus) for the next draft.
    fn defer(&mut self, bonus: u32, features: &[f32]) -> Result<(), Error> {
        let fw = self.drafter.feature_width();
        if features.len() != fw {
            return Err(Error::ShapeMismatch {
                what: "commit features ((accepted + 1) x feature width)",
                expected: fw,
                got: features.len(),
            });
        }
        let vocab = self.drafter.cfg.vocab;
        if bonus as usize >= vocab {
            return Err(Error::TokenOutOfRange {
                what: "bonus token",
                token: bonus as i64,
                vocab,
            });
        }
        check_finite("commit features", features, fw)?;
        if self.cache.entries() + self.pending.len_after_push() > self.cache.capacity() {
            return Err(Error::Capacity {
                what: "drafter context entries",
                capacity: self.cache.capacity(),
            });
        }
        if self.pending.push(bonus, features) {
            self.rec.stream_gap = true;
            // The oldest queued entry left the window (see `PLAIN_CONTEXT_WINDOW`): it never
            // reaches the drafter, and the entries after it keep their positions.
            self.next_pos += 1;
        }
        self.root = Some(bonus);
        self.drafted = false;
        self.plain_drafted = false;
        Ok(())
    }

    /// Runs the queued plain-step entries through the drafter (one batched forward).
    fn flush(&mut self, embed: &[f32]) -> Result<(), Error> {
        if self.pending.len() == 0 {
            return Ok(());
        }
        let pending = core::mem::take(&mut self.pending);
        self.tokens.clear();
        self.tokens.extend_from_slice(pending.tokens());
        let h = self.drafter.cfg.hidden;
        let n = pending.len();
        // The entry before the plain steps predicted the first of them (unless the queue dropped some).
        let rec =
            self.rec.on && self.rec.stream_targets.len() + n <= self.rec.stream_targets.capacity();
        if rec && !self.rec.stream_gap && self.rec.last_normed.len() == h {
            let r = &mut self.rec;
            r.stream_normed.extend_from_slice(&r.last_normed);
            r.stream_targets.push(pending.tokens()[0]);
        }
        let r = self.append(embed, pending.features());
        // Each flushed entry's output predicted the next one's token (one chunk holds them all).
        if r.is_ok() && rec && self.scratch.rows() == n {
            for i in 0..n - 1 {
                self.rec
                    .stream_normed
                    .extend_from_slice(&self.scratch.normed[i * h..(i + 1) * h]);
                self.rec.stream_targets.push(pending.tokens()[i + 1]);
            }
        }
        self.rec.stream_gap = false;
        self.pending = pending;
        if r.is_ok() {
            self.pending.clear();
        }
        r
    }

    /// Keeps the last entry's h and logits (the context forward just run) as the tree's seed.
    fn finish_context(&mut self, entries: usize, root: u32) {
        let (h, vd) = (self.drafter.cfg.hidden, self.drafter.cfg.draft_vocab);
        let sc = &self.scratch;
        let rows = sc.rows();
        self.last_h.clear();
        self.last_h
            .extend_from_slice(&sc.hidden[(rows - 1) * h..rows * h]);
        self.last_logits.clear();
        self.last_logits
            .extend_from_slice(&sc.logits[sc.logits.len() - vd..]);
        if self.rec.on {
            self.rec.last_normed.clear();
            self.rec
                .last_normed
                .extend_from_slice(&sc.normed[(rows - 1) * h..rows * h]);
        }
        self.root = Some(root);
        self.next_pos += entries as u32;
        self.drafted = false;
    }

    /// Grows the EAGLE-2 tree and writes it into `tree`: `reset(root)`, the kept candidates in
    /// creation order (each under its parent, with its own draft log-prob, so a node's cumulative
    /// log-prob is its score), then `finalize(budget)`, which keeps them all and orders them by depth,
    /// then score. Tokens are target ids. `tree` needs `max_nodes >= budget` and
    /// `max_depth >= depth + 1`.
    pub fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), Error> {
        self.flush(embed)?;
        let Some(root) = self.root else {
            return Err(Error::InvalidState("draft before prefill"));
        };
        self.plain_drafted = false;
        let min_lp = if self.min_confidence > 0.0 {
            self.min_confidence.ln()
        } else {
            f32::NEG_INFINITY
        };
        let c = &self.drafter.cfg;
        let (h, vd) = (c.hidden, c.draft_vocab);
        let (k, depth) = (self.policy.top_k as usize, self.policy.depth);
        let last_pos = self.next_pos - 1;
        self.drafted = false;
        tree.reset(root as i32)?;
        self.cache.clear_draft();
        self.cand_tok.clear();
        self.cand_parent.clear();
        self.cand_score.clear();
        self.cand_lp.clear();
        self.node_of.clear();

        // Depth 1: the root's top k, all fed the last entry's h.
        top_log_probs(&self.last_logits, k, &mut self.top).map_err(|col| Error::NonFinite {
            what: "draft logits",
            row: 0,
            col,
        })?;
        for &(t, lp) in &self.top {
            self.cand_tok.push(t as u32);
            self.cand_parent.push(-1);
            self.cand_score.push(lp);
            self.cand_lp.push(lp);
        }
        if self.rec.on {
            self.rec.cand_row.clear();
            self.rec.cand_row.resize(k, -1);
            self.rec.step_normed.clear();
        }
        self.frontier.clear();
        self.frontier.extend(0..k);
        self.rows.clear();
        self.rows.resize(k, -1);
        self.hidden.clear();
        for _ in 0..k {
            self.hidden.extend_from_slice(&self.last_h);
        }

        for step in 1..=depth {
            // Confidence stop: when no frontier node reaches the threshold, no deeper one can.
            if self.frontier.iter().all(|&f| self.cand_score[f] < min_lp) {
                break;
            }
            self.tokens.clear();
            self.tokens.extend(
                self.frontier
                    .iter()
                    .map(|&f| self.drafter.w.draft_to_target[self.cand_tok[f] as usize]),
            );
            self.positions.clear();
            self.positions.resize(k, last_pos + step);
            let row0 = self.cache.draft_rows() as i32;
            self.drafter.draft_step_into(
                &mut self.cache,
                embed,
                &self.hidden,
                &self.tokens,
                &self.positions,
                &self.rows,
                &mut self.scratch,
            )?;
            if self.rec.on {
                // Frontier node j was expanded by row 1 + (step - 1) k + j.
                for (j, &f) in self.frontier.iter().enumerate() {
                    self.rec.cand_row[f] = (1 + (step as usize - 1) * k + j) as i32;
                }
                self.rec
                    .step_normed
                    .extend_from_slice(&self.scratch.normed[..self.frontier.len() * h]);
            }
            // Each frontier node's top k become candidates, node-major, then by child rank.
            let base = self.cand_tok.len();
            for (j, &parent) in self.frontier.iter().enumerate() {
                top_log_probs(&self.scratch.logits[j * vd..(j + 1) * vd], k, &mut self.top)
                    .map_err(|col| Error::NonFinite {
                        what: "draft logits",
                        row: step as usize,
                        col,
                    })?;
                if self.rec.on {
                    self.rec
                        .cand_row
                        .resize(self.rec.cand_row.len() + self.top.len(), -1);
                }
                for &(t, lp) in &self.top {
                    self.cand_tok.push(t as u32);
                    self.cand_parent.push(parent as i32);
                    self.cand_score.push(self.cand_score[parent] + lp);
                    self.cand_lp.push(lp);
                }
            }
            // The next frontier: the best k of the k² new scores, with their parents' h and rows.
            let new = &self.cand_score[base..];
            top_k_by(new.len(), k, |i| new[i], &mut self.top);
            self.frontier.clear();
            self.rows.clear();
            self.hidden.clear();
            for &(f, _) in &self.top {
                let j = f / k;
                self.frontier.push(base + f);
                self.rows.push(row0 + j as i32);
                self.hidden
                    .extend_from_slice(&self.scratch.hidden[j * h..(j + 1) * h]);
            }
        }
        self.cache.clear_draft();

        // Keep the best `budget` candidates (above the confidence threshold), in creation order:
        // parents come before children.
        let scores = &self.cand_score;
        let above = scores.iter().filter(|&&s| s >= min_lp).count();
        let budget = (self.policy.budget as usize).min(above);
        top_k_by(scores.len(), budget, |i| scores[i], &mut self.top);
        self.top.sort_unstable_by_key(|&(i, _)| i);
        self.node_of.clear();
        self.node_of.resize(self.cand_tok.len(), -1);
        for &(ci, _) in &self.top {
            let parent = match self.cand_parent[ci] {
                -1 => 0,
                p => self.node_of[p as usize],
            };
            if parent < 0 {
                // Unreachable with finite scores (a child never outscores its parent).
                return Err(Error::InvalidState(
                    "EAGLE-3 tree: a kept candidate's parent was not kept",
                ));
            }
            let token = self.drafter.w.draft_to_target[self.cand_tok[ci] as usize];
            self.node_of[ci] = tree.add(parent, token as i32, self.cand_lp[ci])?;
        }
        tree.finalize(budget as u32)?;
        self.drafted = true;
        Ok(())
    }
}

/// The `k` best draft ids of one logits row by log-softmax (best first, ties to the lower id, the
/// contract's rule) into `top` as (id, log-prob). Log-probs are `(x - max) - ln(sum exp(x - max))` in
/// f32, computed on the fly. A row holding NaN or +inf (hostile or corrupted weights), or no finite
/// value, gives the column of the first such value: its log-probs would be NaN, and a NaN score sorts
/// nowhere, so the tree would silently shrink to the root.
fn top_log_probs(x: &[f32], k: usize, top: &mut Vec<(usize, f32)>) -> Result<(), usize> {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    // Eight partial sums so the loop vectorises; exp_nonpositive is branch-free (x - max <= 0).
    let mut sums = [0f32; 8];
    for chunk in x.chunks(8) {
        for (s, &v) in sums.iter_mut().zip(chunk) {
            *s += exp_nonpositive(v - max);
        }
    }
    let lse = sums.iter().sum::<f32>().ln();
    if !max.is_finite() || !lse.is_finite() {
        return Err(x
            .iter()
            .position(|v| v.is_nan() || *v == f32::INFINITY)
            .unwrap_or(0));
    }
    top_k_by(x.len(), k, |i| (x[i] - max) - lse, top);
    Ok(())
}

/// The `k` largest of `value(0..n)` as (index, value), best first; ties go to the lower index (the
/// contract's rule). One pass keeping a sorted list of the best so far: for k much smaller than n
/// almost every value is rejected by one comparison with the current k-th.
fn top_k_by(n: usize, k: usize, value: impl Fn(usize) -> f32, top: &mut Vec<(usize, f32)>) {
    top.clear();
    let k = k.min(n);
    if k == 0 {
        return;
    }
    for i in 0..n {
        let v = value(i);
        // Scanning upwards, an equal value never displaces an earlier index.
        if top.len() == k {
            if v.total_cmp(&top[k - 1].1).is_le() {
                continue;
            }
            top.pop();
        }
        let at = top.partition_point(|&(_, t)| t.total_cmp(&v).is_ge());
        top.insert(at, (i, v));
    }
}

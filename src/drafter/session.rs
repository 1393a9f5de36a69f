//! One sequence's drafting state: the context cache, the newest block 1, the root token, and the
//! block-iterative tree growth of docs/drafter-forward.md (block 1 → seeds → one batched block 2 → the
//! library's tree, dedup, budget prune, finalize).

use std::vec::Vec;

use super::plain_queue::PlainQueue;
use super::weights::RANK_HIDDEN;
use super::{ContextCache, ContextProtocol, Scratch, SpecBlockDrafter};
use crate::error::Error;
use crate::tree::{DraftTree, NodeMeta};

/// [`DraftPolicy::default`]'s `budget`: the SpecBlock authors' published tree keeps 90 non-root nodes.
pub const DEFAULT_SPECBLOCK_BUDGET: u32 = 90;

/// How wide each slot branches and how big the tree gets (defaults = the authors' published setting).
#[derive(Clone, Debug, PartialEq)]
pub struct DraftPolicy {
    /// Non-root nodes kept after dedup and prune.
    pub budget: u32,
    /// Upper limit of block 1's slot-0 width (and of every width).
    pub beam_width: u32,
    /// Block 1 slot 0: `(p, width)` pairs tried in order: the first with `p_0 >= p` gives the width;
    /// otherwise `beam_width`.
    pub slot0_widths: Vec<(f32, u32)>,
    /// Every other slot: base width by rank class.
    pub width_table: Vec<u32>,
    /// Then capped: the first `(p, cap)` with `p_k >= p` caps the width at `cap`.
    pub prob_caps: Vec<(f32, u32)>,
    /// Skip block-2 seeds that the budget prune would remove anyway (those with `budget` block-1 nodes
    /// ranked above them). The finalized tree is the same either way; on: fewer block-2 rows.
    pub prune_seeds: bool,
    /// At most this many block-2 seeds, the best by the budget rank (cumulative log-probability);
    /// 0 drafts block 1 only (one forward per iteration, the one the commit runs anyway). Where every
    /// drafted row costs time (a CPU), a few seeds can beat the full block 2.
    pub max_seeds: u32,
}

impl Default for DraftPolicy {
    fn default() -> Self {
        DraftPolicy {
            budget: DEFAULT_SPECBLOCK_BUDGET,
            beam_width: 10,
            slot0_widths: std::vec![(0.9, 3), (0.8, 5), (0.6, 8)],
            width_table: std::vec![2, 4, 6, 4],
            prob_caps: std::vec![(0.95, 2), (0.85, 3)],
            prune_seeds: true,
            max_seeds: u32::MAX,
        }
    }
}

/// A block-2 seed: continues from a tree node with a block-1 slot's hidden.
#[derive(Clone, Copy)]
struct Seed {
    node: i32,
    token: u32,
    slot: usize,
    /// Block-1 nodes ranked above `node` in the budget order (set when seeds are filtered).
    rank: u32,
}

/// A sequence's drafting session. Create one per sequence; reuse it across requests with `reset`.
/// Every buffer is allocated at creation: `draft` and `commit` allocate nothing (prefill may grow
/// the forward buffers for a long prompt once).
pub struct SpecBlockSession<'d> {
    drafter: &'d SpecBlockDrafter,
    policy: DraftPolicy,
    cache: ContextCache,
    scratch: Scratch,
    /// Block 1 of the newest entry: `slots x draft_vocab` logits, `slots x rank_classes`, `slots x hidden`.
    b1_logits: Vec<f32>,
    b1_rank: Vec<f32>,
    b1_hidden: Vec<f32>,
    has_block1: bool,
    root: Option<u32>,
    next_base: u32,
    /// Reference protocol: the base of the current draft entry ("P" in docs/drafter-forward.md).
    draft_base: u32,
    drafted: bool,
    // Reused per-step buffers.
    idx: Vec<usize>,
    top: Vec<(u32, f32)>,
    seeds: Vec<Seed>,
    seed_hidden: Vec<f32>,
    seed_tokens: Vec<u32>,
    seed_vis: Vec<u32>,
    chain: Vec<u32>,
    bases: Vec<u32>,
    /// Confidence stop of the next drafts: keep only nodes whose path probability is at least this.
    min_confidence: f32,
    /// The last draft was a plain step (root only): its commit is deferred.
    plain_drafted: bool,
    /// Entries of plain steps not yet run through the drafter (tokens, then their feature rows):
    /// [`draft`](Session::draft) runs them in one batched forward first.
    pending: PlainQueue,
    /// What the drafts keep for [`record_path`](Self::record_path) (online adaptation).
    rec: PathRecorder,
}

/// The drafter rows behind each draft node, kept while a session records for online adaptation.
/// Rows `0..K` are block 1 (kept here); rows `K + i K + k` are block-2 rows of seed `i` (read from the
/// scratch, valid until the commit's forward).
#[derive(Default)]
struct PathRecorder {
    on: bool,
    /// Block 1's normed hiddens (`K x hidden`) and rank-head hiddens (`K x RANK_HIDDEN`).
    b1_normed: Vec<f32>,
    b1_rank_hidden: Vec<f32>,
    /// Per node (insertion id): parent, token, and the row that drafted its children (-1: none).
    parent: Vec<i32>,
    token: Vec<u32>,
    row: Vec<i32>,
    /// Teacher-forced slots of the last flush of plain steps: normed hiddens and the tokens that came.
    stream_normed: Vec<f32>,
    stream_targets: Vec<u32>,
    /// The plain-step queue dropped entries since the last draft (block 1 no longer precedes it).
    stream_gap: bool,
}

/// Where teacher-forced slots come from.
enum Source {
    /// Block 1 of the entry before the plain steps.
    Block1,
    /// The flushed plain-step entries (the forward just run).
    Queue,
}

/// Nodes a recording session tracks before its buffers grow (the authors' largest candidate trees).
const RECORDED_NODES: usize = 4096;

impl PathRecorder {
    fn clear(&mut self) {
        self.parent.clear();
        self.token.clear();
        self.row.clear();
    }

    /// Notes node `id` (its insertion id) under `parent`.
    fn node(&mut self, id: i32, parent: i32, token: u32) {
        if !self.on {
            return;
        }
        debug_assert_eq!(
            id as usize,
            self.parent.len(),
            "insertion ids are sequential"
        );
        self.parent.push(parent);
        self.token.push(token);
        self.row.push(-1);
    }

    /// Row `row` drafted the children of `node` (the first such row is kept).
    fn expands(&mut self, node: i32, row: usize) {
        if let Some(r) = self.row.get_mut(node as usize).filter(|r| **r < 0) {
            *r = row as i32;
        }
    }
}

/// Most entries one commit appends: the root plus `MAX_DEPTH` accepted nodes.
const MAX_COMMIT: usize = crate::MAX_DEPTH + 1;

impl<'d> SpecBlockSession<'d> {
    /// A session whose context holds up to `max_entries` committed entries (about the sequence length).
    pub fn new(
        drafter: &'d SpecBlockDrafter,
        max_entries: usize,
        policy: DraftPolicy,
    ) -> Result<Self, Error> {
        let c = drafter.config();
        if policy.width_table.len() != c.rank_classes || policy.beam_width == 0 {
            return Err(Error::InvalidArgument(
                "width_table needs one width per rank class; beam_width > 0",
            ));
        }
        let k = c.slots;
        let max_width = (policy.beam_width as usize)
            .max(policy.width_table.iter().copied().max().unwrap_or(1) as usize);
        if max_width > c.draft_vocab {
            return Err(Error::InvalidArgument(
                "beam_width and width_table entries must be <= draft_vocab_size",
            ));
        }
        if max_entries == 0 || max_entries > super::MAX_SESSION_ENTRIES {
            return Err(Error::InvalidArgument(
                "max_entries must be in 1..=MAX_SESSION_ENTRIES (16M)",
            ));
        }
        let max_seeds = k * max_width + 1;
        let rows = (max_seeds * k).max(MAX_COMMIT * k);
        // What creation reserves, in floats (bounded inputs: no overflow): refuse a session that could
        // not fit before allocating any of it.
        let group = c.heads / c.kv_heads;
        let cache = 2 * c.layers * max_entries * k * c.kv_heads * c.head_dim;
        let per_row = 12 * c.hidden + 3 * c.ffn + c.draft_vocab + 2 * c.heads * c.head_dim + 512;
        let attention = 2 * k * group * (max_entries * k + k);
        if cache + rows * per_row + attention > super::MAX_SESSION_FLOATS {
            return Err(Error::Capacity {
                what: "session memory (max_entries and beam_width); at most 16 GiB",
                capacity: super::MAX_SESSION_FLOATS,
            });
        }
        Ok(SpecBlockSession {
            drafter,
            cache: drafter.try_new_cache(max_entries)?,
            scratch: Scratch::with_capacity(drafter, rows, max_entries * k),
            b1_logits: Vec::with_capacity(k * c.draft_vocab),
            b1_rank: Vec::with_capacity(k * c.rank_classes),
            b1_hidden: Vec::with_capacity(k * c.hidden),
            has_block1: false,
            root: None,
            next_base: 1,
            draft_base: 0,
            drafted: false,
            idx: Vec::with_capacity(c.draft_vocab),
            top: Vec::with_capacity(max_width),
            seeds: Vec::with_capacity(max_seeds),
            seed_hidden: Vec::with_capacity(max_seeds * c.hidden),
            seed_tokens: Vec::with_capacity(max_seeds),
            seed_vis: Vec::with_capacity(max_seeds),
            chain: Vec::with_capacity(MAX_COMMIT),
            bases: Vec::with_capacity(MAX_COMMIT),
            min_confidence: 0.0,
            plain_drafted: false,
            pending: PlainQueue::new(3 * c.target_hidden),
            policy,
            rec: PathRecorder::default(),
        })
    }

    pub(super) fn drafter_ref(&self) -> &'d SpecBlockDrafter {
        self.drafter
    }

    /// The drafting policy (widths, budget, seed limit).
    pub fn policy(&self) -> &DraftPolicy {
        &self.policy
    }

    /// Sets the next drafts' budget, seed limit and confidence stop (keep only nodes whose path
    /// probability under the drafter is at least `min_confidence`; 0 = off). The tree given to
    /// [`draft`](Self::draft) must hold `budget` nodes.
    pub fn set_shape(
        &mut self,
        budget: u32,
        max_seeds: u32,
        min_confidence: f32,
    ) -> Result<(), Error> {
        if budget == 0 || budget as usize > crate::MAX_NODES {
            return Err(Error::InvalidArgument("budget must be in 1..=MAX_NODES"));
        }
        if !(0.0..=1.0).contains(&min_confidence) {
            return Err(Error::InvalidArgument("min_confidence must be in [0, 1]"));
        }
        self.policy.budget = budget;
        self.policy.max_seeds = max_seeds;
        self.min_confidence = min_confidence;
        Ok(())
    }

    /// A plain step instead of a draft: `tree` becomes the root alone (one row to verify) and the
    /// drafter does nothing. The following [`commit`](Self::commit) (nothing accepted) is deferred:
    /// its entry joins a queue that the next real [`draft`](Self::draft) runs in one batched forward,
    /// so a run of plain steps costs the drafter one forward, not one per token. The queue keeps the
    /// last [`PLAIN_CONTEXT_WINDOW`](super::PLAIN_CONTEXT_WINDOW) entries of a longer run.
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
        self.next_base + self.pending.len() as u32
    }

    /// Forgets the sequence (buffers are kept).
    pub fn reset(&mut self) {
        self.cache.clear();
        self.has_block1 = false;
        self.root = None;
        self.next_base = 1;
        self.drafted = false;
        self.plain_drafted = false;
        self.pending.clear();
    }

    /// Entries in the drafter's context cache.
    pub fn context_entries(&self) -> usize {
        self.cache.entries()
    }

    /// Block-2 seeds of the last draft (each costs one block-2 forward of `slots` rows).
    pub fn block2_seeds(&self) -> usize {
        self.seeds.len()
    }

    /// The root token of the next draft (the last committed token, not yet seen by the target).
    pub fn root(&self) -> Option<u32> {
        self.root
    }

    /// After the target's prefill of `tokens[..S]` (with `features` of those S positions, `S x 3H_t`)
    /// and its first sampled token `tokens[S]`: fills the context and computes block 1.
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
        self.bases.clear();
        self.bases.extend(1..=s as u32);
        match self.drafter.config().protocol {
            ContextProtocol::Training => {
                self.drafter.context_forward_last_into(
                    &mut self.cache,
                    embed,
                    features,
                    &tokens[1..],
                    &self.bases,
                    &mut self.scratch,
                )?;
                self.finish_context(s, tokens[s], s as u32 + 1);
            }
            ContextProtocol::Reference => {
                // The authors' bookkeeping: the prompt entries, then a duplicate "draft entry"
                // (f_{S-1}, x_S) one base further, whose block 1 is the first draft.
                let fw = 3 * self.drafter.config().target_hidden;
                if features.len() != s * fw {
                    return Err(Error::ShapeMismatch {
                        what: "prefill features (S x 3 target_hidden)",
                        expected: s * fw,
                        got: features.len(),
                    });
                }
                let mut feats = Vec::with_capacity((s + 1) * fw);
                feats.extend_from_slice(features);
                feats.extend_from_slice(&features[(s - 1) * fw..]);
                self.chain.clear();
                self.chain.extend_from_slice(&tokens[1..]);
                self.chain.push(tokens[s]);
                self.bases.push(s as u32 + 1);
                self.drafter.context_forward_last_into(
                    &mut self.cache,
                    embed,
                    &feats,
                    &self.chain,
                    &self.bases,
                    &mut self.scratch,
                )?;
                self.draft_base = s as u32 + 1;
                self.finish_context(s + 1, tokens[s], 0);
            }
        }
        Ok(())
    }

    /// After verification: `accepted` draft tokens, then the `bonus` token, with the target features
    /// of [root, accepted...] (`(accepted + 1) x 3H_t`). Appends those entries and computes the next
    /// block 1; `bonus` becomes the root.
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
        let training = self.drafter.config().protocol == ContextProtocol::Training;
        if self.plain_drafted {
            if !accepted.is_empty() {
                return Err(Error::InvalidArgument(
                    "a plain step (root-only tree) accepts no draft tokens",
                ));
            }
            if training {
                return self.defer(bonus, features);
            }
        }
        match self.drafter.config().protocol {
            ContextProtocol::Training => {
                self.chain.clear();
                self.chain.extend_from_slice(accepted);
                self.chain.push(bonus);
                self.append(embed, features)?;
            }
            ContextProtocol::Reference => {
                self.commit_reference(embed, accepted, bonus, features)?
            }
        }
        self.plain_drafted = false;
        Ok(())
    }

    /// Appends the entries `self.chain` (tokens) with `features` (one row each) at the next bases and
    /// makes the last one block 1 (training protocol).
    fn append(&mut self, embed: &[f32], features: &[f32]) -> Result<(), Error> {
        self.bases.clear();
        self.bases
            .extend((0..self.chain.len() as u32).map(|i| self.next_base + i));
        self.drafter.context_forward_last_into(
            &mut self.cache,
            embed,
            features,
            &self.chain,
            &self.bases,
            &mut self.scratch,
        )?;
        let next = self.next_base + self.chain.len() as u32;
        let last = self.chain[self.chain.len() - 1];
        self.finish_context(self.chain.len(), last, next);
        Ok(())
    }

    /// The commit of a plain step: queues the entry (root features, bonus) for the next draft.
    fn defer(&mut self, bonus: u32, features: &[f32]) -> Result<(), Error> {
        let fw = 3 * self.drafter.config().target_hidden;
        if features.len() != fw {
            return Err(Error::ShapeMismatch {
                what: "commit features ((accepted + 1) x 3 target_hidden)",
                expected: fw,
                got: features.len(),
            });
        }
        if bonus as usize >= self.drafter.config().vocab {
            return Err(Error::TokenOutOfRange {
                what: "bonus token",
                token: bonus as i64,
                vocab: self.drafter.config().vocab,
            });
        }
        super::forward::check_finite("commit features", features, fw)?;
        if self.cache.entries() + self.pending.len_after_push() > self.cache.capacity() {
            return Err(Error::Capacity {
                what: "drafter context entries",
                capacity: self.cache.capacity(),
            });
        }
        if self.pending.push(bonus, features) {
            // The oldest queued entry left the window: it never reaches the drafter, and the
            // entries after it keep their positions.
            self.next_base += 1;
            self.rec.stream_gap = true;
        }
        self.root = Some(bonus);
        self.has_block1 = false;
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
        self.chain.clear();
        self.chain.extend_from_slice(pending.tokens());
        // Block 1 before the plain steps predicted their tokens (unless the queue dropped some).
        let b1_ok = self.rec.on && !self.rec.stream_gap;
        if b1_ok {
            self.teacher_forced(Source::Block1, pending.tokens());
        }
        let r = self.append(embed, pending.features());
        if r.is_ok() && self.rec.on {
            self.teacher_forced(Source::Queue, pending.tokens());
        }
        self.rec.stream_gap = false;
        self.pending = pending;
        if r.is_ok() {
            self.pending.clear();
        }
        r
    }

    /// Keeps the teacher-forced slots whose tokens `tokens` (the flushed plain steps' bonuses) give:
    /// block 1 of the entry before them (slot k predicted `tokens[k]`), or each flushed entry i's
    /// slots (slot k predicted `tokens[i + 1 + k]`) from the forward just run.
    fn teacher_forced(&mut self, from: Source, tokens: &[u32]) {
        let c = self.drafter.config();
        let (k_slots, h, n) = (c.slots, c.hidden, tokens.len());
        let r = &mut self.rec;
        let room = r.stream_targets.capacity() - r.stream_targets.len();
        match from {
            Source::Block1 => {
                if r.b1_normed.len() != k_slots * h {
                    return;
                }
                for (k, &t) in tokens.iter().enumerate().take(k_slots.min(room)) {
                    r.stream_normed
                        .extend_from_slice(&r.b1_normed[k * h..(k + 1) * h]);
                    r.stream_targets.push(t);
                }
            }
            Source::Queue => {
                let x = &self.scratch.hidden;
                let mut left = room;
                for i in 0..n {
                    for k in 0..k_slots {
                        let Some(&t) = tokens.get(i + 1 + k) else {
                            break;
                        };
                        let row = i * k_slots + k;
                        if left == 0 || x.len() < (row + 1) * h {
                            return;
                        }
                        let start = r.stream_normed.len();
                        r.stream_normed.resize(start + h, 0.0);
                        crate::cpu::rms_norm(
                            &x[row * h..(row + 1) * h],
                            &self.drafter.w.norm,
                            c.rms_eps,
                            &mut r.stream_normed[start..],
                        );
                        r.stream_targets.push(t);
                        left -= 1;
                    }
                }
            }
        }
    }

    /// The authors' commit (docs/drafter-forward.md, "Context protocol"): with nothing accepted, the draft entry is popped and
    /// (f_root, bonus) becomes the new draft entry one base further, the draft base unchanged;
    /// otherwise a+1 entries are appended after it with features [f_root, f_acc..] and the token chain
    /// shifted by one with its last element doubled, [acc_2.., bonus, bonus].
    fn commit_reference(
        &mut self,
        embed: &[f32],
        accepted: &[u32],
        bonus: u32,
        features: &[f32],
    ) -> Result<(), Error> {
        let fw = 3 * self.drafter.config().target_hidden;
        if features.len() != (accepted.len() + 1) * fw {
            return Err(Error::ShapeMismatch {
                what: "commit features ((accepted + 1) x 3 target_hidden)",
                expected: (accepted.len() + 1) * fw,
                got: features.len(),
            });
        }
        self.chain.clear();
        self.bases.clear();
        let p = self.draft_base;
        if accepted.is_empty() {
            self.chain.push(bonus);
            self.bases.push(p + 1);
            let popped = self.cache.pop();
            if let Err(e) = self.drafter.context_forward_last_into(
                &mut self.cache,
                embed,
                features,
                &self.chain,
                &self.bases,
                &mut self.scratch,
            ) {
                // Restore the popped entry: its keys and values are still in place.
                if let Some(base) = popped {
                    self.cache.bases.push(base);
                }
                return Err(e);
            }
        } else {
            self.chain.extend_from_slice(&accepted[1..]);
            self.chain.push(bonus);
            self.chain.push(bonus);
            self.bases
                .extend((0..self.chain.len() as u32).map(|i| p + 2 + i));
            self.drafter.context_forward_last_into(
                &mut self.cache,
                embed,
                features,
                &self.chain,
                &self.bases,
                &mut self.scratch,
            )?;
            self.draft_base = p + 1 + self.chain.len() as u32;
        }
        self.finish_context(self.chain.len(), bonus, 0);
        Ok(())
    }

    /// Keeps the last entry's K slots of the forward just run as block 1.
    fn finish_context(&mut self, entries: usize, root: u32, next_base: u32) {
        let c = self.drafter.config();
        let (k, last) = (c.slots, entries - 1);
        let sc = &self.scratch;
        // Output rows start at `first_output_entry` (the last entry after a session's forwards).
        let o = last - sc.first_output_entry;
        self.b1_logits.clear();
        self.b1_logits
            .extend_from_slice(&sc.logits[o * k * c.draft_vocab..(o + 1) * k * c.draft_vocab]);
        self.b1_rank.clear();
        self.b1_rank.extend_from_slice(
            &sc.rank_logits[o * k * c.rank_classes..(o + 1) * k * c.rank_classes],
        );
        self.b1_hidden.clear();
        self.b1_hidden
            .extend_from_slice(&sc.hidden[last * k * c.hidden..entries * k * c.hidden]);
        if self.rec.on {
            let rh = RANK_HIDDEN;
            self.rec.b1_normed.clear();
            self.rec
                .b1_normed
                .extend_from_slice(&sc.normed[o * k * c.hidden..(o + 1) * k * c.hidden]);
            self.rec.b1_rank_hidden.clear();
            self.rec
                .b1_rank_hidden
                .extend_from_slice(&sc.rank_hidden[o * k * rh..(o + 1) * k * rh]);
        }
        self.has_block1 = true;
        self.root = Some(root);
        self.next_base = next_base;
        self.drafted = false;
    }

    /// The head adapter this session's forwards apply (a copy of an online adapter's live weights).
    pub(crate) fn head_adapter_slot(&mut self) -> &mut Option<super::adapter::HeadAdapter> {
        &mut self.scratch.adapter
    }

    /// Keep (or stop keeping) what [`record_path`](Self::record_path) needs: block 1's normed and
    /// rank-head hiddens and each draft node's drafting row. Allocates its buffers when switched on.
    pub fn set_recording(&mut self, on: bool) -> Result<(), Error> {
        if on && !self.rec.on {
            let c = self.drafter.config();
            let r = &mut self.rec;
            let reserve = |v: &mut Vec<f32>, n: usize| {
                v.try_reserve(n.saturating_sub(v.len()))
                    .map_err(|_| Error::OutOfMemory)
            };
            reserve(&mut r.b1_normed, c.slots * c.hidden)?;
            reserve(&mut r.b1_rank_hidden, c.slots * RANK_HIDDEN)?;
            let stream = (super::PLAIN_CONTEXT_WINDOW + 1) * c.slots;
            reserve(&mut r.stream_normed, stream * c.hidden)?;
            r.stream_targets
                .try_reserve(stream)
                .map_err(|_| Error::OutOfMemory)?;
            r.parent
                .try_reserve(RECORDED_NODES)
                .and(r.token.try_reserve(RECORDED_NODES))
                .and(r.row.try_reserve(RECORDED_NODES))
                .map_err(|_| Error::OutOfMemory)?;
            // Block 1 of the newest entry is already computed; refresh its copy at the next forward.
            r.b1_normed.clear();
            r.b1_rank_hidden.clear();
        }
        self.rec.on = on;
        self.rec.clear();
        self.rec.stream_normed.clear();
        self.rec.stream_targets.clear();
        Ok(())
    }

    /// Calls `sink` for the committed stream's slots that plain steps left undrafted, as the last
    /// draft's flush of the plain-step queue computed them: each slot's normed hidden against the token
    /// that came there (teacher forcing, `drafted: false`), then forgets them. Records carry no logits
    /// or rank-head values. Allocates nothing.
    pub fn record_stream(&mut self, sink: &mut dyn FnMut(crate::drafter::online::SlotRecord<'_>)) {
        let h = self.drafter.config().hidden;
        let r = &mut self.rec;
        crate::drafter::online::emit_teacher_forced(&r.stream_normed, &r.stream_targets, h, sink);
        r.stream_normed.clear();
        r.stream_targets.clear();
    }

    /// After verification and before [`commit`](Self::commit): calls `sink` for each drafted slot on
    /// the verified path, from the root down to the first rejection included: the drafter row that
    /// drafted the slot, the target's token there (an accepted draft token, or `bonus` at the first
    /// rejection) and whether the draft was accepted. Needs [`set_recording`](Self::set_recording)
    /// before the draft; after a plain step or without a draft it records nothing. Allocates nothing.
    pub fn record_path(
        &self,
        accepted: &[u32],
        bonus: u32,
        sink: &mut dyn FnMut(crate::drafter::online::SlotRecord<'_>),
    ) {
        let r = &self.rec;
        if !r.on || !self.drafted || self.plain_drafted || r.parent.is_empty() {
            return;
        }
        let c = self.drafter.config();
        let (k, h, vd, rc, rh) = (
            c.slots,
            c.hidden,
            c.draft_vocab,
            c.rank_classes,
            RANK_HIDDEN,
        );
        let sc = &self.scratch;
        let b1_ok = r.b1_normed.len() == k * h && r.b1_rank_hidden.len() == k * rh;
        let (mut node, mut row) = (0usize, r.row[0]);
        for d in 0..=accepted.len() {
            if row < 0 {
                return;
            }
            let row_u = row as usize;
            let (normed, logits, rank_hidden, rank_logits) = if row_u < k {
                if !b1_ok {
                    return;
                }
                (
                    &r.b1_normed[row_u * h..(row_u + 1) * h],
                    &self.b1_logits[row_u * vd..(row_u + 1) * vd],
                    &r.b1_rank_hidden[row_u * rh..(row_u + 1) * rh],
                    &self.b1_rank[row_u * rc..(row_u + 1) * rc],
                )
            } else {
                let s = row_u - k;
                if sc.normed.len() < (s + 1) * h || sc.logits.len() < (s + 1) * vd {
                    return;
                }
                (
                    &sc.normed[s * h..(s + 1) * h],
                    &sc.logits[s * vd..(s + 1) * vd],
                    &sc.rank_hidden[s * rh..(s + 1) * rh],
                    &sc.rank_logits[s * rc..(s + 1) * rc],
                )
            };
            let is_accepted = d < accepted.len();
            let target = if is_accepted { accepted[d] } else { bonus };
            sink(crate::drafter::online::SlotRecord {
                normed,
                logits,
                rank_hidden,
                rank_logits,
                target,
                accepted: is_accepted,
                drafted: true,
            });
            if !is_accepted {
                return;
            }
            // The accepted child; of duplicates (block 1 and a seed's block 2), one that drafted on.
            let mut next = None;
            for i in 1..r.parent.len() {
                if r.parent[i] == node as i32 && r.token[i] == target {
                    next = Some(i);
                    if r.row[i] >= 0 {
                        break;
                    }
                }
            }
            let Some(n) = next else { return };
            node = n;
            row = r.row[n];
        }
    }

    /// Grows the draft tree: block 1's greedy chain and alternatives, one batched block-2 forward over
    /// every seed, then dedup, prune to the policy's budget and finalize. `tree` must have room for
    /// the candidates (up to `slots x beam_width x (1 + seeds)` nodes before the prune).
    pub fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), Error> {
        self.flush(embed)?;
        let Some(root) = self.root.filter(|_| self.has_block1) else {
            return Err(Error::InvalidState("draft before prefill"));
        };
        self.plain_drafted = false;
        // A failed draft leaves nothing to commit (as in the EAGLE-3 session): the tree is reset below.
        self.drafted = false;
        let c = self.drafter.config();
        let (k_slots, vd, rc) = (c.slots, c.draft_vocab, c.rank_classes);
        tree.reset(root as i32)?;
        self.seeds.clear();
        self.rec.clear();
        self.rec.node(0, -1, root);
        self.rec.expands(0, 0);
        // Block 1: greedy chain plus alternatives at each slot; seeds for block 2.
        let mut parent = 0i32;
        let mut first_nonzero_rank: Option<u8> = None;
        let (mut last_width, mut last_greedy) = (0u32, 0u32);
        for k in 0..k_slots {
            let (rank, p) = summarize(
                self.drafter,
                &self.policy,
                &self.b1_logits[k * vd..(k + 1) * vd],
                &self.b1_rank[k * rc..(k + 1) * rc],
                &mut self.idx,
                &mut self.top,
            );
            if rank != 0 && first_nonzero_rank.is_none() {
                first_nonzero_rank = Some(rank);
            }
            let width = if k == 0 {
                slot0_width(&self.policy, p)
            } else {
                width(&self.policy, rank, p)
            };
            let meta = NodeMeta {
                block: 0,
                slot: k as u8,
                rank_class: rank,
                user: 0,
            };
            let (g, glp) = self.top[0];
            let greedy = tree.add_with_meta(parent, g as i32, glp, meta)?;
            self.rec.node(greedy, parent, g);
            if k + 1 < k_slots {
                self.rec.expands(greedy, k + 1);
            }
            if width > 1 {
                self.seeds.push(Seed {
                    node: greedy,
                    token: g,
                    slot: k,
                    rank: 0,
                });
            }
            for &(alt, alp) in self.top.iter().take(width as usize).skip(1) {
                let node = tree.add_with_meta(parent, alt as i32, alp, meta)?;
                self.rec.node(node, parent, alt);
                self.seeds.push(Seed {
                    node,
                    token: alt,
                    slot: k,
                    rank: 0,
                });
            }
            (last_width, last_greedy) = (width, g);
            parent = greedy;
        }
        // Tail seed: slot K-1 inactive and the block not given up (never under the default table).
        let give_up = first_nonzero_rank.is_some_and(|r| r as usize == rc - 1);
        if last_width <= 1 && !give_up {
            self.seeds.push(Seed {
                node: parent,
                token: last_greedy,
                slot: k_slots - 1,
                rank: 0,
            });
        }
        // Confidence stop: nodes under the threshold are pruned, so seeds there are not expanded.
        let min_lp = if self.min_confidence > 0.0 {
            self.min_confidence.ln()
        } else {
            f32::NEG_INFINITY
        };
        if self.min_confidence > 0.0 {
            let cum = tree.cum_logprobs();
            self.seeds.retain(|s| cum[s.node as usize] >= min_lp);
        }
        let max_seeds = self.policy.max_seeds as usize;
        if self.policy.prune_seeds || self.seeds.len() > max_seeds {
            for seed in self.seeds.iter_mut() {
                seed.rank = ranked_above(tree, seed.node) as u32;
            }
            if self.policy.prune_seeds {
                let budget = self.policy.budget;
                self.seeds.retain(|s| s.rank < budget);
            }
            if self.seeds.len() > max_seeds {
                // The best `max_seeds` (ranks are distinct), back in insertion order, which node ids follow.
                self.seeds.sort_unstable_by_key(|s| s.rank);
                self.seeds.truncate(max_seeds);
                self.seeds.sort_unstable_by_key(|s| s.node);
            }
        }
        // Block 2: one batched forward over every seed, positions of the origin entry.
        if !self.seeds.is_empty() {
            self.seed_hidden.clear();
            self.seed_tokens.clear();
            self.seed_vis.clear();
            for s in &self.seeds {
                self.seed_hidden
                    .extend_from_slice(&self.b1_hidden[s.slot * c.hidden..(s.slot + 1) * c.hidden]);
                self.seed_tokens.push(s.token);
                self.seed_vis.push(s.slot as u32);
            }
            self.drafter.seed_forward_into(
                &self.cache,
                embed,
                &self.seed_hidden,
                &self.seed_tokens,
                &self.seed_vis,
                &mut self.scratch,
            )?;
            for (i, seed) in self.seeds.iter().enumerate() {
                let mut parent = seed.node;
                self.rec.expands(parent, k_slots + i * k_slots);
                for k in 0..k_slots {
                    let row = i * k_slots + k;
                    let (rank, p) = summarize(
                        self.drafter,
                        &self.policy,
                        &self.scratch.logits[row * vd..(row + 1) * vd],
                        &self.scratch.rank_logits[row * rc..(row + 1) * rc],
                        &mut self.idx,
                        &mut self.top,
                    );
                    let width = width(&self.policy, rank, p);
                    let meta = NodeMeta {
                        block: 1,
                        slot: k as u8,
                        rank_class: rank,
                        user: 0,
                    };
                    let (g, glp) = self.top[0];
                    let greedy = tree.add_with_meta(parent, g as i32, glp, meta)?;
                    self.rec.node(greedy, parent, g);
                    if k + 1 < k_slots {
                        self.rec.expands(greedy, k_slots + row + 1);
                    }
                    for &(alt, alp) in self.top.iter().take(width as usize).skip(1) {
                        let node = tree.add_with_meta(parent, alt as i32, alp, meta)?;
                        self.rec.node(node, parent, alt);
                    }
                    parent = greedy;
                }
            }
        }
        let above = |tree: &DraftTree| {
            tree.cum_logprobs()[1..]
                .iter()
                .filter(|&&lp| lp >= min_lp)
                .count() as u32
        };
        let mut budget = self.policy.budget;
        if self.min_confidence > 0.0 {
            // Path probabilities fall along a path, so the nodes above the threshold form a subtree
            // and the budget prune keeps exactly them; duplicates merge in the finalize, so count
            // again after it (finalizing a finalized tree with a smaller budget only prunes).
            budget = budget.min(above(tree));
        }
        tree.finalize(budget)?;
        if self.min_confidence > 0.0 && above(tree) < tree.len() as u32 - 1 {
            tree.finalize(above(tree))?;
        }
        self.drafted = true;
        Ok(())
    }
}

/// How many nodes of `tree` (block 1 so far) outrank `node` in the finalize's budget order: higher
/// cumulative log-probability, then shallower, then earlier. With `budget` of them above it, the prune
/// drops `node` and its whole subtree: descendants rank below their ancestors, and dedup keeps the
/// better of two duplicates, so the nodes above it stay above it.
fn ranked_above(tree: &DraftTree, node: i32) -> usize {
    let (cum, depth) = (tree.cum_logprobs(), tree.depths());
    let n = node as usize;
    (1..tree.len())
        .filter(|&j| {
            cum[j]
                .total_cmp(&cum[n])
                .reverse()
                .then(depth[j].cmp(&depth[n]))
                .then(j.cmp(&n))
                .is_lt()
        })
        .count()
}

/// Fills `top` with the best candidates of one output row (target ids, log-softmax), best first, and
/// returns the row's rank class and top-1 probability. Reuses `idx`.
fn summarize(
    drafter: &SpecBlockDrafter,
    policy: &DraftPolicy,
    logits: &[f32],
    rank_logits: &[f32],
    idx: &mut Vec<usize>,
    top: &mut Vec<(u32, f32)>,
) -> (u8, f32) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let lse = max + logits.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
    let want = (policy.beam_width as usize)
        .max(policy.width_table.iter().copied().max().unwrap_or(1) as usize)
        .min(logits.len());
    idx.clear();
    idx.extend(0..logits.len());
    let desc = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if want < idx.len() {
        idx.select_nth_unstable_by(want - 1, desc);
        idx.truncate(want);
    }
    idx.sort_unstable_by(desc);
    top.clear();
    top.extend(
        idx.iter()
            .map(|&i| (drafter.w.draft_to_target[i], logits[i] - lse)),
    );
    let mut rank = 0;
    for (i, &v) in rank_logits.iter().enumerate() {
        if v > rank_logits[rank] {
            rank = i;
        }
    }
    (rank as u8, top[0].1.exp())
}

fn slot0_width(policy: &DraftPolicy, p: f32) -> u32 {
    let w = policy
        .slot0_widths
        .iter()
        .find(|(t, _)| p >= *t)
        .map_or(policy.beam_width, |&(_, w)| w);
    w.min(policy.beam_width)
}

fn width(policy: &DraftPolicy, rank: u8, p: f32) -> u32 {
    let base = policy.width_table[rank as usize];
    let capped = match policy.prob_caps.iter().find(|(t, _)| p >= *t) {
        Some(&(_, cap)) => base.min(cap),
        None => base,
    };
    capped.min(policy.beam_width)
}

//! One sequence's drafting state: the context cache, the newest block 1, the root token, and the
//! block-iterative tree growth of method notes §3.2–§3.5 (block 1 → seeds → one batched block 2 → the
//! library's tree, dedup, budget prune, finalize).

use std::vec::Vec;

use super::{BlockOutput, ContextCache, ContextProtocol, Drafter};
use crate::error::Error;
use crate::tree::{DraftTree, NodeMeta};

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
}

impl Default for DraftPolicy {
    fn default() -> Self {
        DraftPolicy {
            budget: 90,
            beam_width: 10,
            slot0_widths: std::vec![(0.9, 3), (0.8, 5), (0.6, 8)],
            width_table: std::vec![2, 4, 6, 4],
            prob_caps: std::vec![(0.95, 2), (0.85, 3)],
        }
    }
}

/// Per-slot summary of a block output row.
struct Slot {
    /// Top candidates as (target id, log-softmax), best first.
    top: Vec<(u32, f32)>,
    rank: u8,
}

/// A block-2 seed: continues from a tree node with a block-1 slot's hidden.
struct Seed {
    node: i32,
    token: u32,
    slot: usize,
}

/// A sequence's drafting session. Create one per sequence; reuse it across requests with `reset`.
pub struct Session<'d> {
    drafter: &'d Drafter,
    policy: DraftPolicy,
    cache: ContextCache,
    block1: Option<BlockOutput>,
    root: Option<u32>,
    next_base: u32,
    drafted: bool,
}

impl<'d> Session<'d> {
    /// A session whose context holds up to `max_entries` committed entries (about the sequence length).
    pub fn new(
        drafter: &'d Drafter,
        max_entries: usize,
        policy: DraftPolicy,
    ) -> Result<Self, Error> {
        if drafter.config().protocol != ContextProtocol::Training {
            return Err(Error::InvalidArgument(
                "only the training context protocol is implemented",
            ));
        }
        if policy.width_table.len() != drafter.config().rank_classes || policy.beam_width == 0 {
            return Err(Error::InvalidArgument(
                "width_table needs one width per rank class; beam_width > 0",
            ));
        }
        Ok(Session {
            drafter,
            policy,
            cache: drafter.new_cache(max_entries),
            block1: None,
            root: None,
            next_base: 1,
            drafted: false,
        })
    }

    /// Forgets the sequence (buffers are kept).
    pub fn reset(&mut self) {
        self.cache.clear();
        self.block1 = None;
        self.root = None;
        self.next_base = 1;
        self.drafted = false;
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
        let bases: Vec<u32> = (1..=s as u32).collect();
        self.reset();
        let out =
            self.drafter
                .context_forward(&mut self.cache, embed, features, &tokens[1..], &bases)?;
        self.finish_context(out, tokens[s], s as u32 + 1);
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
        let chain: Vec<u32> = accepted.iter().copied().chain([bonus]).collect();
        let bases: Vec<u32> = (0..chain.len() as u32)
            .map(|i| self.next_base + i)
            .collect();
        let out = self
            .drafter
            .context_forward(&mut self.cache, embed, features, &chain, &bases)?;
        let next = self.next_base + chain.len() as u32;
        self.finish_context(out, bonus, next);
        Ok(())
    }

    fn finish_context(&mut self, mut out: BlockOutput, root: u32, next_base: u32) {
        // Keep only the last entry's K slots: block 1.
        let c = self.drafter.config();
        let k = c.slots;
        let last = out.entries - 1;
        out.logits.drain(..last * k * c.draft_vocab);
        out.rank_logits.drain(..last * k * c.rank_classes);
        out.hidden.drain(..last * k * c.hidden);
        out.normed.drain(..last * k * c.hidden);
        out.entries = 1;
        self.block1 = Some(out);
        self.root = Some(root);
        self.next_base = next_base;
        self.drafted = false;
    }

    /// Grows the draft tree: block 1's greedy chain and alternatives, one batched block-2 forward over
    /// every seed, then dedup, prune to the policy's budget and finalize. `tree` must have room for
    /// the candidates (up to `slots x beam_width x (1 + seeds)` nodes before the prune).
    pub fn draft(&mut self, embed: &[f32], tree: &mut DraftTree) -> Result<(), Error> {
        let (Some(root), Some(b1)) = (self.root, self.block1.as_ref()) else {
            return Err(Error::InvalidState("draft before prefill"));
        };
        let c = self.drafter.config();
        let k_slots = c.slots;
        tree.reset(root as i32)?;
        let slots: Vec<Slot> = (0..k_slots).map(|k| self.summarize(b1, k)).collect();
        // Block 1: greedy chain plus alternatives at each slot; seeds for block 2.
        let mut seeds: Vec<Seed> = Vec::new();
        let mut parent = 0i32;
        for (k, s) in slots.iter().enumerate() {
            let width = if k == 0 {
                self.slot0_width(s)
            } else {
                self.width(s)
            };
            let meta = |rank: u8| NodeMeta {
                block: 0,
                slot: k as u8,
                rank_class: rank,
                user: 0,
            };
            let (g, glp) = s.top[0];
            let greedy = tree.add_with_meta(parent, g as i32, glp, meta(s.rank))?;
            if width > 1 {
                seeds.push(Seed {
                    node: greedy,
                    token: g,
                    slot: k,
                });
            }
            for &(alt, alp) in s.top.iter().take(width as usize).skip(1) {
                let node = tree.add_with_meta(parent, alt as i32, alp, meta(s.rank))?;
                seeds.push(Seed {
                    node,
                    token: alt,
                    slot: k,
                });
            }
            parent = greedy;
        }
        // Tail seed: slot K-1 inactive and the block not given up (never under the default table).
        let give_up = slots
            .iter()
            .find(|s| s.rank != 0)
            .is_some_and(|s| s.rank as usize == c.rank_classes - 1);
        if self.width(&slots[k_slots - 1]) <= 1 && !give_up {
            seeds.push(Seed {
                node: parent,
                token: slots[k_slots - 1].top[0].0,
                slot: k_slots - 1,
            });
        }
        // Block 2: one batched forward over every seed, positions of the origin entry.
        if !seeds.is_empty() {
            let mut hidden = Vec::with_capacity(seeds.len() * c.hidden);
            for s in &seeds {
                hidden.extend_from_slice(&b1.hidden[s.slot * c.hidden..(s.slot + 1) * c.hidden]);
            }
            let tokens: Vec<u32> = seeds.iter().map(|s| s.token).collect();
            let vis: Vec<u32> = seeds.iter().map(|s| s.slot as u32).collect();
            let b2 = self
                .drafter
                .seed_forward(&self.cache, embed, &hidden, &tokens, &vis)?;
            for (i, seed) in seeds.iter().enumerate() {
                let mut parent = seed.node;
                for k in 0..k_slots {
                    let s = self.summarize(&b2, i * k_slots + k);
                    let width = self.width(&s);
                    let meta = NodeMeta {
                        block: 1,
                        slot: k as u8,
                        rank_class: s.rank,
                        user: 0,
                    };
                    let (g, glp) = s.top[0];
                    let greedy = tree.add_with_meta(parent, g as i32, glp, meta)?;
                    for &(alt, alp) in s.top.iter().take(width as usize).skip(1) {
                        tree.add_with_meta(parent, alt as i32, alp, meta)?;
                    }
                    parent = greedy;
                }
            }
        }
        tree.finalize(self.policy.budget)?;
        self.drafted = true;
        Ok(())
    }

    /// Top candidates (target ids, log-softmax) and rank class of one output row.
    fn summarize(&self, out: &BlockOutput, row: usize) -> Slot {
        let c = self.drafter.config();
        let logits = &out.logits[row * c.draft_vocab..(row + 1) * c.draft_vocab];
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let lse = max + logits.iter().map(|&x| (x - max).exp()).sum::<f32>().ln();
        let want = (self.policy.beam_width as usize)
            .max(self.policy.width_table.iter().copied().max().unwrap_or(1) as usize);
        let mut idx: Vec<usize> = (0..c.draft_vocab).collect();
        let want = want.min(idx.len());
        let desc = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
        if want < idx.len() {
            idx.select_nth_unstable_by(want - 1, desc);
            idx.truncate(want);
        }
        idx.sort_unstable_by(desc);
        let top = idx
            .iter()
            .map(|&i| (self.drafter.w.draft_to_target[i], logits[i] - lse))
            .collect();
        let rl = &out.rank_logits[row * c.rank_classes..(row + 1) * c.rank_classes];
        let mut rank = 0;
        for (i, &v) in rl.iter().enumerate() {
            if v > rl[rank] {
                rank = i;
            }
        }
        Slot {
            top,
            rank: rank as u8,
        }
    }

    fn slot0_width(&self, s: &Slot) -> u32 {
        let p = s.top[0].1.exp();
        let w = self
            .policy
            .slot0_widths
            .iter()
            .find(|(t, _)| p >= *t)
            .map_or(self.policy.beam_width, |&(_, w)| w);
        w.min(self.policy.beam_width)
    }

    fn width(&self, s: &Slot) -> u32 {
        let p = s.top[0].1.exp();
        let base = self.policy.width_table[s.rank as usize];
        let capped = match self.policy.prob_caps.iter().find(|(t, _)| p >= *t) {
            Some(&(_, cap)) => base.min(cap),
            None => base,
        };
        capped.min(self.policy.beam_width)
    }
}

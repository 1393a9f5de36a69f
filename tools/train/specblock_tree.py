"""SpecBlock tree growth, an independent reference for the Rust `Session::draft` (src/drafter/session.rs).

docs/drafter-forward.md for the candidates, the library's tree rules (src/tree/mod.rs) for finalize:

- candidates: per output row the top max(beam_width, max(width_table)) draft ids by logit (ties: lower
  id), log-softmax in f32, mapped to target ids (`id + d2t[id]`); the row's rank class is the first
  argmax of its rank logits and p = exp(top-1 log-softmax);
- widths: block-1 slot 0 from `slot0_widths` (first p >= threshold, else beam_width), every other row
  width_table[rank] capped by the first matching `prob_caps`; all capped at beam_width;
- block 1: greedy chain under the root, alternatives (ranks 2..w) as siblings of each greedy node;
  seeds per slot in insertion order: the greedy node (if w > 1), then the alternatives; a tail seed
  from the last greedy node when slot K-1 has w <= 1 and the block did not give up (first non-zero
  rank class == C-1);
- block 2: one batched seed forward (condition h of the seed's slot, its token, visibility = slot);
  per seed a greedy chain under the seed node with alternatives at each slot;
- finalize: dedup siblings with equal tokens (winner: higher cumulative log-prob, ties the earlier
  insertion; losers' children move under the winner and are deduped there too), keep the best
  min(budget, live) by (cum desc, depth asc, insertion asc), order root first then by (depth, that rank).

Cumulative log-probs are f32 sums along the insertion path, as in the library (a node moved by dedup
keeps its value). `build_tree` also returns the decision margins (how close each ranking decision came
to flipping) so a fixture can be checked to be robust across f32 implementations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class DraftPolicy:
    """Defaults = `DraftPolicy::default()` in session.rs (the authors' published setting)."""
    budget: int = 90
    beam_width: int = 10
    slot0_widths: list = field(default_factory=lambda: [(0.9, 3), (0.8, 5), (0.6, 8)])
    width_table: list = field(default_factory=lambda: [2, 4, 6, 4])
    prob_caps: list = field(default_factory=lambda: [(0.95, 2), (0.85, 3)])

    @property
    def max_width(self) -> int:
        return max(self.beam_width, max(self.width_table))


@dataclass
class Margins:
    """Smallest distance of each kind of decision from its flip point."""
    logit: float = float("inf")      # top-list order / width boundary (logit units)
    rank: float = float("inf")       # rank-class argmax (rank-logit units)
    prob: float = float("inf")       # p against a width threshold
    dedup: float = float("inf")      # best vs second cum log-prob in a duplicate group
    prune: float = float("inf")      # last kept vs first dropped cum log-prob
    order: float = float("inf")      # adjacent same-depth kept nodes' cum log-probs

    def worst(self) -> float:
        return min(self.logit, self.rank, self.prob, self.dedup, self.prune, self.order)


def f32(x) -> np.float32:
    return np.float32(x)


def log_softmax_f32(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float32)
    m = row.max()
    lse = m + np.log(np.exp(row - m).sum(dtype=np.float32), dtype=np.float32)
    return (row - np.float32(lse)).astype(np.float32)


def summarize(logits: np.ndarray, rank_logits: np.ndarray, d2t: np.ndarray, policy: DraftPolicy):
    """One output row -> (top [(target id, log-prob f32)] best first, rank class, p, sorted logits)."""
    want = min(policy.max_width, logits.shape[0])
    order = sorted(range(logits.shape[0]), key=lambda i: (-float(logits[i]), i))
    lp = log_softmax_f32(logits)
    top = [(int(i + d2t[i]), lp[i]) for i in order[:want]]
    rank = 0
    for c in range(1, rank_logits.shape[0]):
        if rank_logits[c] > rank_logits[rank]:
            rank = c
    p = np.exp(top[0][1], dtype=np.float32)
    return top, rank, p, [float(logits[i]) for i in order]


def slot0_width(policy: DraftPolicy, p) -> int:
    w = next((w for t, w in policy.slot0_widths if p >= f32(t)), policy.beam_width)
    return min(w, policy.beam_width)


def other_width(policy: DraftPolicy, rank: int, p) -> int:
    w = policy.width_table[rank]
    cap = next((c for t, c in policy.prob_caps if p >= f32(t)), None)
    if cap is not None:
        w = min(w, cap)
    return min(w, policy.beam_width)


class Candidates:
    """Insertion-ordered nodes; node 0 is the root."""

    def __init__(self, root: int):
        self.token, self.parent, self.cum, self.depth = [root], [-1], [f32(0.0)], [0]

    def add(self, parent: int, token: int, lp) -> int:
        lp = min(f32(lp), f32(0.0))  # the library clamps rounding above 0
        self.token.append(token)
        self.parent.append(parent)
        self.cum.append(f32(self.cum[parent] + lp))
        self.depth.append(self.depth[parent] + 1)
        return len(self.token) - 1


def _note_row(m: Margins, policy: DraftPolicy, sorted_logits, rank_logits, p, width, thresholds):
    # Order of the top `width` and the boundary to the first one not taken.
    n = min(width + 1, len(sorted_logits))
    for j in range(n - 1):
        m.logit = min(m.logit, sorted_logits[j] - sorted_logits[j + 1])
    r = sorted(rank_logits.tolist(), reverse=True)
    m.rank = min(m.rank, r[0] - r[1])
    for t in thresholds:
        m.prob = min(m.prob, abs(float(p) - float(f32(t))))


def grow(root: int, b1_logits, b1_rank, b1_hidden, seed_fn: Callable, d2t, policy: DraftPolicy,
         margins: Margins | None = None) -> Candidates:
    """All candidates of one draft. `seed_fn(hidden [N,H], tokens [N], vis [N])` -> (logits [N,K,V_d],
    rank_logits [N,K,C]) is the block-2 forward on the cache whose last entry gave block 1."""
    m = margins if margins is not None else Margins()
    b1_logits, b1_rank = np.asarray(b1_logits, np.float32), np.asarray(b1_rank, np.float32)
    K, C = b1_rank.shape
    t = Candidates(root)
    seeds = []  # (node, token, slot)
    parent, first_nonzero = 0, None
    last_width = last_greedy = 0
    for k in range(K):
        top, rank, p, sl = summarize(b1_logits[k], b1_rank[k], d2t, policy)
        if rank != 0 and first_nonzero is None:
            first_nonzero = rank
        if k == 0:
            width = slot0_width(policy, p)
            _note_row(m, policy, sl, b1_rank[k], p, width, [a for a, _ in policy.slot0_widths])
        else:
            width = other_width(policy, rank, p)
            _note_row(m, policy, sl, b1_rank[k], p, width, [a for a, _ in policy.prob_caps])
        g, glp = top[0]
        greedy = t.add(parent, g, glp)
        if width > 1:
            seeds.append((greedy, g, k))
        for alt, alp in top[1:width]:
            seeds.append((t.add(parent, alt, alp), alt, k))
        last_width, last_greedy, parent = width, g, greedy
    give_up = first_nonzero is not None and first_nonzero == C - 1
    if last_width <= 1 and not give_up:
        seeds.append((parent, last_greedy, K - 1))
    if seeds:
        hidden = np.stack([np.asarray(b1_hidden[s], np.float32) for _, _, s in seeds])
        logits, rank_logits = seed_fn(hidden, np.array([tok for _, tok, _ in seeds]),
                                      np.array([s for _, _, s in seeds]))
        logits, rank_logits = np.asarray(logits, np.float32), np.asarray(rank_logits, np.float32)
        for i, (node, _, _) in enumerate(seeds):
            parent = node
            for k in range(K):
                top, rank, p, sl = summarize(logits[i, k], rank_logits[i, k], d2t, policy)
                width = other_width(policy, rank, p)
                _note_row(m, policy, sl, rank_logits[i, k], p, width, [a for a, _ in policy.prob_caps])
                g, glp = top[0]
                greedy = t.add(parent, g, glp)
                for alt, alp in top[1:width]:
                    t.add(parent, alt, alp)
                parent = greedy
    return t


def finalize(t: Candidates, budget: int, margins: Margins | None = None):
    """The library's finalize from its rules -> (tokens, parents) in final order, root first."""
    m = margins if margins is not None else Margins()
    n = len(t.token)
    kids = [[] for _ in range(n)]
    for i in range(1, n):
        kids[t.parent[i]].append(i)
    parent = [-1] * n
    live = []

    def merge(node, children):
        # Group the (possibly pooled) children by token; the winner takes every member's children.
        groups: dict[int, list[int]] = {}
        for c in children:
            groups.setdefault(t.token[c], []).append(c)
        for g in groups.values():
            ranked = sorted(g, key=lambda c: (-float(t.cum[c]), c))
            if len(ranked) > 1:
                m.dedup = min(m.dedup, float(t.cum[ranked[0]]) - float(t.cum[ranked[1]]))
            w = ranked[0]
            parent[w] = node
            live.append(w)
            merge(w, [gc for c in g for gc in kids[c]])

    merge(0, kids[0])
    rank_key = lambda i: (-float(t.cum[i]), t.depth[i], i)  # noqa: E731
    live.sort(key=rank_key)
    kept = live[:min(budget, len(live))]
    if len(live) > len(kept) and kept:
        m.prune = min(m.prune, float(t.cum[kept[-1]]) - float(t.cum[live[len(kept)]]))
    kept_set = set(kept)
    assert all(parent[i] == 0 or parent[i] in kept_set for i in kept), "prune not closed under ancestors"
    order = [0] + sorted(kept, key=lambda i: (t.depth[i],) + rank_key(i))
    for a, b in zip(order[1:], order[2:]):
        if t.depth[a] == t.depth[b]:
            m.order = min(m.order, float(t.cum[a]) - float(t.cum[b]))
    new_id = {old: k for k, old in enumerate(order)}
    tokens = [t.token[i] for i in order]
    parents = [-1] + [new_id[parent[i]] for i in order[1:]]
    return tokens, parents


def build_tree(root: int, b1_logits, b1_rank, b1_hidden, seed_fn: Callable, d2t,
               policy: DraftPolicy | None = None):
    """Block 1 + block 2 + finalize -> (tokens, parents, margins)."""
    policy = policy or DraftPolicy()
    m = Margins()
    cands = grow(root, b1_logits, b1_rank, b1_hidden, seed_fn, d2t, policy, m)
    tokens, parents = finalize(cands, policy.budget, m)
    return tokens, parents, m

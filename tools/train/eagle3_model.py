"""EAGLE-3 drafter, forward only: the PyTorch golden reference for docs/eagle3-forward.md.

Clarity over speed: every attention is an explicit f32 mask over an explicit key list, and all computation is
f32 whatever the checkpoint dtype. `state_dict()` keys are the EAGLE-3 checkpoint names (doc, "Weights"); the
token embedding is a non-persistent buffer (`embed_tokens`), taken from the checkpoint's optional
`embed_tokens.weight` or else borrowed from the target.

Numerics are those of docs/drafter-forward.md, from the layers shared with specblock_model.py (layers.py:
RMSNorm, SiLU, rotate-half RoPE with f64-computed inv_freq, 1/sqrt(d) scale, f32 softmax, GQA head j -> KV
head j // (n_h / n_kv), post-RoPE keys in every cache).

Two caches:
- `Eagle3Cache`: the committed context, one K/V row per committed entry, in commit order (append-only).
- `DraftKV`: the rows written by drafting steps of the tree being grown; row r remembers the row of its
  parent node (-1 = a child of the root). Thrown away once the tree is built.

`grow_tree` is the EAGLE-2 dynamic tree used by EAGLE-3 (doc, "Growing the tree").
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from layers import MLP, Attention, RMSNorm, rope_tables

ARCHITECTURE = "LlamaForCausalLMEagle3"


@dataclass
class Eagle3Config:
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    draft_vocab_size: Optional[int] = None
    head_dim: Optional[int] = None
    num_hidden_layers: int = 1
    rms_norm_eps: float = 1e-6
    rope_theta: Optional[float] = 10000.0
    rope_scaling: Optional[dict] = None
    target_hidden_size: Optional[int] = None
    architectures: list = field(default_factory=lambda: [ARCHITECTURE])
    # Unknown fields of config.json, kept verbatim.
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.draft_vocab_size is None:
            self.draft_vocab_size = self.vocab_size
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.target_hidden_size is None:
            self.target_hidden_size = self.hidden_size
        if self.rope_theta is None:
            self.rope_theta = 10000.0
        assert self.num_hidden_layers == 1, "EAGLE-3 baseline: exactly one decoder layer (midlayer)"
        assert self.rope_scaling is None, "rope_scaling is not part of the contract"
        assert self.num_attention_heads % self.num_key_value_heads == 0
        assert self.head_dim % 2 == 0
        assert self.draft_vocab_size <= self.vocab_size
        assert not self.extra.get("bias", False), "biased fc is not part of the contract"

    @property
    def feature_size(self) -> int:
        return 3 * self.target_hidden_size

    @classmethod
    def from_dict(cls, d: dict) -> "Eagle3Config":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_json(cls, path: str) -> "Eagle3Config":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        return {**extra, **d}


class MidLayer(nn.Module):
    """The single EAGLE-3 decoder layer: two input norms, 2H-wide attention, residual on the hidden path."""

    def __init__(self, c: Eagle3Config):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)   # on the token embedding
        self.hidden_norm = RMSNorm(c.hidden_size, c.rms_norm_eps)       # on the incoming hidden
        # q/k/v read the 2H-wide concat(embedding, hidden); o_proj writes H.
        self.self_attn = Attention(2 * c.hidden_size, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                                   c.head_dim)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c.hidden_size, c.intermediate_size)

    def forward(self, g, emb, cos, sin, prefix_k, prefix_v, mask):
        """g [Q, H] incoming hidden (fc(feature) or a parent's pre-norm output); emb [Q, H] raw embeddings."""
        x = torch.cat([self.input_layernorm(emb), self.hidden_norm(g)], dim=-1)  # embedding half first
        a, k, v = self.self_attn(x, cos, sin, prefix_k, prefix_v, mask)
        h = g + a
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h, k, v


class Eagle3Cache:
    """Committed context: post-RoPE K and V [P, n_kv, d] (KV heads only), one row per entry, plus positions."""

    def __init__(self, cfg: Eagle3Config):
        n, d = cfg.num_key_value_heads, cfg.head_dim
        self.k = torch.zeros(0, n, d)
        self.v = torch.zeros(0, n, d)
        self.positions: list[int] = []

    def __len__(self):
        return len(self.positions)


class DraftKV:
    """Rows written by drafting steps: K/V [R, n_kv, d], parent row per row (-1 = child of the root)."""

    def __init__(self, cfg: Eagle3Config):
        n, d = cfg.num_key_value_heads, cfg.head_dim
        self.k = torch.zeros(0, n, d)
        self.v = torch.zeros(0, n, d)
        self.parent: list[int] = []

    def __len__(self):
        return len(self.parent)

    def path(self, row: int) -> list[int]:
        """Rows on the chain row, parent(row), ... up to a child of the root."""
        out = []
        while row >= 0:
            out.append(row)
            row = self.parent[row]
        return out


@dataclass
class StepOut:
    logits: torch.Tensor   # [N, V_d] f32
    h: torch.Tensor        # [N, H] pre-norm output (fed to children)
    n: torch.Tensor        # [N, H] final-normed
    k: torch.Tensor        # [N, n_kv, d] post-RoPE, as written to the cache
    v: torch.Tensor


class Eagle3Drafter(nn.Module):
    def __init__(self, cfg: Eagle3Config, embed: Optional[torch.Tensor] = None):
        super().__init__()
        self.config = cfg
        self.fc = nn.Linear(cfg.feature_size, cfg.hidden_size, bias=False)
        self.midlayer = MidLayer(cfg)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.draft_vocab_size, bias=False)
        self.register_buffer("d2t", torch.zeros(cfg.draft_vocab_size, dtype=torch.int64))
        self.register_buffer("t2d", torch.zeros(cfg.vocab_size, dtype=torch.bool))
        self.register_buffer("embed_tokens", torch.zeros(0, cfg.hidden_size), persistent=False)
        if embed is not None:
            self.set_embedding(embed)

    def set_embedding(self, embed: torch.Tensor):
        assert embed.shape == (self.config.vocab_size, self.config.hidden_size)
        self.embed_tokens = embed.float()

    def _embed(self, tokens):
        assert self.embed_tokens.shape[0] == self.config.vocab_size, "call set_embedding first"
        return self.embed_tokens[torch.as_tensor(tokens, dtype=torch.int64)]

    def _run(self, g, tokens, positions, prefix_k, prefix_v, mask) -> StepOut:
        c = self.config
        cos, sin = rope_tables(torch.as_tensor(positions, dtype=torch.int64), c.head_dim, c.rope_theta)
        h, k, v = self.midlayer(g, self._embed(tokens), cos, sin, prefix_k, prefix_v, mask)
        n = self.norm(h)
        return StepOut(self.lm_head(n), h, n, k, v)

    # --- the two forwards of the contract ---

    @torch.no_grad()
    def context_forward(self, cache: Eagle3Cache, features, tokens, positions) -> StepOut:
        """E committed entries (features [E, 3H_t], tokens [E] target ids, positions [E]) appended to `cache`.
        Entry i sees every cached row, the new entries before it, and itself."""
        E = features.shape[0]
        P = len(cache)
        g = self.fc(features.float())
        causal = torch.tril(torch.ones(E, E, dtype=torch.bool))
        mask = torch.cat([torch.ones(E, P, dtype=torch.bool), causal], dim=1)
        out = self._run(g, tokens, positions, cache.k, cache.v, mask)
        cache.k = torch.cat([cache.k, out.k], 0)
        cache.v = torch.cat([cache.v, out.v], 0)
        cache.positions.extend(int(p) for p in torch.as_tensor(positions))
        return out

    @torch.no_grad()
    def draft_step(self, cache: Eagle3Cache, draft: DraftKV, hidden, tokens, positions, parent_rows) -> StepOut:
        """N tree nodes (parent pre-norm hidden [N, H], tokens [N] target ids, positions [N], parent_rows [N]:
        the draft row of each node's parent, -1 for children of the root). Node i sees every committed row, the
        draft rows on its parent's chain, and itself; never other nodes of this batch. Rows are appended to
        `draft` in batch order (node i -> row len(draft)_before + i)."""
        N = hidden.shape[0]
        P, R = len(cache), len(draft)
        parent_rows = [int(r) for r in torch.as_tensor(parent_rows)]
        assert all(-1 <= r < R for r in parent_rows), "parent row out of range"
        anc = torch.zeros(N, R, dtype=torch.bool)
        for i, r in enumerate(parent_rows):
            anc[i, draft.path(r)] = True
        mask = torch.cat([torch.ones(N, P, dtype=torch.bool), anc, torch.eye(N, dtype=torch.bool)], dim=1)
        out = self._run(hidden.float(), tokens, positions,
                        torch.cat([cache.k, draft.k], 0), torch.cat([cache.v, draft.v], 0), mask)
        draft.k = torch.cat([draft.k, out.k], 0)
        draft.v = torch.cat([draft.v, out.v], 0)
        draft.parent.extend(parent_rows)
        return out

    # --- vocabulary helpers ---

    def to_target_ids(self, draft_ids):
        draft_ids = torch.as_tensor(draft_ids, dtype=torch.int64)
        return draft_ids + self.d2t[draft_ids]


def topk_stable(x: torch.Tensor, k: int):
    """Top-k of a 1-D tensor: descending value, ties -> lower index first. Returns (values, indices)."""
    idx = torch.argsort(-x, stable=True)[:k]
    return x[idx], idx


@dataclass
class Tree:
    tokens: torch.Tensor        # [N] target ids of the draft nodes (root excluded), node i is tree node i+1
    parents: torch.Tensor       # [N] tree index of the parent (0 = root)
    depths: torch.Tensor        # [N] 1-based depth
    scores: torch.Tensor        # [N] cumulative draft log-prob
    cand_tokens: torch.Tensor   # [C] every candidate, in candidate order
    cand_parents: torch.Tensor  # [C] candidate index of the parent (-1 = root)
    cand_scores: torch.Tensor   # [C]
    selected: torch.Tensor      # [N] candidate index of each tree node


@torch.no_grad()
def grow_tree(model: Eagle3Drafter, cache: Eagle3Cache, h_last, logits_last, depth: int, top_k: int,
              total_tokens: int) -> Tree:
    """EAGLE-2 dynamic tree as EAGLE-3 runs it. h_last/logits_last: the last committed entry's pre-norm output
    and logits; `depth` drafting steps; `total_tokens` counts the root (N = total_tokens - 1 draft nodes)."""
    last_pos = cache.positions[-1]
    draft = DraftKV(model.config)
    lp = torch.log_softmax(logits_last.float(), -1)
    s, ids = topk_stable(lp, top_k)
    c_tok, c_par, c_sc, c_depth = list(ids), [-1] * top_k, list(s), [1] * top_k
    frontier = list(range(top_k))                 # candidate indices expanded at the next step
    hidden = h_last[None].expand(top_k, -1)
    rows = [-1] * top_k                           # parent draft row of each frontier node
    for step in range(depth):
        toks = model.to_target_ids(torch.stack([c_tok[c] for c in frontier]))
        pos = [last_pos + step + 1] * len(frontier)
        out = model.draft_step(cache, draft, hidden, toks, pos, rows)
        new_rows = list(range(len(draft) - len(frontier), len(draft)))
        lp = torch.log_softmax(out.logits.float(), -1)
        base = len(c_tok)
        flat = []
        for j, cand in enumerate(frontier):
            s, ids = topk_stable(lp[j], top_k)
            for t in range(top_k):
                c_tok.append(ids[t])
                c_par.append(cand)
                c_sc.append(c_sc[cand] + s[t])
                c_depth.append(c_depth[cand] + 1)
                flat.append(c_sc[-1])
        _, pick = topk_stable(torch.stack(flat), top_k)
        frontier = [base + int(f) for f in pick]
        hidden = out.h[pick // top_k]
        rows = [new_rows[int(f) // top_k] for f in pick]
    scores = torch.stack(c_sc)
    _, sel = topk_stable(scores, total_tokens - 1)
    sel = torch.sort(sel).values                  # candidate order: parents before children
    where = {int(c): i + 1 for i, c in enumerate(sel)}
    parents = [0 if c_par[int(c)] < 0 else where[c_par[int(c)]] for c in sel]
    return Tree(tokens=model.to_target_ids(torch.stack([c_tok[int(c)] for c in sel])),
                parents=torch.tensor(parents), depths=torch.tensor([c_depth[int(c)] for c in sel]),
                scores=scores[sel], cand_tokens=model.to_target_ids(torch.stack(c_tok)),
                cand_parents=torch.tensor(c_par), cand_scores=scores, selected=sel)


def load_drafter(model_dir: str, embed: Optional[torch.Tensor] = None) -> Eagle3Drafter:
    """config.json + model.safetensors. Embedding: `embed` if given, else the checkpoint's `embed_tokens.weight`,
    else embed.safetensors's `model.embed_tokens.weight`. Float tensors are cast to f32; a leading `model.` on
    names is dropped; d2t absent -> identity (needs V_d = V); t2d absent -> derived from d2t."""
    from safetensors.torch import load_file
    cfg = Eagle3Config.from_json(os.path.join(model_dir, "config.json"))
    raw = load_file(os.path.join(model_dir, "model.safetensors"))
    sd = {(k[6:] if k.startswith("model.") else k): v for k, v in raw.items()}
    ckpt_embed = sd.pop("embed_tokens.weight", None)
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    if "d2t" not in sd:
        assert cfg.draft_vocab_size == cfg.vocab_size, "d2t is required when draft_vocab_size < vocab_size"
        sd["d2t"] = torch.zeros(cfg.draft_vocab_size, dtype=torch.int64)
    sd["d2t"] = sd["d2t"].to(torch.int64)
    if "t2d" not in sd:
        t2d = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        t2d[torch.arange(cfg.draft_vocab_size) + sd["d2t"]] = True
        sd["t2d"] = t2d
    sd["t2d"] = sd["t2d"].to(torch.bool)
    model = Eagle3Drafter(cfg)
    model.load_state_dict(sd, strict=True)
    if embed is None:
        embed = ckpt_embed
    if embed is None:
        p = os.path.join(model_dir, "embed.safetensors")
        if os.path.exists(p):
            embed = load_file(p)["model.embed_tokens.weight"]
    if embed is not None:
        model.set_embedding(embed)
    return model.eval()

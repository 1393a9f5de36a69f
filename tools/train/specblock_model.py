"""SpecBlock drafter, forward only: the PyTorch golden reference for docs/drafter-forward.md.

Clarity over speed: every attention is an explicit f32 mask over an explicit key list. All computation is
f32 whatever the checkpoint dtype. `state_dict()` keys are the authors' tensor names (doc, "Weights");
the token embedding is a non-persistent buffer (`embed_tokens`, borrowed from the target, never saved).

Numeric conventions (the Rust drafter follows these exactly):

- RMSNorm, SiLU, RoPE and attention: layers.py (shared with eagle3_model.py). RoPE position p = base + slot.
- Rank features from the f32 logits of a slot, T = rank_topk (>= 10): z = top-T logits (descending),
  L = logsumexp(z), p = exp(z - L); features = [z_1..z_10 - L, z1-z2, z1-z3, z1-z5, p_1, -sum p ln p].

Cache layout (`DrafterCache`): per layer, k and v of shape [entries*K, n_kv, d], entry-major then slot, in
commit order; `bases` holds each committed entry's base position.
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

RANK_HIDDEN = 256
RANK_FEATURES = 15


@dataclass
class SpecBlockConfig:
    # The authors' fields.
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    draft_vocab_size: int
    diffspec_draft_token_num: int = 4
    rank_classes: int = 4
    head_dim: Optional[int] = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    # Ours (optional).
    target_hidden_size: Optional[int] = None
    rank_topk: int = 10
    aux_layer_ids: Optional[list] = None
    context_protocol: str = "training"
    # Unknown fields of config.json, kept verbatim.
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.target_hidden_size is None:
            self.target_hidden_size = self.hidden_size
        if self.rope_theta is None:
            self.rope_theta = 10000.0
        assert self.rank_topk >= 10, "rank_topk must be >= 10"
        assert self.num_attention_heads % self.num_key_value_heads == 0
        assert self.head_dim % 2 == 0
        assert self.context_protocol in ("training", "reference")

    @property
    def K(self) -> int:
        return self.diffspec_draft_token_num

    @classmethod
    def from_dict(cls, d: dict) -> "SpecBlockConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_json(cls, path: str) -> "SpecBlockConfig":
        with open(path) as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        extra = d.pop("extra")
        if d["aux_layer_ids"] is None:
            del d["aux_layer_ids"]
        return {**extra, **d}


class InputLayer(nn.Module):
    def __init__(self, c: SpecBlockConfig):
        super().__init__()
        H = c.hidden_size
        self.condition_proj = nn.Linear(3 * c.target_hidden_size, H, bias=False)
        self.condition_norm = RMSNorm(H, c.rms_norm_eps)
        self.token_norm = RMSNorm(H, c.rms_norm_eps)
        self.query_norm = RMSNorm(H, c.rms_norm_eps)
        self.position_queries = nn.Embedding(c.K, H)
        self.fuse = nn.Linear(3 * H, H, bias=False)

    def forward(self, cond_raw, tok_emb, feature_condition: bool):
        """cond_raw [N, 3H_t] (features) or [N, H] (draft hidden); tok_emb [N, H] -> z [N, K, H]."""
        cond = self.condition_proj(cond_raw) if feature_condition else cond_raw
        cond = self.condition_norm(cond)
        tok = self.token_norm(tok_emb)
        q = self.query_norm(self.position_queries.weight)  # [K, H]
        N, K = cond.shape[0], q.shape[0]
        x = torch.cat([cond[:, None].expand(N, K, -1), tok[:, None].expand(N, K, -1),
                       q[None].expand(N, K, -1)], dim=-1)
        return self.fuse(x)


class DecoderLayer(nn.Module):
    def __init__(self, c: SpecBlockConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = Attention(c.hidden_size, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                                   c.head_dim)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = MLP(c.hidden_size, c.intermediate_size)

    def forward(self, x, cos, sin, ctx_k, ctx_v, mask):
        a, k, v = self.self_attn(self.input_layernorm(x), cos, sin, ctx_k, ctx_v, mask)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, k, v


def rank_features(logits: torch.Tensor, topk: int) -> torch.Tensor:
    """logits [..., V_d] -> the 15 rank features [..., 15] (doc step 4)."""
    z = torch.topk(logits.float(), topk, dim=-1, sorted=True).values
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    lp = z - lse
    p = lp.exp()
    ent = -(p * lp).sum(-1, keepdim=True)
    z1 = z[..., :1]
    gaps = torch.cat([z1 - z[..., 1:2], z1 - z[..., 2:3], z1 - z[..., 4:5]], dim=-1)
    return torch.cat([lp[..., :10], gaps, p[..., :1], ent], dim=-1)


class DrafterCache:
    """The context cache: per layer post-RoPE K and V of every committed entry's K slots (KV heads only)."""

    def __init__(self, cfg: SpecBlockConfig):
        n, d = cfg.num_key_value_heads, cfg.head_dim
        L = cfg.num_hidden_layers
        self.K = cfg.K
        self.k = [torch.zeros(0, n, d) for _ in range(L)]
        self.v = [torch.zeros(0, n, d) for _ in range(L)]
        self.bases: list[int] = []

    @property
    def num_entries(self) -> int:
        return len(self.bases)


class SpecBlockDrafter(nn.Module):
    def __init__(self, cfg: SpecBlockConfig, embed: Optional[torch.Tensor] = None):
        super().__init__()
        self.config = cfg
        self.input_layer = InputLayer(cfg)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.shift_proj = nn.ModuleList(
            nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
            for _ in range(cfg.num_hidden_layers - 1))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.draft_vocab_size, bias=False)
        self.rank_head = nn.Sequential(
            nn.Linear(cfg.hidden_size + RANK_FEATURES, RANK_HIDDEN, bias=False),
            nn.SiLU(),
            nn.Linear(RANK_HIDDEN, cfg.rank_classes, bias=False))
        self.register_buffer("d2t", torch.zeros(cfg.draft_vocab_size, dtype=torch.int64))
        self.register_buffer("t2d", torch.zeros(cfg.vocab_size, dtype=torch.bool))
        self.register_buffer("embed_tokens", torch.zeros(0, cfg.hidden_size), persistent=False)
        if embed is not None:
            self.set_embedding(embed)

    def set_embedding(self, embed: torch.Tensor):
        assert embed.shape == (self.config.vocab_size, self.config.hidden_size)
        self.embed_tokens = embed.float()

    # --- the shared trunk ---

    def _trunk(self, z, positions, ctx, mask):
        """z [N, K, H]; positions [N, K]; ctx = per-layer (k, v) prefixes; mask [N*K, P + N*K].
        Returns (h [N, K, H], per-layer new (k, v) each [N*K, n_kv, d])."""
        N, K, H = z.shape
        c = self.config
        cos, sin = rope_tables(positions.reshape(-1), c.head_dim, c.rope_theta)
        x = z
        new_kv = []
        for l, layer in enumerate(self.layers):
            if l > 0:
                prev = torch.cat([x[:, :1], x[:, :-1]], dim=1)  # slot 0 receives itself
                x = self.shift_proj[l - 1](torch.cat([x, prev], dim=-1))
            y, k, v = layer(x.reshape(N * K, H), cos, sin, ctx[l][0], ctx[l][1], mask)
            x = y.reshape(N, K, H)
            new_kv.append((k, v))
        return x, new_kv

    def _heads(self, h):
        n = self.norm(h)
        logits = self.lm_head(n)
        feats = rank_features(logits, self.config.rank_topk)
        rank_logits = self.rank_head(torch.cat([n, feats], dim=-1))
        return logits, rank_logits, h, n

    def _embed(self, tokens):
        assert self.embed_tokens.shape[0] == self.config.vocab_size, "call set_embedding first"
        return self.embed_tokens[tokens]

    # --- the two forwards of the contract ---

    @torch.no_grad()
    def context_forward(self, cache: DrafterCache, features, tokens, bases):
        """E new entries (features [E, 3H_t], tokens [E], bases [E]) appended to `cache` in order.
        Slot k of new entry i sees all slots of every earlier entry (cache and new entries < i) and
        slots 0..k of its own entry. Returns (logits [E,K,V_d], rank_logits [E,K,C], h [E,K,H], n [E,K,H])."""
        K = self.config.K
        E = features.shape[0]
        P = cache.num_entries * K
        bases = torch.as_tensor(bases, dtype=torch.int64)
        positions = bases[:, None] + torch.arange(K)[None, :]
        z = self.input_layer(features.float(), self._embed(tokens), feature_condition=True)

        qe = torch.arange(E).repeat_interleave(K)  # query entry, flattened [E*K]
        qs = torch.arange(K).repeat(E)             # query slot
        own = (qe[:, None] > qe[None, :]) | ((qe[:, None] == qe[None, :]) & (qs[:, None] >= qs[None, :]))
        mask = torch.cat([torch.ones(E * K, P, dtype=torch.bool), own], dim=1)

        ctx = list(zip(cache.k, cache.v))
        h, new_kv = self._trunk(z, positions, ctx, mask)
        for l, (k, v) in enumerate(new_kv):
            cache.k[l] = torch.cat([cache.k[l], k], 0)
            cache.v[l] = torch.cat([cache.v[l], v], 0)
        cache.bases.extend(int(b) for b in bases)
        return self._heads(h)

    @torch.no_grad()
    def seed_forward(self, cache: DrafterCache, hidden, tokens, visibility, origin_base):
        """N seeds (draft condition hidden [N, H], tokens [N], visibility s [N] in 0..K-1) at the origin
        entry = the last committed entry, positions origin_base + k. Slot k of seed i sees all slots of
        every entry before the origin, origin slots 0..s_i, and its own slots 0..k (never other seeds).
        Nothing is appended. Returns the same four tensors as context_forward, with N for E."""
        K = self.config.K
        N = hidden.shape[0]
        C = cache.num_entries
        assert C >= 1 and cache.bases[-1] == int(origin_base), "origin must be the last committed entry"
        vis = torch.as_tensor(visibility, dtype=torch.int64)
        assert ((vis >= 0) & (vis < K)).all()
        positions = (int(origin_base) + torch.arange(K))[None, :].expand(N, K)
        z = self.input_layer(hidden.float(), self._embed(tokens), feature_condition=False)

        qe = torch.arange(N).repeat_interleave(K)
        qs = torch.arange(K).repeat(N)
        before = torch.ones(N * K, (C - 1) * K, dtype=torch.bool)
        origin = torch.arange(K)[None, :] <= vis[qe][:, None]
        own = (qe[:, None] == qe[None, :]) & (qs[:, None] >= qs[None, :])
        mask = torch.cat([before, origin, own], dim=1)

        ctx = list(zip(cache.k, cache.v))
        h, _ = self._trunk(z, positions, ctx, mask)
        return self._heads(h)

    # --- vocabulary helpers ---

    def to_target_ids(self, draft_ids):
        return draft_ids + self.d2t[draft_ids]


def load_drafter(model_dir: str, embed: Optional[torch.Tensor] = None) -> SpecBlockDrafter:
    """config.json + model.safetensors (+ embed.safetensors's model.embed_tokens.weight if `embed` is None
    and the file exists). Float tensors are cast to f32; `embed` keys in the checkpoint are skipped."""
    from safetensors.torch import load_file
    cfg = SpecBlockConfig.from_json(os.path.join(model_dir, "config.json"))
    sd = {k: v for k, v in load_file(os.path.join(model_dir, "model.safetensors")).items() if "embed" not in k}
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}
    sd["d2t"] = sd["d2t"].to(torch.int64)
    if "t2d" not in sd:
        t2d = torch.zeros(cfg.vocab_size, dtype=torch.bool)
        t2d[torch.arange(cfg.draft_vocab_size) + sd["d2t"]] = True
        sd["t2d"] = t2d
    sd["t2d"] = sd["t2d"].to(torch.bool)
    model = SpecBlockDrafter(cfg)
    model.load_state_dict(sd, strict=True)
    if embed is None:
        p = os.path.join(model_dir, "embed.safetensors")
        if os.path.exists(p):
            embed = load_file(p)["model.embed_tokens.weight"]
    if embed is not None:
        model.set_embedding(embed)
    return model.eval()

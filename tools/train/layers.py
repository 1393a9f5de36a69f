"""Layers shared by the PyTorch drafters (specblock_model.py, eagle3_model.py) and the target (llama_torch.py).

One definition of each, so the references the Rust parity tests compare against cannot drift apart. Module and
parameter names are Llama's (`weight`, `q_proj`, `gate_proj`, ...): checkpoint keys are built from them.

Numerics (docs/drafter-forward.md; the Rust drafter follows these exactly):

- RMSNorm(x) = x * (1 / sqrt(mean(x^2) + eps)) * w, in f32. No biases anywhere. SiLU(x) = x * sigmoid(x).
- RoPE, rotate-half (NeoX), on q and k heads:
    inv_freq[i] = float32( 1.0 / (rope_theta ** (2i / d)) )  computed in float64, i = 0..d/2-1
    angle[i]    = float32(p) * inv_freq[i]                    one f32 multiply
    cos[i], sin[i] = cos(angle[i]), sin(angle[i])             in f32; repeated: cos[i + d/2] = cos[i]
    rope(x)     = x * cos + rotate_half(x) * sin,  rotate_half(x) = concat(-x[d/2:], x[:d/2])
- Attention: scores = (q . k) / sqrt(d) in f32, masked keys = -inf, softmax in f32, GQA query head j uses
  KV head j // (n_h / n_kv). Keys in every cache are post-RoPE; values carry no RoPE.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x, weight, eps: float):
    """RMSNorm in f32 whatever x's dtype (a caller that wants x's dtype back casts the result)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


class RMSNorm(nn.Module):
    def __init__(self, n: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float):
    """cos, sin [..., d] in f32 for int positions [...], on positions' device. inv_freq is computed on the
    CPU so that every device rotates by the same f32 frequencies."""
    inv_freq = (1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))).float()
    angle = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)
    angle = torch.cat([angle, angle], dim=-1)
    return torch.cos(angle), torch.sin(angle)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    """x [..., d]; cos/sin broadcastable to x."""
    return x * cos + rotate_half(x) * sin


def swiglu(gate, up):
    return F.silu(gate) * up


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


def gqa_attention(q, keys, vals, mask):
    """Explicit-mask grouped-query attention. q [Q, n_h, d]; keys/vals [P, n_kv, d]; mask [Q, P] bool
    (True = visible). Returns [Q, n_h * d]."""
    Q, n_h, d = q.shape
    g = n_h // keys.shape[1]
    keys = keys.repeat_interleave(g, dim=1)  # head j -> kv head j // g
    vals = vals.repeat_interleave(g, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, keys) / math.sqrt(d)
    scores = scores.masked_fill(~mask[None], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", p, vals).reshape(Q, n_h * d)


class Attention(nn.Module):
    """Drafter self-attention over a cached post-RoPE prefix plus the new rows. `in_features` is what q/k/v
    read (H for SpecBlock, 2H for EAGLE-3's concat(embedding, hidden)); o_proj writes `hidden`."""

    def __init__(self, in_features: int, hidden: int, n_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        assert n_heads % n_kv_heads == 0
        self.n_h, self.n_kv, self.d = n_heads, n_kv_heads, head_dim
        self.q_proj = nn.Linear(in_features, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(in_features, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(in_features, n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, hidden, bias=False)

    def forward(self, x, cos, sin, prefix_k, prefix_v, mask):
        """x [Q, in_features]; cos/sin [Q, d]; prefix_k/v [P, n_kv, d] post-RoPE; mask [Q, P + Q] bool
        (True = visible). Returns (out [Q, hidden], k [Q, n_kv, d] post-RoPE, v [Q, n_kv, d])."""
        Q = x.shape[0]
        cos, sin = cos[:, None], sin[:, None]
        q = apply_rope(self.q_proj(x).view(Q, self.n_h, self.d), cos, sin)
        k = apply_rope(self.k_proj(x).view(Q, self.n_kv, self.d), cos, sin)
        v = self.v_proj(x).view(Q, self.n_kv, self.d)
        out = gqa_attention(q, torch.cat([prefix_k, k], 0), torch.cat([prefix_v, v], 0), mask)
        return self.o_proj(out), k, v

"""The target (SmolLM2 / any Llama GGUF) in PyTorch, for data generation on a GPU (datagen_torch.py): a
batched forward with a preallocated KV cache that returns the logits of the last position of each sequence,
the aux features (outputs of layers [1, L/2-1, L-4], concatenated) and the final normed hidden of every fed
position. Same numerics as Hugging Face transformers' Llama (checked against the committed reference
fixture, tools/engine/tests/fixtures/reference_logits.json, by test_llama_torch.py).

Sequences of a batch may have different lengths: every sequence has its own start column in the cache
(left padding), and pad columns are masked out of attention.

RMSNorm, RoPE and the SwiGLU product are the drafters' (layers.py); attention is torch's fused
scaled_dot_product_attention over the batched cache rather than layers.gqa_attention's explicit einsums, which
would materialize [B, heads, T, cache] scores in f32 on the GPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import target
from layers import apply_rope, rms_norm, rope_tables, swiglu


@dataclass
class LlamaConfig:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    eps: float
    rope_theta: float
    eos: int | None = None

    @property
    def aux_layers(self) -> list[int]:
        """Layers whose outputs the drafters read: [1, L/2 - 1, L - 4]."""
        return [1, self.layers // 2 - 1, self.layers - 4]


def load_config(path: str | None = None) -> LlamaConfig:
    """The model shape from a GGUF's metadata."""
    import os
    import sys
    from gguf import GGUFReader
    path = target.default_path(path)
    if target._SCRIPTS not in sys.path:
        sys.path.insert(0, target._SCRIPTS)
    from gguf_to_hf import field
    if not path.endswith(".gguf"):
        raise ValueError(f"{path}: the torch target loads GGUF files")
    assert os.path.exists(path), path
    r = GGUFReader(path)
    heads = int(field(r, "llama.attention.head_count"))
    hidden = int(field(r, "llama.embedding_length"))
    vocab = next(t for t in r.tensors if t.name == "token_embd.weight").shape[-1]
    return LlamaConfig(layers=int(field(r, "llama.block_count")), hidden=hidden, heads=heads,
                       kv_heads=int(field(r, "llama.attention.head_count_kv", heads)), head_dim=hidden // heads,
                       ffn=int(field(r, "llama.feed_forward_length")), vocab=int(vocab),
                       eps=float(field(r, "llama.attention.layer_norm_rms_epsilon")),
                       rope_theta=float(field(r, "llama.rope.freq_base", 10000.0)),
                       eos=int(field(r, "tokenizer.ggml.eos_token_id", -1)))


class Llama:
    """Weights on `device` in `dtype` (norms and RoPE tables in f32, like transformers)."""

    def __init__(self, path: str | None, device="cpu", dtype=torch.float32):
        self.cfg = load_config(path)
        c = self.cfg
        t = target.load_tensors(path)
        self.device, self.dtype = torch.device(device), dtype
        cast = lambda x: x.to(self.device, dtype)  # noqa: E731
        self.embed = cast(t["model.embed_tokens.weight"])
        self.lm_head = cast(t["lm_head.weight"]) if "lm_head.weight" in t else self.embed
        self.norm = t["model.norm.weight"].to(self.device)
        self.layers = []
        for i in range(c.layers):
            g = lambda n: t[f"model.layers.{i}.{n}.weight"]  # noqa: E731
            self.layers.append({
                "ln1": g("input_layernorm").to(self.device), "ln2": g("post_attention_layernorm").to(self.device),
                "qkv": cast(torch.cat([g("self_attn.q_proj"), g("self_attn.k_proj"), g("self_attn.v_proj")])),
                "o": cast(g("self_attn.o_proj")),
                "gate_up": cast(torch.cat([g("mlp.gate_proj"), g("mlp.up_proj")])), "down": cast(g("mlp.down_proj")),
            })

    def rms(self, x, w):
        return rms_norm(x, w, self.cfg.eps).to(x.dtype)

    def new_cache(self, batch: int, length: int):
        c = self.cfg
        shape = (c.layers, 2, batch, c.kv_heads, length, c.head_dim)
        return torch.zeros(shape, device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def forward(self, cache, tokens, positions, start, valid):
        """One forward over `tokens` [B, T] at cache columns start..start+T with RoPE `positions` [B, T];
        `valid` [B, start+T] bool marks the real (non-pad) columns of each sequence. Returns
        (last logits [B, V] f32, aux features [B, T, 3H], final normed hidden [B, T, H])."""
        c = self.cfg
        B, T = tokens.shape
        cos, sin = rope_tables(positions, c.head_dim, c.rope_theta)    # [B, T, d] f32
        cos, sin = cos[:, None].to(self.dtype), sin[:, None].to(self.dtype)
        end = start + T
        # query i (column start+i) sees valid columns <= start+i
        causal = torch.ones(T, end, dtype=torch.bool, device=self.device).tril(start)
        mask = causal[None] & valid[:, None, :end]                       # [B, T, end]
        # A pad query sees itself, so no row is fully masked (its output is never read; a fully masked row
        # would give NaN keys and values that poison every later product with them).
        own = torch.zeros(T, end, dtype=torch.bool, device=self.device)
        own[torch.arange(T), start + torch.arange(T)] = True
        mask = (mask | own[None])[:, None]
        x = self.embed[tokens]
        aux = []
        nq, nk, d = c.heads, c.kv_heads, c.head_dim
        for li, L in enumerate(self.layers):
            h = self.rms(x, L["ln1"])
            qkv = h @ L["qkv"].T
            q, k, v = qkv.split([nq * d, nk * d, nk * d], -1)
            q = q.view(B, T, nq, d).transpose(1, 2)
            k = k.view(B, T, nk, d).transpose(1, 2)
            v = v.view(B, T, nk, d).transpose(1, 2)
            q = apply_rope(q, cos, sin)
            k = apply_rope(k, cos, sin)
            cache[li, 0, :, :, start:end] = k
            cache[li, 1, :, :, start:end] = v
            keys, vals = cache[li, 0, :, :, :end], cache[li, 1, :, :, :end]
            a = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask, enable_gqa=True,
                                               scale=1.0 / math.sqrt(d))
            x = x + a.transpose(1, 2).reshape(B, T, nq * d) @ L["o"].T
            gu = self.rms(x, L["ln2"]) @ L["gate_up"].T
            g, u = gu.chunk(2, -1)
            x = x + swiglu(g, u) @ L["down"].T
            if li in c.aux_layers:
                aux.append(x)
        n = self.rms(x, self.norm)
        logits = (n[:, -1] @ self.lm_head.T).float()
        return logits, torch.cat(aux, -1), n

#!/usr/bin/env python3
"""Golden fixtures for the Rust drafter forward (docs/drafter-forward.md), from specblock_model.py.

    /path/to/python tools/train/golden.py            # writes under tools/engine/tests/fixtures/

Writes a tiny random drafter (seeded; H 64, 2 layers, 4 heads, 2 KV heads, head_dim 16, F 96, V 300,
V_d 120, K 4, H_t 48, T 10, C 4, eps 1e-6, theta 10000) to `drafter_tiny/` as config.json,
model.safetensors (f32, authors' names, with d2t and t2d) and embed.safetensors
(`model.embed_tokens.weight` [300, 64]), then runs, on one cache:

  prefill: context forward of 5 entries, bases 1..5
  commit:  context forward of 3 entries, bases 6..8
  seed:    seed forward of 6 seeds at origin = the commit's last entry (base 8), visibilities
           [0,1,3,2,0,3]; seed i's hidden is the commit's last-entry h at slot hidden_slot[i] (= its
           visibility); tokens: the block-1 greedy target id of that slot for seeds 0..3, random for 4..5

and writes `drafter_golden.safetensors` (f32 unless noted; E entries, K 4, V_d 120, H 64, C 4):

  {prefill,commit}.features     [E, 144]     inputs
  {prefill,commit}.tokens       [E] i64      target ids
  {prefill,commit}.bases        [E] i64
  {prefill,commit,seed}.logits       [E, 4, 120]
  {prefill,commit,seed}.rank_logits  [E, 4, 4]
  {prefill,commit,seed}.rank_features [E, 4, 15]  (the rank head's 15 inputs after n; for debugging)
  {prefill,commit,seed}.h            [E, 4, 64]  pre-norm hidden
  {prefill,commit,seed}.n            [E, 4, 64]  final-normed hidden
  seed.hidden       [6, 64]     inputs (draft conditions)
  seed.hidden_slot  [6] i64     which commit.h[-1] slot each hidden is
  seed.tokens       [6] i64
  seed.visibility   [6] i64
  seed.origin_base  [1] i64     (8)
  cache.layer{0,1}.{k,v}  [32, 2, 16]  context cache after the commit (8 entries x 4 slots, post-RoPE k)
  rope.cos, rope.sin      [16, 16]     RoPE tables for positions 0..15 (head_dim 16)

The script self-checks: shapes and finiteness; prefill+commit equals one context forward of all 8
entries; a context entry does not depend on later entries; each seed alone equals the batch; seeds
ignore origin slots above their visibility (garbage written there changes nothing); slots are causal
inside an entry.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import rope_tables  # noqa: E402
from specblock_model import DrafterCache, SpecBlockConfig, SpecBlockDrafter, load_drafter, rank_features  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tools", "engine", "tests", "fixtures")
SEED = 20260521
VIS = [0, 1, 3, 2, 0, 3]

CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, intermediate_size=96, rms_norm_eps=1e-6, rope_theta=10000.0, vocab_size=300,
              draft_vocab_size=120, diffspec_draft_token_num=4, rank_classes=4, target_hidden_size=48,
              rank_topk=10, context_protocol="training")


def build(g: torch.Generator):
    cfg = SpecBlockConfig.from_dict(CONFIG)
    m = SpecBlockDrafter(cfg)
    sd = {}
    for name, t in m.state_dict().items():
        if name in ("d2t", "t2d"):
            continue
        if name.endswith("norm.weight"):
            sd[name] = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
        elif name == "input_layer.position_queries.weight":
            sd[name] = 0.5 * torch.randn(t.shape, generator=g)  # large enough that slots differ
        else:
            fan_in = t.shape[1]
            std = 1.0 / fan_in ** 0.5
            if name.startswith("lm_head"):
                std *= 3.0  # peaked enough for meaningful rank features
            sd[name] = std * torch.randn(t.shape, generator=g)
    V, Vd = cfg.vocab_size, cfg.draft_vocab_size
    sel = torch.sort(torch.randperm(V, generator=g)[:Vd]).values
    sd["d2t"] = sel - torch.arange(Vd)
    t2d = torch.zeros(V, dtype=torch.bool)
    t2d[sel] = True
    sd["t2d"] = t2d
    m.load_state_dict(sd, strict=True)
    embed = torch.randn(V, cfg.hidden_size, generator=g)
    m.set_embedding(embed)
    return cfg, m.eval(), embed


def close(a, b, tol=1e-5):
    return all(torch.allclose(x, y, rtol=tol, atol=tol) for x, y in zip(a, b))


def main():
    g = torch.Generator().manual_seed(SEED)
    cfg, m, embed = build(g)
    K, H, Vd, C, V = cfg.K, cfg.hidden_size, cfg.draft_vocab_size, cfg.rank_classes, cfg.vocab_size
    W = 3 * cfg.target_hidden_size

    tiny = os.path.join(FIXTURES, "drafter_tiny")
    os.makedirs(tiny, exist_ok=True)
    with open(os.path.join(tiny, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(tiny, "model.safetensors"))
    save_file({"model.embed_tokens.weight": embed.contiguous()}, os.path.join(tiny, "embed.safetensors"))
    m = load_drafter(tiny)  # run from the saved files, as the Rust side will

    out = {}
    cache = DrafterCache(cfg)
    phases = [("prefill", 5, 1), ("commit", 3, 6)]
    for name, E, b0 in phases:
        feats = torch.randn(E, W, generator=g)
        toks = torch.randint(0, V, (E,), generator=g)
        bases = torch.arange(b0, b0 + E)
        res = m.context_forward(cache, feats, toks, bases)
        out.update({f"{name}.features": feats, f"{name}.tokens": toks, f"{name}.bases": bases})
        for key, t in zip(("logits", "rank_logits", "h", "n"), res):
            out[f"{name}.{key}"] = t
        out[f"{name}.rank_features"] = rank_features(res[0], cfg.rank_topk)
    for l in range(cfg.num_hidden_layers):
        out[f"cache.layer{l}.k"] = cache.k[l].clone()
        out[f"cache.layer{l}.v"] = cache.v[l].clone()

    # Seeds from block 1 (the commit's last entry).
    origin = int(cache.bases[-1])
    vis = torch.tensor(VIS)
    h1, logits1 = out["commit.h"][-1], out["commit.logits"][-1]
    greedy = m.to_target_ids(logits1.argmax(-1))  # [K]
    toks = torch.cat([greedy[vis[:4]], torch.randint(0, V, (2,), generator=g)])
    hidden = h1[vis]
    res = m.seed_forward(cache, hidden, toks, vis, origin)
    out.update({"seed.hidden": hidden.clone(), "seed.hidden_slot": vis.clone(), "seed.tokens": toks,
                "seed.visibility": vis, "seed.origin_base": torch.tensor([origin])})
    for key, t in zip(("logits", "rank_logits", "h", "n"), res):
        out[f"seed.{key}"] = t
    out["seed.rank_features"] = rank_features(res[0], cfg.rank_topk)
    cos, sin = rope_tables(torch.arange(16), cfg.head_dim, cfg.rope_theta)
    out["rope.cos"], out["rope.sin"] = cos, sin

    # --- self-checks ---
    for name, E in (("prefill", 5), ("commit", 3), ("seed", 6)):
        assert out[f"{name}.logits"].shape == (E, K, Vd)
        assert out[f"{name}.rank_logits"].shape == (E, K, C)
        assert out[f"{name}.h"].shape == (E, K, H) and out[f"{name}.n"].shape == (E, K, H)
    assert out["cache.layer0.k"].shape == (8 * K, cfg.num_key_value_heads, cfg.head_dim)
    for k, t in out.items():
        assert not t.is_floating_point() or torch.isfinite(t).all(), k
    # Non-degenerate: slots and entries differ, rank classes vary.
    assert (out["prefill.logits"][:, 0] - out["prefill.logits"][:, 1]).abs().max() > 0.1
    assert len(set(out["seed.rank_logits"].argmax(-1).flatten().tolist())) > 1

    # One batch of 8 entries == prefill then commit.
    c2 = DrafterCache(cfg)
    allf = torch.cat([out["prefill.features"], out["commit.features"]])
    allt = torch.cat([out["prefill.tokens"], out["commit.tokens"]])
    allb = torch.cat([out["prefill.bases"], out["commit.bases"]])
    r = m.context_forward(c2, allf, allt, allb)
    for i, key in enumerate(("logits", "rank_logits", "h", "n")):
        assert close([r[i]], [torch.cat([out[f"prefill.{key}"], out[f"commit.{key}"]])]), key
    assert close(c2.k + c2.v, cache.k + cache.v)
    # An entry does not see later entries: changing the last token leaves the others unchanged.
    t3 = allt.clone()
    t3[-1] = (t3[-1] + 1) % V
    r3 = m.context_forward(DrafterCache(cfg), allf, t3, allb)
    assert close([r3[0][:-1]], [r[0][:-1]]) and not close([r3[0][-1]], [r[0][-1]])
    # Causal inside an entry: changing slot K-1's query leaves entry 0's slots 0..K-2 unchanged.
    pq = m.input_layer.position_queries.weight
    saved = pq.data.clone()
    pq.data[-1] += 1.0
    r4 = m.context_forward(DrafterCache(cfg), allf, allt, allb)
    pq.data.copy_(saved)
    assert close([r4[0][0, :-1]], [r[0][0, :-1]]) and not close([r4[0][0, -1]], [r[0][0, -1]])
    # Each seed alone == the batch.
    for i in range(len(VIS)):
        ri = m.seed_forward(cache, hidden[i:i + 1], toks[i:i + 1], vis[i:i + 1], origin)
        assert close([ri[0][0], ri[2][0]], [res[0][i], res[2][i]]), i
    # Garbage in origin slots > s changes nothing for seeds with visibility s; it does for s = K-1.
    bad = DrafterCache(cfg)
    bad.bases = list(cache.bases)
    for l in range(cfg.num_hidden_layers):
        bad.k[l], bad.v[l] = cache.k[l].clone(), cache.v[l].clone()
        bad.k[l][-K + 1:] = 5.0 * torch.randn(K - 1, *bad.k[l].shape[1:], generator=g)
        bad.v[l][-K + 1:] = 5.0 * torch.randn(K - 1, *bad.v[l].shape[1:], generator=g)
    rb = m.seed_forward(bad, hidden, toks, vis, origin)
    zero = vis == 0
    assert close([rb[0][zero]], [res[0][zero]]) and not close([rb[0][~zero]], [res[0][~zero]])

    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(FIXTURES, "drafter_golden.safetensors"))
    for k, t in sorted(out.items()):
        print(f"{k:28s} {str(t.dtype):14s} {list(t.shape)}")
    print("self-checks passed")


if __name__ == "__main__":
    main()

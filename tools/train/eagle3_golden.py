#!/usr/bin/env python3
"""Golden fixtures for the Rust EAGLE-3 drafter forward (docs/eagle3-forward.md), from eagle3_model.py.

    /path/to/python tools/train/eagle3_golden.py     # writes under tools/engine/tests/fixtures/

Writes a tiny random EAGLE-3 drafter (seeded; H 64, 4 heads, 2 KV heads, head_dim 16, F 96, V 300, V_d 120,
H_t 48 so features are 144 wide, eps 1e-6, theta 10000) to `eagle3_tiny/` as config.json, model.safetensors
(f32, checkpoint names, with d2t and t2d) and embed.safetensors (`model.embed_tokens.weight` [300, 64]), then,
on one committed cache:

  context: context forward of 5 entries (f_t, x_{t+1}) at positions 0..4 (the root is x_5)
  step1:   depth 1, 3 nodes = the root's top-3 draft tokens (descending log-prob), each with hidden
           context.h[4], position 5, parent row -1; they become draft rows 0, 1, 2
  step2:   depth 2, 3 nodes with parents [2, 0, 1] (depth-1 node = draft row); node j's token is the rank-j
           draft token of its parent's step1 logits (so nodes 1 and 2 may share a token under different
           parents), its hidden is step1.h[parent]; position 6; rows 3, 4, 5
  tree:    a fresh EAGLE-2 tree (grow_tree) on the same committed cache: depth 3, top_k 3, total_tokens 10

and writes `eagle3_golden.safetensors` (f32 unless noted; V_d 120, H 64, 2 KV heads, d 16):

  context.features   [5, 144]      inputs
  context.tokens     [5] i64       target ids (x_1..x_5)
  context.positions  [5] i64       0..4
  {context,step1,step2}.logits  [N, 120]
  {context,step1,step2}.h       [N, 64]   pre-norm output (what children receive)
  {context,step1,step2}.n       [N, 64]   final-normed output
  {context,step1,step2}.k/.v    [N, 2, 16] the rows each forward writes (post-RoPE k)
  step{1,2}.hidden      [3, 64]   inputs (parents' pre-norm hidden)
  step{1,2}.tokens      [3] i64   target ids
  step{1,2}.draft_tokens [3] i64  the same tokens as draft ids
  step{1,2}.positions   [3] i64
  step{1,2}.parent_rows [3] i64   draft row of each node's parent (-1 = root)
  cache.k, cache.v      [5, 2, 16] committed cache after the context forward
  draft.k, draft.v      [6, 2, 16] draft rows after step2 (rows 0..2 = step1, 3..5 = step2)
  rope.cos, rope.sin    [16, 16]   RoPE tables for positions 0..15
  tree.params           [3] i64    (depth 3, top_k 3, total_tokens 10)
  tree.tokens/.parents/.depths [9] i64, tree.scores [9]   draft nodes 1..9 (parent 0 = root)
  tree.cand_tokens/.cand_parents [30] i64, tree.cand_scores [30]   every candidate (parent -1 = root)
  tree.selected         [9] i64    candidate index of each tree node

Self-checks: shapes and finiteness; a context forward split 3 + 2 equals one of 5; a context entry does not
depend on later entries; each drafting node alone equals the batch; a node ignores draft rows off its path
(garbage there changes nothing) but not its parent's row; a depth-2 node equals plain causal attention over
[committed..., its depth-1 parent, itself]; each tree node's score equals its path log-prob recomputed one node
at a time; tree parents precede children and scores never increase along a path.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eagle3_model import (DraftKV, Eagle3Cache, Eagle3Config, Eagle3Drafter, grow_tree, load_drafter,  # noqa: E402
                          topk_stable)
from layers import rope_tables  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tools", "engine", "tests", "fixtures")
SEED = 20260603
PARENTS2 = [2, 0, 1]
TREE = (3, 3, 10)  # depth, top_k, total_tokens

CONFIG = dict(architectures=["LlamaForCausalLMEagle3"], model_type="llama", hidden_act="silu",
              hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16, intermediate_size=96,
              num_hidden_layers=1, vocab_size=300, draft_vocab_size=120, target_hidden_size=48,
              rms_norm_eps=1e-6, rope_theta=10000.0, rope_scaling=None, max_position_embeddings=2048,
              tie_word_embeddings=False)


def build(g: torch.Generator):
    cfg = Eagle3Config.from_dict(CONFIG)
    m = Eagle3Drafter(cfg)
    sd = {}
    for name, t in m.state_dict().items():
        if name in ("d2t", "t2d"):
            continue
        if name.endswith("norm.weight"):
            sd[name] = 1.0 + 0.1 * torch.randn(t.shape, generator=g)
        else:
            std = 1.0 / t.shape[1] ** 0.5
            if name.startswith("lm_head"):
                std *= 3.0  # peaked enough that top-k orders are well separated
            sd[name] = std * torch.randn(t.shape, generator=g)
    V, Vd = cfg.vocab_size, cfg.draft_vocab_size
    sel = torch.sort(torch.randperm(V, generator=g)[:Vd]).values
    sd["d2t"] = sel - torch.arange(Vd)
    t2d = torch.zeros(V, dtype=torch.bool)
    t2d[sel] = True
    sd["t2d"] = t2d
    m.load_state_dict(sd, strict=True)
    embed = torch.randn(V, cfg.hidden_size, generator=g)
    return cfg, m, embed


def close(a, b, tol=1e-5):
    return torch.allclose(a, b, rtol=tol, atol=tol)


def copy_draft(cfg, d: DraftKV) -> DraftKV:
    c = DraftKV(cfg)
    c.k, c.v, c.parent = d.k.clone(), d.v.clone(), list(d.parent)
    return c


def main():
    g = torch.Generator().manual_seed(SEED)
    cfg, m, embed = build(g)
    V, H, Vd = cfg.vocab_size, cfg.hidden_size, cfg.draft_vocab_size

    tiny = os.path.join(FIXTURES, "eagle3_tiny")
    os.makedirs(tiny, exist_ok=True)
    with open(os.path.join(tiny, "config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=2)
        f.write("\n")
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(tiny, "model.safetensors"))
    save_file({"model.embed_tokens.weight": embed.contiguous()}, os.path.join(tiny, "embed.safetensors"))
    m = load_drafter(tiny)  # run from the saved files, as the Rust side will

    out = {}
    cache = Eagle3Cache(cfg)
    feats = torch.randn(5, cfg.feature_size, generator=g)
    toks = torch.randint(0, V, (5,), generator=g)
    pos = torch.arange(5)
    ctx = m.context_forward(cache, feats, toks, pos)
    out.update({"context.features": feats, "context.tokens": toks, "context.positions": pos})
    for key in ("logits", "h", "n", "k", "v"):
        out[f"context.{key}"] = getattr(ctx, key)
    out["cache.k"], out["cache.v"] = cache.k.clone(), cache.v.clone()

    # Step 1: the root's top-3, all fed the last context entry's pre-norm output.
    draft = DraftKV(cfg)
    _, d1 = topk_stable(torch.log_softmax(ctx.logits[-1], -1), 3)
    hid1 = ctx.h[-1][None].expand(3, H).clone()
    in1 = dict(hidden=hid1, tokens=m.to_target_ids(d1), positions=torch.full((3,), 5), parent_rows=torch.full((3,), -1))
    draft0 = copy_draft(cfg, draft)
    s1 = m.draft_step(cache, draft, **in1)
    # Step 2: node j takes its parent's rank-j draft token; parents permuted.
    par = torch.tensor(PARENTS2)
    d2 = torch.stack([topk_stable(s1.logits[p], 3)[1][j] for j, p in enumerate(PARENTS2)])
    in2 = dict(hidden=s1.h[par].clone(), tokens=m.to_target_ids(d2), positions=torch.full((3,), 6), parent_rows=par)
    draft1 = copy_draft(cfg, draft)
    s2 = m.draft_step(cache, draft, **in2)
    for name, inp, res, dids in (("step1", in1, s1, d1), ("step2", in2, s2, d2)):
        for k, t in inp.items():
            out[f"{name}.{k}"] = t
        out[f"{name}.draft_tokens"] = dids
        for key in ("logits", "h", "n", "k", "v"):
            out[f"{name}.{key}"] = getattr(res, key)
    out["draft.k"], out["draft.v"] = draft.k.clone(), draft.v.clone()
    cos, sin = rope_tables(torch.arange(16), cfg.head_dim, cfg.rope_theta)
    out["rope.cos"], out["rope.sin"] = cos, sin

    depth, top_k, total = TREE
    tree = grow_tree(m, cache, ctx.h[-1], ctx.logits[-1], depth, top_k, total)
    out["tree.params"] = torch.tensor(TREE)
    for key in ("tokens", "parents", "depths", "scores", "cand_tokens", "cand_parents", "cand_scores", "selected"):
        out[f"tree.{key}"] = getattr(tree, key)

    # --- self-checks ---
    assert out["context.logits"].shape == (5, Vd) and out["step2.logits"].shape == (3, Vd)
    assert out["cache.k"].shape == (5, cfg.num_key_value_heads, cfg.head_dim)
    assert out["draft.k"].shape == (6, cfg.num_key_value_heads, cfg.head_dim)
    for k, t in out.items():
        assert not t.is_floating_point() or torch.isfinite(t).all(), k
    assert len(set(d1.tolist())) == 3 and len(set(out["step2.tokens"].tolist())) > 1
    assert not close(s1.logits[0], s1.logits[1])  # same hidden, different tokens -> different outputs
    assert not close(s2.logits[1], s2.logits[2])  # different parents -> different outputs

    # Context split 3 + 2 == one batch of 5; entries do not see later entries.
    c2 = Eagle3Cache(cfg)
    a = m.context_forward(c2, feats[:3], toks[:3], pos[:3])
    b = m.context_forward(c2, feats[3:], toks[3:], pos[3:])
    assert close(torch.cat([a.logits, b.logits]), ctx.logits) and close(torch.cat([a.h, b.h]), ctx.h)
    assert close(c2.k, cache.k) and close(c2.v, cache.v)
    t3 = toks.clone()
    t3[-1] = (t3[-1] + 1) % V
    r3 = m.context_forward(Eagle3Cache(cfg), feats, t3, pos)
    assert close(r3.logits[:-1], ctx.logits[:-1]) and not close(r3.logits[-1], ctx.logits[-1])

    # Each node alone == the batch (same draft state before the step).
    for i in range(3):
        one = {k: v[i:i + 1] for k, v in in1.items()}
        r = m.draft_step(cache, copy_draft(cfg, draft0), **one)
        assert close(r.logits[0], s1.logits[i]) and close(r.h[0], s1.h[i]) and close(r.k[0], s1.k[i])
        one = {k: v[i:i + 1] for k, v in in2.items()}
        r = m.draft_step(cache, copy_draft(cfg, draft1), **one)
        assert close(r.logits[0], s2.logits[i]) and close(r.h[0], s2.h[i]) and close(r.k[0], s2.k[i])

    # Path mask: garbage in off-path rows changes nothing; garbage in the parent's row does.
    for i, p in enumerate(PARENTS2):
        bad = copy_draft(cfg, draft1)
        off = [r for r in range(3) if r != p]
        bad.k[off] = 5.0 * torch.randn(2, *bad.k.shape[1:], generator=g)
        bad.v[off] = 5.0 * torch.randn(2, *bad.v.shape[1:], generator=g)
        one = {k: v[i:i + 1] for k, v in in2.items()}
        r = m.draft_step(cache, bad, **one)
        assert close(r.logits[0], s2.logits[i]), i
        bad.k[p] += 1.0
        r = m.draft_step(cache, bad, **one)
        assert not close(r.logits[0], s2.logits[i]), i

    # Tree attention == causal attention over [committed..., parent, node] with the same inputs.
    for i, p in enumerate(PARENTS2):
        gin = torch.stack([in1["hidden"][p], in2["hidden"][i]])
        tk = torch.stack([in1["tokens"][p], in2["tokens"][i]])
        mask = torch.cat([torch.ones(2, 5, dtype=torch.bool), torch.tril(torch.ones(2, 2, dtype=torch.bool))], 1)
        r = m._run(gin, tk, torch.tensor([5, 6]), cache.k, cache.v, mask)
        assert close(r.logits[0], s1.logits[p]) and close(r.logits[1], s2.logits[i]), i

    # Tree: shape, order, monotone scores, and each score recomputed along its path one node at a time.
    N = total - 1
    all_targets = m.to_target_ids(torch.arange(Vd))
    assert tree.tokens.shape == (N,) and tree.cand_scores.shape == (top_k + depth * top_k * top_k,)
    assert all(int(p) < i + 1 for i, p in enumerate(tree.parents))
    for i in range(N):
        p = int(tree.parents[i])
        assert p == 0 or tree.scores[i] <= tree.scores[p - 1]
        assert p == 0 or tree.depths[i] == tree.depths[p - 1] + 1
        path = []
        j = i + 1
        while j:
            path.append(j - 1)
            j = int(tree.parents[j - 1])
        path.reverse()
        d = DraftKV(cfg)
        hid, logits, row, score = ctx.h[-1], ctx.logits[-1], -1, torch.tensor(0.0)
        for step, node in enumerate(path):
            draft_id = int(torch.nonzero(all_targets == tree.tokens[node])[0])
            score = score + torch.log_softmax(logits, -1)[draft_id]
            if step + 1 < len(path):
                r = m.draft_step(cache, d, hid[None], tree.tokens[node:node + 1], [5 + step], [row])
                hid, logits, row = r.h[0], r.logits[0], len(d) - 1
        assert abs(float(score - tree.scores[i])) < 1e-4, (i, float(score), float(tree.scores[i]))

    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(FIXTURES, "eagle3_golden.safetensors"))
    for k, t in sorted(out.items()):
        print(f"{k:24s} {str(t.dtype):14s} {list(t.shape)}")
    print("tree:", [(int(p), int(t), round(float(s), 3)) for p, t, s in zip(tree.parents, tree.tokens, tree.scores)])
    print("self-checks passed")


if __name__ == "__main__":
    main()

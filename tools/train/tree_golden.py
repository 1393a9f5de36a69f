#!/usr/bin/env python3
"""Golden draft trees for the Rust `Session::draft` (tests/drafter_tree_golden.rs), from specblock_tree.py.

    /path/to/python tools/train/tree_golden.py       # writes tools/engine/tests/fixtures/drafter_tree_golden.safetensors

Reuses golden.py's tiny drafter (`drafter_tiny/`) and its inputs (`drafter_golden.safetensors`, not
rewritten): the prefill context forward (5 entries, bases 1..5) then the commit (3 entries, bases
6..8) on one cache, exactly what the Rust session does with

    prefill(features = prefill.features, tokens = [0] + prefill.tokens)    # training protocol
    draft(...)                                                              # required before commit
    commit(accepted = commit.tokens[:2], bonus = commit.tokens[2], features = commit.features)

Block 1 is the commit's last entry; the root is commit.tokens[-1]. The tree is built for budgets 90
and 20 with the default policy and saved as tree{90,20}.{tokens,parents} (i64, root first, root's
parent -1) plus `root` [1]. The script fails if any ranking decision (top-list order, width boundary,
rank argmax, width thresholds, dedup winner, prune boundary, sibling order) is within 1e-4.
"""
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import FIXTURES  # noqa: E402
from specblock_model import DrafterCache, load_drafter  # noqa: E402
from specblock_tree import DraftPolicy, build_tree  # noqa: E402

MIN_MARGIN = 1e-4


def main():
    m = load_drafter(os.path.join(FIXTURES, "drafter_tiny"))
    g = load_file(os.path.join(FIXTURES, "drafter_golden.safetensors"))
    cfg = m.config
    cache = DrafterCache(cfg)
    m.context_forward(cache, g["prefill.features"], g["prefill.tokens"], g["prefill.bases"])
    logits, rank, h, _ = m.context_forward(cache, g["commit.features"], g["commit.tokens"], g["commit.bases"])
    # Same cache as the golden run: the commit outputs match the fixture.
    assert torch.allclose(logits, g["commit.logits"], atol=1e-5, rtol=1e-5)
    origin = cache.bases[-1]
    root = int(g["commit.tokens"][-1])
    d2t = m.d2t.numpy()

    def seed_fn(hidden, tokens, vis):
        r = m.seed_forward(cache, torch.from_numpy(hidden), torch.from_numpy(tokens).long(),
                           torch.from_numpy(vis).long(), origin)
        return r[0].numpy(), r[1].numpy()

    out = {"root": torch.tensor([root], dtype=torch.int64)}
    for budget in (90, 20):
        tokens, parents, mg = build_tree(root, logits[-1].numpy(), rank[-1].numpy(), h[-1].numpy(),
                                         seed_fn, d2t, DraftPolicy(budget=budget))
        assert len(tokens) == budget + 1 and parents[0] == -1
        assert all(0 <= p < i for i, p in enumerate(parents) if i > 0), "parents precede children"
        print(f"budget {budget}: depth {max(_depths(parents))}, margins {mg}")
        assert mg.worst() > MIN_MARGIN, f"a ranking decision within {MIN_MARGIN}: {mg}"
        out[f"tree{budget}.tokens"] = torch.tensor(tokens, dtype=torch.int64)
        out[f"tree{budget}.parents"] = torch.tensor(parents, dtype=torch.int64)
    path = os.path.join(FIXTURES, "drafter_tree_golden.safetensors")
    save_file(out, path)
    for k, t in sorted(out.items()):
        print(f"{k:16s} {list(t.shape)} {t.tolist()[:12]}{' ...' if t.numel() > 12 else ''}")


def _depths(parents):
    d = [0] * len(parents)
    for i in range(1, len(parents)):
        d[i] = d[parents[i]] + 1
    return d


if __name__ == "__main__":
    np.set_printoptions(precision=6)
    main()

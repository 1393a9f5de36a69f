#!/usr/bin/env python3
"""Golden fixture for the Rust head adapter's backward and AdamW (src/drafter/adapter/train.rs).

    ~/.cache/specblock/venv-train/bin/python tools/train/adapter_golden.py   # writes under tools/engine/tests/fixtures/

A tiny random case (seeded; hidden 16, draft vocab 40, rank 4, rank classes 4, rank hidden 8, 7 records, record 3
with target -1): inputs are drawn in float64 and rounded to float32 (what the fixture stores); the reference is then
computed in float64 from those float32 values with torch autograd in the straightforward (not factored) form

    n' = n + B (A n),  logits = W n' + bias,  rank_logits = base_rank_logits + D h1
    loss = CE(logits, target) averaged over the records with target >= 0
         + rank_weight * CE(rank_logits, rank_label) averaged over all records

starting from a non-zero B, bias and D (so every gradient is non-trivial), and 3 steps of
torch.optim.AdamW(lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01) on [A, B, bias, D] (one group).

Writes `adapter_golden.safetensors` (f32 unless noted):

  w                 [40, 16]   draft LM head W (draft_vocab x hidden)
  normed            [7, 16]    normed hidden n (unadapted)
  base_logits       [7, 40]    W n
  targets           [7] i64    draft ids, -1 = outside the draft vocabulary
  rank_hidden       [7, 8]     h1
  base_rank_logits  [7, 4]     R2 h1
  rank_labels       [7] i64
  init.{a,b,bias,rank_delta}   [4, 16], [16, 4], [40], [4, 8]   weights the loss, gradients and training start from
  loss              [1]        loss at init
  grad.{a,b,bias,rank_delta}   gradients at init
  adamw             [5]        lr, beta1, beta2, eps, weight_decay
  rank_weight       [1]
  train.losses      [3]        loss before each of the 3 steps
  train.{a,b,bias,rank_delta}  weights after the 3 steps

Self-checks: finiteness and non-trivial gradients; autograd matches central finite differences (float64); the
factored form W n + (W B)(A n) + bias gives the same loss; float32 autograd and float32 AdamW agree with the float64
reference to 1e-5; the hand-written AdamW formula matches torch's.
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FIXTURES = os.path.join(ROOT, "tools", "engine", "tests", "fixtures")
SEED = 20260611
H, V, R, C, S, N = 16, 40, 4, 4, 8, 7
IGNORED = 3  # record with target -1
LR, BETAS, EPS, WD = 1e-2, (0.9, 0.999), 1e-8, 0.01
RANK_WEIGHT = 1.0
STEPS = 3


def f32(t):
    """Rounded to float32 and back to float64: the values the fixture stores."""
    return t.to(torch.float32).to(torch.float64)


def loss_fn(inp, a, b, bias, d, factored=False):
    n = inp["normed"]
    if factored:
        # W n + (W B) z + bias with z = A n, as rows.
        logits = n @ inp["w"].T + (n @ a.T) @ (inp["w"] @ b).T + bias
    else:
        n2 = n + (n @ a.T) @ b.T
        logits = n2 @ inp["w"].T + bias
    lm = F.cross_entropy(logits, inp["targets"], ignore_index=-1)
    rank_logits = inp["base_rank_logits"] + inp["rank_hidden"] @ d.T
    rk = F.cross_entropy(rank_logits, inp["rank_labels"])
    return lm + RANK_WEIGHT * rk


def grads(inp, params):
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    loss = loss_fn(inp, *ps)
    gs = torch.autograd.grad(loss, ps)
    return loss.detach(), [g.detach() for g in gs]


def train(inp, params):
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    opt = torch.optim.AdamW(ps, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(inp, *ps)
        loss.backward()
        losses.append(loss.detach().clone())
        opt.step()
    return torch.stack(losses), [p.detach() for p in ps]


def adamw_by_hand(inp, params):
    """The formula the Rust side implements, to pin down torch's semantics."""
    ps = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in ps]
    v = [torch.zeros_like(p) for p in ps]
    b1, b2 = BETAS
    for t in range(1, STEPS + 1):
        _, gs = grads(inp, ps)
        for i, g in enumerate(gs):
            ps[i] = ps[i] * (1 - LR * WD)
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            mhat, vhat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
            ps[i] = ps[i] - LR * mhat / (vhat.sqrt() + EPS)
    return ps


def main():
    g = torch.Generator().manual_seed(SEED)
    rnd = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    w = f32(0.5 * rnd(V, H))
    normed = f32(rnd(N, H))
    targets = torch.randint(0, V, (N,), generator=g)
    targets[IGNORED] = -1
    rank_hidden = f32(F.silu(rnd(N, S)))
    r2 = 0.5 * rnd(C, S)
    base_rank_logits = f32(rank_hidden @ r2.T)
    rank_labels = torch.randint(0, C, (N,), generator=g)
    init = [f32(rnd(R, H) / H ** 0.5), f32(0.3 * rnd(H, R)), f32(0.1 * rnd(V)), f32(0.1 * rnd(C, S))]
    inp = dict(w=w, normed=normed, targets=targets, rank_hidden=rank_hidden, base_rank_logits=base_rank_logits,
               rank_labels=rank_labels)

    loss, gs = grads(inp, init)
    losses, trained = train(inp, init)

    # --- self-checks ---
    assert torch.isfinite(loss) and all(torch.isfinite(t).all() for t in gs + trained)
    for name, gr in zip("a b bias rank_delta".split(), gs):
        assert gr.abs().max() > 1e-3, name
        # No near-zero entry: Adam's first step moves each weight by about lr * sign(grad), so a gradient whose
        # sign float32 rounding could flip would make the 3-step comparison fragile.
        assert gr.abs().min() > 1e-3 * gr.abs().max(), name
    # Finite differences of the float64 loss.
    for t, (p, gr) in enumerate(zip(init, gs)):
        flat = p.reshape(-1)
        for e in range(0, flat.numel(), 3):
            hi = [q.clone() for q in init]
            lo = [q.clone() for q in init]
            hi[t].view(-1)[e] += 1e-6
            lo[t].view(-1)[e] -= 1e-6
            fd = (loss_fn(inp, *hi) - loss_fn(inp, *lo)) / 2e-6
            assert abs(fd - gr.reshape(-1)[e]) < 1e-7 * max(1.0, gr.abs().max()), (t, e, fd, gr.reshape(-1)[e])
    # The factored form the Rust trainer computes.
    assert torch.allclose(loss_fn(inp, *init, factored=True), loss, rtol=1e-12, atol=1e-12)
    # float32 autograd and AdamW agree with the float64 reference.
    inp32 = {k: (v.float() if v.is_floating_point() else v) for k, v in inp.items()}
    loss32, gs32 = grads(inp32, [p.float() for p in init])
    assert abs(loss32.double() - loss) < 1e-5 * abs(loss)
    for a, b in zip(gs32, gs):
        assert (a.double() - b).abs().max() < 1e-5 * b.abs().max()
    _, trained32 = train(inp32, [p.float() for p in init])
    for a, b in zip(trained32, trained):
        assert (a.double() - b).abs().max() < 1e-5 * b.abs().max()
    for a, b in zip(adamw_by_hand(inp, init), trained):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert losses[-1] < losses[0]

    out = dict(w=w, normed=normed, base_logits=normed @ w.T, targets=targets, rank_hidden=rank_hidden,
               base_rank_logits=base_rank_logits, rank_labels=rank_labels, loss=loss.reshape(1),
               adamw=torch.tensor([LR, BETAS[0], BETAS[1], EPS, WD], dtype=torch.float64),
               rank_weight=torch.tensor([RANK_WEIGHT], dtype=torch.float64))
    out["train.losses"] = losses
    for name, p0, gr, p3 in zip("a b bias rank_delta".split(), init, gs, trained):
        out[f"init.{name}"], out[f"grad.{name}"], out[f"train.{name}"] = p0, gr, p3
    out = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in out.items()}
    save_file(out, os.path.join(FIXTURES, "adapter_golden.safetensors"))
    for k, t in sorted(out.items()):
        print(f"{k:22s} {str(t.dtype):14s} {list(t.shape)}")
    print(f"loss {loss.item():.6f}, losses over training {[round(x, 6) for x in losses.tolist()]}")
    print("self-checks passed")


if __name__ == "__main__":
    main()

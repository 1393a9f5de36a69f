#!/usr/bin/env python3
"""PyTorch eager baseline for the GPU drafter block forward (benches/cuda/block.rs).

The same math as docs/drafter-forward.md, written the way a plain eager PyTorch model would run it:
bf16 weights, every linear layer a bf16 matmul (f32 accumulation inside, bf16 result, as torch does),
RMSNorm / RoPE / attention / softmax / rank features in f32 (attention through
F.scaled_dot_product_attention with an additive mask and enable_gqa, as Hugging Face's "sdpa" attention
runs it). Separate q/k/v and gate/up projections (Hugging Face style), an f32 KV cache like the Rust path. Random weights at the Llama-3.1-8B drafter size by default.

Timed cases, each the median of --iters CUDA-event-timed runs after warm-up:
  (a) context forward of one new entry per sequence (K rows each): input fusion including W_cond,
      the decoder layers, final norm, draft LM head, rank head; the entry's keys are written into a
      preallocated cache at a fixed position (so every run does the same work);
  (b) seed forward of --seeds seeds per sequence (block 2: draft conditions, no W_cond, nothing appended);
for batch 1 and 8 sequences, over a context of --context committed entries (context * K cached keys per
layer and sequence).

Before timing, the same forward runs on the golden tiny drafter (tools/train/golden.py) and must match the
f32 reference within 3e-2 relative (bf16 matmuls; ~1.6e-2 seen), so the baseline computes the same thing.

Usage: python3 tools/cuda/drafter_eager.py [--out PATH]           (GPU, 8B drafter size)
       python3 tools/cuda/drafter_eager.py --device cpu --small   (smoke test at tiny sizes)
       python3 tools/cuda/drafter_eager.py --check [--device cpu] (only the golden check)
Prints one JSON line (prefixed "drafter_eager_json: ") and a short table; --out writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

BIG = dict(hidden=4096, layers=2, heads=32, kv_heads=8, head_dim=128, ffn=14336, draft_vocab=32000,
           vocab=128256, target_hidden=4096, slots=4, rank_topk=10, rank_classes=4, rank_hidden=256,
           context=512, eps=1e-5, theta=500000.0)
SMALL = dict(hidden=64, layers=2, heads=4, kv_heads=2, head_dim=16, ffn=96, draft_vocab=120, vocab=300,
             target_hidden=48, slots=4, rank_topk=10, rank_classes=4, rank_hidden=256, context=16,
             eps=1e-5, theta=10000.0)
BF16 = torch.bfloat16


def rms(x, w, eps):
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def lin(x, w):
    """A bf16 nn.Linear without bias; the result back in f32 for the f32 ops that follow."""
    return F.linear(x.to(BF16), w).float()


class Drafter:
    """Random bf16 weights of a SpecBlock drafter (names follow the checkpoint's, shortened)."""

    def __init__(self, c, device, gen, attention="sdpa"):
        self.c = c
        self.attention = attention
        h, d = c["hidden"], c["head_dim"]
        qd, kvd = c["heads"] * d, c["kv_heads"] * d

        def w(out, inner):
            # Uniform(-a, a) with a = 1/sqrt(inner): activations stay O(1) through the block.
            t = torch.rand(out, inner, device=device, generator=gen, dtype=torch.float32)
            return ((t * 2 - 1) * inner ** -0.5).to(BF16)

        def norm_w(n):
            return 1.0 + 0.1 * torch.rand(n, device=device, generator=gen)

        self.cond = w(h, 3 * c["target_hidden"])
        self.cond_norm, self.tok_norm, self.query_norm = norm_w(h), norm_w(h), norm_w(h)
        self.queries = torch.randn(c["slots"], h, device=device, generator=gen)
        self.fuse = w(h, 3 * h)
        self.layers = []
        for _ in range(c["layers"]):
            self.layers.append(dict(
                in_norm=norm_w(h), q=w(qd, h), k=w(kvd, h), v=w(kvd, h), o=w(h, qd), post_norm=norm_w(h),
                gate=w(c["ffn"], h), up=w(c["ffn"], h), down=w(h, c["ffn"])))
        self.shift = [w(h, 2 * h) for _ in range(c["layers"] - 1)]
        self.norm = norm_w(h)
        self.lm = w(c["draft_vocab"], h)
        self.rank1 = w(c["rank_hidden"], h + 15)
        self.rank2 = w(c["rank_classes"], c["rank_hidden"])
        # The target's embedding (borrowed in the real system); bf16 like the target's.
        self.embed = (torch.randn(c["vocab"], h, device=device, generator=gen) * 0.02).to(BF16)
        self.inv_freq = torch.tensor(
            [1.0 / (c["theta"] ** (2 * i / d)) for i in range(d // 2)], dtype=torch.float64
        ).float().to(device)

    def weight_bytes(self, with_cond):
        ws = [self.fuse, self.lm, self.rank1, self.rank2] + self.shift
        for l in self.layers:
            ws += [l["q"], l["k"], l["v"], l["o"], l["gate"], l["up"], l["down"]]
        if with_cond:
            ws.append(self.cond)
        return sum(t.numel() * t.element_size() for t in ws)

    def rope(self, x, pos):
        """x [..., R, n, d], pos [..., R] (f32): rotate-half RoPE in f32."""
        ang = pos.float()[..., None] * self.inv_freq  # [..., R, d/2]
        cos = torch.cat([ang.cos(), ang.cos()], -1)[..., None, :]
        sin = torch.cat([ang.sin(), ang.sin()], -1)[..., None, :]
        half = x.shape[-1] // 2
        rot = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * cos + rot * sin

    def forward(self, cond_in, feature, tokens, pos, cache, write_at, bias):
        """One block forward over B sequences x E entries x K slots.

        cond_in: [B, E, 3H_t] features (feature=True) or [B, E, H] drafter hiddens.
        tokens [B, E]; pos [B, E*K] positions; cache: per layer (k, v) of [B, n_kv, S, d] f32.
        write_at: cache row where a context forward writes its new keys (None for seeds: their own keys
        are appended after the keys they may see). bias: additive f32 mask [E*K, S_seen + own].
        Returns logits, rank logits, hiddens, top-k ids.
        """
        c = self.c
        b, e = tokens.shape
        k_slots, h, d = c["slots"], c["hidden"], c["head_dim"]
        nh, nkv = c["heads"], c["kv_heads"]
        r = e * k_slots
        if feature:
            cond = rms(lin(cond_in, self.cond), self.cond_norm, c["eps"])
        else:
            cond = rms(cond_in, self.cond_norm, c["eps"])
        tok = rms(self.embed[tokens], self.tok_norm, c["eps"])
        qn = rms(self.queries, self.query_norm, c["eps"])
        fused_in = torch.cat([cond[:, :, None].expand(b, e, k_slots, h), tok[:, :, None].expand(b, e, k_slots, h),
                              qn[None, None].expand(b, e, k_slots, h)], -1)
        x = lin(fused_in, self.fuse)  # [B, E, K, H]
        for li, layer in enumerate(self.layers):
            if li > 0:
                prev = torch.cat([x[:, :, :1], x[:, :, :-1]], 2)
                x = lin(torch.cat([x, prev], -1), self.shift[li - 1])
            xn = rms(x, layer["in_norm"], c["eps"]).reshape(b, r, h)
            q = self.rope(lin(xn, layer["q"]).view(b, r, nh, d), pos)
            kk = self.rope(lin(xn, layer["k"]).view(b, r, nkv, d), pos)
            vv = lin(xn, layer["v"]).view(b, r, nkv, d)
            ck, cv = cache[li]
            if write_at is not None:
                ck[:, :, write_at:write_at + r] = kk.transpose(1, 2)
                cv[:, :, write_at:write_at + r] = vv.transpose(1, 2)
                keys, vals = ck[:, :, :write_at + r], cv[:, :, :write_at + r]
            else:
                seen = bias.shape[1] - r
                keys = torch.cat([ck[:, :, :seen], kk.transpose(1, 2)], 2)
                vals = torch.cat([cv[:, :, :seen], vv.transpose(1, 2)], 2)
            att = None
            if self.attention == "sdpa":
                # f32 attention through SDPA (what Hugging Face's "sdpa" attention runs), GQA without
                # materialising repeated KV heads: query head j uses KV head j // (n_h / n_kv).
                try:
                    att = F.scaled_dot_product_attention(q.transpose(1, 2), keys, vals, attn_mask=bias,
                                                         scale=d ** -0.5, enable_gqa=True)  # [B, n_h, R, d]
                    att = att.transpose(1, 2).reshape(b, e, k_slots, nh * d)
                except (TypeError, RuntimeError) as err:
                    print(f"drafter_eager.py: SDPA failed ({err}); using explicit attention")
                    self.attention = "manual"
            if att is None:
                # Explicit scores / softmax / weighted sum, the GQA group as a broadcast dimension.
                g = nh // nkv
                qh = q.view(b, r, nkv, g, d).permute(0, 2, 3, 1, 4)  # [B, n_kv, g, R, d]
                scores = torch.matmul(qh, keys[:, :, None].transpose(-1, -2)) * d ** -0.5 + bias
                att = torch.matmul(torch.softmax(scores, -1), vals[:, :, None])  # [B, n_kv, g, R, d]
                att = att.permute(0, 3, 1, 2, 4).reshape(b, e, k_slots, nh * d)
            x = x + lin(att, layer["o"])
            xn = rms(x, layer["post_norm"], c["eps"])
            x = x + lin(F.silu(lin(xn, layer["gate"])) * lin(xn, layer["up"]), layer["down"])
        n = rms(x, self.norm, c["eps"])
        logits = lin(n, self.lm)
        top, top_ids = logits.topk(c["rank_topk"], -1)
        lse = torch.logsumexp(top, -1, keepdim=True)
        lp = top - lse
        feats = torch.cat([lp[..., :10], top[..., :1] - top[..., 1:2], top[..., :1] - top[..., 2:3],
                           top[..., :1] - top[..., 4:5], lp[..., :1].exp(),
                           -(lp.exp() * lp).sum(-1, keepdim=True)], -1)
        rank = lin(F.silu(lin(torch.cat([n, feats], -1), self.rank1)), self.rank2)
        return logits, rank, x, top_ids


def context_bias(s0, k_slots, device, entries=1):
    """Slot k of new entry i sees the s0 cached keys, the earlier new entries, and its own slots 0..k."""
    r = entries * k_slots
    bias = torch.full((r, s0 + r), float("-inf"), device=device)
    for row in range(r):
        bias[row, :s0 + row + 1] = 0.0
    return bias


def seed_bias(context, k_slots, seeds, device, visibility=None):
    """Seed i (visibility[i], default i mod K) sees the entries before the origin, the origin's slots
    0..visibility[i], and its own slots 0..k."""
    s0 = context * k_slots
    bias = torch.full((seeds * k_slots, s0 + seeds * k_slots), float("-inf"), device=device)
    for i in range(seeds):
        vis = visibility[i] if visibility is not None else i % k_slots
        for k in range(k_slots):
            row = i * k_slots + k
            bias[row, :(context - 1) * k_slots + vis + 1] = 0.0
            bias[row, s0 + i * k_slots:s0 + i * k_slots + k + 1] = 0.0
    return bias


def read_safetensors(path):
    """name -> tensor (F32, I64, BOOL), without the safetensors package."""
    import struct
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": torch.float32, "I64": torch.int64, "BOOL": torch.bool, "BF16": torch.bfloat16}
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, z = e["data_offsets"]
        buf = bytearray(raw[8 + n + a:8 + n + z])
        out[name] = torch.frombuffer(buf, dtype=dtypes[e["dtype"]]).reshape(e["shape"]) if z > a else \
            torch.zeros(e["shape"], dtype=dtypes[e["dtype"]])
    return out


def check_golden(root, device, attention="sdpa", strict=True):
    """Runs this script's forward on the golden tiny drafter (tools/train/golden.py): prefill, commit,
    seeds, against the f32 PyTorch reference. bf16 matmuls here, so agreement is ~1e-3..1e-2 relative."""
    fx = os.path.join(root, "tools/engine/tests/fixtures")
    cfg = json.load(open(os.path.join(fx, "drafter_tiny/config.json")))
    t = read_safetensors(os.path.join(fx, "drafter_tiny/model.safetensors"))
    emb = read_safetensors(os.path.join(fx, "drafter_tiny/embed.safetensors"))["model.embed_tokens.weight"]
    g = read_safetensors(os.path.join(fx, "drafter_golden.safetensors"))
    c = dict(hidden=cfg["hidden_size"], layers=cfg["num_hidden_layers"], heads=cfg["num_attention_heads"],
             kv_heads=cfg["num_key_value_heads"], head_dim=cfg["head_dim"], ffn=cfg["intermediate_size"],
             draft_vocab=cfg["draft_vocab_size"], vocab=cfg["vocab_size"], target_hidden=cfg["target_hidden_size"],
             slots=cfg["diffspec_draft_token_num"], rank_topk=cfg.get("rank_topk", 10),
             rank_classes=cfg["rank_classes"], rank_hidden=256, context=0, eps=cfg["rms_norm_eps"],
             theta=cfg["rope_theta"])
    m = Drafter.__new__(Drafter)
    m.c, m.attention = c, attention
    dev = lambda x: x.to(device)
    mat = lambda name: t[name].to(device).to(BF16)
    m.cond, m.fuse = mat("input_layer.condition_proj.weight"), mat("input_layer.fuse.weight")
    m.cond_norm = dev(t["input_layer.condition_norm.weight"])
    m.tok_norm = dev(t["input_layer.token_norm.weight"])
    m.query_norm = dev(t["input_layer.query_norm.weight"])
    m.queries = dev(t["input_layer.position_queries.weight"])
    m.layers = []
    for l in range(c["layers"]):
        p = f"layers.{l}."
        m.layers.append(dict(
            in_norm=dev(t[p + "input_layernorm.weight"]), post_norm=dev(t[p + "post_attention_layernorm.weight"]),
            q=mat(p + "self_attn.q_proj.weight"), k=mat(p + "self_attn.k_proj.weight"),
            v=mat(p + "self_attn.v_proj.weight"), o=mat(p + "self_attn.o_proj.weight"),
            gate=mat(p + "mlp.gate_proj.weight"), up=mat(p + "mlp.up_proj.weight"),
            down=mat(p + "mlp.down_proj.weight")))
    m.shift = [mat(f"shift_proj.{l}.weight") for l in range(c["layers"] - 1)]
    m.norm, m.lm = dev(t["norm.weight"]), mat("lm_head.weight")
    m.rank1, m.rank2 = mat("rank_head.0.weight"), mat("rank_head.2.weight")
    m.embed = emb.to(device).to(BF16)
    d = c["head_dim"]
    m.inv_freq = torch.tensor([1.0 / (c["theta"] ** (2 * i / d)) for i in range(d // 2)],
                              dtype=torch.float64).float().to(device)
    k_slots = c["slots"]
    cache = [(torch.zeros(1, c["kv_heads"], 16 * k_slots, d, device=device),
              torch.zeros(1, c["kv_heads"], 16 * k_slots, d, device=device)) for _ in range(c["layers"])]
    worst = 0.0

    def cmp(tag, out):
        nonlocal worst
        for name, got in [("logits", out[0]), ("rank_logits", out[1]), ("h", out[2])]:
            want = g[f"{tag}.{name}"].to(device).reshape(got.shape)
            err = ((got - want).norm() / want.norm()).item()
            worst = max(worst, err)
            print(f"check {tag}.{name}: rel err {err:.2e}")

    with torch.inference_mode():
        s0 = 0
        for tag in ["prefill", "commit"]:
            f = dev(g[f"{tag}.features"])[None]
            toks, bases = dev(g[f"{tag}.tokens"])[None], g[f"{tag}.bases"]
            e = toks.shape[1]
            pos = dev((bases[:, None] + torch.arange(k_slots)).reshape(1, -1))
            cmp(tag, m.forward(f, True, toks, pos, cache, s0, context_bias(s0, k_slots, device, e)))
            s0 += e * k_slots
        ctx = s0 // k_slots
        vis = g["seed.visibility"].tolist()
        toks = dev(g["seed.tokens"])[None]
        pos = dev((int(g["seed.origin_base"][0]) + torch.arange(k_slots)).repeat(len(vis))[None])
        out = m.forward(dev(g["seed.hidden"])[None], False, toks, pos, cache, None,
                        seed_bias(ctx, k_slots, len(vis), device, vis))
        cmp("seed", out)
    print(f"check: worst relative error {worst:.2e} (bf16 matmuls vs the f32 reference)")
    if worst > 3e-2:
        msg = "drafter_eager.py: the eager forward does not match the golden reference (> 3e-2)"
        if strict:
            raise SystemExit(msg)
        print("WARNING: " + msg)
    return worst


def timed(fn, device, warmup, iters):
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize()
        for _ in range(iters):
            a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            z.record()
            z.synchronize()
            times.append(a.elapsed_time(z) * 1e3)
    else:
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes (CPU smoke test)")
    ap.add_argument("--out", help="write the JSON here")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--check", action="store_true",
                    help="only compare this forward with the golden tiny drafter (tools/train/golden.py)")
    ap.add_argument("--attention", choices=["sdpa", "manual"], default="sdpa",
                    help="F.scaled_dot_product_attention (default; falls back to manual if it raises) or "
                         "explicit matmul/softmax")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("drafter_eager.py: no CUDA device (use --device cpu --small for a smoke test)")
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../..")
    # The timed forward is first checked against the golden tiny drafter (seconds), so the baseline is
    # known to compute the same thing.
    golden_worst = check_golden(root, device, args.attention, strict=args.check)
    if args.check:
        return
    c = dict(SMALL if args.small else BIG)
    gen = torch.Generator(device=device).manual_seed(1234)
    torch.manual_seed(1234)
    model = Drafter(c, device, gen, args.attention)
    k_slots, h, ctx = c["slots"], c["hidden"], c["context"]
    s0 = ctx * k_slots
    results = []
    with torch.inference_mode():
        for b in [int(x) for x in args.batches.split(",")]:
            # Committed context: random post-RoPE-like keys and values (their values do not change the
            # work), room for the one new entry of a context forward.
            cache = [(torch.randn(b, c["kv_heads"], s0 + k_slots, c["head_dim"], device=device, generator=gen),
                      torch.randn(b, c["kv_heads"], s0 + k_slots, c["head_dim"], device=device, generator=gen))
                     for _ in range(c["layers"])]
            feats = torch.randn(b, 1, 3 * c["target_hidden"], device=device, generator=gen)
            toks = torch.randint(0, c["vocab"], (b, 1), device=device, generator=gen)
            pos = (ctx + torch.arange(k_slots, device=device)).expand(b, k_slots)
            cbias = context_bias(s0, k_slots, device)
            out = model.forward(feats, True, toks, pos, cache, s0, cbias)
            assert all(torch.isfinite(t.float()).all() for t in out[:3]), "non-finite context outputs"
            us = timed(lambda: model.forward(feats, True, toks, pos, cache, s0, cbias), device,
                       args.warmup, args.iters)
            results.append(dict(case="context", batch=b, entries=1, rows=b * k_slots, median_us=us,
                                weight_bytes=model.weight_bytes(True)))
            e = args.seeds
            hid = torch.randn(b, e, h, device=device, generator=gen)
            stoks = torch.randint(0, c["vocab"], (b, e), device=device, generator=gen)
            spos = (ctx - 1 + torch.arange(k_slots, device=device)).repeat(e).expand(b, e * k_slots)
            sbias = seed_bias(ctx, k_slots, e, device)
            out = model.forward(hid, False, stoks, spos, cache, None, sbias)
            assert all(torch.isfinite(t.float()).all() for t in out[:3]), "non-finite seed outputs"
            us = timed(lambda: model.forward(hid, False, stoks, spos, cache, None, sbias), device,
                       args.warmup, args.iters)
            results.append(dict(case="seed", batch=b, entries=e, rows=b * e * k_slots, median_us=us,
                                weight_bytes=model.weight_bytes(False)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    doc = dict(tool="drafter_eager", device=name, torch=torch.__version__, sizes=c, context_entries=ctx,
               iters=args.iters, attention=model.attention, golden_check_rel_err=golden_worst,
               results=results)
    print("drafter_eager_json: " + json.dumps(doc))
    print(f"PyTorch eager drafter block forward on {name} (median of {args.iters})")
    print(f"{'case':<10} {'batch':>5} {'rows':>5} {'median us':>11}")
    for r in results:
        print(f"{r['case']:<10} {r['batch']:>5} {r['rows']:>5} {r['median_us']:>11.1f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Self-distilled training data with the target in PyTorch, for GPUs (the CPU path is `specblock datagen`,
which writes the same shards). The target answers the prompts, many sequences per forward; every fed
position's aux features and final normed hidden are kept.

    specblock tokenize --prompts data/prompts/sharegpt_train.jsonl --out data/prompts/sharegpt_train.ids.jsonl
    python tools/train/datagen_torch.py --prompt-ids data/prompts/sharegpt_train.ids.jsonl --out data/datagen \
        --model models/SmolLM2-135M-Instruct.Q4_1.gguf --device cuda --batch 256 --target-tokens 3000000

Shards (data.py reads them): `tokens` [T] I64, `loss_mask` [T] I64 (1 on answer tokens), `seq_offsets`
[n + 1] I64, `features` [T, 3H] F16, `final_hidden` [T, H] F16; the last token of each sequence was never
fed, so its rows are zero. `manifest.json` lists shards and done prompts, so a run resumes where it stopped.
Conversations are half greedy and half sampled at a temperature drawn from [0.5, 1.0) with top-p 0.95 (a
fixed hash of the seed and the prompt's index decides), as in `specblock datagen`. Prompts are taken in
order of length inside blocks of 16 batches, so a batch wastes little on padding.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from llama_torch import Llama  # noqa: E402


def unit(seed: int, index: int, salt: str) -> float:
    h = hashlib.sha256(f"{seed}:{index}:{salt}".encode()).digest()
    return int.from_bytes(h[:8], "little") / 2.0**64


def sample(logits: torch.Tensor, temps: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Greedy where temps == 0, else temperature + top-p 0.95 sampling. logits [B, V] f32."""
    greedy = logits.argmax(-1)
    t = temps.clamp(min=1e-6)[:, None]
    p = torch.softmax(logits / t, -1)
    sp, si = p.sort(-1, descending=True)
    keep = (sp.cumsum(-1) - sp) < 0.95
    sp = sp * keep
    pick = torch.multinomial(sp / sp.sum(-1, keepdim=True), 1, generator=gen)[:, 0]
    sampled = si.gather(-1, pick[:, None])[:, 0]
    return torch.where(temps > 0, sampled, greedy)


def generate_batch(model: Llama, prompts: list[list[int]], temps: list[float], max_new: int, gen):
    """Answers for a batch of prompts. Returns per sequence (tokens, prompt_len, features [n, 3H] f16,
    hidden [n, H] f16) with n = len(tokens) (the last row zero)."""
    c = model.cfg
    dev = model.device
    B = len(prompts)
    P = max(len(p) for p in prompts)
    cache = model.new_cache(B, P + max_new + 1)
    pads = [P - len(p) for p in prompts]
    toks = torch.tensor([[0] * pad + p for pad, p in zip(pads, prompts)], device=dev)
    pad_t = torch.tensor(pads, device=dev)
    valid = torch.ones(B, P + max_new + 1, dtype=torch.bool, device=dev)
    for i, pad in enumerate(pads):
        valid[i, :pad] = False
    pos = (torch.arange(P, device=dev)[None] - pad_t[:, None]).clamp(min=0)
    temps_t = torch.tensor(temps, device=dev, dtype=torch.float32)
    logits, feats, hid = model.forward(cache, toks, pos, 0, valid)
    feat_rows = [feats[i, pads[i]:].half() for i in range(B)]
    hid_rows = [hid[i, pads[i]:].half() for i in range(B)]
    out_tokens = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    new_feats, new_hid = [], []
    col = P
    for step in range(max_new):
        nxt = sample(logits, temps_t, gen)
        for i in range(B):
            if not done[i]:
                out_tokens[i].append(int(nxt[i]))
        done |= nxt == (c.eos if c.eos is not None else -1)
        if step + 1 == max_new or bool(done.all()):
            break
        logits, f, h = model.forward(cache, nxt[:, None], (col - pad_t)[:, None], col, valid)
        new_feats.append(f[:, 0].half())
        new_hid.append(h[:, 0].half())
        col += 1
    results = []
    F_new = torch.stack(new_feats, 1) if new_feats else None
    H_new = torch.stack(new_hid, 1) if new_hid else None
    for i in range(B):
        gen_toks = out_tokens[i]
        fed = len(gen_toks) - 1          # generated tokens that were fed back
        f = [feat_rows[i]] + ([F_new[i, :fed]] if fed > 0 else [])
        h = [hid_rows[i]] + ([H_new[i, :fed]] if fed > 0 else [])
        f.append(torch.zeros(1, 3 * c.hidden, dtype=torch.float16, device=dev))
        h.append(torch.zeros(1, c.hidden, dtype=torch.float16, device=dev))
        results.append((prompts[i] + gen_toks, len(prompts[i]), torch.cat(f).cpu(), torch.cat(h).cpu()))
    return results


def write_shard(out_dir, manifest, finished):
    from safetensors.torch import save_file
    index = len(manifest["shards"])
    toks, mask, offs, feats, hid = [], [], [0], [], []
    for idx, (tokens, plen, f, h) in finished:
        toks.append(torch.tensor(tokens, dtype=torch.int64))
        mask.append((torch.arange(len(tokens)) >= plen).long())
        offs.append(offs[-1] + len(tokens))
        feats.append(f)
        hid.append(h)
    name = f"shard-{index:05d}.safetensors"
    tmp = os.path.join(out_dir, name + ".partial")
    save_file({"tokens": torch.cat(toks), "loss_mask": torch.cat(mask), "seq_offsets": torch.tensor(offs),
               "features": torch.cat(feats).contiguous(), "final_hidden": torch.cat(hid).contiguous()}, tmp)
    os.replace(tmp, os.path.join(out_dir, name))
    manifest["shards"].append({"file": name, "sequences": len(finished), "tokens": offs[-1]})
    manifest["done_prompts"].extend(idx for idx, _ in finished)
    manifest["assistant_tokens"] += sum(len(t) - p for _, (t, p, _, _) in finished)
    with open(os.path.join(out_dir, "manifest.json.partial"), "w") as fh:
        json.dump(manifest, fh)
    os.replace(os.path.join(out_dir, "manifest.json.partial"), os.path.join(out_dir, "manifest.json"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-ids", required=True, help="JSON lines with prompt_ids (specblock tokenize)")
    ap.add_argument("--out", default="data/datagen")
    ap.add_argument("--model", default=None, help="the GGUF (default models/SmolLM2-135M-Instruct.Q4_1.gguf)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", choices=["bf16", "f32"], default=None, help="default bf16 on GPUs, f32 on CPUs")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--max-new", type=int, default=256)
    ap.add_argument("--max-prompt", type=int, default=1024, help="skip longer prompts")
    ap.add_argument("--target-tokens", type=int, default=3_000_000, help="stop after this many answer tokens")
    ap.add_argument("--shard-sequences", type=int, default=256)
    ap.add_argument("--seed", type=int, default=20261206)
    ap.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "f32")]
    model = Llama(args.model, device, dtype)
    os.makedirs(args.out, exist_ok=True)
    mpath = os.path.join(args.out, "manifest.json")
    manifest = json.load(open(mpath)) if os.path.exists(mpath) else {"shards": [], "done_prompts": [],
                                                                     "assistant_tokens": 0}
    done = set(manifest["done_prompts"])
    prompts = []
    with open(args.prompt_ids) as f:
        for i, line in enumerate(f):
            if args.limit is not None and i >= args.limit:
                break
            ids = json.loads(line)["prompt_ids"]
            if i not in done and 0 < len(ids) <= args.max_prompt:
                prompts.append((i, ids))
    print(f"datagen: {len(prompts)} prompts to answer ({len(done)} done, {manifest['assistant_tokens']} answer "
          f"tokens so far); target {args.target_tokens}; {device} {dtype}", flush=True)
    gen = torch.Generator(device=device).manual_seed(args.seed + len(done))
    t0, start_tokens = time.time(), manifest["assistant_tokens"]
    finished = []
    block = args.batch * 16
    for b0 in range(0, len(prompts), block):
        chunk = sorted(prompts[b0:b0 + block], key=lambda p: len(p[1]))
        for s in range(0, len(chunk), args.batch):
            if manifest["assistant_tokens"] + sum(len(t) - p for _, (t, p, _, _) in finished) >= args.target_tokens:
                break
            batch = chunk[s:s + args.batch]
            temps = [0.0 if unit(args.seed, i, "greedy") < 0.5 else 0.5 + 0.5 * unit(args.seed, i, "t")
                     for i, _ in batch]
            res = generate_batch(model, [p for _, p in batch], temps, args.max_new, gen)
            finished.extend(zip([i for i, _ in batch], res))
            if len(finished) >= args.shard_sequences:
                write_shard(args.out, manifest, finished)
                finished = []
                rate = (manifest["assistant_tokens"] - start_tokens) / (time.time() - t0)
                print(f"datagen: {manifest['assistant_tokens']}/{args.target_tokens} answer tokens, "
                      f"{rate:.0f} tok/s", flush=True)
    if finished:
        write_shard(args.out, manifest, finished)
    rate = (manifest["assistant_tokens"] - start_tokens) / max(1e-9, time.time() - t0)
    print(f"datagen: {manifest['assistant_tokens']} answer tokens in {len(manifest['shards'])} shards "
          f"({rate:.0f} tok/s this run)", flush=True)


if __name__ == "__main__":
    main()

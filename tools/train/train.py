#!/usr/bin/env python3
"""Drafter trainer: SpecBlock (multi-block test-time training) or the EAGLE-3 baseline (training-time test),
on the self-distilled `specblock datagen` shards and the draft vocabulary.

    python tools/train/train.py --method specblock|eagle3 --data data/datagen \
        --vocab data/vocab/draft_vocab.json --out runs/NAME --steps N [--batch B] [--lr LR] [--resume] \
        [--export DIR]

Progress lines every --log-every steps (loss, draft / rank loss, per-slot accuracy on the training batch,
windows/s, tokens/s, ETA); held-out metrics every --eval-every steps (per-slot accuracy and the acceptance
proxy 1 + correct greedy prefix); a checkpoint (model, optimiser, schedule, step) every --ckpt-every steps and
at the end in OUT/ckpt.pt; `--resume` continues from it. `--export DIR` writes the runtime checkpoint
(config.json + model.safetensors, the authors' / EAGLE-3 names, bf16 weights, d2t i64 and t2d bool) that
`specblock generate --drafter DIR` loads; with --steps 0 --resume it exports an existing run.

Runs on the CPU, or unchanged on a CUDA GPU (--device cuda; the default picks CUDA when present). The forward
runs under bf16 autocast by default (--amp bf16: about 2.5x faster on this AVX-512-BF16 CPU; the weights,
optimiser state, labels and losses stay f32); --amp off trains all in f32.
Recipe (spec/specblock-method.md §6, DESIGN §5-6): AdamW betas (0.9, 0.95), weight decay 0, gradient-norm
clip 0.5, linear warmup then linear decay to 0; SpecBlock 3 blocks, K 4, slot weight 0.8, rank weight 1,
rank budget 10 per class; EAGLE-3 7 TTT steps, step weight 0.8.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import losses  # noqa: E402
from data import Dataset, DraftVocab, load_target_embedding, target_labels  # noqa: E402
from eagle3_model import Eagle3Config, Eagle3Drafter  # noqa: E402
from specblock_model import SpecBlockConfig, SpecBlockDrafter  # noqa: E402

TARGET = dict(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
              intermediate_size=1536, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=100000.0)


def default_config(method: str, draft_vocab_size: int, layers: int | None = None):
    """SmolLM2-135M drafters (DESIGN §6): SpecBlock 2 layers K 4, EAGLE-3 1 layer, H 576."""
    if method == "specblock":
        return SpecBlockConfig(**TARGET, num_hidden_layers=layers or 2, draft_vocab_size=draft_vocab_size,
                               diffspec_draft_token_num=4, rank_classes=4, target_hidden_size=576,
                               aux_layer_ids=[1, 14, 26])
    return Eagle3Config(**TARGET, num_hidden_layers=1, draft_vocab_size=draft_vocab_size,
                        target_hidden_size=576,
                        extra={"model_type": "llama", "tie_word_embeddings": False,
                               "max_position_embeddings": 8192})


def build_model(method: str, cfg, vocab: DraftVocab, embed: torch.Tensor, seed: int = 0):
    torch.manual_seed(seed)
    if method == "specblock":
        m = SpecBlockDrafter(cfg)
        with torch.no_grad():
            m.input_layer.position_queries.weight.normal_(0.0, 0.02)
    else:
        m = Eagle3Drafter(cfg)
    m.d2t.copy_(vocab.d2t)
    m.t2d.copy_(vocab.t2d)
    m.set_embedding(embed)
    return m


def window_loss(method, model, win, labels, args, gen):
    if method == "specblock":
        return losses.specblock_window_loss(model, win, labels, blocks=args.blocks, gen=gen,
                                            slot_weight=args.slot_weight, rank_weight=args.rank_weight,
                                            rank_budget=args.rank_budget)
    return losses.eagle3_window_loss(model, win, labels, steps=args.ttt_steps, step_weight=args.slot_weight)


def to_device(win, device):
    return {k: v.to(device) for k, v in win.items()}


def lr_lambda(warmup: int, total: int):
    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def export(model, out_dir: str, dtype=torch.bfloat16):
    """config.json + model.safetensors (float tensors in `dtype`, d2t int64, t2d bool; no embedding)."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        sd[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    save_file(sd, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model.config.to_dict(), f, indent=2)


def autocast(args, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")


def evaluate(method, model, ds, embed, vocab, args, device):
    """Per-slot (per-step) accuracy and the acceptance proxy on up to --eval-windows held-out windows."""
    model.eval()
    correct = counted = None
    acc_sum, acc_n = 0.0, 0
    with torch.no_grad(), autocast(args, device):
        for w in ds.eval[: args.eval_windows]:
            win = to_device(ds.load(w), device)
            labels = target_labels(win["hidden"], win["loss_mask"], embed, vocab, args._embed_draft)
            if method == "specblock":
                _, st = losses.specblock_window_loss(model, win, labels, blocks=args.eval_blocks,
                                                     Ms=[model.config.K] * (args.eval_blocks - 1),
                                                     rank_weight=0.0)
            else:
                _, st = losses.eagle3_window_loss(model, win, labels, steps=args.ttt_steps)
            c = torch.cat(st["correct"]).float().cpu()
            n = torch.cat(st["counted"]).float().cpu()
            correct = c if correct is None else correct + c
            counted = n if counted is None else counted + n
            a, k = losses.accept_proxy(st)
            acc_sum += a
            acc_n += k
    model.train()
    if correct is None:
        return None
    return (correct / counted.clamp(min=1)).tolist(), acc_sum / max(1, acc_n)


def fmt_acc(a):
    return "[" + " ".join(f"{x:.3f}" for x in a) + "]"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["specblock", "eagle3"], required=True)
    ap.add_argument("--data", default="data/datagen")
    ap.add_argument("--vocab", default="data/vocab/draft_vocab.json")
    ap.add_argument("--embed", default=None, help="target embedding: HF model.safetensors or the GGUF")
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=4, help="windows per optimiser step")
    ap.add_argument("--max-len", type=int, default=256, help="tokens per window")
    ap.add_argument("--lr", type=float, default=None, help="default 5e-5 (specblock) / 1e-4 (eagle3)")
    ap.add_argument("--warmup", type=int, default=500, help="capped at steps / 10")
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--layers", type=int, default=None, help="SpecBlock decoder layers (default 2)")
    ap.add_argument("--model-config", default=None,
                    help="JSON object of config fields overriding the default shape (e.g. for tests)")
    ap.add_argument("--blocks", type=int, default=3, help="SpecBlock TTT blocks")
    ap.add_argument("--eval-blocks", type=int, default=2, help="SpecBlock blocks in held-out metrics")
    ap.add_argument("--ttt-steps", type=int, default=7, help="EAGLE-3 TTT steps")
    ap.add_argument("--slot-weight", type=float, default=0.8)
    ap.add_argument("--rank-weight", type=float, default=1.0)
    ap.add_argument("--rank-budget", type=float, default=10.0)
    ap.add_argument("--eval-every-seq", type=int, default=50, help="hold out 1 sequence in N")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--max-shards", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--amp", choices=["bf16", "off"], default="bf16",
                    help="bf16 autocast of the forward (f32 master weights, f32 losses); off = all f32")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export", default=None, metavar="DIR")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # The forward modules build their masks and RoPE tables with plain factories: make them land on `device`.
    torch.set_default_device(device)
    lr = args.lr if args.lr is not None else (5e-5 if args.method == "specblock" else 1e-4)

    embed = load_target_embedding(args.embed).to(device)
    vocab = DraftVocab.from_json(args.vocab, embed.shape[0])
    vocab.t2d, vocab.t2d_index, vocab.ids, vocab.d2t = (x.to(device) for x in
                                                        (vocab.t2d, vocab.t2d_index, vocab.ids, vocab.d2t))
    args._embed_draft = embed[vocab.ids]
    cfg = default_config(args.method, vocab.size, args.layers)
    if args.model_config:
        d = cfg.to_dict()
        d.update(json.loads(args.model_config))
        cfg = type(cfg).from_dict(d)
    model = build_model(args.method, cfg, vocab, embed, args.seed).to(device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"{args.method}: {sum(p.numel() for p in params) / 1e6:.2f} M trained parameters on {device}, "
          f"amp {args.amp}", flush=True)
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, min(args.warmup, args.steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, max(args.steps, 1)))

    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    start = 0
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        assert ck["method"] == args.method, f"checkpoint is {ck['method']}"
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        start = ck["step"]
        print(f"resumed from {ckpt_path} at step {start}", flush=True)

    def save(step):
        tmp = ckpt_path + ".partial"
        torch.save({"method": args.method, "config": cfg.to_dict(), "model": model.state_dict(),
                    "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
                    "args": {k: v for k, v in vars(args).items() if not k.startswith("_")}}, tmp)
        os.replace(tmp, ckpt_path)

    if start < args.steps:
        ds = Dataset(args.data, max_len=args.max_len, eval_every=args.eval_every_seq, max_shards=args.max_shards)
        print(f"data: {ds.num_sequences} sequences, {len(ds.train)} train / {len(ds.eval)} held-out windows "
              f"of <= {args.max_len} tokens", flush=True)
        stream = ds.batches(args.batch, args.seed, start)
        t0 = time.time()
        win_done = tok_done = 0
        agg = {"loss": 0.0, "draft": 0.0, "rank": 0.0, "n": 0}
        acc_c = acc_n = None
        for step in range(start, args.steps):
            batch = next(stream)
            gen = torch.Generator(device="cpu").manual_seed(args.seed * 1_000_003 + step)
            opt.zero_grad(set_to_none=True)
            for win in batch:
                win = to_device(win, device)
                labels = target_labels(win["hidden"], win["loss_mask"], embed, vocab, args._embed_draft)
                with autocast(args, device):
                    loss, st = window_loss(args.method, model, win, labels, args, gen)
                (loss / len(batch)).backward()
                agg["loss"] += float(loss.detach())
                agg["draft"] += st["draft_loss"]
                agg["rank"] += st["rank_loss"]
                agg["n"] += 1
                comb = (lambda xs: torch.stack(xs).sum(0)) if args.method == "specblock" else torch.cat
                c = comb([x.float() for x in st["correct"]]).cpu()
                n = comb([x.float() for x in st["counted"]]).cpu()
                acc_c = c if acc_c is None else acc_c + c
                acc_n = n if acc_n is None else acc_n + n
                win_done += 1
                tok_done += win["tokens"].shape[0]
            gnorm = torch.nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            sched.step()
            done = step + 1
            if done % args.log_every == 0 or done == args.steps:
                dt = time.time() - t0
                sps = (done - start) / dt
                eta = (args.steps - done) / max(sps, 1e-9)
                k = max(agg["n"], 1)
                print(f"step {done}/{args.steps} loss {agg['loss'] / k:.4f} draft {agg['draft'] / k:.4f} "
                      f"rank {agg['rank'] / k:.4f} gnorm {float(gnorm):.3f} lr {sched.get_last_lr()[0]:.2e} "
                      f"train-acc {fmt_acc((acc_c / acc_n.clamp(min=1)).tolist())} | {sps:.3f} steps/s "
                      f"{tok_done / dt:.0f} tok/s ETA {eta / 60:.1f} min", flush=True)
                agg = {"loss": 0.0, "draft": 0.0, "rank": 0.0, "n": 0}
                acc_c = acc_n = None
            if done % args.eval_every == 0 or done == args.steps:
                r = evaluate(args.method, model, ds, embed, vocab, args, device)
                if r is not None:
                    print(f"eval step {done}: acc {fmt_acc(r[0])} accept-proxy {r[1]:.3f}", flush=True)
            if done % args.ckpt_every == 0 or done == args.steps:
                save(done)
    if args.export:
        export(model, args.export)
        print(f"exported {args.method} drafter to {args.export}", flush=True)


if __name__ == "__main__":
    main()

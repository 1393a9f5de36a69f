#!/usr/bin/env python3
"""Drafter trainer: SpecBlock (multi-block test-time training) or the EAGLE-3 baseline (training-time test),
on the self-distilled `specblock datagen` shards.

    python tools/train/train.py --method specblock|eagle3 --data data/datagen --out runs/NAME
        [--minutes M | --steps N] [--init-from models/drafters/NAME] [--export-best models/drafters/NAME]
        [--resume] [--export DIR] [--batch B] [--lr LR] ...
    torchrun --nproc_per_node 2 tools/train/train.py ...     (data-parallel: gloo on CPUs, nccl on GPUs)

Budget: `--minutes` (wall clock, this run), `--tokens` and/or `--steps`; the learning-rate schedule (warmup, then cosine
or linear decay to `--min-lr` x peak) runs over whichever budget ends first, measured as progress in [0, 1].

Continuing across runs: `--init-from DIR` warm-starts from an exported drafter (its weights, and its draft
vocabulary, which then overrides --vocab); `--resume` continues this run from OUT/ckpt.pt (written every
--ckpt-minutes, every --ckpt-every steps, at the end, and on SIGINT/SIGTERM), with its schedule, step,
elapsed time and best metric; when that run had finished (its budget spent) and --init-from is given, a new
run starts from the --init-from weights with the checkpoint's optimizer moments instead (`--resume-optimizer`
asks for that explicitly), so that a warm restart does not re-estimate Adam's moments from scratch. Each run
shuffles the data its own way. `--export-best DIR` evaluates the starting weights, then after every held-out
evaluation (every --eval-every steps or --eval-minutes) appends the point to DIR/curve.jsonl, and writes
the weights into DIR (config.json, model.safetensors) only when the acceptance proxy beats the best so far;
DIR/training_state.json counts the tokens seen over all runs, and DIR/curve.svg plots the curve.

Initialisation of a new drafter (measured in docs/training.md): `--head-init target` copies the target's tied
embedding rows of the draft vocabulary into the draft LM head and the target's final norm into the drafter's
(`--head frozen` keeps them fixed); `--layer-init target` copies the target's last decoder layers where the
shapes match. Curriculum: `--chain-mask on|off|A` and `--rank-loss on|off|A` switch SpecBlock's valid-prefix
mask and rank loss on from the start, never, or once held-out slot-1 accuracy reaches A.

Progress lines every --log-every steps (loss, draft / rank loss, per-slot accuracy on the training batch,
tokens/s, ETA); held-out metrics (per-slot accuracy and the acceptance proxy 1 + correct greedy prefix).
Runs on the CPU, or unchanged on a CUDA GPU (--device cuda; the default picks CUDA when present). The
forward runs under bf16 autocast with --amp bf16 (faster on GPUs and CPUs with AMX; the weights,
optimiser state, labels and losses stay f32); --amp off trains all in f32.
Fixed recipe parts (docs/training.md): AdamW betas (0.9, 0.95), weight decay 0, gradient-norm
clip 0.5; SpecBlock 3 blocks, K 4, slot weight 0.8, rank weight 1, rank budget 10 per class; EAGLE-3 7 TTT
steps, step weight 0.8.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import feature_scale  # noqa: E402
import losses  # noqa: E402
import run_state  # noqa: E402
import target  # noqa: E402
from data import Dataset, DraftVocab, target_labels  # noqa: E402
from dist_utils import Dist  # noqa: E402
from eagle3_model import Eagle3Config, Eagle3Drafter  # noqa: E402
from specblock_model import SpecBlockConfig, SpecBlockDrafter  # noqa: E402

TARGET = dict(hidden_size=576, num_attention_heads=9, num_key_value_heads=3, head_dim=64,
              intermediate_size=1536, vocab_size=49152, rms_norm_eps=1e-5, rope_theta=100000.0)


def default_config(method: str, draft_vocab_size: int, layers: int | None = None):
    """SmolLM2-135M drafters (docs/design.md): SpecBlock 2 layers K 4, EAGLE-3 1 layer, H 576."""
    if method == "specblock":
        return SpecBlockConfig(**TARGET, num_hidden_layers=layers or 2, draft_vocab_size=draft_vocab_size,
                               diffspec_draft_token_num=4, rank_classes=4, target_hidden_size=576,
                               aux_layer_ids=[1, 14, 26])
    return Eagle3Config(**TARGET, num_hidden_layers=1, draft_vocab_size=draft_vocab_size,
                        target_hidden_size=576,
                        extra={"model_type": "llama", "tie_word_embeddings": False,
                               "max_position_embeddings": 8192})


def config_class(method: str):
    return SpecBlockConfig if method == "specblock" else Eagle3Config


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


def exported_weights(model_dir: str) -> dict:
    """The f32 state dict of an exported drafter (model.safetensors; float tensors widened to f32)."""
    from safetensors.torch import load_file
    sd = load_file(os.path.join(model_dir, "model.safetensors"))
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def vocab_of(weights: dict, vocab_size: int) -> DraftVocab:
    """The draft vocabulary stored in a checkpoint's d2t (draft id i -> target id i + d2t[i])."""
    d2t = weights["d2t"].to(torch.int64)
    return DraftVocab((torch.arange(len(d2t)) + d2t).tolist(), vocab_size)


class WindowLoss(torch.nn.Module):
    """The drafter with one window's training loss as its forward, so DistributedDataParallel can wrap it
    (the losses call the drafter's sub-modules directly)."""

    def __init__(self, method: str, model):
        super().__init__()
        self.method = method
        self.model = model

    def forward(self, win, labels, Ms, args, chain: bool, rank_weight: float):
        if self.method == "specblock":
            return losses.specblock_window_loss(self.model, win, labels, blocks=args.blocks, Ms=Ms,
                                                slot_weight=args.slot_weight, rank_weight=rank_weight,
                                                rank_budget=args.rank_budget, chain_mask=chain)
        return losses.eagle3_window_loss(self.model, win, labels, steps=args.ttt_steps,
                                         step_weight=args.slot_weight)


def to_device(win, device, scale=None):
    """The window on `device`; with `scale` (feature_scale.py), its features in training form."""
    win = {k: v.to(device) for k, v in win.items()}
    if scale is not None:
        win["features"] = win["features"] * scale
    return win


def lr_factor(progress: float, warmup: float, schedule: str, min_ratio: float) -> float:
    """Learning rate over the peak at `progress` in [0, 1] of the run: linear warmup over the first
    `warmup` of it, then cosine (or linear) decay to `min_ratio`."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 1e-3)
    t = min(1.0, (progress - warmup) / max(1e-9, 1.0 - warmup))
    decay = 0.5 * (1.0 + math.cos(math.pi * t)) if schedule == "cosine" else 1.0 - t
    return min_ratio + (1.0 - min_ratio) * decay


def export(model, out_dir: str, dtype=torch.bfloat16, fold=None):
    """config.json + model.safetensors (float tensors in `dtype`, d2t int64, t2d bool; no embedding).
    `fold` maps the training-form state dict to the weights of raw features (feature_scale.folded)."""
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    state = model.state_dict()
    if fold is not None:
        state = fold(state)
    sd = {}
    for k, v in state.items():
        v = v.detach().cpu()
        sd[k] = (v.to(dtype) if v.is_floating_point() else v).contiguous()
    tmp = os.path.join(out_dir, "model.safetensors.partial")
    save_file(sd, tmp)
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(model.config.to_dict(), f, indent=2)


def autocast(args, device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")


GREEDY_MATCH = 0.98


def greedy_window(tokens: torch.Tensor, arg_d: torch.Tensor, pm: torch.Tensor, vocab: DraftVocab) -> bool:
    """Whether a window's answer was decoded greedily: at least GREEDY_MATCH of its counted next tokens are
    the target's argmax. Datagen answers half the prompts greedily and samples the other half at T in
    [0.5, 1); a runtime measured at T = 0 only meets greedy contexts, so its first-token acceptance compares
    with the accuracy on these windows (sampled ones match the argmax far less often; the stored f16 hidden
    can flip a near-tie, hence the margin)."""
    rows = torch.nonzero(pm).flatten()
    if rows.numel() == 0:
        return False
    match = arg_d[rows] == vocab.t2d_index[tokens[rows + 1]]
    return float(match.float().mean()) >= GREEDY_MATCH


def evaluate(method, model, ds, embed, vocab, args, dist: Dist):
    """Per-slot (per-step) accuracy and the acceptance proxy over the first --eval-windows held-out windows,
    split over the ranks, and the per-slot accuracy on the greedy ones among them (greedy_window).
    Returns (accuracies, proxy, greedy accuracies) or None without held-out windows."""
    model.eval()
    device = dist.device
    correct = counted = None
    g_correct = g_counted = None
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad(), autocast(args, device):
        for w in dist.shard(ds.eval[: args.eval_windows]):
            win = to_device(ds.load(w), device, args._feature_scale)
            labels = target_labels(win["hidden"], win["loss_mask"], embed, vocab, args._embed_draft)
            if method == "specblock":
                _, st = losses.specblock_window_loss(model, win, labels, blocks=args.eval_blocks,
                                                     Ms=[model.config.K] * (args.eval_blocks - 1),
                                                     rank_weight=0.0)
            else:
                _, st = losses.eagle3_window_loss(model, win, labels, steps=args.ttt_steps)
            c = torch.cat(st["correct"]).double()
            n = torch.cat(st["counted"]).double()
            correct = c if correct is None else correct + c
            counted = n if counted is None else counted + n
            greedy = float(greedy_window(win["tokens"], labels[1], labels[2], vocab))
            g_correct = c * greedy if g_correct is None else g_correct + c * greedy
            g_counted = n * greedy if g_counted is None else g_counted + n * greedy
            a, k = losses.accept_proxy(st)
            sums += torch.tensor([a, k], dtype=torch.float64, device=device)
    model.train()
    width = (args.eval_blocks * model.config.K) if method == "specblock" else args.ttt_steps
    if correct is None:
        correct = torch.zeros(width, dtype=torch.float64, device=device)
        counted = torch.zeros(width, dtype=torch.float64, device=device)
        g_correct = torch.zeros_like(correct)
        g_counted = torch.zeros_like(counted)
    for x in (correct, counted, g_correct, g_counted, sums):
        dist.sum(x)
    if float(sums[1]) == 0:
        return None
    return ((correct / counted.clamp(min=1)).tolist(), float(sums[0] / sums[1]),
            (g_correct / g_counted.clamp(min=1)).tolist())


def cpu_bf16_is_faster(cpuinfo: str | None = None) -> bool:
    """Whether bf16 autocast should beat f32 on this CPU (`cpuinfo`: the text of /proc/cpuinfo).
    - Without native bf16 arithmetic autocast emulates it, about 10x slower than f32 (AVX2-only AMD EPYC:
      2.5 against 27 tokens/s).
    - AVX512_BF16 without AMX on Intel: `vdpbf16ps` runs at half the rate of f32 FMA (the engine's probe,
      docs/performance.md), and bf16 autocast trained SpecBlock at 271 against 370 tokens/s in f32
      (Xeon, Emerald Rapids, 2 cores; docs/training.md). The same rule as the engine's `Isa::detect`:
      bf16 pairs only on AMD, where the instruction runs at full rate (Zen 4: bf16 autocast trained SpecBlock
      at 328-340 against 214-249 tokens/s in f32; docs/training.md).
    - AMX tiles multiply bf16 at many times the f32 rate."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    if "amx_bf16" in cpuinfo:
        return True
    return "avx512_bf16" in cpuinfo and "AuthenticAMD" in cpuinfo


def fmt_acc(a):
    return "[" + " ".join(f"{x:.3f}" for x in a) + "]"


def parse_switch(v: str):
    """on / off / a slot-1 accuracy threshold."""
    if v in ("on", "off"):
        return v
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected on, off or an accuracy in [0, 1], got {v!r}")
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"accuracy threshold {x} is outside [0, 1]")
    return x


def switch_state(v, acc1: float | None) -> bool:
    if v == "on":
        return True
    if v == "off":
        return False
    return acc1 is not None and acc1 >= v


def run_finished(ck) -> bool:
    """Whether a checkpoint's run ended by its budget (not interrupted): marked at the end, or, for checkpoints
    written before the mark, its elapsed time or steps reached the budget it was started with."""
    run, a = ck.get("run", {}), ck.get("args", {})
    if "finished" in run:
        return bool(run["finished"])
    by_time = a.get("minutes") and run.get("elapsed", 0) >= a["minutes"] * 60 - 1
    by_steps = a.get("steps") and run.get("step", 0) >= a["steps"]
    return bool(by_time or by_steps)


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["specblock", "eagle3"], required=True)
    ap.add_argument("--data", default="data/datagen",
                    help="datagen directory, or several separated by commas (e.g. data/datagen,data/datagen-turns)")
    ap.add_argument("--vocab", default="data/vocab/draft_vocab.json",
                    help="draft vocabulary JSON (ignored with --init-from: the checkpoint's d2t is used)")
    ap.add_argument("--embed", default=None, help="target checkpoint: the GGUF or an HF model.safetensors")
    ap.add_argument("--out", required=True, help="run directory (ckpt.pt)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps in this run")
    ap.add_argument("--minutes", type=float, default=None, help="wall-clock budget of this run")
    ap.add_argument("--tokens", type=int, default=None, help="token budget of this run (window tokens)")
    ap.add_argument("--batch", type=int, default=4, help="windows per optimiser step (over all ranks)")
    ap.add_argument("--max-len", type=int, default=256, help="tokens per window")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default 5e-4)")
    ap.add_argument("--min-lr", type=float, default=0.1, help="final learning rate, as a fraction of the peak")
    ap.add_argument("--warmup", type=float, default=0.03,
                    help="warmup: a fraction of the run (< 1) or a number of steps (>= 1)")
    ap.add_argument("--schedule", choices=["cosine", "linear"], default="cosine")
    ap.add_argument("--clip", type=float, default=0.5)
    ap.add_argument("--layers", type=int, default=None, help="SpecBlock decoder layers (default 2)")
    ap.add_argument("--model-config", default=None,
                    help="JSON object of config fields overriding the default shape (e.g. for tests)")
    ap.add_argument("--init-from", default=None, metavar="DIR", help="warm start from an exported drafter")
    ap.add_argument("--head-init", choices=["target", "random"], default="target",
                    help="new drafters: draft LM head and final norm from the target, or random")
    ap.add_argument("--head", choices=["trainable", "frozen"], default="trainable")
    ap.add_argument("--layer-init", choices=["target", "random"], default="random",
                    help="new drafters: decoder layers from the target's last layers, or random")
    ap.add_argument("--chain-mask", type=parse_switch, default="on", help="SpecBlock valid-prefix mask")
    ap.add_argument("--rank-loss", type=parse_switch, default="on", help="SpecBlock rank loss")
    ap.add_argument("--blocks", type=int, default=3, help="SpecBlock TTT blocks")
    ap.add_argument("--eval-blocks", type=int, default=2, help="SpecBlock blocks in held-out metrics")
    ap.add_argument("--ttt-steps", type=int, default=7, help="EAGLE-3 TTT steps")
    ap.add_argument("--slot-weight", type=float, default=0.8)
    ap.add_argument("--rank-weight", type=float, default=1.0)
    ap.add_argument("--rank-budget", type=float, default=10.0)
    ap.add_argument("--eval-every-seq", type=int, default=50, help="hold out 1 sequence in N")
    ap.add_argument("--eval-every", type=int, default=200, help="held-out evaluation every N steps")
    ap.add_argument("--eval-minutes", type=float, default=None, help="... or every M minutes")
    ap.add_argument("--eval-windows", type=int, default=32)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--max-shards", type=int, default=None, help="use at most N shards of each directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process")
    ap.add_argument("--device", default=None)
    ap.add_argument("--amp", choices=["auto", "bf16", "off"], default="auto",
                    help="bf16 autocast of the forward (f32 master weights, f32 losses); off = all f32; auto = "
                         "bf16 on GPUs, on CPUs with AMX and on AMD CPUs with AVX512_BF16, else off")
    ap.add_argument("--feature-scale", choices=["rms", "off"], default="rms",
                    help="rms: train on per-dimension standardised target features, the first projection's "
                         "weights rescaled to match and folded back on export (feature_scale.py); off: raw")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--resume-optimizer", action="store_true",
                    help="a new run (new budget and schedule) from the --init-from weights, with the optimizer's "
                         "moments of OUT/ckpt.pt (the last run's): skips the re-estimation of Adam's moments that "
                         "costs every warm restart a dip")
    ap.add_argument("--export", default=None, metavar="DIR", help="export the final weights here")
    ap.add_argument("--export-best", default=None, metavar="DIR",
                    help="drafter directory to keep the best weights, the learning curve and the state in")
    ap.add_argument("--note", default="", help="free text stored with this run in training_state.json")
    return ap


class Stop:
    """SIGINT / SIGTERM: finish the current step, checkpoint, export, exit."""

    def __init__(self):
        self.requested = False

    def install(self):
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._handler)

    def _handler(self, signum, frame):
        self.requested = True
        print(f"signal {signum}: stopping after this step", flush=True)


def main(argv=None):
    args = parser().parse_args(argv)
    if args.steps is None and args.minutes is None and args.tokens is None:
        args.steps = 1000
    dist = Dist.from_env(args.device)
    device = dist.device
    if args.amp == "auto":
        args.amp = "bf16" if device.type == "cuda" or cpu_bf16_is_faster() else "off"
    log = (lambda *a: print(*a, flush=True)) if dist.main else (lambda *a: None)
    if args.threads:
        torch.set_num_threads(args.threads)
    elif dist.enabled and device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))
    # The forward modules build their masks and RoPE tables with plain factories: make them land on `device`.
    torch.set_default_device(device)
    lr = args.lr if args.lr is not None else 5e-4

    init_weights = exported_weights(args.init_from) if args.init_from else None
    need_layers = args.layer_init == "target" and init_weights is None
    tensors = target.load_tensors(args.embed, lambda n: n in ("model.embed_tokens.weight", "model.norm.weight")
                                  or (need_layers and n.startswith("model.layers.")))
    embed = tensors["model.embed_tokens.weight"]
    if init_weights is not None:
        vocab = vocab_of(init_weights, embed.shape[0])
    else:
        vocab = DraftVocab.from_json(args.vocab, embed.shape[0])
    embed = embed.to(device)
    vocab.t2d, vocab.t2d_index, vocab.ids, vocab.d2t = (x.to(device) for x in
                                                        (vocab.t2d, vocab.t2d_index, vocab.ids, vocab.d2t))
    args._embed_draft = embed[vocab.ids]
    if args.init_from:
        cfg = config_class(args.method).from_json(os.path.join(args.init_from, "config.json"))
    else:
        cfg = default_config(args.method, vocab.size, args.layers)
    if args.model_config:
        d = cfg.to_dict()
        d.update(json.loads(args.model_config))
        cfg = type(cfg).from_dict(d)
    model = build_model(args.method, cfg, vocab, embed, args.seed).to(device)
    if init_weights is not None:
        missing = model.load_state_dict(init_weights, strict=False)
        bad = [k for k in missing.missing_keys if k != "embed_tokens"] + list(missing.unexpected_keys)
        if bad:
            sys.exit(f"--init-from {args.init_from}: checkpoint does not match the {args.method} drafter: {bad}")
        log(f"warm start from {args.init_from}")
    else:
        if args.head_init == "target":
            target.init_head(model, tensors, vocab.ids)
        if args.layer_init == "target":
            for line in target.init_layers(model, tensors, args.method):
                log(f"  init {line}")
    del tensors
    if args.head == "frozen":
        model.lm_head.weight.requires_grad_(False)
        model.norm.weight.requires_grad_(False)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    log(f"{args.method}: {sum(p.numel() for p in params) / 1e6:.2f} M trained parameters on {device} x "
        f"{dist.world} process(es), {torch.get_num_threads()} thread(s) each, amp {args.amp}")
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    step_fn = WindowLoss(args.method, model)
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        step_fn = DDP(step_fn, find_unused_parameters=True,
                      device_ids=[device.index] if device.type == "cuda" else None)

    ds = Dataset(args.data, max_len=args.max_len, eval_every=args.eval_every_seq, max_shards=args.max_shards)
    log(f"data: {ds.num_sequences} sequences, {len(ds.train)} train / {len(ds.eval)} held-out windows "
        f"of <= {args.max_len} tokens")

    os.makedirs(args.out, exist_ok=True)
    ckpt_path = os.path.join(args.out, "ckpt.pt")
    ck = None
    if (args.resume or args.resume_optimizer) and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        if ck["method"] != args.method:
            sys.exit(f"{ckpt_path} is a {ck['method']} checkpoint, not {args.method}")
    # --resume-optimizer, or --resume after a run that finished: a new run from --init-from that takes only
    # the last run's optimizer moments (and the feature scale they were computed under).
    moments, scale = None, None
    new_run = args.resume_optimizer and not args.resume
    if args.resume and ck is not None and run_finished(ck) and args.init_from:
        log(f"{ckpt_path} is of a finished run: a new run from {args.init_from} with its optimizer moments")
        new_run = True
    if new_run:
        if ck is None:
            log(f"--resume-optimizer: no {ckpt_path}; the optimizer starts fresh")
        elif not args.init_from:
            sys.exit("--resume-optimizer needs --init-from (the weights to start from)")
        else:
            moments, ck = ck, None
            if moments.get("feature_scale") is not None:
                scale = moments["feature_scale"].to(device)
                feature_scale.to_training(model, args.method, scale)
                log("feature scale: the last run's (its optimizer moments were computed under it)")
    # The scale a run starts with stays for the whole run: its checkpoints hold weights in that form, and a
    # checkpoint written without a scale (raw form, or a run from before feature_scale.py) resumes raw.
    if ck is not None:
        if ck.get("feature_scale") is not None:
            scale = ck["feature_scale"].to(device)
    elif moments is None and args.feature_scale == "rms" and ds.train:
        scale = feature_scale.estimate(ds.load(w) for w in ds.train[:64]).to(device)
        feature_scale.to_training(model, args.method, scale)
        log(f"feature scale: per-dimension RMS of {min(64, len(ds.train))} windows, "
            f"{float(1 / scale.max()):.3g} .. {float(1 / scale.min()):.3g}")
    args._feature_scale = scale
    fold = (lambda sd: feature_scale.folded(sd, args.method, scale)) if scale is not None else None
    state = run_state.read_state(args.export_best or args.init_from)
    exported = state.get("exported") or {}
    run = {"id": run_state.new_run_id(), "step": 0, "elapsed": 0.0, "tokens": 0, "best": None,
           "chain": None, "rank": None, "base_tokens": int(state.get("tokens_seen", 0)),
           "base_steps": int(state.get("steps", 0)),
           # Tokens behind the weights this run starts from (runs whose weights were never exported
           # do not count): a warm start continues the exported record, a new drafter starts at 0.
           "weights_base": int(exported.get("weights_tokens", exported.get("tokens_seen", 0)))
           if args.init_from else 0}
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        run.update(ck["run"])
        log(f"resumed from {ckpt_path} at step {run['step']} ({run['elapsed'] / 60:.1f} min of this run done)")
    elif moments is not None:
        opt.load_state_dict(moments["opt"])
        log(f"optimizer moments from {ckpt_path} (its run's step {moments['run']['step']}); a new run and schedule")

    def save():
        if not dist.main:
            return
        tmp = ckpt_path + ".partial"
        torch.save({"method": args.method, "config": cfg.to_dict(), "model": model.state_dict(),
                    "opt": opt.state_dict(), "run": run, "feature_scale": scale,
                    "args": {k: v for k, v in vars(args).items() if not k.startswith("_")}}, tmp)
        os.replace(tmp, ckpt_path)

    recipe = {k: getattr(args, k) for k in ("lr", "min_lr", "warmup", "schedule", "batch", "max_len",
                                            "head_init", "head", "layer_init", "chain_mask", "rank_loss",
                                            "amp", "minutes", "steps", "feature_scale")}
    recipe["lr"] = lr
    # Predictions per token: SpecBlock trains --blocks blocks of K slots, EAGLE-3 --ttt-steps steps.
    if args.method == "specblock":
        recipe["blocks"] = args.blocks
    else:
        recipe["ttt_steps"] = args.ttt_steps
    recipe["processes"] = dist.world
    if args.init_from:
        recipe["init_from"] = args.init_from
        for k in ("head_init", "layer_init"):
            recipe.pop(k)

    def record(result, improved, at_start=False):
        """Curve point, state and (when improved) weights into --export-best (rank 0)."""
        if not (args.export_best and dist.main):
            return
        acc, proxy, greedy_acc = result
        d = args.export_best
        run_state.append_curve(d, {"run": run["id"], "method": args.method,
                                   "tokens_seen": run["base_tokens"] + run["tokens"],
                                   "step": run["base_steps"] + run["step"], "run_step": run["step"],
                                   "run_minutes": round(run["elapsed"] / 60, 2),
                                   "acc": [round(x, 4) for x in acc], "accept_proxy": round(proxy, 4),
                                   "acc_greedy": [round(x, 4) for x in greedy_acc]})
        if improved:
            # The start evaluation only sets the score to beat: the weights there are the ones the run
            # warm-started from (or a new drafter), already exported with their own token count. It
            # writes them only when the directory has none yet, so the directory always loads.
            if at_start and os.path.exists(os.path.join(d, "model.safetensors")):
                improved = False
            else:
                export(model, d, fold=fold)
        if improved:
            state["exported"] = {"run": run["id"], "tokens_seen": run["base_tokens"] + run["tokens"],
                                 "weights_tokens": run.get("weights_base", 0) + run["tokens"],
                                 "acc": [round(x, 4) for x in acc], "accept_proxy": round(proxy, 4)}
        state["tokens_seen"] = run["base_tokens"] + run["tokens"]
        state["steps"] = run["base_steps"] + run["step"]
        runs = [r for r in state.setdefault("runs", []) if r.get("id") != run["id"]]
        runs.append({"id": run["id"], "recipe": recipe, "data": {"dir": args.data, "sequences": ds.num_sequences,
                                                                  "train_windows": len(ds.train)},
                     "steps": run["step"], "tokens": run["tokens"], "minutes": round(run["elapsed"] / 60, 1),
                     "best_accept_proxy": run["best"], "note": args.note})
        state["runs"] = runs
        run_state.write_state(d, state)
        run_state.plot_curve(d, f"{args.method} drafter for SmolLM2-135M-Instruct: held-out learning curve")

    def eval_and_record(tag):
        r = evaluate(args.method, model, ds, embed, vocab, args, dist)
        if r is None:
            return None
        improved = run["best"] is None or r[1] > run["best"]
        if improved:
            run["best"] = r[1]
        log(f"eval {tag}: acc {fmt_acc(r[0])} accept-proxy {r[1]:.3f} greedy-windows acc {fmt_acc(r[2])}"
            + (" (best)" if improved else ""))
        record(r, improved, at_start=tag == "start")
        return r

    last_acc1 = None
    if args.export_best and run["step"] == 0 and run["best"] is None:
        r = eval_and_record("start")   # the weights to beat: never export anything worse
        last_acc1 = r[0][0] if r else None
    stop = Stop()
    stop.install()
    # Each run its own shuffle (its first steps would otherwise repeat every earlier run's), fixed within a
    # run so that an interrupted one resumes the same order.
    stream = ds.batches(args.batch, args.seed + run["base_steps"], run["step"])
    t_start = time.time() - run["elapsed"]
    t_log = time.time()
    tok_log = 0
    last_ckpt = last_eval = time.time()
    agg = {"loss": 0.0, "draft": 0.0, "rank": 0.0, "n": 0}
    acc_c = acc_n = None
    budget_s = args.minutes * 60 if args.minutes else None
    warm = args.warmup if args.warmup < 1 else None
    while True:
        elapsed = time.time() - t_start
        progress = 0.0
        if args.steps is not None:
            progress = run["step"] / args.steps if args.steps > 0 else 1.0
        if budget_s:
            progress = max(progress, elapsed / budget_s)
        if args.tokens:
            progress = max(progress, (run["tokens"] + tok_log * dist.world) / args.tokens)
        flags = dist.max(torch.tensor([progress, float(stop.requested)], dtype=torch.float64, device=device))
        progress, stopping = float(flags[0]), bool(flags[1])
        if progress >= 1.0 or stopping:
            break
        if warm is None:   # warmup given in steps: as a fraction of the step budget (or of ~1000 steps)
            warm = min(0.5, args.warmup / max(1, args.steps or 1000))
        f = lr_factor(progress, warm, args.schedule, args.min_lr)
        for g in opt.param_groups:
            g["lr"] = lr * f
        chain = switch_state(args.chain_mask, last_acc1)
        rank_w = args.rank_weight if switch_state(args.rank_loss, last_acc1) else 0.0
        if (chain, rank_w > 0) != (run["chain"], run["rank"]):
            log(f"step {run['step']}: valid-prefix mask {'on' if chain else 'off'}, "
                f"rank loss {'on' if rank_w > 0 else 'off'}")
            run["chain"], run["rank"] = chain, rank_w > 0
        batch = dist.shard(next(stream))
        # One truncation M per block transition and step, shared by every window of the batch (as the
        # authors draw it), so every rank of a data-parallel run draws the same.
        gen = torch.Generator(device="cpu").manual_seed(args.seed * 1_000_003 + run["step"])
        Ms = [int(torch.randint(1, cfg.K + 1, (1,), generator=gen)) for _ in range(args.blocks - 1)] \
            if args.method == "specblock" else None
        opt.zero_grad(set_to_none=True)
        for i, win in enumerate(batch):
            win = to_device(win, device, args._feature_scale)
            labels = target_labels(win["hidden"], win["loss_mask"], embed, vocab, args._embed_draft)
            last = i == len(batch) - 1
            ctx = step_fn.no_sync() if (dist.enabled and not last) else contextlib.nullcontext()
            with ctx:
                with autocast(args, device):
                    loss, st = step_fn(win, labels, Ms, args, chain, rank_w)
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
            tok_log += win["tokens"].shape[0]
        gnorm = torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        run["step"] += 1
        run["elapsed"] = time.time() - t_start
        done = run["step"]
        if done % args.log_every == 0:
            toks = int(dist.sum(torch.tensor([tok_log], dtype=torch.int64, device=device))[0])
            run["tokens"] += toks
            dt = time.time() - t_log
            left = (1.0 - progress) / max(progress, 1e-9) * run["elapsed"] if progress > 0 else 0.0
            k = max(agg["n"], 1)
            log(f"step {done}{'/' + str(args.steps) if args.steps else ''} loss {agg['loss'] / k:.4f} "
                f"draft {agg['draft'] / k:.4f} rank {agg['rank'] / k:.4f} gnorm {float(gnorm):.3f} "
                f"lr {lr * f:.2e} train-acc {fmt_acc((acc_c / acc_n.clamp(min=1)).tolist())} | "
                f"{toks / dt:.0f} tok/s, {run['elapsed'] / 60:.1f} min, ETA {left / 60:.1f} min")
            t_log, tok_log = time.time(), 0
            agg = {"loss": 0.0, "draft": 0.0, "rank": 0.0, "n": 0}
            acc_c = acc_n = None
        due_eval = done % args.eval_every == 0
        if args.eval_minutes:
            due_eval = due_eval or (time.time() - last_eval) >= args.eval_minutes * 60
        if bool(dist.max(torch.tensor([float(due_eval)], device=device))[0]):
            r = eval_and_record(f"step {done}")
            last_acc1 = r[0][0] if r else last_acc1
            last_eval = time.time()
        due_ckpt = done % args.ckpt_every == 0 or (time.time() - last_ckpt) >= args.ckpt_minutes * 60
        if bool(dist.max(torch.tensor([float(due_ckpt)], device=device))[0]):
            save()
            last_ckpt = time.time()
    run["tokens"] += int(dist.sum(torch.tensor([tok_log], dtype=torch.int64, device=device))[0])
    run["elapsed"] = time.time() - t_start
    if run["step"] > 0 and not stop.requested and run["step"] % args.eval_every != 0:
        eval_and_record(f"step {run['step']} (end)")
    run["finished"] = not stop.requested
    save()
    if args.export and dist.main:
        export(model, args.export, fold=fold)
        log(f"exported {args.method} drafter to {args.export}")
    if args.export_best:
        log(f"best held-out accept-proxy {run['best']:.3f}; {args.export_best} holds the best weights "
            f"({run['base_tokens'] + run['tokens']} tokens seen over all runs)")
    dist.close()


if __name__ == "__main__":
    main()

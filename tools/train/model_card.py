#!/usr/bin/env python3
"""Regenerates the "Training history" section of a drafter's model card (models/drafters/NAME/README.md)
from its training_state.json and curve.jsonl: every run with its recipe, data, steps, tokens and wall time,
the tokens seen over all runs, the held-out metrics of the exported weights, and the learning curve
(curve.svg, redrawn). The rest of the card is left as written.

    python tools/train/model_card.py models/drafters/specblock [models/drafters/eagle3 ...]
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run_state  # noqa: E402

BEGIN = "<!-- training-history:begin (tools/train/model_card.py writes this section) -->"
END = "<!-- training-history:end -->"


def fmt_acc(acc, n=4):
    return "[" + " ".join(f"{x:.3f}" for x in acc[:n]) + "]"


def section(d: str) -> str:
    state = run_state.read_state(d)
    curve = run_state.read_curve(d)
    name = os.path.basename(os.path.normpath(d))
    plot = run_state.plot_curve(d, f"{name} drafter for SmolLM2-135M-Instruct: held-out learning curve")
    L = [BEGIN, "", "## Training history", ""]
    ex = state.get("exported")
    L.append(f"Tokens seen over all runs: {state.get('tokens_seen', 0):,} (window tokens, prompts included); "
             f"optimiser steps: {state.get('steps', 0):,}.")
    if ex:
        trained = ex.get("weights_tokens", ex["tokens_seen"])
        L.append(f"The weights here are those the drafter had after {trained:,} tokens of their own lineage "
                 f"(runs whose weights were never exported do not count; evaluated in run "
                 f"`{ex['run']}`; a run exports only weights that beat every earlier evaluation): held-out top-1 "
                 f"accuracy of slots 1-4 {fmt_acc(ex['acc'])}, acceptance proxy {ex['accept_proxy']:.3f}.")
    L.append("")
    L.append("| run | recipe | data | steps | tokens | minutes | best held-out proxy | note |")
    L.append("|---|---|---|---:|---:|---:|---:|---|")
    for r in state.get("runs", []):
        rec = r.get("recipe", {})
        recipe = ", ".join(f"{k} {v}" for k, v in rec.items() if v is not None) if isinstance(rec, dict) else rec
        data = r.get("data", {})
        data_s = data.get("dir", "") if isinstance(data, dict) else str(data)
        if isinstance(data, dict) and data.get("sequences"):
            data_s += f" ({data['sequences']:,} sequences, {data.get('train_windows', 0):,} training windows)"
        best = r.get("best_accept_proxy")
        L.append(f"| `{r.get('id')}` | {recipe} | {data_s} | {r.get('steps', 0):,} | {r.get('tokens', 0):,} | "
                 f"{r.get('minutes', '–')} | {best if best is None else f'{best:.3f}'} | {r.get('note', '')} |")
    L.append("")
    if curve:
        L.append("Held-out evaluations (curve.jsonl; the held-out split of each run's data, 1 prompt in 50):")
        L.append("")
        L.append("| run | tokens seen | slot-1 | slot-2 | slot-3 | slot-4 | acceptance proxy | slot-1, greedy windows |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for p in curve:
            a = p["acc"] + [0.0] * 4
            g = f"{p['acc_greedy'][0]:.3f}" if p.get("acc_greedy") else "–"
            L.append(f"| `{p['run']}` | {p['tokens_seen']:,} | {a[0]:.3f} | {a[1]:.3f} | {a[2]:.3f} | {a[3]:.3f} | "
                     f"{p['accept_proxy']:.3f} | {g} |")
        L.append("")
        L.append("Greedy windows: the held-out windows whose answer was decoded greedily (half of datagen's "
                 "answers; the other half is sampled at T in [0.5, 1)). Their slot-1 accuracy is the one to "
                 "compare with the runtime's first-token acceptance at T = 0 (docs/training.md).")
        L.append("")
    if plot:
        L.append("![learning curve](curve.svg)")
        L.append("")
    L.append("Continue training: `make datagen && make train-" + name + " TRAIN_MINUTES=...` (docs/training.md).")
    L.append("")
    L.append(END)
    return "\n".join(L)


def update(d: str):
    path = os.path.join(d, "README.md")
    text = open(path).read() if os.path.exists(path) else f"# {os.path.basename(d)} drafter\n"
    new = section(d)
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + new + text[b:]
    else:
        text = text.rstrip() + "\n\n" + new + "\n"
    with open(path, "w") as f:
        f.write(text)
    print(f"updated {path}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for d in sys.argv[1:]:
        update(d)

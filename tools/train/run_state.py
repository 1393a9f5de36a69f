"""What a drafter directory remembers of its training, so that every run continues the last one:

- `training_state.json`: tokens and optimiser steps seen over all runs, the runs (recipe, data, wall time,
  best held-out metrics), and the held-out metrics of the exported weights;
- `curve.jsonl`: the learning curve, one line per held-out evaluation of every run: cumulative tokens seen,
  per-slot top-1 accuracy, the acceptance proxy;
- `curve.svg`: that curve plotted (matplotlib, when installed), which the model card shows.
"""
from __future__ import annotations

import json
import os
import time

STATE = "training_state.json"
CURVE = "curve.jsonl"
PLOT = "curve.svg"


def read_state(model_dir: str | None) -> dict:
    """The directory's training state, or an empty one (a drafter trained before states existed counts
    the tokens its model card names, when given in `initial_tokens`)."""
    if model_dir:
        p = os.path.join(model_dir, STATE)
        if os.path.exists(p):
            with open(p) as f:
                return json.load(f)
    return {"tokens_seen": 0, "steps": 0, "runs": []}


def write_state(model_dir: str, state: dict):
    os.makedirs(model_dir, exist_ok=True)
    tmp = os.path.join(model_dir, STATE + ".partial")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(model_dir, STATE))


def read_curve(model_dir: str) -> list[dict]:
    p = os.path.join(model_dir, CURVE)
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return [json.loads(line) for line in f if line.strip()]


def append_curve(model_dir: str, point: dict):
    """Appends one evaluation to the curve (one JSON object per line)."""
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, CURVE), "a") as f:
        f.write(json.dumps(point, sort_keys=True) + "\n")


def plot_curve(model_dir: str, title: str) -> str | None:
    """curve.svg from curve.jsonl: held-out top-1 accuracy of slots 1-4 (block 1) and the acceptance proxy
    against tokens seen, one marker style per run. Returns the path, or None without matplotlib."""
    points = read_curve(model_dir)
    if not points:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    matplotlib.rcParams["svg.hashsalt"] = "specblock"  # reproducible ids: the SVG only changes with the data
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    slots = min(4, len(points[-1]["acc"]))
    xs = [p["tokens_seen"] / 1e6 for p in points]
    for s in range(slots):
        ax1.plot(xs, [p["acc"][s] for p in points], marker=".", label=f"slot {s + 1}")
    greedy = [(x, p["acc_greedy"][0]) for x, p in zip(xs, points) if p.get("acc_greedy")]
    if greedy:
        ax1.plot([x for x, _ in greedy], [y for _, y in greedy], marker="x", ls=":", color="k",
                 label="slot 1, greedy windows")
    ax1.set_xlabel("tokens seen (M)")
    ax1.set_ylabel("held-out top-1 accuracy")
    ax1.set_ylim(0, 1)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.plot(xs, [p["accept_proxy"] for p in points], marker=".", color="k")
    ax2.set_xlabel("tokens seen (M)")
    ax2.set_ylabel("acceptance proxy (tokens / step)")
    ax2.grid(alpha=0.3)
    starts = sorted({p["run"] for p in points})
    for r in starts[1:]:
        x0 = min(p["tokens_seen"] for p in points if p["run"] == r) / 1e6
        for ax in (ax1, ax2):
            ax.axvline(x0, color="grey", lw=0.6, ls="--")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = os.path.join(model_dir, PLOT)
    fig.savefig(out, metadata={"Date": None})
    plt.close(fig)
    return out


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())

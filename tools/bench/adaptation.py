#!/usr/bin/env python3
"""`make bench-adapt`: online drafter adaptation on a domain-shifted stream and in domain.

1. The stream: the committed ShareGPT-trained drafters answer the HumanEval prompts in order (greedy,
   `--max-new` tokens each) in one process per setting, so adaptation persists across the prompts:
   plain decoding (`ar`), then per method (SpecBlock, EAGLE-3) `--adapt off`, `on` (the cost-aware
   bandit) and `always` (an update at every decision point, adopted without replay). Plain decoding
   runs again at the end: the two ar runs bound how much the machine's speed drifted meanwhile.
2. In domain: the first `--heldout-limit` ShareGPT held-out prompts, `--adapt off` and `on`.

Tokens per second are net of every update's cost (updates run inside the decode loop and are timed
with it). Writes OUT/README.md, OUT/results.json, OUT/stream.svg and the raw JSON lines under OUT/raw/.

Usage: python3 tools/bench/adaptation.py --engine target/release/specblock --model M.gguf
       [--limit N] [--heldout-limit N] [--out docs/results/adaptation]
       python3 tools/bench/adaptation.py --rewrite --out DIR   # README.md and the plot from results.json
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

METHODS = [("specblock", "SpecBlock"), ("eagle3", "EAGLE-3")]
MODES = ["off", "on", "always"]
WINDOW = 16  # prompts in the rolling means of the plot


def run(args, name, method, adapt, prompts, limit):
    """One `specblock generate --prompt-file` process; returns its records and command line."""
    os.makedirs(os.path.join(args.out, "raw"), exist_ok=True)
    path = os.path.join(args.out, "raw", name + ".jsonl")
    src = os.path.join(args.prompts_dir, prompts + ".jsonl")
    with open(src) as f:
        lines = [line for line in f if line.strip()]
    if limit:
        lines = lines[:limit]
    subset = os.path.join(args.out, "raw", prompts + ".prompts.jsonl")
    with open(subset, "w") as f:
        f.writelines(lines)
    cmd = [args.engine, "generate", "--model", args.model, "--bf16", "--method", method,
           "--prompt-file", subset, "--max-new", str(args.max_new), "--json"]
    if method != "ar":
        cmd += ["--adapt", adapt]
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    t = time.time()
    with open(path, "w") as out:
        rc = subprocess.run(cmd, stdout=out).returncode
    if rc != 0:
        sys.exit(f"exit status {rc}: {shlex.join(cmd)}")
    print(f"  {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()], shlex.join(cmd)


def summarize(records, ar=None):
    """Totals of one run: tok/s over the whole stream, τ, the adapter's counters, greedy = ar."""
    tokens = sum(max(r["new_tokens"] - 1, 0) for r in records)
    decode = sum(r["decode_seconds"] for r in records)
    iters = sum(r.get("iterations", 0) for r in records)
    emitted = sum(r.get("iterations", 0) * r.get("mean_accept_length", 0) for r in records)
    out = {"prompts": len(records), "tokens": tokens, "decode_seconds": decode,
           "tokens_per_second": tokens / decode if decode else None,
           "tau": emitted / iters if iters else None}
    last = records[-1].get("adapter") if records else None
    if last:
        out.update({k: last[k] for k in ("adopted", "rejected", "update_seconds", "decisions", "skipped",
                                          "tried", "slots_recorded", "slots_accepted")})
    if ar is not None:
        out["matches_ar"] = sum(a["output_ids"] == b["output_ids"] for a, b in zip(records, ar))
    return out


def rolling(xs, w):
    out = []
    for i in range(len(xs)):
        lo = max(0, i - w + 1)
        out.append(sum(xs[lo:i + 1]) / (i + 1 - lo))
    return out


def plot(out_dir, result):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.hashsalt"] = "specblock"
    matplotlib.rcParams["font.size"] = 9
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), sharex=True)
    colors = {"off": "#4c72b0", "on": "#55a868", "always": "#c44e52"}
    for col, (m, label) in enumerate(METHODS):
        for mode in MODES:
            per = result["stream_per_prompt"].get(f"{m}-{mode}")
            if not per:
                continue
            x = list(range(1, len(per["tau"]) + 1))
            axes[0][col].plot(x, rolling(per["tau"], WINDOW), color=colors[mode], label=f"--adapt {mode}")
            axes[1][col].plot(x, rolling(per["tps"], WINDOW), color=colors[mode], label=f"--adapt {mode}")
        axes[0][col].set_title(f"{label}, HumanEval stream")
        axes[0][col].set_ylabel(f"τ (rolling mean, {WINDOW} prompts)")
        axes[1][col].set_ylabel(f"tok/s (rolling mean, {WINDOW} prompts)")
        axes[1][col].set_xlabel("prompt in the stream")
        for ax in (axes[0][col], axes[1][col]):
            ax.grid(color="#ddd")
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "stream.svg"), format="svg", metadata={"Date": None})
    plt.close(fig)


def ratio(a, b):
    return a / b if a and b else None


def fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def write_markdown(out_dir, r):
    s, d = r["stream"], r["in_domain"]
    lines = [
        "# Online drafter adaptation (SmolLM2-135M-Instruct, CPU)",
        "",
        f"Produced by `{r['make_command']}` ({r['date']}, commit {r['commit']}, {r['cpu']}; "
        f"{r['minutes']:.0f} min). Target and drafters in bf16, greedy, {r['max_new']} new tokens per "
        "answer; each row is one `specblock generate --prompt-file` process, so the adapter and the draft-shape "
        "policy carry over from prompt to prompt. tok/s = all answers' tokens over their decode seconds, "
        "update and replay time included. Raw records: `raw/`; commands: at the end.",
        "",
        f"## Domain-shifted stream: the ShareGPT-trained drafters on HumanEval ({s['ar']['prompts']} prompts)",
        "",
        "| method | --adapt | tok/s | vs off | τ | updates adopted | rejected by replay | update s | greedy = ar |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
        f"| ar | – | {fmt(s['ar']['tokens_per_second'], '.1f')} | – | 1.00 | – | – | – | – |",
    ]
    for m, label in METHODS:
        off = s[f"{m}-off"]["tokens_per_second"]
        for mode in MODES:
            x = s[f"{m}-{mode}"]
            lines.append(
                f"| {label} | {mode} | {fmt(x['tokens_per_second'], '.1f')} | "
                f"{fmt(ratio(x['tokens_per_second'], off))} | {fmt(x['tau'])} | {x.get('adopted', '–')} | "
                f"{x.get('rejected', '–')} | {fmt(x.get('update_seconds'), '.1f')} | "
                f"{x['matches_ar']}/{x['prompts']} |")
    lines.append(f"| ar (again, drift check) | – | {fmt(s['ar_end']['tokens_per_second'], '.1f')} | "
                 f"{fmt(ratio(s['ar_end']['tokens_per_second'], s['ar']['tokens_per_second']))} × the first | "
                 "1.00 | – | – | – | – |")
    lines += ["", "![stream](stream.svg)", "",
              f"## In domain: ShareGPT held-out ({d['specblock-off']['prompts']} prompts)", "",
              "| method | --adapt | tok/s | on / off | τ | updates adopted | rejected by replay | greedy = ar |",
              "|---|---|---:|---:|---:|---:|---:|---|"]
    for m, label in METHODS:
        off = d[f"{m}-off"]["tokens_per_second"]
        for mode in ("off", "on"):
            x = d[f"{m}-{mode}"]
            lines.append(f"| {label} | {mode} | {fmt(x['tokens_per_second'], '.1f')} | "
                         f"{fmt(ratio(x['tokens_per_second'], off))} | {fmt(x['tau'])} | "
                         f"{x.get('adopted', '–')} | {x.get('rejected', '–')} | "
                         f"{x.get('matches_ar', '–')}/{x['prompts']} |")
    lines += ["", "## Goals", "", "| goal | measured | verdict |", "|---|---:|---|"]
    for g in r["goals"]:
        lines.append(f"| {g['goal']} | {g['measured']} | {'met' if g['met'] else 'missed'} |")
    lines += ["", "## Commands", ""] + [f"    {c}" for c in r["commands"]] + [""]
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines))


def goals(r):
    s, d = r["stream"], r["in_domain"]
    out = []
    for m, label in METHODS:
        on, off, alw = (s[f"{m}-{x}"]["tokens_per_second"] for x in MODES)
        out.append({"goal": f"{label}: stream tok/s, --adapt on ≥ 1.05 × off", "measured": fmt(ratio(on, off)),
                    "met": bool(on and off and on >= 1.05 * off)})
        out.append({"goal": f"{label}: the bandit beats always-update net of cost",
                    "measured": f"{fmt(ratio(on, alw))} × always", "met": bool(on and alw and on > alw)})
        ion, ioff = d[f"{m}-on"]["tokens_per_second"], d[f"{m}-off"]["tokens_per_second"]
        out.append({"goal": f"{label}: in domain, on within 2% of off or better",
                    "measured": fmt(ratio(ion, ioff)), "met": bool(ion and ioff and ion >= 0.98 * ioff)})
    lossless = all(x.get("matches_ar") == x["prompts"] for x in s.values() if "matches_ar" in x)
    out.append({"goal": "every greedy answer (adaptation on, off and always) equals plain decoding",
                "measured": "all" if lossless else "not all", "met": lossless})
    sb_gain = ratio(s["specblock-on"]["tokens_per_second"], s["eagle3-on"]["tokens_per_second"])
    sb_static = ratio(s["specblock-off"]["tokens_per_second"], s["eagle3-off"]["tokens_per_second"])
    out.append({"goal": "SpecBlock's lead over EAGLE-3 grows with adaptation (the paper's claim)",
                "measured": f"{fmt(sb_static)} static → {fmt(sb_gain)} adaptive",
                "met": bool(sb_gain and sb_static and sb_gain > sb_static)})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="target/release/specblock")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompts-dir", default="data/prompts")
    ap.add_argument("--limit", type=int, default=0, help="stream prompts (0 = all 164)")
    ap.add_argument("--heldout-limit", type=int, default=100, help="ShareGPT held-out prompts in domain")
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--out", default="docs/results/adaptation")
    ap.add_argument("--make-command", default="make bench-adapt")
    ap.add_argument("--rewrite", action="store_true", help="README.md and the plot from results.json")
    args = ap.parse_args()
    if args.rewrite:
        with open(os.path.join(args.out, "results.json")) as f:
            r = json.load(f)
        r["goals"] = goals(r)
        write_markdown(args.out, r)
        plot(args.out, r)
        return
    t0 = time.time()
    commands, stream, per_prompt, in_domain = [], {}, {}, {}
    ar, c = run(args, "stream-ar", "ar", None, "humaneval", args.limit)
    commands.append(c)
    stream["ar"] = summarize(ar)
    for m, _ in METHODS:
        for mode in MODES:
            recs, c = run(args, f"stream-{m}-{mode}", m, mode, "humaneval", args.limit)
            commands.append(c)
            stream[f"{m}-{mode}"] = summarize(recs, ar)
            per_prompt[f"{m}-{mode}"] = {
                "tau": [x.get("mean_accept_length", 1.0) for x in recs],
                "tps": [x["tokens_per_second"] for x in recs]}
    ar_end, c = run(args, "stream-ar-end", "ar", None, "humaneval", args.limit)
    commands.append(c)
    stream["ar_end"] = summarize(ar_end)
    ar_in, c = run(args, "heldout-ar", "ar", None, "sharegpt_heldout", args.heldout_limit)
    commands.append(c)
    in_domain["ar"] = summarize(ar_in)
    for m, _ in METHODS:
        for mode in ("off", "on"):
            recs, c = run(args, f"heldout-{m}-{mode}", m, mode, "sharegpt_heldout", args.heldout_limit)
            commands.append(c)
            in_domain[f"{m}-{mode}"] = summarize(recs, ar_in)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    r = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
         "cpu": f"{cpu}, {os.cpu_count()} cores", "minutes": (time.time() - t0) / 60, "max_new": args.max_new,
         "make_command": args.make_command, "stream": stream, "stream_per_prompt": per_prompt,
         "in_domain": in_domain, "commands": commands}
    r["goals"] = goals(r)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(r, f, indent=1)
    write_markdown(args.out, r)
    plot(args.out, r)
    print(open(os.path.join(args.out, "README.md")).read())


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""`make bench`: the speculative-decoding report (plain decoding, EAGLE-3, SpecBlock); plots with matplotlib.

1. Budget sweep on the ShareGPT held-out prompts at temperature 0: every candidate setting of each method
   runs back to back with plain decoding on each prompt (`specblock bench-spec`); the best mean speedup
   picks each method's setting.
2. Main runs: MT-bench, HumanEval and ShareGPT held-out, temperature 0 and 1: ar, both methods at their
   chosen settings, both under the adaptive draft-shape policy (`specblock:auto`, `eagle3:auto`, the CLI's
   default) and at the paper's static settings (90 nodes / 59 nodes), again back to back per prompt so the
   speedup over ar is measured in the same run.
   Then one long answer under the adaptive policy, whose arm per iteration is plotted (arms.svg).
3. Optional reference row: llama.cpp's plain decoding of the same Q4_1 GGUF (llama-cpp-python), when a
   Python with it is given.

Writes OUT/results.json (every aggregate, the settings, the commands), OUT/README.md (tables and the
goals), OUT/accept_length.svg, OUT/speedup.svg and OUT/arms.svg, and the raw JSON lines under OUT/raw/.

Usage: python3 tools/bench/report.py --engine target/release/specblock --model M.gguf [--limit N]
       [--sweep-limit N] [--out docs/results] [--llamacpp-python .venv-bench/bin/python]
       python3 tools/bench/report.py --replot docs/results    # only the plots, from DIR/results.json
       python3 tools/bench/report.py --rewrite --out docs/results   # README.md and the plots, from results.json
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

DATASETS = [("mtbench", "MT-bench"), ("humaneval", "HumanEval"), ("sharegpt_heldout", "ShareGPT held-out")]
TEMPERATURES = [0.0, 1.0]
# Candidate settings per method (method spec strings of `specblock bench-spec`). EAGLE-3 gets its own
# cheaper trees (shallower, narrower) besides the paper's, and SpecBlock its seed limit (`:0` = block 1
# only), so both are tuned alike for this CPU, where every drafted or verified row costs time.
SWEEP = {
    "eagle3": ["eagle3:4:4:1", "eagle3:6:3:2", "eagle3:8:4:4", "eagle3:16:6:6", "eagle3:59:7:10"],
    "specblock": ["specblock:4:0", "specblock:8:0", "specblock:8:2", "specblock:16:4", "specblock:32",
                  "specblock:90"],
}
# The paper's static settings and the adaptive policy (the CLI default), run beside the chosen settings.
PAPER = {"eagle3": "eagle3:59:7:10", "specblock": "specblock:90"}
AUTO = {"eagle3": "eagle3:auto", "specblock": "specblock:auto"}


FAILURES = []


def run_suite(args, dataset, temperature, methods, limit, raw_path):
    """Runs `bench-spec` once; returns its records and the command line."""
    cmd = [args.engine, "bench-spec", "--model", args.model, "--prompts",
           os.path.join(args.prompts_dir, dataset + ".jsonl"), "--limit", str(limit), "--methods",
           ",".join(methods), "--temperature", str(temperature), "--max-tokens", str(args.max_tokens),
           "--seed", "1", "--out", raw_path]
    if args.bf16:
        cmd.append("--bf16")
    if args.specblock_drafter:
        cmd += ["--drafter", args.specblock_drafter]
    if args.eagle3_drafter:
        cmd += ["--eagle3-drafter", args.eagle3_drafter]
    if os.path.exists(raw_path):
        os.remove(raw_path)
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        # bench-spec exits non-zero after a greedy answer differed from plain decoding (its records are
        # all written, with matches_ar false): report it rather than lose the run.
        print(f"warning: exit status {rc} from {shlex.join(cmd)}", file=sys.stderr, flush=True)
        FAILURES.append(f"exit status {rc}: {shlex.join(cmd)}")
    with open(raw_path) as f:
        return [json.loads(line) for line in f if line.strip()], shlex.join(cmd)


def label(rec):
    """The setting a record ran: ar, specblock:B[:S], eagle3:B:D:K or METHOD:auto."""
    if "setting" in rec:
        return rec["setting"]
    m = rec["method"]
    if m == "ar":
        return "ar"
    if m == "eagle3":
        return f"eagle3:{rec['budget']}:{rec['depth']}:{rec['top_k']}"
    if "max_seeds" in rec:
        return f"specblock:{rec['budget']}:{rec['max_seeds']}"
    return f"specblock:{rec['budget']}"


def aggregate(records):
    """Per setting: throughput, speedup over ar on the same prompts, tau, drafting share, per-depth acceptance."""
    by = {}
    for r in records:
        by.setdefault(label(r), []).append(r)
    ar = {r["id"]: r for r in by.get("ar", [])}

    def tps(rs):
        toks = sum(max(r["new_tokens"] - 1, 0) for r in rs)
        secs = sum(r["decode_seconds"] for r in rs)
        return toks / secs if secs > 0 else 0.0

    out = {}
    for name, rs in by.items():
        a = {"setting": name, "prompts": len(rs), "tokens_per_second": tps(rs),
             "new_tokens": sum(r["new_tokens"] for r in rs)}
        if name != "ar" and ar:
            base = [ar[r["id"]] for r in rs if r["id"] in ar]
            a["speedup"] = a["tokens_per_second"] / max(tps(base), 1e-12)
            per = sorted((max(r["new_tokens"] - 1, 0) / max(r["decode_seconds"], 1e-12))
                         / max(max(ar[r["id"]]["new_tokens"] - 1, 0) / max(ar[r["id"]]["decode_seconds"], 1e-12),
                               1e-12)
                         for r in rs if r["id"] in ar)
            a["median_prompt_speedup"] = per[len(per) // 2] if per else None
        if name != "ar":
            it = sum(r["iterations"] for r in rs)
            acc = sum(r["accepted"] for r in rs)
            draft = sum(r["draft_seconds"] for r in rs)
            verify = sum(r["verify_seconds"] for r in rs)
            depth = max((len(r["accepted_at_depth"]) for r in rs), default=0)
            a.update({
                "iterations": it,
                "mean_accept_length": (acc + it) / it if it else 0.0,
                "drafting_share": draft / (draft + verify) if draft + verify > 0 else 0.0,
                "draft_ms_per_iteration": 1e3 * draft / it if it else 0.0,
                "verify_ms_per_iteration": 1e3 * verify / it if it else 0.0,
                "acceptance_per_depth": [sum(r["accepted_at_depth"][d] for r in rs if d < len(r["accepted_at_depth"]))
                                         / it for d in range(depth)] if it else [],
            })
            checked = [r["matches_ar"] for r in rs if "matches_ar" in r]
            if checked:
                a["greedy_matches_ar"] = f"{sum(checked)}/{len(checked)}"
            arms = {}
            for r in rs:
                for arm, n in r.get("policy", {}).get("arms", {}).items():
                    arms[arm] = arms.get(arm, 0) + n
            if arms:
                total = sum(arms.values())
                a["arm_share"] = {k: v / total for k, v in sorted(arms.items(), key=lambda kv: -kv[1])}
        out[name] = a
    return out


PLOTS = ("accept_length.svg", "speedup.svg", "arms.svg")
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]


def _pyplot():
    """matplotlib's pyplot on the Agg backend, with SVG ids salted so that a plot only changes with its data."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.hashsalt"] = "specblock"
    matplotlib.rcParams["font.size"] = 9
    return plt


def _save(fig, path):
    fig.savefig(path, format="svg", metadata={"Date": None})
    _pyplot().close(fig)


def bar_svg(path, title, ylabel, groups, series, values, baseline=None):
    """A grouped bar chart: `values[(group, series)]`, each bar labelled with its value (missing: no bar);
    a dashed line at `baseline` if given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 3.6))
    width = 0.8 / len(series)
    for si, s in enumerate(series):
        xs = [gi - 0.4 + width * (si + 0.5) for gi, g in enumerate(groups) if values.get((g, s)) is not None]
        vs = [values[(g, s)] for g in groups if values.get((g, s)) is not None]
        bars = ax.bar(xs, vs, width * 0.95, color=COLORS[si % len(COLORS)], label=s, zorder=2)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    if baseline is not None:
        ax.axhline(baseline, color="black", ls="--", lw=1, zorder=3)
    top = max([v for v in values.values() if v is not None] + [baseline or 0]) * 1.15 or 1.0
    ax.set_ylim(0, top)
    ax.set_xticks(range(len(groups)), ["\n".join(g.rsplit(" ", 1)) for g in groups], fontsize=8)  # "MT-bench\nT0"
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", color="#ddd", zorder=0)
    fig.legend(ncols=len(series), loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend under the group labels
    _save(fig, path)


def fmt(v, spec=".2f"):
    return "–" if v is None else format(v, spec)


def pct(x):
    """A fraction as a percentage cell; "–" when absent."""
    return "–" if x is None else f"{x * 100:.0f}%"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="target/release/specblock")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompts-dir", default="data/prompts")
    ap.add_argument("--specblock-drafter", default=None)
    ap.add_argument("--eagle3-drafter", default=None)
    ap.add_argument("--limit", type=int, default=0, help="prompts per dataset in the main runs (0 = all)")
    ap.add_argument("--sweep-limit", type=int, default=20, help="ShareGPT held-out prompts in the sweep")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="f32 weights (default bf16)")
    ap.add_argument("--llamacpp-python", default=None, help="a Python with llama-cpp-python==0.3.36")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--make-command", default="make bench", help="recorded as the reproducing command")
    ap.add_argument("--rewrite", action="store_true",
                    help="only rewrite README.md and the plots from OUT/results.json (no runs)")
    ap.add_argument("--replot", metavar="DIR", default=None,
                    help="only redraw the plots of DIR from DIR/results.json (no runs; README.md untouched)")
    args = ap.parse_args()
    if args.replot:
        with open(os.path.join(args.replot, "results.json")) as f:
            write_plots(args.replot, json.load(f))
        print(f"wrote {', '.join(PLOTS)} under {args.replot}", file=sys.stderr)
        return
    _pyplot()  # fail now, not after an hour of runs, when matplotlib is missing
    if args.rewrite:
        with open(os.path.join(args.out, "results.json")) as f:
            result = json.load(f)
        write_outputs(args, result)
        return

    raw = os.path.join(args.out, "raw")
    os.makedirs(raw, exist_ok=True)
    started = time.time()
    commands = []

    # 1. Sweep.
    sweep_methods = ["ar"] + SWEEP["eagle3"] + SWEEP["specblock"]
    recs, cmd = run_suite(args, "sharegpt_heldout", 0.0, sweep_methods, args.sweep_limit,
                          os.path.join(raw, "sweep_sharegpt_heldout_t0.jsonl"))
    commands.append(cmd)
    sweep = aggregate(recs)
    chosen = {}
    for method, settings in SWEEP.items():
        chosen[method] = max(settings, key=lambda s: sweep[s]["speedup"])
    print(f"sweep: chosen {chosen}", file=sys.stderr, flush=True)

    # 2. Main runs.
    main_runs = {}
    methods = ["ar", chosen["eagle3"], chosen["specblock"], AUTO["eagle3"], AUTO["specblock"]]
    methods += [PAPER[m] for m in ("eagle3", "specblock") if PAPER[m] not in methods]
    for ds, _ in DATASETS:
        for t in TEMPERATURES:
            recs, cmd = run_suite(args, ds, t, methods, args.limit, os.path.join(raw, f"{ds}_t{t:g}.jsonl"))
            commands.append(cmd)
            main_runs[f"{ds}@T{t:g}"] = aggregate(recs)

    # The adaptive policy's arm per iteration over one long answer (the first MT-bench prompt, T = 0).
    trace = arm_trace(args, os.path.join(raw, "arm_trace.json"))
    commands.append(trace["command"])

    # 3. llama.cpp reference.
    llama = None
    if args.llamacpp_python:
        path = os.path.join(raw, "llamacpp.json")
        cmd = [args.llamacpp_python, "tools/engine/scripts/llamacpp_bench.py", args.model, "--json", path]
        print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            llama = json.load(f)
        commands.append(shlex.join(cmd))

    # Summary across datasets and temperatures: mean of the per-run speedups.
    def mean_over_runs(setting_of, key):
        vals = [main_runs[k][setting_of][key] for k in main_runs if setting_of in main_runs[k]]
        return sum(vals) / len(vals) if vals else None

    summary = {}
    for method in ("eagle3", "specblock"):
        s = chosen[method]
        summary[method] = {k: mean_over_runs(s, k) for k in
                           ("speedup", "mean_accept_length", "tokens_per_second", "draft_ms_per_iteration",
                            "drafting_share")}
    summary["ar"] = {"tokens_per_second": mean_over_runs("ar", "tokens_per_second")}
    sb, e3 = summary["specblock"], summary["eagle3"]
    llama_q41 = None
    if llama:
        llama_q41 = next((m["decode_tok_s_short_ctx"] for m in llama["models"]), None)
    for method in ("eagle3", "specblock"):
        summary[method + ":auto"] = {k: mean_over_runs(AUTO[method], k) for k in
                                     ("speedup", "mean_accept_length", "tokens_per_second")}
        summary[method + ":paper"] = {k: mean_over_runs(PAPER[method], k) for k in
                                      ("speedup", "mean_accept_length", "tokens_per_second")}
    # The adaptive policy against the best static setting and plain decoding, in every run.
    adaptive_rows = {}
    for k, run in main_runs.items():
        for method in ("eagle3", "specblock"):
            a, b = run.get(AUTO[method], {}), run.get(chosen[method], {})
            if a.get("speedup") and b.get("speedup"):
                adaptive_rows[f"{k}/{method}"] = {"auto_vs_best_static": a["speedup"] / b["speedup"],
                                                  "auto_vs_ar": a["speedup"]}
    goals = {
        "adaptive_min_vs_best_static": min((x["auto_vs_best_static"] for x in adaptive_rows.values()), default=None),
        "adaptive_min_vs_ar": min((x["auto_vs_ar"] for x in adaptive_rows.values()), default=None),
        "specblock_speedup_vs_eagle3": sb["speedup"] / e3["speedup"] - 1 if e3["speedup"] else None,
        "specblock_draft_time_vs_eagle3": sb["draft_ms_per_iteration"] / e3["draft_ms_per_iteration"]
        if e3["draft_ms_per_iteration"] else None,
        "specblock_tok_s_vs_llamacpp_q4_1": sb["tokens_per_second"] / llama_q41 if llama_q41 else None,
    }
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "settings": {"max_tokens": args.max_tokens, "bf16": args.bf16, "limit": args.limit,
                     "sweep_limit": args.sweep_limit, "temperatures": TEMPERATURES, "seed": 1},
        "reproduce": args.make_command, "commands": commands,
        "sweep": sweep, "chosen": chosen, "runs": main_runs, "summary": summary, "llamacpp": llama,
        "adaptive": adaptive_rows, "arm_trace": trace,
        "goals": goals, "failures": FAILURES, "wall_seconds": time.time() - started,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)

    write_outputs(args, result)
    print(f"wrote {args.out}/results.json, README.md, {', '.join(PLOTS)} "
          f"({(time.time() - started) / 60:.1f} min)", file=sys.stderr)


def arm_trace(args, path):
    """One long greedy answer under the adaptive SpecBlock policy: `generate --json` with its arm trace."""
    with open(os.path.join(args.prompts_dir, "mtbench.jsonl")) as f:
        prompt = json.loads(f.readline())["prompt"]
    cmd = [args.engine, "generate", "--model", args.model, "--method", "specblock", "--max-tokens", "512",
           "--json", "--prompt", prompt] + (["--bf16"] if args.bf16 else [])
    if args.specblock_drafter:
        cmd += ["--drafter", args.specblock_drafter]
    print("+ " + shlex.join(cmd[:-2]) + " --prompt <first MT-bench prompt>", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        FAILURES.append(f"exit status {out.returncode}: arm trace")
        return {"command": shlex.join(cmd), "trace": [], "arms": []}
    rec = json.loads(out.stdout)
    with open(path, "w") as f:
        json.dump(rec, f)
    return {"command": shlex.join(cmd[:-2]) + " --prompt \"$(head -1 data/prompts/mtbench.jsonl | jq -r .prompt)\"",
            "trace": rec.get("arm_trace", []), "arms": [a["arm"] for a in rec.get("policy", {}).get("arms", [])],
            "tokens_per_second": rec.get("tokens_per_second"), "mean_accept_length": rec.get("mean_accept_length")}


def arms_svg(path, trace):
    """The arm chosen at each iteration of one answer: one row per arm (the first on top), a line through the
    iterations."""
    arms, seq = trace["arms"], trace["trace"]
    if not arms or not seq:
        return
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.6, 0.9 + 0.24 * len(arms)))
    ax.plot(range(len(seq)), seq, color=COLORS[0], lw=0.8, marker=".", ms=3)
    ax.set_yticks(range(len(arms)), arms)
    ax.set_ylim(len(arms) - 0.5, -0.5)
    ax.set_xlim(0, max(1, len(seq) - 1))
    ax.grid(axis="y", color="#eee")
    ax.set_xlabel("iteration")
    ax.set_title(f"Adaptive policy: the draft shape of each iteration of one answer ({len(seq)} iterations)",
                 fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def report_axes(result):
    """The plots' and tables' groups (dataset x temperature labels), their results.json keys, and the
    (name, setting) series of the chosen settings."""
    groups = [f"{name} T{t:g}" for ds, name in DATASETS for t in TEMPERATURES]
    keys = [f"{ds}@T{t:g}" for ds, _ in DATASETS for t in TEMPERATURES]
    series = [("EAGLE-3", result["chosen"]["eagle3"]), ("SpecBlock", result["chosen"]["specblock"])]
    return groups, keys, series


def write_plots(out, result):
    """accept_length.svg, speedup.svg and (with an arm trace) arms.svg under `out`, from the results alone."""
    groups, keys, series = report_axes(result)
    for fname, key, title, ylabel, base in (
            ("accept_length.svg", "mean_accept_length", "Mean accept length τ (tokens per iteration)", "τ", 1.0),
            ("speedup.svg", "speedup", "Speedup over plain decoding (same run)", "speedup", 1.0)):
        vals = {(g, sname): result["runs"][k].get(s, {}).get(key) for g, k in zip(groups, keys) for sname, s in series}
        bar_svg(os.path.join(out, fname), title, ylabel, groups, [s for s, _ in series], vals, base)
    if result.get("arm_trace"):
        arms_svg(os.path.join(out, "arms.svg"), result["arm_trace"])


def write_outputs(args, result):
    """README.md and the plots from the results."""
    write_plots(args.out, result)
    write_markdown(args, result, *report_axes(result))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def write_markdown(args, r, groups, keys, series):
    L = []
    s = r["settings"]
    lim = "all" if not s["limit"] else f"the first {s['limit']}"
    L.append("# Speculative decoding report: plain decoding, EAGLE-3, SpecBlock (SmolLM2-135M-Instruct, CPU)\n")
    L.append(f"Produced by `{r['reproduce']}` ({r['date']}, commit {r['commit']}, {r['machine']['cpu']}, "
             f"{r['machine']['cores']} cores; {r['wall_seconds'] / 60:.0f} min). Target and drafters with "
             f"{'bf16' if s['bf16'] else 'f32'} weights; {s['max_tokens']} new tokens per answer; {lim} prompts "
             f"of each dataset; seed {s['seed']}. Each prompt runs ar, EAGLE-3 and SpecBlock back to back, so every "
             f"speedup is over plain decoding in the same run on the same prompts. Raw per-prompt records: `raw/`; "
             f"all numbers: `results.json`; commands: at the end.\n")
    if r["failures"]:
        L.append("**Runs that failed (a greedy speculative answer differed from plain decoding, or an error):**\n")
        L.extend(f"- `{f}`" for f in r["failures"])
        L.append("")
    L.append("## Summary (mean over the 6 dataset × temperature runs)\n")
    L.append("| method | setting | speedup over ar | τ | tok/s | draft ms / iteration | drafting share |")
    L.append("|---|---|---:|---:|---:|---:|---:|")
    L.append(f"| ar | – | 1.00 | 1.00 | {fmt(r['summary']['ar']['tokens_per_second'], '.1f')} | – | – |")
    for name, m in (("EAGLE-3", "eagle3"), ("SpecBlock", "specblock")):
        x = r["summary"][m]
        L.append(f"| {name} | `{r['chosen'][m]}` | {fmt(x['speedup'])} | {fmt(x['mean_accept_length'])} | "
                 f"{fmt(x['tokens_per_second'], '.1f')} | {fmt(x['draft_ms_per_iteration'], '.1f')} | "
                 f"{pct(x['drafting_share'])} |")
    for name, m in (("EAGLE-3", "eagle3"), ("SpecBlock", "specblock")):
        for tag, label_, setting in (("auto", "adaptive", AUTO[m]), ("paper", "paper's static", PAPER[m])):
            x = r["summary"].get(f"{m}:{tag}")
            if x and x.get("speedup") is not None:
                L.append(f"| {name} ({label_}) | `{setting}` | {fmt(x['speedup'])} | {fmt(x['mean_accept_length'])} | "
                         f"{fmt(x['tokens_per_second'], '.1f')} | – | – |")
    if r["llamacpp"]:
        for m in r["llamacpp"]["models"]:
            L.append(f"| llama.cpp plain decoding ({m['name']}) | reference | – | 1.00 | "
                     f"{m['decode_tok_s_short_ctx']:.1f} (16-token ctx), {m['decode_tok_s_ctx512']:.1f} (ctx 512) | – | – |")
    g = r["goals"]
    L.append("\n## Goals\n")
    L.append("| goal | measured | verdict |\n|---|---:|---|")
    v = g["specblock_speedup_vs_eagle3"]
    L.append(f"| SpecBlock mean speedup ≥ 8% above EAGLE-3's | {fmt(v * 100 if v is not None else None, '+.1f')}% | "
             f"{'met' if v is not None and v >= 0.08 else 'missed'} |")
    v = g["specblock_draft_time_vs_eagle3"]
    L.append(f"| SpecBlock drafting time ≤ 52% of EAGLE-3's (per iteration) | {fmt(v * 100 if v is not None else None, '.0f')}% | "
             f"{'met' if v is not None and v <= 0.52 else 'missed'} |")
    v = g["specblock_tok_s_vs_llamacpp_q4_1"]
    L.append(f"| SpecBlock tok/s above llama.cpp Q4_1 plain decoding | "
             f"{fmt(v, '.2f') + '×' if v is not None else 'not measured'} | "
             f"{('met' if v > 1 else 'missed') if v is not None else 'not measured (no llama.cpp Python given)'} |")
    L.append("\nThe llama.cpp row is llama-cpp-python's plain greedy decoding of the same GGUF (2 threads) at a 16-token "
             "and a 512-token context, measured in the same `make bench` run after the speculative runs; the goal "
             "compares SpecBlock's mean tok/s with the 16-token figure. What limits each number: "
             "`docs/performance.md`, section \"Trained drafters on the CPU\".")
    if r.get("adaptive"):
        L.append("\n## The adaptive draft-shape policy (`--budget auto`, the default) against static shapes\n")
        L.append("Speedup over plain decoding in the same run; `auto / best` = the adaptive policy's speedup over "
                 "the best static setting of the sweep; arms: the policy's share of iterations (docs/adaptive.md).\n")
        L.append("| dataset | T | method | best static | paper static | adaptive | auto / best | arms (share of iterations) |")
        L.append("|---|---:|---|---:|---:|---:|---:|---|")
        for (ds, name) in DATASETS:
            for t in TEMPERATURES:
                run = r["runs"][f"{ds}@T{t:g}"]
                for mname, m in (("EAGLE-3", "eagle3"), ("SpecBlock", "specblock")):
                    a, b = run.get(AUTO[m], {}), run.get(r["chosen"][m], {})
                    pp = run.get(PAPER[m], {})
                    if not a:
                        continue
                    share = ", ".join(f"`{k}` {v * 100:.0f}%" for k, v in list(a.get("arm_share", {}).items())[:4])
                    ratio = a["speedup"] / b["speedup"] if a.get("speedup") and b.get("speedup") else None
                    L.append(f"| {name} | {t:g} | {mname} | {fmt(b.get('speedup'))} (`{r['chosen'][m]}`) | "
                             f"{fmt(pp.get('speedup'))} | {fmt(a.get('speedup'))} | {fmt(ratio)} | {share} |")
        ga, gb = g.get("adaptive_min_vs_best_static"), g.get("adaptive_min_vs_ar")
        L.append(f"\nGoals: adaptive ≥ 0.97× the best static setting in every row (worst row: {fmt(ga)}: "
                 f"{'met' if ga is not None and ga >= 0.97 else 'missed'}); adaptive ≥ 1.0× plain decoding in every "
                 f"row (worst row: {fmt(gb)}: {'met' if gb is not None and gb >= 1.0 else 'missed'}).\n")
        tr = r.get("arm_trace", {})
        if tr.get("trace"):
            L.append(f"One long answer (first MT-bench prompt, 512 tokens, T = 0) under the adaptive SpecBlock policy: "
                     f"{fmt(tr.get('tokens_per_second'), '.1f')} tok/s, τ {fmt(tr.get('mean_accept_length'))}.\n")
            L.append("![arms](arms.svg)\n")
    L.append("\n## Per dataset and temperature\n")
    L.append("| dataset | T | method | setting | τ | tok/s | speedup | median prompt speedup | draft ms/iter | "
             "verify ms/iter | drafting share | greedy = ar |")
    L.append("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for (ds, name) in DATASETS:
        for t in TEMPERATURES:
            run = r["runs"][f"{ds}@T{t:g}"]
            for mname, setting in [("ar", "ar")] + list(series):
                x = run.get(setting)
                if not x:
                    continue
                L.append(f"| {name} | {t:g} | {mname} | `{setting}` | {fmt(x.get('mean_accept_length', 1.0))} | "
                         f"{x['tokens_per_second']:.1f} | {fmt(x.get('speedup', 1.0))} | "
                         f"{fmt(x.get('median_prompt_speedup', 1.0))} | {fmt(x.get('draft_ms_per_iteration'), '.1f')} | "
                         f"{fmt(x.get('verify_ms_per_iteration'), '.1f')} | "
                         f"{pct(x.get('drafting_share'))} | "
                         f"{x.get('greedy_matches_ar', '–')} |")
    L.append("\n![accept length](accept_length.svg)\n\n![speedup](speedup.svg)\n")
    L.append("\n## Per-depth acceptance (fraction of iterations that accepted at least d draft tokens)\n")
    L.append("| dataset | T | method | d=1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 |\n|---|---:|---|" + "---:|" * 8)
    for (ds, name) in DATASETS:
        for t in TEMPERATURES:
            run = r["runs"][f"{ds}@T{t:g}"]
            for mname, setting in series:
                x = run.get(setting)
                if x:
                    cells = [f"{v:.2f}" for v in x["acceptance_per_depth"][:8]]
                    cells += ["0"] * (8 - len(cells))
                    L.append(f"| {name} | {t:g} | {mname} | " + " | ".join(cells) + " |")
    L.append(f"\n## Budget sweep (ShareGPT held-out, first {s['sweep_limit']} prompts, T = 0)\n")
    L.append("| setting | τ | tok/s | speedup | draft ms/iter | verify ms/iter | drafting share | greedy = ar |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---|")
    for setting, x in r["sweep"].items():
        mark = " **(chosen)**" if setting in r["chosen"].values() else ""
        L.append(f"| `{setting}`{mark} | {fmt(x.get('mean_accept_length', 1.0))} | {x['tokens_per_second']:.1f} | "
                 f"{fmt(x.get('speedup', 1.0))} | {fmt(x.get('draft_ms_per_iteration'), '.1f')} | "
                 f"{fmt(x.get('verify_ms_per_iteration'), '.1f')} | "
                 f"{pct(x.get('drafting_share'))} | "
                 f"{x.get('greedy_matches_ar', '–')} |")
    L.append("\nSettings: `eagle3:BUDGET:DEPTH:TOPK`; `specblock:BUDGET[:SEEDS]` (SEEDS: most block-2 seeds, 0 = block "
             "1 only; none = all, the authors' policy). BUDGET: non-root tree nodes kept after the prune.\n")
    L.append("## Commands\n\n```sh\n" + "\n".join(r["commands"]) + "\n```\n")
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()

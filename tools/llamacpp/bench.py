"""SpecBlock inside llama.cpp on MT-bench prompts: plain llama.cpp decoding against SpecBlock at a fixed
draft shape and under the default adaptive policy (make bench-llamacpp-spec; docs/llamacpp.md).

Every setting is one run of target/llamacpp/speculate_llama, which decodes each prompt plainly and then
speculatively in the same process, so each speculative number has its own plain baseline beside it.
Prints a markdown table (aggregate tok/s = tokens / seconds over all prompts, plus the median per-prompt
ratio) and writes the raw JSON lines next to it. Run it on an idle machine.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str]) -> list[dict]:
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"bench: command failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--program", default="target/llamacpp/speculate_llama")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompts", default="data/prompts/mtbench.jsonl")
    ap.add_argument("--limit", type=int, default=10, help="prompts (the first N of the file)")
    ap.add_argument("--max-new", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("docs/results/llamacpp"))
    ap.add_argument("--command", default="make bench-llamacpp-spec", help="the reproducing command, for the table")
    args = ap.parse_args()

    lines = [line for line in Path(args.prompts).read_text().splitlines() if line.strip()][: args.limit]
    args.out.mkdir(parents=True, exist_ok=True)
    # The prompt subset is a build product (the dataset is not committed).
    Path("target/llamacpp").mkdir(parents=True, exist_ok=True)
    subset = Path("target/llamacpp/bench_prompts.jsonl")
    subset.write_text("\n".join(lines) + "\n")
    settings = [
        ("SpecBlock, fixed: budget 4, block 1 only", "specblock", ["--budget", "4", "--max-seeds", "0"]),
        ("SpecBlock, fixed: budget 8", "specblock", ["--budget", "8"]),
        ("SpecBlock, default adaptive policy", "specblock", ["--budget", "auto"]),
        ("EAGLE-3, default adaptive policy", "eagle3", ["--budget", "auto"]),
        ("SpecBlock, default adaptive policy, --exact (llama.cpp on 1 thread)", "specblock", ["--budget", "auto", "--exact"]),
    ]
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    raw = []
    for name, method, extra in settings:
        res = run([args.program, "--model", args.model, "--drafter", f"models/drafters/{method}", "--prompt-file",
                   str(subset), "--max-new", str(args.max_new), "--json", *extra])
        for r in res:
            r["setting"] = name
        raw += res
        # tok/s per prompt exclude the first token (produced by the prefill in both runs).
        plain_s = sum((len(r["plain_ids"]) - 1) / r["plain_tokens_per_second"] for r in res if r["plain_tokens_per_second"])
        spec_s = sum((len(r["spec_ids"]) - 1) / r["spec_tokens_per_second"] for r in res if r["spec_tokens_per_second"])
        plain_n = sum(len(r["plain_ids"]) - 1 for r in res)
        spec_n = sum(len(r["spec_ids"]) - 1 for r in res)
        ratios = [r["spec_tokens_per_second"] / r["plain_tokens_per_second"] for r in res if r["plain_tokens_per_second"]]
        emitted = sum(r["mean_accept_length"] * r["iterations"] for r in res)
        iterations = sum(r["iterations"] for r in res)
        rows.append((name, plain_n / plain_s, spec_n / spec_s, (spec_n / spec_s) / (plain_n / plain_s),
                     statistics.median(ratios), emitted / iterations, sum(r["identical"] for r in res), len(res),
                     sum(r["draft_seconds"] for r in res) / iterations * 1e3,
                     sum(r["verify_seconds"] for r in res) / iterations * 1e3))
    (args.out / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in raw))
    out = [f"Measured {started}: `{args.command}` ({len(lines)} MT-bench prompts, {args.max_new} new tokens, greedy, "
           "2 threads; llama-cpp-python 0.3.36's llama.cpp, Q4_1 GGUF).", "",
           "| setting | plain llama.cpp tok/s | speculative tok/s | ratio | median ratio per prompt | mean accept length | identical to plain | draft ms / iteration | verify ms / iteration |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (name, p, s, ratio, med, mal, ident, n, d, v) in rows:
        out.append(f"| {name} | {p:.1f} | {s:.1f} | {ratio:.3f}x | {med:.3f}x | {mal:.2f} | {ident}/{n} | {d:.1f} | {v:.1f} |")
    table = "\n".join(out) + "\n"
    (args.out / "README.md").write_text("# SpecBlock inside llama.cpp: measured\n\n" + table)
    print(table)


if __name__ == "__main__":
    main()

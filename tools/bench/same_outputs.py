#!/usr/bin/env python3
"""Compares the runs of tools/bench/same_outputs.sh: per method and round, whether both binaries gave
the same output tokens and iteration counts for every prompt, then the median tokens/s of each and
their ratio. Exits 1 when any output differs."""
import collections
import glob
import json
import statistics
import sys

out = sys.argv[1]
runs = collections.defaultdict(dict)
for path in glob.glob(out + "/*.jsonl"):
    name = path.rsplit("/", 1)[-1][: -len(".jsonl")]
    if name == "prompts":
        continue
    which, tag, rnd = name.split(".")
    runs[(tag, rnd)][which] = [json.loads(line) for line in open(path) if line.strip()]
speed = collections.defaultdict(lambda: collections.defaultdict(list))
same_everywhere = True
for (tag, rnd), d in sorted(runs.items()):
    old, new = d.get("old", []), d.get("new", [])
    tokens = sum(a["output_ids"] == b["output_ids"] for a, b in zip(old, new))
    iters = sum(a.get("iterations") == b.get("iterations") for a, b in zip(old, new))
    same_everywhere &= len(old) == len(new) and tokens == len(old)
    for a, b in zip(old, new):
        speed[tag]["old"].append(a["tokens_per_second"])
        speed[tag]["new"].append(b["tokens_per_second"])
    print(f"{tag:50s} {rnd}: same tokens {tokens}/{len(old)}, same iterations {iters}/{len(old)}")
for tag, s in sorted(speed.items()):
    o, n = statistics.median(s["old"]), statistics.median(s["new"])
    print(f"{tag:50s} median tok/s old {o:6.1f} new {n:6.1f} ratio {n / o:.3f}")
print("outputs identical" if same_everywhere else "OUTPUTS DIFFER")
sys.exit(0 if same_everywhere else 1)

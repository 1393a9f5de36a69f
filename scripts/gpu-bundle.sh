#!/usr/bin/env bash
# Builds the GPU tests and the GPU benchmark (release, feature `cuda`) and copies the executables into
# gpu-bundle/ (git-ignored), so scripts/gpu-check.sh can run them on a GPU machine that has no Rust
# toolchain. Run from the repository root (make gpu-bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu-bundle
rm -rf "$out" && mkdir -p "$out"
tests=()
for f in tests/cuda_*.rs; do tests+=(--test "$(basename "$f" .rs)"); done
json=$(cargo test --features cuda "${tests[@]}" --no-run --message-format=json 2>/dev/null)
echo "$json" | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        shutil.copy(m["executable"], os.path.join(sys.argv[1], m["target"]["name"]))
' "$out"
bench=$(cargo bench --features cuda --bench cuda --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])
')
cp "$bench" "$out/bench_cuda"
strip --strip-debug "$out"/* 2>/dev/null || true
git rev-parse HEAD > "$out/commit"
pwd > "$out/manifest_dir"
ls -la "$out"
du -sh "$out"

#!/usr/bin/env bash
# The one GPU script (issue 6): every GPU test, then the microbenchmarks, then the PyTorch eager baseline of
# the drafter block forward, then compute-sanitizer over the tests; a short table last. Full results go to
# $OUT (when set) or target/gpu-check/. Designed to finish within 6 minutes on one H100.
#
# Where cargo exists it builds everything with `--features cuda` first (scripts/gpu-bundle.sh); a GPU machine
# without Rust runs the executables prebuilt here (`make gpu-bundle`, then carry gpu-bundle/).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-target/gpu-check}
mkdir -p "$out"
summary=()
note() { summary+=("$1"); }
start=$(date +%s)
# Whole-run budget in seconds (GPU_CHECK_SECONDS, default 330): every stage gets at most what is left.
deadline=$(( start + ${GPU_CHECK_SECONDS:-330} ))
left() { local l=$(( deadline - $(date +%s) )); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 1 ] && l=1; echo "$l"; }
failed=0

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 | tee "$out/device.txt"
nvcc --version 2>/dev/null | tail -1 | tee -a "$out/device.txt"
python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)' 2>&1 | tee -a "$out/device.txt"

if command -v cargo >/dev/null 2>&1 && [ -z "${SPECBLOCK_USE_BUNDLE:-}" ]; then
    echo "== build (cargo, feature cuda)"
    bash scripts/gpu-bundle.sh > "$out/build.txt" 2>&1 || { tail -30 "$out/build.txt"; echo "build failed"; exit 1; }
fi
[ -x gpu-bundle/bench_cuda ] || { echo "no gpu-bundle/: run 'make gpu-bundle' where Rust is installed"; exit 1; }
echo "bundle built from commit $(cat gpu-bundle/commit)"
# The tests find their fixtures through the absolute path they were built at.
built_at=$(cat gpu-bundle/manifest_dir)
if [ "$built_at" != "$PWD" ] && [ ! -e "$built_at" ]; then
    mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"
fi

echo "== GPU tests (SPECBLOCK_REQUIRE_GPU=1: a missing GPU fails)"
export SPECBLOCK_REQUIRE_GPU=1
# Cheap and new first, the long parity sweeps last.
order="cuda_runtime cuda_no_device cuda_c_api cuda_block cuda_tree cuda_greedy cuda_sample cuda_drafter"
for name in $order $(cd gpu-bundle && ls cuda_* | grep -v -x -F "$(echo $order | tr ' ' '\n')"); do
    t=gpu-bundle/$name
    [ -x "$t" ] || continue
    timeout "$(left ${TEST_SECONDS:-60})" "$t" --test-threads=1 > "$out/test_$name.txt" 2>&1
    rc=$?
    [ $rc -eq 0 ] || failed=1
    passed=$(grep -o '[0-9]* passed' "$out/test_$name.txt" | tail -1)
    failed=$(grep -o '[0-9]* failed' "$out/test_$name.txt" | tail -1)
    if [ $rc -eq 0 ]; then
        note "test  $name: ok ($passed)"
    else
        note "test  $name: FAILED rc=$rc ($passed, $failed)"
        grep -E "panicked|assert|Error|error|FAILED|failed" "$out/test_$name.txt" | head -20
    fi
done

echo "== microbenchmarks"
timeout "$(left 120)" gpu-bundle/bench_cuda --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
note "bench rc=${PIPESTATUS[0]} ($(grep -c ' us ' "$out/bench.txt") rows)"

echo "== PyTorch eager baseline (drafter block forward)"
if [ -f tools/cuda/drafter_eager.py ]; then
    timeout "$(left 60)" python3 tools/cuda/drafter_eager.py --out "$out/eager.json" 2>&1 | tee "$out/eager.txt"
    note "eager rc=${PIPESTATUS[0]}"
fi

left=$(( deadline - $(date +%s) ))
if command -v compute-sanitizer >/dev/null 2>&1 && [ $left -gt 40 ]; then
    echo "== compute-sanitizer memcheck over the tests (${left}s left)"
    per=$(( left / 4 ))
    for t in gpu-bundle/cuda_*; do
        name=$(basename "$t")
        timeout $per compute-sanitizer --tool memcheck --error-exitcode 9 "$t" --test-threads=1 \
            > "$out/memcheck_$name.txt" 2>&1
        rc=$?
        errs=$(grep -c "Invalid\|out of bounds\|misaligned" "$out/memcheck_$name.txt")
        note "memcheck $name: rc=$rc, $errs error lines"
    done
fi

echo
echo "================ gpu-check summary ($(( $(date +%s) - start )) s) ================"
printf '%s\n' "${summary[@]}"
echo "---- benchmark rows (median us) ----"
grep ' us ' "$out/bench.txt" | cut -c1-150
[ -f "$out/eager.txt" ] && tail -12 "$out/eager.txt"
exit $failed

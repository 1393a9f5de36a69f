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
any_failed=0

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

export SPECBLOCK_REQUIRE_GPU=1
run_tests() {
for name in "$@"; do
    t=gpu-bundle/$name
    [ -x "$t" ] || continue
    log=$(mktemp)
    timeout "$(left ${TEST_SECONDS:-60})" "$t" --test-threads=1 > "$log" 2>&1
    rc=$?
    { echo "===== $name (rc $rc)"; cat "$log"; } >> "$out/tests.txt"
    [ $rc -eq 0 ] || any_failed=1
    passed=$(grep -o '[0-9]* passed' "$log" | tail -1)
    failed=$(grep -o '[0-9]* failed' "$log" | tail -1)
    if [ $rc -eq 0 ]; then
        note "test  $name: ok ($passed)"
    else
        note "test  $name: FAILED rc=$rc ($passed, $failed)"
        grep -E "panicked|assert|Error|error|FAILED|failed" "$log" | head -20
    fi
done
}

# The quick tests of the newest code first, then the benchmarks, then the long parity sweeps, so a
# short lease still yields numbers.
first="cuda_runtime cuda_c_api cuda_block"
echo "== GPU tests, first part (SPECBLOCK_REQUIRE_GPU=1: a missing GPU fails)"
run_tests $first

echo "== microbenchmarks"
timeout "$(left ${BENCH_SECONDS:-120})" gpu-bundle/bench_cuda --json "$out/bench.json" 2>&1 | tee "$out/bench.txt"
note "bench rc=${PIPESTATUS[0]} ($(grep -c ' us ' "$out/bench.txt") rows)"

echo "== PyTorch eager baseline (drafter block forward)"
if [ -f tools/cuda/drafter_eager.py ]; then
    timeout "$(left ${EAGER_SECONDS:-60})" python3 tools/cuda/drafter_eager.py --out "$out/eager.json" 2>&1 | tee "$out/eager.txt"
    note "eager rc=${PIPESTATUS[0]}"
fi

echo "== GPU tests, the rest"
run_tests $(cd gpu-bundle && ls cuda_* | grep -v -x -F "$(echo $first | tr ' ' '\n')")

left=$(( deadline - $(date +%s) ))
if command -v compute-sanitizer >/dev/null 2>&1 && [ $left -gt 40 ]; then
    echo "== compute-sanitizer memcheck over the tests (${left}s left)"
    per=$(( left / 4 ))
    for t in gpu-bundle/cuda_*; do
        name=$(basename "$t")
        log=$(mktemp)
        timeout "$(left $per)" compute-sanitizer --tool memcheck --error-exitcode 9 "$t" --test-threads=1 \
            > "$log" 2>&1
        rc=$?
        { echo "===== $name (rc $rc)"; cat "$log"; } >> "$out/memcheck.txt"
        errs=$(grep -c "Invalid\|out of bounds\|misaligned" "$log")
        note "memcheck $name: rc=$rc, $errs error lines"
    done
fi

echo
echo "================ gpu-check summary ($(( $(date +%s) - start )) s) ================"
printf '%s\n' "${summary[@]}"
echo "---- benchmark rows (median us) ----"
grep ' us ' "$out/bench.txt" | cut -c1-150
[ -f "$out/eager.txt" ] && tail -12 "$out/eager.txt"
exit $any_failed

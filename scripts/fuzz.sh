#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/fuzz_targets, cargo fuzz on the nightly toolchain, AddressSanitizer,
# debug assertions and overflow checks on) for SECONDS each, starting from the committed seeds
# (fuzz/seeds/<target>/, which also hold every crash ever found: each run replays them first).
#
#   scripts/fuzz.sh SECONDS [TARGET...]
#
# New corpus entries go to $FUZZ_HOME/corpus/<target> (outside the checkout, reused by later runs;
# FUZZ_FRESH_CORPUS=1 starts from the seeds alone and keeps nothing);
# a crash stops the run with the input saved under $FUZZ_HOME/artifacts/<target>/ and a non-zero exit.
# Limits per input: 2 GiB of memory (a larger allocation is a crash: loaders must bound what a file can
# make them allocate) and 10 s.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(safetensors drafter_config eagle3_config drafter_dir gguf tokenizer_json c_api)
fi
FUZZ_HOME=${FUZZ_HOME:-$HOME/.cache/specblock/fuzz}
# The build directory lives with the corpus, outside the checkout: a fresh clone reuses the compiled
# dependencies (the nightly, sanitized build of the whole crate graph takes minutes on 2 cores).
target_dir="$FUZZ_HOME/target"
toolchain=${FUZZ_TOOLCHAIN:-nightly}

if ! rustup run "$toolchain" rustc --version >/dev/null 2>&1; then
    echo "fuzz: installing the $toolchain Rust toolchain (rustup, minimal profile)"
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz 0.13.1 (cargo install, about 2 minutes)"
    cargo install cargo-fuzz --locked --version 0.13.1
fi

build=(cargo "+$toolchain" fuzz build --fuzz-dir fuzz --target-dir "$target_dir" -O -a)
echo "fuzz: ${build[*]}"
"${build[@]}"

for t in "${targets[@]}"; do
    corpus="$FUZZ_HOME/corpus/$t"
    if [ -n "${FUZZ_FRESH_CORPUS:-}" ]; then
        # A pass that starts from the committed seeds alone (make test's smoke pass: the same inputs on
        # every machine, and a start-up that does not grow with the saved corpus).
        corpus=$(mktemp -d)
    fi
    artifacts="$FUZZ_HOME/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    echo "fuzz: $t for ${seconds}s (seeds fuzz/seeds/$t, corpus $corpus)"
    # libFuzzer's progress lines are filtered out of the log; its exit status decides.
    set +e
    # The binary cargo fuzz built above, run directly (a cargo fuzz run per target would re-check the
    # whole build each time).
    "$target_dir/x86_64-unknown-linux-gnu/release/$t" "$corpus" "fuzz/seeds/$t" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$FUZZ_HOME/$t.log" 2>&1
    status=$?
    set -e
    if [ -n "${FUZZ_FRESH_CORPUS:-}" ]; then rm -rf "$corpus"; fi
    grep -E "^(#[0-9]+ +(INITED|DONE)|Done |stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|thread '|panicked|assertion|  left|  right|Test unit written)" \
        "$FUZZ_HOME/$t.log" || true
    if [ "$status" -ne 0 ]; then
        echo "fuzz: $t FAILED (exit $status); the input is in $artifacts/, the log in $FUZZ_HOME/$t.log"
        echo "fuzz: replay it with: cargo +$toolchain fuzz run --fuzz-dir fuzz -O -a $t <input>"
        exit 1
    fi
done
echo "fuzz: ${#targets[@]} targets, ${seconds}s each: no crash"

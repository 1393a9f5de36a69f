#!/usr/bin/env bash
# Checks that a change left outputs and speed alone: runs two `specblock` binaries (say the previous
# commit's and this one's) on the same prompts with the same settings, ROUNDS times, alternating, then
# compares (tools/bench/same_outputs.py): identical output tokens for every method, identical iteration
# counts for the fixed draft shapes (the adaptive policy's depend on measured time), median tokens/s.
# Run it on an idle machine.
#
# usage: tools/bench/same_outputs.sh OLD_BINARY NEW_BINARY OUT_DIR [ROUNDS] [PROMPTS.jsonl]
set -u
OLD=$1; NEW=$2; OUT=$3; ROUNDS=${4:-2}
PROMPTS=${5:-}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
mkdir -p "$OUT"
if [ -z "$PROMPTS" ]; then PROMPTS=$OUT/prompts.jsonl; head -8 data/prompts/mtbench.jsonl > "$PROMPTS"; fi
for r in $(seq 1 "$ROUNDS"); do
  for cfg in "ar" "specblock --budget 4 --max-seeds 0" "specblock --budget 16" \
             "eagle3 --budget 4 --eagle-depth 4 --eagle-topk 1" "specblock" "eagle3"; do
    tag=$(echo "$cfg" | tr ' ' '_')
    for which in old new; do
      bin=$OLD; [ "$which" = new ] && bin=$NEW
      # shellcheck disable=SC2086 # cfg is the method and its options
      "$bin" generate --model "$MODEL" --bf16 --prompt-file "$PROMPTS" --max-new 64 --json --method $cfg \
        > "$OUT/$which.$tag.r$r.jsonl" 2> "$OUT/$which.$tag.r$r.err" || echo "FAILED: $which $cfg"
    done
  done
done
python3 "$(dirname "$0")/same_outputs.py" "$OUT"

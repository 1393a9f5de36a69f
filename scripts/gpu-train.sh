#!/usr/bin/env bash
# Drafter data generation and training on a GPU machine, in one bounded call (docs/training.md, "On a
# GPU"): the target in PyTorch answers the tokenized training prompts (tools/train/datagen_torch.py), then
# both drafters train for the same number of tokens (tools/train/train.py --device cuda), continuing the
# committed drafters when they are present, else from the target-initialised heads. The exported drafters
# with their learning curves (as drafters.tar.part-* for the device tool's 16 MB file limit) and the logs go
# to $OUT (or target/gpu-train/).
#
# Needs, in the working tree: the GGUF at $GGUF (default models/SmolLM2-135M-Instruct.Q4_1.gguf), the
# tokenized prompts at $PROMPT_IDS (make it here with `specblock tokenize --prompts
# data/prompts/sharegpt_train.jsonl --out data/prompts/sharegpt_train.ids.jsonl`), and Python packages
# torch, safetensors, numpy, gguf (a pure-Python wheel: carry .whl/gguf-0.19.0-py3-none-any.whl and set
# WHEELS=.whl), matplotlib for the curve plots (optional).
#
# Budget knobs (seconds and tokens): GPU_TRAIN_SECONDS (whole call, default 540), DATAGEN_TOKENS (default
# 3000000), TRAIN_TOKENS (per drafter, default 4000000), BATCH (windows per step, default 64).
# DEVICE=cpu runs the same steps on the CPU (the script's own smoke test, with tiny budgets).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-target/gpu-train}
mkdir -p "$out"
start=$(date +%s)
deadline=$(( start + ${GPU_TRAIN_SECONDS:-540} ))
left() { echo $(( deadline - $(date +%s) )); }
gguf=${GGUF:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
ids=${PROMPT_IDS:-data/prompts/sharegpt_train.ids.jsonl}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [ -n "${WHEELS:-}" ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
[ -f "$gguf" ] || { echo "no target at $gguf"; exit 1; }
[ -f "$ids" ] || { echo "no tokenized prompts at $ids"; exit 1; }
if [ "$device" = cuda ]; then
    nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee "$out/device.txt"
fi

data=${DATA:-/tmp/specblock-datagen}
echo "== datagen ($device)"
timeout $(( $(left) / 3 )) $py tools/train/datagen_torch.py --prompt-ids "$ids" --out "$data" --model "$gguf" \
    --device "$device" --batch "${DATAGEN_BATCH:-256}" --target-tokens "${DATAGEN_TOKENS:-3000000}" \
    ${DATAGEN_LIMIT:+--limit $DATAGEN_LIMIT} ${MAX_NEW:+--max-new $MAX_NEW} 2>&1 | tee "$out/datagen.txt"
[ -f "$data/manifest.json" ] || { echo "datagen wrote nothing"; exit 1; }

for method in eagle3 specblock; do
    remaining=$(left)
    [ "$remaining" -gt 30 ] || { echo "no time left for $method"; break; }
    # Half of what is left for the first, all of it for the second: the same token budget, a time cap.
    [ $method = eagle3 ] && budget=$(( remaining / 2 - 15 )) || budget=$(( remaining - 20 ))
    mkdir -p "$out/$method"
    init=()
    if [ -f "models/drafters/$method/model.safetensors" ]; then
        cp -r "models/drafters/$method/." "$out/$method/"
        init=(--init-from "$out/$method")
    else
        init=(--vocab "${VOCAB:-data/vocab/draft_vocab.json}")
    fi
    echo "== train $method ($device, ${budget}s)"
    $py tools/train/train.py --method $method --data "$data" --embed "$gguf" --out "/tmp/run-$method" \
        --device "$device" --batch "${BATCH:-64}" --lr "${LR:-5e-4}" --tokens "${TRAIN_TOKENS:-4000000}" \
        --minutes "$(echo "$budget" | awk '{print $1 / 60}')" --eval-minutes 1 --eval-every 1000000 \
        --eval-windows "${EVAL_WINDOWS:-64}" --export-best "$out/$method" "${init[@]}" \
        --note "scripts/gpu-train.sh on $device" 2>&1 | tee "$out/train-$method.txt"
done
# At most 8 files of 16 MB come back from a device call: the drafter directories travel as one tar in
# 15 MB parts. Here: cat OUT/drafters.tar.part-* | tar -xf - -C models/drafters
tar -C "$out" -cf - eagle3 specblock 2>/dev/null | split -b 15m - "$out/drafters.tar.part-"
rm -rf "$out/eagle3" "$out/specblock"
ls -la "$out"
echo "== done in $(( $(date +%s) - start )) s"

#!/usr/bin/env python3
"""Reference outputs of Hugging Face transformers on SmolLM2-135M-Instruct (the dequantized GGUF), for
the engine's correctness tests. Run once and commit the JSON it writes:

    python tools/engine/scripts/reference_fixture.py models/SmolLM2-135M-Instruct.Q4_1.gguf \
        tools/engine/tests/fixtures/reference_logits.json

Needs: torch, transformers (5.x), accelerate, gguf, numpy. Prompt token ids come from transformers'
tokenizer and are stored, so the test does not depend on the engine's tokenizer.
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a Python function that returns the n-th Fibonacci number."}],
    [{"role": "user", "content": "List three colors of the rainbow."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Explain gravity in 2 sentences."}],
]
GREEDY_TOKENS = 40
FEATURE_LAYERS = [1, 14, 26]  # decoder layer indices; hidden_states[i + 1] is layer i's output
TOP = 40
RANDOM_IDS = 24


def main():
    gguf_path, out_path = sys.argv[1], sys.argv[2]
    d, name = os.path.split(os.path.abspath(gguf_path))
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    rng = np.random.default_rng(1234)
    cases = []
    for msgs in PROMPTS:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
        logits = out.logits[0].double().numpy()
        positions = sorted({0, len(ids) // 2, len(ids) - 2, len(ids) - 1})
        rows = []
        for p in positions:
            row = logits[p]
            top = np.argsort(-row)[:TOP]
            rand = rng.choice(len(row), RANDOM_IDS, replace=False)
            picked = sorted(set(int(i) for i in top) | set(int(i) for i in rand))
            rows.append({
                "position": p,
                "argmax": int(np.argmax(row)),
                "ids": picked,
                "logits": [round(float(row[i]), 6) for i in picked],
            })
        feats = []
        for layer in FEATURE_LAYERS:
            h = out.hidden_states[layer + 1][0, -1].double().numpy()
            feats.append({"layer": layer, "first": [round(float(v), 6) for v in h[:32]],
                          "norm": float(np.linalg.norm(h))})
        # Greedy by full forwards (argmax of the last row each step). transformers' `generate` takes
        # another numeric path and, on this model, picks a different token where the top two logits are
        # 0.08 apart; a plain forward loop agrees with its own cached decoding.
        seq = list(ids)
        margins = []
        for _ in range(GREEDY_TOKENS):
            with torch.no_grad():
                last = model(torch.tensor([seq])).logits[0, -1].double()
            top2 = torch.topk(last, 2).values
            margins.append(round(float(top2[0] - top2[1]), 5))
            seq.append(int(torch.argmax(last)))
        gen = seq[len(ids):]
        cases.append({
            "messages": msgs,
            "prompt_ids": ids,
            "rows": rows,
            "features_last_position": feats,
            "greedy": gen,
            "greedy_top2_margins": margins,
        })
        print(f"{len(ids)} prompt tokens -> {tok.decode(gen)!r}; min margin {min(margins)}", file=sys.stderr)
    meta = {"transformers": __import__("transformers").__version__, "torch": torch.__version__,
            "model": name, "dtype": "float32", "greedy_tokens": GREEDY_TOKENS}
    with open(out_path, "w") as f:
        json.dump({"meta": meta, "cases": cases}, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()

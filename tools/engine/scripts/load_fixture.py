#!/usr/bin/env python3
"""Writes tools/engine/tests/fixtures/load.json: spot values of HF-layout tensors of the SmolLM2 GGUF, for
the Rust loader (`load_gguf`) to match.

Each tensor is dequantized with gguf.quants and its q/k rows are un-permuted from llama.cpp's interleaved
RoPE order back to Hugging Face's rotate-half order with
    w.reshape(n_head, hd/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
(n_head = attention.head_count for q, attention.head_count_kv for k). When torch is importable, the same
tensors are also loaded through transformers' own GGUF loader and must be identical.

Recorded per tensor: its shape, a few rows (chosen to straddle the RoPE halves and heads) at a few
columns as f32 bits, and two f64 checksums over the whole tensor (plain sum and a row-weighted sum,
which changes if any rows are swapped).

Usage (needs numpy and gguf==0.19.0; transformers + torch + accelerate for the cross-check):
    python tools/engine/scripts/load_fixture.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

ROOT = pathlib.Path(__file__).resolve().parents[3]
OUT = ROOT / "tools/engine/tests/fixtures/load.json"
DEFAULT_MODEL = ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
TENSORS = {
    "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
    "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
    "blk.29.attn_q.weight": "model.layers.29.self_attn.q_proj.weight",
    "blk.29.attn_k.weight": "model.layers.29.self_attn.k_proj.weight",
    "blk.7.attn_v.weight": "model.layers.7.self_attn.v_proj.weight",
    "blk.12.ffn_down.weight": "model.layers.12.mlp.down_proj.weight",
    "token_embd.weight": "model.embed_tokens.weight",
    "blk.3.attn_norm.weight": "model.layers.3.input_layernorm.weight",
}
ROWS = [0, 1, 2, 31, 32, 33, 63, 64, 65, 127, 128, 191]
COLS = [0, 1, 2, 3, 100, 287, 288, 575]


def field(reader, key):
    f = reader.fields[key]
    return f.parts[f.data[0]][0]


def unpermute(w, n_head):
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    reader = GGUFReader(str(model))
    n_head = int(field(reader, "llama.attention.head_count"))
    n_kv = int(field(reader, "llama.attention.head_count_kv"))
    by_name = {t.name: t for t in reader.tensors}
    hf = {}
    for name, hf_name in TENSORS.items():
        t = by_name[name]
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if ".attn_q." in name:
            w = unpermute(w, n_head)
        elif ".attn_k." in name:
            w = unpermute(w, n_kv)
        hf[hf_name] = np.ascontiguousarray(w)

    verified = cross_check(model, hf)

    records = []
    for hf_name, w in hf.items():
        w2 = w.reshape(w.shape[0], -1) if w.ndim == 2 else w.reshape(1, -1)
        rows = [r for r in ROWS if r < w2.shape[0]]
        cols = [c for c in COLS if c < w2.shape[1]]
        w64 = w2.astype(np.float64)
        records.append({
            "name": hf_name,
            "shape": list(w.shape),
            "rows": rows,
            "cols": cols,
            "bits": [[int(b) for b in w2[r, cols].view(np.uint32)] for r in rows],
            "sum": float(w64.sum()),
            "row_weighted_sum": float((w64.sum(axis=1) * np.arange(1, w2.shape[0] + 1)).sum()),
        })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": "tools/engine/scripts/load_fixture.py",
        "checked_against_transformers": verified,
        "tensors": records,
    }
    OUT.write_text(json.dumps(doc) + "\n")
    print(f"wrote {len(records)} tensors to {OUT} (transformers cross-check: {verified})")


def cross_check(model, hf):
    """Loads the GGUF with transformers and requires identical tensors; returns whether it ran."""
    try:
        import torch  # noqa: F401
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        print(f"transformers cross-check skipped: {e}", file=sys.stderr)
        return False
    m = AutoModelForCausalLM.from_pretrained(str(model.parent), gguf_file=model.name, dtype=torch.float32)
    sd = m.state_dict()
    for name, w in hf.items():
        theirs = sd[name].detach().cpu().numpy()
        assert theirs.shape == w.shape, (name, theirs.shape, w.shape)
        diff = np.abs(theirs - w).max()
        assert diff == 0, f"{name}: max abs diff {diff} against transformers"
        print(f"{name}: identical to transformers", file=sys.stderr)
    return True


if __name__ == "__main__":
    main()

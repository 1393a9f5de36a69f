#!/usr/bin/env python3
"""Writes tools/engine/tests/fixtures/quant.json: raw ggml blocks and what gguf.quants.dequantize makes
of them, for the Rust dequantizer to match bit for bit.

Cases: the first 2 blocks of a few real tensors of the SmolLM2 Q4_1 GGUF (Q4_1, Q8_0, F32), and random
blocks quantized with gguf's own quantize() for Q4_0, Q4_1, Q8_0, F16 and BF16, plus special F16/BF16 bit
patterns (subnormals, infinities, NaN).

Usage (needs numpy and gguf==0.19.0):
    python tools/engine/scripts/quant_fixture.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

ROOT = pathlib.Path(__file__).resolve().parents[3]
OUT = ROOT / "tools/engine/tests/fixtures/quant.json"
DEFAULT_MODEL = ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_TENSORS = ["token_embd.weight", "blk.0.attn_q.weight", "blk.17.ffn_down.weight", "output_norm.weight"]


def case(name, qtype, raw):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    block_len, block_bytes = GGML_QUANT_SIZES[qtype]
    n = raw.size // block_bytes * block_len
    want = np.asarray(dequantize(raw.reshape(1, -1), qtype), dtype=np.float32).reshape(-1)
    assert want.size == n, (name, want.size, n)
    return {
        "name": name,
        "type": qtype.name,
        "n": n,
        "bytes": raw.tobytes().hex(),
        # f32 bit patterns, so the comparison is exact and NaN/inf survive JSON.
        "expected_bits": [int(b) for b in want.view(np.uint32)],
    }


def main():
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    cases = []
    reader = GGUFReader(str(model))
    by_name = {t.name: t for t in reader.tensors}
    for name in REAL_TENSORS:
        t = by_name[name]
        qtype = T(t.tensor_type)
        block_len, block_bytes = GGML_QUANT_SIZES[qtype]
        n_blocks = 2 if block_len > 1 else 64
        raw = np.asarray(t.data).view(np.uint8).reshape(-1)[: n_blocks * block_bytes]
        cases.append(case(f"{name} (first {n_blocks} blocks)", qtype, raw))

    rng = np.random.default_rng(20240611)
    for qtype in [T.Q4_0, T.Q4_1, T.Q8_0, T.F16, T.BF16]:
        x = (rng.standard_normal((1, 64)) * rng.uniform(0.01, 3.0)).astype(np.float32)
        x[0, 5] = 0.0
        raw = np.asarray(quantize(x, qtype)).view(np.uint8)
        cases.append(case(f"random {qtype.name}", qtype, raw))

    specials = np.array(
        [0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0x3555, 0x8001],
        dtype=np.uint16,
    )
    cases.append(case("special F16 bit patterns", T.F16, specials.view(np.uint8)))
    specials_bf = np.array(
        [0x0000, 0x8000, 0x0001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0x3EAB, 0x8001],
        dtype=np.uint16,
    )
    cases.append(case("special BF16 bit patterns", T.BF16, specials_bf.view(np.uint8)))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"generator": "tools/engine/scripts/quant_fixture.py", "cases": cases}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()

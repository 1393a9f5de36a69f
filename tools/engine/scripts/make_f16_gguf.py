#!/usr/bin/env python3
"""Writes an F16 GGUF of a (quantized) GGUF model, for benchmarking llama.cpp on unquantized weights.

Every 2-D tensor is dequantized with gguf.quants.dequantize and stored as F16; 1-D tensors (the RMS norms)
are stored as F32. Tensor names, their order and the GGUF row order (the q/k rows stay permuted for ggml's
RoPE) are kept as they are. All metadata is copied except general.file_type, which becomes MOSTLY_F16.

Usage (needs numpy and gguf==0.19.0):
    python tools/engine/scripts/make_f16_gguf.py IN.gguf OUT.gguf
"""
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter, Keys, LlamaFileType
from gguf.quants import dequantize


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    reader = GGUFReader(src)
    arch = reader.get_field(Keys.General.ARCHITECTURE).contents()
    writer = GGUFWriter(dst, arch)

    for field in reader.fields.values():
        # GGUF.* are the header's virtual fields; the writer adds the architecture itself.
        if field.name.startswith("GGUF.") or field.name in (Keys.General.ARCHITECTURE, Keys.General.FILE_TYPE):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub_type)
    writer.add_file_type(LlamaFileType.MOSTLY_F16)

    counts = {}
    worst = 0.0
    for t in reader.tensors:
        # dequantize gives the torch layout (rows, cols), i.e. the GGUF ne reversed; the writer reverses it back.
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(tuple(int(d) for d in reversed(t.shape)))
        out = w.astype(np.float16) if w.ndim == 2 else w
        if w.ndim == 2:
            if not np.isfinite(out).all():
                sys.exit(f"{t.name}: values overflow F16")
            worst = max(worst, float(np.max(np.abs(out.astype(np.float32) - w))))
        key = f"{GGMLQuantizationType(t.tensor_type).name}->{'F16' if w.ndim == 2 else 'F32'}"
        counts[key] = counts.get(key, 0) + 1
        writer.add_tensor(t.name, out)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {dst}: {len(reader.tensors)} tensors ({', '.join(f'{k} x{v}' for k, v in sorted(counts.items()))}); "
          f"largest absolute F16 rounding error {worst:.2e}")


if __name__ == "__main__":
    main()

"""Writes the committed seed corpora of the fuzz targets (fuzz/seeds/<target>/).

Run from the repository root with the trainer's Python (torch, numpy, safetensors, gguf):
    $(TRAIN_PY) fuzz/seeds/make_seeds.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf
Every seed is small (the largest is a bf16 copy of a test drafter): the fuzzers mutate from valid
files of each format, so that a short run already reaches the checks behind the header.
"""

import argparse
import json
import shutil
import struct
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save as save_numpy
from safetensors.torch import load_file, save as save_torch

FIXTURES = Path("tools/engine/tests/fixtures")
OUT = Path("fuzz/seeds")


def write(target: str, name: str, data: bytes) -> None:
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def safetensors_seeds() -> None:
    rng = np.random.default_rng(1)
    tensors = {
        "a.f32": rng.standard_normal((2, 3)).astype(np.float32),
        "b.f16": rng.standard_normal((4,)).astype(np.float16),
        "c.i64": np.array([0, -1, 7], dtype=np.int64),
        "d.bool": np.array([True, False, True]),
        "e.empty": np.zeros((0, 3), dtype=np.float32),
    }
    write("safetensors", "dtypes.safetensors", save_numpy(tensors, metadata={"format": "pt"}))
    bf16 = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3).to(torch.bfloat16)}
    write("safetensors", "bf16.safetensors", save_torch(bf16))
    write("safetensors", "golden_tree.safetensors", (FIXTURES / "drafter_tree_golden.safetensors").read_bytes())


def config_seeds() -> None:
    for target, dirs in [
        ("drafter_config", ["drafter_tiny", "trained_specblock"]),
        ("eagle3_config", ["eagle3_tiny", "trained_eagle3"]),
    ]:
        for d in dirs:
            write(target, f"{d}.json", (FIXTURES / d / "config.json").read_bytes())
    write("drafter_config", "committed.json", Path("models/drafters/specblock/config.json").read_bytes())
    write("eagle3_config", "committed.json", Path("models/drafters/eagle3/config.json").read_bytes())


def drafter_dir_seeds() -> None:
    """`[u32 config length][config.json][model.safetensors]`, float tensors as bf16 to halve the size."""
    for d in ["drafter_tiny", "eagle3_tiny"]:
        config = (FIXTURES / d / "config.json").read_bytes()
        tensors = load_file(str(FIXTURES / d / "model.safetensors"))
        small = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in tensors.items()}
        model = save_torch(small)
        write("drafter_dir", f"{d}.bin", struct.pack("<I", len(config)) + config + model)


def tokenizer_json_seeds() -> None:
    write("tokenizer_json", "tiny.json", (FIXTURES / "tokenizer_tiny.json").read_bytes())


def gguf_seed(model: Path) -> None:
    """A one-layer llama GGUF (width 64, vocabulary 600) with the real model's tokenizer metadata cut to
    the first 600 tokens and the merges among them, Q8_0 / Q4_1 / F16 / F32 tensors."""
    import gguf
    from gguf.quants import quantize

    src = gguf.GGUFReader(str(model))
    field = lambda k: src.fields[k]  # noqa: E731
    strings = lambda f: [bytes(f.parts[i]).decode("utf-8") for i in f.data]  # noqa: E731
    vocab = 600
    tokens = strings(field("tokenizer.ggml.tokens"))[:vocab]
    kept = set(tokens)
    types = [int(field("tokenizer.ggml.token_type").parts[i][0]) for i in field("tokenizer.ggml.token_type").data][:vocab]
    merges = [m for m in strings(field("tokenizer.ggml.merges")) if all(p in kept for p in m.split(" ")) and m.replace(" ", "") in kept]
    template = bytes(field("tokenizer.chat_template").parts[field("tokenizer.chat_template").data[0]]).decode()

    path = OUT / "gguf" / "tiny_llama.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_feed_forward_length(96)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_rope_freq_base(100000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(vocab)
    w.add_rope_dimension_count(16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template(template)
    rng = np.random.default_rng(2)
    mat = lambda rows, cols: (rng.standard_normal((rows, cols)) * 0.1).astype(np.float32)  # noqa: E731
    q = gguf.GGMLQuantizationType
    w.add_tensor("token_embd.weight", quantize(mat(vocab, 64), q.Q8_0), raw_dtype=q.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(64, dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", quantize(mat(64, 64), q.Q4_1), raw_dtype=q.Q4_1)
    w.add_tensor("blk.0.attn_k.weight", quantize(mat(32, 64), q.Q4_1), raw_dtype=q.Q4_1)
    w.add_tensor("blk.0.attn_v.weight", mat(32, 64).astype(np.float16))
    w.add_tensor("blk.0.attn_output.weight", quantize(mat(64, 64), q.Q4_1), raw_dtype=q.Q4_1)
    w.add_tensor("blk.0.ffn_gate.weight", quantize(mat(96, 64), q.Q4_1), raw_dtype=q.Q4_1)
    w.add_tensor("blk.0.ffn_up.weight", quantize(mat(96, 64), q.Q4_1), raw_dtype=q.Q4_1)
    w.add_tensor("blk.0.ffn_down.weight", quantize(mat(64, 96), q.Q4_1), raw_dtype=q.Q4_1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def c_api_seeds() -> None:
    """Programs for the C API state machine (see fuzz/fuzz_targets/c_api.rs for the byte encoding)."""
    prefill = [11, 0, 4] + [10, 1, 0] * 4 + [1, 10]  # 4 tokens, 3 feature rows of 0.0-ish values
    session = lambda kind: [9, 0, kind, 0, 1, 0]  # noqa: E731  slot 0, default params, no arms
    iterate = [17, 0] + [1] * 64
    for kind in (0, 1):
        write("c_api", f"decode_{kind}.bin", bytes(session(kind) + prefill + iterate * 4))
    tree = [0, 0, 40, 8, 1] + [2, 0, 10, 5, 0] + sum(([3, 0, 2, 10, k, 0, 200] for k in range(6)), []) + [4, 0, 4] + [5, 0, 200, 3, 8, 6, 3, 1]
    write("c_api", "tree_layouts.bin", bytes(tree + [6, 0, 7] + [10, 1, 0] * 7 + [1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="the SmolLM2 GGUF (its tokenizer metadata)")
    args = ap.parse_args()
    for target in ["safetensors", "drafter_config", "eagle3_config", "drafter_dir", "gguf", "tokenizer_json", "c_api"]:
        shutil.rmtree(OUT / target, ignore_errors=True)
    safetensors_seeds()
    config_seeds()
    drafter_dir_seeds()
    tokenizer_json_seeds()
    gguf_seed(args.model)
    c_api_seeds()
    for d in sorted(p for p in OUT.iterdir() if p.is_dir()):
        print(f"{d}: {len(list(d.iterdir()))} seeds, {sum(f.stat().st_size for f in d.iterdir())} bytes")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Converts the SmolLM2 GGUF into a Hugging Face Llama directory: config.json, model.safetensors (f32) and
the tokenizer files. The engine's `load_hf_dir` on the result must equal `load_gguf` on the GGUF, tensor
for tensor (tools/engine/tests/hf_dir.rs, run with SPECBLOCK_HF_DIR=<out>).

Tensors are dequantized with gguf.quants and q/k rows are un-permuted back to HF's rotate-half order:
    w.reshape(n_head, hd/2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
(n_head = head_count for q, head_count_kv for k), the same as transformers' GGUF loader.

Usage (needs numpy, gguf==0.19.0, safetensors; transformers + tokenizers for the tokenizer files):
    python tools/engine/scripts/gguf_to_hf.py OUT_DIR [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import json
import pathlib
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file

ROOT = pathlib.Path(__file__).resolve().parents[3]
DEFAULT_MODEL = ROOT / "models/SmolLM2-135M-Instruct.Q4_1.gguf"

LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(f"GGUF metadata {key} is missing")
        return default
    return f.parts[f.data[0]][0].item()


def hf_name(name):
    base, suffix = name.rsplit(".", 1)
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{suffix}"
    blk, layer, part = base.split(".")
    assert blk == "blk", name
    return f"model.layers.{int(layer)}.{LAYER_NAMES[part]}.{suffix}"


def unpermute(w, n_head):
    rows, cols = w.shape
    return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    model = pathlib.Path(sys.argv[2]) if len(sys.argv) == 3 else DEFAULT_MODEL
    reader = GGUFReader(str(model))
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    assert arch == "llama", f"general.architecture is {arch!r}"
    n_head = int(field(reader, "llama.attention.head_count"))
    n_kv = int(field(reader, "llama.attention.head_count_kv", n_head))
    hidden = int(field(reader, "llama.embedding_length"))

    tensors = {}
    for t in reader.tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        if ".attn_q." in t.name:
            w = unpermute(w, n_head)
        elif ".attn_k." in t.name:
            w = unpermute(w, n_kv)
        tensors[hf_name(t.name)] = np.ascontiguousarray(w)
    vocab = tensors["model.embed_tokens.weight"].shape[0]

    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": hidden // n_head,
        "hidden_act": "silu",
        "rms_norm_eps": float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "vocab_size": vocab,
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id")),
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {len(tensors)} tensors and config.json to {out}")

    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        print(f"tokenizer not written (transformers missing: {e})", file=sys.stderr)
        return
    tok = AutoTokenizer.from_pretrained(str(model.parent), gguf_file=model.name)
    tok.save_pretrained(str(out))
    print(f"wrote tokenizer files to {out}")


if __name__ == "__main__":
    main()

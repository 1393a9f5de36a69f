"""The target's weights for initialising a drafter: the tied embedding, the final norm and the last decoder
layers of SmolLM2 (or any Llama GGUF / HF safetensors checkpoint), as f32 torch tensors with Hugging Face
names (`model.embed_tokens.weight`, `model.norm.weight`, `model.layers.N.self_attn.q_proj.weight`, ...).

GGUF tensors are dequantized with gguf.quants and q/k rows are un-permuted back to HF's rotate-half order
(the conversion of tools/engine/scripts/gguf_to_hf.py, which this module reuses).
"""
from __future__ import annotations

import os
import sys

import torch

_SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine", "scripts")
DEFAULT_PATHS = ("/work/scratch/hf_smollm2/model.safetensors", "models/SmolLM2-135M-Instruct.Q4_1.gguf")


def default_path(path: str | None) -> str:
    if path is not None:
        return path
    for p in DEFAULT_PATHS:
        if os.path.exists(p):
            return p
    raise FileNotFoundError("no target checkpoint found; pass --embed (the GGUF or an HF model.safetensors)")


def load_tensors(path: str | None = None, want=None) -> dict:
    """HF-named f32 tensors of the target checkpoint at `path` (a GGUF file or an HF model.safetensors);
    `want(name) -> bool` selects which (all when None)."""
    path = default_path(path)
    want = want or (lambda name: True)
    if path.endswith(".gguf"):
        import numpy as np
        from gguf import GGUFReader
        from gguf.quants import dequantize
        if _SCRIPTS not in sys.path:
            sys.path.insert(0, _SCRIPTS)
        from gguf_to_hf import field, hf_name, unpermute
        r = GGUFReader(path)
        n_head = int(field(r, "llama.attention.head_count"))
        n_kv = int(field(r, "llama.attention.head_count_kv", n_head))
        out = {}
        for t in r.tensors:
            name = hf_name(t.name)
            if not want(name):
                continue
            w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
            if w.ndim == 1:
                pass
            elif ".attn_q." in t.name:
                w = unpermute(w, n_head)
            elif ".attn_k." in t.name:
                w = unpermute(w, n_kv)
            out[name] = torch.from_numpy(np.array(w, dtype=np.float32, order="C", copy=True))
        return out
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k).float() for k in f.keys() if want(k)}


def num_layers(tensors: dict) -> int:
    return 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("model.layers."))


def load_embedding(path: str | None = None) -> torch.Tensor:
    """The target's token embedding [V, H] in f32 (tied with its LM head)."""
    return load_tensors(path, lambda n: n == "model.embed_tokens.weight")["model.embed_tokens.weight"]


LAYER_PARTS = ("input_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
               "self_attn.o_proj", "post_attention_layernorm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@torch.no_grad()
def init_head(model, tensors: dict, draft_ids: torch.Tensor):
    """The draft LM head = the target's tied embedding rows of the draft vocabulary, and the drafter's final
    norm = the target's final norm: the drafter starts out reading its hidden state as the target would."""
    embed = tensors["model.embed_tokens.weight"]
    model.lm_head.weight.copy_(embed[draft_ids.cpu()].to(model.lm_head.weight))
    model.norm.weight.copy_(tensors["model.norm.weight"].to(model.norm.weight))


@torch.no_grad()
def init_layers(model, tensors: dict, method: str) -> list[str]:
    """Copies the target's last decoder layers into the drafter's where the shapes match: SpecBlock's n
    layers take target layers L-n..L-1 whole; EAGLE-3's one layer (whose attention reads 2H) takes the last
    layer's MLP, post-attention norm and output projection. Returns the names copied."""
    L = num_layers(tensors)
    copied = []
    layers = model.layers if method == "specblock" else [model.midlayer]
    parts = LAYER_PARTS if method == "specblock" else ("self_attn.o_proj", "post_attention_layernorm",
                                                       "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    for i, layer in enumerate(layers):
        src = L - len(layers) + i
        for part in parts:
            mod = layer.get_submodule(part)
            w = tensors[f"model.layers.{src}.{part}.weight"]
            if tuple(mod.weight.shape) != tuple(w.shape):
                continue
            mod.weight.copy_(w.to(mod.weight))
            copied.append(f"{part} <- layer {src}")
    return copied

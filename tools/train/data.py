"""Training data for the drafter trainers: the `specblock datagen` shards, the draft vocabulary and the
target's embedding (the soft labels are recomputed from the stored final hidden state).

Shard layout (tools/engine/src/datagen.rs, `write_shard`): `tokens` [T] I64, `loss_mask` [T] I64 (1 on
assistant tokens), `seq_offsets` [n + 1] I64, `features` [T, 3H] F16 (aux layers, pre-norm residual outputs),
`final_hidden` [T, H] F16 (after the target's final RMSNorm, so target logits = final_hidden @ E^T with the
tied embedding). The last token of each sequence was never fed: its feature and hidden rows are zero.

Index conventions used by the losses (row i of a window):
- features[i], hidden[i] belong to token x_i; hidden[i] gives the target's distribution over x_{i+1};
- `pm[i]` ("position mask") = x_{i+1} exists and is an assistant token and the target's argmax at i lies in
  the draft vocabulary. A label taken from row i counts only where pm[i] = 1.

Sequences are cut into windows of at most `max_len` tokens (consecutive, no overlap); windows without any
assistant token are dropped. The held-out split is by prompt (a fixed hash of the prompt's tokens keeps 1 in
`eval_every`), so no window of a held-out conversation is trained on, in any run over any datagen output.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass

import torch


@dataclass
class Window:
    shard: str   # the shard file's path
    start: int   # absolute row in the shard
    end: int     # exclusive
    seq: int     # global sequence index


class DraftVocab:
    """draft id i -> target id ids[i]; d2t[i] = ids[i] - i; t2d [V] bool."""

    def __init__(self, ids, vocab_size: int):
        self.ids = torch.as_tensor(sorted(ids), dtype=torch.int64)
        self.size = len(self.ids)
        self.vocab_size = vocab_size
        self.d2t = self.ids - torch.arange(self.size)
        self.t2d = torch.zeros(vocab_size, dtype=torch.bool)
        self.t2d[self.ids] = True
        # target id -> draft id (-1 when absent)
        self.t2d_index = torch.full((vocab_size,), -1, dtype=torch.int64)
        self.t2d_index[self.ids] = torch.arange(self.size)

    @classmethod
    def from_json(cls, path: str, vocab_size: int) -> "DraftVocab":
        with open(path) as f:
            return cls(json.load(f)["ids"], vocab_size)


def load_target_embedding(path: str | None = None) -> torch.Tensor:
    """The target's token embedding [V, H] in f32 (tied with its LM head). `path`: an HF model.safetensors
    (`model.embed_tokens.weight`) or a GGUF file (token_embd.weight, dequantized)."""
    import target
    return target.load_embedding(path)


def _held_out(seq_key: bytes, eval_every: int) -> bool:
    h = int(hashlib.sha256(seq_key).hexdigest()[:8], 16)
    return h % eval_every == 0


def data_dirs(spec: str | list[str]) -> list[str]:
    """The datagen directories of a `--data` value: one path, or several separated by commas."""
    dirs = spec if isinstance(spec, list) else [d for d in spec.split(",") if d]
    if not dirs:
        raise ValueError(f"no datagen directory in {spec!r}")
    return dirs


class Dataset:
    """Windows over every shard of one or more datagen directories (a comma-separated list: e.g. first turns,
    then later turns), with a train / held-out split by sequence. The held-out windows come in directory order,
    so adding a directory after the first leaves the first `eval_windows` of an existing run unchanged."""

    def __init__(self, data_dir: str | list[str], max_len: int = 256, eval_every: int = 50,
                 max_shards: int | None = None):
        self.dirs = data_dirs(data_dir)
        shards = []
        for d in self.dirs:
            path = os.path.join(d, "manifest.json")
            if not os.path.exists(path):
                raise FileNotFoundError(f"{path}: no datagen output here (run `make datagen` first)")
            with open(path) as f:
                manifest = json.load(f)
            names = [os.path.join(d, s["file"]) for s in manifest["shards"]]
            shards += names[:max_shards] if max_shards is not None else names
        self.train: list[Window] = []
        self.eval: list[Window] = []
        self._handles = {}
        seq = 0
        for name in shards:
            f = self._open(name)
            offs = f.get_tensor("seq_offsets").tolist()
            mask = f.get_tensor("loss_mask")
            tokens = f.get_tensor("tokens")
            for a, b in zip(offs[:-1], offs[1:]):
                # Split by the prompt's tokens, so a conversation stays on its side whatever shard (or run of
                # datagen) it lands in.
                prompt = tokens[a:a + max(1, int((mask[a:b] == 0).sum()))]
                out = self.eval if _held_out(prompt.numpy().tobytes(), eval_every) else self.train
                for s in range(a, b, max_len):
                    e = min(s + max_len, b)
                    if e - s >= 4 and int(mask[s + 1:e].sum()) > 0:
                        out.append(Window(name, s, e, seq))
                seq += 1
        self.num_sequences = seq

    def _open(self, name):
        if name not in self._handles:
            from safetensors import safe_open
            self._handles[name] = safe_open(name, "pt")
        return self._handles[name]

    def load(self, w: Window) -> dict:
        """tokens [S] i64, loss_mask [S] i64, features [S, 3H] f32, hidden [S, H] f32; the window's last row
        is dropped from training by pm (it has no next token inside the window)."""
        f = self._open(w.shard)
        sl = slice(w.start, w.end)
        return {
            "tokens": f.get_slice("tokens")[sl],
            "loss_mask": f.get_slice("loss_mask")[sl],
            "features": f.get_slice("features")[sl].float(),
            "hidden": f.get_slice("final_hidden")[sl].float(),
        }

    def batches(self, batch: int, seed: int, start_step: int = 0):
        """Endless stream of lists of windows (train split), reshuffled every epoch; deterministic from
        (seed, step) so that a resumed run sees the same order."""
        n = len(self.train)
        per_epoch = max(1, n // batch)
        step = start_step
        while True:
            epoch, i = divmod(step, per_epoch)
            order = list(range(n))
            random.Random(seed * 1000003 + epoch).shuffle(order)
            yield [self.load(self.train[j]) for j in order[i * batch:(i + 1) * batch]]
            step += 1


def target_labels(hidden: torch.Tensor, loss_mask: torch.Tensor, embed: torch.Tensor, vocab: DraftVocab,
                  embed_draft: torch.Tensor | None = None):
    """From the stored final (normed) hidden of a window: the target's log-probs over the draft vocabulary
    (renormalised) [S, V_d], its argmax as a draft id [S] (-1 where the full-vocabulary argmax is outside the
    draft vocabulary), and pm [S] bool (see the module docstring)."""
    S = hidden.shape[0]
    with torch.no_grad():
        full = hidden @ embed.T                                   # [S, V]
        arg = full.argmax(-1)
        in_vocab = vocab.t2d[arg]
        ed = embed_draft if embed_draft is not None else embed[vocab.ids]
        logp = torch.log_softmax(hidden @ ed.T, dim=-1)           # [S, V_d]
        arg_d = torch.where(in_vocab, vocab.t2d_index[arg], torch.full_like(arg, -1))
        pm = torch.zeros(S, dtype=torch.bool)
        pm[:-1] = (loss_mask[1:] > 0) & in_vocab[:-1]
    return logp, arg_d, pm

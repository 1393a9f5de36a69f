"""The PyTorch target (llama_torch.py) against Hugging Face transformers' outputs on the real model (the
committed fixture tools/engine/tests/fixtures/reference_logits.json): greedy tokens, logits and aux features;
and batched, left-padded forwards equal one-sequence forwards. Skipped without the GGUF (make model)."""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
GGUF = os.environ.get("SPECBLOCK_MODEL", os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
FIXTURE = os.path.join(ROOT, "tools", "engine", "tests", "fixtures", "reference_logits.json")

pytestmark = pytest.mark.skipif(not os.path.exists(GGUF), reason=f"no model at {GGUF} (make model)")


@pytest.fixture(scope="module")
def model():
    from llama_torch import Llama
    torch.set_num_threads(2)
    return Llama(GGUF)


def prefill(model, ids):
    x = torch.tensor([ids])
    cache = model.new_cache(1, len(ids) + 64)
    valid = torch.ones(1, cache.shape[-2], dtype=torch.bool)
    return cache, valid, model.forward(cache, x, torch.arange(len(ids))[None], 0, valid)


def test_matches_transformers_fixture(model):
    cases = json.load(open(FIXTURE))["cases"]
    for case in cases[:2]:
        ids = case["prompt_ids"]
        cache, valid, (logits, aux, n) = prefill(model, ids)
        H = model.cfg.hidden
        for f in case["features_last_position"]:
            j = model.cfg.aux_layers.index(f["layer"])
            got = aux[0, -1, j * H:(j + 1) * H]
            assert abs(float(got.norm()) - f["norm"]) < 1e-3 * f["norm"]
            torch.testing.assert_close(got[:len(f["first"])], torch.tensor(f["first"]), rtol=1e-3, atol=1e-3)
        last = [r for r in case["rows"] if r["position"] == len(ids) - 1]
        if last:
            r = last[0]
            assert int(logits[0].argmax()) == r["argmax"]
            torch.testing.assert_close(logits[0][r["ids"]], torch.tensor(r["logits"]), rtol=1e-3, atol=2e-3)
        # Greedy decoding, one token at a time through the cache, gives transformers' tokens.
        tok, pos = int(logits[0].argmax()), len(ids)
        out = [tok]
        for _ in range(15):
            lg, _, _ = model.forward(cache, torch.tensor([[tok]]), torch.tensor([[pos]]), pos, valid)
            tok, pos = int(lg[0].argmax()), pos + 1
            out.append(tok)
        assert out == case["greedy"][:16]


def test_left_padded_batch_equals_single(model):
    a = [1, 9690, 198, 2683, 359, 253, 5356, 198, 1, 4093, 198, 3750]
    b = a[:7]
    _, _, (la, fa, na) = prefill(model, a)
    _, _, (lb, fb, nb) = prefill(model, b)
    T = len(a)
    cache = model.new_cache(2, T + 4)
    toks = torch.tensor([a, [0] * (T - len(b)) + b])
    pad = T - len(b)
    pos = torch.stack([torch.arange(T), (torch.arange(T) - pad).clamp(min=0)])
    valid = torch.ones(2, T + 4, dtype=torch.bool)
    valid[1, :pad] = False
    logits, feats, n = model.forward(cache, toks, pos, 0, valid)
    torch.testing.assert_close(logits[0], la[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits[1], lb[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats[1, pad:], fb[0], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(feats).all()


def test_datagen_torch_shards(model, tmp_path):
    """datagen_torch.py writes shards that data.Dataset reads, with the prompt's features equal to a
    one-sequence prefill and greedy answers equal to greedy decoding."""
    import datagen_torch
    from data import Dataset
    prompts = [[1, 9690, 198, 2683, 359, 253, 5356, 198, 1, 4093, 198, 3750, 2594],
               [1, 4093, 198, 52, 2663, 253], [1, 4093, 198, 7018, 411, 407, 19712, 8182, 2, 198]]
    ids = tmp_path / "ids.jsonl"
    ids.write_text("".join(json.dumps({"id": i, "prompt_ids": p}) + "\n" for i, p in enumerate(prompts)))
    out = tmp_path / "dg"
    datagen_torch.main(["--prompt-ids", str(ids), "--out", str(out), "--model", GGUF, "--device", "cpu",
                        "--batch", "2", "--max-new", "6", "--shard-sequences", "2", "--seed", "5"])
    ds = Dataset(str(out), max_len=64, eval_every=1000)
    from safetensors import safe_open
    man = json.load(open(out / "manifest.json"))
    assert sorted(man["done_prompts"]) == [0, 1, 2] and len(man["shards"]) == 2
    seen = 0
    for sh in man["shards"]:
        with safe_open(str(out / sh["file"]), "pt") as f:
            toks, offs = f.get_tensor("tokens"), f.get_tensor("seq_offsets").tolist()
            feats, mask = f.get_tensor("features"), f.get_tensor("loss_mask")
            for a, b in zip(offs[:-1], offs[1:]):
                seq = toks[a:b].tolist()
                i = next(j for j, p in enumerate(prompts) if seq[:len(p)] == p)
                P = len(prompts[i])
                assert int(mask[a:b].sum()) == len(seq) - P and (feats[b - 1] == 0).all()
                _, _, (lg, fa, _) = prefill(model, prompts[i])
                torch.testing.assert_close(feats[a:a + P].float(), fa[0].half().float(), rtol=2e-3, atol=2e-3)
                if datagen_torch.unit(5, i, "greedy") < 0.5:
                    assert seq[P] == int(lg[0].argmax())
                seen += 1
    assert seen == 3 and len(ds.train) + len(ds.eval) >= 3

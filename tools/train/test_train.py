"""Tests of the drafter trainers (data, losses, unrolls, export). Run: python -m pytest tools/train -q

Tiny random models and synthetic data only; the real shards are not needed.
"""
import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
torch.set_num_threads(1)

import feature_scale  # noqa: E402
import losses  # noqa: E402
import train  # noqa: E402
from data import Dataset, DraftVocab, target_labels  # noqa: E402
from eagle3_model import Eagle3Cache, Eagle3Config, DraftKV  # noqa: E402
from eagle3_model import load_drafter as load_eagle3  # noqa: E402
from specblock_model import DrafterCache, SpecBlockConfig  # noqa: E402
from specblock_model import load_drafter as load_specblock  # noqa: E402

V, VD, H, HT = 100, 40, 32, 24


def tiny_cfg(method):
    if method == "specblock":
        return SpecBlockConfig(hidden_size=H, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               head_dim=8, intermediate_size=48, vocab_size=V, draft_vocab_size=VD,
                               target_hidden_size=HT, rms_norm_eps=1e-6, rope_theta=10000.0)
    return Eagle3Config(hidden_size=H, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                        intermediate_size=48, vocab_size=V, draft_vocab_size=VD, target_hidden_size=HT)


def tiny_vocab():
    g = torch.Generator().manual_seed(1)
    return DraftVocab(torch.randperm(V, generator=g)[:VD].tolist(), V)


def tiny_model(method, seed=0):
    g = torch.Generator().manual_seed(100 + seed)
    embed = torch.randn(V, H, generator=g)
    return train.build_model(method, tiny_cfg(method), tiny_vocab(), embed, seed), embed


def synthetic_window(S=12, seed=0, vocab=None, embed=None):
    """A window of draft-vocabulary tokens; with `embed`, the target's hidden at row i points at x_{i+1}
    (so its argmax is the data's next token, as on greedy conversations)."""
    g = torch.Generator().manual_seed(seed)
    vocab = vocab or tiny_vocab()
    tokens = vocab.ids[torch.randint(0, VD, (S,), generator=g)]
    mask = torch.ones(S, dtype=torch.int64)
    mask[:2] = 0
    hidden = torch.randn(S, H, generator=g)
    if embed is not None:
        hidden[:-1] = 0.5 * hidden[:-1] + 0.6 * embed[tokens[1:]]
    return {"tokens": tokens, "loss_mask": mask, "features": torch.randn(S, 3 * HT, generator=g),
            "hidden": hidden}


# --- hand-made cases ---

def test_valid_prefix_mask():
    c = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    want = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    assert torch.equal(losses.valid_prefix_mask(c), want)


def test_rank_labels():
    # Draft logits over 12 ids with a known order: id i has logit -i (rank i).
    logits = -torch.arange(12.0)[None].expand(6, 12)
    target = torch.tensor([0, 1, 3, 4, 9, 10])
    assert losses.rank_labels(logits, target).tolist() == [0, 1, 1, 2, 2, 3]
    # A target outside the draft vocabulary (-1) is class 3; a permuted order is respected.
    perm = torch.tensor([5, 2, 0, 1, 3, 4, 6, 7, 8, 9, 10, 11])   # id 5 ranks first, id 2 second, ...
    lg = torch.empty(12)
    lg[perm] = -torch.arange(12.0)
    assert losses.rank_labels(lg[None].expand(3, 12), torch.tensor([5, 2, -1])).tolist() == [0, 1, 3]


def test_ordinal_smoothing_and_distance():
    soft = losses.ordinal_soft_targets(torch.tensor([1]), 4)[0]
    w = torch.tensor([1 / 3 ** 2, 1.0, 1 / 2 ** 2, 1 / 3 ** 2])   # c=0: 1+1+1; c=2: 1+1+0; c=3: 1+2+0
    assert torch.allclose(soft, w / w.sum())
    assert soft[0] < soft[2]   # under-estimating (c < t) is punished harder
    # Distance weight: label 3, prediction 0 -> 1 + 3 + 3 = 7; label 0, prediction 3 -> 1 + 3 = 4.
    logits = torch.tensor([[[9.0, 0, 0, 0]], [[0, 0, 0, 9.0]]])   # [N=2, K=1, C=4]
    labels = torch.tensor([[3], [0]])
    ce = -(losses.ordinal_soft_targets(labels, 4) * torch.log_softmax(logits, -1)).sum(-1)
    got = losses.rank_loss(logits, labels, torch.ones(2, 1, dtype=torch.bool), budget=10)
    assert torch.allclose(got, (7 * ce[0, 0] + 4 * ce[1, 0]) / 2)


def test_rank_class_rebalancing():
    # Slot 0: 30 samples of class 0 (weight 10/30 each) and 2 of class 1 (weight 1).
    labels = torch.tensor([0] * 30 + [1] * 2)[:, None]
    logits = torch.zeros(32, 1, 4)
    mask = torch.ones(32, 1, dtype=torch.bool)
    ce = -(losses.ordinal_soft_targets(labels, 4) * torch.log_softmax(logits, -1)).sum(-1)[:, 0]
    # prediction argmax of all-zero logits = class 0 -> w_dist 1 for label 0, 1 + 1 + 1 = 3 for label 1
    num = (10 / 30) * ce[:30].sum() + 3 * ce[30:].sum()
    den = (10 / 30) * 30 + 2
    assert torch.allclose(losses.rank_loss(logits, labels, mask, budget=10), num / den)


def test_rank_chain_mask():
    pred = torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0]])
    lab = torch.tensor([[0, 2, 2, 3], [0, 0, 0, 0]])
    pm = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1]], dtype=torch.bool)
    ev = torch.tensor([True, True])
    got = losses.rank_chain_mask(ev, pm, pred, lab)
    # Row 0: slot 1 mispredicted -> counted, then the chain stops. Row 1: pm hides slot 1 only.
    assert got.tolist() == [[True, True, False, False], [True, False, True, True]]


def test_specblock_masks():
    m = losses.specblock_masks(2, 3, [2])   # block 2 of 2 entries, K 3, after M_1 = 2
    # query entry 1 slot 0 (row 3): block-1 entry 0 all slots, entry 1 slots 0..1; own entry-1 slot 0.
    assert m[3].tolist() == [True, True, True, True, True, False, False, False, False, True, False, False]
    # query entry 0 slot 2 (row 2): block-1 entry 0 slots 0..1; own slots 0..2.
    assert m[2].tolist() == [True, True, False, False, False, False, True, True, True, False, False, False]


def test_target_labels_pm():
    vocab = tiny_vocab()
    embed = torch.randn(V, H)
    win = synthetic_window(10, vocab=vocab, embed=embed)
    win["hidden"][:9] = 3 * embed[win["tokens"][1:]]
    # Make row 4's full-vocabulary argmax a token outside the draft vocabulary.
    outside = int((~vocab.t2d).nonzero()[0])
    win["hidden"][4] = embed[outside] * 50
    logp, arg_d, pm = target_labels(win["hidden"], win["loss_mask"], embed, vocab)
    assert torch.allclose(logp.exp().sum(-1), torch.ones(10))
    assert arg_d[4] == -1 and not pm[4]
    assert not pm[0] and pm[1] and not pm[9]   # loss_mask[1] = 0; row 9 has no next token
    full = (win["hidden"] @ embed.T).argmax(-1)
    ok = arg_d >= 0
    assert torch.equal(vocab.ids[arg_d[ok]], full[ok])


# --- the unrolls against the inference forwards of the model modules ---

def test_specblock_unroll_matches_inference():
    model, embed = tiny_model("specblock")
    model.eval()
    win = synthetic_window(9)
    labels = target_labels(win["hidden"], win["loss_mask"], embed, tiny_vocab())
    M = 3
    _, st = losses.specblock_window_loss(model, win, labels, blocks=2, Ms=[M], keep_outputs=True)
    (lg1, rl1, h1), (lg2, rl2, h2) = st["outputs"]
    E = 8
    cache = DrafterCache(model.config)
    ref = model.context_forward(cache, win["features"][:E], win["tokens"][1:E + 1], torch.arange(E) + 1)
    torch.testing.assert_close(lg1, ref[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rl1, ref[1], rtol=1e-5, atol=1e-5)
    # Block 2 at entry t = seed_forward with the origin = entry t, hidden of slot M-1, token x_{t+1+M}.
    for t in (0, 3, 4):
        c = DrafterCache(model.config)
        model.context_forward(c, win["features"][:t + 1], win["tokens"][1:t + 2], torch.arange(t + 1) + 1)
        out = model.seed_forward(c, h1[t, M - 1][None], win["tokens"][t + 1 + M][None], [M - 1], t + 1)
        torch.testing.assert_close(lg2[t], out[0][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(h2[t], out[2][0], rtol=1e-5, atol=1e-5)


def test_eagle3_unroll_matches_inference():
    model, embed = tiny_model("eagle3")
    model.eval()
    win = synthetic_window(9)
    labels = target_labels(win["hidden"], win["loss_mask"], embed, tiny_vocab())
    _, st = losses.eagle3_window_loss(model, win, labels, steps=3, keep_outputs=True)
    E = 8
    cache = Eagle3Cache(model.config)
    ref = model.context_forward(cache, win["features"][:E], win["tokens"][1:E + 1], torch.arange(E))
    torch.testing.assert_close(st["outputs"][0][0], ref.logits, rtol=1e-5, atol=1e-5)
    for t in (0, 2, 5):
        c = Eagle3Cache(model.config)
        r0 = model.context_forward(c, win["features"][:t + 1], win["tokens"][1:t + 2], torch.arange(t + 1))
        d = DraftKV(model.config)
        h, row = r0.h[-1:], -1
        for s in (1, 2):
            out = model.draft_step(c, d, h, win["tokens"][t + 1 + s][None], [t + s], [row])
            torch.testing.assert_close(st["outputs"][s][0][t], out.logits[0], rtol=1e-5, atol=1e-5)
            h, row = out.h, len(d) - 1


# --- training ---

@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_loss_decreases(method):
    model, embed = tiny_model(method)
    vocab = tiny_vocab()
    wins = [synthetic_window(16, seed=s, vocab=vocab, embed=embed) for s in range(2)]
    labs = [target_labels(w["hidden"], w["loss_mask"], embed, vocab) for w in wins]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)

    def loss_now(Ms=(2, 3)):
        tot = 0.0
        for w, lab in zip(wins, labs):
            if method == "specblock":
                l, _ = losses.specblock_window_loss(model, w, lab, blocks=3, Ms=list(Ms))
            else:
                l, _ = losses.eagle3_window_loss(model, w, lab, steps=3)
            tot = tot + l
        return tot / len(wins)

    with torch.no_grad():
        before = float(loss_now())
    gen = torch.Generator().manual_seed(0)
    for step in range(15):
        opt.zero_grad()
        tot = 0.0
        for w, lab in zip(wins, labs):
            if method == "specblock":
                l, _ = losses.specblock_window_loss(model, w, lab, blocks=3, gen=gen)
            else:
                l, _ = losses.eagle3_window_loss(model, w, lab, steps=3)
            tot = tot + l / len(wins)
        tot.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        opt.step()
    with torch.no_grad():
        after = float(loss_now())
    assert after < 0.9 * before, (before, after)


def test_rank_loss_does_not_reach_trunk():
    model, embed = tiny_model("specblock")
    vocab = tiny_vocab()
    w = synthetic_window(12, vocab=vocab)
    lab = target_labels(w["hidden"], w["loss_mask"], embed, vocab)
    a, _ = losses.specblock_window_loss(model, w, lab, blocks=2, Ms=[2], rank_weight=0.0)
    b, _ = losses.specblock_window_loss(model, w, lab, blocks=2, Ms=[2], rank_weight=1.0)
    ga = torch.autograd.grad(a, model.lm_head.weight)[0]
    gb = torch.autograd.grad(b, model.lm_head.weight)[0]
    torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_export_roundtrip(method, tmp_path):
    model, embed = tiny_model(method, seed=3)
    with torch.no_grad():  # move the weights away from their init values
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    train.export(model, str(tmp_path))
    from safetensors import safe_open
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
        assert f.get_tensor("d2t").dtype == torch.int64 and f.get_tensor("t2d").dtype == torch.bool
    assert not any("embed" in n for n in names)
    assert names == set(model.state_dict().keys())
    cfg = json.load(open(tmp_path / "config.json"))
    assert cfg["draft_vocab_size"] == VD and cfg["hidden_size"] == H
    # Reference: the trained model with its weights rounded to bf16, as the file stores them.
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model.eval()
    win = synthetic_window(7)
    E = 6
    if method == "specblock":
        back = load_specblock(str(tmp_path), embed)
        outs = [m.context_forward(DrafterCache(m.config), win["features"][:E], win["tokens"][1:E + 1],
                                  torch.arange(E) + 1) for m in (model, back)]
        for x, y in zip(outs[0], outs[1]):
            assert torch.equal(x, y)
    else:
        back = load_eagle3(str(tmp_path), embed)
        outs = [m.context_forward(Eagle3Cache(m.config), win["features"][:E], win["tokens"][1:E + 1],
                                  torch.arange(E)) for m in (model, back)]
        assert torch.equal(outs[0].logits, outs[1].logits) and torch.equal(outs[0].h, outs[1].h)
    assert torch.equal(back.d2t, model.d2t) and torch.equal(back.t2d, model.t2d)


@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_feature_scale_is_a_reparameterisation(method, tmp_path):
    """Training form (features * s, W' = W / s) computes what the raw model computes, and the export folds
    back the weights of raw features."""
    model, embed = tiny_model(method, seed=5)
    model.eval()
    wins = [synthetic_window(9, seed=i) for i in range(3)]
    for w in wins:
        w["features"][:, 3] *= 300.0     # a massive-activation dimension
        w["features"][0] *= 50.0         # an attention-sink row, left out of the statistics
    scale = feature_scale.estimate(wins)
    assert scale.shape == (3 * HT,)
    assert 1 / scale[3] > 100 and 1 / scale[3] < 600, "the sink row must not set the massive dimension's RMS"
    E = 8
    win = wins[1]

    def run(m, feats):
        if method == "specblock":
            return m.context_forward(DrafterCache(m.config), feats[:E], win["tokens"][1:E + 1], torch.arange(E) + 1)[0]
        return m.context_forward(Eagle3Cache(m.config), feats[:E], win["tokens"][1:E + 1], torch.arange(E)).logits

    raw = run(model, win["features"])
    feature_scale.to_training(model, method, scale)
    scaled = run(model, win["features"] * scale)
    assert torch.allclose(raw, scaled, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(raw, run(model, win["features"]), atol=1e-2), "the scale must matter"
    train.export(model, str(tmp_path), dtype=torch.float32,
                 fold=lambda sd: feature_scale.folded(sd, method, scale))
    back = (load_specblock if method == "specblock" else load_eagle3)(str(tmp_path), embed)
    assert torch.allclose(raw, run(back, win["features"]), atol=1e-4, rtol=1e-4)


def test_greedy_window():
    """A window whose next tokens are the target's argmax is greedy; one with sampled tokens is not."""
    g = torch.Generator().manual_seed(7)
    embed = torch.randn(V, H, generator=g)
    vocab = tiny_vocab()
    tokens = vocab.ids[torch.randint(0, VD, (40,), generator=g)]
    hidden = torch.zeros(40, H)
    hidden[:-1] = 5.0 * embed[tokens[1:]]
    mask = torch.ones(40, dtype=torch.int64)
    mask[:4] = 0
    _, arg_d, pm = target_labels(hidden, mask, embed, vocab)
    assert int(pm.sum()) > 20
    assert train.greedy_window(tokens, arg_d, pm, vocab)
    sampled = tokens.clone()
    sampled[10:20] = vocab.ids[(vocab.t2d_index[tokens[10:20]] + 1) % VD]   # 10 tokens that are not the argmax
    assert not train.greedy_window(sampled, arg_d, pm, vocab)
    assert not train.greedy_window(tokens, arg_d, torch.zeros_like(pm), vocab)


def test_bf16_autocast_rule():
    intel = "vendor_id\t: GenuineIntel\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    assert not train.cpu_bf16_is_faster("vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\n")
    assert not train.cpu_bf16_is_faster(intel), "vdpbf16ps runs at half the f32 FMA rate on Intel"
    assert train.cpu_bf16_is_faster(amd)
    assert train.cpu_bf16_is_faster(intel.replace("avx512_bf16", "avx512_bf16 amx_bf16 amx_tile"))


# --- the data reader and the CLI on a synthetic datagen directory ---

def write_datagen(dirpath, n_seqs=12, seed=0):
    from safetensors.torch import save_file
    g = torch.Generator().manual_seed(seed)
    vocab = tiny_vocab()
    shards = []
    for si in range(2):
        toks, mask, offs, feats, hid = [], [], [0], [], []
        for _ in range(n_seqs // 2):
            n = int(torch.randint(10, 30, (1,), generator=g))
            p = int(torch.randint(2, 6, (1,), generator=g))
            toks.append(vocab.ids[torch.randint(0, VD, (n,), generator=g)])
            mask.append((torch.arange(n) >= p).long())
            f = torch.randn(n, 3 * HT, generator=g)
            h = torch.randn(n, H, generator=g)
            f[-1] = 0
            h[-1] = 0
            feats.append(f)
            hid.append(h)
            offs.append(offs[-1] + n)
        name = f"shard-{si:05d}.safetensors"
        save_file({"tokens": torch.cat(toks), "loss_mask": torch.cat(mask), "seq_offsets": torch.tensor(offs),
                   "features": torch.cat(feats).half(), "final_hidden": torch.cat(hid).half()},
                  os.path.join(dirpath, name))
        shards.append({"file": name, "sequences": n_seqs // 2, "tokens": offs[-1]})
    json.dump({"assistant_tokens": 0, "done_prompts": [], "shards": shards},
              open(os.path.join(dirpath, "manifest.json"), "w"))
    json.dump({"size": VD, "ids": vocab.ids.tolist()}, open(os.path.join(dirpath, "vocab.json"), "w"))
    embed = torch.randn(V, H, generator=g)
    save_file({"model.embed_tokens.weight": embed, "model.norm.weight": 1.0 + 0.1 * torch.randn(H, generator=g)},
              os.path.join(dirpath, "embed.safetensors"))
    return embed


def test_dataset_windows(tmp_path):
    write_datagen(str(tmp_path))
    ds = Dataset(str(tmp_path), max_len=8, eval_every=3)
    assert ds.num_sequences == 12 and ds.train and ds.eval
    assert not ({w.seq for w in ds.train} & {w.seq for w in ds.eval})
    for w in ds.train + ds.eval:
        assert w.end - w.start <= 8
    win = ds.load(ds.train[0])
    assert win["features"].dtype == torch.float32 and win["features"].shape == (len(win["tokens"]), 3 * HT)
    b1 = next(ds.batches(3, seed=5, start_step=2))
    b2 = next(ds.batches(3, seed=5, start_step=2))
    assert all(torch.equal(x["tokens"], y["tokens"]) for x, y in zip(b1, b2))


def test_dataset_over_several_directories(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_datagen(str(a), seed=1)
    write_datagen(str(b), n_seqs=8, seed=2)
    one = Dataset(str(a), max_len=8, eval_every=3)
    both = Dataset(f"{a},{b}", max_len=8, eval_every=3)
    assert both.num_sequences == one.num_sequences + 8
    # The first directory's windows come first and unchanged (held-out ones too), then the second's.
    assert both.train[:len(one.train)] == one.train and both.eval[:len(one.eval)] == one.eval
    assert {os.path.dirname(w.shard) for w in both.train[len(one.train):]} == {str(b)}
    w = both.train[-1]
    assert torch.equal(both.load(w)["tokens"], Dataset(str(b), max_len=8, eval_every=3).load(w)["tokens"])
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        Dataset(f"{a},{tmp_path / 'missing'}")


def test_later_turns_of_a_conversation():
    import prompts
    conv = {"id": "c", "conversations": [
        {"from": "human", "value": "Tell me about cats, please."},
        {"from": "gpt", "value": "Cats are small carnivorous mammals."},
        {"from": "human", "value": "And what about dogs then?"},
        {"from": "gpt", "value": "Dogs are loyal companions."},
        {"from": "human", "value": "Which one sleeps more?"},
    ]}
    turns = prompts.later_turns(conv)
    assert [len(t) for t in turns] == [3, 5]
    assert [m["role"] for m in turns[1]] == ["user", "assistant", "user", "assistant", "user"]
    assert turns[1][-1]["content"] == "Which one sleeps more?" and turns[0][1]["content"].startswith("Cats")
    # The conversation-length cap drops a turn and everything after it.
    assert len(prompts.later_turns(conv, max_chars=120)) == 1
    # A conversation that stops alternating ends there.
    broken = {"conversations": conv["conversations"][:2] + [{"from": "gpt", "value": "More."}]
              + conv["conversations"][2:]}
    assert prompts.later_turns(broken) == []


@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_cli_train_resume_export(method, tmp_path, capsys):
    d = tmp_path / "data"
    d.mkdir()
    embed = write_datagen(str(d))
    cfg = {k: v for k, v in tiny_cfg(method).to_dict().items()
           if k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "intermediate_size", "vocab_size", "target_hidden_size", "num_hidden_layers")}
    common = ["--method", method, "--data", str(d), "--vocab", str(d / "vocab.json"), "--embed",
              str(d / "embed.safetensors"), "--out", str(tmp_path / "run"), "--batch", "2", "--max-len", "12",
              "--model-config", json.dumps(cfg), "--log-every", "1", "--eval-every", "2", "--ckpt-every", "2",
              "--eval-windows", "2", "--eval-every-seq", "3", "--device", "cpu", "--ttt-steps", "3"]
    train.main(common + ["--steps", "2"])
    out = capsys.readouterr().out
    assert "step 2/2" in out and "eval step 2" in out and "accept-proxy" in out
    train.main(common + ["--steps", "4", "--resume", "--export", str(tmp_path / "exp")])
    out = capsys.readouterr().out
    assert "resumed from" in out and "step 3/4" in out and "step 1/" not in out
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert ck["run"]["step"] == 4
    loader = load_specblock if method == "specblock" else load_eagle3
    m = loader(str(tmp_path / "exp"), embed)
    # The checkpoint holds the training form (feature_scale.py); the export, the weights of raw features.
    assert ck["feature_scale"] is not None
    for k, v in feature_scale.folded(ck["model"], method, ck["feature_scale"]).items():
        if v.is_floating_point():
            assert torch.equal(m.state_dict()[k], v.to(torch.bfloat16).float()), k


# --- the exported-checkpoint fixtures the Rust tests load (tests/trained_export.rs) ---

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine", "tests", "fixtures")
FIX_SHAPE = dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                 intermediate_size=96, vocab_size=300, target_hidden_size=48, rms_norm_eps=1e-6,
                 rope_theta=10000.0)


def _fixture_model(method):
    """A tiny drafter trained for a few steps on synthetic windows (so the weights are no longer at their
    initialisation), with its embedding and draft vocabulary."""
    g = torch.Generator().manual_seed(7)
    Vf, Vdf, Hf, Htf = 300, 120, 64, 48
    vocab = DraftVocab(torch.randperm(Vf, generator=g)[:Vdf].tolist(), Vf)
    embed = torch.randn(Vf, Hf, generator=g)
    if method == "specblock":
        cfg = SpecBlockConfig(**FIX_SHAPE, num_hidden_layers=2, draft_vocab_size=Vdf)
    else:
        cfg = Eagle3Config(**FIX_SHAPE, draft_vocab_size=Vdf)
    model = train.build_model(method, cfg, vocab, embed, seed=7)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0)
    S = 14
    wins = []
    for s in range(2):
        toks = vocab.ids[torch.randint(0, Vdf, (S,), generator=g)]
        hid = torch.randn(S, Hf, generator=g)
        hid[:-1] = 0.5 * hid[:-1] + 0.6 * embed[toks[1:]]
        wins.append({"tokens": toks, "loss_mask": torch.ones(S, dtype=torch.int64),
                     "features": torch.randn(S, 3 * Htf, generator=g), "hidden": hid})
    labs = [target_labels(w["hidden"], w["loss_mask"], embed, vocab) for w in wins]
    for step in range(5):
        opt.zero_grad()
        for w, lab in zip(wins, labs):
            if method == "specblock":
                l, _ = losses.specblock_window_loss(model, w, lab, blocks=3, Ms=[1 + step % 4, 2])
            else:
                l, _ = losses.eagle3_window_loss(model, w, lab, steps=3)
            l.backward()
        opt.step()
    return model.eval(), embed, wins[0], g


def _fixture_outputs(method, model, win, g):
    """Inputs and outputs of the reloaded checkpoint: a context forward over 6 entries, then (SpecBlock) a
    seed forward of 3 seeds at the last entry or (EAGLE-3) one drafting step of 2 nodes."""
    out = {}
    E = 6
    feats, toks = win["features"][:E].contiguous(), win["tokens"][1:E + 1].contiguous()
    if method == "specblock":
        bases = torch.arange(E) + 1
        cache = DrafterCache(model.config)
        r = model.context_forward(cache, feats, toks, bases)
        out.update({"context.features": feats, "context.tokens": toks, "context.bases": bases})
        for k, v in zip(("logits", "rank_logits", "h", "n"), r):
            out[f"context.{k}"] = v
        hidden = r[2][-1, [0, 2, 3]].contiguous()
        stoks = win["tokens"][[7, 9, 11]].contiguous()
        vis = torch.tensor([0, 2, 3])
        s = model.seed_forward(cache, hidden, stoks, vis, int(bases[-1]))
        out.update({"seed.hidden": hidden, "seed.tokens": stoks, "seed.visibility": vis})
        for k, v in zip(("logits", "rank_logits", "h", "n"), s):
            out[f"seed.{k}"] = v
    else:
        pos = torch.arange(E)
        cache = Eagle3Cache(model.config)
        r = model.context_forward(cache, feats, toks, pos)
        out.update({"context.features": feats, "context.tokens": toks, "context.positions": pos,
                    "context.logits": r.logits, "context.h": r.h, "context.n": r.n})
        hidden = r.h[-1:].expand(2, -1).contiguous()
        stoks = win["tokens"][[7, 8]].contiguous()
        spos = torch.tensor([E, E])
        s = model.draft_step(cache, DraftKV(model.config), hidden, stoks, spos, [-1, -1])
        out.update({"step.hidden": hidden, "step.tokens": stoks, "step.positions": spos,
                    "step.logits": s.logits, "step.h": s.h, "step.n": s.n})
    return {k: v.contiguous() for k, v in out.items()}


@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_trained_export_fixture(method):
    """SPECBLOCK_WRITE_FIXTURES=1 (re)writes tools/engine/tests/fixtures/trained_{method}/: the exported
    checkpoint (config.json, model.safetensors in bf16), embed.safetensors and expected.safetensors (inputs
    and the Python outputs of the reloaded checkpoint). Otherwise the committed fixture is reloaded and must
    reproduce its stored outputs."""
    from safetensors.torch import load_file, save_file
    d = os.path.join(FIXTURES, f"trained_{method}")
    loader = load_specblock if method == "specblock" else load_eagle3
    if os.environ.get("SPECBLOCK_WRITE_FIXTURES") == "1":
        model, embed, win, g = _fixture_model(method)
        train.export(model, d)
        save_file({"model.embed_tokens.weight": embed.contiguous()}, os.path.join(d, "embed.safetensors"))
        back = loader(d, embed)
        save_file(_fixture_outputs(method, back, win, g), os.path.join(d, "expected.safetensors"))
    if not os.path.exists(os.path.join(d, "expected.safetensors")):
        pytest.skip(f"no fixture at {d}")
    embed = load_file(os.path.join(d, "embed.safetensors"))["model.embed_tokens.weight"]
    back = loader(d, embed)
    want = load_file(os.path.join(d, "expected.safetensors"))
    win = {"features": torch.zeros(20, 144), "tokens": torch.zeros(20, dtype=torch.int64)}
    win["features"][:6] = want["context.features"]
    win["tokens"][1:7] = want["context.tokens"]
    stoks = want["seed.tokens"] if method == "specblock" else want["step.tokens"]
    win["tokens"][[7, 9, 11] if method == "specblock" else [7, 8]] = stoks
    got = _fixture_outputs(method, back, win, None)
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_bf16_autocast_close_to_f32(method):
    """The trainer's default --amp bf16 forward gives nearly the f32 loss (and a finite gradient)."""
    model, embed = tiny_model(method)
    vocab = tiny_vocab()
    w = synthetic_window(16, vocab=vocab, embed=embed)
    lab = target_labels(w["hidden"], w["loss_mask"], embed, vocab)

    def run():
        if method == "specblock":
            return losses.specblock_window_loss(model, w, lab, blocks=3, Ms=[2, 4])[0]
        return losses.eagle3_window_loss(model, w, lab, steps=3)[0]

    ref = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run()
    assert got.dtype == torch.float32
    assert abs(float(got.detach()) - float(ref.detach())) < 0.05 * abs(float(ref.detach()))
    got.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


# --- the long-run machinery: time budget, warm start, best export, learning curve, DDP ---

def _cli_common(tmp_path, method, d):
    cfg = {k: v for k, v in tiny_cfg(method).to_dict().items()
           if k in ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "intermediate_size", "vocab_size", "target_hidden_size", "num_hidden_layers")}
    return ["--method", method, "--data", str(d), "--vocab", str(d / "vocab.json"), "--embed",
            str(d / "embed.safetensors"), "--batch", "4", "--max-len", "12", "--model-config", json.dumps(cfg),
            "--log-every", "1", "--eval-windows", "4", "--eval-every-seq", "3", "--device", "cpu",
            "--ttt-steps", "3", "--amp", "off", "--lr", "3e-3", "--threads", "1"]


def test_resume_keeps_the_checkpoints_feature_form(tmp_path):
    """A checkpoint written without a feature scale holds raw-form weights: resuming it under the default
    --feature-scale rms must go on with raw features, not scale them under weights that expect raw ones."""
    d = tmp_path / "data"
    d.mkdir()
    embed = write_datagen(str(d))
    common = _cli_common(tmp_path, "eagle3", d) + ["--out", str(tmp_path / "run"), "--eval-every", "100"]
    train.main(common + ["--steps", "2", "--feature-scale", "off"])
    raw = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert raw["feature_scale"] is None
    train.main(common + ["--steps", "3", "--resume", "--export", str(tmp_path / "exp")])
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert ck["run"]["step"] == 3 and ck["feature_scale"] is None
    m = load_eagle3(str(tmp_path / "exp"), embed)
    assert torch.equal(m.state_dict()["fc.weight"], ck["model"]["fc.weight"].to(torch.bfloat16).float())


@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_time_budget_warm_start_and_best_export(method, tmp_path, capsys):
    import run_state
    d = tmp_path / "data"
    d.mkdir()
    write_datagen(str(d))
    common = _cli_common(tmp_path, method, d)
    best = tmp_path / "drafter"
    # A new drafter, a 2-second budget: stops on time, evaluates, keeps the best weights and the curve.
    t0 = __import__("time").time()
    train.main(common + ["--out", str(tmp_path / "r1"), "--minutes", str(2 / 60), "--eval-every", "3",
                         "--export-best", str(best)])
    assert __import__("time").time() - t0 < 60
    out = capsys.readouterr().out
    assert "eval start" in out and "best held-out accept-proxy" in out
    ck = torch.load(tmp_path / "r1" / "ckpt.pt", weights_only=False)
    assert ck["run"]["elapsed"] >= 2.0 and ck["run"]["step"] > 0
    state = run_state.read_state(str(best))
    curve = run_state.read_curve(str(best))
    assert len(curve) >= 2 and state["tokens_seen"] == curve[-1]["tokens_seen"] > 0
    assert state["exported"]["accept_proxy"] == max(p["accept_proxy"] for p in curve)
    assert (best / "model.safetensors").exists() and (best / "config.json").exists()
    # Warm start from it: the same weights and vocabulary come back, and the curve and token count continue.
    first_tokens = state["tokens_seen"]
    loader = load_specblock if method == "specblock" else load_eagle3
    exported = loader(str(best), torch.zeros(V, H)).state_dict()
    train.main(common + ["--out", str(tmp_path / "r2"), "--steps", "2", "--eval-every", "1",
                         "--init-from", str(best), "--export-best", str(best), "--vocab", "/nonexistent"])
    out = capsys.readouterr().out
    assert "warm start from" in out
    start = [line for line in out.splitlines() if line.startswith("eval start")][0]
    assert f"accept-proxy {state['exported']['accept_proxy']:.3f}" in start, (start, state["exported"])
    state2 = run_state.read_state(str(best))
    assert state2["tokens_seen"] > first_tokens and len(state2["runs"]) == 2
    assert len(run_state.read_curve(str(best))) > len(curve)
    again = loader(str(best), torch.zeros(V, H)).state_dict()
    # The warm start's own evaluation exports nothing: the record moves only with weights that beat it.
    assert (state2["exported"] == state["exported"]
            or state2["exported"]["accept_proxy"] > state["exported"]["accept_proxy"]), (state, state2)
    if state2["exported"]["run"] == state["exported"]["run"]:
        assert all(torch.equal(again[k], v) for k, v in exported.items()), "not improved: weights kept"


def test_a_finished_run_is_continued_by_a_new_run_with_its_optimizer_moments(tmp_path, capsys):
    """`make train-*` passes --resume whenever OUT/ckpt.pt exists. An interrupted run continues; after a run
    that finished, a new run (new budget and schedule) starts from the --init-from weights and keeps the
    optimizer's moments, so the warm start does not pay for re-estimating them."""
    d = tmp_path / "data"
    d.mkdir()
    write_datagen(str(d))
    common = _cli_common(tmp_path, "eagle3", d) + ["--out", str(tmp_path / "run"), "--eval-every", "100"]
    best = tmp_path / "drafter"
    train.main(common + ["--steps", "2", "--export-best", str(best)])
    first = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert first["run"]["finished"] and train.run_finished(first)
    capsys.readouterr()
    train.main(common + ["--steps", "3", "--resume", "--init-from", str(best), "--export-best", str(best),
                         "--vocab", "/nonexistent"])
    out = capsys.readouterr().out
    assert "is of a finished run" in out and "optimizer moments from" in out, out
    second = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    # A new run of 3 steps whose moments have seen the first run's 2 (a continued run would be at 3).
    steps = [float(s["step"]) for s in second["opt"]["state"].values()]
    assert second["run"]["step"] == 3 and steps and all(x == 2 + 3 for x in steps), steps
    # Interrupted (not finished): --resume continues the same run.
    second["run"]["finished"] = False
    torch.save(second, tmp_path / "run" / "ckpt.pt")
    train.main(common + ["--steps", "4", "--resume", "--init-from", str(best), "--vocab", "/nonexistent"])
    third = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    steps = [float(s["step"]) for s in third["opt"]["state"].values()]
    assert third["run"]["step"] == 4 and all(x == 2 + 4 for x in steps), steps
    # Checkpoints from before the mark: finished when the budget they started with was spent.
    assert train.run_finished({"run": {"elapsed": 600.0}, "args": {"minutes": 10}})
    assert not train.run_finished({"run": {"elapsed": 300.0, "step": 5}, "args": {"minutes": 10}})


def test_model_card_section_is_regenerated(tmp_path):
    import model_card
    import run_state
    d = tmp_path / "drafter"
    d.mkdir()
    (d / "README.md").write_text("# card\n\nhand-written part\n")
    run_state.write_state(str(d), {"tokens_seen": 1234, "steps": 5, "runs": [
        {"id": "r1", "recipe": {"lr": 3e-4}, "data": {"dir": "x", "sequences": 3, "train_windows": 4}, "steps": 5,
         "tokens": 1234, "minutes": 0.1, "best_accept_proxy": 1.2, "note": "n"}],
        "exported": {"run": "r1", "tokens_seen": 1234, "acc": [0.5, 0.25, 0.1, 0.05], "accept_proxy": 1.2}})
    run_state.append_curve(str(d), {"run": "r1", "tokens_seen": 1234, "acc": [0.5, 0.25, 0.1, 0.05],
                                    "accept_proxy": 1.2})
    model_card.update(str(d))
    model_card.update(str(d))   # idempotent: one section, replaced
    text = (d / "README.md").read_text()
    assert text.count(model_card.BEGIN) == 1 and "hand-written part" in text
    assert "1,234" in text and "| `r1` |" in text and "0.500" in text


def test_lr_schedule():
    f = train.lr_factor
    assert f(0.0, 0.1, "cosine", 0.1) < 0.01 and abs(f(0.05, 0.1, "cosine", 0.1) - 0.5) < 1e-9
    assert abs(f(0.1, 0.1, "cosine", 0.1) - 1.0) < 1e-9 and abs(f(1.0, 0.1, "cosine", 0.1) - 0.1) < 1e-9
    assert abs(f(0.55, 0.1, "cosine", 0.0) - 0.5) < 1e-9 and abs(f(0.55, 0.1, "linear", 0.0) - 0.5) < 1e-9
    assert f(0.3, 0.1, "cosine", 0.1) > f(0.3, 0.1, "linear", 0.1)


def test_head_init_from_target():
    import target
    model, embed = tiny_model("specblock")
    vocab = tiny_vocab()
    norm = torch.rand(H) + 0.5
    target.init_head(model, {"model.embed_tokens.weight": embed, "model.norm.weight": norm}, vocab.ids)
    # The drafter now reads a hidden state as the target would: its logits are the target's, restricted.
    h = torch.randn(5, H)
    n = model.norm(h)
    torch.testing.assert_close(model.lm_head(n), (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * norm)
                               @ embed[vocab.ids].T)


@pytest.mark.parametrize("method", ["specblock", "eagle3"])
def test_ddp_two_processes_equal_one_process(method, tmp_path):
    """torchrun --nproc_per_node 2 (gloo) takes the same optimiser steps as one process with the whole
    batch: each rank trains on half of every batch and DDP averages the gradients."""
    import subprocess
    d = tmp_path / "data"
    d.mkdir()
    write_datagen(str(d))
    common = _cli_common(tmp_path, method, d) + ["--steps", "2", "--eval-every", "100", "--warmup", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    train.main(common[:common.index("--steps")] + ["--steps", "0", "--out", str(tmp_path / "init")])
    train.main(common + ["--out", str(tmp_path / "one")])
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        script] + common + ["--out", str(tmp_path / "two")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "x 2 process(es)" in r.stdout
    load = lambda name: torch.load(tmp_path / name / "ckpt.pt", weights_only=False)["model"]  # noqa: E731
    init, one, two = load("init"), load("one"), load("two")
    # Adam's first steps move each weight by about +-lr (the sign of its gradient), so a gradient that is
    # zero up to rounding may move either way: compare the updates, allowing a few such flips.
    flipped = total = 0
    for k, v in one.items():
        if not v.is_floating_point():
            continue
        d1, d2 = v - init[k], two[k] - init[k]
        flipped += int(((d1 - d2).abs() > 0.5 * 3e-3).sum())
        total += v.numel()
    moved = sum(int((one[k] != init[k]).sum()) for k in one if one[k].is_floating_point())
    assert moved > 0.5 * total, "training moved the weights"
    assert flipped < 0.01 * total, f"{flipped} of {total} weights moved differently"

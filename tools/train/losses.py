"""Training losses and the training-time unrolls for the SpecBlock and EAGLE-3 drafters.

The forwards are those of specblock_model.py / eagle3_model.py (the modules the Rust parity tests use); this
file only builds the training masks around them (docs/training.md, docs/eagle3-forward.md
"Training alignment") and computes the losses.

SpecBlock, one window of S tokens (data.py conventions: row i's hidden gives the target's distribution over
x_{i+1}; pm[i] says whether a label from row i counts):
- entries t = 0..S-2 are (f_t, x_{t+1}) at base position t+1; slot k uses position t+1+k in every block;
- block 1: condition f_t, token x_{t+1}; slot k's label is row t+1+k;
- block b+1, after a truncation M_b drawn uniformly from 1..K (one per transition, shared by the window):
  condition = block b's pre-norm hidden of slot M_b-1 at the same entry (W_cond skipped), offset += M_b,
  token x_{t+1+offset}, slot k's label row t+1+offset+k. Attention: all slots of block 1 at earlier entries,
  the first M_j slots of each earlier block j at the same entry, causal inside the block. Nothing detached;
- draft mask m_{t,k} = pm[t+1] * pm[label row] * chain_{t,k}, chain = the valid-prefix mask, which compares
  the draft's argmax with the argmax of the target's renormalised draft-vocabulary distribution (as the
  authors do); rank labels use that argmax too. The printed accuracies instead require the target's
  full-vocabulary argmax (what a greedy verifier accepts);
- rank head input = (stopgrad(final-normed hidden), rank features of stopgrad(logits)) with the config's
  rank_topk (docs/design.md: same T as inference).
Total = sum_k w^k * sum_blocks L_{b,k} + rank_weight * sum_blocks RankLoss_b, w = 0.8.

Batch reduction: a window is the unit (the explicit-mask attention is quadratic in the entries), so every
normaliser (the per-slot draft-loss denominators, the rank-class counts of the rebalancing) is per window and
the batch loss is the mean over windows. The authors normalise over the whole batch; with windows of a few
hundred tokens the difference is a reweighting between windows.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from specblock_model import rank_features

RANK_BOUNDS = (1, 4, 10)   # class 0: rank 0; 1: ranks 1..3; 2: ranks 4..9; 3: not in the top 10


# --- hand-checkable pieces ---

def valid_prefix_mask(correct: torch.Tensor) -> torch.Tensor:
    """correct [N, K] bool (slot j's draft argmax == target argmax) -> chain [N, K] bool:
    chain[:, k] = all(correct[:, :k]); slot 0 always counts."""
    N, K = correct.shape
    ones = torch.ones(N, 1, dtype=torch.bool, device=correct.device)
    return torch.cat([ones, torch.cumprod(correct[:, :-1].to(torch.int64), dim=1).bool()], dim=1)


def rank_labels(draft_logits: torch.Tensor, target_arg: torch.Tensor) -> torch.Tensor:
    """draft_logits [..., V_d]; target_arg [...] draft id of the target's argmax (-1 = outside the draft
    vocabulary). Returns the class [...] of the target token's rank among the draft's top 10:
    0 (top-1), 1 (ranks 2-4), 2 (ranks 5-10), 3 (not in the top 10)."""
    top = torch.topk(draft_logits.detach().float(), RANK_BOUNDS[-1], dim=-1).indices   # [..., 10]
    hit = top == target_arg.unsqueeze(-1)
    rank = torch.where(hit.any(-1), hit.float().argmax(-1), torch.full_like(target_arg, RANK_BOUNDS[-1]))
    return (rank >= RANK_BOUNDS[0]).long() + (rank >= RANK_BOUNDS[1]).long() + (rank >= RANK_BOUNDS[2]).long()


def ordinal_soft_targets(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Asymmetric ordinal smoothing: weight of class c for label t is 1 / (1 + |c-t| + max(t-c, 0))^2,
    normalised (under-estimating the rank costs more)."""
    c = torch.arange(classes, device=labels.device)
    t = labels.unsqueeze(-1)
    w = 1.0 / (1 + (c - t).abs() + (t - c).clamp(min=0)).float() ** 2
    return w / w.sum(-1, keepdim=True)


def rank_chain_mask(entry_valid: torch.Tensor, pm_label: torch.Tensor, pred: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
    """The rank curriculum: chain starts at entry_valid [N]; slot k counts where chain * pm_label[:, k]; after
    slot k the chain is multiplied by [pred == label], so it stops after the first misprediction (that slot
    included). Returns [N, K] bool."""
    N, K = pred.shape
    ok = (pred == labels)
    before = torch.cat([torch.ones(N, 1, dtype=torch.bool), torch.cumprod(ok[:, :-1].long(), 1).bool()], 1)
    return entry_valid[:, None] & before & pm_label


def rank_loss(rank_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, budget: float = 10.0):
    """rank_logits [N, K, C]; labels, mask [N, K]. Soft CE against the ordinal-smoothed labels, times the
    distance weight 1 + |t - c^| + max(t - c^, 0) (c^ = argmax prediction), times the per-slot class weight
    min(1, budget / count_c) (count over masked samples of that slot). Normalised by sum(w_c * mask)."""
    C = rank_logits.shape[-1]
    m = mask.float()
    soft = ordinal_soft_targets(labels, C)
    ce = -(soft * torch.log_softmax(rank_logits.float(), -1)).sum(-1)           # [N, K]
    pred = rank_logits.detach().argmax(-1)
    w_dist = (1 + (labels - pred).abs() + (labels - pred).clamp(min=0)).float()
    onehot = F.one_hot(labels, C).float() * m[..., None]                       # [N, K, C]
    counts = onehot.sum(0)                                                       # [K, C]
    w_class = torch.clamp(budget / counts.clamp(min=1e-9), max=1.0)              # [K, C]
    w_c = (onehot * w_class[None]).sum(-1)                                       # [N, K] (0 where masked)
    den = w_c.sum()
    if den <= 0:
        return rank_logits.sum() * 0.0
    return (ce * w_dist * w_c).sum() / den


def soft_ce_per_slot(logits: torch.Tensor, target_logp: torch.Tensor, mask: torch.Tensor):
    """logits [N, K, V_d], target_logp [N, K, V_d], mask [N, K] -> (per-slot loss [K], per-slot count [K]).
    L_k = -sum_t m sum_v p log q / sum_t m (0 where no position counts)."""
    logq = torch.log_softmax(logits.float(), -1)
    ce = -(target_logp.exp() * logq).sum(-1)                                     # [N, K]
    m = mask.float()
    cnt = m.sum(0)
    return (ce * m).sum(0) / cnt.clamp(min=1.0), cnt


# --- SpecBlock multi-block test-time training ---

def _empty_ctx(model):
    c = model.config
    z = torch.zeros(0, c.num_key_value_heads, c.head_dim)
    return [(z, z) for _ in range(c.num_hidden_layers)]


def specblock_masks(E: int, K: int, Ms: list[int]):
    """The attention mask [E*K, (len(Ms)+1)*E*K] of block len(Ms)+1, given the truncations M_1..M_{b-1} of
    the earlier blocks (Ms = [] for block 1). Keys: block 1 rows, then each later block's rows, then the
    block's own rows, each entry-major then slot."""
    qe = torch.arange(E).repeat_interleave(K)
    qs = torch.arange(K).repeat(E)
    same = qe[:, None] == qe[None, :]
    own = same & (qs[:, None] >= qs[None, :])
    if not Ms:
        return (qe[:, None] > qe[None, :]) | own
    parts = [(qe[:, None] > qe[None, :]) | (same & (qs[None, :] < Ms[0]))]
    for M in Ms[1:]:
        parts.append(same & (qs[None, :] < M))
    parts.append(own)
    return torch.cat(parts, dim=1)


def specblock_window_loss(model, win: dict, labels: tuple, blocks: int = 3, Ms: list[int] | None = None,
                          slot_weight: float = 0.8, rank_weight: float = 1.0, rank_budget: float = 10.0,
                          gen: torch.Generator | None = None, keep_outputs: bool = False,
                          chain_mask: bool = True):
    """Loss of one window (see the module docstring). `labels` = data.target_labels(...). `Ms`: the
    truncations (drawn from `gen` when None). `chain_mask=False` drops the valid-prefix mask (every slot
    trains at every position; a curriculum may switch the mask on once slot 1 is accurate). Returns (loss, stats dict with per-block per-slot correct /
    counted numbers for metrics; with keep_outputs, stats["outputs"] holds per block (logits, rank logits,
    pre-norm h), each [E, K, .])."""
    cfg = model.config
    K = cfg.K
    tokens, feats = win["tokens"], win["features"]
    logp, arg_d, pm = labels
    S = tokens.shape[0]
    E = S - 1
    arg_r = logp.argmax(-1)
    if Ms is None:
        Ms = [int(torch.randint(1, K + 1, (1,), generator=gen, device="cpu")) for _ in range(blocks - 1)]
    t = torch.arange(E)
    positions = (t + 1)[:, None] + torch.arange(K)[None, :]
    entry_valid = pm[t + 1] if E > 0 else pm[:0]

    draft_terms = torch.zeros(K)
    stats = {"correct": [], "counted": [], "Ms": Ms, "cmat": [], "entry_valid": entry_valid, "outputs": []}
    ctx_k = [[] for _ in range(cfg.num_hidden_layers)]
    ctx_v = [[] for _ in range(cfg.num_hidden_layers)]
    off = 0
    h_prev = None
    draft_loss = 0.0
    rank_total = 0.0
    for b in range(blocks):
        tok_idx = (t + 1 + off).clamp(max=S - 1)
        emb = model._embed(tokens[tok_idx])
        if b == 0:
            z = model.input_layer(feats[:E], emb, feature_condition=True)
            ctx = _empty_ctx(model)
        else:
            z = model.input_layer(h_prev[:, Ms[b - 1] - 1], emb, feature_condition=False)
            ctx = [(torch.cat(ctx_k[l], 0), torch.cat(ctx_v[l], 0)) for l in range(cfg.num_hidden_layers)]
        mask = specblock_masks(E, K, Ms[:b])
        h, new_kv = model._trunk(z, positions, ctx, mask)
        for l, (k, v) in enumerate(new_kv):
            ctx_k[l].append(k)
            ctx_v[l].append(v)
        n = model.norm(h)
        logits = model.lm_head(n)                                               # [E, K, V_d]
        rows = (t[:, None] + 1 + off + torch.arange(K)[None, :])                 # label rows [E, K]
        inside = rows < S
        rows_c = rows.clamp(max=S - 1)
        pm_l = pm[rows_c] & inside
        tgt = arg_d[rows_c]                     # full-vocabulary argmax as a draft id (-1: outside)
        tgt_r = arg_r[rows_c]                   # argmax of the renormalised draft-vocabulary distribution
        pred = logits.detach().argmax(-1)
        correct = (pred == tgt) & pm_l          # metrics: a greedy verifier would accept this slot
        chain = valid_prefix_mask((pred == tgt_r) & inside) if chain_mask else inside
        m = entry_valid[:, None] & pm_l & chain
        Lk, cnt = soft_ce_per_slot(logits, logp[rows_c], m)
        draft_loss = draft_loss + (Lk * slot_weight ** torch.arange(K, dtype=torch.float32)).sum()
        draft_terms += Lk.detach()
        stats["correct"].append((correct & entry_valid[:, None]).sum(0))
        stats["cmat"].append(correct)
        stats["counted"].append((pm_l & entry_valid[:, None]).sum(0))
        if rank_weight > 0:
            feats_r = rank_features(logits.detach(), cfg.rank_topk)
            rl = model.rank_head(torch.cat([n.detach(), feats_r], dim=-1))
            lab = rank_labels(logits, tgt_r)
            rmask = rank_chain_mask(entry_valid, pm_l, rl.detach().argmax(-1), lab)
            rank_total = rank_total + rank_loss(rl, lab, rmask, rank_budget)
        if keep_outputs:
            rl_out = model.rank_head(torch.cat([n, rank_features(logits, cfg.rank_topk)], -1))
            stats["outputs"].append((logits.detach(), rl_out.detach(), h.detach()))
        if b + 1 < blocks:
            h_prev = h
            off += Ms[b]
    total = draft_loss + rank_weight * rank_total
    stats["draft_loss"] = float(draft_loss.detach())
    stats["rank_loss"] = float(rank_total.detach()) if rank_weight > 0 else 0.0
    stats["slot_loss"] = draft_terms
    return total, stats


def accept_proxy(stats) -> tuple[float, int]:
    """(sum over counted entries of 1 + correct greedy prefix length over all blocks/steps, entries). Only
    meaningful for chained unrolls (SpecBlock with M = K, EAGLE-3 TTT). The next input is the data's token,
    which equals the target's argmax on greedy conversations."""
    c = torch.cat(stats["cmat"], dim=1).long()
    prefix = torch.cumprod(c, dim=1).sum(1)
    ev = stats["entry_valid"]
    return float((1 + prefix[ev]).sum()), int(ev.sum())


# --- EAGLE-3 training-time test ---

def eagle3_window_loss(model, win: dict, labels: tuple, steps: int = 7, step_weight: float = 0.8,
                       keep_outputs: bool = False):
    """EAGLE-3 TTT over one window (docs/eagle3-forward.md "Training alignment"): step 0 at column t is
    (f_t, x_{t+1}) at position t; step s takes step s-1's pre-norm h at column t and x_{t+1+s} at position
    t+s; it sees step-0 rows of columns 0..t and the rows of steps 1..s of its own column. Label of step s at
    column t: row t+1+s (the target over x_{t+2+s}), counted where pm[t+1] and pm[t+1+s]. Soft CE, step
    weights 0.8^s, each step normalised by its count. Returns (loss, stats); with keep_outputs,
    stats["outputs"] holds per step (logits [E, V_d], pre-norm h [E, H])."""
    tokens, feats = win["tokens"], win["features"]
    logp, arg_d, pm = labels
    S = tokens.shape[0]
    E = S - 1
    t = torch.arange(E)
    entry_valid = pm[t + 1]
    causal = t[:, None] >= t[None, :]
    eye = torch.eye(E, dtype=torch.bool)
    ks, vs = [], []
    g = model.fc(feats[:E])
    loss = 0.0
    stats = {"correct": [], "counted": [], "slot_loss": torch.zeros(steps), "cmat": [],
             "entry_valid": entry_valid, "outputs": []}
    for s in range(steps):
        tok = tokens[(t + 1 + s).clamp(max=S - 1)]
        if s == 0:
            mask = causal
        else:
            mask = torch.cat([causal] + [eye] * s, dim=1)
        pk = torch.cat(ks, 0) if ks else torch.zeros(0, model.config.num_key_value_heads, model.config.head_dim)
        pv = torch.cat(vs, 0) if vs else pk
        out = model._run(g, tok, t + s, pk, pv, mask)
        ks.append(out.k)
        vs.append(out.v)
        rows = t + 1 + s
        inside = rows < S
        rows_c = rows.clamp(max=S - 1)
        pm_l = pm[rows_c] & inside
        m = entry_valid & pm_l
        Ls, _ = soft_ce_per_slot(out.logits[:, None], logp[rows_c][:, None], m[:, None])
        loss = loss + step_weight ** s * Ls[0]
        stats["slot_loss"][s] = Ls[0].detach()
        correct = (out.logits.detach().argmax(-1) == arg_d[rows_c]) & m
        stats["correct"].append(correct.sum()[None])
        stats["cmat"].append(correct[:, None])
        if keep_outputs:
            stats["outputs"].append((out.logits.detach(), out.h.detach()))
        stats["counted"].append(m.sum()[None])
        g = out.h
    stats["draft_loss"] = float(loss.detach())
    stats["rank_loss"] = 0.0
    return loss, stats

"""Per-dimension standardisation of the target's aux features, folded into the drafter's first projection.

SmolLM2's aux-layer residuals carry a few "massive activation" dimensions: on the datagen shards the mean |x|
of the largest is ~360 against a row RMS of ~14, and attention-sink rows reach 2.5e4. AdamW moves every
weight by about the learning rate per step, so a projection weight on a dimension of scale sigma moves the
output by about sigma * lr: the massive dimensions' weights swing the projection while the informative ones
learn slowly, and a higher learning rate destabilises the whole drafter (docs/training.md).

Training on x * s (s = 1 / the dimension's RMS) with projection weights W' = W / s computes the same function
and gives every dimension the same effective step. The export folds back W = W' * s, so the checkpoints and
the Rust runtime see the usual weights of raw features.
"""
from __future__ import annotations

import torch

# Rows whose RMS exceeds this multiple of the median row RMS (attention sinks) are left out of the statistics.
SINK_RMS_RATIO = 8.0


def estimate(windows) -> torch.Tensor:
    """Per-dimension scale s [3H] = 1 / RMS over the non-sink rows of `windows` (each a dict with `features`
    [S, 3H]). Dimensions that are zero everywhere keep scale 1."""
    rows = torch.cat([w["features"].float() for w in windows], dim=0)
    row_rms = rows.pow(2).mean(-1).sqrt()
    live = row_rms > 0
    median = row_rms[live].median() if bool(live.any()) else torch.tensor(0.0)
    keep = live & (row_rms <= SINK_RMS_RATIO * median)
    if not bool(keep.any()):
        return torch.ones(rows.shape[-1])
    dim_rms = rows[keep].pow(2).mean(0).sqrt()
    return torch.where(dim_rms > 0, 1.0 / dim_rms.clamp(min=1e-12), torch.ones_like(dim_rms))


def projection_name(method: str) -> str:
    """State-dict name of the linear map that reads the raw features."""
    return "input_layer.condition_proj.weight" if method == "specblock" else "fc.weight"


def to_training(model, method: str, scale: torch.Tensor):
    """W -> W' = W / s in place: the model then expects features multiplied by `scale`."""
    w = model.get_parameter(projection_name(method))
    with torch.no_grad():
        w.div_(scale.to(w.device)[None, :])


def folded(state_dict: dict, method: str, scale: torch.Tensor) -> dict:
    """A copy of `state_dict` (taken from a model in training form) with W = W' * s: the weights of raw
    features."""
    name = projection_name(method)
    out = dict(state_dict)
    out[name] = state_dict[name] * scale.to(state_dict[name].device)[None, :]
    return out

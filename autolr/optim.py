"""Optimizers of the recipes, built with timm's optimizer factory.

| name | optimizer | weight decay applies to |
|---|---|---|
| ``adamp`` | timm AdamP, delta 0.1, wd_ratio 0.1, no Nesterov (the AutoWU authors' recipe) | every parameter |
| ``lamb`` | timm Lamb, its defaults (incl. its global grad-norm clip at 1.0) | every parameter |
| ``sgd`` | torch SGD, momentum 0.9, Nesterov | weights only (not biases, norm params) |
| ``adamw`` | torch AdamW | weights only (not biases, norm params) |

shared/REPRODUCTION.md puts weight decay on every parameter for AdamP and LAMB, as the authors
did; for the two generic optimizers we keep timm's usual exclusion of 1-d parameters (biases,
norm scales/shifts) and of whatever the model lists in ``no_weight_decay()`` (e.g. ViT pos_embed).
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import create_optimizer_v2

__all__ = ["OPTIMIZERS", "build_optimizer"]

OPTIMIZERS: tuple[str, ...] = ("adamp", "lamb", "sgd", "adamw")

# Per optimizer: timm's name, whether to exempt biases/norm params from weight decay, and the
# arguments that override timm's registry defaults.
_SPECS: dict[str, tuple[str, bool, dict[str, Any]]] = {
    # timm's registry defaults AdamP to wd_ratio 0.01 and Nesterov; the AdamP paper's class (and
    # the AutoWU authors' recipe) uses delta 0.1, wd_ratio 0.1 and plain Adam momentum.
    "adamp": ("adamp", False, {"delta": 0.1, "wd_ratio": 0.1, "nesterov": False}),
    "lamb": ("lamb", False, {}),
    "sgd": ("sgd", True, {"momentum": 0.9, "nesterov": True}),
    "adamw": ("adamw", True, {}),
}


def build_optimizer(
    name: str, model: torch.nn.Module, *, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` (one of ``OPTIMIZERS``) over ``model``'s parameters.

    ``lr`` is the initial LR of every parameter group; the schedulers overwrite it each step.
    """
    try:
        timm_name, filter_bias_and_bn, extra = _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}") from None
    # the model itself only where biases and norm weights are exempt: given a model, timm also
    # exempts what its no_weight_decay() names (a ViT's cls_token and pos_embed), and AdamP / LAMB
    # decay every parameter in the authors' recipe
    return create_optimizer_v2(
        model if filter_bias_and_bn else model.parameters(),
        opt=timm_name,
        lr=lr,
        weight_decay=weight_decay,
        filter_bias_and_bn=filter_bias_and_bn,
        **extra,
    )

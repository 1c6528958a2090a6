"""The baseline schedules: linear warmup then cosine decay (under the scaling rules of Goyal et al.
and LEGW, or at a fixed peak), cosine without warmup, and a constant LR.

The contract they follow is ``autolr.scheduler``'s; ``autolr.registry`` names them and builds them.
Warmup lengths are given in epochs and converted to steps with ``round(epochs * steps_per_epoch)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from autolr.scheduler import Scheduler, _check_positive, _check_positive_int, cosine_factor

__all__ = ["WarmupCosine", "Constant", "DEFAULT_WARMUP_EPOCHS", "build_linear", "build_legw", "build_fixed",
           "build_cosine", "build_constant"]

#: the warmup of linear and fixed when none is given, and LEGW's base warmup w0
DEFAULT_WARMUP_EPOCHS = 5.0


class WarmupCosine(Scheduler):
    """Linear warmup to ``peak_lr`` over ``warmup_steps``, then cosine decay to 0 at step T.

    lr(s) = peak · (s + 1) / W            for s < W
    lr(s) = peak · ½(1 + cos(π (s − W)/(T − W)))   for W ≤ s ≤ T

    The warmup starts at peak/W rather than 0 so that no step is wasted at LR 0 (Goyal et al.
    start from the small-batch LR; with W steps this reaches the peak on step W − 1).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_epochs: int, *,
                 peak_lr: float, warmup_steps: int = 0, info: dict[str, Any] | None = None) -> None:
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        self.peak_lr = _check_positive("peak lr", peak_lr)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps must be a non-negative integer, got {warmup_steps!r}")
        if warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup of {warmup_steps} steps leaves no decay in a budget of {self.total_steps} steps; "
                "use fewer warmup epochs"
            )
        self.warmup_steps = warmup_steps
        self.info = dict(info or {})
        self._apply(self._lr(0))

    @property
    def phase(self) -> str:
        return "warmup" if self.last_step < self.warmup_steps else "decay"

    def _lr(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        return self.peak_lr * cosine_factor(step, self.warmup_steps, self.total_steps)

    def describe(self) -> dict[str, Any]:
        return {"name": self.info.get("name", "warmup_cosine"), "peak_lr": self.peak_lr,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps, **self.info}


class Constant(Scheduler):
    """A constant LR for every step (the no-schedule reference)."""

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_epochs: int, *,
                 lr: float) -> None:
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        self.lr = _check_positive("lr", lr)
        self._apply(self._lr(0))

    def _lr(self, step: int) -> float:
        return self.lr

    def describe(self) -> dict[str, Any]:
        return {"name": "constant", "lr": self.lr, "total_steps": self.total_steps}


# -- builders: the registry checks lr and passes warmup_epochs and legw_b0 only where its entry says --

def _warmup_steps(epochs: float, steps_per_epoch: int) -> int:
    steps = _check_positive("warmup_epochs", epochs, allow_zero=True) * steps_per_epoch
    if not math.isfinite(steps):
        raise ValueError(f"warmup_epochs={epochs!r} is beyond any budget: use fewer warmup epochs")
    return int(round(steps))


def build_linear(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                 lr: float, warmup_epochs: float | None) -> Scheduler:
    """Goyal et al.: peak = lr · B / 256, linear warmup over ``warmup_epochs`` (default 5)."""
    w = DEFAULT_WARMUP_EPOCHS if warmup_epochs is None else warmup_epochs
    info = {"name": "linear", "base_lr": lr, "batch_size": batch_size, "warmup_epochs": float(w)}
    return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=lr * batch_size / 256,
                        warmup_steps=_warmup_steps(w, steps_per_epoch), info=info)


def build_legw(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
               lr: float, warmup_epochs: float | None, legw_b0: int | None) -> Scheduler:
    """You et al.: peak = lr · √(B / B0), warmup w0 · B / B0 epochs, capped at half the budget."""
    if legw_b0 is None:
        raise ValueError("legw needs legw_b0, the batch size its lr and warmup_epochs were tuned at")
    b0 = _check_positive_int("legw_b0", legw_b0)
    w = DEFAULT_WARMUP_EPOCHS if warmup_epochs is None else warmup_epochs
    peak = lr * math.sqrt(batch_size / b0)
    scaled = float(w) * batch_size / b0
    cap = total_epochs / 2
    capped = scaled > cap
    epochs = cap if capped else scaled
    info = {"name": "legw", "base_lr": lr, "batch_size": batch_size, "legw_b0": b0,
            "base_warmup_epochs": float(w), "warmup_epochs": epochs, "warmup_capped": capped}
    return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=peak,
                        warmup_steps=_warmup_steps(epochs, steps_per_epoch), info=info)


def build_fixed(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                lr: float, warmup_epochs: float | None) -> Scheduler:
    """Linear warmup over ``warmup_epochs`` (default 5) to the peak ``lr``, at every batch size."""
    w = DEFAULT_WARMUP_EPOCHS if warmup_epochs is None else warmup_epochs
    return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=lr,
                        warmup_steps=_warmup_steps(w, steps_per_epoch),
                        info={"name": "fixed", "warmup_epochs": float(w)})


def build_cosine(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                 lr: float) -> Scheduler:
    """Cosine decay from ``lr``, no warmup."""
    return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=lr, warmup_steps=0,
                        info={"name": "cosine"})


def build_constant(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                   lr: float) -> Scheduler:
    """The constant ``lr``."""
    return Constant(optimizer, steps_per_epoch, total_epochs, lr=lr)

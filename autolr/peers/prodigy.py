"""Prodigy with cosine decay over all steps, and its estimated LR d·lr for the run's record.

The optimizer is ``prodigyopt.Prodigy`` (PyPI ``prodigyopt==1.1.2``, Mishchenko & Defazio 2024)
with its recommended settings (shared/PEERS.md section 1): lr 1 (a multiplier of the estimate d),
the default ``d_coef`` 1, decoupled weight decay (AdamW-style, scaled by d·lr) at the recipe's
value, and the README's scheduler: cosine from 1 to 0 over all T steps, here the project's
``cosine_factor(step, 0, T)`` (0 at step T, one past the last step taken). It is charged 0 tuning
runs. Every parameter is decayed, as for AdamP in the recipe.

The step size Prodigy applies at a step is ``d * lr`` with d the estimate held before that step
(the step updates d after computing its step size; bias correction is off by default), so
``estimated_lr`` read before ``optimizer.step()`` is the LR that step uses: the run records it per
step, to set beside AutoWU's switch LR and the tuned peaks. d never decreases (``d = max(d, d_hat)``).

Prodigy replaces the recipe's optimizer (AdamP's projection for scale-invariant weights is lost),
so its results are an optimizer-and-schedule change, not a schedule change alone. Its whole state
(d, its running sums, the moments and the initial weights p0) is in ``optimizer.state_dict()``,
so a run resumes exactly from the optimizer's and the scheduler's state dicts.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from autolr.schedules import cosine_factor

__all__ = ["PRODIGY", "build_optimizer", "estimated_lr", "ProdigyCosine"]

#: Prodigy's settings here (its defaults, decoupled decay), weight decay excepted
PRODIGY: dict[str, Any] = {"lr": 1.0, "d_coef": 1.0, "decouple": True}


def build_optimizer(params: Iterable[Any], *, weight_decay: float) -> torch.optim.Optimizer:
    """Prodigy over ``params`` (parameters or groups). Needs ``pip install 'autolr[peers]'``."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not (
            math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
    try:
        from prodigyopt import Prodigy
    except ImportError:
        raise ImportError("Prodigy needs the prodigyopt package: pip install 'autolr[peers]'") from None
    # its constructor prints a line when decay is decoupled, on every rank
    with contextlib.redirect_stdout(io.StringIO()):
        return Prodigy(params, weight_decay=float(weight_decay), **PRODIGY)


def estimated_lr(optimizer: torch.optim.Optimizer) -> float:
    """The step size of the next step, ``d * lr`` (first group), read before ``optimizer.step()``."""
    g = optimizer.param_groups[0]
    return float(g["d"]) * float(g["lr"])


class ProdigyCosine(LRScheduler):
    """Cosine decay of Prodigy's lr multiplier over all ``total_steps``; reports d·lr.

    Writes ``lr = base * cosine_factor(step, 0, T)`` into every group (construction writes step
    0's), and ``get_last_lr()`` returns each group's ``d * lr``, the LR the next step applies,
    for the run's LR trace; ``multiplier`` is the cosine factor alone.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        # LRScheduler.__init__ is not called: it would take a first step and wrap optimizer.step
        if "d" not in optimizer.param_groups[0]:
            raise ValueError(f"{type(optimizer).__name__} is not Prodigy: its groups hold no estimate d")
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = 0
        self._step_count = 0
        self._write()

    @property
    def phase(self) -> str:
        return "decay"

    @property
    def multiplier(self) -> float:
        return cosine_factor(self.last_epoch, 0, self.total_steps)

    def _write(self) -> None:
        f = self.multiplier
        for g, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            g["lr"] = base * f

    def step(self, loss: float | torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Advance one optimizer step; ``loss`` is accepted for a uniform API and ignored."""
        self._step_count += 1
        self.last_epoch += 1
        self._write()

    def get_lr(self) -> list[float]:
        return [float(g["d"]) * float(g["lr"]) for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        return self.get_lr()

    def describe(self) -> dict[str, Any]:
        return {"name": "prodigy", "optimizer": "Prodigy", **PRODIGY, "schedule": "cosine over all steps",
                "weight_decay": self.optimizer.param_groups[0]["weight_decay"], "total_steps": self.total_steps}

    def summary(self) -> dict[str, Any]:
        """The estimate now, for the run's record: d (the LR Prodigy found), its largest candidate, d0."""
        g = self.optimizer.param_groups[0]
        return {"d": float(g["d"]), "d_max": float(g["d_max"]), "d0": float(g["d0"]), "multiplier": self.multiplier,
                "steps": self.last_epoch}

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.describe(), "last_step": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("config", {})
        if saved.get("name") != "prodigy" or saved.get("total_steps") != self.total_steps:
            raise ValueError(f"scheduler state is for {saved.get('name')!r} over {saved.get('total_steps')} steps, "
                             f"this is prodigy over {self.total_steps}: resume with the same settings")
        self.last_epoch = int(state["last_step"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._write()

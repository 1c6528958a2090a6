"""Step-wise learning-rate schedules: the shared scheduler machinery and the baselines.

Every scheduler here (and ``autolr.AutoWU``) follows one contract, modelled on
``torch.optim.lr_scheduler``:

- construction writes the LR of step 0 into the optimizer;
- ``step(loss=None)`` is called once after every ``optimizer.step()`` and writes the LR of the
  next step;
- ``get_last_lr()`` returns the LR of every parameter group for the step about to be taken;
- ``state_dict()`` / ``load_state_dict()`` round-trip everything needed to resume exactly.

Steps are counted from 0; ``T = steps_per_epoch * total_epochs`` steps are taken in all and the
schedules reach 0 at step ``T`` (one past the last step taken). Warmup lengths are given in
epochs and converted to steps with ``round(epochs * steps_per_epoch)``.

Parameter groups keep the ratio of their initial LR to the first group's, so a backbone with a
10x lower LR stays 10x lower under every schedule.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = [
    "Scheduler",
    "WarmupCosine",
    "Constant",
    "build_scheduler",
    "SCHEDULERS",
    "cosine_factor",
]


def cosine_factor(step: int, start: int, end: int) -> float:
    """½(1 + cos(π (step − start)/(end − start))): 1 at ``start``, 0 at ``end``."""
    if end <= start:
        return 0.0
    t = min(max(step - start, 0), end - start) / (end - start)
    return 0.5 * (1.0 + math.cos(math.pi * t))


def _check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    # numpy integers are integers; bools and 2.7 are not
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    v = _check_real(name, value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return v


class Scheduler:
    """Base class: step counting, per-group LR ratios, and the state-dict plumbing.

    Subclasses implement ``_lr(step)`` (the first group's LR at a step) and may override
    ``step`` when they react to the loss.
    """

    #: attributes saved by ``state_dict`` besides the step and group ratios
    _state_keys: tuple[str, ...] = ()

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_epochs: int) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer")
        self.optimizer = optimizer
        self.steps_per_epoch = _check_positive_int("steps_per_epoch", steps_per_epoch)
        self.total_epochs = _check_positive_int("total_epochs", total_epochs)
        self.total_steps = self.steps_per_epoch * self.total_epochs
        first = float(optimizer.param_groups[0]["lr"])
        if first <= 0 or not math.isfinite(first):
            raise ValueError(
                "the optimizer's first parameter group must have a positive lr: the other groups' "
                f"LRs are kept as ratios to it (got {first})"
            )
        self.group_ratios = [float(g["lr"]) / first for g in optimizer.param_groups]
        self.last_step = 0
        self._last_lr: list[float] = []

    # -- what subclasses provide -------------------------------------------------------------
    def _lr(self, step: int) -> float:
        raise NotImplementedError

    @property
    def phase(self) -> str:
        return "schedule"

    def describe(self) -> dict[str, Any]:
        """The resolved schedule parameters, for run records."""
        return {"name": type(self).__name__}

    # -- the torch-like API ------------------------------------------------------------------
    def _apply(self, lr: float) -> None:
        self._last_lr = [lr * r for r in self.group_ratios]
        for group, value in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = value

    def step(self, loss: float | torch.Tensor | None = None) -> None:
        """Advance one optimizer step; ``loss`` is accepted for a uniform API and ignored."""
        self.last_step += 1
        self._apply(self._lr(self.last_step))

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def lr_at(self, step: int) -> float:
        """The first group's LR at ``step`` (only for schedules that ignore the loss)."""
        return self._lr(step)

    def state_dict(self) -> dict[str, Any]:
        state = {"last_step": self.last_step, "group_ratios": list(self.group_ratios),
                 "last_lr": list(self._last_lr), "total_steps": self.total_steps}
        for key in self._state_keys:
            state[key] = getattr(self, key)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("total_steps", self.total_steps) != self.total_steps:
            raise ValueError(
                f"scheduler state is for {state['total_steps']} total steps, this scheduler has "
                f"{self.total_steps}: resume with the same batch size, data and epochs"
            )
        self.last_step = int(state["last_step"])
        self.group_ratios = [float(r) for r in state["group_ratios"]]
        for key in self._state_keys:
            setattr(self, key, state[key])
        last_lr = state.get("last_lr")
        if last_lr:
            self._last_lr = [float(v) for v in last_lr]
            for group, value in zip(self.optimizer.param_groups, self._last_lr, strict=True):
                group["lr"] = value
        else:
            self._apply(self._lr(self.last_step))


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


# -- the factory -----------------------------------------------------------------------------

#: every scheduler name ``build_scheduler`` accepts, with what ``lr`` means for it
SCHEDULERS: dict[str, str] = {
    "auto": "AutoWU; lr is not accepted (use init_lr / max_lr)",
    "autoplus": "AutoWU+; lr is not accepted (use init_lr / max_lr)",
    "linear": "Goyal et al.: peak = lr * B / 256, linear warmup over warmup_epochs",
    "legw": "You et al.: peak = lr * sqrt(B / B0), warmup epochs = w0 * B / B0, capped at half the budget",
    "fixed": "linear warmup over warmup_epochs to the peak lr",
    "cosine": "cosine decay from lr, no warmup",
    "constant": "constant lr",
}

DEFAULT_WARMUP_EPOCHS = 5.0


def _warmup_steps(epochs: float, steps_per_epoch: int) -> int:
    return int(round(_check_positive("warmup_epochs", epochs, allow_zero=True) * steps_per_epoch))


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int,
                    total_epochs: int, batch_size: int, lr: float | None = None,
                    warmup_epochs: float | None = None, legw_b0: int | None = None,
                    **autowu_options: Any) -> Scheduler:
    """Build any scheduler of this project by name (see ``SCHEDULERS``).

    ``batch_size`` is the global batch. ``warmup_epochs`` defaults to 5 for ``linear`` and
    ``fixed`` and is the base warmup w0 at batch ``legw_b0`` for ``legw``. Remaining keyword
    arguments go to ``AutoWU`` and are refused by the other schedules.
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    batch_size = _check_positive_int("batch_size", batch_size)
    if name in ("auto", "autoplus"):
        if lr is not None:
            raise ValueError("AutoWU finds its own peak LR: drop lr and set init_lr / max_lr instead")
        if warmup_epochs is not None or legw_b0 is not None:
            raise ValueError("AutoWU takes no warmup_epochs / legw_b0: its warmup length is adaptive")
        if name == "autoplus":
            from autolr.autoplus import AutoWUPlus

            return AutoWUPlus(optimizer, steps_per_epoch, total_epochs, **autowu_options)
        from autolr.autowu import AutoWU

        return AutoWU(optimizer, steps_per_epoch, total_epochs, **autowu_options)
    if autowu_options:
        raise ValueError(f"options {sorted(autowu_options)} are for AutoWU only, not {name!r}")
    if lr is None:
        raise ValueError(f"scheduler {name!r} needs lr ({SCHEDULERS[name]})")
    lr = _check_positive("lr", lr)
    if legw_b0 is not None and name != "legw":
        raise ValueError(f"legw_b0 is for the legw scheduler only, not {name!r}")
    if name in ("cosine", "constant") and warmup_epochs not in (None, 0, 0.0):
        raise ValueError(f"scheduler {name!r} has no warmup; drop warmup_epochs")
    w = DEFAULT_WARMUP_EPOCHS if warmup_epochs is None else warmup_epochs

    if name == "linear":
        peak = lr * batch_size / 256
        info = {"name": "linear", "base_lr": lr, "batch_size": batch_size, "warmup_epochs": float(w)}
        return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=peak,
                            warmup_steps=_warmup_steps(w, steps_per_epoch), info=info)
    if name == "legw":
        if legw_b0 is None:
            raise ValueError("legw needs legw_b0, the batch size its lr and warmup_epochs were tuned at")
        b0 = _check_positive_int("legw_b0", legw_b0)
        peak = lr * math.sqrt(batch_size / b0)
        scaled = float(w) * batch_size / b0
        cap = total_epochs / 2
        capped = scaled > cap
        epochs = cap if capped else scaled
        info = {"name": "legw", "base_lr": lr, "batch_size": batch_size, "legw_b0": b0,
                "base_warmup_epochs": float(w), "warmup_epochs": epochs, "warmup_capped": capped}
        return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=peak,
                            warmup_steps=_warmup_steps(epochs, steps_per_epoch), info=info)
    if name == "fixed":
        info = {"name": "fixed", "warmup_epochs": float(w)}
        return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=lr,
                            warmup_steps=_warmup_steps(w, steps_per_epoch), info=info)
    if name == "cosine":
        return WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=lr, warmup_steps=0,
                            info={"name": "cosine"})
    return Constant(optimizer, steps_per_epoch, total_epochs, lr=lr)

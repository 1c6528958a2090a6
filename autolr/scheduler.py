"""The scheduler contract every method of autolr follows, and the argument checks they share.

Every scheduler (the baselines in ``autolr.schedules``, ``autolr.AutoWU``, and any method added
through ``autolr.registry``) is a ``torch.optim.lr_scheduler.LRScheduler`` that takes the loss in
``step``, the way ``ReduceLROnPlateau`` takes a metric:

- construction writes the LR of step 0 into the optimizer;
- ``step(loss=None)`` is called once after every ``optimizer.step()`` and writes the LR of the
  next step (a 0-d tensor loss stays on its device: no host sync per step);
- ``last_epoch`` (also ``last_step``) counts the optimizer steps taken; ``base_lrs`` are the
  groups' LRs when the scheduler was built; ``get_last_lr()`` returns every group's LR for the
  step about to be taken;
- ``state_dict()`` / ``load_state_dict()`` round-trip everything needed to resume exactly, in
  plain Python types (``torch.load(weights_only=True)`` reads them); a state of another
  scheduler or other settings is refused, and nothing is loaded unless all of it fits.

Steps are counted from 0; ``T = steps_per_epoch * total_epochs`` steps are taken in all and the
schedules reach 0 at step ``T`` (one past the last step taken). Parameter groups keep the ratio of
their initial LR to the first group's, so a backbone with a 10x lower LR stays 10x lower. A group
whose ``lr`` is a tensor (compiled or capturable optimizers) is updated in place.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["Scheduler", "Option", "option", "options_of", "cosine_factor"]


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


# -- method-specific options, declared once ------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """One setting of a scheduler: its type, default and meaning.

    ``flag`` options are train.py flags (``--init-lr``) and so part of a run's identity; the
    others are set in code (``seed`` comes from the run's seed).
    """

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    flag: bool = False


def option(default: Any, help: str, *, choices: tuple[Any, ...] | None = None, flag: bool = False) -> Any:
    """A field of a scheduler's options dataclass (see ``AutoWUOptions``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "flag": flag})


def options_of(cls: type) -> tuple[Option, ...]:
    """The ``Option`` list of an options dataclass, in declaration order."""
    hints = typing.get_type_hints(cls)
    return tuple(Option(f.name, hints[f.name], f.default, f.metadata["help"], f.metadata["choices"],
                        f.metadata["flag"]) for f in dataclasses.fields(cls))


# -- the base class ------------------------------------------------------------------------------
class Scheduler(LRScheduler):
    """Base class: step counting, per-group LR ratios, and the state-dict plumbing.

    Subclasses implement ``_lr(step)`` (the first group's LR at a step), write ``self._apply(
    self._lr(0))`` at the end of their ``__init__``, and may override ``step`` when they react to
    the loss.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_epochs: int) -> None:
        # LRScheduler.__init__ is not called, as in ReduceLROnPlateau: it takes a first step()
        # (AutoWU needs every warmup step's loss), stores 'initial_lr' in the optimizer's groups,
        # and wraps optimizer.step in a call counter whose only use is a warning about call order.
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not a torch.optim.Optimizer")
        self.optimizer = optimizer
        self.steps_per_epoch = _check_positive_int("steps_per_epoch", steps_per_epoch)
        self.total_epochs = _check_positive_int("total_epochs", total_epochs)
        self.total_steps = self.steps_per_epoch * self.total_epochs
        self.base_lrs: list[float] = [float(g["lr"]) for g in optimizer.param_groups]
        first = self.base_lrs[0]
        if first <= 0 or not math.isfinite(first):
            raise ValueError(
                "the optimizer's first parameter group must have a positive lr: the other groups' "
                f"LRs are kept as ratios to it (got {first})"
            )
        self.group_ratios = [lr / first for lr in self.base_lrs]
        self.last_epoch = 0
        self._last_lr: list[float] = []

    @property
    def last_step(self) -> int:
        """The optimizer steps taken so far (torch's ``last_epoch``: its schedulers count steps there too)."""
        return self.last_epoch

    @last_step.setter
    def last_step(self, value: int) -> None:
        self.last_epoch = value

    # -- what subclasses provide -------------------------------------------------------------
    def _lr(self, step: int) -> float:
        raise NotImplementedError

    @property
    def phase(self) -> str:
        return "schedule"

    def describe(self) -> dict[str, Any]:
        """The resolved schedule parameters, for run records (and checked on resume)."""
        return {"name": type(self).__name__}

    # -- the torch API ---------------------------------------------------------------------------
    def _apply(self, lr: float) -> None:
        self._write([lr * r for r in self.group_ratios])

    def _write(self, lrs: list[float]) -> None:
        self._last_lr = lrs
        for group, value in zip(self.optimizer.param_groups, lrs, strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(value)  # a compiled or capturable optimizer holds on to this tensor
            else:
                group["lr"] = value

    def step(self, loss: float | torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Advance one optimizer step; ``loss`` is accepted for a uniform API and ignored."""
        self.last_step += 1
        self._apply(self._lr(self.last_step))

    def get_lr(self) -> list[float]:
        """Every group's LR at step ``last_epoch`` (the closed form; ``get_last_lr`` is the same)."""
        return [self._lr(self.last_step) * r for r in self.group_ratios]

    def get_last_lr(self) -> list[float]:
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.describe(), "last_step": self.last_step, "group_ratios": list(self.group_ratios),
                "last_lr": list(self._last_lr), "total_steps": self.total_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._restore(*self._check_state(state))

    # -- loading: every check first, then every assignment -----------------------------------------
    def _check_config(self, state: Mapping[str, Any], last_step: int, ratios: list[float],
                      last_lr: list[float] | None) -> None:
        """Refuse a state saved by another scheduler or with other settings."""
        saved, mine = state.get("config"), self.describe()
        if saved is None:
            # a state saved before the settings were: it must not be AutoWU's, and the LR it holds
            # must be the one this schedule gives at its step
            if "phase" in state:
                raise ValueError(f"scheduler state is AutoWU's, this scheduler is {mine.get('name')!r}")
            expected = self._lr(last_step) * ratios[0]
            if last_lr is not None and not math.isclose(last_lr[0], expected, rel_tol=1e-9, abs_tol=1e-300):
                raise ValueError(f"scheduler state holds LR {last_lr[0]!r} at step {last_step}, where this "
                                 f"schedule has {expected!r}: it is another scheduler's")
            return
        if not isinstance(saved, Mapping):
            raise ValueError("scheduler state has no valid 'config'")
        if saved.get("name") != mine.get("name"):
            raise ValueError(f"scheduler state is for {saved.get('name')!r}, this scheduler is {mine.get('name')!r}")
        for key in sorted(set(saved) | set(mine)):
            if saved.get(key) != mine.get(key):
                raise ValueError(f"scheduler state has {key}={saved.get(key)!r}, this scheduler "
                                 f"{mine.get(key)!r}: resume with the same settings")

    def _check_state(self, state: Mapping[str, Any]) -> tuple[int, list[float], list[float] | None]:
        """Validate ``state`` against this scheduler, changing nothing; return what to load."""
        if not isinstance(state, Mapping):
            raise ValueError(f"a scheduler state is a dict, got {type(state).__name__}")
        if state.get("total_steps", self.total_steps) != self.total_steps:
            raise ValueError(
                f"scheduler state is for {state['total_steps']} total steps, this scheduler has "
                f"{self.total_steps}: resume with the same batch size, data and epochs"
            )
        try:
            last_step = int(state["last_step"])
            ratios = [float(r) for r in state["group_ratios"]]
            last_lr = [float(v) for v in state["last_lr"]] if state.get("last_lr") else None
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a scheduler state dict ({type(err).__name__}: {err})") from None
        if not 0 <= last_step <= self.total_steps:
            raise ValueError(f"scheduler state is at step {last_step}, outside this run's 0..{self.total_steps}")
        n = len(self.optimizer.param_groups)
        if len(ratios) != n or (last_lr is not None and len(last_lr) != n):
            raise ValueError(f"scheduler state has {len(ratios)} parameter groups, the optimizer {n}")
        self._check_config(state, last_step, ratios, last_lr)
        return last_step, ratios, last_lr

    def _restore(self, last_step: int, ratios: list[float], last_lr: list[float] | None) -> None:
        self.last_step = last_step
        self.group_ratios = ratios
        if last_lr:
            self._write(last_lr)
        else:
            self._apply(self._lr(last_step))

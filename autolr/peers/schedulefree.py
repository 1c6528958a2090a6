"""Schedule-Free AdamW in the configuration that won AlgoPerf's self-tuning track, and its evaluation path.

The optimizer is ``schedulefree.AdamWScheduleFree`` (PyPI ``schedulefree==1.4.1``, Defazio et al.
2024) with the fixed hyperparameters of the AlgoPerf v0.5 self-tuning winner
(``submissions/self_tuning/schedule_free_adamw/submission.py``; shared/PEERS.md section 7): lr
0.0025, betas (0.9, 0.99552), r 0.75, weight_lr_power 2, a linear warmup over
``int(0.02 * 0.75 * total_steps)`` steps, no decay and no scheduler. Weight decay is the recipe's
(AlgoPerf's 0.0812 was calibrated for its own workloads; the recipe's is what every other method
here gets). It is charged 0 tuning runs: one default calibrated elsewhere, which is what AlgoPerf's
self-tuning rules allow. What this package's 1.4.1 class does differently from the submission's
own copy: weight decay at y scaled by lr (the submission: at x scaled by the bias-corrected step),
Adam's bias correction in the denominator (the submission: in the step size), a float32 second
moment (the submission: bfloat16), and no LR-halving restart when evaluations stall.

The method trains at y and evaluates at x (the weighted average of the z iterates), so:

- ``optimizer.train()`` before training steps and ``optimizer.eval()`` before evaluating: the
  parameters hold y in train mode and x in eval mode; ``step`` refuses to run in eval mode.
- Batch-norm statistics are recomputed at x before each evaluation (``evaluating``): the running
  statistics gathered while training describe y (facebookresearch/schedule_free README; #11).
- Checkpoints are saved in eval mode (``evaluating`` or ``at_x``): the model state then holds x,
  the model a user wants, and the optimizer's state says so (``train_mode`` False). Resuming:
  load the model and the optimizer, then call ``optimizer.train()``, which recomputes y from x
  and z. The round trip y -> x -> y is not bitwise the identity in floating point, so a resumed
  run matches an uninterrupted one bitwise only if the uninterrupted run also went through eval
  mode at the checkpoint; that holds when checkpoints are saved inside the evaluation that
  precedes them (as train.py saves after each epoch's evaluation). Tested in tests/test_peers.py.
  A checkpoint saved under ``at_x`` alone (no evaluation) resumes exactly too, but holds x with
  the statistics of y: fine to resume from, not a model to use.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from autolr.peers.batchnorm import DEFAULT_BN_BATCHES, recompute_bn_stats

__all__ = ["ALGOPERF", "build_optimizer", "warmup_steps", "is_schedule_free", "at_x", "evaluating",
           "next_lr", "ScheduleFreeLR"]

#: the AlgoPerf v0.5 self-tuning winner's hyperparameters (its HPARAMS), weight decay excepted
ALGOPERF: dict[str, float] = {
    "lr": 0.0025,
    "beta1": 0.9,  # 1 - one_minus_beta1 (0.1)
    "beta2": 0.9955159689799007,  # as in the submission; PEERS.md rounds it to 0.9955
    "r": 0.75,
    "weight_lr_power": 2.0,
    "warmup_factor": 0.02,  # of the step hint, itself 0.75 of the budget in the submission's formula
}


def warmup_steps(total_steps: int) -> int:
    """The submission's warmup: ``int(0.02 * step_hint * 0.75)`` steps, the step hint being the budget."""
    return int(ALGOPERF["warmup_factor"] * total_steps * 0.75)


def build_optimizer(params: Iterable[Any], *, total_steps: int, weight_decay: float) -> torch.optim.Optimizer:
    """Schedule-Free AdamW over ``params`` (parameters or groups), in train mode, ready to step.

    Every parameter is decayed, as in the submission. Needs ``pip install 'autolr[peers]'``.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive integer, got {total_steps!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not (
            math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
    try:
        from schedulefree import AdamWScheduleFree
    except ImportError:
        raise ImportError("Schedule-Free AdamW needs the schedulefree package: pip install 'autolr[peers]'") from None
    a = ALGOPERF
    optimizer = AdamWScheduleFree(params, lr=a["lr"], betas=(a["beta1"], a["beta2"]), weight_decay=float(weight_decay),
                                  warmup_steps=warmup_steps(total_steps), r=a["r"],
                                  weight_lr_power=a["weight_lr_power"])
    # built in eval mode, where step() refuses to run; nothing to move yet (no z before a step)
    optimizer.train()
    return optimizer


def is_schedule_free(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` has Schedule-Free's train/eval modes."""
    return "train_mode" in optimizer.param_groups[0] and callable(getattr(optimizer, "eval", None))


def _check(optimizer: torch.optim.Optimizer) -> None:
    if not is_schedule_free(optimizer):
        raise ValueError(f"{type(optimizer).__name__} is not a Schedule-Free optimizer: it has no train/eval modes")


@contextlib.contextmanager
def at_x(optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Inside, the parameters hold x and the optimizer is in eval mode (save checkpoints here).

    The mode the optimizer had on entry is restored on exit.
    """
    _check(optimizer)
    was_training = bool(optimizer.param_groups[0]["train_mode"])
    optimizer.eval()
    try:
        yield
    finally:
        if was_training:
            optimizer.train()


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable[Any],
               num_batches: int = DEFAULT_BN_BATCHES, *, forward: Callable[[Any], Any] | None = None) -> Iterator[int]:
    """Evaluate at x: parameters at x, BN statistics recomputed there, ``model.eval()``.

    ``batches`` yields training batches (inputs, or (inputs, targets)) for the recomputation,
    ``forward`` runs the bare model on inputs (see ``recompute_bn_stats``). Yields the number of
    batches the statistics were computed on. On exit the model's and the optimizer's modes are
    those of entry; the parameters hold y again when the optimizer was in train mode. The
    recomputed statistics stay: they belong with x, which is what a checkpoint saved inside
    holds, and training forwards use batch statistics, not these.
    """
    was_training = model.training
    with at_x(optimizer):
        used = recompute_bn_stats(model, batches, num_batches, forward=forward)
        model.eval()
        try:
            yield used
        finally:
            model.train(was_training)


def next_lr(optimizer: torch.optim.Optimizer, group: int = 0) -> float:
    """The LR of a group's next step: its peak scaled by the built-in linear warmup, as ``step`` computes it."""
    g = optimizer.param_groups[group]
    k, w = int(g["k"]), int(g["warmup_steps"])
    return float(g["lr"]) * ((k + 1) / w if k < w else 1.0)


class ScheduleFreeLR(LRScheduler):
    """The scheduler slot of a Schedule-Free run: it sets nothing, it reports.

    The optimizer warms up by itself and has no decay, so ``step()`` only counts; the LR it
    reports (``get_last_lr``) is the one the next step applies, for the run's LR trace. It keeps
    the contract of autolr's schedulers (``step(loss=None)``, ``phase``, ``describe``,
    ``state_dict``) so the training loop needs no special case but the train/eval modes.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int) -> None:
        # LRScheduler.__init__ is not called: it would take a first step and wrap optimizer.step
        _check(optimizer)
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
        self.last_epoch = int(optimizer.param_groups[0]["k"])
        self._step_count = 0

    @property
    def phase(self) -> str:
        g = self.optimizer.param_groups[0]
        return "warmup" if g["k"] < g["warmup_steps"] else "constant"

    def step(self, loss: float | torch.Tensor | None = None) -> None:  # type: ignore[override]
        """Count one optimizer step; ``loss`` is accepted for a uniform API and ignored."""
        self._step_count += 1
        self.last_epoch += 1

    def get_lr(self) -> list[float]:
        return [next_lr(self.optimizer, i) for i in range(len(self.optimizer.param_groups))]

    def get_last_lr(self) -> list[float]:
        return self.get_lr()

    def describe(self) -> dict[str, Any]:
        g = self.optimizer.param_groups[0]
        return {"name": "schedulefree", "optimizer": "AdamWScheduleFree", "lr": float(g["lr"]),
                "betas": list(g["betas"]), "r": g["r"], "weight_lr_power": g["weight_lr_power"],
                "warmup_steps": int(g["warmup_steps"]), "weight_decay": g["weight_decay"],
                "total_steps": self.total_steps}

    def state_dict(self) -> dict[str, Any]:
        # everything that moves lives in the optimizer's state; this is for the checks on resume
        return {"config": self.describe(), "last_step": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("config", {})
        if saved.get("name") != "schedulefree" or saved.get("total_steps") != self.total_steps:
            raise ValueError(f"scheduler state is for {saved.get('name')!r} over {saved.get('total_steps')} steps, "
                             f"this is schedulefree over {self.total_steps}: resume with the same settings")
        self.last_epoch = int(state["last_step"])

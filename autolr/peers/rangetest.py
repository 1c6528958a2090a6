"""The LR range test (Smith 2015; fastai ``lr_find``, torch-lr-finder), run before training to pick the peak LR.

From the run's initial model and optimizer, ``range_test`` takes optimizer steps at LRs growing
exponentially from ``lr_min`` to ``lr_max``, records each step's loss and its smoothed value, stops
early once the smoothed loss exceeds ``div_factor`` times its minimum or is not finite, then puts
back everything it touched, exactly: parameters, gradients, buffers (BN statistics), train/eval
flags, the optimizer's state and LRs, and the torch (CPU and CUDA), numpy and Python RNG states.
Training after the test is bitwise the training without it (tests/test_peers.py). One step is one
call of a closure that computes a global batch's loss and gradients, so gradient accumulation, DDP
and autocast are the caller's, as in training.

**Settings, fixed here once.**

- Range: 1e-5 to 1.0, AutoWU's warmup range (train.py's ``--init-lr``/``--max-lr``), so both
  searches look at the same LRs (fastai: 1e-7 to 10).
- Steps: ``default_steps(T) = max(20, min(100, T // 10))``. The test costs steps, not epochs: at
  fashion's 16K batch (3 steps/epoch) fastai's 100 iterations are 33 epochs, more than the 30-epoch
  budget (PEERS.md section 6). About 10% of the run's steps bounds the charge; 100 is fastai's
  count; 20 steps (4 per decade) is the floor below which the curve no longer resolves a minimum
  (the LR grows 1.8x per step). Where 20 steps exceed 10% of T (T < 200) the test costs more than
  10%, and is charged so.
- Smoothing: the bias-corrected exponential average of fastai with a time constant of 5% of the
  test's steps, ``beta = max(0, 1 - 20 / steps)`` (0.8 at 100 steps, none at 20): a quarter decade
  of LR over the default range, whatever the step count. fastai's fixed 0.98 (50 steps) is meant
  for 100-step tests at small batches; over 20-100 steps it would lag by most of the test and move
  the minimum to larger LRs. Large batches, where tests are short, have little loss noise.
- Stop: smoothed loss above 4x its minimum (fastai's ``stop_div``) or a non-finite loss.

**The peak rule: the LR at the smoothed-loss minimum, divided by 10** (fastai's ``minimum``),
chosen before any grid run and not a parameter, since choosing it after seeing the grid would be
tuning on the results. Why this rule:

- The minimum of a short test marks where the loss stops falling within a few steps, the edge of
  stability at the initial weights. A peak held for the whole run must sit below it: sharpness
  grows as training proceeds, so the largest stable LR falls after the first steps. A tenth is the
  long-standing practice (fastai's ``minimum``; Smith's one-cycle max is "a bit before" the
  minimum) and the rule a user of ``lr_find`` would apply.
- It reads one point of a smoothed curve, with no derivative: the steepest-slope rule (torch-lr-
  finder's plot, fastai's ``steep``) is fooled by early spikes (Lightning-AI/pytorch-lightning#1767)
  and differs between runs (fastai/fastai#3295).
- It keeps this peer distinct from AutoWU+ (``autoplus``), whose candidate is the smoothed-minimum
  LR itself, read online during a slow warmup, where PEERS.md section 8 found it 0.82-1.46x the
  tuned peak; a fast test from the initial weights is another measurement, and the tables show
  which one lands nearer the tuned peaks. fastai drops the first 10% and the last 5 points before
  its argmin; here the whole curve counts (the blow-up at the end cannot hold the minimum, and a
  curve whose minimum is at its start says the range starts too high, which the record shows).

The result (``RangeTestResult``) holds the whole curve, why it stopped, the chosen peak, and the
steps and wall seconds spent: the method is charged one tuning run at that real cost.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["LR_MIN", "LR_MAX", "DIV_FACTOR", "PEAK_DIVISOR", "RangeTestResult", "default_steps",
           "default_smoothing", "range_test"]

LR_MIN = 1e-5
LR_MAX = 1.0
DIV_FACTOR = 4.0
#: the peak rule: LR at the smoothed-loss minimum / PEAK_DIVISOR (fastai's ``minimum``)
PEAK_DIVISOR = 10.0
MIN_STEPS, MAX_STEPS, STEP_SHARE = 20, 100, 0.1


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_float(name: str, value: Any, *, low: float = 0.0, high: float = math.inf, closed_low: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value >= low if closed_low else value > low) and value < high
    if not ok:
        bounds = f"{'[' if closed_low else '('}{low:g}, {high:g})"
        raise ValueError(f"{name} must be a finite number in {bounds}, got {value!r}")
    return float(value)


def default_steps(total_steps: int) -> int:
    """The test's step budget for a run of ``total_steps``: 10% of it, within [20, 100]."""
    total_steps = _check_int("total_steps", total_steps, 1)
    return max(MIN_STEPS, min(MAX_STEPS, int(STEP_SHARE * total_steps)))


def default_smoothing(num_steps: int) -> float:
    """The smoothing factor beta for a test of ``num_steps``: a time constant of 5% of the steps."""
    num_steps = _check_int("num_steps", num_steps, 2)
    return max(0.0, min(0.98, 1.0 - 20.0 / num_steps))


@dataclass
class RangeTestResult:
    """One range test: its curve, why it stopped, the peak it chose, what it cost."""

    lrs: list[float]  # the LR of each step taken
    losses: list[float | None]  # each step's loss (computed before the step, at the weights so far); None: not finite
    smoothed: list[float | None]  # bias-corrected exponential average of the losses
    stop: str  # "diverged" (smoothed > div_factor x minimum), "nonfinite", or "completed" (lr_max reached)
    min_index: int  # the step of the smoothed minimum
    lr_at_min: float
    peak_lr: float  # lr_at_min / PEAK_DIVISOR
    steps: int  # steps taken (forward + backward + optimizer step each): the cost in training steps
    wall_seconds: float  # device time of the whole test, restore included
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy for the run's record (non-finite values are None already)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> RangeTestResult:
        """The result saved by ``to_dict`` (in a checkpoint: a resumed run does not test again)."""
        return cls(**state)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float, ratios: list[float]) -> None:
    for g, r in zip(optimizer.param_groups, ratios, strict=True):
        if isinstance(g["lr"], torch.Tensor):
            g["lr"].fill_(lr * r)
        else:
            g["lr"] = lr * r


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _global_mean(loss: torch.Tensor | float, optimizer: torch.optim.Optimizer) -> float:
    """The loss as a float, averaged over the ranks under torch.distributed: every rank stops at the same step."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return float(loss.detach().item() if isinstance(loss, torch.Tensor) else loss)
    device = optimizer.param_groups[0]["params"][0].device
    t = loss.detach().to(device=device, dtype=torch.float64).reshape(()).clone() if isinstance(loss, torch.Tensor) \
        else torch.tensor(float(loss), device=device, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return float(t.item()) / torch.distributed.get_world_size()


def range_test(model: torch.nn.Module, optimizer: torch.optim.Optimizer, closure: Callable[[], torch.Tensor | float], *,
               num_steps: int, lr_min: float = LR_MIN, lr_max: float = LR_MAX, div_factor: float = DIV_FACTOR,
               smoothing: float | None = None) -> RangeTestResult:
    """Run the LR range test on ``model`` and ``optimizer``, restore both, and return the result.

    ``closure()`` computes one global batch's loss and its gradients (``backward``, over every
    micro-batch when accumulating) and returns that loss; it draws its own batches (from an
    iterator of its own over the training data). The test sets the LR, zeroes the gradients,
    calls ``closure`` and steps the optimizer, ``num_steps`` times at most (see
    ``default_steps``). The optimizer's groups keep their LR ratios to the first group.
    ``smoothing`` is the averaging factor beta (default ``default_smoothing(num_steps)``).
    Under torch.distributed every rank calls it (with a closure over the DDP model), and the
    losses are averaged over the ranks before each stop decision.
    """
    num_steps = _check_int("num_steps", num_steps, 2)
    lr_min = _check_float("lr_min", lr_min)
    lr_max = _check_float("lr_max", lr_max)
    if lr_max <= lr_min:
        raise ValueError(f"lr_max must exceed lr_min, got lr_min {lr_min:g} and lr_max {lr_max:g}")
    div_factor = _check_float("div_factor", div_factor, low=1.0)
    beta = default_smoothing(num_steps) if smoothing is None else _check_float("smoothing", smoothing, high=1.0,
                                                                                closed_low=True)
    first = optimizer.param_groups[0]["lr"]
    first = float(first.item() if isinstance(first, torch.Tensor) else first)
    if not (first > 0 and math.isfinite(first)):
        raise ValueError(f"the optimizer's first group must have a positive lr (the others keep their ratio to it), "
                         f"got {first}")
    ratios = [float(g["lr"]) / first for g in optimizer.param_groups]

    t0 = time.perf_counter()
    # everything the steps change, copied before the first one
    params = [(p, p.detach().clone(), None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [m.training for m in model.modules()]
    opt_state = copy.deepcopy(optimizer.state_dict())
    rng = _rng_state()

    growth = (lr_max / lr_min) ** (1.0 / (num_steps - 1))
    lrs: list[float] = []
    losses: list[float | None] = []
    smoothed: list[float | None] = []
    avg, best, best_i, stop = 0.0, math.inf, -1, "completed"
    try:
        model.train()
        for i in range(num_steps):
            lr = lr_min * growth**i
            _set_lr(optimizer, lr, ratios)
            optimizer.zero_grad(set_to_none=True)
            value = _global_mean(closure(), optimizer)
            lrs.append(lr)
            if not math.isfinite(value):
                losses.append(None)
                smoothed.append(None)
                stop = "nonfinite"
                break
            avg = beta * avg + (1.0 - beta) * value
            s = avg / (1.0 - beta ** (i + 1))
            losses.append(value)
            smoothed.append(s)
            if not math.isfinite(s):
                smoothed[-1] = None
                stop = "nonfinite"
                break
            if s < best:
                best, best_i = s, i
            if s > div_factor * best:
                stop = "diverged"
                break
            # the step is taken only when the curve goes on: a stopping step's update is never used
            optimizer.step()
    finally:
        with torch.no_grad():
            for p, data, grad in params:
                p.copy_(data)
                p.grad = grad
            for b, data in buffers:
                b.copy_(data)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode
        optimizer.load_state_dict(opt_state)
        _set_rng_state(rng)
    if best_i < 0:
        raise RuntimeError("the LR range test's first loss was not finite: the model diverges at its initial weights")
    wall = time.perf_counter() - t0
    config = {"lr_min": lr_min, "lr_max": lr_max, "num_steps": num_steps, "div_factor": div_factor,
              "smoothing": beta, "rule": f"lr at the smoothed-loss minimum / {PEAK_DIVISOR:g}"}
    return RangeTestResult(lrs=lrs, losses=losses, smoothed=smoothed, stop=stop, min_index=best_i,
                           lr_at_min=lrs[best_i], peak_lr=lrs[best_i] / PEAK_DIVISOR, steps=len(lrs),
                           wall_seconds=wall, config=config)

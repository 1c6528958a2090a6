"""AutoWU+: AutoWU's online range test, made to spend a small, bounded share of the budget.

The reference AutoWU (``autolr.autowu``) loses accuracy to tuned warmup in three measured ways
(README, "Why AutoWU trails tuned warmup"): its exponential ramp from 1e-5 reaches the loss
minimum only after 30-40% of the steps; its test runs once per epoch with a patience of three
epochs, so detection adds 7-10% and, at 2-3 steps per epoch, rarely fires before the cap, where
the switch takes the current LR (far past the minimum); and the GP's argmin sits below the LR of
the loss minimum. AutoWU+ keeps the reference's machinery (the loss buffer that never syncs per
step, the DDP protocol, the GP test, the state and the records) and changes exactly those parts:

- the ramp covers the same range (``init_lr`` to ``max_lr``) in ``ramp_fraction`` of the steps;
- the test runs on a step clock, every ``test_fraction`` of the budget (at least every step),
  from ``min_test_points`` losses on, with ``patience`` counted in tests, so that its cadence
  no longer depends on the epoch length;
- the new LR (``candidate``) is read off the loss curve itself: the LR of the step where a
  centred moving average of the losses is lowest (``"smoothed"``), or AutoWU's GP argmin
  (``"gp"``), times ``lr_factor``;
- a guard switches at once when the recent losses exceed ``div_factor`` times the smoothed
  minimum (the range test's divergence stop), so a fast ramp cannot run far past the minimum
  while the GP gathers confidence;
- ``rollback``: at the switch, the weights and optimizer moments go back to the last snapshot
  taken while the loss was still at its lowest. At large batches the loss does not bend before
  the edge of stability, it jumps, and the step that reveals the minimum has already set the
  model back by epochs; a range test restores its weights for the same reason. The snapshots
  (at most three copies of the parameters and the optimizer state, taken at tests only, never
  a host sync) live in the scheduler's state until the switch, then are dropped;
- ``accel``: while the loss has not yet moved (``flat_tol`` below its first values) the ramp
  climbs ``accel`` times faster, since those steps at useless LRs teach nothing;
- ``max_growth``: whatever the budget, the ramp grows by at most this factor per step (its
  ``accel`` power while flat), and flatness is checked from the third step on. With 2 steps per
  epoch a ramp sized by the budget alone climbs x10 per step and reaches ``max_lr`` before the
  first test (dev round 8). Slowed by the bound, the ramp's cap moves out to the step where it
  reaches ``max_lr``, at most half the budget (AutoWU's cap);
- at the cap the switch uses the same candidate computed on the whole history, never the
  current LR, and rolls back like any other switch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autolr.autowu import AutoWU, AutoWUOptions
from autolr.scheduler import _check_positive, _check_positive_int, _check_real, option

__all__ = ["AutoWUPlus", "AutoWUPlusOptions", "smoothed_argmin"]

CANDIDATES = ("smoothed", "gp")


@dataclass(frozen=True)
class AutoWUPlusOptions:
    """AutoWU+'s own settings, declared once (the rest are ``AutoWUOptions``, less
    ``max_warmup_fraction``, which ``ramp_fraction`` replaces)."""

    ramp_fraction: float = option(0.25, "the ramp covers init_lr to max_lr in this share of all steps, its cap "
                                        "(later where max_growth slows it)", flag=True)
    candidate: str = option("smoothed", "how the new LR is read", choices=CANDIDATES, flag=True)
    lr_factor: float = option(0.5, "switch LR = candidate x this", flag=True)
    test_fraction: float = option(0.01, "a test every this share of steps", flag=True)
    patience: int = option(3, "consecutive positive tests needed to switch", flag=True)
    div_factor: float = option(1.5, "switch when the recent loss exceeds this x the smoothed minimum (0: off)",
                               flag=True)
    rollback: bool = option(True, "at the switch, back to the weights at the loss minimum", flag=True)
    accel: float = option(3.0, "the ramp climbs this many times faster while the loss is flat", flag=True)
    max_growth: float = option(1.5, "the ramp grows at most this factor per step, its accel power while "
                                    "flat (0: no bound)", flag=True)
    min_test_points: int = option(8, "no test before this many losses")
    smooth_fraction: float = option(0.05, "the moving average spans this share of the history")
    flat_tol: float = option(0.02, "the loss is flat while within this share of its first values")


def smoothed_argmin(losses: np.ndarray, window: int) -> int | None:
    """Index of the minimum of the centred moving average of ``losses`` (NaN entries skipped).

    Only centres whose whole window lies inside the history count, so the last, least
    averaged points cannot win on noise; a history shorter than one window uses the raw minimum.
    """
    losses = np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    if not finite.any():
        return None
    n, half = len(losses), max(window, 1) // 2
    if n < 2 * half + 1:
        return int(np.flatnonzero(finite)[np.argmin(losses[finite])])
    values = np.where(finite, losses, 0.0)
    kernel = np.ones(2 * half + 1)
    sums = np.convolve(values, kernel, mode="valid")
    counts = np.convolve(finite.astype(np.float64), kernel, mode="valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    return int(np.argmin(means)) + half


class AutoWUPlus(AutoWU):
    """AutoWU with a short ramp, a step-clock test and a candidate read off the loss curve.

    Args (beyond ``AutoWU``'s, whose ``max_warmup_fraction`` becomes ``ramp_fraction``):
        ramp_fraction: the ramp reaches ``max_lr`` after this share of all steps, where the
            switch is forced.
        test_fraction: a test every ``max(1, round(test_fraction * T))`` steps.
        min_test_points: no test before this many losses are recorded.
        patience: consecutive positive tests needed to switch.
        candidate: ``"smoothed"`` (LR at the moving-average minimum) or ``"gp"`` (AutoWU's).
        smooth_fraction: the moving average spans this share of the history (at least 3 steps).
        lr_factor: the switch LR is the candidate times this.
        div_factor: switch at once (kind ``"guard"``) when the mean of the losses since the
            last test exceeds this times the smoothed minimum; ``None`` turns the guard off.
        rollback: restore the weights (the optimizer's parameters, in place) and its state to
            the last snapshot at the loss minimum when switching. Buffers the optimizer does not
            hold (batch-norm statistics) are not restored; they follow the weights within a few
            steps.
        accel: the ramp's speed-up while the loss is flat (1: the plain exponential ramp).
        max_growth: the ramp's largest LR factor per step (``max_growth ** accel`` while flat);
            0 or None: the rate the budget gives, unbounded.
        flat_tol: the loss counts as flat while its recent mean is within this share of its
            first values.
    """

    # the divergence guard ends the warmup too
    SWITCH_KINDS = (*AutoWU.SWITCH_KINDS, "guard")
    #: the first step at which the fast ramp looks at the loss (two losses at least, to compare)
    FLAT_FROM = 3
    #: a ramp started higher than init_lr (a short budget) runs fast only from below max_lr x this
    FAST_BELOW = 1e-3

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_epochs: int, *,
                 init_lr: float = AutoWUOptions.init_lr, max_lr: float = AutoWUOptions.max_lr,
                 ramp_fraction: float = AutoWUPlusOptions.ramp_fraction,
                 test_fraction: float = AutoWUPlusOptions.test_fraction,
                 min_test_points: int = AutoWUPlusOptions.min_test_points,
                 patience: int = AutoWUPlusOptions.patience, candidate: str = AutoWUPlusOptions.candidate,
                 smooth_fraction: float = AutoWUPlusOptions.smooth_fraction,
                 lr_factor: float = AutoWUPlusOptions.lr_factor,
                 div_factor: float | None = AutoWUPlusOptions.div_factor,
                 rollback: bool = AutoWUPlusOptions.rollback, accel: float = AutoWUPlusOptions.accel,
                 max_growth: float | None = AutoWUPlusOptions.max_growth,
                 flat_tol: float = AutoWUPlusOptions.flat_tol, decay: str = AutoWUOptions.decay,
                 **autowu_options: Any) -> None:
        if "max_warmup_fraction" in autowu_options:
            raise ValueError("AutoWUPlus takes ramp_fraction, not max_warmup_fraction")
        if not 0.0 < _check_real("ramp_fraction", ramp_fraction) <= 1.0:
            raise ValueError(f"ramp_fraction must lie in (0, 1], got {ramp_fraction}")
        if not 0.0 < _check_real("test_fraction", test_fraction) <= 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1], got {test_fraction}")
        if candidate not in CANDIDATES:
            raise ValueError(f"candidate must be one of {', '.join(CANDIDATES)}, got {candidate!r}")
        if not 0.0 < _check_real("smooth_fraction", smooth_fraction) <= 1.0:
            raise ValueError(f"smooth_fraction must lie in (0, 1], got {smooth_fraction}")
        self.ramp_fraction = float(ramp_fraction)
        self.test_fraction = float(test_fraction)
        self.min_test_points = _check_positive_int("min_test_points", min_test_points)
        self.candidate = candidate
        self.smooth_fraction = float(smooth_fraction)
        self.lr_factor = _check_positive("lr_factor", lr_factor)
        if div_factor is not None and _check_positive("div_factor", div_factor) <= 1.0:
            raise ValueError(f"div_factor must exceed 1 (or be None), got {div_factor}")
        self.div_factor = None if div_factor is None else float(div_factor)
        if not isinstance(rollback, bool):
            raise ValueError(f"rollback must be True or False, got {rollback!r}")
        self.rollback = rollback
        if _check_positive("accel", accel) < 1.0:
            raise ValueError(f"accel must be >= 1 (1: a plain exponential ramp), got {accel}")
        self.accel = float(accel)
        if max_growth is not None and max_growth != 0 and _check_positive("max_growth", max_growth) <= 1.0:
            raise ValueError(f"max_growth must exceed 1 (or be 0 for no bound), got {max_growth}")
        self.max_growth = None if not max_growth else float(max_growth)
        if not 0.0 < _check_real("flat_tol", flat_tol) < 1.0:
            raise ValueError(f"flat_tol must lie in (0, 1), got {flat_tol}")
        self.flat_tol = float(flat_tol)
        self._snapshots: list[dict[str, Any]] = []
        self.rollback_step: int | None = None
        self.ramp_slowed_step: int | None = None
        super().__init__(optimizer, steps_per_epoch, total_epochs, init_lr=init_lr, max_lr=max_lr,
                         max_warmup_fraction=self.ramp_fraction, decay=decay, patience=patience,
                         **autowu_options)
        self.test_every = max(1, int(round(self.test_fraction * self.total_steps)))
        # the pace the budget asks for: init_lr to max_lr over ramp_fraction of the steps, at most
        # max_growth per step
        span = math.log(self.max_lr / self.init_lr)
        self._rate = span / max(self.max_warmup_steps, 1)
        start, raised = math.log(self.init_lr), False
        if self.max_growth is not None and self._rate > math.log(self.max_growth):
            self._rate = math.log(self.max_growth)
            # slowed by the bound, the ramp keeps the steps it needs to reach max_lr, up to AutoWU's
            # cap of half the budget: a 30-step budget would otherwise be forced to switch far below
            # any useful LR
            need = math.ceil(span / self._rate - 1e-9)
            self.max_warmup_steps = max(self.max_warmup_steps, min(self.total_steps // 2, need))
            if need > self.max_warmup_steps:
                # not even half the budget covers the range at the bound (under ~60 steps): the ramp
                # starts higher, so that it still ends at max_lr on its cap; the decades it drops lie
                # far below any useful LR, where a budget this short cannot afford to linger (dev round 11)
                start, raised = math.log(self.max_lr) - self._rate * self.max_warmup_steps, True
        #: where the ramp starts: init_lr, or higher when the budget is too short for the whole range
        self.ramp_start_lr = math.exp(start) if raised else self.init_lr
        # the ramp's log-LR of every step so far: it climbs accel times faster while the loss is flat
        self._ramp_log = [start]
        # a ramp that starts within three decades of max_lr has dropped the flat decades the fast pace
        # is for (at 20-30 steps; dev round 13), one that starts lower keeps it (at 40-60 steps)
        self._fast = self.accel > 1.0 and (not raised or start < math.log(self.max_lr * self.FAST_BELOW))
        self._apply(self._lr(0))  # AutoWU's __init__ set step 0's LR from init_lr

    def _warmup_lr(self, step: int) -> float:
        if not hasattr(self, "_ramp_log"):  # during AutoWU.__init__: step 0
            return super()._warmup_lr(step)
        top = math.log(self.max_lr)
        while len(self._ramp_log) <= step:
            self._ramp_log.append(min(top, self._ramp_log[-1] + self._rate * (self.accel if self._fast else 1.0)))
        return math.exp(self._ramp_log[step])

    def _lr_from_x(self, x: float, lr_now: float) -> float:
        n = max(len(self.losses), 1)
        return self._warmup_lr(min(int(round(x * (n - 1))), n - 1))

    # -- stepping ----------------------------------------------------------------------------
    def step(self, loss: float | torch.Tensor | None = None) -> None:
        """Record the loss of the step just taken and set the LR of the next one."""
        if self.phase == "warmup":
            self._record_loss(loss)
        self.last_step += 1
        s = self.last_step
        if self.phase == "warmup":
            lr_now = self._warmup_lr(s - 1)
            at_cap = s >= self.max_warmup_steps or self._ramp_log[-1] >= math.log(self.max_lr) - 1e-12
            on_clock = s >= self.min_test_points and (s - self.min_test_points) % self.test_every == 0
            # before the first test, on the same clock: is the loss still flat (the fast pace), and
            # are these the weights to come back to (a short ramp can pass the minimum by then)
            early = (self._fast or self.rollback) and self.FLAT_FROM <= s < self.min_test_points \
                and s % self.test_every == 0
            if at_cap or on_clock:
                self._flush_epoch_losses()  # the only host transfer (and all-reduce): one per test
                self._end_of_epoch_test(s, lr_now)
                if self.phase == "warmup" and at_cap:
                    self._switch(s, self._forced_lr(lr_now), "forced")
                    if self.rollback:
                        self._roll_back(self.history[-1].get("smoothed_argmin_step"))
            elif early:
                self._flush_epoch_losses()
                self._check_flat()
                if self.rollback:
                    self._keep_snapshot(s, self._smoothed_minimum()[0])
        self._apply(self._lr(s))

    def _check_flat(self) -> bool:
        """End the fast ramp once the loss has moved ``flat_tol`` below its first values."""
        if not self._fast:
            return False
        arr = np.asarray(self.losses, dtype=np.float64)
        head, tail = arr[: max(2, min(5, len(arr) // 4))], arr[-max(2, min(self.test_every, 5)):]
        if np.isfinite(head).any() and np.isfinite(tail).any() and \
                np.nanmean(tail) < (1.0 - self.flat_tol) * np.nanmean(head):
            self._fast = False  # the loss moves: from here on the ramp keeps its normal pace
            self.ramp_slowed_step = self.last_step
            return True
        return False

    def _end_of_epoch_test(self, step: int, lr_now: float) -> None:
        super()._end_of_epoch_test(step, lr_now)  # the GP test, its patience and its switch
        last = self.history[-1]
        if self._check_flat():
            last["ramp_slowed"] = True
        if self.phase == "warmup" and last.get("guard") and last.get("candidate_lr") is not None:
            self._switch(step, last["candidate_lr"], "guard")
            last["switched"] = True
        if not self.rollback:
            return
        i = last.get("smoothed_argmin_step")
        if self.phase == "decay":
            self._roll_back(i)
        else:
            self._keep_snapshot(step, i)

    def _keep_snapshot(self, step: int, argmin: int | None) -> None:
        """While the loss is still at its lowest, keep these weights to come back to (the last three)."""
        if argmin is None or argmin < len(self.losses) - max(2, self.test_every):
            return
        snap = {"step": step, "params": [p.detach().clone() for g in self.optimizer.param_groups
                                         for p in g["params"]],
                "opt": copy.deepcopy(self.optimizer.state_dict()["state"])}
        self._snapshots = (self._snapshots + [snap])[-3:]

    def _roll_back(self, argmin: int | None) -> None:
        if argmin is None:
            return
        # the snapshot at step s holds the weights whose loss is the s-th: the minimum's or earlier
        usable = [s for s in self._snapshots if s["step"] <= argmin]
        if not usable:
            return
        snap = usable[-1]

        with torch.no_grad():
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            for p, saved in zip(params, snap["params"], strict=True):
                p.copy_(saved)
        state = self.optimizer.state_dict()
        state["state"] = copy.deepcopy(snap["opt"])
        self.optimizer.load_state_dict(state)
        self.rollback_step = snap["step"]
        self.history[-1]["rollback_to_step"] = snap["step"]
        self._snapshots = []

    def _forced_lr(self, lr_now: float) -> float:
        # the whole history's candidate, never the LR the ramp has reached (far past the minimum)
        last = self.history[-1] if self.history else None
        if last is not None and last.get("candidate_lr") is not None:
            return float(last["candidate_lr"])
        return lr_now

    def _smoothed_minimum(self) -> tuple[int | None, int]:
        """The step of the smoothed loss minimum so far, and the moving average's window."""
        window = max(3, int(round(self.smooth_fraction * len(self.losses))))
        return smoothed_argmin(np.asarray(self.losses, dtype=np.float64), window), window

    def _test(self, step: int, lr_now: float) -> dict[str, Any]:
        record = super()._test(step, lr_now)
        losses = np.asarray(self.losses, dtype=np.float64)
        i, window = self._smoothed_minimum()
        smoothed_lr = None if i is None else self._warmup_lr(i)
        # the guard compares the losses since the last test with the smoothed minimum's level
        recent = max(2, min(self.test_every, window))
        guard = False
        if i is not None and self.div_factor is not None and i < len(losses) - recent:
            half = window // 2
            level = float(np.nanmean(losses[max(0, i - half):i + half + 1]))
            tail = losses[-recent:]
            tail_mean = float(np.nanmean(tail)) if np.isfinite(tail).any() else math.inf
            guard = level > 0 and tail_mean > self.div_factor * level
        gp_lr = record["candidate_lr"]
        chosen = smoothed_lr if self.candidate == "smoothed" else gp_lr
        record.update(
            gp_candidate_lr=gp_lr,
            smoothed_argmin_step=i,
            smoothed_candidate_lr=smoothed_lr,
            smooth_window=window,
            guard=guard,
            candidate_lr=None if chosen is None else chosen * self.lr_factor,
        )
        return record

    # -- introspection -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(name="autoplus", ramp_start_lr=getattr(self, "ramp_start_lr", None),
                 ramp_fraction=self.ramp_fraction, test_fraction=self.test_fraction,
                 test_every=getattr(self, "test_every", None), min_test_points=self.min_test_points,
                 candidate=self.candidate, smooth_fraction=self.smooth_fraction, lr_factor=self.lr_factor,
                 div_factor=self.div_factor, rollback=self.rollback, accel=self.accel, max_growth=self.max_growth,
                 flat_tol=self.flat_tol)
        d.pop("max_warmup_fraction", None)
        return d

    def summary(self) -> dict[str, Any]:
        out = super().summary()
        out["switch_epoch"] = None if self.switch_step is None else self.switch_step / self.steps_per_epoch
        out.update(rollback_step=self.rollback_step, ramp_slowed_step=self.ramp_slowed_step)
        return out

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        # snapshots hold tensors (weights and optimizer moments): torch.save keeps them, and
        # torch.load(weights_only=True) reads them back
        state.update(ramp_log=list(self._ramp_log), fast=self._fast, rollback_step=self.rollback_step,
                     ramp_slowed_step=self.ramp_slowed_step,
                     snapshots=[dict(s) for s in self._snapshots])
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"ramp_log", "fast", "snapshots"} - set(state)
        if missing:
            raise ValueError(f"not an AutoWUPlus state dict (no {', '.join(sorted(missing))})")
        super().load_state_dict(state)  # checks every setting first, then loads
        self._ramp_log = [float(v) for v in state["ramp_log"]]
        self._fast = bool(state["fast"])
        self.rollback_step = state.get("rollback_step")
        self.ramp_slowed_step = state.get("ramp_slowed_step")
        self._snapshots = [dict(s) for s in state["snapshots"]]

"""Deterministic loss curves for AutoWU's GP test: shared by tests/ and bench/gp_test.py.

A curve is the per-step training loss of a warmup, i.e. a loss as a function of the step
under AutoWU's warmup path η(s) = η0 · (η_max/η0)^(s/M) (or the linear variant). Synthetic
curves are built from a loss-versus-LR model with a known best LR,

    loss(η) = floor + a · d² · (right if d > 0 else 1),   d = log10 η − log10 η*,

which is steeper to the right of η* (a too-high LR hurts faster than a too-low one), plus
seeded Gaussian noise. Everything is a pure function of its arguments: the same call gives
the same array on every machine.

``catalogue()`` lists the built-in curves (known minimum at several positions, noisy, flat,
decreasing, diverging to NaN, very short epochs, borderline, mixed-precision inf steps);
``load_traces()`` adds loss traces recorded from real training, stored as JSON files in
``bench/traces/`` (none is required).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Curve", "warmup_lrs", "lr_loss", "synthetic", "catalogue", "load_traces", "all_curves",
           "TRACES_DIR"]

TRACES_DIR = Path(__file__).resolve().parent / "traces"


@dataclass(frozen=True)
class Curve:
    """Per-step losses and the warmup path they were recorded (or generated) under.

    ``losses[s]`` is the loss of step s. It covers at least the warmup (steps 0 … M−1); a
    replay that needs a step beyond the array sees NaN (an unknown loss).
    """

    name: str
    losses: np.ndarray
    steps_per_epoch: int
    total_epochs: int
    init_lr: float = 1e-5
    max_lr: float = 1.0
    max_warmup_fraction: float = 0.5
    warmup: str = "exp"
    best_lr: float | None = None  # the LR of the loss's true minimum, when known and inside the warmup
    kind: str = "synthetic"  # "synthetic" or "trace"
    description: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    @property
    def max_warmup_steps(self) -> int:
        return int(math.floor(self.max_warmup_fraction * self.total_steps))

    def loss(self, step: int) -> float:
        return float(self.losses[step]) if 0 <= step < len(self.losses) else math.nan

    def lrs(self) -> np.ndarray:
        """The warmup LR of each step of ``losses``."""
        return warmup_lrs(len(self.losses), self.max_warmup_steps, self.init_lr, self.max_lr, self.warmup)

    def autowu_kwargs(self) -> dict[str, Any]:
        """The AutoWU arguments that reproduce the curve's LR path."""
        return {"steps_per_epoch": self.steps_per_epoch, "total_epochs": self.total_epochs,
                "init_lr": self.init_lr, "max_lr": self.max_lr,
                "max_warmup_fraction": self.max_warmup_fraction, "warmup": self.warmup}

    def metadata(self) -> dict[str, Any]:
        """Everything but the losses, JSON-ready."""
        return {"name": self.name, "kind": self.kind, "steps_per_epoch": self.steps_per_epoch,
                "total_epochs": self.total_epochs, "n_steps": int(len(self.losses)),
                "n_finite": int(np.isfinite(self.losses).sum()), "init_lr": self.init_lr,
                "max_lr": self.max_lr, "max_warmup_fraction": self.max_warmup_fraction,
                "warmup": self.warmup, "best_lr": self.best_lr, "description": self.description,
                **self.meta}


def warmup_lrs(n: int, max_warmup_steps: int, init_lr: float = 1e-5, max_lr: float = 1.0,
               warmup: str = "exp") -> np.ndarray:
    """η(s) for s = 0 … n−1, exactly as AutoWU's warmup computes it (clamped at step M)."""
    m = max(max_warmup_steps, 1)
    frac = np.minimum(np.arange(n), m) / m
    if warmup == "linear":
        return init_lr + (max_lr - init_lr) * frac
    if warmup != "exp":
        raise ValueError(f"warmup must be 'exp' or 'linear', got {warmup!r}")
    return init_lr * (max_lr / init_lr) ** frac


def lr_loss(lr: np.ndarray, best_lr: float, *, a: float = 0.5, right: float = 4.0, floor: float = 1.0,
            space: str = "log") -> np.ndarray:
    """The noise-free loss model: a parabola in log10(LR) (``space="log"``) or in LR/η*
    (``space="linear"``, for the linear warmup), ``right`` times steeper above η*."""
    lr = np.asarray(lr, dtype=np.float64)
    if space == "log":
        d = np.log10(lr) - math.log10(best_lr)
    elif space == "linear":
        d = lr / best_lr - 1.0
    else:
        raise ValueError(f"space must be 'log' or 'linear', got {space!r}")
    return floor + a * d * d * np.where(d > 0, right, 1.0)


def synthetic(name: str, best_lr: float | None, *, steps_per_epoch: int = 20, total_epochs: int = 40,
              noise: float = 0.05, seed: int = 0, a: float = 0.5, right: float = 4.0,
              init_lr: float = 1e-5, max_lr: float = 1.0, max_warmup_fraction: float = 0.5,
              warmup: str = "exp", space: str = "log", n_steps: int | None = None,
              description: str = "") -> Curve:
    """Losses of the ``lr_loss`` model along the warmup path, plus N(0, noise²) per step.

    ``best_lr=None`` gives a flat curve (``floor`` plus noise). The noise is additive, the same
    size at every step.
    """
    m = int(math.floor(max_warmup_fraction * steps_per_epoch * total_epochs))
    n = max(m, 1) if n_steps is None else n_steps
    lrs = warmup_lrs(n, m, init_lr, max_lr, warmup)
    clean = np.ones(n) if best_lr is None else lr_loss(lrs, best_lr, a=a, right=right, space=space)
    rng = np.random.default_rng(seed)
    losses = clean + noise * rng.standard_normal(n)
    return Curve(name=name, losses=losses, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                 init_lr=init_lr, max_lr=max_lr, max_warmup_fraction=max_warmup_fraction, warmup=warmup,
                 best_lr=best_lr, description=description,
                 meta={"noise": noise, "seed": seed, "a": a, "right": right, "space": space})


def _replace(curve: Curve, name: str, losses: np.ndarray, description: str, **meta: Any) -> Curve:
    return Curve(name=name, losses=losses, steps_per_epoch=curve.steps_per_epoch,
                 total_epochs=curve.total_epochs, init_lr=curve.init_lr, max_lr=curve.max_lr,
                 max_warmup_fraction=curve.max_warmup_fraction, warmup=curve.warmup,
                 best_lr=curve.best_lr, description=description, meta={**curve.meta, **meta})


def decreasing(name: str = "decreasing", *, steps_per_epoch: int = 20, total_epochs: int = 30,
               noise: float = 0.02, seed: int = 0) -> Curve:
    """A loss that only decreases over the whole warmup: no switch before the forced one."""
    m = int(math.floor(0.5 * steps_per_epoch * total_epochs))
    x = np.arange(m) / max(m, 1)
    rng = np.random.default_rng(seed)
    losses = 1.0 + 2.0 * np.exp(-3.0 * x) + noise * rng.standard_normal(m)
    return Curve(name=name, losses=losses, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                 best_lr=None, description="monotonically decreasing: forced switch at M",
                 meta={"noise": noise, "seed": seed})


def diverging(name: str = "diverging", best_lr: float = 0.01, *, diverge_lr: float = 0.05,
              steps_per_epoch: int = 20, total_epochs: int = 40, noise: float = 0.05, seed: int = 3) -> Curve:
    """A known minimum, then the loss blows up (1e3, 1e30, inf) and is NaN from then on."""
    base = synthetic(name, best_lr, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                     noise=noise, seed=seed)
    losses = base.losses.copy()
    lrs = base.lrs()
    over = np.flatnonzero(lrs > diverge_lr)
    if len(over):
        first = int(over[0])
        losses[first:first + 3] = [1e3, 1e30, math.inf][: len(losses[first:first + 3])]
        losses[first + 3:] = math.nan
    return _replace(base, name, losses, "known minimum, then divergence: a NaN tail",
                    diverge_lr=diverge_lr)


def mixed_precision(name: str = "mixed_precision", best_lr: float = 0.01, *, every: int = 7,
                    first_skipped: int = 4, steps_per_epoch: int = 20, total_epochs: int = 40,
                    noise: float = 0.05, seed: int = 4) -> Curve:
    """A known minimum; steps skipped by a gradient scaler report inf (the first few, then every
    ``every``-th)."""
    base = synthetic(name, best_lr, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                     noise=noise, seed=seed)
    losses = base.losses.copy()
    losses[:first_skipped] = math.inf
    losses[every - 1::every] = math.inf
    return _replace(base, name, losses, f"known minimum, inf on the first {first_skipped} and every "
                    f"{every}th step", every=every, first_skipped=first_skipped)


def catalogue() -> list[Curve]:
    """The built-in curves, each deterministic. Warmups are 10-20 epochs long, so that a replay
    runs at most ~20 tests (the oracle costs ~0.4 s a test)."""
    return [
        synthetic("min_early", 1e-3, seed=10,
                  description="known minimum at 40% of the warmup path"),
        synthetic("min_mid", 1e-2, steps_per_epoch=50, seed=11,
                  description="known minimum at 60% of the warmup path, 50 steps per epoch"),
        synthetic("min_late", 1e-1, seed=12, description="known minimum at 80% of the warmup path"),
        synthetic("noisy", 1e-2, steps_per_epoch=50, noise=0.3, seed=13,
                  description="known minimum, noise 0.3 per step"),
        synthetic("flat", None, seed=14, description="constant loss plus noise: no minimum"),
        decreasing(seed=15),
        diverging(seed=16),
        synthetic("short_epochs", 1e-2, steps_per_epoch=2, total_epochs=40, noise=0.05, seed=17,
                  description="2 steps per epoch"),
        synthetic("borderline", 0.3, a=0.05, right=1.0, steps_per_epoch=50, noise=0.05, seed=18,
                  description="a shallow minimum near the end of the warmup: barely visible"),
        mixed_precision(seed=19),
        synthetic("linear_warmup", 0.3, warmup="linear", space="linear", seed=20,
                  description="linear warmup variant, known minimum"),
    ]


def load_traces(directory: str | Path | None = None) -> list[Curve]:
    """Loss traces recorded from real training: ``{"name", "steps_per_epoch", "total_epochs",
    "losses"}`` per JSON file (optional: ``init_lr``, ``max_lr``, ``max_warmup_fraction``,
    ``warmup``, ``best_lr``; defaults are AutoWU's). ``null`` losses are read as NaN. An absent
    or empty directory gives an empty list."""
    root = TRACES_DIR if directory is None else Path(directory)
    if not root.is_dir():
        return []
    curves = []
    for path in sorted(root.glob("*.json")):
        d = json.loads(path.read_text())
        losses = np.array([math.nan if v is None else float(v) for v in d["losses"]], dtype=np.float64)
        curves.append(Curve(
            name=str(d.get("name", path.stem)), losses=losses, steps_per_epoch=int(d["steps_per_epoch"]),
            total_epochs=int(d["total_epochs"]), init_lr=float(d.get("init_lr", 1e-5)),
            max_lr=float(d.get("max_lr", 1.0)), max_warmup_fraction=float(d.get("max_warmup_fraction", 0.5)),
            warmup=str(d.get("warmup", "exp")), best_lr=d.get("best_lr"), kind="trace",
            description=str(d.get("description", f"recorded trace {path.name}")),
            meta={"file": path.name}))
    return curves


def all_curves(traces: str | Path | None = None) -> list[Curve]:
    return catalogue() + load_traces(traces)

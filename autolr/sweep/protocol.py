"""The tuning protocol's selection logic (REPRODUCTION.md), the part a reviewer of the science reads.

Pure functions of the records: the selection metric (``selection_score``), the one rule that picks an
LR from a grid's tuning-seed runs (``pick_lr``), the grid's edge extension (``extension_value``), and a
grid's replay from the results so far (``decide_grid``). The sweep and the tables both use them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: the protocol imports nothing of the sweep
    from autolr.sweep.runs import RunResult


# ---------------------------------------------------------------------------------------------
# Grids and their edge extension
# ---------------------------------------------------------------------------------------------
def _round_sig(x: float, digits: int = 3) -> float:
    # extension values are written to records and logs: 0.0316, not 0.031622776601683794
    return float(f"{x:.{digits}g}")


def extension_value(initial: Sequence[float], direction: str, k: int) -> float | None:
    """The k-th (1-based) value beyond the initial grid's edge, with the grid's own ratio.

    The ratio is that of the two values at that edge. Grids written rounded (3.16e-3 for
    10^-2.5) would drift off their lattice if multiplied on (3.16e-3 x 3.16 = 0.00999), so a
    ratio that is a root of 10 (10, sqrt(10), 10^(1/3), ...) steps on the decade lattice:
    10^-2.5 -> 0.01 -> 0.0316. Other ratios (2, 3) multiply from the edge.
    """
    g = sorted(initial)
    if len(g) < 2 or k < 1:
        return None
    lo, hi = (g[-2], g[-1]) if direction == "up" else (g[0], g[1])
    edge, sign = (g[-1], 1) if direction == "up" else (g[0], -1)
    per_decade = 1.0 / math.log10(hi / lo)
    n = round(per_decade)
    if n >= 1 and abs(per_decade - n) < 0.02 * n:
        j = round(n * math.log10(edge))  # the edge's lattice point
        return _round_sig(10.0 ** ((j + sign * k) / n))
    return _round_sig(edge * (hi / lo) ** (sign * k))


#: REPRODUCTION.md: the tuning seed's run decides each grid (the final seeds never do)
TUNING_SEED = 0


def selection_score(status: str | None, val_acc: float | None) -> float:
    """The protocol's selection metric: final-epoch validation accuracy; a diverged or failed run is the worst."""
    if status != "finished" or val_acc is None or not math.isfinite(val_acc):
        return -math.inf
    return float(val_acc)


def pick_lr(scores: Mapping[float, float]) -> float | None:
    """The protocol's one selection rule over the tuning seed's runs of a grid, LR -> ``selection_score``.

    The best score wins, ties going to the smaller LR (the safer choice); when every run diverged
    or failed, the smallest LR. None when there is no run at all. The sweep's ``decide_grid`` and
    the tables' pick from records alone (``autolr.collate``) both choose with it.
    """
    if not scores:
        return None
    best = max(scores.values())
    return min(v for v, sc in scores.items() if sc == best)


@dataclass
class GridState:
    """One LR grid of one (method, model, opt, tuning bs): what was tried and what it chose."""

    method: str
    model: str
    opt: str
    bs: int
    initial: tuple[float, ...]
    grid: list[float] = field(default_factory=list)
    extensions: list[dict[str, Any]] = field(default_factory=list)
    needed: list[float] = field(default_factory=list)  # values still without a result
    chosen: float | None = None
    reason: str = "pending"
    capped: bool = False  # the best value is still on the edge after max_extensions
    messages: list[str] = field(default_factory=list)


def decide_grid(state: GridState, result_of: Callable[[float], RunResult | None], max_extensions: int) -> GridState:
    """Replay a grid's selection from the results so far.

    Selection is a pure function of the records, so a restarted sweep arrives at the same grid,
    the same extensions and the same choice without any state of its own.
    """
    grid = sorted(state.initial)
    exts: list[dict[str, Any]] = []
    n_up = n_down = 0
    while True:
        missing = [v for v in grid if result_of(v) is None]
        if missing:
            state.needed, state.chosen, state.reason = missing, None, "pending"
            break
        scores = {v: result_of(v).score for v in grid}  # type: ignore[union-attr]
        direction = None
        why = ""
        best = pick_lr(scores)
        if scores[best] == -math.inf:  # type: ignore[index]
            direction, why = "down", "all runs diverged or failed"
            best = None
        else:
            if best == grid[-1] and len(grid) > 1:
                direction, why = "up", "best on edge"
            elif best == grid[0] and len(grid) > 1:
                direction, why = "down", "best on edge"
        value = None
        if direction is not None and len(exts) < max_extensions:
            value = extension_value(state.initial, direction, (n_up if direction == "up" else n_down) + 1)
        if value is not None and value not in grid:
            if direction == "up":
                n_up += 1
            else:
                n_down += 1
            word = "upward" if direction == "up" else "downward"
            exts.append({"direction": direction, "lr": value, "why": why})
            state.messages.append(f"extended grid of {state.method} ({state.model}, {state.opt}) at bs {state.bs} "
                                  f"{word} to {value:g} ({why})")
            grid = sorted([*grid, value])
            continue
        state.needed = []
        if best is None:
            state.chosen, state.reason = grid[0], "all diverged"
        else:
            state.chosen = best
            state.reason = "extended" if exts else "best val acc"
            # still on the edge: the extension cap (or a one-value grid) stopped the search
            state.capped = direction is not None
            if state.capped:
                state.messages.append(f"best LR {best:g} of {state.method} ({state.model}, {state.opt}) at bs "
                                      f"{state.bs} is on the grid's edge after {len(exts)} extensions (cap)")
        break
    state.grid, state.extensions = grid, exts
    return state

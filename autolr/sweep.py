"""Run a sweep file: tune each baseline's LR as REPRODUCTION.md says, then the final runs.

    python -m autolr.sweep sweeps/demo.yaml                       # everything, in this process
    python -m autolr.sweep sweeps/demo.yaml --dry-run             # what would run, and its cost
    python -m autolr.sweep sweeps/fashion.yaml --max-runs 5       # a resumable chunk of at most 5 runs
    python -m autolr.sweep sweeps/cifar10.yaml --jobs 8           # 8 processes, one GPU each
    python -m autolr.sweep sweeps/imagenet.yaml --executor slurm  # job arrays, requeued on preemption

Stages. ``tune``: for every (model, opt), ``linear`` and ``legw`` search their LR grid at B0 (the
smallest batch size) and ``fixed`` (and any other tuned scheduler) at every batch size, with seed
``tuning_seed``; a best value on a grid's edge extends the grid one step that way (at most
``max_extensions`` times). ``final``: every scheduler at every batch size over the final seeds,
with the chosen LR (``auto`` needs none). A final run with the tuning seed has the config of its
tuning run, hence its run_id, and reuses that record.

Every run is identified by train.py's own ``run_id_of(resolve_config(...))`` and writes
``results/<name>/runs/<run_id>.json``; a run with a record is never run again, and every run gets
``--resume``, so a sweep killed at any point and started again runs only what is missing and
continues an interrupted run from its checkpoint (``checkpoints/<name>/<run_id>/``; per-run logs in
``checkpoints/<name>/logs/``). Executors: ``--jobs 1`` trains in this process, ``--jobs N`` runs N
train.py processes (one GPU each), ``--executor slurm`` submits submitit job arrays (``--cluster
local`` takes the same path on this machine).

``results/<name>/stages.json`` (atomic, rewritten after every run):
``schema``, ``name``, ``sweep_file``, ``spec`` (the sweep with its defaults filled), ``complete``,
``missing_runs`` (distinct runs still to do), ``updated_at``,
``stages``: {``tune``: {complete, runs, done, pending_extensions_max}, ``final``: {complete, runs,
done, waiting_for_tuning}},
``selection``: one entry per (method, model, opt, bs): {method, model, opt, bs, tuned (grid searched
at this bs), tuned_at_bs (B0 for linear/legw, bs for fixed, null for auto), grid (sorted, extensions
included), trials [{lr, run_id, status, val_acc}], extensions [{direction, lr, why}], chosen_lr,
reason (best val acc | extended | all diverged | pending | not tuned), capped, messages},
``final_runs``: [{method, model, opt, bs, seed, lr, run_id, status (finished | diverged | failed |
missing), tuning_run (the record is the grid's tuning run)}],
``tuning_charge``: one entry per grid: {method, model, opt, bs, run_ids, runs, wall_seconds,
charged (once per grid | per batch size), covers_bs}.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import importlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from autolr.registry import SCHEDULERS, flag_options, methods_tuned

try:  # the slurm path needs submitit; everything else runs without it
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - submitit is in requirements.txt
    Checkpointable = object  # type: ignore[assignment,misc]
    DelayedSubmission = None  # type: ignore[assignment,misc]

__all__ = [
    "SweepError",
    "SweepSpec",
    "Run",
    "RunResult",
    "GridState",
    "Plan",
    "Sweep",
    "load_spec",
    "spec_from_dict",
    "decide_grid",
    "extension_value",
    "load_results",
    "check_data",
    "estimate_seconds",
    "TrainJob",
    "main",
]

REPO = Path(__file__).resolve().parents[1]
STAGES_SCHEMA = 1
#: schedulers whose LR is searched once at B0 and then carried to other batch sizes by their rule
TUNED_AT_B0 = methods_tuned("b0")
#: schedulers that are never tuned (AutoWU finds its own peak)
NEVER_TUNED = methods_tuned("never")
#: flags the sweep sets itself per run: a sweep file may not set them in train_args (the methods'
#: own options go under their scheduler's entry)
_MANAGED = {"data", "model", "opt", "bs", "seed", "sched", "lr", "epochs", "subset", "legw_b0", "out", "ckpt_dir",
            "resume", "progress", "warmup_epochs"} | {o.name for o, _ in flag_options()}
_SPEC_KEYS = {"name", "data", "subset", "epochs", "models", "opts", "batch_sizes", "seeds", "tuning_seed",
              "train_args", "schedulers", "max_extensions", "slurm", "description"}
_SLURM_KEYS = {"nodes", "gpus_per_node", "partition", "time", "mem", "cpus_per_task", "account", "qos",
               "constraint", "array_parallelism", "setup", "additional_parameters", "signal_delay_s"}

# Cost model of --dry-run. Training images/s per device, loader and step overhead included; an
# evaluation image costs 1/EVAL_SPEEDUP of a training one (forward only, large batches, no
# augmentation). The CPU figures are fitted to the demo's records (22 runs: per-run wall time
# against training and evaluation images), which the bench's fixed-batch step underestimates.
# "measured" figures are bench/throughput.py's train.py step (bench/results/throughput*.json): on
# this project's 2-core CPU, and on one H200 with bf16 + channels-last; the rest are guesses. One run
# at a time: runs sharing a GPU (--jobs N on one GPU) finish sooner together than this adds up to.
THROUGHPUT: dict[tuple[str, str], tuple[float, str]] = {
    ("cnn_fashion", "cpu"): (5000.0, "measured, 2-core CPU"),
    ("resnet20_cifar", "cpu"): (400.0, "measured, 2-core CPU"),
    ("cnn_fashion", "gpu"): (50000.0, "measured, one H200, batch 256"),
    ("resnet20_cifar", "gpu"): (40000.0, "rough estimate, one H100"),
    ("resnet18_cifar", "gpu"): (18000.0, "measured, one H200"),
    ("vit_tiny_patch4_32", "gpu"): (15000.0, "rough estimate, one H100"),
    ("efficientnet_b0_cifar", "gpu"): (12000.0, "rough estimate, one H100"),
    ("resnet50", "gpu"): (3000.0, "measured, one H200, without torch.compile"),
    ("efficientnet_b0", "gpu"): (3500.0, "rough estimate, one H100"),
}
EVAL_SPEEDUP = {"cpu": 10.0, "gpu": 3.0}
#: seconds per run outside the epochs (imports, data, model): in-process on a CPU, a process on a GPU
RUN_OVERHEAD_S = {"cpu": 1.0, "gpu": 20.0}


class SweepError(Exception):
    """A bad sweep file, missing data or a clash with another sweep: one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# The sweep file
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    name: str
    data: str
    subset: int | None
    epochs: int
    models: tuple[str, ...]
    opts: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    tuning_seed: int
    train_args: dict[str, Any]
    schedulers: dict[str, dict[str, Any]]  # method -> {"lr": grid (tuple), other train.py flags}
    max_extensions: int
    slurm: dict[str, Any] = field(default_factory=dict)
    path: str | None = None

    @property
    def b0(self) -> int:
        return min(self.batch_sizes)

    def tuned_bs(self, method: str) -> tuple[int, ...]:
        """The batch sizes at which ``method``'s LR grid is searched."""
        if method in NEVER_TUNED:
            return ()
        return (self.b0,) if method in TUNED_AT_B0 else self.batch_sizes

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data, "subset": self.subset, "epochs": self.epochs,
                "models": list(self.models), "opts": list(self.opts), "batch_sizes": list(self.batch_sizes),
                "b0": self.b0, "seeds": list(self.seeds), "tuning_seed": self.tuning_seed,
                "train_args": dict(self.train_args),
                "schedulers": {m: {k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}
                               for m, o in self.schedulers.items()},
                "max_extensions": self.max_extensions, "slurm": dict(self.slurm), "path": self.path}


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, list | tuple):
        if not value:
            raise SweepError(f"{what} is empty")
        return list(value)
    return [value]


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SweepError(f"{what} must be a positive integer, got {value!r}")
    return value


def spec_from_dict(raw: Mapping[str, Any], path: str | None = None) -> SweepSpec:
    """Check a parsed sweep file and fill its defaults from the recipe."""
    from autolr.recipes import get_recipe

    where = path or "sweep"
    if not isinstance(raw, Mapping):
        raise SweepError(f"{where}: a sweep file is a YAML mapping")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise SweepError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_SPEC_KEYS)}")
    name = raw.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise SweepError(f"{where}: name must be a plain directory name, got {name!r}")
    try:
        recipe = get_recipe(str(raw.get("data", "")))
    except ValueError as err:
        raise SweepError(f"{where}: {err}") from None
    subset = raw.get("subset")
    if subset is not None:
        subset = _positive_int(subset, f"{where}: subset")
    epochs = _positive_int(raw.get("epochs", recipe.epochs), f"{where}: epochs")
    models = tuple(str(m) for m in _as_list(raw.get("models", list(recipe.models)), f"{where}: models"))
    opts = tuple(str(o) for o in _as_list(raw.get("opts", list(recipe.opts)), f"{where}: opts"))
    bss = [_positive_int(b, f"{where}: batch_sizes") for b in _as_list(raw.get("batch_sizes",
                                                                                list(recipe.batch_sizes)), "bs")]
    if len(set(bss)) != len(bss):
        raise SweepError(f"{where}: batch_sizes has duplicates: {bss}")
    seeds_raw = raw.get("seeds", recipe.seeds)
    if isinstance(seeds_raw, list):
        seeds = tuple(int(s) for s in seeds_raw)
    else:
        seeds = tuple(range(_positive_int(seeds_raw, f"{where}: seeds")))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise SweepError(f"{where}: seeds must be a count or a list of distinct non-negative seeds")
    tuning_seed = raw.get("tuning_seed", 0)
    if isinstance(tuning_seed, bool) or not isinstance(tuning_seed, int) or tuning_seed < 0:
        raise SweepError(f"{where}: tuning_seed must be a non-negative integer")
    max_ext = raw.get("max_extensions", 2)
    if isinstance(max_ext, bool) or not isinstance(max_ext, int) or max_ext < 0:
        raise SweepError(f"{where}: max_extensions must be a non-negative integer")

    train_args = dict(raw.get("train_args") or {})
    clash = set(train_args) & _MANAGED
    if clash:
        raise SweepError(f"{where}: train_args may not set {sorted(clash)}: the sweep sets them (top-level keys "
                         "or the scheduler's own options)")
    scheds_raw = raw.get("schedulers")
    if not isinstance(scheds_raw, Mapping) or not scheds_raw:
        raise SweepError(f"{where}: schedulers must map scheduler names to their options")
    schedulers: dict[str, dict[str, Any]] = {}
    for method, opts_raw in scheds_raw.items():
        if method not in SCHEDULERS:
            raise SweepError(f"{where}: unknown scheduler {method!r}; choose from {', '.join(SCHEDULERS)}")
        o = dict(opts_raw or {})
        if "legw_b0" in o:
            raise SweepError(f"{where}: {method}: legw_b0 is the sweep's B0 (its smallest batch size)")
        if method in NEVER_TUNED:
            if "lr" in o:
                raise SweepError(f"{where}: {method} is never tuned: it takes no lr grid")
        else:
            grid = [float(v) for v in _as_list(o.get("lr"), f"{where}: {method}: lr")] if "lr" in o else []
            if not grid:
                raise SweepError(f"{where}: {method} needs an lr grid (lr: [..])")
            if min(grid) <= 0 or len(set(grid)) != len(grid):
                raise SweepError(f"{where}: {method}: the lr grid must hold distinct positive values, got {grid}")
            o["lr"] = tuple(sorted(grid))
        schedulers[str(method)] = o
    slurm = dict(raw.get("slurm") or {})
    bad = set(slurm) - _SLURM_KEYS
    if bad:
        raise SweepError(f"{where}: unknown slurm keys {sorted(bad)}; known: {sorted(_SLURM_KEYS)}")
    return SweepSpec(name=name, data=recipe.dataset, subset=subset, epochs=epochs, models=models, opts=opts,
                     batch_sizes=tuple(sorted(bss)), seeds=seeds, tuning_seed=tuning_seed, train_args=train_args,
                     schedulers=schedulers, max_extensions=max_ext, slurm=slurm, path=path)


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    import yaml

    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as err:
        raise SweepError(f"cannot read {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise SweepError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    return spec_from_dict(raw, str(path))


# ---------------------------------------------------------------------------------------------
# Runs, their ids and their records
# ---------------------------------------------------------------------------------------------
def _train_module() -> ModuleType:
    """train.py, imported once; it lives at the repository root, outside the package."""
    mod = sys.modules.get("train")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == REPO / "train.py":
        return mod
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("train")


@lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    return _train_module().build_parser()


def _flags_to_argv(flags: Mapping[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        else:
            # repr keeps every float exact (0.0316 stays 0.0316), so the run_id is stable
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


@cache
def _run_id(argv: tuple[str, ...]) -> str:
    train = _train_module()
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit:
        raise SweepError(f"train.py rejects the flags {' '.join(argv)}") from None
    try:
        return train.run_id_of(train.resolve_config(args))
    except train.UsageError as err:
        raise SweepError(f"train.py rejects a run of this sweep: {err} (flags: {' '.join(argv)})") from None


@dataclass(frozen=True)
class Run:
    """One train.py run: what it is in the sweep, and the flags that define it (its run_id)."""

    stage: str  # "tune" or "final"
    method: str
    model: str
    opt: str
    bs: int
    seed: int
    lr: float | None
    argv: tuple[str, ...]
    run_id: str

    def label(self) -> str:
        lr = "" if self.lr is None else f" lr {self.lr:g}"
        return f"{self.method} {self.model} {self.opt} bs {self.bs} seed {self.seed}{lr}"


@dataclass(frozen=True)
class RunResult:
    """What selection needs from a run's record (or from a run that ended without one)."""

    status: str  # finished | diverged | failed
    val_acc: float | None
    test_acc: float | None = None
    wall_seconds: float | None = None
    recorded: bool = True
    error: str | None = None

    @property
    def score(self) -> float:
        """Selection score: the final val accuracy; a diverged or failed run is the worst."""
        if self.status != "finished" or self.val_acc is None or not math.isfinite(self.val_acc):
            return -math.inf
        return self.val_acc


def read_record(path: Path) -> RunResult | None:
    """A run record's outcome, or None when the file is not a usable record."""
    try:
        rec = json.loads(path.read_text())
        status = (rec.get("outcome") or {}).get("status")
        if rec.get("run_id") not in (None, path.stem) or status not in ("finished", "diverged", "failed"):
            return None
        final = rec.get("final") or {}
        return RunResult(status=status, val_acc=final.get("val_acc"), test_acc=final.get("test_acc"),
                         wall_seconds=(rec.get("timing") or {}).get("wall_seconds"),
                         error=(rec.get("outcome") or {}).get("error"))
    except (OSError, ValueError, AttributeError):
        return None


def load_results(runs_dir: Path) -> dict[str, RunResult]:
    """run_id -> outcome for every record in ``runs_dir``."""
    out: dict[str, RunResult] = {}
    if runs_dir.is_dir():
        for p in sorted(runs_dir.glob("*.json")):
            res = read_record(p)
            if res is not None:
                out[p.stem] = res
    return out


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
        best_score = max(scores.values())
        direction = None
        why = ""
        if best_score == -math.inf:
            direction, why = "down", "all runs diverged or failed"
            best = None
        else:
            # ties go to the smaller LR: the safer choice
            best = min(v for v in grid if scores[v] == best_score)
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


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
@dataclass
class Plan:
    grids: dict[tuple[str, str, str, int], GridState]
    tuning_runs: list[Run]  # every tuning run known now (extensions included)
    final_runs: list[Run]  # every final run whose LR is known now
    waiting_finals: list[tuple[str, str, str, int, int]]  # (method, model, opt, bs, seed) awaiting a choice
    pending_extensions: int  # upper bound on extension runs not yet known

    @property
    def tuning_done(self) -> bool:
        return all(g.reason != "pending" for g in self.grids.values())


class Sweep:
    """A sweep file bound to its results and checkpoint folders."""

    def __init__(self, spec: SweepSpec, results_root: str | os.PathLike[str] = "results",
                 ckpt_root: str | os.PathLike[str] = "checkpoints"):
        self.spec = spec
        self.dir = Path(results_root) / spec.name
        self.runs_dir = self.dir / "runs"
        self.stages_path = self.dir / "stages.json"
        self.ckpt_dir = Path(ckpt_root) / spec.name
        self.log_dir = self.ckpt_dir / "logs"

    # -- runs -------------------------------------------------------------------------------------
    def run_flags(self, method: str, model: str, opt: str, bs: int, seed: int, lr: float | None) -> dict[str, Any]:
        s = self.spec
        flags: dict[str, Any] = {"data": s.data, "model": model, "opt": opt, "bs": bs, "seed": seed, "sched": method,
                                 "epochs": s.epochs, "subset": s.subset}
        flags.update({k: v for k, v in s.schedulers[method].items() if k != "lr"})
        if method not in NEVER_TUNED:
            flags["lr"] = float(lr)  # type: ignore[arg-type]
        if SCHEDULERS[method].takes_b0:
            flags["legw_b0"] = s.b0
        flags.update(s.train_args)
        return flags

    def make_run(self, stage: str, method: str, model: str, opt: str, bs: int, seed: int,
                 lr: float | None) -> Run:
        argv = tuple(_flags_to_argv(self.run_flags(method, model, opt, bs, seed, lr)))
        return Run(stage=stage, method=method, model=model, opt=opt, bs=bs, seed=seed, lr=lr, argv=argv,
                   run_id=_run_id(argv))

    def reuses_tuning_run(self, method: str, bs: int, seed: int) -> bool:
        """Whether this final run has the config (so the run_id) of one of its grid's tuning runs."""
        return method not in NEVER_TUNED and seed == self.spec.tuning_seed and bs in self.spec.tuned_bs(method)

    def operational_argv(self) -> list[str]:
        """Flags that say where things go: not part of any run_id."""
        return ["--out", str(self.runs_dir), "--ckpt-dir", str(self.ckpt_dir), "--resume", "--progress", "off"]

    def validate(self) -> None:
        """Every run of the sweep must be one train.py accepts, before anything runs."""
        from autolr.data import DataError, dataset_info

        s = self.spec
        try:
            info = dataset_info(s.data, subset=s.subset)
        except DataError as err:
            raise SweepError(str(err)) from None
        too_big = [b for b in s.batch_sizes if b > info["train_size"]]
        if too_big:
            raise SweepError(f"batch sizes {too_big} exceed the training split of {info['train_size']} examples")
        for method, o in s.schedulers.items():
            lr = None if method in NEVER_TUNED else o["lr"][0]
            for model in s.models:
                for opt in s.opts:
                    for bs in s.batch_sizes:
                        self.make_run("final", method, model, opt, bs, s.tuning_seed, lr)

    # -- plan -------------------------------------------------------------------------------------
    def plan(self, results: Mapping[str, RunResult]) -> Plan:
        s = self.spec
        grids: dict[tuple[str, str, str, int], GridState] = {}
        tuning: list[Run] = []
        finals: list[Run] = []
        waiting: list[tuple[str, str, str, int, int]] = []
        pending_ext = 0
        for method, o in s.schedulers.items():
            for model in s.models:
                for opt in s.opts:
                    for tbs in s.tuned_bs(method):
                        def result_of(v: float, m: str = method, mo: str = model, op: str = opt,
                                      b: int = tbs) -> RunResult | None:
                            return results.get(self.make_run("tune", m, mo, op, b, s.tuning_seed, v).run_id)

                        gs = decide_grid(GridState(method, model, opt, tbs, tuple(o["lr"])), result_of,
                                         s.max_extensions)
                        grids[(method, model, opt, tbs)] = gs
                        tuning += [self.make_run("tune", method, model, opt, tbs, s.tuning_seed, v) for v in gs.grid]
                        if gs.reason == "pending":
                            pending_ext += s.max_extensions - len(gs.extensions)
                    for bs in s.batch_sizes:
                        if method in NEVER_TUNED:
                            lr: float | None = None
                        else:
                            gs = grids[(method, model, opt, s.b0 if method in TUNED_AT_B0 else bs)]
                            lr = gs.chosen
                            if lr is None:
                                waiting += [(method, model, opt, bs, seed) for seed in s.seeds]
                                continue
                        finals += [self.make_run("final", method, model, opt, bs, seed, lr) for seed in s.seeds]
        return Plan(grids=grids, tuning_runs=tuning, final_runs=finals, waiting_finals=waiting,
                    pending_extensions=pending_ext)

    # -- stages.json ------------------------------------------------------------------------------
    def stages_doc(self, plan: Plan, results: Mapping[str, RunResult]) -> dict[str, Any]:
        s = self.spec

        def status(run: Run) -> dict[str, Any]:
            r = results.get(run.run_id)
            d: dict[str, Any] = {"status": "missing" if r is None else r.status,
                                 "val_acc": None if r is None else r.val_acc}
            if r is not None and not r.recorded:
                d["error"] = r.error
            return d

        tuning_ids = {r.run_id for r in plan.tuning_runs}
        selection: list[dict[str, Any]] = []
        for method in s.schedulers:
            for model in s.models:
                for opt in s.opts:
                    for bs in s.batch_sizes:
                        e: dict[str, Any] = {"method": method, "model": model, "opt": opt, "bs": bs}
                        if method in NEVER_TUNED:
                            e.update(tuned=False, tuned_at_bs=None, grid=[], trials=[], extensions=[],
                                     chosen_lr=None, reason="not tuned", capped=False, messages=[])
                        else:
                            tbs = s.b0 if method in TUNED_AT_B0 else bs
                            gs = plan.grids[(method, model, opt, tbs)]
                            trials = []
                            for v in gs.grid:
                                run = self.make_run("tune", method, model, opt, tbs, s.tuning_seed, v)
                                trials.append({"lr": v, "run_id": run.run_id, **status(run)})
                            e.update(tuned=tbs == bs, tuned_at_bs=tbs, grid=list(gs.grid), trials=trials,
                                     extensions=list(gs.extensions), chosen_lr=gs.chosen, reason=gs.reason,
                                     capped=gs.capped, messages=list(gs.messages))
                        selection.append(e)
        final_runs = []
        for run in plan.final_runs:
            st = status(run)
            d = {"method": run.method, "model": run.model, "opt": run.opt, "bs": run.bs, "seed": run.seed,
                 "lr": run.lr, "run_id": run.run_id, "status": st["status"], "tuning_run": run.run_id in tuning_ids}
            if "error" in st:
                d["error"] = st["error"]
            final_runs.append(d)
        for method, model, opt, bs, seed in plan.waiting_finals:
            final_runs.append({"method": method, "model": model, "opt": opt, "bs": bs, "seed": seed, "lr": None,
                               "run_id": None, "status": "missing", "tuning_run": False})
        charge = []
        for (method, model, opt, tbs), gs in plan.grids.items():
            ids = [self.make_run("tune", method, model, opt, tbs, s.tuning_seed, v).run_id for v in gs.grid]
            secs = [results[i].wall_seconds for i in ids if i in results and results[i].wall_seconds is not None]
            charge.append({"method": method, "model": model, "opt": opt, "bs": tbs, "run_ids": ids, "runs": len(ids),
                           "wall_seconds": sum(secs) if secs else None,
                           "charged": "once per grid" if method in TUNED_AT_B0 else "per batch size",
                           "covers_bs": list(s.batch_sizes) if method in TUNED_AT_B0 else [tbs]})

        def have(rid: str) -> bool:
            return rid in results and results[rid].recorded

        tune_complete = plan.tuning_done and all(have(r.run_id) for r in plan.tuning_runs)
        final_complete = not plan.waiting_finals and all(have(r.run_id) for r in plan.final_runs)
        n_tune_done = sum(have(r.run_id) for r in plan.tuning_runs)
        n_final_done = sum(have(r.run_id) for r in plan.final_runs)
        # distinct runs still to do: a final run that is its grid's tuning run counts once
        missing = {r.run_id for r in [*plan.tuning_runs, *plan.final_runs] if not have(r.run_id)}
        n_waiting_new = sum(not self.reuses_tuning_run(m, b, sd) for m, _, _, b, sd in plan.waiting_finals)
        return {
            "schema": STAGES_SCHEMA, "name": s.name, "sweep_file": s.path, "spec": s.to_dict(),
            "complete": tune_complete and final_complete,
            "missing_runs": len(missing) + n_waiting_new,
            "stages": {"tune": {"complete": tune_complete, "runs": len(plan.tuning_runs), "done": n_tune_done,
                                "pending_extensions_max": plan.pending_extensions},
                       "final": {"complete": final_complete, "runs": len(plan.final_runs) + len(plan.waiting_finals),
                                 "done": n_final_done, "waiting_for_tuning": len(plan.waiting_finals)}},
            "selection": selection, "final_runs": final_runs, "tuning_charge": charge,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def write_stages(self, plan: Plan, results: Mapping[str, RunResult]) -> dict[str, Any]:
        doc = self.stages_doc(plan, results)
        _train_module().atomic_write_json(self.stages_path, doc)
        return doc


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def check_data(dataset: str, data_root: str | os.PathLike[str], download: bool = False) -> None:
    """Raise SweepError (one line: what is missing and how to get it) unless the data is here.

    Runs before any training so that a missing dataset stops the sweep once, not every run.
    """
    from autolr.data import DataError, load_arrays

    root = Path(data_root)
    try:
        if dataset == "imagenet":
            tree = all((root / "imagenet" / d).is_dir() for d in ("train", "val"))
            betons = all((root / "ffcv" / "imagenet" / f"{s}.beton").is_file() for s in ("train", "val", "test"))
            if not (tree or betons):
                raise DataError(f"imagenet not found: put the ImageFolder tree under {root / 'imagenet'} "
                                f"(train/<class>/*.JPEG, val/<class>/*.JPEG) or the .beton files under "
                                f"{root / 'ffcv' / 'imagenet'}")
        else:
            load_arrays(dataset, root, download=download)
    except DataError as err:
        raise SweepError(str(err)) from None


# ---------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------
def estimate_seconds(spec: SweepSpec, model: str, bs: int, device_kind: str) -> tuple[float | None, str]:
    """Device-seconds of one run: training images x epochs and every evaluation, at THROUGHPUT."""
    from autolr.data import dataset_info

    entry = THROUGHPUT.get((model, device_kind))
    if entry is None:
        return None, f"no throughput figure for {model} on {device_kind}"
    ips, source = entry
    info = dataset_info(spec.data, subset=spec.subset)
    train_imgs = (info["train_size"] // bs) * bs * spec.epochs  # full batches only
    eval_imgs = info["val_size"] * (spec.epochs + 1) + info["test_size"]  # val every epoch and at the end, test once
    return train_imgs / ips + eval_imgs / (ips * EVAL_SPEEDUP[device_kind]) + RUN_OVERHEAD_S[device_kind], \
        f"{model} on {device_kind}: {ips:.0f} img/s ({source})"


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    rc: int | None
    error: str | None
    seconds: float


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


class InProcessExecutor:
    """--jobs 1: train.main in this process, one run after another (no interpreter start-up per run)."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep

    def run(self, runs: Sequence[Run], done: Callable[[Run, Outcome], None]) -> None:
        train = _train_module()
        self.sweep.log_dir.mkdir(parents=True, exist_ok=True)
        for run in runs:
            log_path = self.sweep.log_dir / f"{run.run_id}.log"
            t0 = time.perf_counter()
            rc: int | None
            error = None
            with open(log_path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                try:
                    rc = train.main([*run.argv, *self.sweep.operational_argv()])
                except KeyboardInterrupt:
                    raise
                except SystemExit as err:  # argparse
                    rc = err.code if isinstance(err.code, int) else 2
                except BaseException as err:  # noqa: BLE001 - a crashed run is recorded, the sweep goes on
                    traceback.print_exc()
                    rc, error = 1, f"{type(err).__name__}: {err}"
            if rc not in (0, 3) and error is None:
                error = _log_tail(log_path) or f"exit code {rc}"
            gc.collect()  # loaders and models of the finished run hold reference cycles: free them now
            done(run, Outcome(rc, error, time.perf_counter() - t0))


def _die_with_parent() -> None:
    # children of a SIGKILLed sweep must not train on as orphans: a restart would run them twice
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SubprocessExecutor:
    """--jobs N: N train.py processes at a time, one GPU each when there are GPUs."""

    def __init__(self, sweep: Sweep, jobs: int):
        self.sweep, self.jobs = sweep, jobs
        try:
            import torch

            self.gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no usable CUDA means CPU jobs
            self.gpus = 0

    def run(self, runs: Sequence[Run], done: Callable[[Run, Outcome], None]) -> None:
        self.sweep.log_dir.mkdir(parents=True, exist_ok=True)
        queue = list(runs)
        free = list(range(self.jobs))
        active: dict[int, tuple[subprocess.Popen[bytes], Run, float, Path, Any]] = {}
        try:
            while queue or active:
                while queue and free:
                    slot, run = free.pop(0), queue.pop(0)
                    env = dict(os.environ)
                    if self.gpus:
                        env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
                    # N jobs share the cores (GPU jobs too: AutoWU's test and the loaders run on them):
                    # N x all-cores threads would thrash
                    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.jobs)))
                    log_path = self.sweep.log_dir / f"{run.run_id}.log"
                    f = open(log_path, "ab")  # noqa: SIM115 - closed when the process ends
                    cmd = [sys.executable, str(REPO / "train.py"), *run.argv, *self.sweep.operational_argv()]
                    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
                    active[slot] = (p, run, time.perf_counter(), log_path, f)
                time.sleep(0.2)
                for slot in list(active):
                    p, run, t0, log_path, f = active[slot]
                    rc = p.poll()
                    if rc is None:
                        continue
                    f.close()
                    del active[slot]
                    free.append(slot)
                    error = None if rc in (0, 3) else (_log_tail(log_path) or f"exit code {rc}")
                    done(run, Outcome(rc, error, time.perf_counter() - t0))
        finally:
            for p, *_ in active.values():
                with contextlib.suppress(OSError):
                    p.terminate()


class TrainJob(Checkpointable):
    """One run as a submitit job: train.main in the job, or torchrun over the job's GPUs and nodes.

    On preemption or timeout submitit calls ``checkpoint``: the job is requeued with the same
    flags, and since they include ``--resume`` it continues from the run's last epoch checkpoint.
    """

    def __init__(self, gpus_per_node: int = 1, nodes: int = 1):
        self.gpus_per_node, self.nodes = gpus_per_node, nodes

    def __call__(self, argv: list[str]) -> int:
        os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
        if self.gpus_per_node <= 1 and self.nodes <= 1:
            return int(_train_module().main(list(argv)))
        import submitit

        env = submitit.JobEnvironment()
        port = 20000 + zlib.crc32(str(env.job_id).encode()) % 20000  # jobs sharing a node must not collide
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={self.nodes}", f"--node_rank={env.node}",
               f"--nproc_per_node={self.gpus_per_node}", f"--master_addr={env.hostnames[0]}",
               f"--master_port={port}", str(REPO / "train.py"), *argv]
        return subprocess.run(cmd, check=False).returncode

    def checkpoint(self, argv: list[str]) -> Any:
        return DelayedSubmission(self, argv)


def _minutes(value: Any) -> int:
    """Slurm time as minutes: an int, or "[D-]HH:MM[:SS]"."""
    if isinstance(value, int):
        return value
    text = str(value)
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    h, m = (parts + [0, 0])[:2]
    return days * 1440 + h * 60 + m + (1 if len(parts) > 2 and parts[2] else 0)


def _mem_gb(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise SweepError(f"slurm mem {value!r}: use a number of GB or a string like 480G")
    scale = {"": 1.0, "K": 1 / 2**20, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[m.group(2).upper()]
    return float(m.group(1)) * scale


def slurm_parameters(spec: SweepSpec) -> dict[str, Any]:
    """submitit AutoExecutor parameters from the sweep's ``slurm:`` section."""
    s = spec.slurm
    p: dict[str, Any] = {"name": f"autolr-{spec.name}", "nodes": int(s.get("nodes", 1)),
                         "gpus_per_node": int(s.get("gpus_per_node", 1)), "tasks_per_node": 1,
                         "timeout_min": _minutes(s.get("time", 24 * 60))}
    if "cpus_per_task" in s:
        p["cpus_per_task"] = int(s["cpus_per_task"])
    if "mem" in s:
        p["mem_gb"] = _mem_gb(s["mem"])
    for key in ("partition", "account", "qos", "constraint", "array_parallelism", "setup", "signal_delay_s",
                "additional_parameters"):
        if key in s:
            p[f"slurm_{key}"] = s[key]
    return p


def sbatch_preview(spec: SweepSpec, folder: Path, n_runs: int) -> str:
    """The sbatch script submitit would write for a job array of ``n_runs`` runs."""
    p = slurm_parameters(spec)
    try:
        from submitit.slurm.slurm import _make_sbatch_string

        kw: dict[str, Any] = {"job_name": p["name"], "nodes": p["nodes"], "gpus_per_node": p["gpus_per_node"],
                              "ntasks_per_node": 1, "time": p["timeout_min"], "map_count": n_runs}
        if "cpus_per_task" in p:
            kw["cpus_per_task"] = p["cpus_per_task"]
        if "mem_gb" in p:
            kw["mem"] = f"{int(math.ceil(p['mem_gb']))}GB"
        for key in ("partition", "account", "qos", "constraint", "array_parallelism", "setup", "signal_delay_s",
                    "additional_parameters"):
            if f"slurm_{key}" in p:
                kw[key] = p[f"slurm_{key}"]
        return _make_sbatch_string(command="python -u -m submitit.core._submit <folder>", folder=str(folder / "%j"),
                                   **kw)
    except Exception as err:  # noqa: BLE001 - a preview must not fail on a submitit internals change
        return f"(sbatch preview unavailable: {type(err).__name__}: {err})\n" + json.dumps(p, indent=1)


class SubmititExecutor:
    """--executor slurm: each round of runs is one submitit job array; the sweep waits for it.

    Submitted job ids are kept in ``checkpoints/<name>/submitit/jobs.json``: a driver started
    again while an earlier one's jobs are still queued or running waits for those jobs instead of
    submitting the same runs a second time (two jobs would share one checkpoint).
    """

    def __init__(self, sweep: Sweep, cluster: str):
        self.sweep, self.cluster = sweep, cluster
        self.folder = sweep.ckpt_dir / "submitit"
        self.jobs_file = self.folder / "jobs.json"

    def _known_jobs(self) -> dict[str, str]:
        try:
            return {str(k): str(v) for k, v in json.loads(self.jobs_file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _live(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these slurm job (array element) ids are still queued or running."""
        arrays = sorted({j.split("_")[0] for j in job_ids})
        if self.cluster != "slurm" or not arrays:
            return set()
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                                 text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return set()
        return {line.strip() for line in out.splitlines() if line.strip()}

    def run(self, runs: Sequence[Run], done: Callable[[Run, Outcome], None]) -> None:
        import submitit

        known = self._known_jobs()
        live = self._live(known[r.run_id] for r in runs if r.run_id in known)
        attach = [r for r in runs if known.get(r.run_id) in live]
        submit = [r for r in runs if known.get(r.run_id) not in live]
        jobs: list[tuple[Run, Any]] = []
        for r in attach:
            jobs.append((r, submitit.SlurmJob(folder=str(self.folder / "%j"), job_id=known[r.run_id])))
            print(f"waiting for job {known[r.run_id]} of an earlier driver: {r.label()}", flush=True)
        t0 = time.perf_counter()
        if submit:
            ex = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
            params = slurm_parameters(self.sweep.spec)
            if self.cluster != "slurm":
                # the local executor runs on this machine: one node, the GPUs it has
                params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
                params.update(nodes=1, gpus_per_node=0 if params["gpus_per_node"] <= 1 else params["gpus_per_node"])
            ex.update_parameters(**params)
            fn = TrainJob(gpus_per_node=params["gpus_per_node"], nodes=params["nodes"])
            submitted = ex.map_array(fn, [[*r.argv, *self.sweep.operational_argv()] for r in submit])
            known.update({r.run_id: str(j.job_id) for r, j in zip(submit, submitted, strict=True)})
            _train_module().atomic_write_json(self.jobs_file, known)
            jobs += list(zip(submit, submitted, strict=True))
            print(f"submitted {len(submitted)} jobs ({self.cluster}): {submitted[0].job_id} ...", flush=True)
        pending = dict(enumerate(jobs))
        while pending:
            time.sleep(1.0 if self.cluster != "slurm" else 30.0)
            for i in list(pending):
                run, job = pending[i]
                if not job.done():
                    continue
                del pending[i]
                try:
                    rc, error = int(job.result()), None
                except Exception as err:  # noqa: BLE001 - a failed job is recorded, the sweep goes on
                    last = str(err).strip().splitlines()[-1:] or [""]
                    rc, error = 1, f"{type(err).__name__}: {last[0]} (log: {job.paths.stdout})"
                if rc not in (0, 3) and error is None:
                    error = f"exit code {rc} (log: {job.paths.stdout})"
                done(run, Outcome(rc, error, time.perf_counter() - t0))


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _sweep_lock(path: Path) -> Iterator[None]:
    """One driver per sweep: two would run the same missing runs twice."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"another sweep driver holds {path}: wait for it or stop it first") from None
        yield


class Driver:
    def __init__(self, sweep: Sweep, executor: Any, max_runs: int | None):
        self.sweep, self.executor = sweep, executor
        loaded = load_results(sweep.runs_dir)
        # a crashed run (out of memory, a lost file system, a bug fixed since) is tried again by each
        # new driver, from its checkpoint; within one driver its record counts as the worst value
        self.retried = sorted(rid for rid, r in loaded.items() if r.status == "failed")
        self.results = {rid: r for rid, r in loaded.items() if r.status != "failed"}
        self._drop_stale_checkpoints()
        self.budget = max_runs
        self.ran = 0
        self.no_record = 0

    def _drop_stale_checkpoints(self) -> None:
        # a sweep killed between a run's record and its checkpoint's removal leaves the checkpoint
        if self.sweep.spec.train_args.get("keep_ckpt"):
            return
        for rid in self.results:
            ckpt = self.sweep.ckpt_dir / rid / "last.pt"
            if ckpt.is_file():
                ckpt.unlink()
                with contextlib.suppress(OSError):
                    ckpt.parent.rmdir()

    def _round(self, stage: str, runs: list[Run]) -> bool:
        """Run what is missing of ``runs``; False when --max-runs stopped it."""
        from tqdm import tqdm

        # one run per run_id: a final run that is also a tuning run appears once
        todo = list({r.run_id: r for r in runs if r.run_id not in self.results}.values())
        # the most steps (smallest batch) first, else the plan's order: parallel jobs end closer together
        todo.sort(key=lambda r: r.bs)
        stopped = False
        if self.budget is not None:
            left = self.budget - self.ran
            if len(todo) > left:
                todo, stopped = todo[:max(left, 0)], True
        if not todo:
            return not stopped
        # no bar in a log file (disable=None: only on a terminal); the per-run lines are the log
        bar = tqdm(total=len(todo), desc=f"{self.sweep.spec.name} {stage}", unit="run", dynamic_ncols=True,
                   disable=None)

        def done(run: Run, out: Outcome) -> None:
            path = self.sweep.runs_dir / f"{run.run_id}.json"
            res = read_record(path)
            if res is None:
                self.no_record += 1
                res = RunResult("failed", None, recorded=False, error=out.error or f"exit code {out.rc}")
                where = f"no record ({res.error}); log: {self.sweep.log_dir / (run.run_id + '.log')}"
            else:
                acc = "" if res.val_acc is None else f", val {res.val_acc:.4f} test {res.test_acc or 0:.4f}"
                where = f"{res.status}{acc}; record: {path}"
            self.results[run.run_id] = res
            self.ran += 1
            bar.update(1)
            tqdm.write(f"[{run.stage}] {run.label()} ({run.run_id}) in {out.seconds:.0f}s: {where}")
            sys.stdout.flush()  # a log file is block-buffered: show each run as it ends
            self.sweep.write_stages(self.sweep.plan(self.results), self.results)

        try:
            self.executor.run(todo, done)
        finally:
            bar.close()
        return not stopped

    def tune(self, with_finals: bool = True) -> bool:
        """Tuning rounds until every grid has chosen; ``with_finals``: finals whose LR is known join them."""
        # extensions decided before this driver started are in stages.json: say only the new ones
        said = {m for gs in self.sweep.plan(self.results).grids.values() for m in gs.messages}
        while True:
            plan = self.sweep.plan(self.results)
            for gs in plan.grids.values():
                for msg in gs.messages:
                    if msg not in said:
                        said.add(msg)
                        print(msg, flush=True)
            todo = [r for r in plan.tuning_runs if r.run_id not in self.results]
            if not todo:
                return True
            # finals whose LR is known already (auto's, grids decided) join the round: parallel slots
            # stay busy, and an interrupted sweep has AutoWU's runs early
            if with_finals:
                todo += [r for r in plan.final_runs if r.run_id not in self.results]
            # extension runs are only known once their grid's first round is in: rounds, not one batch
            if not self._round("tune", todo):
                return False

    def final(self) -> bool:
        plan = self.sweep.plan(self.results)
        if plan.waiting_finals:
            print(f"{len(plan.waiting_finals)} final runs wait for their tuning stage to finish")
        return self._round("final", plan.final_runs)


def _print_dry_run(sweep: Sweep, device_kind: str, executor: str) -> None:
    s = sweep.spec
    results = load_results(sweep.runs_dir)
    plan = sweep.plan(results)
    print(f"sweep {s.name}: {s.data}" + (f" (subset {s.subset})" if s.subset else "") +
          f", {s.epochs} epochs, models {', '.join(s.models)}, opts {', '.join(s.opts)}, batch sizes "
          f"{'/'.join(map(str, s.batch_sizes))} (B0 {s.b0}), final seeds {list(s.seeds)}, tuning seed "
          f"{s.tuning_seed}, schedulers {', '.join(s.schedulers)}")
    cost_cache: dict[tuple[str, int], tuple[float | None, str]] = {}

    def cost(run: Run) -> float | None:
        key = (run.model, run.bs)
        if key not in cost_cache:
            cost_cache[key] = estimate_seconds(s, run.model, run.bs, device_kind)
        return cost_cache[key][0]

    first = [r for r in plan.tuning_runs] + [r for r in plan.final_runs if r.method in NEVER_TUNED]
    first = list({r.run_id: r for r in first}.values())
    first_ids = {r.run_id for r in first}
    later = [r for r in plan.final_runs if r.run_id not in first_ids]
    later = list({r.run_id: r for r in later}.values())
    print(f"stage 1 (planned now): {len(first)} runs, {sum(r.run_id in results for r in first)} with records")
    for r in first:
        mark = "done   " if r.run_id in results else "missing"
        c = cost(r)
        print(f"  {mark} {r.stage:5s} {r.label():58s} run {r.run_id}  ~{c:.0f}s" if c is not None else
              f"  {mark} {r.stage:5s} {r.label():58s} run {r.run_id}")
    reused = sum(sweep.reuses_tuning_run(m, b, sd) for m, _, _, b, sd in plan.waiting_finals)
    print(f"later stages add: up to {plan.pending_extensions} extension runs (at most {s.max_extensions} per grid), "
          f"{len(plan.waiting_finals) - reused} final runs once tuning has chosen ({reused} more finals reuse "
          f"their tuning run), {sum(r.run_id not in results for r in later)} more final runs whose LR is chosen")

    def total(runs: Iterable[Run]) -> float | None:
        vals = [cost(r) for r in runs]
        return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[arg-type]

    now = total(r for r in first if r.run_id not in results)
    # their LR is not chosen yet, but a run's cost does not depend on it
    waiting = [sweep.make_run("final", m, mo, o, b, sd, s.schedulers[m]["lr"][0])
               for m, mo, o, b, sd in plan.waiting_finals if not sweep.reuses_tuning_run(m, b, sd)]
    later_cost = total([*waiting, *(r for r in later if r.run_id not in results)])
    ext_cost: float | None = 0.0
    for (m, mo, o, b), gs in plan.grids.items():
        if gs.reason == "pending":
            c = cost(sweep.make_run("tune", m, mo, o, b, s.tuning_seed, gs.initial[0]))
            ext_cost = None if c is None or ext_cost is None else ext_cost + c * (s.max_extensions - len(gs.extensions))
    for source in sorted({src for _, src in cost_cache.values()}):
        print(f"  throughput: {source}")
    if now is None or later_cost is None or ext_cost is None:
        print(f"estimated cost: unknown (no throughput figure for some model on {device_kind}; --device-kind picks "
              "the table to use)")
    else:
        worst = now + later_cost + ext_cost
        print(f"estimated cost ({device_kind}, device-seconds): stage 1 {now:.0f} s, later stages {later_cost:.0f} s, "
              f"extensions up to {ext_cost:.0f} s; total {now + later_cost:.0f} s to {worst:.0f} s "
              f"({(now + later_cost) / 3600:.2f} to {worst / 3600:.2f} device-hours)")
    if executor == "slurm":
        print("sbatch parameters of each job array (one array per round):")
        print(sbatch_preview(s, sweep.ckpt_dir / "submitit", len([r for r in first if r.run_id not in results])))


def build_cli() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autolr.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_file", help="a sweep YAML file (sweeps/*.yaml)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their estimated cost; run nothing")
    p.add_argument("--jobs", type=int, default=1, help="local: 1 runs in this process; N > 1 runs N processes "
                   "(one GPU each when there are GPUs)")
    p.add_argument("--executor", default="local", choices=["local", "slurm"])
    p.add_argument("--cluster", default="slurm", choices=["slurm", "local", "debug"],
                   help="slurm executor: where submitit sends the jobs (local: this machine, same code path)")
    p.add_argument("--results-root", default="results", help="records go to RESULTS_ROOT/<name>/runs/")
    p.add_argument("--ckpt-root", default="checkpoints", help="checkpoints and logs go to CKPT_ROOT/<name>/")
    p.add_argument("--only-stage", choices=["tune", "final"], default=None)
    p.add_argument("--max-runs", type=int, default=None, help="run at most K missing runs, then stop (resumable)")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    p.add_argument("--device-kind", choices=["cpu", "gpu"], default=None,
                   help="cost estimate for this device (default: gpu when CUDA is here or --executor slurm)")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
    args = build_cli().parse_args(argv)
    try:
        if args.jobs < 1:
            raise SweepError("--jobs must be at least 1")
        if args.max_runs is not None and args.max_runs < 0:
            raise SweepError("--max-runs must be >= 0")
        spec = load_spec(args.sweep_file)
        sweep = Sweep(spec, args.results_root, args.ckpt_root)
        sweep.validate()
        if args.dry_run:
            kind = args.device_kind
            if kind is None:
                import torch

                kind = "gpu" if args.executor == "slurm" or torch.cuda.is_available() else "cpu"
            try:
                check_data(spec.data, spec.train_args.get("data_root", "data"))
                print("data: present")
            except SweepError as err:
                print(f"data: MISSING: {err}")
            _print_dry_run(sweep, kind, args.executor)
            return 0
        data_root = spec.train_args.get("data_root", "data")
        check_data(spec.data, data_root, download=args.download)
        if args.executor == "local" and spec.train_args.get("loader", "ffcv") == "ffcv":
            # the .beton files once, here, rather than by the first of N parallel runs while the rest wait
            from autolr.data import DataError, prepare_ffcv

            try:
                paths = prepare_ffcv(spec.data, data_root, subset=spec.subset, val_size=spec.train_args.get("val_size"))
            except DataError as err:
                raise SweepError(str(err)) from None
            print(f"data: {', '.join(str(p) for p in paths.values())}", flush=True)
        if args.executor == "slurm":
            if args.cluster == "slurm" and shutil.which("sbatch") is None:
                raise SweepError("--executor slurm: no sbatch here; run it on a slurm login node, or pass --cluster "
                                 "local to take the same path on this machine")
            executor: Any = SubmititExecutor(sweep, args.cluster)
        elif args.jobs == 1:
            executor = InProcessExecutor(sweep)
        else:
            executor = SubprocessExecutor(sweep, args.jobs)
        with _sweep_lock(sweep.ckpt_dir / ".sweep.lock"):
            driver = Driver(sweep, executor, args.max_runs)
            print(f"sweep {spec.name}: {len(driver.results)} records in {sweep.runs_dir}"
                  + (f"; {len(driver.retried)} failed runs will be tried again" if driver.retried else ""))
            finished = True
            if args.only_stage in (None, "tune"):
                finished = driver.tune(with_finals=args.only_stage is None)
            if finished and args.only_stage in (None, "final"):
                finished = driver.final()
            plan = sweep.plan(driver.results)
            doc = sweep.write_stages(plan, driver.results)
    except SweepError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue (finished runs are kept, the interrupted "
              "one resumes from its last epoch)", file=sys.stderr)
        return 130
    t, f = doc["stages"]["tune"], doc["stages"]["final"]
    print(f"sweep {spec.name}: ran {driver.ran} runs; tuning {t['done']}/{t['runs']} runs"
          f"{'' if t['complete'] else ' (more may follow)'}, finals {f['done']}/{f['runs']}; stages: "
          f"{sweep.stages_path}")
    if not finished:
        ext = t["pending_extensions_max"]
        print(f"stopped after --max-runs {args.max_runs}: {doc['missing_runs']} known runs remain"
              f"{f' (plus up to {ext} extension runs)' if ext else ''}; run the same command again to continue")
    elif doc["complete"]:
        print(f"sweep {spec.name} complete")
    return 1 if driver.no_record else 0


if __name__ == "__main__":
    sys.exit(main())

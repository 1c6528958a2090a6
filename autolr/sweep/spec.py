"""The sweep file: its schema, its type and flag checks, its defaults from the recipe (``load_spec``).

It also holds the link to train.py's flags (``_parser``, autolr.config's) and to the script itself
(``_train_module``, for ``train.main`` only): a sweep's keys are train.py's own flags.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

from autolr import config
from autolr.registry import SCHEDULERS, methods_tuned

REPO = Path(__file__).resolve().parents[2]
#: schedulers whose LR is searched once at B0 and then carried to other batch sizes by their rule
TUNED_AT_B0 = methods_tuned("b0")
#: schedulers that are never tuned (AutoWU finds its own peak; Schedule-Free and Prodigy take none)
NEVER_TUNED = methods_tuned("never")
#: schedulers that find their LR with a run of their own inside each training run (the LR range
#: test): no grid, charged one tuning run at the test's own cost
TUNED_BY_OWN_RUN = methods_tuned("one_run")
#: flags the sweep sets itself per run: a sweep file may not set them in train_args
_MANAGED = config.sweep_keys()
#: flags a scheduler entry may not set either: where and what the sweep runs (a scheduler's own
#: settings, such as AutoWU's search range, it may set; lr and legw_b0 the sweep's tuning sets)
_SWEEP_SET = _MANAGED - (config.scheduler_keys() - {"lr", "legw_b0"})
_SPEC_KEYS = {"name", "data", "subset", "epochs", "models", "opts", "batch_sizes", "seeds", "tuning_seed",
              "train_args", "schedulers", "max_extensions", "slurm", "description", "tuning_from"}
_SLURM_KEYS = {"nodes", "gpus_per_node", "partition", "time", "mem", "cpus_per_task", "account", "qos",
               "constraint", "array_parallelism", "setup", "additional_parameters", "signal_delay_s"}


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
    #: another sweep (a results folder's name) whose tuning stage chose this sweep's tuned LRs: this
    #: sweep runs only the finals, at those LRs (the same grid rerun on another device kind)
    tuning_from: str | None = None

    @property
    def b0(self) -> int:
        return min(self.batch_sizes)

    def sched_of(self, method: str) -> str:
        """The registered scheduler of a method label (``sched:``, else the label itself)."""
        return str(self.schedulers[method].get("sched", method))

    def lr_from(self, method: str) -> str | None:
        """The never-tuned method whose final runs' switch LR this control takes, or None."""
        src = self.schedulers[method].get("lr_from")
        return None if src is None else str(src)

    def is_tuned(self, method: str) -> bool:
        """Whether ``method`` searches an LR grid (not AutoWU and its variants, not the peers, not an
        lr_from control)."""
        return (self.sched_of(method) not in (*NEVER_TUNED, *TUNED_BY_OWN_RUN)
                and self.lr_from(method) is None)

    def tuned_bs(self, method: str) -> tuple[int, ...]:
        """The batch sizes at which ``method``'s LR grid is searched."""
        if not self.is_tuned(method):
            return ()
        return (self.b0,) if self.sched_of(method) in TUNED_AT_B0 else self.batch_sizes

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "data": self.data, "subset": self.subset, "epochs": self.epochs,
                "models": list(self.models), "opts": list(self.opts), "batch_sizes": list(self.batch_sizes),
                "b0": self.b0, "seeds": list(self.seeds), "tuning_seed": self.tuning_seed,
                "train_args": dict(self.train_args),
                "schedulers": {m: {k: list(v) if isinstance(v, tuple) else v for k, v in o.items()}
                               for m, o in self.schedulers.items()},
                "max_extensions": self.max_extensions, "slurm": dict(self.slurm), "path": self.path,
                # only when set: the stages.json of every other sweep keeps its shape
                **({"tuning_from": self.tuning_from} if self.tuning_from is not None else {})}


def _as_list(value: Any, what: str) -> list[Any]:
    if isinstance(value, list | tuple):
        if not value:
            raise SweepError(f"{what} is empty")
        return list(value)
    return [value]


def _mapping(value: Any, what: str) -> dict[str, Any]:
    """A YAML mapping (or nothing: empty) with plain-name keys."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SweepError(f"{what} must be a mapping (key: value), got {type(value).__name__} {value!r}")
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise SweepError(f"{what}: keys must be names, got {bad!r}")
    return dict(value)


def _scalar(value: Any, what: str) -> Any:
    """A train.py flag value: a number, a string or a boolean, never a list or a mapping."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SweepError(f"{what} must be finite, got {value!r}")
        return value
    raise SweepError(f"{what} must be a single value, got {type(value).__name__} {value!r}")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SweepError(f"{what} must hold numbers, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise SweepError(f"{what} must hold finite numbers, got {value!r}")
    return float(value)


def _known_flag(key: str, known: Iterable[str], what: str) -> None:
    """Exact train.py flag names only: argparse would take a prefix (epoch -> --epochs) silently."""
    import difflib

    known = sorted(known)
    if key not in known:
        # the flag argparse would have taken the prefix for, else the closest name
        near = [k for k in known if k.startswith(key)][:1] or difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SweepError(f"{what}: {key!r} is not a train.py flag{hint}; use the exact name of a flag "
                         "(underscores for dashes)")


def _train_flags() -> set[str]:
    """train.py's flag names as sweep keys: --warmup-epochs is warmup_epochs."""
    return {a.dest for a in _parser()._actions if a.option_strings and a.dest != "help"}


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
    names: dict[str, tuple[str, ...]] = {}
    for key, default in (("models", recipe.models), ("opts", recipe.opts)):
        vals = _as_list(raw.get(key, list(default)), f"{where}: {key}")
        if not all(isinstance(v, str) and v for v in vals):
            raise SweepError(f"{where}: {key} must be a list of names, got {vals!r}")
        names[key] = tuple(vals)
    models, opts = names["models"], names["opts"]
    bss = [_positive_int(b, f"{where}: batch_sizes") for b in _as_list(raw.get("batch_sizes",
                                                                                list(recipe.batch_sizes)), "bs")]
    if len(set(bss)) != len(bss):
        raise SweepError(f"{where}: batch_sizes has duplicates: {bss}")
    seeds_raw = raw.get("seeds", recipe.seeds)
    if isinstance(seeds_raw, list):
        # 0.5 or "1" is not a seed: int() would make [0.5, 1.7] the seeds 0 and 1 without a word
        if not all(isinstance(sd, int) and not isinstance(sd, bool) for sd in seeds_raw):
            raise SweepError(f"{where}: seeds must be a count or a list of integers, got {seeds_raw!r}")
        seeds = tuple(seeds_raw)
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

    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise SweepError(f"{where}: description must be text")
    flags = _train_flags()
    train_args = _mapping(raw.get("train_args"), f"{where}: train_args")
    for key, value in train_args.items():
        _known_flag(key, flags, f"{where}: train_args")
        _scalar(value, f"{where}: train_args: {key}")
    clash = set(train_args) & _MANAGED
    if clash:
        raise SweepError(f"{where}: train_args may not set {sorted(clash)}: the sweep sets them (top-level keys "
                         "or the scheduler's own options)")
    scheds_raw = raw.get("schedulers")
    if scheds_raw is not None and not isinstance(scheds_raw, Mapping):
        raise SweepError(f"{where}: schedulers must be a mapping of labels to options, got "
                         f"{type(scheds_raw).__name__}")
    if not scheds_raw:
        raise SweepError(f"{where}: schedulers must map scheduler names to their options")
    schedulers: dict[str, dict[str, Any]] = {}
    for method, opts_raw in scheds_raw.items():
        if not isinstance(method, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@+-]*", method):
            raise SweepError(f"{where}: scheduler label {method!r} must be a plain name (letters, digits, _.@+-)")
        if opts_raw is not None and not isinstance(opts_raw, Mapping):
            raise SweepError(f"{where}: {method}: options must be a mapping ({{lr: [..], ...}}), got {opts_raw!r}")
        o = _mapping(opts_raw, f"{where}: {method}")
        for key, value in o.items():
            if key in ("sched", "lr_from"):
                if not isinstance(value, str):
                    raise SweepError(f"{where}: {method}: {key} must be a label, got {value!r}")
            elif key != "lr":
                _known_flag(key, flags - _SWEEP_SET, f"{where}: {method}")
                _scalar(value, f"{where}: {method}: {key}")
        both = sorted(set(o) & set(train_args))
        if both:
            raise SweepError(f"{where}: {method}: {both} set both here and in train_args: set each flag once")
        sched = o.get("sched", method)
        if sched not in SCHEDULERS:
            what = f"{method}: unknown sched {sched!r}" if "sched" in o else (
                f"unknown scheduler {method!r} (a label of your own needs sched: <scheduler>)")
            raise SweepError(f"{where}: {what}; choose from {', '.join(SCHEDULERS)}")
        if "legw_b0" in o:
            raise SweepError(f"{where}: {method}: legw_b0 is the sweep's B0 (its smallest batch size)")
        # another method's setting (warmup, AutoWU's path, under fixed) would be refused by every run
        own = set(config.options_of(sched))
        # (lr, warmup_epochs and legw_b0 have their own messages)
        for key in sorted(set(o) & (config.scheduler_keys() - own - {"lr", "warmup_epochs", "legw_b0"})):
            near = [k for k in sorted(own) if k.startswith(key)][:1]
            hint = f" (did you mean {near[0]}?)" if near else ""
            owners = [n for n in SCHEDULERS if key in config.options_of(n)]
            raise SweepError(f"{where}: {method}: {key!r} is a setting of {'/'.join(owners)}, not of {sched}{hint}")
        if "lr_from" in o:
            if SCHEDULERS[sched].lr is None or sched in TUNED_AT_B0:
                raise SweepError(f"{where}: {method}: lr_from is for a scheduler whose --lr is the peak LR "
                                 f"(not {sched})")
            if "lr" in o:
                raise SweepError(f"{where}: {method}: lr_from takes the LR from another method's runs: "
                                 "give no lr grid")
        elif sched in NEVER_TUNED or sched in TUNED_BY_OWN_RUN:
            if "lr" in o:
                how = "is never tuned" if sched in NEVER_TUNED else "finds its LR with a run of its own"
                raise SweepError(f"{where}: {method} {how}: it takes no lr grid")
        else:
            values = _as_list(o.get("lr"), f"{where}: {method}: lr") if "lr" in o else []
            grid = [_number(v, f"{where}: {method}: the lr grid") for v in values]
            if not grid:
                raise SweepError(f"{where}: {method} needs an lr grid (lr: [..])")
            if min(grid) <= 0 or len(set(grid)) != len(grid):
                raise SweepError(f"{where}: {method}: the lr grid must hold distinct positive values, got {grid}")
            o["lr"] = tuple(sorted(grid))
        schedulers[method] = o
    for method, o in schedulers.items():
        src = o.get("lr_from")
        if src is None:
            continue
        if src not in schedulers:
            raise SweepError(f"{where}: {method}: lr_from {src!r} is not a scheduler label of this sweep "
                             f"({', '.join(schedulers)})")
        src_o = schedulers[src]
        # the LR is the source run's switch LR (its record's autowu block): AutoWU's family only
        if not SCHEDULERS[src_o.get("sched", src)].autowu_family or "lr_from" in src_o:
            family = [n for n, m in SCHEDULERS.items() if m.autowu_family]
            raise SweepError(f"{where}: {method}: lr_from {src!r} must name a never-tuned method of AutoWU's "
                             f"family ({', '.join(family)} or a variant of one): its runs record the switch LR "
                             "it takes")
    tuning_from = raw.get("tuning_from")
    if tuning_from is not None and (not isinstance(tuning_from, str)
                                    or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", tuning_from)):
        raise SweepError(f"{where}: tuning_from must name another sweep (its results folder), got {tuning_from!r}")
    if tuning_from == name:
        raise SweepError(f"{where}: tuning_from names this sweep itself")
    slurm = _mapping(raw.get("slurm"), f"{where}: slurm")
    bad = set(slurm) - _SLURM_KEYS
    if bad:
        raise SweepError(f"{where}: unknown slurm keys {sorted(bad)}; known: {sorted(_SLURM_KEYS)}")
    return SweepSpec(name=name, data=recipe.dataset, subset=subset, epochs=epochs, models=models, opts=opts,
                     batch_sizes=tuple(sorted(bss)), seeds=seeds, tuning_seed=tuning_seed, train_args=train_args,
                     schedulers=schedulers, max_extensions=max_ext, slurm=slurm, path=path,
                     tuning_from=tuning_from)


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
    """train.py, imported once, for ``train.main`` only (its flags, config and run_id are
    autolr.config's); it lives at the repository root, outside the package."""
    mod = sys.modules.get("train")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == REPO / "train.py":
        return mod
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module("train")


@lru_cache(maxsize=1)
def _parser() -> argparse.ArgumentParser:
    p = config.build_parser()
    # a run_id is computed only from exact flags: a prefix (--epoch for --epochs) is an error here
    p.allow_abbrev = False
    return p

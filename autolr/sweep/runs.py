"""One train.py run of a sweep: its flags, its run_id and train.py's own checks of it (``check_run``),
and what its record says (``RunResult``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from autolr import config
from autolr.sweep.protocol import selection_score
from autolr.sweep.spec import SweepError, _parser


def _flags_to_argv(flags: Mapping[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if value is None:
            continue
        if value is False:
            # a switch that defaults to on is turned off by its --no- form; other flags stay absent
            if _parser()._option_string_actions.get("--no-" + key.replace("_", "-")) is not None:
                argv.append("--no-" + key.replace("_", "-"))
            continue
        if value is True:
            argv.append(flag)
        else:
            # repr keeps every float exact (0.0316 stays 0.0316), so the run_id is stable
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


@cache
def _resolve(argv: tuple[str, ...]) -> tuple[argparse.Namespace, config.RunConfig, str]:
    """train.py's parse, config and run_id of these flags (autolr.config's; cached: do not modify
    the results)."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit:
        raise SweepError(f"train.py rejects the flags {' '.join(argv)}") from None
    try:
        cfg = config.resolve(args)
    except config.UsageError as err:
        raise SweepError(f"train.py rejects a run of this sweep: {err} (flags: {' '.join(argv)})") from None
    return args, cfg, config.run_id(cfg)


def _run_id(argv: tuple[str, ...]) -> str:
    return _resolve(argv)[2]


@cache
def _model_takes(model: str, data: str, num_classes: int, in_chans: int, image_size: int) -> str | None:
    """Why ``model`` cannot train on these images, or None (train.py's own check: one forward pass)."""
    import torch

    from autolr.models import build_model

    try:
        net = build_model(model, num_classes=num_classes, in_chans=in_chans)
    except ValueError as err:
        return str(err)
    shape = (2, in_chans, image_size, image_size)
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(shape))
    except Exception as err:  # noqa: BLE001 - any failure here means "wrong model for this data"
        return (f"--model {model} does not take {data} images ({'x'.join(map(str, shape[1:]))}): "
                f"{type(err).__name__}: {str(err)[:120]}")
    return None


def check_run(argv: Sequence[str], world: int = 1) -> None:
    """Raise SweepError (one line) where train.py would refuse this run before training.

    The checks train.py makes once the config is resolved, before it writes anything: the split
    sizes, the batch over processes and micro-batches, the model on this dataset's images, and the
    schedule's settings on a stand-in optimizer. Keep in step with train.py's ``train``.
    """
    from autolr.data import DataError, dataset_info
    from autolr.registry import check_settings

    args, cfg, _ = _resolve(tuple(argv))
    try:
        info = dataset_info(cfg.data, subset=cfg.subset, val_size=cfg.val_size)
    except DataError as err:
        raise SweepError(str(err)) from None
    if info["train_size"] < 1:
        raise SweepError(f"--val-size {cfg.val_size} leaves no training examples of {cfg.data}")
    bs = cfg.bs
    if bs > info["train_size"]:
        raise SweepError(f"batch {bs} exceeds the training split of {info['train_size']} examples")
    if bs % world:
        raise SweepError(f"batch {bs} does not split over {world} processes: use a multiple of {world}")
    per_rank = bs // world
    if args.micro_bs is not None and args.micro_bs > per_rank:
        raise SweepError(f"micro_bs {args.micro_bs} is larger than the per-process batch {per_rank} (batch {bs})")
    micro = min(cfg.micro_bs, per_rank)
    if per_rank % micro:
        raise SweepError(f"micro-batch {micro} does not divide the per-process batch {per_rank} (batch {bs} over "
                         f"{world} processes): use a batch size that is a multiple of it, or set micro_bs")
    why = _model_takes(cfg.model, cfg.data, info["num_classes"], info["in_chans"], info["image_size"])
    if why is not None:
        raise SweepError(why)
    try:
        # the scheduler's options (and a peer's own optimizer) exactly as train.py checks them
        check_settings(cfg.sched, steps_per_epoch=max(1, info["train_size"] // bs), total_epochs=cfg.epochs,
                       batch_size=bs, weight_decay=cfg.wd, **cfg.scheduler_options())
    except (ValueError, OverflowError, ImportError) as err:
        raise SweepError(str(err)) from None


@dataclass(frozen=True)
class Run:
    """One train.py run: what it is in the sweep, and the flags that define it (its run_id)."""

    stage: str  # "tune" or "final"
    method: str  # the sweep file's label (a scheduler key); ``sched`` is the registered scheduler
    model: str
    opt: str
    bs: int
    seed: int
    lr: float | None
    argv: tuple[str, ...]
    run_id: str
    sched: str = ""
    lr_from_run: str | None = None  # a control: the run whose switch LR this run takes

    def label(self) -> str:
        from autolr.registry import SCHEDULERS

        lr = "" if self.lr is None else f" lr {self.lr:g}"
        m = SCHEDULERS.get(self.sched)
        opt = "own-optimizer" if m is not None and m.replaces_optimizer else self.opt
        return f"{self.method} {self.model} {opt} bs {self.bs} seed {self.seed}{lr}"


@dataclass(frozen=True)
class RunResult:
    """What selection needs from a run's record (or from a run that ended without one)."""

    status: str  # finished | diverged | failed
    val_acc: float | None
    test_acc: float | None = None
    wall_seconds: float | None = None
    recorded: bool = True
    error: str | None = None
    switch_lr: float | None = None  # AutoWU's record: the LR it switched to decay at
    tuning_seconds: float | None = None  # the LR range test's device seconds inside the run (rangetest)

    @property
    def score(self) -> float:
        """Selection score: the final val accuracy; a diverged or failed run is the worst."""
        return selection_score(self.status, self.val_acc)


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
                         error=(rec.get("outcome") or {}).get("error"),
                         switch_lr=(rec.get("autowu") or {}).get("switch_lr"),
                         tuning_seconds=((rec.get("peer") or {}).get("range_test") or {}).get("device_seconds"))
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

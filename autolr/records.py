"""A run's record: what train.py writes to ``<out>/<run_id>.json`` and every reader reads.

The fields are REPRODUCTION.md's "Run records". train.py fills a ``Record`` as the run goes and
writes it atomically at the end (or when it crashes: a failed run is a result too). The sweep,
the results and the plots read records with ``read_record``, which accepts every record this
project has committed (schema 1, fields added since then defaulted) and refuses anything else.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr.files import atomic_write_json

__all__ = ["SCHEMA", "STATUSES", "Record", "RecordError", "finite_or_none", "read_record", "write_record",
           "record_path", "git_info", "compact_lr_trace"]

SCHEMA = 1
REPO = Path(__file__).resolve().parents[1]
#: a run's outcome; "finished" and "diverged" are results, "failed" (a crash) is tried again
STATUSES = ("finished", "diverged", "failed")


class RecordError(Exception):
    """A file that is not a readable run record."""


@dataclass
class Record:
    """One run. ``config`` is the resolved config (autolr.config), ``run_id`` its hash."""

    schema: int = SCHEMA
    run_id: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] = field(default_factory=dict)  # commit, dirty
    env: dict[str, Any] = field(default_factory=dict)  # versions, device, world size, threads, micro-batches
    data: dict[str, Any] = field(default_factory=dict)  # autolr.data.dataset_info
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    schedule: dict[str, Any] = field(default_factory=dict)  # the scheduler's describe()
    outcome: dict[str, Any] | None = None  # status (STATUSES), error
    epochs: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    final: dict[str, Any] | None = None  # val/test loss and accuracy of the final weights
    lr_trace: dict[str, Any] | None = None  # train.compact_lr_trace
    autowu: dict[str, Any] | None = None  # AutoWU.summary() (sched auto only)
    # a peer's (schedulefree, prodigy, rangetest): peak_lr, the LR the method ended with, and what it
    # found or spent (Prodigy's estimate d, the range test's curve and cost); train.peer_summary
    peer: dict[str, Any] | None = None
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str | None:
        return (self.outcome or {}).get("status")

    @property
    def is_result(self) -> bool:
        """Finished or diverged: a result, which a rerun must not replace unless asked."""
        return self.status in ("finished", "diverged")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Record:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in obj.items() if k in names})



def finite_float(x: Any) -> float | None:
    """A record field as a finite float, or None (null, a bool, text, NaN or inf)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None

def git_info() -> dict[str, Any]:
    """The commit that computed a run, and whether the tree had uncommitted changes."""
    # a copy of the tree whose .git is missing or stale (a lent GPU machine, a container) names its commit
    if os.environ.get("AUTOLR_GIT_COMMIT"):
        return {"commit": os.environ["AUTOLR_GIT_COMMIT"], "dirty": os.environ.get("AUTOLR_GIT_DIRTY") == "1"}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        # results/ and plots/ are what runs write (a sweep's stages.json changes while it runs), not code
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)plots"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit or None, "dirty": dirty if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def compact_lr_trace(lrs: list[float], phases: list[str], max_len: int = 20000) -> dict[str, Any]:
    """Every step's LR, or every k-th step plus each step where the phase changes."""
    k = max(1, math.ceil(len(lrs) / max_len))
    steps = [s for s in range(len(lrs)) if s % k == 0 or s == len(lrs) - 1 or (s and phases[s] != phases[s - 1])]
    return {"every": k, "step": steps, "lr": [lrs[s] for s in steps], "phase_change_steps":
            [s for s in range(1, len(phases)) if phases[s] != phases[s - 1]]}


def finite_or_none(obj: Any) -> Any:
    """JSON has no NaN or inf: non-finite numbers become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def record_path(out: str | os.PathLike[str], run_id: str) -> Path:
    return Path(out) / f"{run_id}.json"


def write_record(path: str | os.PathLike[str], record: Record) -> None:
    atomic_write_json(path, finite_or_none(record.to_dict()))


def read_record(path: str | os.PathLike[str]) -> Record:
    """The record at ``path``; RecordError if it is unreadable, not a record, or named for another run."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RecordError(f"{path}: not a readable record ({type(err).__name__}: {str(err)[:80]})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("run_id"), str) or not isinstance(obj.get("config"), dict):
        raise RecordError(f"{path}: not a run record (no run_id or config)")
    if obj["run_id"] != path.stem:
        raise RecordError(f"{path}: holds run {obj['run_id']}, not {path.stem}")
    if obj.get("schema", SCHEMA) > SCHEMA:
        raise RecordError(f"{path}: schema {obj['schema']} is newer than this code's {SCHEMA}")
    status = (obj.get("outcome") or {}).get("status")
    if status is not None and status not in STATUSES:
        raise RecordError(f"{path}: unknown status {status!r}")
    return Record.from_dict(obj)

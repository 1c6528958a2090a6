"""Run ids survive refactors: every committed record's run_id is recomputed from its config, and
from train.py's flags (autolr.config) resolved today; flags of every scheduler resolve to the run_ids the
pre-registry train.py gave them.

A record is found again by a sweep (and never rerun) only while train.py resolves the same flags
to the same config; a changed key or default would orphan every committed result.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autolr import config

REPO = Path(__file__).resolve().parents[1]
OPERATIONAL = config.operational_keys()

RECORDS = sorted(REPO.glob("results/*/runs/*.json"))


def _argv_of(cfg: dict[str, Any]) -> list[str]:
    """The flags that ask train.py for this config again."""
    dests = {a.dest: a for a in config.build_parser()._actions}
    argv: list[str] = []
    for key, value in cfg.items():
        action = dests.get(key)
        if action is None or key in OPERATIONAL or value is None:
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:  # store_true
            argv += [flag] if value else []
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def test_there_are_committed_records():
    assert len(RECORDS) >= 50


#: AutoWU+ development runs made at 0f6b018, before dc317f0 added --div-factor: today's flags ask for
#: the same run plus div_factor, so a sweep would not find these again (a method in development)
BEFORE_DIV_FACTOR = {"4804906a9750", "67c1ed7c44e3", "9bb93bc16083"}


@pytest.mark.parametrize("path", RECORDS, ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_committed_record_keeps_its_run_id(path):
    record = json.loads(path.read_text())
    cfg = record["config"]
    assert config.run_id(cfg) == record["run_id"] == path.stem
    # and today's train.py resolves the same flags to the same config
    resolved = config.resolve(config.build_parser().parse_args(_argv_of(cfg))).as_record()
    mine = {k: v for k, v in resolved.items() if k not in OPERATIONAL}
    theirs = {k: v for k, v in cfg.items() if k not in OPERATIONAL}
    if cfg["sched"] == "autoplus":
        # in development: settings added since (div_factor, rollback, accel) resolve to another run
        assert {k: v for k, v in mine.items() if k in theirs} == theirs or path.stem in BEFORE_DIV_FACTOR
        return
    assert mine == theirs
    assert config.run_id(resolved) == record["run_id"]


# run_ids computed by train.py before the scheduler registry, at commit 8131440
BEFORE_THE_REGISTRY = [
    ([], "c8c36a11992a"),
    (["--sched", "auto", "--bs", "4096", "--init-lr", "1e-4", "--decay", "constant_cosine"], "c974bc2b6ae5"),
    (["--sched", "auto", "--max-lr", "2.0", "--max-warmup-fraction", "0.3", "--gp-path", "oracle"], "7651ca7d4a66"),
    (["--sched", "linear", "--lr", "0.01"], "6ba64f6e8a44"),
    (["--sched", "linear", "--lr", "0.01", "--warmup-epochs", "2"], "d5033110da04"),
    (["--sched", "legw", "--lr", "0.01", "--warmup-epochs", "0.625"], "a6631f1582fc"),
    (["--sched", "legw", "--lr", "0.01", "--legw-b0", "512", "--bs", "4096"], "4055c6421fb9"),
    (["--sched", "fixed", "--lr", "0.1", "--data", "cifar10"], "81a75fb50f1d"),
    (["--sched", "cosine", "--lr", "0.1"], "4cb23f1d7a4e"),
    (["--sched", "cosine", "--lr", "0.1", "--warmup-epochs", "0"], "b93f2a3e51f9"),
    (["--sched", "constant", "--lr", "0.03", "--subset", "1000", "--epochs", "3"], "563ed299fe76"),
    # autoplus (in development: its settings grew with div_factor, rollback, accel, max_growth; then the
    # dev rounds' defaults: rollback on, accel 3, max_growth 1.5, lr_factor 0.5), as now
    (["--sched", "autoplus"], "caba53fef4d1"),
    (["--sched", "autoplus", "--div-factor", "0"], "4598659ba605"),
    (["--sched", "autoplus", "--div-factor", "2.0", "--patience", "2"], "84521da980a0"),
]


@pytest.mark.parametrize(("argv", "run_id"), BEFORE_THE_REGISTRY)
def test_flags_keep_their_run_id(argv, run_id):
    assert config.run_id(config.resolve(config.build_parser().parse_args(argv))) == run_id

"""The run definition (autolr/config.py): every committed record keeps its run_id, the parser
generated from RunConfig, roles, and resolve's checks. Fast: nothing trains here."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")

from autolr import config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECORDS = sorted(REPO.glob("results/*/runs/*.json"))
#: sweeps whose every run is committed
COMPLETE_SWEEPS = ("demo", "fashion")


def _argv_of(stored: dict[str, Any]) -> list[str]:
    """The flags that rebuild a stored config: every flag whose value is not the parser's default."""
    defaults = vars(config.build_parser().parse_args([]))
    argv: list[str] = []
    for key, value in stored.items():
        if key not in defaults or value == defaults[key]:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


def test_there_are_committed_records() -> None:
    assert len(RECORDS) >= 79, "results/*/runs/*.json: the records this file guards"


@pytest.mark.parametrize("path", RECORDS, ids=[f"{p.parent.parent.name}/{p.stem}" for p in RECORDS])
def test_committed_record_keeps_its_run_id(path: Path) -> None:
    rec = json.loads(path.read_text())
    stored = rec["config"]
    assert config.run_id(stored) == rec["run_id"] == path.stem
    if stored["sched"] == "autoplus":
        # AutoWU+ is in development: settings added to it since (the divergence guard, the rollback,
        # the accelerated ramp) make its earlier flags resolve to another run; the stored config
        # still hashes to the record's run_id (above)
        pytest.skip("an autoplus development record: the method's settings have grown since")
    # the flags of the run, resolved again, give the very same config: keys, values and types
    resolved = config.resolve(config.build_parser().parse_args(_argv_of(stored)))
    again = resolved.as_record()
    # flags added since: operational, absent from older records, present in newer ones
    new_operational = {"tensorboard", "overwrite"}
    assert {k: v for k, v in again.items() if k not in new_operational} == \
        {k: v for k, v in stored.items() if k not in new_operational}
    assert all(stored[k] == again[k] for k in new_operational & set(stored))
    assert [type(again[k]) for k in stored] == [type(v) for v in stored.values()]
    assert list(again)[: len(stored)] == list(stored) or set(again) - new_operational == set(stored)
    assert config.run_id(resolved) == rec["run_id"]


@pytest.mark.parametrize("name", sorted({p.parent.parent.name for p in RECORDS}))
def test_the_sweep_finds_every_committed_record(name: str) -> None:
    """The argv the sweep builds for each run resolves to the committed run_ids: a sweep started
    again on the committed results runs nothing."""
    from autolr import sweep as sw

    spec_path = REPO / "sweeps" / f"{name}.yaml"
    if not spec_path.exists():
        pytest.skip(f"no sweep file for results/{name}")
    sweep = sw.Sweep(sw.load_spec(spec_path), results_root=REPO / "results")
    results = sw.load_results(sweep.runs_dir)
    plan = sweep.plan(results)
    planned = {r.run_id for r in plan.tuning_runs} | {r.run_id for r in plan.final_runs}
    committed = {p.stem for p in (REPO / "results" / name / "runs").glob("*.json")}
    assert committed <= planned  # every committed record is one of the sweep's runs, found by its id
    if name in COMPLETE_SWEEPS:
        # started again, it runs nothing of the methods it had when it completed (entries added to the
        # sweep file since, such as the peers, are additive: their runs are new)
        had = set(json.loads((REPO / "results" / name / "stages.json").read_text())["spec"]["schedulers"])
        planned_then = {r.run_id for r in [*plan.tuning_runs, *plan.final_runs] if r.method in had}
        assert planned_then == committed and not plan.waiting_finals and plan.tuning_done


def test_roles() -> None:
    # the lists train.py and the sweep kept in step by hand before they were roles
    assert config.operational_keys() == {"out", "resume", "loader_workers", "ckpt_dir", "progress", "device",
                                         "compile", "keep_ckpt", "data_root", "tensorboard", "overwrite"}
    assert config.sweep_keys() == {"data", "model", "opt", "bs", "seed", "sched", "lr", "epochs", "subset",
                                   "legw_b0", "out", "ckpt_dir", "resume", "progress", "warmup_epochs", "init_lr",
                                   "max_lr", "max_warmup_fraction", "decay", "gp_path", "warmup",
                                   # every method's own options go under its scheduler's entry (registry)
                                   "ramp_fraction", "candidate", "lr_factor", "test_fraction", "patience",
                                   "div_factor", "rollback", "accel", "max_growth"}
    assert set(config.options_of("auto")) == {"init_lr", "max_lr", "max_warmup_fraction", "decay", "gp_path", "warmup"}
    assert set(config.options_of("autoplus")) == {"init_lr", "max_lr", "decay", "gp_path", "ramp_fraction",
                                                  "candidate", "lr_factor", "test_fraction", "patience", "div_factor",
                                                  "rollback", "accel", "max_growth"}
    for sched in ("linear", "legw", "fixed", "cosine", "constant"):
        assert set(config.options_of(sched)) == {"lr", "warmup_epochs", "legw_b0"}


def test_scheduler_defaults_are_the_schedulers() -> None:
    from autolr.autoplus import AutoWUPlus
    from autolr.autowu import AutoWU

    fields = {f.name: f for f in dataclasses.fields(config.RunConfig)}
    for sched, cls in (("auto", AutoWU), ("autoplus", AutoWUPlus)):
        params = {**inspect.signature(AutoWU.__init__).parameters, **inspect.signature(cls.__init__).parameters}
        for name in config.options_of(sched):
            f = fields[name]
            if f.metadata["sparse"]:  # unset unless given: the scheduler's own default applies
                assert f.default is None and f"(default: {params[name].default})" in f.metadata["help"], name
                continue
            default = f.default if f.metadata["resolved"] is None else f.metadata["resolved"]
            assert default == params[name].default, (sched, name)


def test_help_shows_the_real_defaults() -> None:
    text = config.build_parser().format_help()
    flat = re.sub(r"-\s+", "-", " ".join(text.split()))  # argparse wraps lines at hyphens
    assert "default: None" not in flat
    assert "(default: 1e-05)" in flat and "(default: results/runs)" in flat
    assert "fashion-mnist: cnn_fashion" in flat and "imagenet: resnet50" in flat
    assert "cifar10/cifar100: 200" in flat  # --epochs
    assert "fashion-mnist/fashion-mnist-32/cifar10/cifar100: 256; imagenet: 1024" in flat  # --bs: B0


def test_argparse_error_is_one_line() -> None:
    out = subprocess.run([sys.executable, str(REPO / "train.py"), "--bs", "x"], cwd=REPO, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: argument --bs: invalid int value"), out.stderr


@pytest.mark.parametrize("abbrev", [["--epoch", "3"], ["--warmup-epoch", "2"]])
def test_no_abbreviations(abbrev: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    # a sweep's train_args key "epoch" must not silently become --epochs
    with pytest.raises(SystemExit):
        config.build_parser().parse_args(abbrev)
    assert "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("flags, match", [
    (["--sched", "fixed", "--lr", "0.1", "--warmup-epochs", "1e308"], "leaves no decay"),
    (["--sched", "linear", "--lr", "0.1", "--warmup-epochs", "inf"], "--warmup-epochs must be finite"),
    (["--sched", "legw", "--lr", "0.1", "--warmup-epochs", "nan"], "--warmup-epochs must be finite"),
    (["--init-lr", "1e-320", "--max-lr", "1e300"], "overflows"),
    (["--init-lr", "5e-324"], "overflows"),
    (["--max-lr", "inf"], "--max-lr must be finite"),
    (["--init-lr", "0.1", "--max-lr", "0.01"], "must exceed --init-lr"),
])
def test_resolve_refuses(flags: list[str], match: str) -> None:
    with pytest.raises(config.UsageError, match=match):
        config.resolve(config.build_parser().parse_args(flags))


def test_resolved_config_by_family() -> None:
    auto = config.resolve(config.build_parser().parse_args([])).as_record()
    assert "lr" not in auto and auto["init_lr"] == 1e-5 and auto["bs"] == 256 and auto["model"] == "cnn_fashion"
    legw = config.resolve(config.build_parser().parse_args(["--sched", "legw", "--lr", "0.01"]))
    assert legw.as_record()["legw_b0"] == 256 and legw.as_record()["warmup_epochs"] == 5.0
    assert "init_lr" not in legw.as_record()
    assert legw.scheduler_options() == {"lr": 0.01, "warmup_epochs": 5.0, "legw_b0": 256}
    assert config.resolve(config.build_parser().parse_args([])).scheduler_options() == {
        "init_lr": 1e-5, "max_lr": 1.0, "max_warmup_fraction": 0.5, "decay": "cosine", "gp_path": "fast", "seed": 0}


def test_scheduler_settings_agree_with_the_registry() -> None:
    """config.py's scheduler settings are read from the registry's options (autolr/registry.py,
    ``scheduler_setting``): they agree, flag for flag, in the methods that take them, their defaults
    and their choices, and every option that is a flag has its field."""
    import dataclasses

    from autolr.registry import SCHEDULERS, flag_options

    fields = {f.name: f for f in dataclasses.fields(config.RunConfig)}
    baseline_keys = {"lr", "warmup_epochs", "legw_b0"}
    assert config.scheduler_keys() == {o.name for o, _ in flag_options()} | baseline_keys
    for name, m in SCHEDULERS.items():
        own = set(m.flags) | (baseline_keys if m.lr is not None else set())
        assert set(config.options_of(name)) == own, name
        assert (name in config.NO_LR) == (m.lr is None), name
        assert (name in config.AUTOWU_FAMILY) == m.autowu_family, name
        assert (name in config.OWN_OPTIMIZER) == m.replaces_optimizer, name
    for o, methods in flag_options():
        f = fields[o.name]
        assert f.metadata["sweep"], o.name  # a sweep sets it under its scheduler's entry, not train_args
        for m in methods:
            if f.metadata["sparse"]:
                continue  # checked against the scheduler in test_scheduler_defaults_are_the_schedulers
            default = f.metadata["resolved"] if f.metadata["resolved"] is not None else f.default
            assert default == SCHEDULERS[m].option(o.name).default, (o.name, m)
        assert tuple(f.metadata["choices"] or ()) == tuple(o.choices or ()), o.name
    assert config.build_parser()._option_string_actions["--sched"].choices == list(SCHEDULERS)


def test_a_sparse_setting_keeps_earlier_run_ids_and_names_itself_when_given() -> None:
    """AutoWU's warmup path became a flag after its records: unset, the config and run_id are the
    ones before it; given, the record names it and the run is another run."""
    plain = config.resolve(config.build_parser().parse_args(["--sched", "auto"]))
    linear = config.resolve(config.build_parser().parse_args(["--sched", "auto", "--warmup", "linear"]))
    assert "warmup" not in plain.as_record() and "warmup" not in plain.scheduler_options()
    assert linear.as_record()["warmup"] == "linear" and linear.scheduler_options()["warmup"] == "linear"
    assert config.run_id(plain) == "c8c36a11992a" != config.run_id(linear)  # as before the flag (test_run_ids)
    with pytest.raises(config.UsageError, match="--warmup is for --sched auto only"):
        config.resolve(config.build_parser().parse_args(["--sched", "autoplus", "--warmup", "linear"]))

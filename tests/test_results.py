"""Tests of the sweep table (autolr.results) and figures (autolr.plots) on hand-written records.

Every record here is written by the test in the shape train.py writes (only the fields the
collation reads), so the expected numbers are known exactly: accuracies 0.80 / 0.82 / 0.84 have
mean 82.00 and sample std 2.00, and so on.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autolr import plots, results

# ---------------------------------------------------------------------------------------------
# Fixture records
# ---------------------------------------------------------------------------------------------
SPE = 10  # steps per epoch of every fixture run
EPOCHS = 8


def lr_trace_of(method: str, peak: float, switch_step: int | None = None) -> dict[str, Any]:
    total = SPE * EPOCHS
    lrs = []
    for s in range(total):
        if method == "auto":
            sw = switch_step or total // 2
            lrs.append(1e-5 * (1e5 ** (s / (total // 2))) if s < sw else
                       peak * 0.5 * (1 + math.cos(math.pi * (s - sw) / (total - sw))))
        else:
            w = 2 * SPE
            lrs.append(peak * (s + 1) / w if s < w else peak * 0.5 * (1 + math.cos(math.pi * (s - w) / (total - w))))
    return {"every": 1, "step": list(range(total)), "lr": lrs, "phase_change_steps": []}


def autowu_of(switch_step: int, switch_lr: float, kind: str) -> dict[str, Any]:
    n = switch_step
    losses = [2.3 - 1.2 * math.sin(math.pi * 0.8 * i / n) + 0.02 * ((i * 7) % 5 - 2) for i in range(n)]
    grid_x = np.linspace(0, 1, 50)
    tests = []
    for epoch in range(1, n // SPE + 1):
        tests.append({
            "epoch": epoch, "step": epoch * SPE, "n_points": epoch * SPE, "n_finite": epoch * SPE,
            "probs": [0.97] * 5, "argmin_x": [0.62] * 5, "positive": epoch >= 2, "switched": False,
            "candidate_lr": switch_lr, "lr_now": switch_lr * 3, "hyper": {"mean": 1.5, "noise": 1e-3},
            "grid_x": grid_x.tolist(), "grid_mean": (2.3 - 1.2 * np.sin(np.pi * 0.8 * grid_x)).tolist(),
            "grid_std": (0.05 + 0.05 * grid_x).tolist(), "skipped": None,
        })
    tests[-1]["switched"] = kind == "test"
    return {"switch_step": switch_step, "switch_lr": switch_lr, "switch_kind": kind,
            "switch_epoch": switch_step / SPE, "tests": tests, "warmup_losses": losses, "test_seconds": 0.5}


def record(run_id: str, method: str, bs: int, seed: int = 0, lr: float | None = 1e-3, *, acc: float = 0.8,
           loss: float | None = 0.5, val: float | None = None, status: str = "finished", wall: float = 100.0,
           world: int = 1, model: str = "cnn_fashion", opt: str = "adamp", data: str = "fashion-mnist",
           switch: tuple[int, float, str] = (30, 0.05, "test")) -> dict[str, Any]:
    cfg: dict[str, Any] = {"data": data, "model": model, "opt": opt, "bs": bs, "seed": seed, "sched": method,
                           "epochs": EPOCHS}
    aw = None
    if method == "auto":
        aw = autowu_of(*switch)
        peak = switch[1]
    else:
        cfg["lr"] = lr
        peak = lr * bs / 256 if method == "linear" else lr
    return {
        "schema": 1, "run_id": run_id, "config": cfg, "git": {"commit": "abc", "dirty": False},
        "env": {"device": "cpu", "device_name": "test cpu", "world_size": world, "micro_bs": 256},
        "steps_per_epoch": SPE, "total_steps": SPE * EPOCHS,
        "schedule": {"name": method} if method == "auto" else {"name": method, "peak_lr": peak},
        "outcome": {"status": status, "error": "RuntimeError: boom" if status == "failed" else None},
        "epochs": [{"epoch": e + 1, "wall_seconds": wall / EPOCHS} for e in range(EPOCHS)],
        "final": None if status == "failed" else {
            "val_acc": acc if val is None else val, "val_loss": loss, "test_acc": acc, "test_loss": loss,
            "epochs_done": EPOCHS},
        "lr_trace": lr_trace_of(method, peak, switch[0] if method == "auto" else None),
        "autowu": aw,
        "timing": {} if status == "failed" else {"wall_seconds": wall, "autowu_test_seconds": 0.5 if aw else 0.0,
                                                  "autowu_test_share": 0.5 / wall if aw else None},
    }


def write_sweep(root: Path, name: str, records: list[dict[str, Any]], stages: dict[str, Any] | None) -> Path:
    d = root / name
    (d / "runs").mkdir(parents=True)
    for r in records:
        (d / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    if stages is not None:
        (d / "stages.json").write_text(json.dumps(stages))
    return d


def final(r: dict[str, Any], status: str = "finished") -> dict[str, Any]:
    c = r["config"]
    return {"method": c["sched"], "model": c["model"], "opt": c["opt"], "bs": c["bs"], "seed": c["seed"],
            "lr": c.get("lr"), "run_id": r["run_id"], "status": status}


def stage(method: str, bs: int, grid: list[dict[str, Any]], chosen: float, model: str = "cnn_fashion",
          opt: str = "adamp", tuned_at_bs: int | None = None) -> dict[str, Any]:
    """One ``selection`` entry of stages.json as autolr.sweep writes it."""
    return {"method": method, "model": model, "opt": opt, "bs": bs, "tuned": tuned_at_bs in (None, bs),
            "tuned_at_bs": tuned_at_bs or bs, "grid": [g["config"]["lr"] for g in grid],
            "trials": [{"lr": g["config"]["lr"], "run_id": g["run_id"], "val_acc": g["final"]["val_acc"],
                        "status": "finished"} for g in grid],
            "extensions": [], "chosen_lr": chosen, "reason": "best val acc", "capped": False, "messages": []}


def stages_doc(name: str, selection: list[dict[str, Any]], finals: list[dict[str, Any]], complete: bool,
               spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema": 1, "name": name, "complete": complete, "stages": {"tune": {}, "final": {}},
            "selection": selection, "final_runs": finals, "tuning_charge": [], **({"spec": spec} if spec else {})}


@pytest.fixture
def fashion(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A complete small sweep: auto / linear (tuned at B0 = 256) / fixed (tuned at every batch)."""
    R: dict[str, dict[str, Any]] = {}
    finals: list[dict[str, Any]] = []

    def add(r: dict[str, Any], is_final: bool = True) -> dict[str, Any]:
        R[r["run_id"]] = r
        if is_final:
            finals.append(final(r))
        return r

    # AutoWU: 3 seeds at 256 (acc 80/82/84, NLL 0.5/0.6/0.7), one seed elsewhere, one forced switch
    for s, (a, nll) in enumerate([(0.80, 0.5), (0.82, 0.6), (0.84, 0.7)]):
        add(record(f"auto256s{s}", "auto", 256, s, None, acc=a, loss=nll, switch=(30, 0.05, "test")))
    for s in range(3):
        add(record(f"auto1024s{s}", "auto", 1024, s, None, acc=0.78, loss=0.6, switch=(30, 0.09, "test")))
        add(record(f"auto4096s{s}", "auto", 4096, s, None, acc=0.70, loss=0.8,
                   switch=(40, 0.2, "forced" if s == 0 else "test")))
    # linear: 3 tuning runs at B0 = 256 (walls 10 / 20 / 30 s; the last on 2 devices), lr 3e-3 wins and
    # its seed-0 run is reused as a final
    t1 = add(record("lin_t1", "linear", 256, 0, 1e-3, acc=0.70, wall=10.0), is_final=False)
    t2 = add(record("lin_t2", "linear", 256, 0, 3e-3, acc=0.75, val=0.90, wall=20.0))
    t3 = add(record("lin_t3", "linear", 256, 0, 1e-2, acc=0.72, wall=30.0, world=2), is_final=False)
    for s in (1, 2):
        add(record(f"lin256s{s}", "linear", 256, s, 3e-3, acc=0.75, wall=20.0))
    for bs in (1024, 4096):
        for s in range(3):
            add(record(f"lin{bs}s{s}", "linear", bs, s, 3e-3, acc=0.74, wall=5.0))
    # fixed: tuned at each batch with 2 runs; at 4096 seed 2 diverged (acc 70 / 74 finished)
    stages_list = [stage("linear", bs, [t1, t2, t3], 3e-3, tuned_at_bs=256) for bs in (256, 1024, 4096)]
    stages_list += [stage("auto", bs, [], None) for bs in (256, 1024, 4096)]
    for bs in (256, 1024, 4096):
        a = add(record(f"fix{bs}a", "fixed", bs, 0, 1e-3, acc=0.70, wall=7.0), is_final=False)
        b = add(record(f"fix{bs}b", "fixed", bs, 0, 3e-3, acc=0.70, val=0.95, wall=8.0))
        stages_list.append(stage("fixed", bs, [a, b], 3e-3))
        for s in (1, 2):
            if bs == 4096 and s == 2:
                add(record(f"fix{bs}s{s}", "fixed", bs, s, 3e-3, acc=0.10, loss=None, status="diverged"))
            else:
                add(record(f"fix{bs}s{s}", "fixed", bs, s, 3e-3, acc=0.74 if bs == 4096 else 0.76))
    spec = {"models": ["cnn_fashion"], "opts": ["adamp"], "batch_sizes": [256, 1024, 4096], "seeds": [0, 1, 2],
            "schedulers": {"auto": {}, "linear": {"lr": [1e-3, 3e-3, 1e-2]}, "fixed": {"lr": [1e-3, 3e-3]}}}
    stages = stages_doc("fashion", stages_list, finals, True, spec)
    return write_sweep(tmp_path / "results", "fashion", list(R.values()), stages), R


def row(df: Any, method: str, bs: int, model: str = "cnn_fashion") -> Any:
    sel = df[(df["method"] == method) & (df["bs"] == bs) & (df["model"] == model)]
    assert len(sel) == 1
    return sel.iloc[0]


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def test_load_records_flattens(fashion: tuple[Path, dict]) -> None:
    d, R = fashion
    df = results.load_records(d)
    assert len(df) == len(R)
    a = df[df["run_id"] == "auto256s0"].iloc[0]
    assert a["method"] == "auto" and a["bs"] == 256 and a["lr"] == pytest.approx(0.05)
    assert a["switch_kind"] == "test" and a["switch_epoch"] == pytest.approx(3.0)
    assert a["autowu_test_share"] == pytest.approx(0.005) and bool(a["is_final"]) and not bool(a["is_tuning"])
    t3 = df[df["run_id"] == "lin_t3"].iloc[0]
    assert t3["device_seconds"] == pytest.approx(60.0)  # 30 s on 2 devices
    assert bool(t3["is_tuning"]) and not bool(t3["is_final"])
    t2 = df[df["run_id"] == "lin_t2"].iloc[0]
    assert bool(t2["is_tuning"]) and bool(t2["is_final"])


def test_mean_std_exact(fashion: tuple[Path, dict]) -> None:
    d, _ = fashion
    df, md = results.build_table(d)
    r = row(df, "auto", 256)
    assert r["test_acc_pct_mean"] == pytest.approx(82.0)
    assert r["test_acc_pct_std"] == pytest.approx(2.0)  # sample std of 80, 82, 84
    assert r["test_nll_mean"] == pytest.approx(0.6)
    assert r["test_nll_std"] == pytest.approx(0.1)
    assert r["n_finished"] == 3 and r["n_expected"] == 3
    assert "| cnn_fashion | adamp | 256 | 82.00 ± 2.00 |" in md
    assert "0.6000 ± 0.1000" in md
    assert "PARTIAL" not in md and not bool(r["partial"])
    assert (d / "TABLE.md").read_text() == md
    assert (d / "TABLE.csv").is_file()
    assert not list(d.glob(".*tmp"))  # the atomic writes left nothing behind


def test_diverged_seed_counted_not_averaged(fashion: tuple[Path, dict]) -> None:
    d, _ = fashion
    df, md = results.build_table(d, write=False)
    r = row(df, "fixed", 4096)
    assert r["n_diverged"] == 1 and r["n_finished"] == 2 and r["n_expected"] == 3
    # the finished seeds 0 and 1 (70 %, 74 %); the diverged seed's 10 % is not averaged in
    assert r["test_acc_pct_mean"] == pytest.approx(72.0)
    assert r["test_acc_pct_std"] == pytest.approx(math.sqrt(8))
    line = next(ln for ln in md.splitlines() if ln.startswith("| cnn_fashion | adamp | 4K |"))
    assert "72.00 ± 2.83 (1/3 diverged)" in line


def test_autowu_columns(fashion: tuple[Path, dict]) -> None:
    d, _ = fashion
    df, md = results.build_table(d, write=False)
    r = row(df, "auto", 4096)
    assert (r["switch_test"], r["switch_forced"]) == (2, 1)
    assert r["switch_epoch_mean"] == pytest.approx(4.0) and r["switch_lr_mean"] == pytest.approx(0.2)
    assert "2 test / 1 forced" in md
    assert "0.50%" in md  # 0.5 s of tests in 100 s of wall time


def test_tuning_cost_charged_once(fashion: tuple[Path, dict]) -> None:
    d, _ = fashion
    df, md = results.build_table(d, write=False)
    b0 = row(df, "linear", 256)
    assert b0["tuning_runs"] == 3
    assert b0["tuning_device_s"] == pytest.approx(10 + 20 + 60)
    # the winning tuning run is also final seed 0: paid once in the cell's total
    assert b0["total_device_s"] == pytest.approx(10 + 20 + 60 + 2 * 20)
    assert row(df, "linear", 1024)["tuning_runs"] == 0
    assert row(df, "auto", 256)["tuning_runs"] == 0
    fx = df[df["method"] == "fixed"]
    assert fx["tuning_runs"].sum() == 6 and fx["tuning_device_s"].sum() == pytest.approx(3 * (7 + 8))
    total = next(ln for ln in md.splitlines() if ln.startswith("| **total cnn_fashion**"))
    assert "tune 3 (90 s) · all 2.7 min" in total  # linear: 90 device-seconds of tuning, charged once
    assert "tune 6 (45 s)" in total  # fixed: 2 runs at each of 3 batch sizes
    assert md.count("- linear (Goyal), cnn_fashion") == 1  # the B0 grid is listed once, not per batch


def test_partial_when_a_final_is_missing(tmp_path: Path) -> None:
    recs = [record("a0", "auto", 256, 0, None, acc=0.8), record("a1", "auto", 256, 1, None, acc=0.9)]
    finals = [final(r) for r in recs] + [final(recs[0]) | {"seed": 2, "run_id": "notyetrun", "status": "missing"}]
    d = write_sweep(tmp_path, "demo", recs, stages_doc("demo", [], finals, False))
    df, md = results.build_table(d)
    assert "PARTIAL — 2/3 final runs done" in md
    r = row(df, "auto", 256)
    assert r["n_missing"] == 1 and r["n_done"] == 2 and bool(r["partial"])
    assert "85.00 ± 7.07 (1/3 missing)" in md


def test_partial_when_a_tuning_stage_has_no_finals_yet(tmp_path: Path) -> None:
    # the runner lists finals waiting for their tuning with run_id None
    a = [record(f"a{s}", "auto", 256, s, None) for s in range(2)]
    t = record("f_t", "fixed", 1024, 0, 1e-3)
    waiting = [{"method": "fixed", "model": "cnn_fashion", "opt": "adamp", "bs": 1024, "seed": s, "lr": None,
                "run_id": None, "status": "missing"} for s in range(2)]
    pending = {**stage("fixed", 4096, [], None), "trials": [{"lr": 1e-3, "run_id": "pending1", "status": "missing"}]}
    d = write_sweep(tmp_path, "x", a + [t], stages_doc("x", [stage("fixed", 1024, [t], None), pending],
                                                       [final(r) for r in a] + waiting, False))
    df, md = results.build_table(d, write=False)
    assert row(df, "fixed", 1024)["n_missing"] == 2
    assert row(df, "fixed", 4096)["n_missing"] == 2  # no finals listed yet: the seeds other cells have
    assert "PARTIAL — 2/6 final runs done" in md and "1/2 tuning runs done" in md
    assert "not run (2 missing)" in md


def test_stages_as_a_list_with_grid_dicts(tmp_path: Path) -> None:
    # the shape the brief first described: "sweep", "stages" as a list whose "grid" holds the trials
    t1, t2 = record("t1", "fixed", 256, 0, 1e-3, acc=0.6, wall=5.0), record("t2", "fixed", 256, 0, 3e-3, acc=0.7)
    entry = {"method": "fixed", "model": "cnn_fashion", "opt": "adamp", "bs": 256, "chosen_lr": 3e-3,
             "reason": "best", "extensions": [],
             "grid": [{"lr": 1e-3, "run_id": "t1", "val_acc": 0.6, "status": "finished"},
                      {"lr": 3e-3, "run_id": "t2", "val_acc": 0.7, "status": "finished"}]}
    d = write_sweep(tmp_path, "legacy", [t1, t2], {"sweep": "legacy", "complete": True, "stages": [entry],
                                                    "final_runs": [final(t2)]})
    df, md = results.build_table(d, write=False)
    r = row(df, "fixed", 256)
    assert r["tuning_runs"] == 2 and r["tuning_device_s"] == pytest.approx(105.0)
    assert r["test_acc_pct_mean"] == pytest.approx(70.0) and "PARTIAL" not in md
    assert "val acc % by lr [0.001: 60.00, 0.003: 70.00] → lr 0.003" in md


def test_missing_stages_json(tmp_path: Path) -> None:
    recs = [record("a0", "auto", 256, 0, None, acc=0.8), record("a1", "auto", 256, 1, None, acc=0.84),
            # two LRs at one cell: the val-best one is reported, the other counted as tuning
            record("l1", "linear", 256, 0, 1e-3, acc=0.6, val=0.6), record("l2", "linear", 256, 0, 3e-3, acc=0.7,
                                                                            val=0.7)]
    d = write_sweep(tmp_path, "nostages", recs, None)
    df, md = results.build_table(d)
    assert "PARTIAL" in md and "no stages.json" in md
    assert row(df, "auto", 256)["test_acc_pct_mean"] == pytest.approx(82.0)
    lin = row(df, "linear", 256)
    assert lin["test_acc_pct_mean"] == pytest.approx(70.0) and lin["lr"] == pytest.approx(3e-3)
    assert lin["tuning_runs"] == 1
    assert results.load_records(d)["is_final"].isna().all()


def test_failed_and_empty(tmp_path: Path) -> None:
    recs = [record("a0", "auto", 256, 0, None), record("a1", "auto", 256, 1, None, status="failed")]
    d = write_sweep(tmp_path, "f", recs, stages_doc("f", [], [final(r) for r in recs], True))
    df, md = results.build_table(d, write=False)
    assert row(df, "auto", 256)["n_failed"] == 1 and "(1/2 failed)" in md
    empty = tmp_path / "empty"
    empty.mkdir()
    df, md = results.build_table(empty)
    assert len(df) == 0 and "No runs yet" in md


def test_paper_columns_only_for_imagenet(tmp_path: Path, fashion: tuple[Path, dict]) -> None:
    recs = [record(f"r{bs}", "auto", bs, 0, None, acc=0.75, model="resnet50", data="imagenet")
            for bs in (1024, 4096, 16384)]
    recs.append(record("l4096", "linear", 4096, 0, 1e-3, acc=0.74, model="resnet50", data="imagenet"))
    d = write_sweep(tmp_path, "imagenet", recs, stages_doc("imagenet", [], [final(r) for r in recs], True))
    df, md = results.build_table(d, write=False)
    assert row(df, "auto", 4096, "resnet50")["paper_autowu_acc_pct"] == pytest.approx(75.70)
    assert row(df, "auto", 16384, "resnet50")["authors_rerun_autowu_acc_pct"] == pytest.approx(74.87)
    assert math.isnan(row(df, "linear", 4096, "resnet50")["paper_autowu_acc_pct"])  # the paper's are AutoWU's
    line = next(ln for ln in md.splitlines() if ln.startswith("| resnet50 | adamp | 4K |"))
    assert line.endswith("| 75.70 | 75.54 |") and "75.00" in line
    assert "paper AutoWU † (not ours)" in md
    fd, fmd = results.build_table(fashion[0], write=False)
    assert "paper" not in " ".join(fd.columns) and "75.70" not in fmd and "not ours" not in fmd


def test_cli(fashion: tuple[Path, dict], capsys: pytest.CaptureFixture[str]) -> None:
    d, _ = fashion
    assert results.main([str(d)]) == 0
    out = capsys.readouterr().out
    assert "Final test accuracy" in out and "TABLE.md" in out
    assert results.main([str(d / "nope")]) == 2


def test_cli_refuses_a_folder_without_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "somewhere" / "runs").mkdir(parents=True)
    capsys.readouterr()
    assert results.main([str(tmp_path / "somewhere")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no run records" in err
    assert not any((tmp_path / "somewhere").glob("TABLE*"))


def test_rebuild_leaves_unchanged_files_alone(fashion: tuple[Path, dict], tmp_path: Path) -> None:
    d, _ = fashion
    results.build_table(d)
    paths = plots.make_figures(d, tmp_path / "plots", log=lambda _msg: None)
    files = [d / "TABLE.md", d / "TABLE.csv", *paths]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    for p in files:
        os.utime(p, ns=(1, 1))  # so that any rewrite shows
    results.build_table(d)
    plots.make_figures(d, tmp_path / "plots", log=lambda _msg: None)
    assert all(p.stat().st_mtime_ns == 1 for p in files), stamps


def test_committed_tables_rebuild_byte_for_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m autolr.results` on the committed sweeps reproduces their TABLE.md and TABLE.csv exactly."""
    import shutil

    repo = Path(__file__).resolve().parent.parent
    names = [n for n in ("fashion", "demo") if (repo / "results" / n / "TABLE.md").is_file()]
    assert names, "no committed results/ tables to compare"
    for name in names:
        shutil.copytree(repo / "results" / name, tmp_path / "results" / name, ignore=shutil.ignore_patterns("TABLE.*"))
    if (repo / "sweeps").is_dir():
        shutil.copytree(repo / "sweeps", tmp_path / "sweeps")
    monkeypatch.chdir(tmp_path)  # the table names the folder it was built from: build it from results/<name>
    assert results.main([f"results/{n}" for n in names]) == 0
    for name in names:
        for f in ("TABLE.md", "TABLE.csv"):
            assert (tmp_path / "results" / name / f).read_bytes() == (repo / "results" / name / f).read_bytes(), \
                f"results/{name}/{f} differs from the committed one"


def test_plots_import_changes_no_global_setting() -> None:
    import subprocess
    import sys

    code = ("import matplotlib; before = dict(matplotlib.rcParams); b = matplotlib.get_backend(); "
            "import autolr.plots; assert dict(matplotlib.rcParams) == before; "
            "assert matplotlib.get_backend() == b; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------
def assert_real_png(path: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[0] > 300 and img.shape[1] > 400, img.shape
    # a blank or single-colour canvas has (almost) no variance
    assert float(np.var(img[..., :3])) > 1e-3


def test_figures(fashion: tuple[Path, dict], tmp_path: Path) -> None:
    d, _ = fashion
    notes: list[str] = []
    paths = plots.make_figures(d, tmp_path / "plots", log=notes.append)
    names = sorted(p.name for p in paths)
    assert names == ["a_accuracy_vs_batch.png", "b_lr_schedules.png", "c_switch_lr_scaling.png",
                     "d_warmup_gp.png", "e_accuracy_vs_compute.png", "f_autowu_budget.png"], notes
    for p in paths:
        assert_real_png(p)
    assert not notes


def test_figures_skip_without_autowu(tmp_path: Path) -> None:
    recs = [record(f"l{bs}", "linear", bs, 0, 1e-3, acc=0.7) for bs in (256, 1024)]
    for r in recs:
        r["lr_trace"] = None
    d = write_sweep(tmp_path / "results", "noauto", recs, None)
    notes: list[str] = []
    paths = plots.make_figures(d, tmp_path / "plots", log=notes.append)
    assert sorted(p.name for p in paths) == ["a_accuracy_vs_batch.png", "e_accuracy_vs_compute.png"]
    assert any(n.startswith("skip (b)") for n in notes)
    assert any(n.startswith("skip (c)") for n in notes) and any(n.startswith("skip (d)") for n in notes)
    assert any(n.startswith("skip (f)") for n in notes)
    for p in paths:
        assert_real_png(p)


def test_plots_cli_all(fashion: tuple[Path, dict], tmp_path: Path) -> None:
    d, _ = fashion
    (d.parent / "nothing_yet").mkdir()
    rc = plots.main(["--all", "--results-root", str(d.parent), "--plots-root", str(tmp_path / "plots")])
    assert rc == 0
    assert len(list((tmp_path / "plots" / "fashion").glob("*.png"))) == 6
    assert not (tmp_path / "plots" / "nothing_yet").exists()


def test_sweep_yaml_sets_expected_grid(tmp_path: Path) -> None:
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mini.yaml").write_text(
        "name: mini\ndata: fashion-mnist\nepochs: 8\nmodels: [cnn_fashion]\nopts: [adamp]\n"
        "batch_sizes: [256, 1024]\nseeds: 2\nschedulers:\n  auto: {}\n  fixed: {lr: [0.001, 0.003]}\n")
    recs = [record("a0", "auto", 256, 0, None, acc=0.8)]
    d = write_sweep(tmp_path / "results", "mini", recs, None)
    df, md = results.build_table(d, write=False)
    assert len(df) == 4 and df["n_expected"].sum() == 8
    assert "PARTIAL — 1/8 final runs done" in md


# ---------------------------------------------------------------------------------------------
# The peers (autolr/peers): their columns, peak LRs, tuning charge, section and figures
# ---------------------------------------------------------------------------------------------
def peer_record(run_id: str, method: str, bs: int, seed: int, *, acc: float, peak: float,
                test_s: float = 4.0, wall: float = 100.0) -> dict[str, Any]:
    """A peer's record as train.py writes it: no lr or (Schedule-Free, Prodigy) opt in its config,
    its ``peer`` block (train.peer_summary)."""
    r = record(run_id, "fixed", bs, seed, peak, acc=acc, wall=wall)
    r["config"] = {k: v for k, v in r["config"].items() if k != "lr"} | {"sched": method}
    if method != "rangetest":
        del r["config"]["opt"]
    r["schedule"] = {"name": method}
    if method == "schedulefree":
        r["peer"] = {"peak_lr": peak, "warmup_steps": 1, "bn_batches": 50}
    elif method == "prodigy":
        r["peer"] = {"d": peak, "d0": 1e-6, "d_max": peak, "peak_lr": peak, "max_step_lr": peak / 2, "steps": 80}
    else:
        r["schedule"] = {"name": method, "peak_lr": peak}
        r["peer"] = {"peak_lr": peak, "range_test": {"steps": 20, "images": 20 * bs, "device_seconds": test_s,
                                                     "wall_seconds": test_s, "stop": "diverged",
                                                     "lr_at_min": 10 * peak, "peak_lr": peak}}
    return r


@pytest.fixture
def with_peers(fashion: tuple[Path, dict], tmp_path: Path) -> Path:
    """The fashion fixture's sweep, and the three peers at every batch size over its three seeds."""
    d, R = fashion
    stages = json.loads((d / "stages.json").read_text())
    peaks = {"schedulefree": lambda bs: 0.0025, "prodigy": lambda bs: 0.004 * bs / 256,
             "rangetest": lambda bs: 0.002 * (bs / 256) ** 0.5}
    for method, peak in peaks.items():
        for bs in (256, 1024, 4096):
            for s in range(3):
                r = peer_record(f"{method}{bs}s{s}", method, bs, s, acc=0.78 + 0.01 * s, peak=peak(bs),
                                test_s=3.0 + s)
                (d / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
                stages["final_runs"].append({"method": method, "model": "cnn_fashion", "opt": "adamp", "bs": bs,
                                             "seed": s, "lr": None, "run_id": r["run_id"], "status": "finished"})
            stages["selection"].append(stage(method, bs, [], None))
        stages["spec"]["schedulers"][method] = {}
    (d / "stages.json").write_text(json.dumps(stages))
    return d


def test_peers_in_the_table(with_peers: Path) -> None:
    df, md = results.build_table(with_peers)
    for method, peak in (("schedulefree", 0.0025), ("prodigy", 0.004), ("rangetest", 0.002)):
        r = row(df, method, 256)
        assert r["n_finished"] == 3 and r["test_acc_pct_mean"] == pytest.approx(79.0)
        assert r["peak_lr_mean"] == pytest.approx(peak)  # the peer block's peak_lr
    # Schedule-Free and Prodigy: no tuning run; the range test: one per cell, at its mean test cost
    assert row(df, "prodigy", 1024)["tuning_runs"] == 0 and row(df, "schedulefree", 1024)["tuning_device_s"] == 0
    rt = row(df, "rangetest", 1024)
    assert (rt["tuning_runs"], rt["tuning_runs_done"], rt["tuning_device_s"], rt["tuning_steps"]) == (1, 1, 4.0, 20)
    assert rt["total_device_s"] == pytest.approx(300.0)  # the three runs, their tests inside
    assert "| Schedule-Free AdamW | Prodigy | LR range test |" in md
    assert "tune 1 (4 s, 20 steps) · all 5.0 min" in md and "tune 0 · all 5.0 min" in md
    assert "Prodigy: its final estimate d" in md and "LR range test: one tuning run per cell" in md
    assert "## Peers" in md and "test: 20 steps (25.0% of the run's), 5120 images, 3 s device time" in md
    assert "largest step size d·lr 0.002" in md
    assert "tuning_steps" in pd_columns(with_peers)


def pd_columns(d: Path) -> list[str]:
    return (d / "TABLE.csv").read_text().splitlines()[0].split(",")


def test_tables_without_peers_keep_their_columns(fashion: tuple[Path, dict]) -> None:
    d, _ = fashion
    results.build_table(d)
    assert "tuning_steps" not in pd_columns(d)
    assert "## Peers" not in (d / "TABLE.md").read_text()


def test_peers_in_the_figures(with_peers: Path, tmp_path: Path) -> None:
    notes: list[str] = []
    paths = plots.make_figures(with_peers, tmp_path / "plots", log=notes.append)
    assert {p.name for p in paths} >= {"a_accuracy_vs_batch.png", "b_lr_schedules.png", "c_switch_lr_scaling.png",
                                      "e_accuracy_vs_compute.png"}
    for p in paths:
        assert_real_png(p)
    # peers alone (no AutoWU run): the discovered-peak figure is still drawn, from the peers
    (with_peers / "runs" / "auto256s0.json").unlink()
    for f in with_peers.glob("runs/auto*.json"):
        f.unlink()
    paths = plots.make_figures(with_peers, tmp_path / "plots2", log=notes.append)
    assert "c_switch_lr_scaling.png" in {p.name for p in paths}


def test_gap_vs_budget_across_sweeps(tmp_path: Path) -> None:
    from autolr.plots import fig_gap_vs_budget, gap_vs_budget

    dirs = []
    for epochs, (fixed_acc, auto_acc) in ((30, (0.88, 0.85)), (60, (0.89, 0.88))):
        recs = [record(f"f{epochs}s{seed}", "fixed", 256, seed, 0.01, acc=fixed_acc) for seed in (0, 1)] + \
               [record(f"a{epochs}s{seed}", "auto", 256, seed, acc=auto_acc) for seed in (0, 1)]
        for r in recs:
            r["config"]["epochs"] = epochs
        dirs.append(write_sweep(tmp_path, f"budget-e{epochs}", recs,
                                stages_doc(f"budget-e{epochs}", [], [final(r) for r in recs], True)))
    gaps = gap_vs_budget(dirs)
    assert sorted(zip(gaps["epochs"], gaps["method"], gaps["gap"].round(6), strict=True)) == \
        [(30, "auto", -3.0), (60, "auto", -1.0)]
    assert fig_gap_vs_budget(dirs, tmp_path / "g.png", lambda msg: None) == [tmp_path / "g.png"]
    assert (tmp_path / "g.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["fashion", "demo", "budget-e30", "budget-e60"])
def test_the_tables_lr_is_the_sweeps_choice(name: str) -> None:
    """One selection rule: every tuned cell of a committed table trains at the LR its sweep chose
    (stages.json), for the tuned-at-every-batch methods and the B0-tuned ones alike."""
    import pandas as pd

    from autolr.collate import cell_stats, collate

    d = Path(__file__).resolve().parents[1] / "results" / name
    col = collate(d)
    stats = pd.DataFrame(cell_stats(col.cells.values()))
    chosen = {(e["method"], e["bs"]): e["chosen_lr"] for e in json.loads((d / "stages.json").read_text())["selection"]
              if e.get("chosen_lr") is not None}
    assert chosen
    for (method, bs), lr in chosen.items():
        row = stats[(stats["method"] == method) & (stats["bs"] == bs)]
        assert len(row) == 1 and row["lr"].iloc[0] == lr, (name, method, bs)

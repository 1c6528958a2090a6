"""The AutoWU diagnosis (autolr.diagnose) on synthetic records whose answers are known exactly.

Every record has 10 steps per epoch, 8 epochs (80 steps) and a warmup capped at step 40 on the
path 1e-5 · 1e5^(s/40), so step 20 ran at 1e-5 · 10^2.5 = 3.162e-3 and step 30 at 1e-5 · 10^3.75.
The warmup loss is the parabola 1 + (s − 20)²/50 plus a ±0.01 zigzag: its smoothed minimum is at
step 20.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autolr import diagnose, plots, results

SPE, EPOCHS, CAP = 10, 8, 40
TOTAL = SPE * EPOCHS


def path_lr(s: int) -> float:
    return 1e-5 * 1e5 ** (min(s, CAP) / CAP)


def loss_at(s: int) -> float:
    return 1.0 + (s - 20) ** 2 / 50 + (0.01 if s % 2 else -0.01)


def gp_test(epoch: int, probs: list[float], candidate: float, switched: bool = False) -> dict[str, Any]:
    return {"epoch": epoch, "step": epoch * SPE, "n_points": epoch * SPE, "probs": probs,
            "positive": min(probs) > 0.95, "argmin_x": [0.6] * len(probs), "candidate_lr": candidate,
            "candidate_lrs": [candidate] * len(probs), "lr_now": path_lr(epoch * SPE - 1), "switched": switched}


def auto_record(run_id: str, bs: int, seed: int, switch_step: int, kind: str, tests: list[dict[str, Any]],
                losses: list[float] | None = None) -> dict[str, Any]:
    switch_lr = tests[-1]["candidate_lr"] if kind == "test" else path_lr(switch_step - 1)
    lrs = [path_lr(s) if s < switch_step else
           switch_lr * 0.5 * (1 + math.cos(math.pi * (s - switch_step) / (TOTAL - switch_step))) for s in range(TOTAL)]
    return {
        "run_id": run_id, "steps_per_epoch": SPE, "total_steps": TOTAL,
        "config": {"sched": "auto", "model": "cnn_fashion", "opt": "adamp", "bs": bs, "seed": seed,
                   "epochs": EPOCHS, "data": "fashion-mnist"},
        "schedule": {"name": "auto"},
        "outcome": {"status": "finished"}, "final": {"test_acc": 0.8, "val_acc": 0.8, "test_loss": 0.5},
        "lr_trace": {"every": 1, "step": list(range(TOTAL)), "lr": lrs},
        "autowu": {"switch_step": switch_step, "switch_lr": switch_lr, "switch_kind": kind,
                   "switch_epoch": switch_step / SPE, "tests": tests,
                   "warmup_losses": [loss_at(s) for s in range(switch_step)] if losses is None else losses,
                   "config": {"name": "auto", "init_lr": 1e-5, "max_lr": 1.0, "max_warmup_steps": CAP,
                              "warmup": "exp", "steps_per_epoch": SPE, "total_steps": TOTAL}},
        "timing": {"wall_seconds": 10.0},
    }


def fired_record() -> dict[str, Any]:
    """Tests at epochs 1-3: negative, then positive twice; the third switches at step 30 to 2.5e-3."""
    tests = [gp_test(1, [0.40, 0.45, 0.50], 1e-4), gp_test(2, [0.99, 0.97, 1.0], 2e-3),
             gp_test(3, [1.0, 1.0, 0.98], 2.5e-3, switched=True)]
    return auto_record("fired", 1024, 0, 30, "test", tests)


def forced_record() -> dict[str, Any]:
    """Positive at epoch 2 (candidate 2e-3), negative at 3: the cap forces the switch at step 40."""
    tests = [gp_test(1, [0.40, 0.45, 0.50], 1e-4), gp_test(2, [0.99, 0.97, 1.0], 2e-3),
             gp_test(3, [0.5, 0.96, 0.99], 3e-3)]
    return auto_record("forced", 4096, 0, CAP, "forced", tests)


def test_smooth_is_a_centred_moving_average() -> None:
    y = [1.0, 2.0, 3.0, 4.0, float("nan"), 6.0]
    s = diagnose.smooth(y, 3)
    # ends shrink to the points there are; NaN is skipped, not propagated
    np.testing.assert_allclose(s, [1.5, 2.0, 3.0, 3.5, 5.0, 6.0])
    np.testing.assert_allclose(diagnose.smooth(y, 2), s)  # an even window is made odd
    assert np.isnan(diagnose.smooth([float("nan")] * 4, 3)).all()
    assert diagnose.smooth([], 5).size == 0


def test_warmup_lr_follows_autowu_path() -> None:
    cfg = {"init_lr": 1e-5, "max_lr": 1.0, "max_warmup_steps": CAP}
    assert diagnose.warmup_lr(20, cfg) == pytest.approx(10 ** -2.5)
    assert diagnose.warmup_lr(60, cfg) == pytest.approx(1.0)  # capped at max_lr
    assert diagnose.warmup_lr(20, {**cfg, "warmup": "linear"}) == pytest.approx(1e-5 + (1 - 1e-5) / 2)


def test_fired_switch_known_minimum_and_shares() -> None:
    d = diagnose.diagnose_run(fired_record(), tuned_peak=5e-3)
    assert d["smooth_window"] == 11 and d["warmup_steps"] == 30
    assert d["min_step"] == 20
    assert d["min_lr"] == pytest.approx(10 ** -2.5)
    assert (d["share_before_min"], d["share_detect"], d["share_decay"]) == pytest.approx((20 / 80, 10 / 80, 50 / 80))
    assert d["switch_lr"] == 2.5e-3 and d["switch_kind"] == "test"
    assert d["switch_over_min_lr"] == pytest.approx(2.5e-3 / 10 ** -2.5)
    assert d["switch_over_tuned"] == pytest.approx(0.5)
    assert d["min_lr_over_tuned"] == pytest.approx(10 ** -2.5 / 5e-3)
    assert d["candidate_lr"] == 2.5e-3 and d["candidate_over_tuned"] == pytest.approx(0.5)
    assert d["forced_candidate_over_used"] is None  # the test fired: nothing was overridden
    assert (d["n_tests"], d["n_positive"], d["last_positive_epoch"]) == (3, 2, 3)
    assert [t["probs"] for t in d["tests"]] == [[0.40, 0.45, 0.50], [0.99, 0.97, 1.0], [1.0, 1.0, 0.98]]
    assert [t["positive"] for t in d["tests"]] == [False, True, True]
    assert [t["candidate_lr"] for t in d["tests"]] == [1e-4, 2e-3, 2.5e-3]


def test_forced_switch_reports_the_last_positive_candidate() -> None:
    d = diagnose.diagnose_run(forced_record())
    used = path_lr(CAP - 1)
    assert d["switch_kind"] == "forced" and d["switch_lr"] == pytest.approx(used)
    assert d["min_step"] == 20
    assert (d["share_before_min"], d["share_detect"], d["share_decay"]) == pytest.approx((0.25, 0.25, 0.5))
    assert d["last_positive_epoch"] == 2 and d["last_positive_candidate_lr"] == 2e-3
    assert d["candidate_lr"] == 2e-3
    assert d["forced_candidate_over_used"] == pytest.approx(2e-3 / used)
    # no tuned peak known: no ratios to it
    assert d["tuned_peak_lr"] is None and d["switch_over_tuned"] is None and d["min_lr_over_tuned"] is None


def test_forced_without_positive_test_and_without_losses() -> None:
    tests = [gp_test(1, [0.4, 0.4], 1e-4), gp_test(2, [0.5, 0.5], 2e-3)]
    d = diagnose.diagnose_run(auto_record("noloss", 256, 0, CAP, "forced", tests, losses=[]))
    assert d["last_positive_epoch"] is None and d["forced_candidate_over_used"] is None and d["candidate_lr"] is None
    assert d["min_step"] is None and d["min_lr"] is None and d["share_detect"] is None


def test_nan_losses_do_not_hide_the_minimum() -> None:
    losses = [loss_at(s) for s in range(30)]
    losses[21] = None  # records store non-finite losses as null
    losses[5] = float("nan")
    d = diagnose.diagnose_run(auto_record("nan", 256, 0, 30, "test", fired_record()["autowu"]["tests"], losses))
    assert d["min_step"] == 20


def test_lr_from_a_sparse_trace() -> None:
    rec = fired_record()
    del rec["autowu"]["config"]
    trace = rec["lr_trace"]
    rec["lr_trace"] = {"every": 4, "step": trace["step"][::4], "lr": trace["lr"][::4]}
    d = diagnose.diagnose_run(rec)
    assert d["min_lr"] == pytest.approx(10 ** -2.5)  # step 20 is on the trace
    rec["lr_trace"] = {"every": 3, "step": trace["step"][::3], "lr": trace["lr"][::3]}
    assert diagnose.diagnose_run(rec)["min_lr"] == pytest.approx(10 ** -2.5, rel=1e-9)  # log-interpolated


def test_lr_is_the_trace_where_the_ramp_is_not_the_formula() -> None:
    # AutoWU+ records AutoWU's config keys, but its ramp (paced by the loss, a raised start) is not
    # that formula: the LR at the minimum is what the trace says ran
    rec = fired_record()
    rec["lr_trace"]["lr"] = [3 * v for v in rec["lr_trace"]["lr"]]
    assert diagnose.diagnose_run(rec)["min_lr"] == pytest.approx(3 * 10 ** -2.5)
    del rec["lr_trace"]  # no trace: the formula
    assert diagnose.diagnose_run(rec)["min_lr"] == pytest.approx(10 ** -2.5)


def write_sweep(root: Path) -> Path:
    d = root / "results" / "diag"
    (d / "runs").mkdir(parents=True)
    recs = [fired_record(), forced_record()]
    other = json.loads(json.dumps(recs[0]))
    other.update(run_id="fixedrun", autowu=None)
    other["config"].update(sched="fixed", lr=5e-3)
    for r in [*recs, other]:
        (d / "runs" / f"{r['run_id']}.json").write_text(json.dumps(r))
    stages = {"name": "diag", "complete": True, "selection": [
        {"method": "fixed", "model": "cnn_fashion", "opt": "adamp", "bs": 1024, "chosen_lr": 5e-3, "trials": []},
        {"method": "fixed", "model": "cnn_fashion", "opt": "adamp", "bs": 4096, "chosen_lr": 0.02, "trials": []},
        # a control under another label is not the tuned peak
        {"method": "fixed", "label": "fixed@auto", "model": "cnn_fashion", "opt": "adamp", "bs": 4096,
         "chosen_lr": 9.0, "trials": []}],
        "final_runs": [
            {"method": "auto", "model": "cnn_fashion", "opt": "adamp", "bs": 1024, "seed": 0, "run_id": "fired"},
            {"method": "auto", "label": "auto-variant", "model": "cnn_fashion", "opt": "adamp", "bs": 4096,
             "seed": 0, "run_id": "forced"},
            {"method": "fixed", "model": "cnn_fashion", "opt": "adamp", "bs": 1024, "seed": 0, "run_id": "fixedrun"}]}
    (d / "stages.json").write_text(json.dumps(stages))
    return d


def test_diagnose_sweep_frame(tmp_path: Path) -> None:
    df = diagnose.diagnose_sweep(write_sweep(tmp_path))
    assert list(df.columns) == diagnose.DIAGNOSIS_COLUMNS
    assert list(df["run_id"]) == ["fired", "forced"]  # the fixed run is not diagnosed
    assert list(df["label"]) == ["auto", "auto-variant"]
    assert list(df["tuned_peak_lr"]) == [5e-3, 0.02]
    assert df.loc[1, "switch_over_tuned"] == pytest.approx(path_lr(CAP - 1) / 0.02)


def test_table_and_figure_have_the_diagnosis(tmp_path: Path) -> None:
    d = write_sweep(tmp_path)
    _, md = results.build_table(d, write=False)
    section = md.split("## AutoWU diagnosis", 1)[1].split("\n## ", 1)[0]
    assert ("| cnn_fashion | adamp | 1K | 0 | 20 / 80 | 0.00316 | 30 (test) | 0.0025 | 25.0% | 12.5% | 62.5% |"
            in section)
    assert "epoch 2: 0.002 vs 0.75 used (0.0027×)" in section
    assert "e2 + p 0.99/0.97/1.00 → 0.002; e3 + p 1.00/1.00/0.98 → 0.0025 (switched)" in section
    notes: list[str] = []
    paths = plots.make_figures(d, tmp_path / "plots", log=notes.append)
    assert "f_autowu_budget.png" in [p.name for p in paths], notes


def test_autoplus_records_are_diagnosed_too() -> None:
    rec = fired_record()
    rec["config"]["sched"] = "autoplus"
    rec["autowu"]["config"]["name"] = "autoplus"
    df = diagnose.diagnose_records({"p": rec, "f": forced_record()})
    assert sorted(df["label"]) == ["auto", "autoplus"]
    assert df.set_index("label").loc["autoplus", "min_step"] == 20

"""The sweep runner: grids, selection with edge extension, restarts, dry runs, submitit, data checks.

Selection and the driver loop are tested on records written by hand (only the fields selection
reads); two tests train for real on a tiny Fashion-MNIST subset: a sweep killed with SIGKILL and
started again, and a one-run sweep through submitit's local executor.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba"))

from autolr import sweep as sw  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FASHION_HERE = any(Path(d).is_dir() for d in ("/usr/share/datasets/fashion-mnist", REPO / "data" / "FashionMNIST"))


def base_spec(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "t", "data": "fashion-mnist", "subset": 8000, "epochs": 10, "models": ["cnn_fashion"],
        "opts": ["adamp"], "batch_sizes": [512, 128, 2048], "seeds": 2, "train_args": {"loader": "tensor"},
        "schedulers": {"auto": {}, "linear": {"lr": [1e-3, 3e-3, 1e-2], "warmup_epochs": 1},
                       "legw": {"lr": [1e-3, 1e-2], "warmup_epochs": 1},
                       "fixed": {"lr": [1e-3, 3.16e-3, 1e-2], "warmup_epochs": 1}},
        "max_extensions": 2,
    }
    spec.update(over)
    return spec


def write_record(runs_dir: Path, run_id: str, status: str, val_acc: float | None) -> None:
    """A record with only what selection reads: config, outcome, final.val_acc."""
    runs_dir.mkdir(parents=True, exist_ok=True)
    rec = {"run_id": run_id, "config": {}, "outcome": {"status": status, "error": None},
           "final": {"val_acc": val_acc, "test_acc": val_acc}}
    (runs_dir / f"{run_id}.json").write_text(json.dumps(rec))


def fill(sweep: sw.Sweep, runs: list[sw.Run], outcome: Any) -> None:
    """Write a record for each run that has none."""
    for r in runs:
        if not (sweep.runs_dir / f"{r.run_id}.json").exists():
            status, acc = outcome(r)
            write_record(sweep.runs_dir, r.run_id, status, acc)


# ---------------------------------------------------------------------------------------------
# grid expansion
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_grid_expansion_runs_b0_and_seeds(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(base_spec(models=["cnn_fashion", "resnet20_cifar"]))
    assert spec.b0 == 128 and spec.batch_sizes == (128, 512, 2048) and spec.seeds == (0, 1)
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    plan = sweep.plan({})
    tune = plan.tuning_runs
    # linear (3) and legw (2) at B0 only, fixed (3) at every batch size; per model
    assert len(tune) == 2 * (3 + 2 + 3 * 3)
    assert len({r.run_id for r in tune}) == len(tune)
    assert all(r.seed == 0 and r.stage == "tune" for r in tune)
    assert {r.bs for r in tune if r.method in ("linear", "legw")} == {128}
    assert {(r.bs, r.lr) for r in tune if r.method == "fixed" and r.model == "cnn_fashion"} == {
        (b, v) for b in (128, 512, 2048) for v in (1e-3, 3.16e-3, 1e-2)}
    assert all("--legw-b0" in r.argv and r.argv[r.argv.index("--legw-b0") + 1] == "128"
               for r in tune if r.method == "legw")
    # only AutoWU's finals are known before tuning: 3 batch sizes x 2 seeds x 2 models
    assert [(r.method, r.bs, r.seed) for r in plan.final_runs if r.model == "cnn_fashion"] == [
        ("auto", b, s) for b in (128, 512, 2048) for s in (0, 1)]
    assert len(plan.waiting_finals) == 2 * 3 * 3 * 2
    assert plan.pending_extensions == 2 * (1 + 1 + 3) * 2

    # the run_id is train.py's own, from the same flags given by hand
    from autolr import config

    argv = ["--data", "fashion-mnist", "--model", "cnn_fashion", "--opt", "adamp", "--bs", "128", "--seed", "0",
            "--sched", "legw", "--epochs", "10", "--subset", "8000", "--lr", "0.01", "--warmup-epochs", "1",
            "--legw-b0", "128", "--loader", "tensor", "--out", "elsewhere", "--resume"]
    rid = config.run_id(config.resolve(config.build_parser().parse_args(argv)))
    assert rid in {r.run_id for r in tune if r.method == "legw" and r.lr == 0.01 and r.model == "cnn_fashion"}

    # once tuning has chosen, the seed-0 final is the tuning run itself (same run_id), seed 1 is new
    fill(sweep, tune, lambda r: ("finished", 0.9 if r.lr in (3e-3, 3.16e-3, 1e-2) and r.method != "fixed"
                                 or r.lr == 3.16e-3 else 0.5))
    for _ in range(3):  # legw's best (1e-2) is on its grid's edge: two extension rounds, both worse
        fill(sweep, sweep.plan(sw.load_results(sweep.runs_dir)).tuning_runs, lambda r: ("finished", 0.1))
    plan = sweep.plan(sw.load_results(sweep.runs_dir))
    assert plan.tuning_done and not plan.waiting_finals
    tune_ids = {r.run_id for r in plan.tuning_runs}
    fixed = [r for r in plan.final_runs if r.method == "fixed" and r.model == "cnn_fashion"]
    assert {(r.bs, r.seed) for r in fixed} == {(b, s) for b in (128, 512, 2048) for s in (0, 1)}
    assert all((r.run_id in tune_ids) == (r.seed == 0) for r in fixed)
    linear = [r for r in plan.final_runs if r.method == "linear" and r.model == "cnn_fashion"]
    assert {r.lr for r in linear} == {3e-3}
    legw = plan.grids[("legw", "cnn_fashion", "adamp", 128)]
    assert (legw.grid, legw.chosen, legw.reason) == ([1e-3, 1e-2, 0.1], 1e-2, "extended")
    assert [r.run_id in tune_ids for r in linear] == [True, False, False, False, False, False]


@pytest.mark.timeout(30)
def test_bad_spec_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(sw.SweepError, match="unknown keys"):
        sw.spec_from_dict(base_spec(bacth_sizes=[1]))
    with pytest.raises(sw.SweepError, match="may not set"):
        sw.spec_from_dict(base_spec(train_args={"seed": 3}))
    with pytest.raises(sw.SweepError, match="never tuned"):
        sw.spec_from_dict(base_spec(schedulers={"auto": {"lr": [1e-3]}}))
    sweep = sw.Sweep(sw.spec_from_dict(base_spec(subset=1000)), tmp_path, tmp_path)
    with pytest.raises(sw.SweepError, match="exceed the training split"):
        sweep.validate()


# ---------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------
def test_extension_values() -> None:
    root10 = [1e-3, 3.16e-3, 1e-2]
    assert sw.extension_value(root10, "up", 1) == 0.0316
    assert sw.extension_value(root10, "up", 2) == 0.1
    assert sw.extension_value(root10, "down", 1) == 0.000316
    assert sw.extension_value([0.1, 0.2, 0.4], "up", 2) == 1.6
    assert sw.extension_value([0.1, 0.2, 0.4], "down", 1) == 0.05
    assert sw.extension_value([0.1], "up", 1) is None
    # a rounded sqrt(10) grid stays on its lattice; factor 3 multiplies
    assert sw.extension_value([1e-3, 3.16e-3], "up", 1) == 0.01
    assert sw.extension_value([1e-3, 3.16e-3], "up", 2) == 0.0316
    assert sw.extension_value([3e-4, 1e-3, 3e-3], "up", 1) == 0.009
    assert sw.extension_value([1e-4, 1e-3], "down", 1) == 1e-5


@pytest.mark.timeout(60)
def test_edge_extension_and_its_cap(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(base_spec(batch_sizes=[512], seeds=1, schedulers={
        "fixed": {"lr": [1e-3, 3.16e-3, 1e-2], "warmup_epochs": 1}}))
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    rising = lambda r: ("finished", 0.5 + 0.1 * math.log10(r.lr / 1e-3))  # noqa: E731 - best is always the top

    grids = []
    for _ in range(4):
        plan = sweep.plan(sw.load_results(sweep.runs_dir))
        gs = plan.grids[("fixed", "cnn_fashion", "adamp", 512)]
        grids.append(list(gs.grid))
        fill(sweep, [r for r in plan.tuning_runs if not (sweep.runs_dir / f"{r.run_id}.json").exists()], rising)
    assert grids == [[1e-3, 3.16e-3, 1e-2], [1e-3, 3.16e-3, 1e-2, 0.0316], [1e-3, 3.16e-3, 1e-2, 0.0316, 0.1],
                     [1e-3, 3.16e-3, 1e-2, 0.0316, 0.1]]  # capped at 2 extensions
    results = sw.load_results(sweep.runs_dir)
    plan = sweep.plan(results)
    gs = plan.grids[("fixed", "cnn_fashion", "adamp", 512)]
    assert (gs.chosen, gs.reason, gs.capped) == (0.1, "extended", True)
    assert [e["direction"] for e in gs.extensions] == ["up", "up"]
    assert "extended grid of fixed (cnn_fashion, adamp) at bs 512 upward to 0.0316 (best on edge)" in gs.messages
    doc = sweep.write_stages(plan, results)
    assert doc["complete"] and doc["missing_runs"] == 0
    entry = doc["selection"][0]
    assert entry["chosen_lr"] == 0.1 and entry["reason"] == "extended" and len(entry["trials"]) == 5
    assert [t["val_acc"] is not None for t in entry["trials"]] == [True] * 5
    (final,) = doc["final_runs"]
    assert final["lr"] == 0.1 and final["tuning_run"] and final["status"] == "finished"
    assert final["run_id"] == entry["trials"][-1]["run_id"]
    assert json.loads(sweep.stages_path.read_text())["complete"] is True


@pytest.mark.timeout(60)
def test_diverged_runs_count_as_worst(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(base_spec(batch_sizes=[512], seeds=1, max_extensions=2, schedulers={
        "fixed": {"lr": [1e-3, 3e-3, 1e-2], "warmup_epochs": 1}}))
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    key = ("fixed", "cnn_fashion", "adamp", 512)
    plan = sweep.plan({})
    runs = {r.lr: r for r in plan.tuning_runs}
    # the largest LR diverged: it loses, and the best is interior, so no extension
    res = {runs[1e-3].run_id: sw.RunResult("finished", 0.70), runs[3e-3].run_id: sw.RunResult("finished", 0.80),
           runs[1e-2].run_id: sw.RunResult("diverged", None)}
    gs = sweep.plan(res).grids[key]
    assert (gs.chosen, gs.reason, gs.extensions, gs.needed) == (3e-3, "best val acc", [], [])
    # a diverged run with a high recorded val acc still loses; a run without a record is a failure
    res[runs[1e-2].run_id] = sw.RunResult("diverged", 0.99)
    res[runs[3e-3].run_id] = sw.RunResult("failed", None, recorded=False, error="boom")
    gs = sweep.plan(res).grids[key]
    assert gs.needed == [0.000333] and gs.extensions[0]["direction"] == "down"
    # everything diverges: extend downward twice, then give up on the smallest LR
    ids = {}
    for v in (1e-3, 3e-3, 1e-2, 0.000333, 0.000111):
        ids[v] = sweep.make_run("tune", "fixed", "cnn_fashion", "adamp", 512, 0, v).run_id
    all_div = {rid: sw.RunResult("diverged", None) for rid in ids.values()}
    gs = sweep.plan(all_div).grids[key]
    assert gs.grid == [0.000111, 0.000333, 1e-3, 3e-3, 1e-2]
    assert (gs.chosen, gs.reason) == (0.000111, "all diverged")
    assert [e["why"] for e in gs.extensions] == ["all runs diverged or failed"] * 2
    doc = sweep.stages_doc(sweep.plan(all_div), all_div)
    assert [t["status"] for t in doc["selection"][0]["trials"]] == ["diverged"] * 5
    assert doc["final_runs"][0]["status"] == "diverged"


class FakeExecutor:
    """Writes records instead of training: val acc peaks at lr 0.01; bs 2048 at 0.0316 fails to start."""

    def __init__(self, sweep: sw.Sweep):
        self.sweep, self.calls = sweep, []

    def run(self, runs: list[sw.Run], done: Any) -> None:
        for r in runs:
            self.calls.append(r.run_id)
            if r.bs == 2048 and r.lr == 0.0316:
                done(r, sw.Outcome(2, "train.py: error: something", 0.0))
                continue
            acc = 0.6 if r.lr is None else 0.8 - 0.1 * abs(math.log10(r.lr / 0.01))
            write_record(self.sweep.runs_dir, r.run_id, "finished" if r.lr != 0.1 else "diverged", acc)
            done(r, sw.Outcome(0, None, 0.01))


@pytest.mark.timeout(60)
def test_driver_rounds_chunks_and_restarts(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(base_spec(batch_sizes=[256, 2048], seeds=2, schedulers={
        "auto": {}, "linear": {"lr": [1e-3, 3.16e-3], "warmup_epochs": 1},
        "fixed": {"lr": [3.16e-3, 1e-2, 0.0316], "warmup_epochs": 1}}))
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    calls: list[str] = []
    failed = sweep.make_run("tune", "fixed", "cnn_fashion", "adamp", 2048, 0, 0.0316).run_id
    for _ in range(50):  # chunks of 3 runs, each a fresh driver as after a restart
        ex = FakeExecutor(sweep)
        d = sw.Driver(sweep, ex, max_runs=3)
        finished = d.tune() and d.final()
        calls += ex.calls
        assert len(ex.calls) <= 3
        if finished and set(ex.calls) <= {failed}:
            break
    results = sw.load_results(sweep.runs_dir)
    doc = sweep.write_stages(sweep.plan(results), results)
    # the failed start (no record) is tried once per driver, never twice by one driver
    assert len(calls) - calls.count(failed) == len(set(calls) - {failed}) == len(results)
    sel = {(e["method"], e["bs"]): e for e in doc["selection"]}
    # linear: 3.16e-3 on the top edge -> extended to 0.01 (best), then 0.0316 (worse): interior
    assert sel[("linear", 256)]["grid"] == [1e-3, 3.16e-3, 0.01, 0.0316]
    assert sel[("linear", 256)]["chosen_lr"] == 0.01 and sel[("linear", 2048)]["chosen_lr"] == 0.01
    assert not sel[("linear", 2048)]["tuned"] and sel[("linear", 2048)]["tuned_at_bs"] == 256
    assert sel[("fixed", 256)]["reason"] == "best val acc" and sel[("fixed", 256)]["chosen_lr"] == 0.01
    # no record of the failed start: the next sweep retries it, and until then that grid is pending
    trial = [t for t in sel[("fixed", 2048)]["trials"] if t["lr"] == 0.0316][0]
    assert trial["status"] == "missing" and sel[("fixed", 2048)]["reason"] == "pending"
    assert not doc["complete"] and doc["missing_runs"] == 2  # it and its seed-1 final
    assert sel[("auto", 256)]["reason"] == "not tuned"
    charge = {(c["method"], c["bs"]): c for c in doc["tuning_charge"]}
    assert charge[("linear", 256)]["charged"] == "once per grid" and charge[("linear", 256)]["runs"] == 4
    assert set(charge) == {("linear", 256), ("fixed", 256), ("fixed", 2048)}
    finals = {(f["method"], f["bs"], f["seed"]): f for f in doc["final_runs"]}
    assert len(finals) == 3 * 2 * 2 and finals[("fixed", 256, 0)]["tuning_run"]
    assert all(f["status"] == "finished" for k, f in finals.items() if k[0] != "fixed" or k[1] != 2048)
    # within the driver that saw it fail, the failure counted as the worst value and the finals ran
    assert len(sw.load_results(sweep.runs_dir)) == len(results) == 4 + 6 + 4 + 2 + 2


class RoundsExecutor(FakeExecutor):
    """FakeExecutor that keeps each round's runs."""

    def __init__(self, sweep: sw.Sweep):
        super().__init__(sweep)
        self.rounds: list[list[sw.Run]] = []

    def run(self, runs: list[sw.Run], done: Any) -> None:
        self.rounds.append(list(runs))
        super().run(runs, done)


@pytest.mark.timeout(60)
def test_first_round_carries_known_finals_longest_first(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(base_spec(batch_sizes=[256, 2048], seeds=2, schedulers={
        "auto": {}, "fixed": {"lr": [3.16e-3, 1e-2], "warmup_epochs": 1}}))
    ex = RoundsExecutor(sw.Sweep(spec, tmp_path / "r1", tmp_path / "c1"))
    sw.Driver(ex.sweep, ex, max_runs=None).tune()
    first = ex.rounds[0]
    # AutoWU's finals need no tuning: they run in the first round, beside the tuning runs
    assert {(r.method, r.bs, r.seed) for r in first if r.stage == "final"} == {
        ("auto", bs, seed) for bs in (256, 2048) for seed in (0, 1)}
    assert sum(r.stage == "tune" for r in first) == 4
    # batch 256 has 8x the steps of 2048: every round starts its longest runs first
    assert all([r.bs for r in rnd] == sorted(r.bs for r in rnd) for rnd in ex.rounds)
    # --only-stage tune: tuning runs only
    ex2 = RoundsExecutor(sw.Sweep(spec, tmp_path / "r2", tmp_path / "c2"))
    sw.Driver(ex2.sweep, ex2, max_runs=None).tune(with_finals=False)
    assert {r.stage for rnd in ex2.rounds for r in rnd} == {"tune"}


@pytest.mark.timeout(60)
def test_failed_runs_are_tried_again_by_the_next_driver(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(base_spec(batch_sizes=[256], seeds=1, schedulers={"auto": {}}))
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    (run,) = sweep.plan({}).final_runs

    class Crashing(FakeExecutor):
        def run(self, runs: list[sw.Run], done: Any) -> None:
            for r in runs:  # train.py records a crash as "failed", then exits non-zero
                self.calls.append(r.run_id)
                write_record(self.sweep.runs_dir, r.run_id, "failed", None)
                done(r, sw.Outcome(1, "RuntimeError: CUDA out of memory", 1.0))

    first = Crashing(sweep)
    d = sw.Driver(sweep, first, max_runs=None)
    assert d.tune() and d.final()
    assert first.calls == [run.run_id]  # once per driver, and the sweep went on
    assert sw.load_results(sweep.runs_dir)[run.run_id].status == "failed"
    again = FakeExecutor(sweep)
    d2 = sw.Driver(sweep, again, max_runs=None)
    assert d2.retried == [run.run_id]
    assert d2.tune() and d2.final()
    assert again.calls == [run.run_id]
    assert sw.load_results(sweep.runs_dir)[run.run_id].status == "finished"
    assert sw.Driver(sweep, FakeExecutor(sweep), max_runs=None).retried == []


# ---------------------------------------------------------------------------------------------
# command line: dry run, data check
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_dry_run_lists_runs_and_cost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = sw.main([str(REPO / "sweeps" / "demo.yaml"), "--dry-run", "--device-kind", "cpu",
                  "--results-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    sweep = sw.Sweep(sw.load_spec(REPO / "sweeps" / "demo.yaml"), tmp_path)
    plan = sweep.plan({})
    for r in plan.tuning_runs + plan.final_runs:
        assert r.run_id in out
    assert "later stages add: up to" in out and "cnn_fashion on cpu: 5000 img/s" in out
    line = [ln for ln in out.splitlines() if ln.startswith("estimated cost")][0]
    assert float(line.split("stage 1 ")[1].split(" s")[0]) > 0
    assert not (tmp_path / "demo").exists()  # a dry run writes nothing

    rc = sw.main([str(REPO / "sweeps" / "imagenet.yaml"), "--dry-run", "--executor", "slurm",
                  "--results-root", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0 and "#SBATCH --array=0-" in out and "#SBATCH --gpus-per-node=8" in out
    assert "rough estimate" in out


@pytest.mark.timeout(240)
def test_missing_cifar_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # data/ is relative: nothing here
    rc = sw.main([str(REPO / "sweeps" / "cifar10.yaml"), "--results-root", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "cifar10 not found" in err and "download=True" in err
    assert not (tmp_path / "r").exists()
    # make reproduce-cifar asks for the download: offline, its failure is part of the same one line
    import autolr.data

    monkeypatch.setattr(autolr.data, "_torchvision_download",
                        lambda *a: "URLError: <urlopen error [Errno -2] Name or service not known>")
    rc = sw.main([str(REPO / "sweeps" / "cifar10.yaml"), "--results-root", str(tmp_path / "r"), "--download"])
    err = capsys.readouterr().err
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "the download failed: URLError" in err
    assert not (tmp_path / "r").exists()


def test_slurm_parameters() -> None:
    spec = sw.load_spec(REPO / "sweeps" / "imagenet.yaml")
    p = sw.slurm_parameters(spec)
    assert p["gpus_per_node"] == 8 and p["tasks_per_node"] == 1 and p["timeout_min"] > 0
    ex = sw.executors
    assert ex._minutes("1-02:30:00") == 1590 and ex._minutes(90) == 90 and ex._mem_gb("512G") == 512
    job = sw.TrainJob(gpus_per_node=8)
    again = job.checkpoint(["--bs", "1024"])
    assert again.function is job and again.args == (["--bs", "1024"],)


# ---------------------------------------------------------------------------------------------
# real runs
# ---------------------------------------------------------------------------------------------
def tiny_spec(path: Path, name: str, **over: Any) -> Path:
    spec = {"name": name, "data": "fashion-mnist", "subset": 512, "epochs": 2, "batch_sizes": [256, 512],
            "seeds": 1, "train_args": {"loader": "tensor"}, "max_extensions": 1,
            "schedulers": {"auto": {}, "linear": {"lr": [3e-3, 1e-2], "warmup_epochs": 1},
                           "fixed": {"lr": [1e-2], "warmup_epochs": 1}}}
    spec.update(over)
    f = path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(spec))
    return f


def sweep_cmd(spec: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "autolr.sweep", str(spec), "--results-root", str(root / "results"),
            "--ckpt-root", str(root / "ckpt"), *extra]


@pytest.mark.slow
@pytest.mark.timeout(280)
@pytest.mark.skipif(not FASHION_HERE, reason="Fashion-MNIST is not installed")
@pytest.mark.parametrize("jobs", [1, 2])  # 1: runs in the sweep's process; 2: train.py subprocesses
def test_kill_and_restart_runs_each_run_once(tmp_path: Path, jobs: int) -> None:
    spec = tiny_spec(tmp_path, "tiny")
    env = {**os.environ, "OMP_NUM_THREADS": "2" if jobs == 1 else "1"}
    jobs_flag = ("--jobs", str(jobs))
    runs_dir = tmp_path / "results" / "tiny" / "runs"
    ckpt_dir = tmp_path / "ckpt" / "tiny"
    log1 = open(tmp_path / "first.log", "wb")  # noqa: SIM115
    p = subprocess.Popen(sweep_cmd(spec, tmp_path, *jobs_flag), cwd=REPO, env=env, stdout=log1,
                         stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 150
    try:
        # kill once the first record is in, preferably while the next run has a checkpoint
        while time.monotonic() < deadline and p.poll() is None:
            records = {f.stem for f in runs_dir.glob("*.json")}
            running = {c.parent.name for c in ckpt_dir.glob("*/last.pt")} - records
            if (records and running) or len(records) >= 2:
                break
            time.sleep(0.05)
        assert p.poll() is None, (tmp_path / "first.log").read_text()
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
        log1.close()
    time.sleep(0.5)  # the killed sweep's train.py children die with it (PR_SET_PDEATHSIG): let them go
    first = {f.name: f.read_bytes() for f in runs_dir.glob("*.json")}
    assert first
    # a checkpoint left by the kill belongs to a run that had not finished, or to one killed between
    # its record and the checkpoint's removal: the next driver drops the latter
    ckpts = [c.parent.name for c in ckpt_dir.glob("*/last.pt") if f"{c.parent.name}.json" not in first]
    assert ckpts, "the sweep was not killed in the middle of a run"

    second = subprocess.run(sweep_cmd(spec, tmp_path, *jobs_flag), cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=200)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "tiny complete" in second.stdout
    doc = json.loads((tmp_path / "results" / "tiny" / "stages.json").read_text())
    assert doc["complete"] and doc["missing_runs"] == 0
    expected = {t["run_id"] for e in doc["selection"] for t in e["trials"]} | {f["run_id"] for f in doc["final_runs"]}
    files = sorted(runs_dir.glob("*.json"))
    assert {f.stem for f in files} == expected and len(files) == len(expected)
    assert all(json.loads(f.read_text())["run_id"] == f.stem for f in files)
    # records from before the kill were not rewritten: those runs did not run again
    assert all((runs_dir / name).read_bytes() == data for name, data in first.items())
    ran_again = second.stdout.count("[tune]") + second.stdout.count("[final]")
    assert ran_again == len(expected) - len(first)
    assert len(ckpts) <= jobs
    for rid in ckpts:
        assert f"resuming run {rid}" in (ckpt_dir / "logs" / f"{rid}.log").read_text()
    # linear: 2 values + 1 extension at B0, its chosen LR at bs 512; fixed: 1 run per bs; auto: 2
    assert len(expected) == 3 + 1 + 2 + 2
    assert not list(ckpt_dir.glob("*/last.pt"))  # finished runs leave no checkpoints


@pytest.mark.slow
@pytest.mark.timeout(200)
@pytest.mark.skipif(not FASHION_HERE, reason="Fashion-MNIST is not installed")
def test_slurm_path_through_submitit_local(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tiny_spec(tmp_path, "one", epochs=1, batch_sizes=[256], schedulers={"auto": {}},
                     slurm={"gpus_per_node": 1, "time": 10, "partition": "nowhere"})
    rc = sw.main([str(spec), "--executor", "slurm", "--cluster", "local", "--results-root",
                  str(tmp_path / "results"), "--ckpt-root", str(tmp_path / "ckpt")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "submitted 1 jobs (local)" in out
    doc = json.loads((tmp_path / "results" / "one" / "stages.json").read_text())
    assert doc["complete"]
    (final,) = doc["final_runs"]
    assert final["status"] == "finished"
    assert (tmp_path / "results" / "one" / "runs" / f"{final['run_id']}.json").is_file()
    assert list((tmp_path / "ckpt" / "one" / "submitit").glob("*/*_result.pkl"))


# ---------------------------------------------------------------------------------------------
# labelled variants and lr_from controls
# ---------------------------------------------------------------------------------------------
def labelled_spec(**over: Any) -> dict[str, Any]:
    return base_spec(batch_sizes=[256, 2048], seeds=2, schedulers={
        "auto": {}, "auto-init1e-4": {"sched": "auto", "init_lr": 1e-4},
        "fixed": {"lr": [3.16e-3, 1e-2, 0.0316], "warmup_epochs": 1},
        "fixed-w2": {"sched": "fixed", "lr": [3.16e-3, 1e-2, 0.0316], "warmup_epochs": 2},
        "fixed@auto": {"sched": "fixed", "warmup_epochs": 5, "lr_from": "auto"}}, **over)


def test_labels_and_lr_from_are_checked() -> None:
    ok = sw.spec_from_dict(labelled_spec())
    # the label is not part of train.py's config: a variant with another entry's flags shares its run_ids
    same = sw.Sweep(sw.spec_from_dict(base_spec(schedulers={
        "fixed": {"lr": [1e-2], "warmup_epochs": 1}, "again": {"sched": "fixed", "lr": [1e-2], "warmup_epochs": 1}})))
    runs = same.plan({}).tuning_runs
    assert [r.method for r in runs] == ["fixed"] * 3 + ["again"] * 3 and len({r.run_id for r in runs}) == 3
    assert ok.sched_of("auto-init1e-4") == "auto" and ok.sched_of("fixed") == "fixed"
    assert ok.tuned_bs("auto-init1e-4") == () and ok.tuned_bs("fixed-w2") == (256, 2048)
    assert ok.tuned_bs("fixed@auto") == () and ok.lr_from("fixed@auto") == "auto"
    bad = {
        "unknown sched": ({"x": {"sched": "autoo"}}, "x: unknown sched 'autoo'"),
        "unknown label": ({"myauto": {}}, "unknown scheduler 'myauto'"),
        "missing source": ({"auto": {}, "c": {"sched": "fixed", "lr_from": "auto2"}}, "not a scheduler label"),
        "tuned source": ({"fixed": {"lr": [1e-2]}, "c": {"sched": "fixed", "lr_from": "fixed"}},
                         "must name a never-tuned method"),
        "control source": ({"auto": {}, "c": {"sched": "fixed", "lr_from": "auto"},
                            "d": {"sched": "fixed", "lr_from": "c"}}, "must name a never-tuned method"),
        "grid and lr_from": ({"auto": {}, "c": {"sched": "fixed", "lr": [1e-2], "lr_from": "auto"}}, "no lr grid"),
        "auto with lr_from": ({"auto": {}, "c": {"sched": "auto", "lr_from": "auto"}}, "--lr is the peak"),
        "linear with lr_from": ({"auto": {}, "c": {"sched": "linear", "lr_from": "auto"}}, "--lr is the peak"),
        "options not a mapping": ({"auto": [1, 2]}, "must be a mapping"),
    }
    for case, (scheds, msg) in bad.items():
        with pytest.raises(sw.SweepError, match=msg.replace("(", r"\(").replace("[", r"\[")) as info:
            sw.spec_from_dict(base_spec(schedulers=scheds))
        assert "\n" not in str(info.value), case


def write_auto_record(runs_dir: Path, run_id: str, status: str, switch_lr: float | None) -> None:
    runs_dir.mkdir(parents=True, exist_ok=True)
    rec = {"run_id": run_id, "config": {}, "outcome": {"status": status, "error": None},
           "final": {"val_acc": 0.5, "test_acc": 0.5}, "autowu": {"switch_lr": switch_lr, "switch_kind": "test"}}
    (runs_dir / f"{run_id}.json").write_text(json.dumps(rec))


@pytest.mark.timeout(60)
def test_lr_from_control_takes_the_switch_lr_and_waits(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(labelled_spec())
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    plan = sweep.plan({})
    # no AutoWU record yet: every control waits, none is a run yet, none is charged a tuning run
    assert len(plan.waiting_controls) == 2 * 2 and not plan.skipped_controls
    assert not [r for r in plan.final_runs if r.method == "fixed@auto"]
    assert {r.method for r in plan.tuning_runs} == {"fixed", "fixed-w2"}
    # the variant is tuned like its scheduler, on its own grid, with its own flags (hence run_ids)
    fixed_ids = {r.run_id for r in plan.tuning_runs if r.method == "fixed"}
    w2 = [r for r in plan.tuning_runs if r.method == "fixed-w2"]
    assert len(w2) == 6 and not fixed_ids & {r.run_id for r in w2}
    assert all(r.sched == "fixed" and r.argv[r.argv.index("--sched") + 1] == "fixed" for r in w2)
    variant = [r for r in plan.final_runs if r.method == "auto-init1e-4"]
    assert len(variant) == 4 and all(r.argv[r.argv.index("--init-lr") + 1] == "0.0001" for r in variant)
    doc = sweep.stages_doc(plan, {})
    waiting = [f for f in doc["final_runs"] if f["method"] == "fixed@auto"]
    assert len(waiting) == 4 and all(f["status"] == "missing" and f["run_id"] is None and f["sched"] == "fixed"
                                     and f["why"].startswith("waits for auto's run") for f in waiting)
    assert doc["stages"]["final"]["waiting_for_source"] == 4 and not doc["complete"]

    # AutoWU's records: bs 256 switched (per seed), bs 2048 seed 0 diverged, seed 1 is still missing
    autos = {(r.bs, r.seed): r for r in plan.final_runs if r.method == "auto"}
    write_auto_record(sweep.runs_dir, autos[(256, 0)].run_id, "finished", 0.0248163664972198)
    write_auto_record(sweep.runs_dir, autos[(256, 1)].run_id, "finished", 0.031)
    write_auto_record(sweep.runs_dir, autos[(2048, 0)].run_id, "diverged", None)
    results = sw.load_results(sweep.runs_dir)
    plan = sweep.plan(results)
    controls = {(r.bs, r.seed): r for r in plan.final_runs if r.method == "fixed@auto"}
    assert set(controls) == {(256, 0), (256, 1)}
    c = controls[(256, 0)]
    assert c.lr == 0.0248163664972198 and c.argv[c.argv.index("--lr") + 1] == "0.0248163664972198"
    assert c.argv[c.argv.index("--sched") + 1] == "fixed" and c.argv[c.argv.index("--warmup-epochs") + 1] == "5"
    assert c.lr_from_run == autos[(256, 0)].run_id and controls[(256, 1)].lr == 0.031
    assert [w[:5] for w in plan.waiting_controls] == [("fixed@auto", "cnn_fashion", "adamp", 2048, 1)]
    (skip,) = plan.skipped_controls
    assert (skip["bs"], skip["seed"]) == (2048, 0) and "diverged: no LR to take" in skip["why"]
    doc = sweep.stages_doc(plan, results)
    by = {(f["method"], f["bs"], f["seed"]): f for f in doc["final_runs"]}
    assert by[("fixed@auto", 2048, 0)]["status"] == "skipped" and "diverged" in by[("fixed@auto", 2048, 0)]["why"]
    assert by[("fixed@auto", 256, 0)]["lr_from_run"] == autos[(256, 0)].run_id
    assert by[("auto-init1e-4", 256, 0)]["sched"] == "auto" and by[("fixed-w2", 256, 0)]["sched"] == "fixed"
    charge = [e for e in doc["tuning_charge"] if e["method"] == "fixed@auto"]
    assert len(charge) == 2 and all(e["runs"] == 0 and e["run_ids"] == [] and e["charged"] ==
                                    "none beyond auto's own run" for e in charge)
    sel = [e for e in doc["selection"] if e["method"] == "fixed@auto"]
    assert all(not e["tuned"] and e["lr_from"] == "auto" and e["trials"] == [] for e in sel)
    # the table counts a skipped seed as done (it will never run) and says why in the cell's note
    from autolr import results as res

    sweep.write_stages(plan, results)
    cell = res.collate(sweep.dir).cells[("cnn_fashion", "adamp", 2048, "fixed@auto")]
    assert [f["status"] for f in cell.finals] == ["skipped"] and cell.missing == 1
    assert "seed 0 skipped: auto's run" in cell.note


class SwitchingExecutor(FakeExecutor):
    """FakeExecutor whose AutoWU runs record a switch LR that depends on the run."""

    def run(self, runs: list[sw.Run], done: Any) -> None:
        for r in runs:
            self.calls.append(r.run_id)
            if r.sched == "auto":
                write_auto_record(self.sweep.runs_dir, r.run_id, "finished", 0.01 * (1 + r.seed) * r.bs / 256)
            else:
                write_record(self.sweep.runs_dir, r.run_id, "finished", 0.8 - 0.1 * abs(math.log10(r.lr / 0.01)))
            done(r, sw.Outcome(0, None, 0.01))


@pytest.mark.timeout(60)
def test_driver_runs_controls_after_their_source(tmp_path: Path) -> None:
    # nothing to tune: AutoWU's finals run in the final stage, the controls in the next round of it
    spec = sw.spec_from_dict(base_spec(batch_sizes=[256, 2048], seeds=2, schedulers={
        "auto": {}, "fixed@auto": {"sched": "fixed", "warmup_epochs": 5, "lr_from": "auto"}}))
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    ex = SwitchingExecutor(sweep)
    d = sw.Driver(sweep, ex, max_runs=None)
    assert d.tune() and d.final()
    assert len(ex.calls) == 8
    doc = sweep.write_stages(sweep.plan(d.results), d.results)
    assert doc["complete"]
    lrs = {(f["bs"], f["seed"]): f["lr"] for f in doc["final_runs"] if f["method"] == "fixed@auto"}
    assert lrs == {(bs, seed): 0.01 * (1 + seed) * bs / 256 for bs in (256, 2048) for seed in (0, 1)}
    # a chunk of one run at a time: the control waits for AutoWU's record, then a later driver runs it
    spec1 = sw.spec_from_dict(base_spec(batch_sizes=[256], seeds=1, schedulers={
        "auto": {}, "fixed@auto": {"sched": "fixed", "warmup_epochs": 5, "lr_from": "auto"}}))
    sweep1 = sw.Sweep(spec1, tmp_path / "r1", tmp_path / "c1")
    first = SwitchingExecutor(sweep1)
    d = sw.Driver(sweep1, first, max_runs=1)
    assert d.tune() and not d.final()
    (left,) = [f for f in sweep1.stages_doc(sweep1.plan(d.results), d.results)["final_runs"]
               if f["method"] == "fixed@auto"]
    assert left["status"] == "missing" and left["lr"] == 0.01 and left["run_id"] not in first.calls
    second = SwitchingExecutor(sweep1)
    d = sw.Driver(sweep1, second, max_runs=1)
    assert d.tune() and d.final() and len(second.calls) == 1
    assert sweep1.stages_doc(sweep1.plan(d.results), d.results)["complete"]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.skipif(not FASHION_HERE, reason="Fashion-MNIST is not installed")
def test_labelled_variant_and_control_train_for_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autolr import results as res

    spec = tiny_spec(tmp_path, "labels", batch_sizes=[256], schedulers={
        "auto": {}, "auto-init1e-4": {"sched": "auto", "init_lr": 1.0e-4},
        "fixed@auto": {"sched": "fixed", "warmup_epochs": 1, "lr_from": "auto"}})
    rc = sw.main([str(spec), "--results-root", str(tmp_path / "results"), "--ckpt-root", str(tmp_path / "ckpt")])
    out = capsys.readouterr().out
    assert rc == 0, out
    sweep_dir = tmp_path / "results" / "labels"
    doc = json.loads((sweep_dir / "stages.json").read_text())
    assert doc["complete"]
    finals = {f["method"]: f for f in doc["final_runs"]}
    recs = {m: json.loads((sweep_dir / "runs" / f"{f['run_id']}.json").read_text()) for m, f in finals.items()}
    assert recs["auto-init1e-4"]["config"]["sched"] == "auto" and recs["auto-init1e-4"]["config"]["init_lr"] == 1e-4
    # the control trained at exactly the LR AutoWU's run switched to, and was charged no tuning run
    switch = recs["auto"]["autowu"]["switch_lr"]
    assert recs["fixed@auto"]["config"]["sched"] == "fixed" and recs["fixed@auto"]["config"]["lr"] == switch
    assert finals["fixed@auto"]["lr_from_run"] == finals["auto"]["run_id"]
    (charge,) = doc["tuning_charge"]
    assert charge["method"] == "fixed@auto" and charge["runs"] == 0
    # the table has one column per label
    df, md = res.build_table(sweep_dir, write=False)
    assert sorted(df["method"]) == ["auto", "auto-init1e-4", "fixed@auto"]
    assert (df.set_index("method").loc["fixed@auto", "tuning_runs"]) == 0
    header = next(ln for ln in md.splitlines() if ln.startswith("| model"))
    assert header.endswith("| AutoWU | auto-init1e-4 | fixed@auto |"), header


# ---------------------------------------------------------------------------------------------
# bad sweep files (issue 12): one line, exit 2, nothing run or written
# ---------------------------------------------------------------------------------------------
def run_main_on(tmp_path: Path, spec: dict[str, Any], *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    rc = sw.main([str(path), "--results-root", str(tmp_path / "results"), "--ckpt-root", str(tmp_path / "ckpt"),
                  *extra])
    return rc, path.read_text(), str(path)


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("sweep: error: "), err
    return err


@pytest.mark.timeout(60)
def test_flags_are_exact_names_never_prefixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse would read --epoch as --epochs and --warmup as --warmup-epochs without a word
    for spec, msg in ((base_spec(train_args={"loader": "tensor", "epoch": 3}), "'epoch' is not a train.py flag "
                       "(did you mean epochs?)"),
                      (base_spec(schedulers={"fixed": {"lr": [1e-2], "warmup": 2}}), "fixed: 'warmup' is a "
                       "setting of auto, not of fixed (did you mean warmup_epochs?)"),
                      (base_spec(schedulers={"fixed": {"lr": [1e-2], "warmup_epoch": 2}}), "fixed: 'warmup_epoch' "
                       "is not a train.py flag (did you mean warmup_epochs?)"),
                      (base_spec(schedulers={"fixed": {"lr": [1e-2], "epochs": 2}}), "'epochs' is not a train.py "
                       "flag"),
                      (base_spec(train_args={"loader": "tensor", "wd": 0.1},
                                 schedulers={"fixed": {"lr": [1e-2], "wd": 0.2}}), "set both here and in train_args")):
        with pytest.raises(sw.SweepError) as info:
            sw.spec_from_dict(spec)
        assert msg in str(info.value) and "\n" not in str(info.value)
        assert sw.main([str(tmp_path / "none.yaml")]) == 2  # (a missing file is one line too)
        capsys.readouterr()
    # the run_id is never computed from an abbreviation
    with pytest.raises(sw.SweepError, match="rejects the flags"):
        sw.runs._run_id(("--data", "fashion-mnist", "--epoch", "3"))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("case", ["unknown model", "micro-batch", "nan lr", "warmup as long as the run",
                                  "explicit micro-batch"])
def test_dry_run_checks_every_run_like_train(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec(subset=6000, batch_sizes=[256, 1024], seeds=1,
                     schedulers={"auto": {}, "fixed": {"lr": [1e-2, 3.16e-2], "warmup_epochs": 1}})
    expect = {"unknown model": "unknown model 'cnn_fahsion'", "micro-batch": "micro-batch 256 does not divide",
              "nan lr": "must hold finite numbers", "warmup as long as the run": "leaves no decay",
              "explicit micro-batch": "micro-batch 96 does not divide"}[case]
    if case == "unknown model":
        spec["models"] = ["cnn_fashion", "cnn_fahsion"]
    elif case == "micro-batch":
        spec["batch_sizes"] = [256, 640]
    elif case == "nan lr":
        spec["schedulers"]["fixed"]["lr"] = [1e-2, float("nan")]
    elif case == "warmup as long as the run":
        spec["schedulers"]["fixed"]["warmup_epochs"] = 10
    else:
        spec["train_args"] = {"loader": "tensor", "micro_bs": 96}
    for extra in (("--dry-run",), ()):
        rc, _, _ = run_main_on(tmp_path, spec, *extra)
        assert rc == 2
        assert expect in one_line_error(capsys)
        assert not (tmp_path / "results").exists() and not (tmp_path / "ckpt").exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", ["schedulers list", "options list", "lr strings", "seed strings", "seed floats",
                                  "train_args list", "slurm list", "models mapping", "flag value list"])
def test_wrongly_typed_values_are_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec()
    expect = {
        "schedulers list": (("schedulers", ["auto", "fixed"]), "schedulers must be a mapping"),
        "options list": (("schedulers", {"fixed": [1e-2, 3e-2]}), "fixed: options must be a mapping"),
        "lr strings": (("schedulers", {"fixed": {"lr": ["0.01", "big"]}}), "the lr grid must hold numbers"),
        "seed strings": (("seeds", ["0", "1"]), "seeds must be a count or a list of integers"),
        "seed floats": (("seeds", [0.5, 1.7]), "seeds must be a count or a list of integers"),
        "train_args list": (("train_args", ["loader", "tensor"]), "train_args must be a mapping"),
        "slurm list": (("slurm", ["gpu"]), "slurm must be a mapping"),
        "models mapping": (("models", {"cnn_fashion": 1}), "models must be a list of names"),
        "flag value list": (("train_args", {"loader": ["tensor"]}), "train_args: loader must be a single value"),
    }
    (key, value), msg = expect[case]
    spec[key] = value
    rc, _, _ = run_main_on(tmp_path, spec, "--dry-run")
    assert rc == 2 and msg in one_line_error(capsys)


@pytest.mark.timeout(240)
@pytest.mark.skipif(not FASHION_HERE, reason="Fashion-MNIST is not installed")
def test_an_edited_sweep_file_does_not_take_over_its_folder(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec(subset=6000, batch_sizes=[256], seeds=1,
                     schedulers={"auto": {}, "fixed": {"lr": [1e-2, 3.16e-2], "warmup_epochs": 1}})
    assert run_main_on(tmp_path, spec, "--max-runs", "0")[0] == 0
    stages = tmp_path / "results" / "t" / "stages.json"
    first = stages.read_text()
    capsys.readouterr()
    edited = {**spec, "epochs": 12, "schedulers": {"auto": {}, "fixed": {"lr": [1e-2], "warmup_epochs": 1}}}
    assert run_main_on(tmp_path, edited, "--max-runs", "0")[0] == 2
    err = one_line_error(capsys)
    assert "epochs 10 -> 12" in err and "scheduler fixed" in err and "--start-over" in err
    assert stages.read_text() == first
    # the dry run says so without refusing
    assert run_main_on(tmp_path, edited, "--dry-run")[0] == 0
    assert "a run would refuse it without --start-over" in capsys.readouterr().out
    # a new scheduler entry is an additive change: allowed
    added = {**spec, "schedulers": {**spec["schedulers"], "fixed@auto": {"sched": "fixed", "lr_from": "auto"}}}
    assert run_main_on(tmp_path, added, "--max-runs", "0")[0] == 0
    assert "fixed@auto" in json.loads(stages.read_text())["spec"]["schedulers"]
    capsys.readouterr()
    assert run_main_on(tmp_path, edited, "--max-runs", "0", "--start-over")[0] == 0
    assert json.loads(stages.read_text())["spec"]["epochs"] == 12


@pytest.mark.timeout(240)
@pytest.mark.skipif(not FASHION_HERE, reason="Fashion-MNIST is not installed")
def test_one_driver_per_results_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec(subset=6000, batch_sizes=[256], seeds=1, schedulers={"auto": {}})
    sweep = sw.Sweep(sw.spec_from_dict(spec), tmp_path / "results", tmp_path / "elsewhere")
    with sw.driver._sweep_lock(sweep.dir / ".sweep.lock"):
        # another checkpoint root does not make it another sweep: the same records would be made twice
        rc, _, _ = run_main_on(tmp_path, spec, "--max-runs", "0")
    assert rc == 2 and "another sweep driver holds" in one_line_error(capsys)


# ---------------------------------------------------------------------------------------------
# a rerun compared with the committed records; stages.json untouched when nothing changed
# ---------------------------------------------------------------------------------------------
class EnvExecutor(FakeExecutor):
    """Records with a test accuracy and the env fields the comparison reads."""

    def run(self, runs: list[sw.Run], done: Any) -> None:
        for r in runs:
            acc = 0.6 if r.lr is None else 0.8 - 0.1 * abs(math.log10(r.lr / 0.01))
            rec = {"run_id": r.run_id, "config": {}, "outcome": {"status": "finished", "error": None},
                   "final": {"val_acc": acc, "test_acc": acc}, "env": {"device": "cpu", "cpu_threads": 2}}
            (self.sweep.runs_dir).mkdir(parents=True, exist_ok=True)
            (self.sweep.runs_dir / f"{r.run_id}.json").write_text(json.dumps(rec))
            done(r, sw.Outcome(0, None, 0.01))


@pytest.mark.timeout(240)
def test_compare_a_rerun_with_reference_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = base_spec(subset=6000, batch_sizes=[256], seeds=1, schedulers={
        "auto": {}, "fixed": {"lr": [1e-2, 3.16e-2], "warmup_epochs": 1}})
    sweep = sw.Sweep(sw.spec_from_dict(spec), tmp_path / "results", tmp_path / "ckpt")
    d = sw.Driver(sweep, EnvExecutor(sweep), max_runs=None)
    assert d.tune() and d.final()
    ref = tmp_path / "ref" / "t"
    (ref / "runs").mkdir(parents=True)
    for f in sweep.runs_dir.glob("*.json"):
        (ref / "runs" / f.name).write_bytes(f.read_bytes())
    ok, lines = sw.compare_runs(sweep, d.results, ref)
    # two grid values, one extension (0.01 is best, on the edge) and AutoWU's final
    assert ok and lines == [f"4/4 runs match the records in {ref} (test accuracy identical)"]
    # one reference record trained with another thread count, and a hair apart
    fixed_id = next(r.run_id for r in sweep.plan(d.results).tuning_runs if r.lr == 0.0316)
    rec = json.loads((ref / "runs" / f"{fixed_id}.json").read_text())
    rec["final"]["test_acc"] += 0.0013
    rec["env"]["cpu_threads"] = 1
    (ref / "runs" / f"{fixed_id}.json").write_text(json.dumps(rec))
    ok, lines = sw.compare_runs(sweep, d.results, ref)
    assert not ok and lines[0] == f"3/4 runs match the records in {ref} (test accuracy identical)"
    assert lines[1].startswith(f"  differs: tune fixed cnn_fashion adamp bs 256 seed 0 lr 0.0316 ({fixed_id}): ")
    assert "delta -0.0013" in lines[1] and "CPU threads 2 here vs 1" in lines[1]
    ok, lines = sw.compare_runs(sweep, d.results, ref / "runs", tolerance=0.002)
    assert ok and "4/4 runs match" in lines[0] and "(test accuracy within 0.002)" in lines[0]
    (ref / "runs" / f"{fixed_id}.json").unlink()
    ok, lines = sw.compare_runs(sweep, d.results, ref)
    assert not ok and lines == [f"3/3 runs match the records in {ref} (test accuracy identical); 1 runs have no "
                                f"record there: {fixed_id}"]
    if FASHION_HERE:  # the command line: nothing left to run, the comparison, exit code 1 on a difference
        rc, _, _ = run_main_on(tmp_path, spec, "--max-runs", "0", "--compare", str(ref))
        out = capsys.readouterr().out
        assert rc == 1 and "ran 0 runs" in out and out.strip().splitlines()[-1] == lines[0]
        rc, _, _ = run_main_on(tmp_path, spec, "--compare", str(tmp_path / "nowhere"))
        assert rc == 2 and "no such folder" in one_line_error(capsys)


@pytest.mark.timeout(60)
def test_stages_json_is_not_rewritten_for_a_timestamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sweep = sw.Sweep(sw.spec_from_dict(base_spec(batch_sizes=[256], seeds=1, schedulers={"auto": {}})),
                     tmp_path / "results", tmp_path / "ckpt")
    sweep.write_stages(sweep.plan({}), {})
    first = sweep.stages_path.read_bytes()
    monkeypatch.setattr(time, "strftime", lambda *a: "2999-01-01T00:00:00+0000")
    doc = sweep.write_stages(sweep.plan({}), {})
    assert doc["updated_at"].startswith("2999") and sweep.stages_path.read_bytes() == first
    (run,) = sweep.plan({}).final_runs
    write_record(sweep.runs_dir, run.run_id, "finished", 0.5)
    results = sw.load_results(sweep.runs_dir)
    sweep.write_stages(sweep.plan(results), results)
    assert json.loads(sweep.stages_path.read_text())["complete"] is True


# ---------------------------------------------------------------------------------------------
# one selection rule for the sweep and the tables
# ---------------------------------------------------------------------------------------------
def test_pick_lr_is_the_protocol_rule() -> None:
    assert sw.pick_lr({1e-2: 0.8, 3e-2: 0.9, 1e-1: 0.9}) == 3e-2  # ties: the smaller LR
    assert sw.pick_lr({1e-2: -math.inf, 3e-2: -math.inf}) == 1e-2  # all diverged: the smallest
    assert sw.pick_lr({}) is None
    assert sw.selection_score("diverged", 0.99) == -math.inf and sw.selection_score("finished", 0.5) == 0.5
    assert sw.selection_score("finished", float("nan")) == -math.inf


class ConfigExecutor(FakeExecutor):
    """Records with the config fields the tables read; seed 0 prefers lr 0.01, seed 1 does badly there."""

    VAL = {(0.01, 0): 0.80, (0.0316, 0): 0.79, (0.01, 1): 0.70, (0.0316, 1): 0.79}

    def run(self, runs: list[sw.Run], done: Any) -> None:
        for r in runs:
            acc = 0.6 if r.lr is None else self.VAL[(r.lr, r.seed)]
            cfg = {"data": "fashion-mnist", "model": r.model, "opt": r.opt, "bs": r.bs, "seed": r.seed,
                   "sched": r.sched, "lr": r.lr, "epochs": 10}
            rec = {"run_id": r.run_id, "config": cfg, "outcome": {"status": "finished", "error": None},
                   "final": {"val_acc": acc, "test_acc": acc}}
            self.sweep.runs_dir.mkdir(parents=True, exist_ok=True)
            (self.sweep.runs_dir / f"{r.run_id}.json").write_text(json.dumps(rec))
            done(r, sw.Outcome(0, None, 0.01))


@pytest.mark.timeout(60)
def test_the_tables_lr_is_the_sweeps_choice(tmp_path: Path) -> None:
    from autolr import results as res

    spec = sw.spec_from_dict(base_spec(batch_sizes=[256], seeds=2, max_extensions=0, schedulers={
        "fixed": {"lr": [1e-2, 3.16e-2], "warmup_epochs": 1}}))
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    d = sw.Driver(sweep, ConfigExecutor(sweep), max_runs=None)
    assert d.tune() and d.final()
    chosen = sweep.plan(d.results).grids[("fixed", "cnn_fashion", "adamp", 256)].chosen
    assert chosen == 0.01  # seed 0's best; the mean over the seeds run at each LR would prefer 0.0316
    df, _ = res.build_table(sweep.dir, write=False)
    assert df.set_index("method").loc["fixed", "lr"] == chosen
    # from the records alone (no stages.json) the table picks by the same rule
    sweep.stages_path.unlink()
    df, _ = res.build_table(sweep.dir, write=False)
    assert df.set_index("method").loc["fixed", "lr"] == chosen


@pytest.mark.timeout(60)
def test_tuning_from_another_sweep_runs_the_finals_at_its_choices(tmp_path: Path) -> None:
    # the GPU sweep tuned; the CPU sweep reruns its finals at the LRs it chose, tuning nothing itself
    root = tmp_path / "results"
    gpu = sw.Sweep(sw.spec_from_dict(base_spec(name="gpu")), root, tmp_path / "ckpt")
    for _ in range(4):
        fill(gpu, gpu.plan(sw.load_results(gpu.runs_dir)).tuning_runs,
             lambda r: ("finished", 0.9 if r.lr == 3.16e-3 or (r.method != "fixed" and r.lr == 1e-2) else 0.5))
    gplan = gpu.plan(sw.load_results(gpu.runs_dir))
    assert gplan.tuning_done
    gdoc = gpu.write_stages(gplan, sw.load_results(gpu.runs_dir))

    cpu = sw.Sweep(sw.spec_from_dict(base_spec(name="cpu", tuning_from="gpu")), root, tmp_path / "ckpt")
    plan = cpu.plan({})
    assert plan.tuning_runs == [] and not plan.waiting_finals and plan.tuning_done
    chosen = {(e["method"], e["bs"]): e["chosen_lr"] for e in gdoc["selection"] if e["chosen_lr"] is not None}
    for r in plan.final_runs:
        if r.method == "auto":
            continue
        assert r.lr == chosen[(r.method, 128 if r.method in ("linear", "legw") else r.bs)]
    # every final runs here, the tuning seed's too: none is "its tuning run" in this folder
    assert len([r for r in plan.final_runs if r.method == "fixed"]) == 3 * 2
    assert not any(cpu.reuses_tuning_run(m, b, sd) for m in ("fixed", "linear") for b in (128, 512) for sd in (0, 1))
    doc = cpu.stages_doc(plan, {})
    sel = {(e["method"], e["bs"]): e for e in doc["selection"]}
    assert sel[("fixed", 512)]["tuned_in"] == "gpu" and sel[("fixed", 512)]["chosen_lr"] == chosen[("fixed", 512)]
    assert sel[("fixed", 512)]["reason"].startswith("tuned in gpu: ")
    gsel = {(e["method"], e["bs"]): e for e in gdoc["selection"]}
    assert sel[("fixed", 512)]["trials"] == gsel[("fixed", 512)]["trials"]  # the source's runs, as recorded
    charge = {(e["method"], e["bs"]): e for e in doc["tuning_charge"]}
    gcharge = {(e["method"], e["bs"]): e for e in gdoc["tuning_charge"]}
    assert charge[("fixed", 512)]["runs"] == gcharge[("fixed", 512)]["runs"] == 3
    assert charge[("fixed", 512)]["tuned_in"] == "gpu" and charge[("linear", 128)]["charged"] == "once per grid"
    assert doc["spec"]["tuning_from"] == "gpu" and "tuning_from" not in gdoc["spec"]

    # the table charges the source's tuning runs, named, and counts none of them as missing here
    from autolr import results as res

    fill(cpu, plan.final_runs, lambda r: ("finished", 0.8))
    cpu.write_stages(cpu.plan(sw.load_results(cpu.runs_dir)), sw.load_results(cpu.runs_dir))
    df, md = res.build_table(cpu.dir, write=False)
    row = df[(df.method == "fixed") & (df.bs == 512)].iloc[0]
    assert row.tuning_runs == row.tuning_runs_done == 3 and row.tuned_in == "gpu"
    assert "PARTIAL" not in md and "tune 3 in gpu (" in md

    # another budget, another grid, a missing source: refused in one line
    other_grid = {"schedulers": {"fixed": {"lr": [1e-3], "warmup_epochs": 1}}}
    for over, what in (({"epochs": 20}, "its epochs is 10"), (other_grid, "scheduler fixed is"),
                       ({"tuning_from": "nowhere"}, "no readable")):
        bad = sw.Sweep(sw.spec_from_dict(base_spec(name="cpu2", **{"tuning_from": "gpu", **over})), root,
                       tmp_path / "ckpt")
        with pytest.raises(sw.SweepError, match=what):
            bad.plan({})
    with pytest.raises(sw.SweepError, match="names this sweep itself"):
        sw.spec_from_dict(base_spec(name="gpu", tuning_from="gpu"))


# ---------------------------------------------------------------------------------------------
# the peers (autolr/peers): no grid; their own optimizer; the range test charged as one run
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_peers_are_planned_without_grids_and_charged_their_own_way(tmp_path: Path) -> None:
    spec = sw.spec_from_dict(base_spec(opts=["adamp", "lamb"], batch_sizes=[256, 2048], seeds=2, schedulers={
        "auto": {}, "schedulefree": {}, "prodigy": {}, "rangetest": {}}))
    assert not any(spec.is_tuned(m) for m in spec.schedulers) and spec.tuned_bs("rangetest") == ()
    sweep = sw.Sweep(spec, tmp_path / "results", tmp_path / "ckpt")
    sweep.validate()  # every run is one train.py accepts (no --opt for the optimizer-replacing peers)
    plan = sweep.plan({})
    assert not plan.tuning_runs and not plan.waiting_finals and plan.tuning_done
    finals = {(r.method, r.opt, r.bs, r.seed): r for r in plan.final_runs}
    assert len(finals) == 4 * 2 * 2 * 2
    for m in ("schedulefree", "prodigy"):
        # their own optimizer: no --opt, so the run of each opt group is one run (run once, shown in both)
        assert all("--opt" not in r.argv and "--lr" not in r.argv for k, r in finals.items() if k[0] == m)
        assert finals[(m, "adamp", 256, 0)].run_id == finals[(m, "lamb", 256, 0)].run_id
        assert finals[(m, "adamp", 256, 0)].run_id != finals[(m, "adamp", 256, 1)].run_id
        assert "own-optimizer" in finals[(m, "lamb", 256, 0)].label()
    # the range test keeps the run's optimizer: one run per opt
    assert finals[("rangetest", "adamp", 256, 0)].run_id != finals[("rangetest", "lamb", 256, 0)].run_id
    assert "--lr" not in finals[("rangetest", "adamp", 256, 0)].argv

    # records of the range test's runs: its device seconds, read back for the tuning charge
    sweep.runs_dir.mkdir(parents=True)
    for (m, _opt, _bs, seed), r in finals.items():
        test = {"steps": 20, "device_seconds": 2.0 + seed}
        peer = {"peak_lr": 0.01, "range_test": test} if m == "rangetest" else None
        rec = {"run_id": r.run_id, "config": {}, "outcome": {"status": "finished", "error": None},
               "final": {"val_acc": 0.8, "test_acc": 0.8}, "timing": {"wall_seconds": 10.0}, "peer": peer}
        (sweep.runs_dir / f"{r.run_id}.json").write_text(json.dumps(rec))
    results = sw.load_results(sweep.runs_dir)
    doc = sweep.write_stages(sweep.plan(results), results)
    assert doc["complete"] and doc["missing_runs"] == 0
    sel = {(e["method"], e["opt"], e["bs"]): e for e in doc["selection"]}
    assert sel[("rangetest", "adamp", 256)]["reason"] == "its own LR range test, in each run"
    assert sel[("prodigy", "lamb", 2048)]["reason"] == "not tuned" and not sel[("prodigy", "lamb", 2048)]["tuned"]
    charge = {(c["method"], c["opt"], c["bs"]): c for c in doc["tuning_charge"]}
    assert set(charge) == {("rangetest", o, b) for o in ("adamp", "lamb") for b in (256, 2048)}
    c = charge[("rangetest", "adamp", 256)]
    assert c["runs"] == 1 and c["wall_seconds"] == 2.5 and len(c["run_ids"]) == 2  # the mean over its 2 finals


@pytest.mark.timeout(60)
def test_peers_take_no_lr_grid_and_are_no_lr_source(tmp_path: Path) -> None:
    with pytest.raises(sw.SweepError, match="rangetest finds its LR with a run of its own: it takes no lr grid"):
        sw.spec_from_dict(base_spec(schedulers={"rangetest": {"lr": [0.1]}}))
    with pytest.raises(sw.SweepError, match="prodigy is never tuned: it takes no lr grid"):
        sw.spec_from_dict(base_spec(schedulers={"prodigy": {"lr": [0.1]}}))
    # a control's LR is a switch LR that only AutoWU's family records
    with pytest.raises(sw.SweepError, match="lr_from 'prodigy' must name a never-tuned method of AutoWU's family"):
        sw.spec_from_dict(base_spec(schedulers={"prodigy": {}, "fixed@p": {"sched": "fixed", "lr_from": "prodigy"}}))


def test_a_switch_that_defaults_to_on_is_turned_off_by_its_no_form() -> None:
    from autolr.sweep.runs import _flags_to_argv

    assert _flags_to_argv({"sched": "autoplus", "rollback": False}) == ["--sched", "autoplus", "--no-rollback"]
    assert _flags_to_argv({"sched": "autoplus", "rollback": True}) == ["--sched", "autoplus", "--rollback"]
    assert _flags_to_argv({"resume": False, "lr": 0.0316}) == ["--lr", "0.0316"]  # store_true flags stay absent

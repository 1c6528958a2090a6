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
@pytest.mark.timeout(60)
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


@pytest.mark.timeout(60)
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
    assert sw._minutes("1-02:30:00") == 1590 and sw._minutes(90) == 90 and sw._mem_gb("512G") == 512
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
            records = list(runs_dir.glob("*.json"))
            ckpts = list(ckpt_dir.glob("*/last.pt"))
            if (records and ckpts) or len(records) >= 2:
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
    # a checkpoint left by the kill belongs to a run that had not finished
    ckpts = [c.parent.name for c in ckpt_dir.glob("*/last.pt")]
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

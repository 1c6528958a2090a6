"""End-to-end tests of train.py: real (small) runs through both loaders, the run record's
fields, gradient accumulation, DDP under torchrun (one node and two), kill-and-resume, bad input
and divergence.

Runs call ``train.main([...])`` in this process wherever they can; only torchrun and the
kill-and-resume tests start subprocesses. Fashion-MNIST runs read the real IDX files (Debian's
dataset-fashion-mnist); CIFAR-10 and ImageNet runs read small files written here in the real
formats (torchvision's pickles, an ImageFolder tree of JPEGs). Every test runs offline on CPU.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import importlib.util
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# numba reads these when first imported (by ffcv): the defaults of the Makefile, for bare pytest
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import train  # noqa: E402 - the script at the repository root (pytest's pythonpath)
from autolr import config, data, records  # noqa: E402
from autolr.registry import SCHEDULERS, flag_options  # noqa: E402

from fakes import write_fake_cifar  # noqa: E402

# runs whose micro-batch is not the recipe's 256 warn about it, as they should
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:micro-batch .* differs:UserWarning")]

HAS_FFCV = importlib.util.find_spec("ffcv") is not None
needs_ffcv = pytest.mark.skipif(not HAS_FFCV, reason="ffcv is not installed")

# Fashion-MNIST runs: 512 training examples, 4 full steps of 128 per epoch (2 micro-batches each).
# The validation split is odd-sized on purpose: under 2 ranks its strided shares (129 and 128
# examples) take different numbers of batches.
SUBSET, VAL, BS, MICRO = 512, 257, 128, 64
FASHION = ["--subset", str(SUBSET), "--val-size", str(VAL), "--bs", str(BS), "--micro-bs", str(MICRO)]
# every baseline peaks at 0.01 (linear: 0.02 per 256 examples at B = 128; legw: tuned at B0 = 128)
SCHED_FLAGS = {
    "auto": [],
    "linear": ["--lr", "0.02", "--warmup-epochs", "1"],
    "legw": ["--lr", "0.01", "--warmup-epochs", "1", "--legw-b0", "128"],
    "fixed": ["--lr", "0.01", "--warmup-epochs", "1"],
    "cosine": ["--lr", "0.01"],
    "constant": ["--lr", "0.01"],
}
#: the peers of AutoWU (autolr/peers): train.py --sched NAME
PEERS = ("schedulefree", "prodigy", "rangetest")
# the fields REPRODUCTION.md's "Run records" lists
RECORD_KEYS = {"schema", "run_id", "config", "git", "env", "outcome", "epochs", "final", "lr_trace", "autowu",
               "timing"}
EPOCH_KEYS = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "wall_seconds", "images_per_s"}
FINAL_KEYS = {"val_loss", "val_acc", "test_loss", "test_acc", "test_n", "val_n"}


def _fashion_available() -> bool:
    try:
        data._fashion_paths(Path("/nonexistent-autolr-root"), download=False)
    except data.DataError:
        return False
    return True


needs_fashion = pytest.mark.skipif(not _fashion_available(), reason="Fashion-MNIST is not installed here")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def fashion_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data root for every Fashion-MNIST run: its .beton files are written once."""
    if not _fashion_available():
        pytest.skip("Fashion-MNIST is not installed here")
    root = tmp_path_factory.mktemp("fashion-root")
    if HAS_FFCV:
        data.prepare_ffcv("fashion-mnist", root, subset=SUBSET, val_size=VAL)
    return root


def _env() -> dict[str, str]:
    return {**os.environ, "NUMBA_THREADING_LAYER": "omp", "NUMBA_CACHE_DIR": str(REPO / ".cache" / "numba"),
            "PYTHONUNBUFFERED": "1"}


def _dirs(tmp: Path, data_root: Path) -> list[str]:
    return ["--out", str(tmp / "out"), "--ckpt-dir", str(tmp / "ckpt"), "--data-root", str(data_root),
            "--progress", "off"]


def run_main(tmp: Path, data_root: Path, *flags: str) -> tuple[int, dict[str, Any] | None]:
    """train.main in this process; returns the exit code and the run's record (None if none)."""
    rc = train.main([*flags, *_dirs(tmp, data_root)])
    return rc, _only_record(tmp / "out")


def _only_record(out: Path) -> dict[str, Any] | None:
    files = sorted(out.glob("*.json")) if out.exists() else []
    assert len(files) <= 1, files
    return load_strict(files[0]) if files else None


def load_strict(path: Path) -> dict[str, Any]:
    """A record as JSON proper: NaN, Infinity and -Infinity tokens are errors."""
    def bad(token: str) -> None:
        raise ValueError(f"{path} holds {token}, which is not JSON")

    rec = json.loads(path.read_text(), parse_constant=bad)
    assert path.stem == rec["run_id"]
    return rec


def run_id_for(flags: list[str]) -> str:
    return config.run_id(config.resolve(config.build_parser().parse_args(flags)))


@pytest.mark.parametrize("sched", ["linear", "legw", "fixed"])
def test_default_warmup_is_part_of_the_run_id(sched: str) -> None:
    # the same run with and without the default spelled out is one run: one record, never run twice
    base = ["--sched", sched, "--lr", "0.01"]
    assert run_id_for(base) == run_id_for([*base, "--warmup-epochs", "5"]) != run_id_for(
        [*base, "--warmup-epochs", "4"])


def check_record(rec: dict[str, Any], *, epochs: int, steps_per_epoch: int, world: int = 1,
                 test_n: int | None = None, val_n: int | None = None, status: str = "finished") -> None:
    """Every field REPRODUCTION.md asks of a run record, and what they must hold."""
    assert RECORD_KEYS <= set(rec), RECORD_KEYS - set(rec)
    assert rec["schema"] == records.SCHEMA
    assert rec["run_id"] == config.run_id(rec["config"])
    # every flag, resolved defaults included
    flags = set(vars(config.build_parser().parse_args([])))
    sched = rec["config"]["sched"]
    # less the flags of other methods (and the baselines' LR flags for a method that takes no lr)
    method = SCHEDULERS[sched]
    dropped = {o.name for o, _ in flag_options()} - set(method.flags)
    if method.lr is None:
        dropped |= {"lr", "warmup_epochs", "legw_b0"}
    # sparse settings are recorded only when given (AutoWU's warmup path: the reference's when absent)
    dropped |= {f.name for f in dataclasses.fields(config.RunConfig) if f.metadata["sparse"]}
    if method.replaces_optimizer:  # Schedule-Free, Prodigy: their own optimizer, no --opt
        dropped |= {"opt"}
        assert "opt" not in rec["config"] and rec["schedule"]["optimizer"]
    assert flags - dropped <= set(rec["config"]), flags - dropped - set(rec["config"])
    for key in ({"model", "opt", "wd", "epochs", "micro_bs", "loader", "label_smoothing", "val_size"} - dropped):
        assert rec["config"][key] is not None, key
    assert set(rec["git"]) == {"commit", "dirty"}
    env = rec["env"]
    assert {"python", "torch", "device", "world_size", "micro_bs", "cpu_threads"} <= set(env)
    assert env["world_size"] == world and env["micro_bs"] * env["accum_steps"] * world == rec["config"]["bs"]
    assert rec["outcome"] == {"status": status, "error": None}
    assert rec["steps_per_epoch"] == steps_per_epoch and rec["total_steps"] == steps_per_epoch * epochs
    assert [row["epoch"] for row in rec["epochs"]] == list(range(1, len(rec["epochs"]) + 1))
    if status == "finished":
        assert len(rec["epochs"]) == epochs
    for row in rec["epochs"]:
        assert EPOCH_KEYS <= set(row), EPOCH_KEYS - set(row)
        assert row["wall_seconds"] > 0 and row["images_per_s"] > 0
        if status == "finished":
            assert math.isfinite(row["train_loss"]) and 0 <= row["train_acc"] <= 1
            assert math.isfinite(row["val_loss"]) and 0 <= row["val_acc"] <= 1
    final = rec["final"]
    assert FINAL_KEYS <= set(final)
    if test_n is not None:
        assert final["test_n"] == test_n  # evaluation sees every test example once
    if val_n is not None:
        assert final["val_n"] == val_n
    if status == "finished":
        assert 0 <= final["test_acc"] <= 1 and math.isfinite(final["test_loss"])
        # the last epoch's validation numbers are those of the final weights
        assert final["val_acc"] == rec["epochs"][-1]["val_acc"]
        assert final["val_loss"] == pytest.approx(rec["epochs"][-1]["val_loss"], rel=1e-9)
    trace = rec["lr_trace"]
    assert {"every", "step", "lr", "phase_change_steps"} <= set(trace)
    assert trace["every"] == 1 and trace["step"] == list(range(len(rec["epochs"]) * steps_per_epoch))
    assert all(lr >= 0 for lr in trace["lr"])
    timing = rec["timing"]
    assert timing["wall_seconds"] > 0 and timing["autowu_test_seconds"] >= 0 and "finished_at" in timing
    if sched == "auto":
        a = rec["autowu"]
        assert {"tests", "warmup_losses", "switch_step", "switch_lr", "switch_kind", "test_seconds"} <= set(a)
        assert a["switch_kind"] in ("test", "forced") and a["switch_lr"] > 0
        assert len(a["warmup_losses"]) == a["switch_step"]
        assert all(math.isfinite(v) for v in a["warmup_losses"])
        assert trace["phase_change_steps"] == [a["switch_step"]]
        assert timing["autowu_test_seconds"] == a["test_seconds"]
    else:
        assert rec["autowu"] is None
    if sched in PEERS:
        assert rec["peer"]["peak_lr"] > 0
    else:
        assert rec.get("peer") is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fake_imagenet(root: Path, n_train: int, n_val: int, classes: tuple[str, ...]) -> None:
    """An ImageFolder tree of small random JPEGs (imagenet/train/<class>/, imagenet/val/<class>/)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for official, n in (("train", n_train), ("val", n_val)):
        for c in classes:
            d = root / "imagenet" / official / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 100, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{c}_{i}.JPEG")


# ---------------------------------------------------------------------------------------------
# 1. Fashion-MNIST through FFCV with every scheduler
# ---------------------------------------------------------------------------------------------
def _warmup_cosine(step: int, peak: float, warmup: int, total: int) -> float:
    """REPRODUCTION.md's fixed warmup: linear to the peak over `warmup` steps, then cosine to 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


@needs_ffcv
@needs_fashion
@pytest.mark.timeout(180)
@pytest.mark.parametrize("sched", list(SCHED_FLAGS))
def test_fashion_ffcv_every_scheduler(sched: str, tmp_path: Path, fashion_root: Path) -> None:
    epochs, steps = 3, SUBSET // BS
    rc, rec = run_main(tmp_path, fashion_root, *FASHION, "--epochs", str(epochs), "--sched", sched,
                       *SCHED_FLAGS[sched])
    assert rc == 0 and rec is not None
    check_record(rec, epochs=epochs, steps_per_epoch=steps, test_n=10000, val_n=VAL)
    assert rec["config"]["loader"] == "ffcv" and rec["env"]["accum_steps"] == BS // MICRO
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").rglob("*.pt"))  # no --keep-ckpt
    lrs = rec["lr_trace"]["lr"]
    total = epochs * steps
    if sched in ("fixed", "linear", "legw"):
        # peak 0.01 for all three; warmup 1 epoch = 4 steps
        assert rec["schedule"]["peak_lr"] == pytest.approx(0.01, rel=1e-12)
        assert rec["schedule"]["warmup_steps"] == steps
        for s in (0, 1, 3, 4, 6, 9, total - 1):
            assert lrs[s] == pytest.approx(_warmup_cosine(s, 0.01, steps, total), rel=1e-12), s
        assert rec["lr_trace"]["phase_change_steps"] == [steps]
        # an epoch's row holds the LR at its end: that of the next epoch's first step (0 after the last)
        assert [row["lr"] for row in rec["epochs"]] == pytest.approx(
            [_warmup_cosine(e * steps, 0.01, steps, total) if e < epochs else 0.0 for e in range(1, epochs + 1)],
            abs=1e-15)
    elif sched == "cosine":
        assert lrs == pytest.approx([_warmup_cosine(s, 0.01, 0, total) for s in range(total)], rel=1e-12)
    elif sched == "constant":
        assert lrs == [0.01] * total
    else:
        a = rec["autowu"]
        # the warmup is exponential from init_lr (1e-5) to max_lr (1) over M = T/2 = 6 steps
        m = total // 2
        assert lrs[: a["switch_step"]] == pytest.approx(
            [1e-5 * (1 / 1e-5) ** (s / m) for s in range(a["switch_step"])], rel=1e-9)
        assert len(a["tests"]) >= 1 and all("positive" in t and "seconds" in t for t in a["tests"])
        assert lrs[a["switch_step"]] == pytest.approx(a["switch_lr"], rel=1e-12)
    assert rec["schedule"]["total_steps"] == total


# ---------------------------------------------------------------------------------------------
# 2. CIFAR-10 files and an ImageFolder tree, written here, through FFCV
# ---------------------------------------------------------------------------------------------
@needs_ffcv
@pytest.mark.timeout(180)
def test_cifar10_files_to_beton_to_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    write_fake_cifar(root, "cifar10", n_train=300, n_test=70)
    flags = ["--data", "cifar10", "--model", "resnet20_cifar", "--val-size", "50", "--bs", "64", "--epochs", "1",
             "--sched", "constant", "--lr", "0.001", "--loader-workers", "2"]
    rc, rec = run_main(tmp_path, root, *flags)
    assert rc == 0 and rec is not None
    # 250 examples in the training pool: 3 full batches of 64
    check_record(rec, epochs=1, steps_per_epoch=250 // 64, test_n=70, val_n=50)
    assert rec["config"]["model"] == "resnet20_cifar" and rec["data"]["in_chans"] == 3
    betons = sorted(p.name for p in (root / "ffcv" / "cifar10").glob("*.beton"))
    assert betons == ["test.beton", "train-val50.beton", "val-val50.beton"]
    # a batch larger than what is really on disk (the official sizes would allow it): a usage error
    capsys.readouterr()
    flags[flags.index("--bs") + 1] = "256"
    rc = train.main([*flags, *_dirs(tmp_path / "too-big", root)])
    _assert_usage_error(capsys, rc, "fewer than one global batch", tmp_path / "too-big")


# FFCV 1.0.2 with numba 0.68 prints "Exception ignored in finalizer ... KeyError" when a loader with a
# JPEG decoder is garbage-collected (plain FFCV does too); it is harmless
@needs_ffcv
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.timeout(240)
def test_imagenet_tree_to_beton_to_training(tmp_path: Path) -> None:
    root = tmp_path / "data"
    classes = ("n01440764", "n01443537")
    write_fake_imagenet(root, n_train=5, n_val=2, classes=classes)
    # 10 training images: 2 for validation, 8 to train on in 2 steps of 4 (micro-batches of 2)
    flags = ["--data", "imagenet", "--model", "resnet18", "--val-size", "2", "--bs", "4", "--micro-bs", "2",
             "--epochs", "1", "--sched", "cosine", "--lr", "0.001", "--loader-workers", "2"]
    rc, rec = run_main(tmp_path, root, *flags)
    gc.collect()  # the finalizer noise above, inside this test's warning filter
    assert rc == 0 and rec is not None
    check_record(rec, epochs=1, steps_per_epoch=2, test_n=2 * len(classes), val_n=2)
    assert rec["config"]["model"] == "resnet18" and rec["data"]["num_classes"] == 1000


# ---------------------------------------------------------------------------------------------
# 3. Gradient accumulation is one big batch (a model without batch norm)
# ---------------------------------------------------------------------------------------------
@needs_fashion
@pytest.mark.timeout(180)
def test_accumulation_equals_one_big_batch(tmp_path: Path, fashion_root: Path) -> None:
    base = ["--model", "mlp_tiny", "--loader", "tensor", "--subset", "512", "--val-size", str(VAL), "--bs", "256",
            "--epochs", "2", "--sched", "fixed", "--lr", "0.01", "--warmup-epochs", "1", "--keep-ckpt"]
    runs = {}
    for micro in (256, 64):
        d = tmp_path / f"micro{micro}"
        rc, rec = run_main(d, fashion_root, *base, "--micro-bs", str(micro))
        assert rc == 0 and rec is not None
        assert rec["env"]["accum_steps"] == 256 // micro
        ckpt = torch.load(d / "ckpt" / rec["run_id"] / "last.pt", map_location="cpu", weights_only=False)
        runs[micro] = (rec, ckpt)
    (big, big_ckpt), (small, small_ckpt) = runs[256], runs[64]
    assert big["run_id"] != small["run_id"]  # the micro-batch is part of the config
    for key, w in big_ckpt["model"].items():
        torch.testing.assert_close(small_ckpt["model"][key], w, rtol=0, atol=1e-5, msg=key)
    for a, b in zip(big["epochs"], small["epochs"], strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["train_acc"] == b["train_acc"]
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    assert big["final"]["test_loss"] == pytest.approx(small["final"]["test_loss"], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# 4. DDP under torchrun: one node with two processes, and two nodes on localhost
# ---------------------------------------------------------------------------------------------
def _torchrun_flags(tmp: Path, root: Path) -> list[str]:
    # 2 ranks x 2 micro-batches of 32; 3 epochs, so that AutoWU's test runs (and is broadcast) once
    return [*FASHION[:-1], "32", "--epochs", "3", "--sched", "auto", "--loader-workers", "1", *_dirs(tmp, root)]


def _ddp_env() -> dict[str, str]:
    # two processes on two shared cores: one thread each
    return {**_env(), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}


def _check_ddp_record(tmp: Path) -> None:
    rec = _only_record(tmp / "out")
    assert rec is not None
    check_record(rec, epochs=3, steps_per_epoch=SUBSET // BS, world=2, test_n=10000, val_n=VAL)
    assert rec["env"]["per_rank_bs"] == BS // 2 and rec["env"]["accum_steps"] == 2
    assert len(rec["autowu"]["tests"]) >= 1


@needs_ffcv
@needs_fashion
@pytest.mark.timeout(300)
def test_torchrun_two_processes(tmp_path: Path, fashion_root: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(REPO / "train.py"), *_torchrun_flags(tmp_path, fashion_root)]
    out = subprocess.run(cmd, cwd=REPO, env=_ddp_env(), capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    _check_ddp_record(tmp_path)


@needs_ffcv
@needs_fashion
@pytest.mark.timeout(300)
def test_torchrun_two_nodes_on_localhost(tmp_path: Path, fashion_root: Path) -> None:
    port, rdzv_id = free_port(), uuid.uuid4().hex[:12]
    procs = []
    for node in range(2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
               "--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "--rdzv_id", rdzv_id, str(REPO / "train.py"), *_torchrun_flags(tmp_path, fashion_root)]
        log = open(tmp_path / f"node{node}.log", "w")  # noqa: SIM115 - closed below
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=_ddp_env(), stdout=log, stderr=subprocess.STDOUT), log))
    try:
        codes = [p.wait(timeout=280) for p, _ in procs]
    finally:
        for p, log in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            log.close()
    logs = "\n".join((tmp_path / f"node{n}.log").read_text()[-3000:] for n in range(2))
    assert codes == [0, 0], logs
    _check_ddp_record(tmp_path)


# ---------------------------------------------------------------------------------------------
# 5. Kill and resume: the record and the weights of an uninterrupted run
# ---------------------------------------------------------------------------------------------
def _strip_timing(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without the fields REPRODUCTION.md lets differ after a restart (timing only)."""
    rec = copy.deepcopy(rec)
    rec.pop("timing")
    for row in rec["epochs"]:
        row.pop("wall_seconds")
        row.pop("images_per_s")
    if rec["autowu"] is not None:
        rec["autowu"].pop("test_seconds")
        for t in rec["autowu"]["tests"]:
            t.pop("seconds")
    return rec


def _tensors_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _tensors_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _tensors_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@needs_fashion
@pytest.mark.timeout(300)
@pytest.mark.parametrize("loader", ["tensor", pytest.param("ffcv", marks=needs_ffcv)])
def test_kill_and_resume_is_exact(loader: str, tmp_path: Path, fashion_root: Path) -> None:
    epochs = 4
    flags = [*FASHION, "--epochs", str(epochs), "--sched", "auto", "--loader", loader, "--keep-ckpt", "--resume",
             *_dirs(tmp_path, fashion_root)]
    if loader == "ffcv":
        flags += ["--loader-workers", "2"]
    run_id = run_id_for(flags)
    record = tmp_path / "out" / f"{run_id}.json"
    ckpt = tmp_path / "ckpt" / run_id / "last.pt"

    # A: uninterrupted (--resume finds no checkpoint and starts afresh), here in this process
    assert train.main(flags) == 0
    ref_dir = tmp_path / "uninterrupted"
    ref_dir.mkdir()
    record.rename(ref_dir / record.name)
    ckpt.rename(ref_dir / "last.pt")
    ref = load_strict(ref_dir / record.name)

    # B: the same command in a subprocess, SIGKILLed once its first checkpoint exists ...
    cmd = [sys.executable, str(REPO / "train.py"), *flags]
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while not ckpt.exists():
                assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint within 240 s"
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not record.exists(), "the run finished before it was killed"
    done = torch.load(ckpt, map_location="cpu", weights_only=False)["epoch"]
    assert 1 <= done < epochs

    # ... then resumed to the end; FFCV with another worker count, which must not change a thing
    if loader == "ffcv":
        cmd[cmd.index("--loader-workers") + 1] = "1"
    out = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"resuming run {run_id}" in out.stdout
    resumed = load_strict(record)
    check_record(resumed, epochs=epochs, steps_per_epoch=SUBSET // BS, test_n=10000, val_n=VAL)
    if loader == "ffcv":
        assert (resumed["config"].pop("loader_workers"), ref["config"].pop("loader_workers")) == (1, 2)
    assert _strip_timing(resumed) == _strip_timing(ref)
    # the AutoWU test time of the killed part is counted too: the total covers every test's own time
    a = resumed["autowu"]
    assert a["tests"] and a["test_seconds"] >= sum(t["seconds"] for t in a["tests"])

    # the final weights, optimizer state and RNG states are bitwise those of the uninterrupted run
    a = torch.load(ref_dir / "last.pt", map_location="cpu", weights_only=False)
    b = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert a["epoch"] == b["epoch"] == epochs
    _tensors_equal(a["model"], b["model"], "model")
    _tensors_equal(a["optimizer"], b["optimizer"], "optimizer")
    _tensors_equal(a["rng"]["torch"], b["rng"]["torch"], "rng")
    for state in (a["scheduler"], b["scheduler"]):
        state.pop("test_seconds")  # timing
        for t in state["history"]:
            t.pop("seconds")
    assert a["scheduler"] == b["scheduler"]


# ---------------------------------------------------------------------------------------------
# 6. Bad input: exit code 2, one line on stderr, nothing written
# ---------------------------------------------------------------------------------------------
BAD_INPUTS = {
    "unknown model": (["--model", "no_such_model_xyz"], "unknown model"),
    "lr with auto": (["--sched", "auto", "--lr", "0.1"], "--lr is not accepted"),
    "fixed without lr": (["--sched", "fixed"], "needs --lr"),
    "batch larger than the split": (["--subset", "512", "--bs", "1024"], "larger than the training split"),
    "micro-batch not a divisor": (["--bs", "256", "--micro-bs", "100"], "does not divide"),
    "subset 0": (["--subset", "0"], "--subset must be a positive integer"),
    "val size 0": (["--val-size", "0"], "--val-size must be a positive integer"),
    "epochs 0": (["--epochs", "0"], "--epochs must be a positive integer"),
    "micro-batch 0": (["--micro-bs", "0"], "--micro-bs must be a positive integer"),
    "tensor loader with imagenet": (["--data", "imagenet", "--loader", "tensor"], "--loader tensor"),
    "warmup longer than the budget": (["--sched", "fixed", "--lr", "0.1", "--epochs", "3", "--warmup-epochs", "5"],
                                      "leaves no decay"),
    "weight decay nan": (["--wd", "nan"], "--wd must be finite"),
    "weight decay inf": (["--wd", "inf"], "--wd must be finite"),
    "negative seed": (["--seed", "-1"], "--seed must lie in"),
    "unknown device": (["--device", "tpu"], "use cpu, cuda or cuda:N"),
    "validation set as large as the data": (["--val-size", "60000"], "must leave some for training"),
    "micro-batch larger than the batch": (["--bs", "512", "--micro-bs", "2048"], "larger than the per-process"),
    "model for another resolution": (["--model", "vit_tiny_patch4_32"], "does not take fashion-mnist images"),
    # issue 12, items 8 and 12
    "warmup of 1e308 epochs": (["--sched", "fixed", "--lr", "0.1", "--warmup-epochs", "1e308"], "leaves no decay"),
    "legw warmup of inf epochs": (["--sched", "legw", "--lr", "0.1", "--warmup-epochs", "inf"],
                                  "--warmup-epochs must be finite"),
    "max-lr / init-lr overflows": (["--init-lr", "1e-320", "--max-lr", "1e300", "--subset", "512", "--epochs", "2",
                                    "--loader", "tensor"], "overflows"),
    "device not in this build": (["--device", "mps"], "--device mps: not available"),
    "validation set larger than the data": (["--val-size", "70000", "--subset", "512"],
                                            "the validation split must leave some for training; pick a --val-size "
                                            "from 1 to 59999"),
    # the peers (issue 10): their own optimizer, LR and warmup
    "opt with schedulefree": (["--sched", "schedulefree", "--opt", "adamw"],
                              "--opt is not accepted with --sched schedulefree: Schedule-Free AdamW trains with its "
                              "own optimizer"),
    "opt with prodigy": (["--sched", "prodigy", "--opt", "adamp"], "--opt is not accepted with --sched prodigy"),
    "lr with rangetest": (["--sched", "rangetest", "--lr", "0.1"], "--lr is not accepted with --sched rangetest"),
    "warmup with prodigy": (["--sched", "prodigy", "--warmup-epochs", "2"],
                            "--warmup-epochs is not accepted with --sched prodigy"),
    "AutoWU's range with a peer": (["--sched", "schedulefree", "--init-lr", "1e-4"],
                                   "--init-lr is for --sched auto/autoplus only, not schedulefree"),
    "AutoWU's option with a baseline": (["--sched", "fixed", "--lr", "0.1", "--decay", "constant_cosine"],
                                        "--decay is for --sched auto/autoplus only, not fixed"),
    "rangetest within its warmup": (["--sched", "rangetest", "--epochs", "5"],
                                    "rangetest warms up over 5 epochs, which leaves no decay in a run of 5 epochs"),
}


def _assert_usage_error(capsys: pytest.CaptureFixture[str], rc: int, match: str, tmp: Path) -> None:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), err
    assert match in lines[0], err
    assert "Traceback" not in err
    written = [p for p in tmp.rglob("*") if p.is_file() and p.suffix in (".json", ".pt")]
    assert not written, written


@pytest.mark.timeout(60)
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags, match = BAD_INPUTS[case]
    # an empty data root: none of these may get as far as reading data
    rc = train.main([*flags, *_dirs(tmp_path, tmp_path / "data")])
    _assert_usage_error(capsys, rc, match, tmp_path)


@pytest.mark.timeout(60)
def test_batch_smaller_than_world_size(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    for k, v in {"WORLD_SIZE": "4", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    rc = train.main(["--bs", "2", "--micro-bs", "2", *_dirs(tmp_path, tmp_path / "data")])
    _assert_usage_error(capsys, rc, "does not split over 4 processes", tmp_path)
    assert not dist.is_initialized()  # refused before any process group was started


@pytest.mark.timeout(60)
@pytest.mark.parametrize("loader", ["tensor", pytest.param("ffcv", marks=needs_ffcv)])
def test_missing_cifar_data(loader: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "data").mkdir()
    rc = train.main(["--data", "cifar10", "--model", "resnet20_cifar", "--loader", loader, "--sched", "constant",
                     "--lr", "0.1", *_dirs(tmp_path, tmp_path / "data")])
    _assert_usage_error(capsys, rc, "cifar-10-batches-py", tmp_path)
    assert not list((tmp_path / "data").rglob("*.beton"))


@pytest.mark.timeout(60)
def test_corrupt_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--resume", *_dirs(tmp_path, tmp_path / "data")]
    ckpt = tmp_path / "ckpt" / run_id_for(flags) / "last.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"\x80\x02 not a checkpoint")
    rc = train.main(flags)
    ckpt.unlink()  # ours, not the run's
    _assert_usage_error(capsys, rc, "unreadable", tmp_path)
    # readable, this run's id, but not the shape of a checkpoint
    torch.save({"run_id": run_id_for(flags), "epoch": 1}, ckpt)
    rc = train.main(flags)
    ckpt.unlink()
    _assert_usage_error(capsys, rc, "unreadable (KeyError", tmp_path)


@pytest.mark.timeout(60)
def test_unknown_dataset_is_argparse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["--data", "mnist", *_dirs(tmp_path, tmp_path / "data")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "train.py: error: argument --data: invalid choice" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # the error, not the usage's 15 lines


# a run that finishes in seconds where train.py lacked the check under test (the test fails, not hangs)
SMALL = ["--model", "mlp_tiny", "--loader", "tensor", "--subset", "256", "--epochs", "1"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--out", "--ckpt-dir", "--data-root", "--tensorboard"])
def test_folder_that_is_a_file(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # found before training (issue 12, item 1), not after the whole run
    (tmp_path / "README.md").write_text("a file\n")
    rc = train.main([*SMALL, *_dirs(tmp_path, tmp_path / "data"), flag, str(tmp_path / "README.md" / "runs")])
    _assert_usage_error(capsys, rc, f"{flag} {tmp_path / 'README.md' / 'runs'}: {tmp_path / 'README.md'} is a file",
                        tmp_path)


@pytest.mark.timeout(60)
@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
@pytest.mark.parametrize("flag", ["--out", "--ckpt-dir"])
def test_unwritable_folder(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        rc = train.main([*SMALL, *_dirs(tmp_path, tmp_path / "data"), flag, str(locked / "runs")])
    finally:
        locked.chmod(0o700)
    _assert_usage_error(capsys, rc, "is not writable", tmp_path)


# ---------------------------------------------------------------------------------------------
# 6b. One process per run, and a finished record is kept (issue 12, item 10)
# ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_second_process_on_the_same_run_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autolr.files import FileLock

    flags = [*SMALL, "--resume", *_dirs(tmp_path, tmp_path / "data")]
    lock = tmp_path / "ckpt" / f"{run_id_for(flags)}.lock"
    with FileLock(lock, remove=True):  # as the first process holds it while it trains
        rc = train.main(flags)
    _assert_usage_error(capsys, rc, "is being trained by another process (pid", tmp_path)
    assert not lock.exists()  # the holder removes it on release


@pytest.mark.timeout(60)
def test_finished_record_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [*SMALL, *_dirs(tmp_path, tmp_path / "data")]
    path = tmp_path / "out" / f"{run_id_for(flags)}.json"
    path.parent.mkdir()
    for status in ("finished", "diverged"):
        text = json.dumps({"schema": 1, "run_id": path.stem, "config": {}, "outcome": {"status": status}})
        path.write_text(text)
        # without --resume: refused, one line, the record untouched
        rc = train.main(flags)
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("train.py: error: run ") and "--overwrite" in err, err
        assert len(err.strip().splitlines()) == 1
        # --resume of a finished run whose checkpoint is gone: nothing to do, nothing retrained
        rc = train.main([*flags, "--resume"])
        captured = capsys.readouterr()
        assert rc == 0 and "nothing to resume" in captured.out and captured.err == "", captured
        assert path.read_text() == text
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [path.name]


# ---------------------------------------------------------------------------------------------
# 6c. Interrupts: one line that says where the checkpoint is and how to resume (issue 12, item 9)
# ---------------------------------------------------------------------------------------------
@needs_fashion
@pytest.mark.timeout(900)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_keeps_the_checkpoint_and_says_how_to_resume(sig: signal.Signals, tmp_path: Path,
                                                                fashion_root: Path) -> None:
    # epochs enough that the run cannot end between its first checkpoint and the signal
    flags = ["--model", "mlp_tiny", "--loader", "tensor", "--subset", "512", "--val-size", str(VAL), "--bs", "256",
             "--epochs", "300", "--sched", "cosine", "--lr", "0.01", *_dirs(tmp_path, fashion_root)]
    rid = run_id_for(flags)
    ckpt = tmp_path / "ckpt" / rid / "last.pt"
    # a test suite started in the background (nohup make test &) inherits SIGINT ignored, as would the
    # run: give it the disposition of a terminal's Ctrl-C, which is what this test is about
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *flags], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 600
        while not ckpt.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.02)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"train.py: stopped by {sig.name}; the checkpoint "), err
    assert f"is kept in {ckpt}; resume with: " in lines[0]
    assert ckpt.exists() and not (tmp_path / "out" / f"{rid}.json").exists()
    assert not (tmp_path / "ckpt" / f"{rid}.lock").exists()
    # the command it prints resumes the run (here only checked to parse and carry --resume)
    cmd = shlex.split(lines[0].split("resume with: ", 1)[1])
    assert cmd[:2] == ["python", "train.py"] and "--resume" in cmd
    assert run_id_for(cmd[2:]) == rid


# ---------------------------------------------------------------------------------------------
# 6d. TensorBoard, threads, evaluation batch, a temporary left by a killed save
# ---------------------------------------------------------------------------------------------
@needs_fashion
@pytest.mark.timeout(300)
def test_tensorboard_and_a_leftover_temporary(tmp_path: Path, fashion_root: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    epochs, steps = 3, SUBSET // BS
    flags = [*FASHION, "--loader", "tensor", "--epochs", str(epochs), "--sched", "auto", "--tensorboard",
             str(tmp_path / "tb")]
    rid = run_id_for([*flags, *_dirs(tmp_path, fashion_root)])
    # what a SIGKILL during the checkpoint's save leaves behind
    stale = tmp_path / "ckpt" / rid / f".last.pt.{os.getpid() + 100000}.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    rc, rec = run_main(tmp_path, fashion_root, *flags)
    assert rc == 0 and rec is not None
    check_record(rec, epochs=epochs, steps_per_epoch=steps, test_n=10000, val_n=VAL)
    assert not stale.exists()
    assert rec["config"]["tensorboard"] == str(tmp_path / "tb") and rec["run_id"] == rid  # not part of the id
    # evaluation runs at the larger batch; the thread count that computed the numbers is recorded
    assert rec["env"]["eval_micro_bs"] == train.EVAL_MICRO_BS and rec["env"]["cpu_threads"] == train.cpu_threads()
    assert rec["env"]["torch_interop_threads"] >= 1

    acc = EventAccumulator(str(tmp_path / "tb" / rid))
    acc.Reload()
    scalars = {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}
    total = epochs * steps
    assert [e.step for e in scalars["train/lr"]] == list(range(total))
    assert [e.value for e in scalars["train/lr"]] == pytest.approx(rec["lr_trace"]["lr"], rel=1e-6)
    assert [e.step for e in scalars["train/loss_step"]] == list(range(total))
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert [e.step for e in scalars[tag]] == list(range(1, epochs + 1)), tag
    assert [e.value for e in scalars["val/acc"]] == pytest.approx([r["val_acc"] for r in rec["epochs"]], rel=1e-6)
    assert [(e.step, e.value) for e in scalars["test/acc"]] == [(epochs, pytest.approx(rec["final"]["test_acc"]))]
    tests = rec["autowu"]["tests"]
    assert len(tests) >= 1
    for tag in ("autowu/p_mean", "autowu/positive"):
        assert [e.step for e in scalars[tag]] == [t["step"] for t in tests], tag
    assert [e.value for e in scalars["autowu/positive"]] == [float(t["positive"]) for t in tests]


# ---------------------------------------------------------------------------------------------
# 7. Divergence
# ---------------------------------------------------------------------------------------------
@needs_fashion
@pytest.mark.timeout(120)
def test_diverged_run_is_recorded(tmp_path: Path, fashion_root: Path) -> None:
    # AdamP's steps are about lr in size: at 1e30 the weights overflow float32 within a step
    rc, rec = run_main(tmp_path, fashion_root, "--loader", "tensor", "--subset", "512", "--val-size", str(VAL),
                       "--epochs", "4", "--sched", "constant", "--lr", "1e30")
    assert rc == 3 and rec is not None  # load_strict: no NaN or Infinity tokens in the file
    check_record(rec, epochs=4, steps_per_epoch=2, test_n=10000, val_n=VAL, status="diverged")
    # the first step's loss is that of the initial weights (finite); the next epoch is all non-finite
    assert len(rec["epochs"]) == 2
    assert rec["epochs"][-1]["train_loss"] is None and rec["epochs"][-1]["nonfinite_steps"] == 2
    assert rec["final"]["epochs_done"] == 2 and rec["final"]["test_loss"] is None
    assert "NaN" not in (tmp_path / "out" / f"{rec['run_id']}.json").read_text()


# ---------------------------------------------------------------------------------------------
# 8. The peers (autolr/peers): Schedule-Free AdamW, Prodigy + cosine, the LR range test
# ---------------------------------------------------------------------------------------------
# 6 epochs of 4 steps: the range test's schedule warms up over 5 of them
PEER_EPOCHS = 6
PEER_FLAGS = [*FASHION, "--epochs", str(PEER_EPOCHS)]


def _strip_peer_timing(rec: dict[str, Any]) -> dict[str, Any]:
    """_strip_timing, and the range test's own seconds (a resumed run carries the first process's)."""
    rec = _strip_timing(rec)
    test = (rec.get("peer") or {}).get("range_test")
    if test is not None:
        test.pop("wall_seconds")
        test.pop("device_seconds")
    return rec


def _checkpoint(tmp: Path, rec: dict[str, Any]) -> dict[str, Any]:
    return torch.load(tmp / "ckpt" / rec["run_id"] / "last.pt", map_location="cpu", weights_only=False)


@needs_fashion
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sched", PEERS)
def test_peer_end_to_end(sched: str, tmp_path: Path, fashion_root: Path) -> None:
    from autolr.peers import schedulefree

    rc, rec = run_main(tmp_path, fashion_root, *PEER_FLAGS, "--loader", "tensor", "--sched", sched, "--keep-ckpt")
    assert rc == 0 and rec is not None
    steps, total = SUBSET // BS, SUBSET // BS * PEER_EPOCHS
    check_record(rec, epochs=PEER_EPOCHS, steps_per_epoch=steps, test_n=10000, val_n=VAL)
    lrs, peer, ckpt = rec["lr_trace"]["lr"], rec["peer"], _checkpoint(tmp_path, rec)
    if sched == "schedulefree":
        # AlgoPerf's configuration: lr 0.0025 after a warmup of int(0.015 T) steps (none at T = 24)
        assert rec["schedule"]["optimizer"] == "AdamWScheduleFree" and rec["schedule"]["warmup_steps"] == 0
        assert lrs == [schedulefree.ALGOPERF["lr"]] * total and peer["peak_lr"] == schedulefree.ALGOPERF["lr"]
        assert peer["bn_batches"] == steps * BS // MICRO  # every micro-batch of an epoch (fewer than 50)
        # saved at x, in eval mode: the model a user wants, and the state a resume expects
        assert ckpt["optimizer"]["param_groups"][0]["train_mode"] is False
    elif sched == "prodigy":
        # the trace is the step size d·lr: d0 = 1e-6 at the cosine's start, d growing, the cosine to 0
        assert rec["schedule"]["optimizer"] == "Prodigy"
        assert lrs[0] == pytest.approx(1e-6, rel=1e-12) and max(lrs) > 10 * lrs[0]
        assert peer["d"] == peer["peak_lr"] == ckpt["optimizer"]["param_groups"][0]["d"] > peer["d0"] == 1e-6
        assert peer["max_step_lr"] == max(lrs) and peer["steps"] == total
        ds = [lr / (0.5 * (1 + math.cos(math.pi * s / total))) for s, lr in enumerate(lrs)]
        assert all(b >= a * (1 - 1e-9) for a, b in zip(ds, ds[1:], strict=False)), "d never decreases"
    else:
        test = peer["range_test"]
        # its cost: its steps (at most 20 here: T // 10 < 20), the images they took, its device time
        assert test["steps"] == len(test["lrs"]) == len(test["losses"]) <= 20
        assert test["images"] == test["steps"] * BS and 0 < test["device_seconds"] == test["wall_seconds"]
        assert rec["timing"]["wall_seconds"] > test["wall_seconds"]  # the run's time includes its test
        assert peer["peak_lr"] == test["peak_lr"] == test["lr_at_min"] / 10 == rec["schedule"]["peak_lr"]
        assert test["stop"] in ("completed", "diverged", "nonfinite")
        assert rec["schedule"]["warmup_steps"] == 5 * steps
        assert lrs == pytest.approx([_warmup_cosine(s, peer["peak_lr"], 5 * steps, total) for s in range(total)],
                                    rel=1e-12)
        assert ckpt["range_test"]["peak_lr"] == peer["peak_lr"]


@needs_fashion
@pytest.mark.timeout(300)
@pytest.mark.parametrize("loader", ["tensor", pytest.param("ffcv", marks=needs_ffcv)])
def test_rangetest_restores_the_weights_and_trains_as_fixed_at_its_peak(loader: str, tmp_path: Path,
                                                                         fashion_root: Path) -> None:
    """The test runs from the initial weights and restores everything: the training after it is
    bitwise that of `fixed` with the same peak and 5-epoch warmup, with no test before it."""
    flags = [*PEER_FLAGS, "--loader", loader, "--keep-ckpt"]
    rc, rt = run_main(tmp_path / "rangetest", fashion_root, *flags, "--sched", "rangetest")
    assert rc == 0 and rt is not None
    peak = rt["peer"]["peak_lr"]
    rc, fx = run_main(tmp_path / "fixed", fashion_root, *flags, "--sched", "fixed", "--lr", repr(peak),
                      "--warmup-epochs", "5")
    assert rc == 0 and fx is not None
    assert rt["lr_trace"] == fx["lr_trace"]
    a, b = _strip_timing(rt), _strip_timing(fx)
    assert a["epochs"] == b["epochs"] and a["final"] == b["final"]
    ca, cb = _checkpoint(tmp_path / "rangetest", rt), _checkpoint(tmp_path / "fixed", fx)
    _tensors_equal(ca["model"], cb["model"], "model")
    _tensors_equal(ca["optimizer"]["state"], cb["optimizer"]["state"], "optimizer")
    _tensors_equal(ca["rng"]["torch"], cb["rng"]["torch"], "rng")


@needs_fashion
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sched", PEERS)
def test_peer_resumes_exactly(sched: str, tmp_path: Path, fashion_root: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """Stopped after its second checkpoint and resumed: the record and the final weights and
    optimizer state (Schedule-Free's z and x, Prodigy's d and p0) of an uninterrupted run; the
    range test is not run again, its result comes from the checkpoint."""
    from autolr.peers import rangetest

    flags = [*PEER_FLAGS, "--loader", "tensor", "--sched", sched, "--keep-ckpt", "--resume"]
    rc, ref = run_main(tmp_path / "uninterrupted", fashion_root, *flags)
    assert rc == 0 and ref is not None

    save = train.save_checkpoint

    def save_then_stop(st: Any, epoch: int) -> None:
        save(st, epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train.main([*flags, *_dirs(tmp_path / "resumed", fashion_root)])
    assert "stopped by SIGINT; the checkpoint after epoch 2" in capsys.readouterr().err
    monkeypatch.setattr(train, "save_checkpoint", save)

    def no_second_test(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the range test ran again on resume")

    monkeypatch.setattr(rangetest, "range_test", no_second_test)
    rc, resumed = run_main(tmp_path / "resumed", fashion_root, *flags)
    assert rc == 0 and resumed is not None
    assert "resuming run" in capsys.readouterr().out
    a, b = _strip_peer_timing(resumed), _strip_peer_timing(ref)
    for rec in (a, b):  # the two ran into other folders
        rec["config"] = {k: v for k, v in rec["config"].items() if k not in config.operational_keys()}
    assert a == b
    a, b = _checkpoint(tmp_path / "uninterrupted", ref), _checkpoint(tmp_path / "resumed", resumed)
    _tensors_equal(a["model"], b["model"], "model")
    _tensors_equal(a["optimizer"], b["optimizer"], "optimizer")
    assert a["scheduler"] == b["scheduler"]


@needs_fashion
@pytest.mark.timeout(300)
def test_schedulefree_evaluates_at_x_with_recomputed_batch_norm(tmp_path: Path, fashion_root: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Every evaluation (and the checkpoint after it) is at x, in eval mode, with BN statistics
    recomputed there on that epoch's training batches; every epoch trains at y in train mode."""
    import itertools

    from autolr.peers import batchnorm

    def bn_stats(model: Any) -> list[torch.Tensor]:
        return [t.clone() for m in batchnorm.bn_layers(model) for t in (m.running_mean, m.running_var)]

    seen: list[tuple[str, Any]] = []
    real_epoch, real_evaluate = train.train_one_epoch, train.evaluate

    def one_epoch(st: Any, epoch: int) -> Any:
        out = real_epoch(st, epoch)
        assert st.optimizer.param_groups[0]["train_mode"], "trained at y"
        seen.append(("train", epoch))
        # the statistics training gathered at y, which evaluation must not use
        seen.append(("stats at y", bn_stats(st.model)))
        return out

    def evaluate(st: Any, split: str) -> Any:
        assert not st.optimizer.param_groups[0]["train_mode"], f"{split} evaluated at x"
        epoch = seen[-2][1] if seen[-1][0] == "stats at y" else None
        if split == "val":
            # the statistics are those of x, recomputed now on this epoch's first training batches
            check = copy.deepcopy(st.model)
            st.loaders["train"].set_epoch(epoch)
            batches = list(itertools.islice(train.pinned(st.loaders["train"], st.s.threads), st.bn_batches))
            batchnorm.recompute_bn_stats(check, batches, st.bn_batches)
            _tensors_equal(bn_stats(st.model), bn_stats(check), "BN statistics at x")
            assert not all(torch.equal(u, v) for u, v in zip(bn_stats(st.model), seen[-1][1], strict=True))
        seen.append((split, None))
        return real_evaluate(st, split)

    monkeypatch.setattr(train, "train_one_epoch", one_epoch)
    monkeypatch.setattr(train, "evaluate", evaluate)
    rc, rec = run_main(tmp_path, fashion_root, *FASHION, "--epochs", "3", "--loader", "tensor",
                       "--sched", "schedulefree")
    assert rc == 0 and rec is not None
    order = [what for what, _ in seen if what != "stats at y"]
    assert order == ["train", "val", "train", "val", "train", "val", "test"]
    assert rec["peer"]["bn_batches"] == SUBSET // MICRO

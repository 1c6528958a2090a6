"""Where runs train: this process (``--jobs 1``), N train.py processes (``--jobs N``), or submitit job
arrays on Slurm (``--executor slurm``). Each calls ``done(run, Outcome)`` as a run ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import traceback
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # the slurm path needs submitit; everything else runs without it
    from submitit.helpers import Checkpointable, DelayedSubmission
except ImportError:  # pragma: no cover - submitit is in requirements.txt
    Checkpointable = object  # type: ignore[assignment,misc]
    DelayedSubmission = None  # type: ignore[assignment,misc]

from autolr.files import atomic_write_json
from autolr.records import finite_or_none
from autolr.sweep.plan import Sweep
from autolr.sweep.runs import Run
from autolr.sweep.spec import REPO, SweepError, SweepSpec, _train_module


# ---------------------------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    rc: int | None
    error: str | None
    seconds: float


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


class InProcessExecutor:
    """--jobs 1: train.main in this process, one run after another (no interpreter start-up per run)."""

    def __init__(self, sweep: Sweep):
        self.sweep = sweep

    def run(self, runs: Sequence[Run], done: Callable[[Run, Outcome], None]) -> None:
        train = _train_module()
        self.sweep.log_dir.mkdir(parents=True, exist_ok=True)
        for run in runs:
            log_path = self.sweep.log_dir / f"{run.run_id}.log"
            t0 = time.perf_counter()
            rc: int | None
            error = None
            with open(log_path, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                try:
                    rc = train.main([*run.argv, *self.sweep.operational_argv()])
                except KeyboardInterrupt:
                    raise
                except SystemExit as err:  # argparse
                    rc = err.code if isinstance(err.code, int) else 2
                except BaseException as err:  # noqa: BLE001 - a crashed run is recorded, the sweep goes on
                    traceback.print_exc()
                    rc, error = 1, f"{type(err).__name__}: {err}"
            if rc not in (0, 3) and error is None:
                error = _log_tail(log_path) or f"exit code {rc}"
            gc.collect()  # loaders and models of the finished run hold reference cycles: free them now
            done(run, Outcome(rc, error, time.perf_counter() - t0))


def _die_with_parent() -> None:
    # children of a SIGKILLed sweep must not train on as orphans: a restart would run them twice
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class SubprocessExecutor:
    """--jobs N: N train.py processes at a time, one GPU each when there are GPUs."""

    def __init__(self, sweep: Sweep, jobs: int):
        self.sweep, self.jobs = sweep, jobs
        try:
            import torch

            self.gpus = torch.cuda.device_count()
        except Exception:  # noqa: BLE001 - no usable CUDA means CPU jobs
            self.gpus = 0

    def run(self, runs: Sequence[Run], done: Callable[[Run, Outcome], None]) -> None:
        self.sweep.log_dir.mkdir(parents=True, exist_ok=True)
        queue = list(runs)
        free = list(range(self.jobs))
        active: dict[int, tuple[subprocess.Popen[bytes], Run, float, Path, Any]] = {}
        try:
            while queue or active:
                while queue and free:
                    slot, run = free.pop(0), queue.pop(0)
                    env = dict(os.environ)
                    if self.gpus:
                        env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
                    # N jobs share the cores (GPU jobs too: AutoWU's test and the loaders run on them):
                    # N x all-cores threads would thrash
                    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.jobs)))
                    log_path = self.sweep.log_dir / f"{run.run_id}.log"
                    f = open(log_path, "ab")  # noqa: SIM115 - closed when the process ends
                    cmd = [sys.executable, str(REPO / "train.py"), *run.argv, *self.sweep.operational_argv()]
                    p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)
                    active[slot] = (p, run, time.perf_counter(), log_path, f)
                time.sleep(0.2)
                for slot in list(active):
                    p, run, t0, log_path, f = active[slot]
                    rc = p.poll()
                    if rc is None:
                        continue
                    f.close()
                    del active[slot]
                    free.append(slot)
                    error = None if rc in (0, 3) else (_log_tail(log_path) or f"exit code {rc}")
                    done(run, Outcome(rc, error, time.perf_counter() - t0))
        finally:
            for p, *_ in active.values():
                with contextlib.suppress(OSError):
                    p.terminate()


class TrainJob(Checkpointable):
    """One run as a submitit job: train.main in the job, or torchrun over the job's GPUs and nodes.

    On preemption or timeout submitit calls ``checkpoint``: the job is requeued with the same
    flags, and since they include ``--resume`` it continues from the run's last epoch checkpoint.
    """

    def __init__(self, gpus_per_node: int = 1, nodes: int = 1):
        self.gpus_per_node, self.nodes = gpus_per_node, nodes

    def __call__(self, argv: list[str]) -> int:
        os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
        if self.gpus_per_node <= 1 and self.nodes <= 1:
            return int(_train_module().main(list(argv)))
        import submitit

        env = submitit.JobEnvironment()
        port = 20000 + zlib.crc32(str(env.job_id).encode()) % 20000  # jobs sharing a node must not collide
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={self.nodes}", f"--node_rank={env.node}",
               f"--nproc_per_node={self.gpus_per_node}", f"--master_addr={env.hostnames[0]}",
               f"--master_port={port}", str(REPO / "train.py"), *argv]
        return subprocess.run(cmd, check=False).returncode

    def checkpoint(self, argv: list[str]) -> Any:
        return DelayedSubmission(self, argv)


def _minutes(value: Any) -> int:
    """Slurm time as minutes: an int, or "[D-]HH:MM[:SS]"."""
    if isinstance(value, int):
        return value
    text = str(value)
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    h, m = (parts + [0, 0])[:2]
    return days * 1440 + h * 60 + m + (1 if len(parts) > 2 and parts[2] else 0)


def _mem_gb(value: Any) -> float:
    if isinstance(value, int | float):
        return float(value)
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)B?\s*", str(value), re.IGNORECASE)
    if not m:
        raise SweepError(f"slurm mem {value!r}: use a number of GB or a string like 480G")
    scale = {"": 1.0, "K": 1 / 2**20, "M": 1 / 1024, "G": 1.0, "T": 1024.0}[m.group(2).upper()]
    return float(m.group(1)) * scale


def slurm_parameters(spec: SweepSpec) -> dict[str, Any]:
    """submitit AutoExecutor parameters from the sweep's ``slurm:`` section."""
    s = spec.slurm
    p: dict[str, Any] = {"name": f"autolr-{spec.name}", "nodes": int(s.get("nodes", 1)),
                         "gpus_per_node": int(s.get("gpus_per_node", 1)), "tasks_per_node": 1,
                         "timeout_min": _minutes(s.get("time", 24 * 60))}
    if "cpus_per_task" in s:
        p["cpus_per_task"] = int(s["cpus_per_task"])
    if "mem" in s:
        p["mem_gb"] = _mem_gb(s["mem"])
    for key in ("partition", "account", "qos", "constraint", "array_parallelism", "setup", "signal_delay_s",
                "additional_parameters"):
        if key in s:
            p[f"slurm_{key}"] = s[key]
    return p


def sbatch_preview(spec: SweepSpec, folder: Path, n_runs: int) -> str:
    """The sbatch script submitit would write for a job array of ``n_runs`` runs."""
    p = slurm_parameters(spec)
    try:
        from submitit.slurm.slurm import _make_sbatch_string

        kw: dict[str, Any] = {"job_name": p["name"], "nodes": p["nodes"], "gpus_per_node": p["gpus_per_node"],
                              "ntasks_per_node": 1, "time": p["timeout_min"], "map_count": n_runs}
        if "cpus_per_task" in p:
            kw["cpus_per_task"] = p["cpus_per_task"]
        if "mem_gb" in p:
            kw["mem"] = f"{int(math.ceil(p['mem_gb']))}GB"
        for key in ("partition", "account", "qos", "constraint", "array_parallelism", "setup", "signal_delay_s",
                    "additional_parameters"):
            if f"slurm_{key}" in p:
                kw[key] = p[f"slurm_{key}"]
        return _make_sbatch_string(command="python -u -m submitit.core._submit <folder>", folder=str(folder / "%j"),
                                   **kw)
    except Exception as err:  # noqa: BLE001 - a preview must not fail on a submitit internals change
        return f"(sbatch preview unavailable: {type(err).__name__}: {err})\n" + json.dumps(p, indent=1)


class SubmititExecutor:
    """--executor slurm: each round of runs is one submitit job array; the sweep waits for it.

    Submitted job ids are kept in ``checkpoints/<name>/submitit/jobs.json``: a driver started
    again while an earlier one's jobs are still queued or running waits for those jobs instead of
    submitting the same runs a second time (two jobs would share one checkpoint).
    """

    def __init__(self, sweep: Sweep, cluster: str):
        self.sweep, self.cluster = sweep, cluster
        self.folder = sweep.ckpt_dir / "submitit"
        self.jobs_file = self.folder / "jobs.json"

    def _known_jobs(self) -> dict[str, str]:
        try:
            return {str(k): str(v) for k, v in json.loads(self.jobs_file.read_text()).items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _live(self, job_ids: Iterable[str]) -> set[str]:
        """Which of these slurm job (array element) ids are still queued or running."""
        arrays = sorted({j.split("_")[0] for j in job_ids})
        if self.cluster != "slurm" or not arrays:
            return set()
        try:
            out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(arrays)], capture_output=True,
                                 text=True, timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return set()
        return {line.strip() for line in out.splitlines() if line.strip()}

    def run(self, runs: Sequence[Run], done: Callable[[Run, Outcome], None]) -> None:
        import submitit

        known = self._known_jobs()
        live = self._live(known[r.run_id] for r in runs if r.run_id in known)
        attach = [r for r in runs if known.get(r.run_id) in live]
        submit = [r for r in runs if known.get(r.run_id) not in live]
        jobs: list[tuple[Run, Any]] = []
        for r in attach:
            jobs.append((r, submitit.SlurmJob(folder=str(self.folder / "%j"), job_id=known[r.run_id])))
            print(f"waiting for job {known[r.run_id]} of an earlier driver: {r.label()}", flush=True)
        t0 = time.perf_counter()
        if submit:
            ex = submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=self.cluster)
            params = slurm_parameters(self.sweep.spec)
            if self.cluster != "slurm":
                # the local executor runs on this machine: one node, the GPUs it has
                params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
                params.update(nodes=1, gpus_per_node=0 if params["gpus_per_node"] <= 1 else params["gpus_per_node"])
            ex.update_parameters(**params)
            fn = TrainJob(gpus_per_node=params["gpus_per_node"], nodes=params["nodes"])
            submitted = ex.map_array(fn, [[*r.argv, *self.sweep.operational_argv()] for r in submit])
            known.update({r.run_id: str(j.job_id) for r, j in zip(submit, submitted, strict=True)})
            atomic_write_json(self.jobs_file, finite_or_none(known))
            jobs += list(zip(submit, submitted, strict=True))
            print(f"submitted {len(submitted)} jobs ({self.cluster}): {submitted[0].job_id} ...", flush=True)
        pending = dict(enumerate(jobs))
        while pending:
            time.sleep(1.0 if self.cluster != "slurm" else 30.0)
            for i in list(pending):
                run, job = pending[i]
                if not job.done():
                    continue
                del pending[i]
                try:
                    rc, error = int(job.result()), None
                except Exception as err:  # noqa: BLE001 - a failed job is recorded, the sweep goes on
                    last = str(err).strip().splitlines()[-1:] or [""]
                    rc, error = 1, f"{type(err).__name__}: {last[0]} (log: {job.paths.stdout})"
                if rc not in (0, 3) and error is None:
                    error = f"exit code {rc} (log: {job.paths.stdout})"
                done(run, Outcome(rc, error, time.perf_counter() - t0))

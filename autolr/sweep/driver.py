"""The driver: rounds of runs until the sweep is done, the dry run and its cost model, the comparison
of a rerun with reference records, the data check, and the command line (``main``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from autolr.sweep.executors import (
    InProcessExecutor,
    Outcome,
    SubmititExecutor,
    SubprocessExecutor,
    sbatch_preview,
    slurm_parameters,
)
from autolr.sweep.plan import Sweep
from autolr.sweep.runs import Run, RunResult, load_results, read_record
from autolr.sweep.spec import REPO, SweepError, SweepSpec, load_spec

# Cost model of --dry-run. Training images/s per device, loader and step overhead included; an
# evaluation image costs 1/EVAL_SPEEDUP of a training one (forward only, large batches, no
# augmentation). The CPU figures are fitted to the demo's records (22 runs: per-run wall time
# against training and evaluation images), which the bench's fixed-batch step underestimates.
# "measured" figures are bench/throughput.py's train.py step (bench/results/throughput*.json): on
# this project's 2-core CPU, and on one H200 with bf16 + channels-last; the rest are guesses. One run
# at a time: runs sharing a GPU (--jobs N on one GPU) finish sooner together than this adds up to.
THROUGHPUT: dict[tuple[str, str], tuple[float, str]] = {
    ("cnn_fashion", "cpu"): (5000.0, "measured, 2-core CPU"),
    ("resnet20_cifar", "cpu"): (400.0, "measured, 2-core CPU"),
    ("cnn_fashion", "gpu"): (50000.0, "measured, one H200, batch 256"),
    ("resnet20_cifar", "gpu"): (40000.0, "rough estimate, one H100"),
    ("resnet18_cifar", "gpu"): (18000.0, "measured, one H200"),
    ("vit_tiny_patch4_32", "gpu"): (15000.0, "rough estimate, one H100"),
    ("efficientnet_b0_cifar", "gpu"): (12000.0, "rough estimate, one H100"),
    ("resnet50", "gpu"): (3000.0, "measured, one H200, without torch.compile"),
    ("efficientnet_b0", "gpu"): (3500.0, "rough estimate, one H100"),
}
EVAL_SPEEDUP = {"cpu": 10.0, "gpu": 3.0}
#: seconds per run outside the epochs (imports, data, model): in-process on a CPU, a process on a GPU
RUN_OVERHEAD_S = {"cpu": 1.0, "gpu": 20.0}


# ---------------------------------------------------------------------------------------------
# Comparison with a reference (a rerun against the committed records)
# ---------------------------------------------------------------------------------------------
def _raw_record(path: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def compare_runs(sweep: Sweep, results: Mapping[str, RunResult], ref: str | os.PathLike[str],
                 tolerance: float = 0.0) -> tuple[bool, list[str]]:
    """Compare every recorded run of the sweep with the reference record of the same run_id.

    ``ref`` is a sweep folder (``results/demo``) or its ``runs/``. A run matches when both ended
    alike and their final test accuracies differ by at most ``tolerance`` (0: identical). Returns
    whether every run matched, and the lines to print: a summary first, then one per difference.
    A difference names the runs' CPU thread counts and devices where they differ (CPU numbers
    depend on the thread count).
    """
    ref_dir = Path(ref)
    if (ref_dir / "runs").is_dir():
        ref_dir = ref_dir / "runs"
    if not ref_dir.is_dir():
        raise SweepError(f"--compare {ref}: no such folder of records")
    plan = sweep.plan(results)
    labels: dict[str, str] = {}
    for r in [*plan.tuning_runs, *plan.final_runs]:
        labels.setdefault(r.run_id, f"{r.stage} {r.label()}")
    ours = [rid for rid in labels if rid in results and results[rid].recorded]
    matched, differ, no_ref = 0, [], []
    for rid in ours:
        mine = _raw_record(sweep.runs_dir / f"{rid}.json") or {}
        theirs = _raw_record(ref_dir / f"{rid}.json")
        if theirs is None:
            no_ref.append(rid)
            continue
        a, b = results[rid], read_record(ref_dir / f"{rid}.json")
        ta, tb = a.test_acc, None if b is None else b.test_acc
        same_status = b is not None and a.status == b.status
        if same_status and (ta == tb or (ta is not None and tb is not None and abs(ta - tb) <= tolerance)):
            matched += 1
            continue
        what = (f"test acc {ta} vs {tb} (delta {ta - tb:+.4g})" if ta is not None and tb is not None
                else f"status {a.status} vs {None if b is None else b.status}, test acc {ta} vs {tb}")
        env_a, env_b = mine.get("env") or {}, theirs.get("env") or {}
        for key, name in (("cpu_threads", "CPU threads"), ("device", "device"), ("device_name", "device name")):
            if key in env_a or key in env_b:
                if env_a.get(key) != env_b.get(key):
                    what += f"; {name} {env_a.get(key, 'not recorded')} here vs {env_b.get(key, 'not recorded')}"
                elif key == "cpu_threads":
                    what += f"; {env_a.get(key)} CPU threads in both"
        differ.append(f"  differs: {labels[rid]} ({rid}): {what}")
    compared = len(ours) - len(no_ref)
    how = "identical" if tolerance == 0 else f"within {tolerance:g}"
    head = f"{matched}/{compared} runs match the records in {ref} (test accuracy {how})"
    if no_ref:
        head += f"; {len(no_ref)} runs have no record there: {', '.join(no_ref[:5])}{' ...' if len(no_ref) > 5 else ''}"
    missing = len(labels) - len(ours)
    if missing:
        head += f"; {missing} runs of the sweep have no record here yet"
    return not differ and not no_ref, [head, *differ]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------
def check_data(dataset: str, data_root: str | os.PathLike[str], download: bool = False) -> None:
    """Raise SweepError (one line: what is missing and how to get it) unless the data is here.

    Runs before any training so that a missing dataset stops the sweep once, not every run.
    """
    from autolr.data import DataError, load_arrays

    root = Path(data_root)
    try:
        if dataset == "imagenet":
            tree = all((root / "imagenet" / d).is_dir() for d in ("train", "val"))
            betons = all((root / "ffcv" / "imagenet" / f"{s}.beton").is_file() for s in ("train", "val", "test"))
            if not (tree or betons):
                raise DataError(f"imagenet not found: put the ImageFolder tree under {root / 'imagenet'} "
                                f"(train/<class>/*.JPEG, val/<class>/*.JPEG) or the .beton files under "
                                f"{root / 'ffcv' / 'imagenet'}")
        else:
            load_arrays(dataset, root, download=download)
    except DataError as err:
        raise SweepError(str(err)) from None


# ---------------------------------------------------------------------------------------------
# Cost
# ---------------------------------------------------------------------------------------------
def estimate_seconds(spec: SweepSpec, model: str, bs: int, device_kind: str) -> tuple[float | None, str]:
    """Device-seconds of one run: training images x epochs and every evaluation, at THROUGHPUT."""
    from autolr.data import dataset_info

    entry = THROUGHPUT.get((model, device_kind))
    if entry is None:
        return None, f"no throughput figure for {model} on {device_kind}"
    ips, source = entry
    info = dataset_info(spec.data, subset=spec.subset)
    train_imgs = (info["train_size"] // bs) * bs * spec.epochs  # full batches only
    eval_imgs = info["val_size"] * (spec.epochs + 1) + info["test_size"]  # val every epoch and at the end, test once
    return train_imgs / ips + eval_imgs / (ips * EVAL_SPEEDUP[device_kind]) + RUN_OVERHEAD_S[device_kind], \
        f"{model} on {device_kind}: {ips:.0f} img/s ({source})"


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
#: parts of a sweep file that may change under the same results folder: where it runs, and its path
_FREE_TO_CHANGE = ("slurm", "path")


def spec_changes(sweep: Sweep) -> str | None:
    """What changed in the sweep file since its stages.json was written, or None.

    A results folder belongs to the file that made it: an edited file (another grid, seeds or
    epochs) under the same name would otherwise take it over silently. Adding a scheduler entry
    is additive (the existing entries' runs and records stay what they were) and allowed, as are
    changes to ``slurm:`` and to the file's path.
    """
    try:
        old = json.loads(sweep.stages_path.read_text()).get("spec")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(old, dict):
        return None
    new = json.loads(json.dumps(sweep.spec.to_dict()))
    what = [k for k in sorted(set(old) | set(new))
            if k not in (*_FREE_TO_CHANGE, "schedulers") and old.get(k) != new.get(k)]
    parts = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in what]
    old_s, new_s = old.get("schedulers") or {}, new.get("schedulers") or {}
    gone = [m for m in old_s if m not in new_s]
    edited = [m for m in old_s if m in new_s and old_s[m] != new_s[m]]
    if gone:
        parts.append(f"scheduler entries removed: {', '.join(gone)}")
    parts += [f"scheduler {m} {old_s[m]} -> {new_s[m]}" for m in edited]
    if not parts:
        return None
    return f"{sweep.spec.path or sweep.spec.name} differs from the sweep that wrote {sweep.stages_path} (" + \
        "; ".join(parts) + ")"


@contextlib.contextmanager
def _sweep_lock(path: Path) -> Iterator[None]:
    """One driver per sweep: two would run the same missing runs twice."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SweepError(f"another sweep driver holds {path}: wait for it or stop it first") from None
        yield


class Driver:
    def __init__(self, sweep: Sweep, executor: Any, max_runs: int | None):
        self.sweep, self.executor = sweep, executor
        loaded = load_results(sweep.runs_dir)
        # a crashed run (out of memory, a lost file system, a bug fixed since) is tried again by each
        # new driver, from its checkpoint; within one driver its record counts as the worst value
        self.retried = sorted(rid for rid, r in loaded.items() if r.status == "failed")
        self.results = {rid: r for rid, r in loaded.items() if r.status != "failed"}
        self._drop_stale_checkpoints()
        self.budget = max_runs
        self.ran = 0
        self.no_record = 0

    def _drop_stale_checkpoints(self) -> None:
        # a sweep killed between a run's record and its checkpoint's removal leaves the checkpoint
        if self.sweep.spec.train_args.get("keep_ckpt"):
            return
        for rid in self.results:
            ckpt = self.sweep.ckpt_dir / rid / "last.pt"
            if ckpt.is_file():
                ckpt.unlink()
                with contextlib.suppress(OSError):
                    ckpt.parent.rmdir()

    def _round(self, stage: str, runs: list[Run]) -> bool:
        """Run what is missing of ``runs``; False when --max-runs stopped it."""
        from tqdm import tqdm

        # one run per run_id: a final run that is also a tuning run appears once
        todo = list({r.run_id: r for r in runs if r.run_id not in self.results}.values())
        # the sweep file's models in its order (a --max-runs chunk finishes the first model's grid
        # before the next model's), then the most steps (smallest batch) first, else the plan's
        # order: parallel jobs end closer together
        models = list(self.sweep.spec.models)
        todo.sort(key=lambda r: (models.index(r.model), r.bs))
        stopped = False
        if self.budget is not None:
            left = self.budget - self.ran
            if len(todo) > left:
                todo, stopped = todo[:max(left, 0)], True
        if not todo:
            return not stopped
        # no bar in a log file (disable=None: only on a terminal); the per-run lines are the log
        bar = tqdm(total=len(todo), desc=f"{self.sweep.spec.name} {stage}", unit="run", dynamic_ncols=True,
                   disable=None)

        def done(run: Run, out: Outcome) -> None:
            path = self.sweep.runs_dir / f"{run.run_id}.json"
            res = read_record(path)
            if res is None:
                self.no_record += 1
                res = RunResult("failed", None, recorded=False, error=out.error or f"exit code {out.rc}")
                where = f"no record ({res.error}); log: {self.sweep.log_dir / (run.run_id + '.log')}"
            else:
                acc = "" if res.val_acc is None else f", val {res.val_acc:.4f} test {res.test_acc or 0:.4f}"
                where = f"{res.status}{acc}; record: {path}"
            self.results[run.run_id] = res
            self.ran += 1
            bar.update(1)
            tqdm.write(f"[{run.stage}] {run.label()} ({run.run_id}) in {out.seconds:.0f}s: {where}")
            sys.stdout.flush()  # a log file is block-buffered: show each run as it ends
            self.sweep.write_stages(self.sweep.plan(self.results), self.results)

        try:
            self.executor.run(todo, done)
        finally:
            bar.close()
        return not stopped

    def tune(self, with_finals: bool = True) -> bool:
        """Tuning rounds until every grid has chosen; ``with_finals``: finals whose LR is known join them."""
        # extensions decided before this driver started are in stages.json: say only the new ones
        said = {m for gs in self.sweep.plan(self.results).grids.values() for m in gs.messages}
        while True:
            plan = self.sweep.plan(self.results)
            for gs in plan.grids.values():
                for msg in gs.messages:
                    if msg not in said:
                        said.add(msg)
                        print(msg, flush=True)
            todo = [r for r in plan.tuning_runs if r.run_id not in self.results]
            if not todo:
                return True
            # finals whose LR is known already (auto's, grids decided) join the round: parallel slots
            # stay busy, and an interrupted sweep has AutoWU's runs early
            if with_finals:
                todo += [r for r in plan.final_runs if r.run_id not in self.results]
            # extension runs are only known once their grid's first round is in: rounds, not one batch
            if not self._round("tune", todo):
                return False

    def final(self) -> bool:
        """Rounds of final runs: an lr_from control joins once its source run has a record."""
        tried: set[str] = set()
        while True:
            plan = self.sweep.plan(self.results)
            todo = [r for r in plan.final_runs if r.run_id not in self.results and r.run_id not in tried]
            if not todo:
                break
            tried |= {r.run_id for r in todo}
            if not self._round("final", todo):
                return False
        if plan.waiting_finals:
            print(f"{len(plan.waiting_finals)} final runs wait for their tuning stage to finish")
        if plan.waiting_controls:
            print(f"{len(plan.waiting_controls)} control runs wait for the run they take their LR from")
        for c in plan.skipped_controls:
            print(f"skipped {c['method']} {c['model']} {c['opt']} bs {c['bs']} seed {c['seed']}: {c['why']}")
        return True


def _print_dry_run(sweep: Sweep, device_kind: str, executor: str) -> None:
    s = sweep.spec
    results = load_results(sweep.runs_dir)
    plan = sweep.plan(results)
    print(f"sweep {s.name}: {s.data}" + (f" (subset {s.subset})" if s.subset else "") +
          f", {s.epochs} epochs, models {', '.join(s.models)}, opts {', '.join(s.opts)}, batch sizes "
          f"{'/'.join(map(str, s.batch_sizes))} (B0 {s.b0}), final seeds {list(s.seeds)}, tuning seed "
          f"{s.tuning_seed}, schedulers {', '.join(s.schedulers)}")
    cost_cache: dict[tuple[str, int], tuple[float | None, str]] = {}

    def cost(run: Run) -> float | None:
        key = (run.model, run.bs)
        if key not in cost_cache:
            cost_cache[key] = estimate_seconds(s, run.model, run.bs, device_kind)
        return cost_cache[key][0]

    first = [r for r in plan.tuning_runs] + [r for r in plan.final_runs if not s.is_tuned(r.method)
                                             and s.lr_from(r.method) is None]
    first = list({r.run_id: r for r in first}.values())
    first_ids = {r.run_id for r in first}
    later = [r for r in plan.final_runs if r.run_id not in first_ids]
    later = list({r.run_id: r for r in later}.values())
    print(f"stage 1 (planned now): {len(first)} runs, {sum(r.run_id in results for r in first)} with records")
    for r in first:
        mark = "done   " if r.run_id in results else "missing"
        c = cost(r)
        print(f"  {mark} {r.stage:5s} {r.label():58s} run {r.run_id}  ~{c:.0f}s" if c is not None else
              f"  {mark} {r.stage:5s} {r.label():58s} run {r.run_id}")
    reused = sum(sweep.reuses_tuning_run(m, b, sd) for m, _, _, b, sd in plan.waiting_finals)
    print(f"later stages add: up to {plan.pending_extensions} extension runs (at most {s.max_extensions} per grid), "
          f"{len(plan.waiting_finals) - reused} final runs once tuning has chosen ({reused} more finals reuse "
          f"their tuning run), {sum(r.run_id not in results for r in later)} more final runs whose LR is chosen"
          + (f", {len(plan.waiting_controls)} control runs once the runs they take their LR from are in"
             if plan.waiting_controls else ""))

    def total(runs: Iterable[Run]) -> float | None:
        vals = [cost(r) for r in runs]
        return None if any(v is None for v in vals) else float(sum(vals))  # type: ignore[arg-type]

    now = total(r for r in first if r.run_id not in results)
    # their LR is not chosen yet, but a run's cost does not depend on it
    waiting = [sweep.make_run("final", m, mo, o, b, sd, s.schedulers[m]["lr"][0])
               for m, mo, o, b, sd in plan.waiting_finals if not sweep.reuses_tuning_run(m, b, sd)]
    waiting += [sweep.make_run("final", m, mo, o, b, sd, 0.01) for m, mo, o, b, sd, _ in plan.waiting_controls]
    later_cost = total([*waiting, *(r for r in later if r.run_id not in results)])
    ext_cost: float | None = 0.0
    for (m, mo, o, b), gs in plan.grids.items():
        if gs.reason == "pending":
            c = cost(sweep.make_run("tune", m, mo, o, b, s.tuning_seed, gs.initial[0]))
            ext_cost = None if c is None or ext_cost is None else ext_cost + c * (s.max_extensions - len(gs.extensions))
    for source in sorted({src for _, src in cost_cache.values()}):
        print(f"  throughput: {source}")
    if now is None or later_cost is None or ext_cost is None:
        print(f"estimated cost: unknown (no throughput figure for some model on {device_kind}; --device-kind picks "
              "the table to use)")
    else:
        worst = now + later_cost + ext_cost
        print(f"estimated cost ({device_kind}, device-seconds): stage 1 {now:.0f} s, later stages {later_cost:.0f} s, "
              f"extensions up to {ext_cost:.0f} s; total {now + later_cost:.0f} s to {worst:.0f} s "
              f"({(now + later_cost) / 3600:.2f} to {worst / 3600:.2f} device-hours)")
    if executor == "slurm":
        print("sbatch parameters of each job array (one array per round):")
        print(sbatch_preview(s, sweep.ckpt_dir / "submitit", len([r for r in first if r.run_id not in results])))


def build_cli() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m autolr.sweep", description=sys.modules["autolr.sweep"].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_file", help="a sweep YAML file (sweeps/*.yaml)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their estimated cost; run nothing")
    p.add_argument("--jobs", type=int, default=1, help="local: 1 runs in this process; N > 1 runs N processes "
                   "(one GPU each when there are GPUs)")
    p.add_argument("--executor", default="local", choices=["local", "slurm"])
    p.add_argument("--cluster", default="slurm", choices=["slurm", "local", "debug"],
                   help="slurm executor: where submitit sends the jobs (local: this machine, same code path)")
    p.add_argument("--results-root", default="results", help="records go to RESULTS_ROOT/<name>/runs/")
    p.add_argument("--ckpt-root", default="checkpoints", help="checkpoints and logs go to CKPT_ROOT/<name>/")
    p.add_argument("--only-stage", choices=["tune", "final"], default=None)
    p.add_argument("--max-runs", type=int, default=None, help="run at most K missing runs, then stop (resumable)")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing dataset")
    p.add_argument("--compare", metavar="REFDIR", default=None,
                   help="after the sweep, compare each run's record with REFDIR's record of the same run_id "
                        "(e.g. results/demo); exit code 1 when any differs")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="--compare: largest difference in final test accuracy that still matches (default 0)")
    p.add_argument("--start-over", action="store_true",
                   help="the sweep file changed since its results folder was written: make the folder this file's "
                        "(records are kept, and runs the new file shares reuse them)")
    p.add_argument("--device-kind", choices=["cpu", "gpu"], default=None,
                   help="cost estimate for this device (default: gpu when CUDA is here or --executor slurm)")
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))
    args = build_cli().parse_args(argv)
    try:
        if args.jobs < 1:
            raise SweepError("--jobs must be at least 1")
        if args.max_runs is not None and args.max_runs < 0:
            raise SweepError("--max-runs must be >= 0")
        if not (math.isfinite(args.tolerance) and args.tolerance >= 0):
            raise SweepError("--tolerance must be a finite number >= 0")
        if args.compare is not None and not Path(args.compare).is_dir():
            raise SweepError(f"--compare {args.compare}: no such folder")
        spec = load_spec(args.sweep_file)
        sweep = Sweep(spec, args.results_root, args.ckpt_root)
        world = 1
        if args.executor == "slurm":
            sp = slurm_parameters(spec)
            if sp["gpus_per_node"] > 1 or sp["nodes"] > 1:
                world = sp["gpus_per_node"] * sp["nodes"]
        sweep.validate(world)
        changed = spec_changes(sweep)
        if args.dry_run:
            kind = args.device_kind
            if kind is None:
                import torch

                kind = "gpu" if args.executor == "slurm" or torch.cuda.is_available() else "cpu"
            try:
                check_data(spec.data, spec.train_args.get("data_root", "data"))
                print("data: present")
            except SweepError as err:
                print(f"data: MISSING: {err}")
            if changed:
                print(f"note: {changed}; a run would refuse it without --start-over")
            _print_dry_run(sweep, kind, args.executor)
            return 0
        if changed and not args.start_over:
            raise SweepError(f"{changed}: rename the sweep (name:) to keep both, or pass --start-over to make "
                             f"{sweep.dir} this file's (records are kept; runs it shares reuse them)")
        data_root = spec.train_args.get("data_root", "data")
        check_data(spec.data, data_root, download=args.download)
        if args.executor == "local" and spec.train_args.get("loader", "ffcv") == "ffcv":
            # the .beton files once, here, rather than by the first of N parallel runs while the rest wait
            from autolr.data import DataError, prepare_ffcv

            try:
                paths = prepare_ffcv(spec.data, data_root, subset=spec.subset, val_size=spec.train_args.get("val_size"))
            except DataError as err:
                raise SweepError(str(err)) from None
            print(f"data: {', '.join(str(p) for p in paths.values())}", flush=True)
        if args.executor == "slurm":
            if args.cluster == "slurm" and shutil.which("sbatch") is None:
                raise SweepError("--executor slurm: no sbatch here; run it on a slurm login node, or pass --cluster "
                                 "local to take the same path on this machine")
            executor: Any = SubmititExecutor(sweep, args.cluster)
        elif args.jobs == 1:
            executor = InProcessExecutor(sweep)
        else:
            executor = SubprocessExecutor(sweep, args.jobs)
        # the results folder is the sweep's identity; its checkpoints must not be shared either
        with _sweep_lock(sweep.dir / ".sweep.lock"), _sweep_lock(sweep.ckpt_dir / ".sweep.lock"):
            driver = Driver(sweep, executor, args.max_runs)
            print(f"sweep {spec.name}: {len(driver.results)} records in {sweep.runs_dir}"
                  + (f"; {len(driver.retried)} failed runs will be tried again" if driver.retried else ""))
            finished = True
            if args.only_stage in (None, "tune"):
                finished = driver.tune(with_finals=args.only_stage is None)
            if finished and args.only_stage in (None, "final"):
                finished = driver.final()
            plan = sweep.plan(driver.results)
            doc = sweep.write_stages(plan, driver.results)
    except SweepError as err:
        print(f"sweep: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: run the same command again to continue (finished runs are kept, the interrupted "
              "one resumes from its last epoch)", file=sys.stderr)
        return 130
    t, f = doc["stages"]["tune"], doc["stages"]["final"]
    print(f"sweep {spec.name}: ran {driver.ran} runs; tuning {t['done']}/{t['runs']} runs"
          f"{'' if t['complete'] else ' (more may follow)'}, finals {f['done']}/{f['runs']}; stages: "
          f"{sweep.stages_path}")
    if not finished:
        ext = t["pending_extensions_max"]
        print(f"stopped after --max-runs {args.max_runs}: {doc['missing_runs']} known runs remain"
              f"{f' (plus up to {ext} extension runs)' if ext else ''}; run the same command again to continue")
    elif doc["complete"]:
        print(f"sweep {spec.name} complete")
    rc = 1 if driver.no_record else 0
    if args.compare is not None:
        try:
            same, lines = compare_runs(sweep, driver.results, args.compare, args.tolerance)
        except SweepError as err:
            print(f"sweep: error: {err}", file=sys.stderr)
            return 2
        print("\n".join(lines))
        rc = rc or (0 if same else 1)
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""A sweep bound to its folders (``Sweep``): the runs each stage needs now, given the records, and
``stages.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr.files import atomic_write_json
from autolr.records import finite_or_none
from autolr.registry import SCHEDULERS
from autolr.sweep.protocol import GridState, decide_grid
from autolr.sweep.runs import Run, RunResult, _flags_to_argv, _run_id, check_run
from autolr.sweep.spec import TUNED_AT_B0, TUNED_BY_OWN_RUN, SweepError, SweepSpec

STAGES_SCHEMA = 1


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
@dataclass
class Plan:
    grids: dict[tuple[str, str, str, int], GridState]
    tuning_runs: list[Run]  # every tuning run known now (extensions included)
    final_runs: list[Run]  # every final run whose LR is known now
    waiting_finals: list[tuple[str, str, str, int, int]]  # (method, model, opt, bs, seed) awaiting a choice
    pending_extensions: int  # upper bound on extension runs not yet known
    # lr_from controls: (method, model, opt, bs, seed, source run_id) whose source has no record yet
    waiting_controls: list[tuple[str, str, str, int, int, str]] = field(default_factory=list)
    # lr_from controls that will not run: {method, model, opt, bs, seed, source_run, why}
    skipped_controls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tuning_done(self) -> bool:
        return all(g.reason != "pending" for g in self.grids.values())


class Sweep:
    """A sweep file bound to its results and checkpoint folders."""

    def __init__(self, spec: SweepSpec, results_root: str | os.PathLike[str] = "results",
                 ckpt_root: str | os.PathLike[str] = "checkpoints"):
        self.spec = spec
        self.dir = Path(results_root) / spec.name
        self.runs_dir = self.dir / "runs"
        self.stages_path = self.dir / "stages.json"
        self.ckpt_dir = Path(ckpt_root) / spec.name
        self.log_dir = self.ckpt_dir / "logs"
        self.results_root = Path(results_root)
        self._tuned_in: tuple[dict[tuple[str, str, str, int], dict[str, Any]],
                              dict[tuple[str, str, str, int], dict[str, Any]]] | None = None

    # -- tuning done by another sweep -------------------------------------------------------------
    def tuned_in(self) -> tuple[dict[tuple[str, str, str, int], dict[str, Any]],
                                dict[tuple[str, str, str, int], dict[str, Any]]]:
        """The ``tuning_from`` sweep's selection and tuning charge, by (method, model, opt, tuned bs).

        Its choice is only this sweep's if it tuned the same thing: the same data, budget and
        train_args, and each tuned method with the same grid and flags; anything else is refused.
        """
        if self._tuned_in is not None:
            return self._tuned_in
        s, src = self.spec, self.spec.tuning_from
        path = self.results_root / str(src) / "stages.json"
        try:
            doc = json.loads(path.read_text())
            old = doc["spec"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SweepError(f"tuning_from {src}: no readable {path}; run that sweep's tuning first "
                             f"(python -m autolr.sweep sweeps/{src}.yaml --only-stage tune)") from None
        mine = json.loads(json.dumps(s.to_dict()))
        for key in ("data", "subset", "epochs", "train_args", "tuning_seed"):
            if old.get(key) != mine.get(key):
                raise SweepError(f"tuning_from {src}: its {key} is {old.get(key)!r}, this sweep's {mine.get(key)!r}: "
                                 "its LRs were chosen for another setting")
        for method in s.schedulers:
            if not s.is_tuned(method):
                continue
            theirs = (old.get("schedulers") or {}).get(method)
            if theirs != mine["schedulers"][method]:
                raise SweepError(f"tuning_from {src}: scheduler {method} is {theirs!r} there, "
                                 f"{mine['schedulers'][method]!r} here: tune it the same way, or here")
            if s.sched_of(method) in TUNED_AT_B0 and old.get("b0") != s.b0:
                raise SweepError(f"tuning_from {src}: {method} was tuned at B0 {old.get('b0')}, this sweep's B0 is "
                                 f"{s.b0}")
        key = ("method", "model", "opt", "bs")
        selection = {tuple(e[k] for k in key): e for e in doc.get("selection") or [] if isinstance(e, dict)}
        charge = {tuple(e[k] for k in key): e for e in doc.get("tuning_charge") or [] if isinstance(e, dict)}
        self._tuned_in = (selection, charge)  # type: ignore[assignment]
        return self._tuned_in  # type: ignore[return-value]

    def _grid_tuned_in(self, method: str, model: str, opt: str, bs: int) -> GridState:
        entry = self.tuned_in()[0].get((method, model, opt, bs))
        src = self.spec.tuning_from
        if entry is None or entry.get("chosen_lr") is None:
            raise SweepError(f"tuning_from {src}: no chosen LR for {method} ({model}, {opt}) at bs {bs} in "
                             f"{self.results_root / str(src) / 'stages.json'}; finish that sweep's tuning first")
        return GridState(method, model, opt, bs, tuple(self.spec.schedulers[method]["lr"]),
                         grid=list(entry.get("grid") or []), extensions=list(entry.get("extensions") or []),
                         chosen=float(entry["chosen_lr"]), reason=f"tuned in {src}: {entry.get('reason')}",
                         capped=bool(entry.get("capped")))

    # -- runs -------------------------------------------------------------------------------------
    def run_flags(self, method: str, model: str, opt: str, bs: int, seed: int, lr: float | None) -> dict[str, Any]:
        s = self.spec
        sched = s.sched_of(method)
        # the label is not a train.py flag: a variant with another entry's flags has its run_id
        flags: dict[str, Any] = {"data": s.data, "model": model, "opt": opt, "bs": bs, "seed": seed, "sched": sched,
                                 "epochs": s.epochs, "subset": s.subset}
        flags.update({k: v for k, v in s.schedulers[method].items() if k not in ("lr", "sched", "lr_from")})
        if SCHEDULERS[sched].replaces_optimizer:
            # it trains with its own optimizer (train.py refuses --opt): one run_id for every opt of the
            # sweep, run once, shown in each opt's rows of the tables
            del flags["opt"]
        if SCHEDULERS[sched].lr is not None:
            flags["lr"] = float(lr)  # type: ignore[arg-type]
        if SCHEDULERS[sched].takes_b0:
            flags["legw_b0"] = s.b0
        flags.update(s.train_args)
        return flags

    def make_run(self, stage: str, method: str, model: str, opt: str, bs: int, seed: int,
                 lr: float | None, lr_from_run: str | None = None) -> Run:
        argv = tuple(_flags_to_argv(self.run_flags(method, model, opt, bs, seed, lr)))
        return Run(stage=stage, method=method, model=model, opt=opt, bs=bs, seed=seed, lr=lr, argv=argv,
                   run_id=_run_id(argv), sched=self.spec.sched_of(method), lr_from_run=lr_from_run)

    def reuses_tuning_run(self, method: str, bs: int, seed: int) -> bool:
        """Whether this final run has the config (so the run_id) of one of its grid's tuning runs."""
        return (self.spec.tuning_from is None and self.spec.is_tuned(method) and seed == self.spec.tuning_seed
                and bs in self.spec.tuned_bs(method))

    def control_lr(self, method: str, model: str, opt: str, bs: int, seed: int,
                   results: Mapping[str, RunResult]) -> tuple[str, float | None, str | None]:
        """An lr_from control's source run, and its LR or why there is none (None, None: still waiting)."""
        src = self.spec.lr_from(method)
        assert src is not None
        src_id = self.make_run("final", src, model, opt, bs, seed, None).run_id
        r = results.get(src_id)
        if r is None:
            return src_id, None, None
        if r.status != "finished":
            return src_id, None, f"{src}'s run {src_id} {r.status}: no LR to take"
        if r.switch_lr is None or not math.isfinite(r.switch_lr) or r.switch_lr <= 0:
            return src_id, None, f"{src}'s run {src_id} recorded no switch LR"
        return src_id, float(r.switch_lr), None

    def operational_argv(self) -> list[str]:
        """Flags that say where things go: not part of any run_id."""
        return ["--out", str(self.runs_dir), "--ckpt-dir", str(self.ckpt_dir), "--resume", "--progress", "off"]

    def validate(self, world: int = 1) -> None:
        """Every run of the sweep must be one train.py accepts (``check_run``), before anything runs.

        Each scheduler at every batch size with every value of its grid (a control with a stand-in
        LR) and the largest seed; ``world``: processes per run (a multi-GPU slurm job).
        """
        from autolr.data import DataError, dataset_info

        s = self.spec
        try:
            info = dataset_info(s.data, subset=s.subset, val_size=s.train_args.get("val_size"))
        except DataError as err:
            raise SweepError(str(err)) from None
        too_big = [b for b in s.batch_sizes if b > info["train_size"]]
        if too_big:
            raise SweepError(f"batch sizes {too_big} exceed the training split of {info['train_size']} examples")
        seed = max(*s.seeds, s.tuning_seed)
        for method, o in s.schedulers.items():
            # a control's LR comes later; any positive value checks the rest of its flags
            lrs: Sequence[float | None] = ([None] if SCHEDULERS[s.sched_of(method)].lr is None
                                           else o.get("lr", (0.01,)))
            for model in s.models:
                for opt in s.opts:
                    for bs in s.batch_sizes:
                        for lr in lrs:
                            run = self.make_run("final", method, model, opt, bs, seed, lr)
                            try:
                                check_run(run.argv, world)
                            except SweepError as err:
                                raise SweepError(f"train.py would refuse {run.label()}: {err}") from None

    # -- plan -------------------------------------------------------------------------------------
    def plan(self, results: Mapping[str, RunResult]) -> Plan:
        s = self.spec
        grids: dict[tuple[str, str, str, int], GridState] = {}
        tuning: list[Run] = []
        finals: list[Run] = []
        waiting: list[tuple[str, str, str, int, int]] = []
        controls_waiting: list[tuple[str, str, str, int, int, str]] = []
        skipped: list[dict[str, Any]] = []
        pending_ext = 0
        for method, o in s.schedulers.items():
            for model in s.models:
                for opt in s.opts:
                    for tbs in s.tuned_bs(method):
                        if s.tuning_from is not None:  # chosen there: no tuning run here
                            grids[(method, model, opt, tbs)] = self._grid_tuned_in(method, model, opt, tbs)
                            continue

                        def result_of(v: float, m: str = method, mo: str = model, op: str = opt,
                                      b: int = tbs) -> RunResult | None:
                            return results.get(self.make_run("tune", m, mo, op, b, s.tuning_seed, v).run_id)

                        gs = decide_grid(GridState(method, model, opt, tbs, tuple(o["lr"])), result_of,
                                         s.max_extensions)
                        grids[(method, model, opt, tbs)] = gs
                        tuning += [self.make_run("tune", method, model, opt, tbs, s.tuning_seed, v) for v in gs.grid]
                        if gs.reason == "pending":
                            pending_ext += s.max_extensions - len(gs.extensions)
                    for bs in s.batch_sizes:
                        if s.lr_from(method) is not None:
                            # each seed takes the switch LR of the source's final run of the same cell
                            for seed in s.seeds:
                                src_id, lr, why = self.control_lr(method, model, opt, bs, seed, results)
                                if lr is not None:
                                    finals.append(self.make_run("final", method, model, opt, bs, seed, lr, src_id))
                                elif why is None:
                                    controls_waiting.append((method, model, opt, bs, seed, src_id))
                                else:
                                    skipped.append({"method": method, "sched": s.sched_of(method), "model": model,
                                                    "opt": opt, "bs": bs, "seed": seed, "lr_from": s.lr_from(method),
                                                    "source_run": src_id, "why": why})
                            continue
                        if not s.is_tuned(method):
                            lr: float | None = None
                        else:
                            gs = grids[(method, model, opt, s.b0 if s.sched_of(method) in TUNED_AT_B0 else bs)]
                            lr = gs.chosen
                            if lr is None:
                                waiting += [(method, model, opt, bs, seed) for seed in s.seeds]
                                continue
                        finals += [self.make_run("final", method, model, opt, bs, seed, lr) for seed in s.seeds]
        return Plan(grids=grids, tuning_runs=tuning, final_runs=finals, waiting_finals=waiting,
                    pending_extensions=pending_ext, waiting_controls=controls_waiting, skipped_controls=skipped)

    # -- stages.json ------------------------------------------------------------------------------
    def stages_doc(self, plan: Plan, results: Mapping[str, RunResult]) -> dict[str, Any]:
        s = self.spec

        def status(run: Run) -> dict[str, Any]:
            r = results.get(run.run_id)
            d: dict[str, Any] = {"status": "missing" if r is None else r.status,
                                 "val_acc": None if r is None else r.val_acc}
            if r is not None and not r.recorded:
                d["error"] = r.error
            return d

        tuning_ids = {r.run_id for r in plan.tuning_runs}
        selection: list[dict[str, Any]] = []
        for method in s.schedulers:
            for model in s.models:
                for opt in s.opts:
                    for bs in s.batch_sizes:
                        e: dict[str, Any] = {"method": method, "sched": s.sched_of(method), "model": model,
                                             "opt": opt, "bs": bs}
                        if s.lr_from(method) is not None:
                            e.update(tuned=False, tuned_at_bs=None, grid=[], trials=[], extensions=[],
                                     chosen_lr=None, reason=f"lr from {s.lr_from(method)} (each seed: the switch LR "
                                     "of its final run)", capped=False, messages=[], lr_from=s.lr_from(method))
                        elif s.sched_of(method) in TUNED_BY_OWN_RUN:
                            e.update(tuned=False, tuned_at_bs=None, grid=[], trials=[], extensions=[],
                                     chosen_lr=None, reason="its own LR range test, in each run", capped=False,
                                     messages=[])
                        elif not s.is_tuned(method):
                            e.update(tuned=False, tuned_at_bs=None, grid=[], trials=[], extensions=[],
                                     chosen_lr=None, reason="not tuned", capped=False, messages=[])
                        else:
                            tbs = s.b0 if s.sched_of(method) in TUNED_AT_B0 else bs
                            gs = plan.grids[(method, model, opt, tbs)]
                            trials = []
                            if s.tuning_from is not None:  # the other sweep's runs, as it recorded them
                                trials = [dict(t) for t in self.tuned_in()[0][(method, model, opt, tbs)]["trials"]]
                                e["tuned_in"] = s.tuning_from
                            for v in gs.grid if s.tuning_from is None else ():
                                run = self.make_run("tune", method, model, opt, tbs, s.tuning_seed, v)
                                trials.append({"lr": v, "run_id": run.run_id, **status(run)})
                            e.update(tuned=tbs == bs, tuned_at_bs=tbs, grid=list(gs.grid), trials=trials,
                                     extensions=list(gs.extensions), chosen_lr=gs.chosen, reason=gs.reason,
                                     capped=gs.capped, messages=list(gs.messages))
                        selection.append(e)
        final_runs = []
        for run in plan.final_runs:
            st = status(run)
            d = {"method": run.method, "sched": run.sched, "model": run.model, "opt": run.opt, "bs": run.bs,
                 "seed": run.seed, "lr": run.lr, "run_id": run.run_id, "status": st["status"],
                 "tuning_run": run.run_id in tuning_ids}
            if run.lr_from_run is not None:
                d.update(lr_from=s.lr_from(run.method), lr_from_run=run.lr_from_run)
            if "error" in st:
                d["error"] = st["error"]
            final_runs.append(d)
        for method, model, opt, bs, seed in plan.waiting_finals:
            final_runs.append({"method": method, "sched": s.sched_of(method), "model": model, "opt": opt, "bs": bs,
                               "seed": seed, "lr": None, "run_id": None, "status": "missing", "tuning_run": False})
        for method, model, opt, bs, seed, src_id in plan.waiting_controls:
            final_runs.append({"method": method, "sched": s.sched_of(method), "model": model, "opt": opt, "bs": bs,
                               "seed": seed, "lr": None, "run_id": None, "status": "missing", "tuning_run": False,
                               "lr_from": s.lr_from(method), "lr_from_run": src_id,
                               "why": f"waits for {s.lr_from(method)}'s run {src_id}"})
        for c in plan.skipped_controls:
            final_runs.append({"method": c["method"], "sched": c["sched"], "model": c["model"], "opt": c["opt"],
                               "bs": c["bs"], "seed": c["seed"], "lr": None, "run_id": None, "status": "skipped",
                               "tuning_run": False, "lr_from": c["lr_from"], "lr_from_run": c["source_run"],
                               "why": c["why"]})
        charge = []
        for (method, model, opt, tbs), gs in plan.grids.items():
            if s.tuning_from is not None:
                # charged as the other sweep paid for it (its runs, its device time)
                theirs = self.tuned_in()[1].get((method, model, opt, tbs), {})
                charge.append({**theirs, "method": method, "sched": s.sched_of(method), "model": model, "opt": opt,
                               "bs": tbs, "tuned_in": s.tuning_from})
                continue
            ids = [self.make_run("tune", method, model, opt, tbs, s.tuning_seed, v).run_id for v in gs.grid]
            secs = [results[i].wall_seconds for i in ids if i in results and results[i].wall_seconds is not None]
            at_b0 = s.sched_of(method) in TUNED_AT_B0
            charge.append({"method": method, "sched": s.sched_of(method), "model": model, "opt": opt, "bs": tbs,
                           "run_ids": ids, "runs": len(ids), "wall_seconds": sum(secs) if secs else None,
                           "charged": "once per grid" if at_b0 else "per batch size",
                           "covers_bs": list(s.batch_sizes) if at_b0 else [tbs]})
        # the range test: one tuning run per cell, the test each final run makes before it trains (its
        # steps and device seconds are in the run's record; here the mean over the finals that have one)
        for method in s.schedulers:
            if s.sched_of(method) not in TUNED_BY_OWN_RUN:
                continue
            for model in s.models:
                for opt in s.opts:
                    for bs in s.batch_sizes:
                        ids = [self.make_run("final", method, model, opt, bs, seed, None).run_id for seed in s.seeds]
                        secs = [results[i].tuning_seconds for i in ids
                                if i in results and results[i].tuning_seconds is not None]
                        charge.append({"method": method, "sched": s.sched_of(method), "model": model, "opt": opt,
                                       "bs": bs, "run_ids": ids, "runs": 1,
                                       "wall_seconds": sum(secs) / len(secs) if secs else None,
                                       "charged": "one range test per run, inside it", "covers_bs": [bs]})
        # a control reads its LR off runs the sweep makes anyway: no tuning run of its own
        for method in s.schedulers:
            src = s.lr_from(method)
            if src is None:
                continue
            for model in s.models:
                for opt in s.opts:
                    for bs in s.batch_sizes:
                        charge.append({"method": method, "sched": s.sched_of(method), "model": model, "opt": opt,
                                       "bs": bs, "run_ids": [], "runs": 0, "wall_seconds": 0.0,
                                       "charged": f"none beyond {src}'s own run", "covers_bs": [bs],
                                       "lr_from": src})

        def have(rid: str) -> bool:
            return rid in results and results[rid].recorded

        tune_complete = plan.tuning_done and all(have(r.run_id) for r in plan.tuning_runs)
        final_complete = (not plan.waiting_finals and not plan.waiting_controls
                          and all(have(r.run_id) for r in plan.final_runs))
        n_tune_done = sum(have(r.run_id) for r in plan.tuning_runs)
        n_final_done = sum(have(r.run_id) for r in plan.final_runs)
        # distinct runs still to do: a final run that is its grid's tuning run counts once
        missing = {r.run_id for r in [*plan.tuning_runs, *plan.final_runs] if not have(r.run_id)}
        n_waiting_new = (sum(not self.reuses_tuning_run(m, b, sd) for m, _, _, b, sd in plan.waiting_finals)
                         + len(plan.waiting_controls))
        return {
            "schema": STAGES_SCHEMA, "name": s.name, "sweep_file": s.path, "spec": s.to_dict(),
            "complete": tune_complete and final_complete,
            "missing_runs": len(missing) + n_waiting_new,
            "stages": {"tune": {"complete": tune_complete, "runs": len(plan.tuning_runs), "done": n_tune_done,
                                "pending_extensions_max": plan.pending_extensions},
                       "final": {"complete": final_complete,
                                 "runs": len(plan.final_runs) + len(plan.waiting_finals) + len(plan.waiting_controls),
                                 "done": n_final_done, "waiting_for_tuning": len(plan.waiting_finals),
                                 "waiting_for_source": len(plan.waiting_controls),
                                 "skipped": len(plan.skipped_controls)}},
            "selection": selection, "final_runs": final_runs, "tuning_charge": charge,
            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def write_stages(self, plan: Plan, results: Mapping[str, RunResult]) -> dict[str, Any]:
        """Write stages.json, unless only its timestamp would change (a clean checkout stays clean)."""
        doc = self.stages_doc(plan, results)
        try:
            old = json.loads(self.stages_path.read_text())
        except (OSError, ValueError):
            old = None
        new = json.loads(json.dumps(finite_or_none(doc)))
        if isinstance(old, dict) and {**old, "updated_at": None} == {**new, "updated_at": None}:
            return doc
        atomic_write_json(self.stages_path, new)
        return doc

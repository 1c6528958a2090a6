"""A sweep's run records collated: read, grouped into cells (model x optimizer x batch x method) and
summarised per cell, with every rule of REPRODUCTION.md's "Selection and reporting".

Reads ``results/<sweep>/runs/*.json`` (train.py records) and, when the sweep runner has written it,
``results/<sweep>/stages.json`` (which runs tuned what and which runs are the finals). The tables
(``autolr.results``) and the figures (``autolr.plots``) are drawn from what this module returns:
final-epoch test accuracy and NLL, mean ± sample std over the final seeds that finished; diverged,
failed and missing seeds counted beside the number, never dropped; linear/legw tuning at B0 charged
once, to the B0 row; a grid that is not complete labelled partial, with counts. The peers: Schedule-Free
AdamW and Prodigy are charged no tuning run; the LR range test one per cell, at the test's own steps
and device time.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from autolr.records import finite_float
from autolr.registry import SCHEDULERS

__all__ = [
    "METHOD_ORDER", "METHOD_LABELS", "PEERS", "load_records", "load_stages", "read_raw_records", "stage_entries",
    "collate", "Collation", "Cell", "cell_stats", "method_rank", "bs_label",
]

METHOD_ORDER: tuple[str, ...] = tuple(SCHEDULERS)
METHOD_LABELS: dict[str, str] = {name: m.label for name, m in SCHEDULERS.items()}
# an outcome that produced a usable final-epoch number
OK = "finished"
Key = tuple[str, str, int, str]  # (model, opt, bs, method)

RECORD_COLUMNS = [
    "run_id", "method", "data", "model", "opt", "bs", "seed", "lr", "base_lr", "peak_lr", "warmup_epochs",
    "epochs", "status", "error", "val_acc", "val_loss", "test_acc", "test_loss", "epochs_done", "wall_seconds",
    "device_seconds", "switch_epoch", "switch_step", "switch_lr", "switch_kind", "n_tests", "n_positive_tests",
    "autowu_test_seconds", "autowu_test_share", "rangetest_steps", "rangetest_device_s", "device", "device_name",
    "world_size", "micro_bs",
    "steps_per_epoch", "total_steps", "git_commit", "git_dirty", "finished_at", "is_final", "is_tuning", "path",
]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _flatten(rec: dict[str, Any], path: Path) -> dict[str, Any]:
    cfg = rec.get("config") or {}
    env = rec.get("env") or {}
    outcome = rec.get("outcome") or {}
    final = rec.get("final") or {}
    timing = rec.get("timing") or {}
    aw = rec.get("autowu") or {}
    sched = rec.get("schedule") or {}
    epochs = rec.get("epochs") or []
    method = cfg.get("sched")
    world = int(env.get("world_size") or 1)
    wall = finite_float(timing.get("wall_seconds"))
    if wall is None:
        # a failed run has no timing block, but its epochs still cost device time
        wall = sum(finite_float(e.get("wall_seconds")) or 0.0 for e in epochs) or None
    peer = rec.get("peer") or {}
    rt = peer.get("range_test") or {}
    switch_lr = finite_float(aw.get("switch_lr"))
    autowu = method in SCHEDULERS and SCHEDULERS[method].autowu_family  # AutoWU and AutoWU+
    if autowu:
        peak = switch_lr
    elif peer:
        peak = finite_float(peer.get("peak_lr"))  # what the peer found or was given (train.peer_summary)
    else:
        peak = finite_float(sched.get("peak_lr", sched.get("lr", cfg.get("lr"))))
    tests = aw.get("tests") or []
    test_s = finite_float(timing.get("autowu_test_seconds"))
    if test_s is None:
        test_s = finite_float(aw.get("test_seconds"))
    share = finite_float(timing.get("autowu_test_share"))
    if share is None and test_s is not None and wall:
        share = test_s / wall
    bs = cfg.get("bs")
    return {
        "run_id": rec.get("run_id") or path.stem, "method": method, "data": cfg.get("data"),
        "model": cfg.get("model"), "opt": cfg.get("opt"), "bs": int(bs) if bs is not None else None,
        "seed": cfg.get("seed"),
        # the peak-defining LR the run ended up with: the flag for baselines, the discovered one for AutoWU
        # and the peers
        "lr": switch_lr if autowu else peak if peer else finite_float(cfg.get("lr")),
        "base_lr": finite_float(cfg.get("lr")), "peak_lr": peak,
        "warmup_epochs": finite_float(cfg.get("warmup_epochs")),
        "epochs": cfg.get("epochs"), "status": outcome.get("status") or "unknown", "error": outcome.get("error"),
        "val_acc": finite_float(final.get("val_acc")), "val_loss": finite_float(final.get("val_loss")),
        "test_acc": finite_float(final.get("test_acc")), "test_loss": finite_float(final.get("test_loss")),
        "epochs_done": final.get("epochs_done", len(epochs)), "wall_seconds": wall,
        # device-seconds: what a run costs on the hardware, so multi-GPU runs count every device
        "device_seconds": None if wall is None else wall * world,
        "switch_epoch": finite_float(aw.get("switch_epoch")), "switch_step": aw.get("switch_step"),
        "switch_lr": switch_lr,
        "switch_kind": aw.get("switch_kind"), "n_tests": len(tests) if aw else None,
        "n_positive_tests": sum(bool(t.get("positive")) for t in tests) if aw else None,
        "autowu_test_seconds": test_s if autowu else None,
        "autowu_test_share": share if autowu else None,
        "rangetest_steps": rt.get("steps"), "rangetest_device_s": finite_float(rt.get("device_seconds")),
        "device": env.get("device"), "device_name": env.get("device_name"), "world_size": world,
        "micro_bs": env.get("micro_bs"), "steps_per_epoch": rec.get("steps_per_epoch"),
        "total_steps": rec.get("total_steps"), "git_commit": (rec.get("git") or {}).get("commit"),
        "git_dirty": (rec.get("git") or {}).get("dirty"), "finished_at": timing.get("finished_at"),
        "is_final": None, "is_tuning": None, "path": str(path),
    }


def read_raw_records(sweep_dir: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every parseable record of ``sweep_dir/runs`` by run_id, and a note per unreadable file."""
    runs = Path(sweep_dir) / "runs"
    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    if not runs.is_dir():
        return out, notes
    for path in sorted(runs.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            if not isinstance(rec, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as err:
            notes.append(f"skipped unreadable record {path.name} ({type(err).__name__})")
            continue
        rec["_path"] = str(path)
        out[rec.get("run_id") or path.stem] = rec
    return out, notes


def load_stages(sweep_dir: str | Path) -> dict[str, Any] | None:
    """``stages.json`` as written by the sweep runner, or None when it is absent or unreadable."""
    path = Path(sweep_dir) / "stages.json"
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        warnings.warn(f"{path} is unreadable ({type(err).__name__}); collating without it", stacklevel=2)
        return None
    return obj if isinstance(obj, dict) else None


def stage_entries(stages: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The per-(method, model, opt, bs) tuning entries of stages.json, each with a ``trials`` list.

    The sweep runner writes them as ``selection`` (entries with ``trials`` of {lr, run_id, val_acc,
    status}); a list under ``stages`` whose ``grid`` holds such dicts is read the same way.
    """
    if not stages:
        return []
    entries = stages.get("selection")
    if not isinstance(entries, list):
        entries = stages.get("stages") if isinstance(stages.get("stages"), list) else []
    out = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        trials = e.get("trials")
        if not isinstance(trials, list):
            trials = [g for g in e.get("grid") or [] if isinstance(g, dict)]
        out.append({**e, "trials": [t for t in trials if isinstance(t, dict)]})
    return out


def _final_and_tuning_ids(stages: dict[str, Any] | None) -> tuple[set[str], set[str]]:
    if stages is None:
        return set(), set()
    finals = {f.get("run_id") for f in stages.get("final_runs") or [] if isinstance(f, dict) and f.get("run_id")}
    tuning = {t.get("run_id") for e in stage_entries(stages) for t in e["trials"] if t.get("run_id")}
    return finals, tuning


def load_records(sweep_dir: str | Path) -> pd.DataFrame:
    """One row per run record of ``sweep_dir/runs``, flattened (see ``RECORD_COLUMNS``).

    ``is_final`` / ``is_tuning`` come from stages.json when there is one (a seed-0 run at the
    chosen LR can be both); without it they are left empty (None).
    """
    raw, notes = read_raw_records(sweep_dir)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    rows = [_flatten(rec, Path(rec["_path"])) | {"run_id": rid} for rid, rec in raw.items()]
    return _records_frame(rows, load_stages(sweep_dir))


def _records_frame(rows: Iterable[dict[str, Any]], stages: dict[str, Any] | None) -> pd.DataFrame:
    finals, tuning = _final_and_tuning_ids(stages)
    out = []
    for row in rows:
        r = dict(row)
        if stages is not None:
            r["is_final"], r["is_tuning"] = r["run_id"] in finals, r["run_id"] in tuning
        out.append(r)
    df = pd.DataFrame(out, columns=RECORD_COLUMNS)
    if not len(df):
        return df
    floats = ["lr", "base_lr", "peak_lr", "warmup_epochs", "val_acc", "val_loss", "test_acc", "test_loss",
              "wall_seconds", "device_seconds", "switch_epoch", "switch_lr", "autowu_test_seconds", "autowu_test_share",
              "rangetest_device_s"]
    return df.astype({"bs": "Int64", "world_size": "Int64", **dict.fromkeys(floats, "float64")})


# ---------------------------------------------------------------------------------------------
# Collation
# ---------------------------------------------------------------------------------------------
@dataclass
class Cell:
    """Everything the table says about one (model, opt, batch size, method)."""

    key: Key
    finals: list[dict[str, Any]] = field(default_factory=list)  # present records (one per seed)
    missing: int = 0  # final seeds expected but without a record
    tuning: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # run_id -> record row or None
    chosen_lr: float | None = None
    note: str | None = None
    #: tuned by another sweep (the sweep file's tuning_from): its name, and the runs and device
    #: seconds it charged there, which are not this sweep's records or device
    tuned_in: str | None = None
    charged: tuple[int, float] | None = None


@dataclass
class Collation:
    """A sweep's records sorted into table cells, with what is known about completeness."""

    sweep: str
    sweep_dir: Path
    data: str | None
    cells: dict[Key, Cell]
    stages: dict[str, Any] | None
    records: pd.DataFrame
    raw: dict[str, dict[str, Any]]  # run_id -> the record as read, once per collation
    partial: bool
    done: int  # final runs with a record
    expected: int  # final runs the grid is expected to hold
    tuning_done: int
    tuning_expected: int
    partial_reasons: list[str]
    notes: list[str]

    @property
    def imagenet(self) -> bool:
        return self.data == "imagenet" or self.sweep.split("-")[0].split("_")[0] == "imagenet"


def method_rank(m: str) -> tuple[int, str]:
    """Sort key of a method: ``METHOD_ORDER`` first, any other after it by name (tables and figures alike)."""
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def _sweep_yaml(sweep_dir: Path, name: str) -> dict[str, Any] | None:
    """The sweep file ``sweeps/<name>.yaml`` of the repository that holds ``results/<name>``, if any."""
    # only beside its own results/ tree: a same-named sweep file elsewhere describes another grid
    path = sweep_dir.resolve().parent.parent / "sweeps" / f"{name}.yaml"
    if not path.is_file():
        return None
    try:
        import yaml

        obj = yaml.safe_load(path.read_text())
    except Exception:  # noqa: BLE001 - the YAML only refines counts; never fail a table on it
        return None
    return obj if isinstance(obj, dict) else None


def _yaml_expectations(spec: dict[str, Any] | None) -> tuple[list[tuple[str, str, int, str]], int | None]:
    """The cells and seeds per cell a sweep file promises (empty when it cannot say)."""
    if not spec:
        return [], None
    seeds = spec.get("seeds")
    n_seeds = len(seeds) if isinstance(seeds, list) else (int(seeds) if isinstance(seeds, int) else None)
    models, opts, sizes, scheds = (spec.get(k) for k in ("models", "opts", "batch_sizes", "schedulers"))
    if not (isinstance(models, list) and isinstance(opts, list) and isinstance(sizes, list)
            and isinstance(scheds, dict)):
        return [], n_seeds
    keys = [(str(m), str(o), int(b), str(s)) for m in models for o in opts for b in sizes for s in scheds]
    return keys, n_seeds


def _pick_best_lr(rows: list[dict[str, Any]]) -> float | None:
    """Without stages.json: the LR the sweep would have chosen, by its one rule (tuning seed's runs)."""
    from autolr.sweep import TUNING_SEED, pick_lr, selection_score

    return pick_lr({r["base_lr"]: selection_score(r["status"], r["val_acc"]) for r in rows
                    if r.get("seed") == TUNING_SEED and r["base_lr"] is not None})


def collate(sweep_dir: str | Path) -> Collation:
    """Sort a sweep's records into cells, from stages.json when present, else from the records alone."""
    sweep_dir = Path(sweep_dir)
    raw, notes = read_raw_records(sweep_dir)
    stages = load_stages(sweep_dir)
    if (sweep_dir / "stages.json").is_file() and stages is None:
        notes.append("stages.json exists but could not be read: collated from the records alone")
    rows: dict[str, dict[str, Any]] = {rid: _flatten(rec, Path(rec["_path"])) | {"run_id": rid}
                                       for rid, rec in raw.items()}
    name = (stages or {}).get("sweep") or (stages or {}).get("name") or sweep_dir.name
    datas = sorted({r["data"] for r in rows.values() if r["data"]})
    if len(datas) > 1:
        notes.append(f"records from several datasets: {', '.join(datas)}")
    # the runner copies the sweep file's content into stages.json; the file itself is the fallback
    spec = (stages or {}).get("spec") if isinstance((stages or {}).get("spec"), dict) else _sweep_yaml(sweep_dir, name)
    yaml_keys, yaml_seeds = _yaml_expectations(spec)
    data = datas[0] if datas else (spec or {}).get("data")
    cells: dict[Key, Cell] = {}

    def cell(key: Key) -> Cell:
        return cells.setdefault(key, Cell(key=key))

    used: set[str] = set()
    partial_reasons: list[str] = []
    if stages is not None:
        for f in stages.get("final_runs") or []:
            try:
                key = (str(f["model"]), str(f["opt"]), int(f["bs"]), str(f["method"]))
            except (KeyError, TypeError, ValueError):
                notes.append(f"stages.json: a final run without model/opt/bs/method: {f}")
                continue
            rid = f.get("run_id")
            row = rows.get(rid) if rid else None
            if row is None:
                if f.get("status") in ("failed", "diverged"):
                    # the runner knows the outcome though the record is gone: still a counted seed
                    cell(key).finals.append({"run_id": rid, "status": f["status"], "seed": f.get("seed")})
                elif f.get("status") == "skipped":
                    # an lr_from control whose source run has no LR to give: a counted seed that never runs
                    cell(key).finals.append({"run_id": None, "status": "skipped", "seed": f.get("seed")})
                    cell(key).note = f"seed {f.get('seed')} skipped: {f.get('why')}"
                else:
                    cell(key).missing += 1
            else:
                cell(key).finals.append(row)
                used.add(rid)
        for e in stage_entries(stages):
            try:
                skey = (str(e["model"]), str(e["opt"]), int(e["bs"]), str(e["method"]))
            except (KeyError, TypeError, ValueError):
                notes.append("stages.json: a tuning entry without model/opt/bs/method")
                continue
            cell(skey).chosen_lr = finite_float(e.get("chosen_lr"))
            if e.get("tuned_in"):  # its trials are that sweep's records, charged below from tuning_charge
                cell(skey).tuned_in = str(e["tuned_in"])
                continue
            for t in e["trials"]:
                rid = t.get("run_id")
                if not rid:
                    continue
                row = rows.get(rid)
                # charged to the batch the run trained at, so B0 tuning lands once, on the B0 row
                tbs = row["bs"] if row and row["bs"] else (e.get("tuned_at_bs") or skey[2])
                if not any(rid in c.tuning for c in cells.values() if c.key[3] == skey[3]):
                    cell((skey[0], skey[1], int(tbs), skey[3])).tuning[rid] = row
                    used.add(rid)
        for e in stages.get("tuning_charge") or []:
            if isinstance(e, dict) and e.get("tuned_in"):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    c = cell((str(e["model"]), str(e["opt"]), int(e["bs"]), str(e["method"])))
                    c.tuned_in, c.charged = str(e["tuned_in"]), (int(e["runs"]), float(e.get("wall_seconds") or 0.0))
        if not stages.get("complete", False):
            partial_reasons.append("stages.json says the sweep is not complete")
        unused = sorted(set(rows) - used)
        if unused:
            notes.append(f"{len(unused)} record(s) in runs/ are neither finals nor tuning runs of stages.json "
                         f"(left out): {', '.join(unused[:5])}{' …' if len(unused) > 5 else ''}")
    else:
        partial_reasons.append("no stages.json: every record is treated as a final run")
        groups: dict[Key, list[dict[str, Any]]] = {}
        for row in rows.values():
            if None in (row["model"], row["opt"], row["bs"], row["method"]):
                notes.append(f"record {row['run_id']} lacks model/opt/bs/sched: left out")
                continue
            groups.setdefault((row["model"], row["opt"], int(row["bs"]), row["method"]), []).append(row)
        for key, grp in groups.items():
            lrs = {r["base_lr"] for r in grp}
            c = cell(key)
            if len(lrs) > 1:
                # seeds at different LRs are not seeds of one setting: keep the LR the selection
                # metric prefers, and count the others as its tuning runs
                best = _pick_best_lr(grp)
                c.chosen_lr = best
                c.note = f"{len(lrs)} LRs present; finals = lr {_fmt_lr(best)} (best val acc)"
                for r in grp:
                    if r["base_lr"] == best:
                        c.finals.append(r)
                    else:
                        c.tuning[r["run_id"]] = r
            else:
                c.finals.extend(grp)
    # the sweep file promises cells and seeds that neither stages.json nor the records may show yet
    for key in yaml_keys:
        cell(key)
    counts = [len(c.finals) + c.missing for c in cells.values()]
    for c in cells.values():
        have = len(c.finals) + c.missing
        if yaml_seeds:
            c.missing += max(0, yaml_seeds - have)
        elif have == 0 and stages is not None and max(counts, default=0):
            # a stage still tuning has no final runs listed yet: assume the seeds other cells have
            c.missing += max(counts)
    done = sum(len(c.finals) for c in cells.values())
    expected = done + sum(c.missing for c in cells.values())
    tuning_expected = sum(len(c.tuning) for c in cells.values())
    tuning_done = sum(1 for c in cells.values() for r in c.tuning.values() if r is not None)
    if expected > done:
        partial_reasons.append(f"{done}/{expected} final runs done")
    if tuning_expected > tuning_done:
        partial_reasons.append(f"{tuning_done}/{tuning_expected} tuning runs done")
    df = _records_frame(rows.values(), stages)
    ordered = dict(sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], method_rank(kv[0][3]))))
    return Collation(sweep=name, sweep_dir=sweep_dir, data=data, cells=ordered, stages=stages, records=df, raw=raw,
                     partial=bool(partial_reasons), done=done, expected=expected, tuning_done=tuning_done,
                     tuning_expected=tuning_expected, partial_reasons=partial_reasons, notes=notes)


# ---------------------------------------------------------------------------------------------
# Statistics and formatting
# ---------------------------------------------------------------------------------------------
def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    # sample std (ddof = 1): the spread a reader expects from "± over seeds"; undefined for one seed.
    # fmean and stdev are correctly rounded, so a rebuilt table matches to the last digit
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


_FINAL_COLUMNS = ["cell", "run_id", "status", "method", "test_acc", "test_loss", "val_acc", "peak_lr", "base_lr",
                  "switch_kind", "switch_epoch", "switch_lr", "autowu_test_seconds", "autowu_test_share",
                  "rangetest_steps", "rangetest_device_s", "device_seconds"]
#: cell_stats keys of the peers only: TABLE.csv has them only where a peer ran (the committed tables of
#: sweeps without peers keep their columns)
PEER_COLUMNS = ("tuning_steps",)


def _one_run(c: Cell) -> bool:
    """Whether the cell's method tunes itself with a run of its own in each run (the range test)."""
    scheds = {r.get("method") for r in c.finals if r.get("method")} or {c.key[3]}
    return any(SCHEDULERS[m].tuning == "one_run" for m in scheds if m in SCHEDULERS)


def _per_cell(frame: pd.DataFrame, column: str, agg: Callable[[list[Any]], Any], scale: float = 1.0) -> dict[int, Any]:
    """``agg`` of ``column`` (times ``scale``, missing values left out) for each cell of ``frame``."""
    values = frame[column] * scale if scale != 1.0 else frame[column]
    return {int(cell): agg(s.dropna().tolist()) for cell, s in values.groupby(frame["cell"])}


def _device_seconds(values: list[float]) -> float:
    return sum(v or 0.0 for v in values)


def cell_stats(cells: Iterable[Cell]) -> list[dict[str, Any]]:
    """One row per cell, in order: seed counts, mean ± sample std over the final seeds that finished,
    AutoWU's switch, and the cell's cost (tuning and final device time, a reused run counted once)."""
    cells = list(cells)
    finals = pd.DataFrame([{**r, "cell": i} for i, c in enumerate(cells) for r in c.finals], columns=_FINAL_COLUMNS)
    ok = finals[finals["status"] == OK]
    aw = finals[finals["switch_kind"].notna() & (finals["switch_kind"] != "")]
    tuning = pd.DataFrame([{**r, "cell": i} for i, c in enumerate(cells) for r in c.tuning.values() if r is not None],
                          columns=_FINAL_COLUMNS)
    with_id = finals[finals["run_id"].notna() & (finals["run_id"] != "")]
    # a seed-0 tuning run reused as a final is paid for once
    union = pd.concat([with_id, tuning]).drop_duplicates(["cell", "run_id"], keep="first")
    none: tuple[None, None] = (None, None)
    stat = {
        "test_acc_pct": _per_cell(ok, "test_acc", _mean_std, 100.0), "test_nll": _per_cell(ok, "test_loss", _mean_std),
        "val_acc_pct": _per_cell(ok, "val_acc", _mean_std, 100.0), "peak_lr": _per_cell(ok, "peak_lr", _mean_std),
        "switch_epoch": _per_cell(aw, "switch_epoch", _mean_std), "switch_lr": _per_cell(aw, "switch_lr", _mean_std),
        "autowu_test_seconds": _per_cell(aw, "autowu_test_seconds", _mean_std),
        "autowu_test_share": _per_cell(aw, "autowu_test_share", _mean_std),
    }
    counts = finals.groupby("cell")["status"].value_counts()
    kinds = aw.groupby("cell")["switch_kind"].value_counts()
    tuning_s = _per_cell(tuning, "device_seconds", _device_seconds)
    # the range test: one test per final run, inside it; the charge is one test at its mean cost
    test_s = _per_cell(finals, "rangetest_device_s", lambda v: statistics.fmean(v) if v else None)
    test_steps = _per_cell(finals, "rangetest_steps", lambda v: statistics.fmean(v) if v else None)
    final_s = _per_cell(with_id.drop_duplicates(["cell", "run_id"]), "device_seconds", _device_seconds)
    total_s = _per_cell(union, "device_seconds", _device_seconds)
    base_lrs = _per_cell(finals, "base_lr", lambda v: sorted(set(v)))
    out = []
    for i, c in enumerate(cells):
        model, opt, bs, method = c.key
        n_ok, n_div, n_fail = (int(counts.get((i, s), 0)) for s in (OK, "diverged", "failed"))
        lrs = base_lrs.get(i, [])
        one_run = _one_run(c)
        n_tune = 1 if one_run else len(c.tuning)
        n_tune_done = int(test_s.get(i) is not None) if one_run else sum(r is not None for r in c.tuning.values())
        tune_s = (test_s.get(i) or 0.0) if one_run else tuning_s.get(i, 0)
        if c.charged is not None:
            (n_tune, tune_s), n_tune_done = c.charged, c.charged[0]
        out.append({
            "model": model, "opt": opt, "bs": bs, "method": method,
            "n_expected": len(c.finals) + c.missing, "n_done": len(c.finals), "n_finished": n_ok,
            "n_diverged": n_div, "n_failed": n_fail, "n_other": len(c.finals) - n_ok - n_div - n_fail,
            "n_missing": c.missing,
            "test_acc_pct_mean": stat["test_acc_pct"].get(i, none)[0],
            "test_acc_pct_std": stat["test_acc_pct"].get(i, none)[1],
            "test_nll_mean": stat["test_nll"].get(i, none)[0], "test_nll_std": stat["test_nll"].get(i, none)[1],
            "val_acc_pct_mean": stat["val_acc_pct"].get(i, none)[0],
            "lr": c.chosen_lr if c.chosen_lr is not None else (lrs[0] if len(lrs) == 1 else None),
            "peak_lr_mean": stat["peak_lr"].get(i, none)[0], "peak_lr_std": stat["peak_lr"].get(i, none)[1],
            "tuning_runs": n_tune, "tuning_runs_done": n_tune_done, "tuned_in": c.tuned_in,
            "tuning_device_s": tune_s,
            "tuning_steps": test_steps.get(i) if one_run else None, "final_device_s": final_s.get(i, 0),
            "total_device_s": total_s.get(i, 0),
            "switch_epoch_mean": stat["switch_epoch"].get(i, none)[0],
            "switch_epoch_std": stat["switch_epoch"].get(i, none)[1],
            "switch_lr_mean": stat["switch_lr"].get(i, none)[0], "switch_lr_std": stat["switch_lr"].get(i, none)[1],
            "switch_test": int(kinds.get((i, "test"), 0)), "switch_forced": int(kinds.get((i, "forced"), 0)),
            "autowu_test_seconds_mean": stat["autowu_test_seconds"].get(i, none)[0],
            "autowu_test_share_mean": stat["autowu_test_share"].get(i, none)[0], "note": c.note,
        })
    return out


#: the peers (autolr/peers), in the registry's order, and what their peak LR is
PEERS: tuple[str, ...] = ("schedulefree", "prodigy", "rangetest")


def _fmt_lr(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def bs_label(bs: int) -> str:
    """256, 1K, 16K: batch sizes as the paper writes them."""
    return f"{bs // 1024}K" if bs >= 1024 and bs % 1024 == 0 else str(bs)

"""A sweep's table: its records collated (``autolr.collate``) and written as the paper-style table.

    python -m autolr.results results/fashion [results/cifar10 ...]

Reads ``results/<sweep>/runs/*.json`` (train.py records) and, when the sweep runner has written
it, ``results/<sweep>/stages.json`` (which runs tuned what and which runs are the finals). Writes
``results/<sweep>/TABLE.md`` and ``TABLE.csv`` (rewritten only when their content changes; a
folder with neither records nor stages.json is refused with exit code 2). TABLE.md has a section
"AutoWU diagnosis" for every AutoWU record (``autolr.diagnose``). Everything here is derived from
those files alone, so a table can be rebuilt on any machine from a copy of results/.

Reporting rules (shared/REPRODUCTION.md, "Selection and reporting"): final-epoch test accuracy
and NLL, mean ± sample std over the final seeds that finished; diverged, failed and missing
seeds are counted beside the number, never dropped silently; linear/legw tuning at B0 is
charged once, to the B0 row, and shown again in the total line; a grid that is not complete
is labelled partial, with counts. The peers (autolr/peers): Schedule-Free AdamW and Prodigy are
charged no tuning run; the LR range test one per cell, at the test's own steps and device time
(each final run makes its own test, inside its run: the mean over the finals is shown), and a
"Peers" section lists what each peer run found and spent.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from autolr.collate import (  # the collation, re-exported: autolr.results is where users look for it
    METHOD_LABELS,
    METHOD_ORDER,
    PEER_COLUMNS,
    PEERS,
    Collation,
    Key,
    _fmt_lr,
    bs_label,
    cell_stats,
    collate,
    load_records,
    load_stages,
    method_rank,
    read_raw_records,
    stage_entries,
)
from autolr.diagnose import diagnose_records
from autolr.files import atomic_write_text
from autolr.records import finite_float
from autolr.registry import SCHEDULERS

__all__ = [
    "METHOD_ORDER", "METHOD_LABELS", "PAPER_IMAGENET", "AUTHORS_RERUN_IMAGENET", "load_records", "load_stages",
    "read_raw_records", "stage_entries", "collate", "Collation", "cell_stats", "build_table", "method_rank",
    "bs_label", "main",
]

# The paper's ImageNet top-1 (%) for AutoWU, AdamP, final epoch (REPRODUCTION.md). Keyed by the
# model names our imagenet recipe uses, so that they line up with our rows and nothing else.
PAPER_IMAGENET: dict[tuple[str, int], float] = {
    ("resnet50", 4096): 75.70, ("resnet50", 16384): 75.22,
    ("efficientnet_b0", 4096): 75.81, ("efficientnet_b0", 16384): 75.44,
}
AUTHORS_RERUN_IMAGENET: dict[tuple[str, int], float] = {
    ("resnet50", 4096): 75.54, ("resnet50", 16384): 74.87,
    ("efficientnet_b0", 4096): 75.74, ("efficientnet_b0", 16384): 75.66,
}

def _fmt_pm(m: float | None, s: float | None, fmt: str) -> str:
    if m is None:
        return "—"
    return f"{m:{fmt}}" if s is None else f"{m:{fmt}} ± {s:{fmt}}"


def _fmt_seconds(s: float | None) -> str:
    if s is None or s == 0:
        return "0"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _cost_cell(runs: float, done: float, tune_s: float, total_s: float) -> str:
    n = f"{int(runs)}" if done == runs else f"{int(done)}/{int(runs)} done"
    return f"tune {n}" + (f" ({_fmt_seconds(tune_s)})" if runs else "") + f" · all {_fmt_seconds(total_s)}"


def _status_suffix(row: dict[str, Any]) -> str:
    n = row["n_expected"]
    parts = [f"{row[k]}/{n} {label}" for k, label in (("n_diverged", "diverged"), ("n_failed", "failed"),
                                                       ("n_other", "unfinished"), ("n_missing", "missing"))
             if row[k]]
    return f" ({', '.join(parts)})" if parts else ""


def _result_cell(row: dict[str, Any] | None, metric: str, fmt: str) -> str:
    if row is None:
        return ""
    if row["n_done"] == 0:
        return f"not run ({row['n_missing']} missing)" if row["n_missing"] else "—"
    return _fmt_pm(row[f"{metric}_mean"], row[f"{metric}_std"], fmt) + _status_suffix(row)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] | None = None) -> str:
    align = align or ["l"] * len(headers)
    rule = ["---:" if a == "r" else ":---:" if a == "c" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------
def build_table(sweep_dir: str | Path, write: bool = True) -> tuple[pd.DataFrame, str]:
    """The sweep's table as a long DataFrame (one row per model × opt × batch × method) and as markdown.

    With ``write`` (the default) both go to ``sweep_dir/TABLE.csv`` and ``TABLE.md``, atomically,
    and only when their content changed (a rebuild leaves a clean checkout clean).
    """
    sweep_dir = Path(sweep_dir)
    col = collate(sweep_dir)
    rows = cell_stats(col.cells.values())
    df = pd.DataFrame(rows)
    if col.imagenet and len(df):
        # the paper's numbers sit in their own columns, on AutoWU rows only: they are AutoWU's results
        df["paper_autowu_acc_pct"] = [PAPER_IMAGENET.get((r["model"], r["bs"])) if r["method"] == "auto" else None
                                      for r in rows]
        df["authors_rerun_autowu_acc_pct"] = [AUTHORS_RERUN_IMAGENET.get((r["model"], r["bs"]))
                                              if r["method"] == "auto" else None for r in rows]
    if len(df) and df[list(PEER_COLUMNS)].isna().all().all():
        df = df.drop(columns=list(PEER_COLUMNS))  # no peer here: the columns of a table without them
    if len(df):
        df.insert(0, "sweep", col.sweep)
        df["partial"] = col.partial
    md = _markdown(col, rows)
    if write:
        atomic_write_text(sweep_dir / "TABLE.md", md, if_changed=True)
        atomic_write_text(sweep_dir / "TABLE.csv", df.to_csv(index=False), if_changed=True)
    return df, md


# ---------------------------------------------------------------------------------------------
# Markdown: one function per section, each returning its text or None when it has nothing to say
# ---------------------------------------------------------------------------------------------
Rows = dict[Key, dict[str, Any]]


def _method_grid(rows: Rows, methods: list[str], cell: Callable[[dict[str, Any] | None], str],
                 extra_headers: Sequence[str] = (),
                 extra: Callable[[str, int], list[str]] = lambda model, bs: []) -> str:
    """A (model, opt, batch) × method table whose cells are ``cell(row or None)``, then ``extra`` columns."""
    groups = sorted({(k[0], k[1], k[2]) for k in rows})
    body = [[model, opt, bs_label(bs)] + [cell(rows.get((model, opt, bs, m))) for m in methods] + extra(model, bs)
            for model, opt, bs in groups]
    headers = ["model", "opt", "batch"] + [METHOD_LABELS.get(m, m) for m in methods] + list(extra_headers)
    return _md_table(headers, body, ["l", "l", "r"] + ["r"] * (len(headers) - 3))


def _paper_columns(model: str, bs: int) -> list[str]:
    pv, rv = PAPER_IMAGENET.get((model, bs)), AUTHORS_RERUN_IMAGENET.get((model, bs))
    return [f"{pv:.2f}" if pv else "—", f"{rv:.2f}" if rv else "—"]


def _md_head(col: Collation, rows: list[dict[str, Any]]) -> list[str]:
    out: list[str] = [f"# Results: {col.sweep}" + (f" ({col.data})" if col.data else "")]
    if col.partial:
        reasons = "; ".join(r for r in col.partial_reasons if "final runs done" not in r)
        head = (f"{col.done}/{col.expected} final runs done" if col.expected > col.done
                else f"{col.done} final run(s) found")
        out.append(f"> **⚠ PARTIAL — {head}** ({reasons}). Numbers may change as the grid fills in.")
    where = col.sweep_dir.as_posix()
    line = (f"From {len(col.records)} run record(s) in `{where}/runs/`"
            + ("" if col.stages is None else " and `stages.json`")
            + f"; rebuild with `python -m autolr.results {where}`. "
            "Final-epoch numbers, mean ± sample std (ddof 1) over the final seeds that finished; "
            "diverged, failed and missing seeds are counted beside the number, never dropped.")
    if rows:
        line += f" Final seeds per cell: {', '.join(map(str, sorted({r['n_expected'] for r in rows})))}."
    out.append(line)
    if rows and not col.imagenet:
        out.append("Every number here comes from this project's runs; the AutoWU paper's tables for this "
                   "setting are not known here (REPRODUCTION.md).")
    return out


def _md_results(rows: Rows, methods: list[str], metric: str, fmt: str, title: str, paper: bool) -> str:
    table = _method_grid(rows, methods, lambda r: _result_cell(r, metric, fmt),
                         *((["paper AutoWU † (not ours)", "authors' rerun AutoWU † (not ours)"], _paper_columns)
                           if paper else ()))
    return f"## {title}\n\n" + table


def _md_paper_note() -> str:
    return ("† Published ImageNet top-1 (%) of AutoWU in the paper (AdamP, reference recipe, final "
            "epoch) and the authors' own rerun with their released code, as listed in REPRODUCTION.md. "
            "They are not results of this project and are never averaged with ours.")


def _peers_in(methods: Sequence[str]) -> list[str]:
    return [m for m in methods if m in PEERS]


def _md_peak_lr(rows: Rows, methods: list[str]) -> str:
    table = _method_grid(rows, methods,
                         lambda r: "" if r is None else _fmt_pm(r["peak_lr_mean"], r["peak_lr_std"], ".3g"))
    peers = "".join(PEAK_NOTES[m] for m in _peers_in(methods))
    return ("## Peak LR\n\nAutoWU and AutoWU+: the switch LR they discovered; linear / LEGW: the rule applied to "
            "the LR tuned at B0; fixed: tuned at every batch size." + peers + "\n\n" + table)


_COST_KEYS = ("tuning_runs", "tuning_runs_done", "tuning_device_s", "total_device_s")


def _cost_of(t: Any) -> str:
    steps = t.get("tuning_steps") if isinstance(t, dict) else None
    cell = _cost_cell(*(t[k] for k in _COST_KEYS))
    if isinstance(t, dict) and t.get("tuned_in") and t["tuning_runs"]:
        # another sweep's runs, on its device: named, and not in this sweep's "all"
        cell = cell.replace(" (", f" in {t['tuned_in']} (", 1).replace(") · ", " there) · ", 1)
    # the range test's charge in steps too: a test is a few dozen steps, not a run
    return cell if steps is None else cell.replace(") · ", f", {steps:.0f} steps) · ", 1)


def _md_tuning_cost(col: Collation, rows: Rows, methods: list[str]) -> str:
    body = [[model, opt, bs_label(bs)] + ["" if (r := rows.get((model, opt, bs, m))) is None else _cost_of(r)
                                          for m in methods]
            for model, opt, bs in sorted({(k[0], k[1], k[2]) for k in rows})]
    cost = pd.DataFrame([{"model": k[0], "opt": k[1], "method": k[3], **{c: r[c] for c in _COST_KEYS}}
                         for k, r in rows.items()])
    per_model = cost.groupby(["model", "opt", "method"])[list(_COST_KEYS)].sum()
    for model, opt in sorted({(k[0], k[1]) for k in rows}):
        body.append([f"**total {model}**", opt, "all"] + [
            f"**{_cost_of(per_model.loc[(model, opt, m)])}**" if (model, opt, m) in per_model.index else ""
            for m in methods])
    if len({(k[0], k[1]) for k in rows}) > 1:
        grand = cost.groupby("method")[list(_COST_KEYS)].sum()
        body.append(["**total, every model**", "", ""]
                    + [f"**{_cost_of(grand.loc[m])}**" if m in grand.index else "" for m in methods])
    tuned_note = ("" if col.stages is not None else
                  " Without stages.json the tuning runs are unknown: only extra LRs found in a cell count.")
    elsewhere = sorted({c.tuned_in for c in col.cells.values() if c.tuned_in})
    if elsewhere:
        tuned_note += (f" Tuned in {', '.join(elsewhere)} (the sweep file's tuning_from): those runs and their "
                       "device time are that sweep's, on its device, and not part of all here.")
    peers = _peers_in(methods)
    peer_note = "" if not peers else (
        " " + " and ".join(METHOD_LABELS[m] for m in peers if SCHEDULERS[m].tuning == "never") + ": no tuning run."
        if any(SCHEDULERS[m].tuning == "never" for m in peers) else "") + (
        " LR range test: one tuning run per cell, the test each final run makes before it trains, at its mean "
        "device time and steps over the finals (inside those runs' own time, so in all as well)."
        if "rangetest" in peers else "")
    return ("## Tuning cost\n\nPer cell: tune = tuning runs (their device time); all = device time of tuning "
            "and final runs together (a tuning run reused as a final counted once). linear / LEGW tune once at "
            "B0: that cost sits on the B0 row and again in the total." + tuned_note + peer_note + "\n\n"
            + _md_table(["model", "opt", "batch"] + [METHOD_LABELS.get(m, m) for m in methods], body,
                        ["l", "l", "r"] + ["r"] * len(methods)))


def _md_autowu_switch(rows: list[dict[str, Any]]) -> str | None:
    auto_rows = [r for r in rows if r["method"] == "auto" and r["n_done"]]
    if not auto_rows:
        return None
    body = []
    for r in auto_rows:
        share, secs = r["autowu_test_share_mean"], r["autowu_test_seconds_mean"]
        body.append([r["model"], r["opt"], bs_label(r["bs"]),
                     _fmt_pm(r["switch_epoch_mean"], r["switch_epoch_std"], ".2f"),
                     _fmt_pm(r["switch_lr_mean"], r["switch_lr_std"], ".3g"),
                     f"{r['switch_test']} test / {r['switch_forced']} forced",
                     "—" if share is None else f"{100 * share:.2f}%", "—" if secs is None else f"{secs:.2f} s"])
    return ("## AutoWU switch\n\nSwitch epoch and LR over the final seeds; test = the GP test fired, "
            "forced = warmup hit its cap (half the budget) first; share = the GP tests' part of the "
            "run's wall time.\n\n"
            + _md_table(["model", "opt", "batch", "switch epoch", "switch LR", "fired / forced",
                         "test share of wall", "test seconds"], body, ["l", "l", "r", "r", "r", "c", "r", "r"]))


PEAK_NOTES: dict[str, str] = {
    "schedulefree": " Schedule-Free AdamW: its fixed LR (AlgoPerf's default), reached by its own warmup and "
                    "never decayed.",
    "prodigy": " Prodigy: its final estimate d (× its lr, 1), the peak its cosine would have had with d known "
               "from the start; the largest step size it took is in the Peers section.",
    "rangetest": " LR range test: the LR at its test's smoothed-loss minimum / 10, the peak of its 5-epoch "
                 "warmup and cosine.",
}


def _md_peers(col: Collation) -> str | None:
    """One line per final run of a peer: the LR it ended with and what it found or spent."""
    body = []
    for key, c in col.cells.items():
        for r in sorted(c.finals, key=lambda r: r.get("seed") or 0):
            rec = col.raw.get(r.get("run_id") or "")
            peer = (rec or {}).get("peer")
            if not peer:
                continue
            method = (rec.get("config") or {}).get("sched")
            if method == "rangetest":
                t = peer.get("range_test") or {}
                total = rec.get("total_steps")
                share = f" ({100 * t['steps'] / total:.1f}% of the run's)" if total and t.get("steps") else ""
                found = (f"test: {t.get('steps')} steps{share}, {t.get('images')} images, "
                         f"{_fmt_seconds(finite_float(t.get('device_seconds')))} device time, stop {t.get('stop')}, "
                         f"smoothed-loss minimum at LR {_fmt_lr(finite_float(t.get('lr_at_min')))}")
            elif method == "prodigy":
                found = (f"estimate d {_fmt_lr(finite_float(peer.get('d')))} (from d0 "
                         f"{_fmt_lr(finite_float(peer.get('d0')))}), largest step size d·lr "
                         f"{_fmt_lr(finite_float(peer.get('max_step_lr')))}")
            else:
                found = (f"warmup {peer.get('warmup_steps')} steps; evaluated at x with batch-norm statistics "
                         f"recomputed on {peer.get('bn_batches')} training batches")
            body.append([key[0], key[1], bs_label(key[2]), METHOD_LABELS.get(key[3], key[3]), str(r.get("seed")),
                         r.get("status") or "", _fmt_lr(finite_float(peer.get("peak_lr"))), found])
    if not body:
        return None
    return ("## Peers\n\nEvery final run of a peer (autolr/peers): the peak LR it ended with (see Peak LR) and "
            "what it found or spent.\n\n"
            + _md_table(["model", "opt", "batch", "method", "seed", "status", "peak LR", "found / spent"], body,
                        ["l", "l", "r", "l", "r", "l", "r", "l"]))


def _fmt_pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.1f}%"


def _fmt_ratio(x: float | None) -> str:
    if x is None or x != x:
        return "—"
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.2g}×"  # 0.94×, 7.74×, 0.059×


def _md_diagnosis(col: Collation) -> str | None:
    diag = diagnose_records(col.raw, col.stages)
    if not len(diag):
        return None
    body = []
    for d in diag.to_dict("records"):
        d = {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}
        forced = ""
        if d["switch_kind"] == "forced":
            forced = ("no positive test" if d["last_positive_epoch"] is None else
                      f"epoch {d['last_positive_epoch']}: {_fmt_lr(d['last_positive_candidate_lr'])} vs "
                      f"{_fmt_lr(d['switch_lr'])} used ({_fmt_ratio(d['forced_candidate_over_used'])})")
        label = "" if d["label"] == "auto" else f" ({d['label']})"
        body.append([d["model"], d["opt"], bs_label(int(d["bs"])) + label, str(d["seed"]),
                     "—" if d["min_step"] is None else f"{d['min_step']} / {d['total_steps']}",
                     _fmt_lr(d["min_lr"]), f"{d['switch_step']} ({d['switch_kind']})", _fmt_lr(d["switch_lr"]),
                     _fmt_pct(d["share_before_min"]), _fmt_pct(d["share_detect"]), _fmt_pct(d["share_decay"]),
                     _fmt_ratio(d["switch_over_min_lr"]), _fmt_lr(d["tuned_peak_lr"]),
                     _fmt_ratio(d["min_lr_over_tuned"]), _fmt_ratio(d["candidate_over_tuned"]),
                     _fmt_ratio(d["switch_over_tuned"]), forced])
    table = _md_table(["model", "opt", "batch", "seed", "min step / total", "LR at min", "switch step",
                       "switch LR", "before min", "detection", "decay", "switch / min LR", "tuned peak",
                       "min LR / tuned", "GP candidate / tuned", "switch / tuned", "forced: last positive test"],
                      body, ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "r", "l"])
    tests = []
    for d in diag.to_dict("records"):
        parts = [f"e{t['epoch']} {'+' if t['positive'] else '−'} p "
                 + "/".join("—" if p is None else f"{p:.2f}" for p in t["probs"])
                 + f" → {_fmt_lr(t['candidate_lr'])}" + (" (switched)" if t["switched"] else "")
                 for t in d["tests"]]
        tests.append(f"- {d['model']} / {d['opt']} / {bs_label(int(d['bs']))} / seed {d['seed']} "
                     f"(`{d['run_id']}`): " + ("; ".join(parts) or "no test"))
    return ("## AutoWU diagnosis\n\nWhere each AutoWU run's steps went (`autolr/diagnose.py`). The warmup loss "
            "is smoothed by a centred moving average over one epoch of steps; its minimum's step and the LR "
            "that step ran at (the recorded warmup path). before min + detection (minimum → switch) + decay "
            "(switch → end) = all steps. tuned peak: the LR tuned fixed warmup chose at that batch size "
            "(stages.json). GP candidate: the LR of the test that switched, or for a forced switch the last "
            "positive test's.\n\n" + table
            + "\n\nEvery test (epoch, verdict + / −, the p values of its predictions, candidate LR):\n\n"
            + "\n".join(tests))


def _md_tuning_decisions(col: Collation) -> str | None:
    # one line per grid actually searched (linear / LEGW: at B0 only)
    searched = [e for e in stage_entries(col.stages) if e["trials"] and e.get("tuned", True) is not False]
    if not searched:
        return None
    lines = []
    for e in searched:
        grid_txt = ", ".join(
            f"{_fmt_lr(finite_float(t.get('lr')))}: "
            + ("—" if finite_float(t.get("val_acc")) is None else f"{100 * finite_float(t.get('val_acc')):.2f}")
            + ("" if t.get("status") in (None, "finished", "done") else f" ({t.get('status')})")
            for t in e["trials"])
        ext = e.get("extensions") or []
        lines.append(f"- {METHOD_LABELS.get(e.get('method'), e.get('method'))}, {e.get('model')} / "
                     f"{e.get('opt')} / batch {e.get('bs')}: val acc % by lr [{grid_txt}] → lr "
                     f"{_fmt_lr(finite_float(e.get('chosen_lr')))}"
                     + (f" ({e['reason']})" if e.get("reason") else "")
                     + (f"; grid extended {len(ext)}×" if ext else "")
                     + ("; **still on the grid's edge (extension cap)**" if e.get("capped") else ""))
    return ("## Tuning decisions (stages.json)\n\nSelection metric: final-epoch validation accuracy of the "
            "seed-0 tuning run.\n\n" + "\n".join(lines))


def _md_notes(col: Collation, rows: list[dict[str, Any]]) -> str | None:
    cell_notes = [f"- {r['model']} / {r['opt']} / {bs_label(r['bs'])} / {METHOD_LABELS.get(r['method'])}: {r['note']}"
                  for r in rows if r.get("note")]
    other = [f"- {n}" for n in col.notes]
    return "## Notes\n\n" + "\n".join(other + cell_notes) if cell_notes or other else None


def _md_devices(col: Collation) -> str | None:
    devices = col.records["device_name"].dropna().unique().tolist() + col.records["device"].dropna().unique().tolist()
    return f"Devices: {', '.join(sorted({str(d) for d in devices if d}))}." if devices else None


def _markdown(col: Collation, rows: list[dict[str, Any]]) -> str:
    out = _md_head(col, rows)
    if not rows:
        return "\n\n".join(out + ["_No runs yet._"]) + "\n"
    by_key = {(r["model"], r["opt"], r["bs"], r["method"]): r for r in rows}
    methods = sorted({r["method"] for r in rows}, key=method_rank)
    sections = [
        _md_results(by_key, methods, "test_acc_pct", ".2f", "Final test accuracy (%)", col.imagenet),
        _md_paper_note() if col.imagenet else None,
        _md_results(by_key, methods, "test_nll", ".4f", "Final test loss (NLL)", False),
        _md_peak_lr(by_key, methods),
        _md_tuning_cost(col, by_key, methods),
        _md_autowu_switch(rows),
        _md_peers(col),
        _md_diagnosis(col),
        _md_tuning_decisions(col),
        _md_notes(col, rows),
        _md_devices(col),
    ]
    return "\n\n".join(out + [s for s in sections if s]) + "\n"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autolr.results", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="results/<sweep> directories")
    args = p.parse_args(argv)
    rc = 0
    for d in args.sweep_dirs:
        if not d.is_dir():
            print(f"autolr.results: error: {d} is not a directory", file=sys.stderr)
            rc = 2
            continue
        if not any((d / "runs").glob("*.json")) and not (d / "stages.json").is_file():
            # a table of nothing would only litter the folder: say what a sweep folder holds
            print(f"autolr.results: error: {d} holds no run records (runs/*.json) and no stages.json; "
                  "give a results/<sweep> folder", file=sys.stderr)
            rc = 2
            continue
        _, md = build_table(d, write=True)
        print(md)
        print(f"wrote {d / 'TABLE.md'} and {d / 'TABLE.csv'}\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())

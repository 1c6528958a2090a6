"""Figures of a sweep, drawn from results/ alone.

    python -m autolr.plots results/fashion plots/fashion
    python -m autolr.plots --all            # plots/<name>/ for every results/<name>/ with runs

Figures (PNG), each skipped with a note when its data is absent:
  a_accuracy_vs_batch     final test accuracy vs batch size per scheduler (mean ± std over seeds)
  b_lr_schedules          the LR over training per batch size, one panel per scheduler
  c_switch_lr_scaling     AutoWU's switch LR vs batch size against linear and square-root scaling,
                          with the peak LR each peer found (Prodigy's d, the range test's peak)
  d_warmup_gp             one AutoWU run's warmup loss, its last test's GP band, the switch point
  e_accuracy_vs_compute   final test accuracy vs device time spent, tuning included
  f_autowu_budget         where AutoWU's steps go per batch size: before the loss minimum, detecting
                          it, decay (autolr.diagnose; mean over seeds)

and, across sweeps that differ in their epoch budget only (``--gap-vs-budget``):
  g_gap_vs_budget         each method's mean test accuracy minus tuned fixed warmup's, per batch
                          size, against the budget

    python -m autolr.plots --gap-vs-budget plots/budget/g_gap_vs_budget.png results/budget-e*
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from autolr.collate import METHOD_LABELS, PEERS, Collation, bs_label, cell_stats, collate, method_rank
from autolr.diagnose import diagnose_records
from autolr.files import atomic_write_bytes

__all__ = ["make_figures", "main"]

METHOD_COLORS: dict[str, str] = {
    "auto": "#d62728", "linear": "#1f77b4", "legw": "#2ca02c", "fixed": "#ff7f0e", "cosine": "#9467bd",
    "constant": "#7f7f7f", "schedulefree": "#8c564b", "prodigy": "#e377c2", "rangetest": "#17becf",
    "autoplus": "#bcbd22",
}
METHOD_MARKERS: dict[str, str] = {"auto": "o", "linear": "s", "legw": "^", "fixed": "D", "cosine": "v", "constant": "x",
                                  "schedulefree": "P", "prodigy": "X", "rangetest": "*", "autoplus": "h"}
#: methods whose LR trace spans decades: AutoWU's exponential warmup, Prodigy's estimate growing from d0
LOG_LR_METHODS = ("auto", "prodigy")
Log = Callable[[str], None]

# the look of every figure, applied while they are drawn (matplotlib.rc_context): importing this
# module changes no global setting. Figures are built without pyplot, so no backend is chosen either.
STYLE: dict[str, Any] = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
                         "figure.dpi": 110, "savefig.dpi": 130, "axes.grid": True, "grid.alpha": 0.3}


def _label(m: str) -> str:
    return METHOD_LABELS.get(m, m)


def _subplots(nrows: int = 1, ncols: int = 1, **kw: Any) -> tuple[Figure, Any]:
    fig = Figure(figsize=kw.pop("figsize", None), layout=kw.pop("layout", "constrained"))
    return fig, fig.subplots(nrows, ncols, **kw)


def _log2_batch_axis(ax: Any, sizes: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([bs_label(b) for b in sizes])
    if sizes:
        ax.set_xlim(min(sizes) / 1.4, max(sizes) * 1.4)
    ax.set_xlabel("global batch size (log2)")


def _fig_legend(fig: Figure, axes: Any, ncol: int = 3) -> None:
    """One legend under the figure for every panel: inside a panel it hides data points."""
    seen: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", ncol=min(ncol, len(seen)))


def _title(col: Collation, what: str) -> str:
    tag = f"  [PARTIAL: {col.done}/{col.expected} final runs]" if col.partial else ""
    return f"{col.sweep}: {what}{tag}"


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue(), if_changed=True)
    return path


def _groups(col: Collation) -> list[tuple[str, str]]:
    return sorted({(k[0], k[1]) for k in col.cells})


def _suffix(groups: list[tuple[str, str]], g: tuple[str, str]) -> str:
    return "" if len(groups) == 1 else f"_{g[0]}_{g[1]}"


def _finals(col: Collation, raw: dict[str, dict[str, Any]], method: str | None = None,
            ok_only: bool = False) -> list[tuple[tuple[str, str, int, str], dict[str, Any], dict[str, Any]]]:
    """(cell key, flat row, raw record) of every final run with a record, seed 0 first."""
    out = []
    for key, c in col.cells.items():
        if method is not None and key[3] != method:
            continue
        for r in c.finals:
            rec = raw.get(r.get("run_id") or "")
            if rec is None or (ok_only and r.get("status") != "finished"):
                continue
            out.append((key, r, rec))
    return sorted(out, key=lambda t: (t[0], t[1].get("seed") or 0))


# ---------------------------------------------------------------------------------------------
# (a) accuracy vs batch size
# ---------------------------------------------------------------------------------------------
def fig_accuracy(col: Collation, stats: pd.DataFrame, out: Path, log: Log) -> list[Path]:
    done = stats[stats["n_finished"] > 0] if len(stats) else stats
    if not len(done):
        log("skip (a) accuracy vs batch size: no finished final runs")
        return []
    groups = sorted({(m, o) for m, o in zip(done["model"], done["opt"], strict=True)})
    fig, axes = _subplots(1, len(groups), figsize=(6.4 * len(groups), 4.6), squeeze=False, layout="constrained")
    for ax, (model, opt) in zip(axes[0], groups, strict=True):
        g = stats[(stats["model"] == model) & (stats["opt"] == opt)]
        sizes = sorted(int(b) for b in g["bs"].unique())
        methods = sorted(g["method"].unique(), key=method_rank)
        for i, method in enumerate(methods):
            m = g[(g["method"] == method) & (g["n_finished"] > 0)].sort_values("bs")
            if not len(m):
                continue
            std = m["test_acc_pct_std"].fillna(0.0).to_numpy(dtype=float)
            # a small sideways shift per method keeps error bars at one batch size apart
            dodge = 2.0 ** (0.06 * (i - (len(methods) - 1) / 2))
            ax.errorbar(m["bs"].to_numpy(dtype=float) * dodge, m["test_acc_pct_mean"].to_numpy(dtype=float), yerr=std,
                        label=_label(method), color=METHOD_COLORS.get(method), marker=METHOD_MARKERS.get(method, "o"),
                        capsize=4, lw=1.8, ms=6)
            # a seed that diverged or failed is shown, not silently absent from the mean
            bad = m[(m["n_diverged"] + m["n_failed"]) > 0]
            for _, r in bad.iterrows():
                what = "diverged" if not r["n_failed"] else "diverged/failed" if r["n_diverged"] else "failed"
                ax.annotate(f"{int(r['n_diverged'] + r['n_failed'])}/{int(r['n_expected'])} {what}",
                            (float(r["bs"]) * dodge, float(r["test_acc_pct_mean"])), textcoords="offset points",
                            xytext=(4, -12), fontsize=8, color=METHOD_COLORS.get(method))
        _log2_batch_axis(ax, sizes)
        ax.set_ylabel("final test accuracy (%)")
        ax.set_title(f"{model} / {opt}")
    _fig_legend(fig, axes, ncol=6)
    fig.suptitle(_title(col, "final test accuracy vs batch size (mean ± std over seeds)"))
    return [_save(fig, out / "a_accuracy_vs_batch.png")]


# ---------------------------------------------------------------------------------------------
# (b) LR over training
# ---------------------------------------------------------------------------------------------
def fig_lr_schedules(col: Collation, raw: dict[str, dict[str, Any]], out: Path, log: Log) -> list[Path]:
    finals = [(k, r, rec) for k, r, rec in _finals(col, raw) if (rec.get("lr_trace") or {}).get("lr")]
    if not finals:
        log("skip (b) LR schedules: no final run has an lr_trace")
        return []
    groups = sorted({(k[0], k[1]) for k, _, _ in finals})
    paths = []
    for grp in groups:
        runs: dict[tuple[str, int], tuple[dict[str, Any], dict[str, Any]]] = {}
        for k, r, rec in finals:
            if (k[0], k[1]) == grp:
                runs.setdefault((k[3], k[2]), (r, rec))  # seed 0 first: one curve per (method, batch)
        methods = sorted({m for m, _ in runs}, key=method_rank)
        sizes = sorted({b for _, b in runs})
        cmap = matplotlib.colormaps["viridis"]
        colors = {b: cmap(i / max(1, len(sizes) - 1) * 0.9) for i, b in enumerate(sizes)}
        ncol = min(3, len(methods))
        nrow = math.ceil(len(methods) / ncol)
        fig, axes = _subplots(nrow, ncol, figsize=(5.4 * ncol, 4.1 * nrow), squeeze=False, layout="constrained")
        for ax, method in zip(axes.flat, methods, strict=False):
            for bs in sizes:
                if (method, bs) not in runs:
                    continue
                r, rec = runs[(method, bs)]
                tr = rec["lr_trace"]
                total = rec.get("total_steps") or (max(tr["step"]) + 1)
                x = np.asarray(tr["step"], dtype=float) / total
                y = np.asarray([np.nan if v is None else v for v in tr["lr"]], dtype=float)
                y[y <= 0] = np.nan  # log axis: the last cosine step is exactly 0
                if method not in LOG_LR_METHODS:
                    y = np.nan_to_num(y, nan=0.0)
                ax.plot(x, y, color=colors[bs], lw=1.6, label=f"B={bs_label(bs)}")
                aw = rec.get("autowu") or {}
                if aw.get("switch_step") is not None and aw.get("switch_lr"):
                    fired = aw.get("switch_kind") == "test"
                    ax.plot(aw["switch_step"] / total, aw["switch_lr"], marker="o", ls="none", ms=7,
                            mfc=colors[bs] if fired else "white", mec=colors[bs])
            # AutoWU's exponential warmup spans five decades, Prodigy's d grows from 1e-6: only a log axis
            # shows them; the baselines' linear ramps and cosines read best on a linear one
            if method in LOG_LR_METHODS:
                ax.set_yscale("log")
            else:
                ax.set_ylim(bottom=0)
            ax.set_xlim(0, 1)
            ax.set_xlabel("fraction of training (step / total steps)")
            ax.set_ylabel(("step size d·lr" if method == "prodigy" else "learning rate")
                          + (" (log)" if method in LOG_LR_METHODS else ""))
            ax.set_title(_label(method))
        for ax in list(axes.flat)[len(methods):]:
            ax.set_visible(False)
        _fig_legend(fig, axes, ncol=8)
        note = " (AutoWU dot: switch; filled = test fired, hollow = forced)" if "auto" in methods else ""
        fig.suptitle(_title(col, f"LR over training, {grp[0]} / {grp[1]}, seed 0") + "\n" + note.strip(),
                     fontsize=12)
        paths.append(_save(fig, out / f"b_lr_schedules{_suffix(groups, grp)}.png"))
    return paths


# ---------------------------------------------------------------------------------------------
# (c) switch LR vs batch size
# ---------------------------------------------------------------------------------------------
def fig_switch_lr(col: Collation, raw: dict[str, dict[str, Any]], stats: pd.DataFrame, out: Path,
                  log: Log) -> list[Path]:
    autos = [(k, r) for k, r, _ in _finals(col, raw, "auto") if r.get("switch_lr")]
    # the peers' discovered peaks beside AutoWU's (drawn only where a peer ran: figures of sweeps
    # without them are unchanged)
    # (AutoWU+ among them: its switch LR, one line like theirs)
    peers = [(k, r) for m in FOUND_PEAKS for k, r, _ in _finals(col, raw, m, ok_only=True) if r.get("peak_lr")]
    if not autos and not peers:
        log("skip (c) switch LR vs batch size: no AutoWU run switched")
        return []
    groups = sorted({(k[0], k[1]) for k, _ in [*autos, *peers]})
    fig, axes = _subplots(1, len(groups), figsize=(6.6 * len(groups), 4.8), squeeze=False, layout="constrained")
    for ax, grp in zip(axes[0], groups, strict=True):
        pts = [(k[2], r) for k, r in autos if (k[0], k[1]) == grp]
        sizes = sorted({b for b, _ in pts})
        means = {b: float(np.exp(np.mean([math.log(r["switch_lr"]) for bb, r in pts if bb == b]))) for b in sizes}
        for kind, face in (("test", METHOD_COLORS["auto"]), ("forced", "white")):
            sel = [(b, r["switch_lr"]) for b, r in pts if r.get("switch_kind") == kind]
            if sel:
                ax.scatter([b for b, _ in sel], [v for _, v in sel], s=46, facecolors=face,
                           edgecolors=METHOD_COLORS["auto"], zorder=3,
                           label=f"AutoWU switch LR, {'test fired' if kind == 'test' else 'forced at cap'}")
        if sizes:
            ax.plot(sizes, [means[b] for b in sizes], color=METHOD_COLORS["auto"], lw=1.5, alpha=0.8,
                    label="AutoWU (geometric mean over seeds)")
            b0 = sizes[0]
            grid = np.geomspace(b0, max(sizes) if len(sizes) > 1 else b0 * 4, 50)
            ax.plot(grid, means[b0] * grid / b0, "k--", lw=1.2, label="linear rule ∝ B (from the smallest batch)")
            ax.plot(grid, means[b0] * np.sqrt(grid / b0), "k:", lw=1.5,
                    label="square-root rule ∝ √B (from the smallest batch)")
        peer_sizes: set[int] = set()
        for method in FOUND_PEAKS:
            found = [(k[2], r["peak_lr"]) for k, r in peers if (k[0], k[1]) == grp and k[3] == method]
            if not found:
                continue
            bss = sorted({b for b, _ in found})
            peer_sizes |= set(bss)
            geo = [float(np.exp(np.mean([math.log(v) for b, v in found if b == bb]))) for bb in bss]
            ax.plot(bss, geo, color=METHOD_COLORS[method], marker=METHOD_MARKERS[method], lw=1.2, ms=8,
                    label=f"{_label(method)}: {PEAK_WHAT[method]}")
        fx = stats[(stats["model"] == grp[0]) & (stats["opt"] == grp[1]) & (stats["method"] == "fixed")
                   & stats["peak_lr_mean"].notna()] if len(stats) else stats
        if len(fx):
            ax.plot(fx["bs"].to_numpy(dtype=float), fx["peak_lr_mean"].to_numpy(dtype=float), ls="none", marker="D",
                    color=METHOD_COLORS["fixed"], label="fixed warmup: tuned peak LR")
        ax.set_yscale("log")
        all_sizes = sorted(set(sizes) | {int(b) for b in fx["bs"]} if len(fx) else sizes)
        all_sizes = sorted(set(all_sizes) | peer_sizes)
        _log2_batch_axis(ax, all_sizes)
        ax.set_ylabel("peak / switch LR (log)")
        ax.set_title(f"{grp[0]} / {grp[1]}")
    _fig_legend(fig, axes, ncol=2)
    fig.suptitle(_title(col, "AutoWU's switch LR vs batch size and the scaling rules" if not peers else
                          "discovered peak LR vs batch size: the switch LRs, the peers' peaks, the scaling rules"))
    return [_save(fig, out / "c_switch_lr_scaling.png")]


#: what each peer's point in figure (c) is (records' ``peer.peak_lr``)
PEAK_WHAT: dict[str, str] = {"autoplus": "switch LR", "schedulefree": "its fixed LR", "prodigy": "final estimate d",
                             "rangetest": "range test's peak (minimum / 10)"}
#: the methods whose peak LR figure (c) draws beside AutoWU's switches
FOUND_PEAKS: tuple[str, ...] = ("autoplus", *PEERS)


# ---------------------------------------------------------------------------------------------
# (d) one run's warmup loss, GP band and switch
# ---------------------------------------------------------------------------------------------
def _last_fitted_test(aw: dict[str, Any]) -> dict[str, Any] | None:
    fitted = [t for t in aw.get("tests") or [] if t.get("grid_mean") and t.get("grid_x")]
    return fitted[-1] if fitted else None


def fig_warmup_gp(col: Collation, raw: dict[str, dict[str, Any]], out: Path, log: Log) -> list[Path]:
    usable = [(k, r, rec) for k, r, rec in _finals(col, raw, "auto")
              if (rec.get("autowu") or {}).get("warmup_losses") and _last_fitted_test(rec["autowu"])]
    if not usable:
        log("skip (d) warmup loss and GP band: no AutoWU run with a fitted test")
        return []
    groups = sorted({(k[0], k[1]) for k, _, _ in usable})
    paths = []
    for grp in groups:
        runs = [(k, r, rec) for k, r, rec in usable if (k[0], k[1]) == grp]
        sizes = sorted({k[2] for k, _, _ in runs})
        bs = sizes[len(sizes) // 2]  # a middle batch: neither the easy small nor the few-step large regime
        at_bs = [t for t in runs if t[0][2] == bs]
        # a switch the test made shows the method working; a forced one only where none fired
        _, r, rec = next((t for t in at_bs if t[2]["autowu"].get("switch_kind") == "test"), at_bs[0])
        aw = rec["autowu"]
        test = _last_fitted_test(aw)
        assert test is not None
        losses = np.asarray([np.nan if v is None else v for v in aw["warmup_losses"]], dtype=float)
        n = int(test.get("n_points") or test["step"])  # the history the test saw: x = i / n for loss i
        fig, ax = _subplots(figsize=(10, 6.2), layout="constrained")
        steps = np.arange(len(losses))
        ax.plot(steps, losses, color="0.45", lw=0.8, marker=".", ms=3, label="training loss per step (warmup)")
        gx = np.asarray(test["grid_x"], dtype=float) * n
        gm = np.asarray(test["grid_mean"], dtype=float)
        gs = np.asarray(test["grid_std"], dtype=float)
        ax.plot(gx, gm, color="#1f77b4", lw=2, label=f"GP posterior mean, test at epoch {test.get('epoch')} "
                                                      f"(step {test.get('step')})")
        ax.fill_between(gx, gm - 2 * gs, gm + 2 * gs, color="#1f77b4", alpha=0.22, label="± 2 std")
        if test.get("argmin_x"):
            xs = float(np.mean(test["argmin_x"])) * n
            ys = float(np.interp(xs, gx, gm))
            cand = test.get("candidate_lr")
            used = aw.get("switch_kind") == "test" and test.get("switched")
            ax.plot(xs, ys, marker="*", ms=16, color="#ff7f0e", mec="k", ls="none", zorder=4,
                    label="predicted minimum" + (f" → LR {cand:.3g}" if cand else "")
                    + ("" if used else " (not used: no switch at this test)"))
        kind = aw.get("switch_kind")
        if aw.get("switch_step") is not None:
            ax.axvline(aw["switch_step"], color=METHOD_COLORS["auto"], lw=1.8, ls="--",
                       label=f"switch at step {aw['switch_step']} ({'test fired' if kind == 'test' else kind}), "
                             f"LR {aw['switch_lr']:.3g}")
        for t in aw.get("tests") or []:
            ax.axvline(t["step"], color="0.7", lw=0.6, ls=":", zorder=0)
        finite = losses[np.isfinite(losses)]
        if finite.size:
            lo = min(float(finite.min()), float(np.nanmin(gm - 2 * gs)))
            hi = max(float(np.quantile(finite, 0.98)), float(np.nanmax(gm + 2 * gs)))
            pad = 0.08 * (hi - lo or 1.0)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel("optimizer step (dotted: end-of-epoch tests)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("training loss")
        ax.set_xlim(0, max(len(losses), aw.get("switch_step") or 0) * 1.02)
        trace = rec.get("lr_trace") or {}
        if trace.get("lr"):
            # the LR each step ran at shows which LR the predicted minimum maps back to
            ax2 = ax.twinx()
            st = np.asarray(trace["step"], dtype=float)
            lr = np.asarray([np.nan if v is None or v <= 0 else v for v in trace["lr"]], dtype=float)
            keep = st <= ax.get_xlim()[1]
            ax2.plot(st[keep], lr[keep], color="#2ca02c", lw=1, alpha=0.7, label="LR (right axis)")
            ax2.set_yscale("log")
            ax2.set_ylabel("learning rate (log)", color="#2ca02c")
            ax2.grid(False)
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            fig.legend(h1 + h2, l1 + l2, loc="outside lower center", ncol=2)
        else:
            fig.legend(loc="outside lower center", ncol=2)
        ax.set_title(_title(col, f"AutoWU warmup, {grp[0]} / {grp[1]}, B={bs_label(bs)}, seed {r.get('seed')}"))
        paths.append(_save(fig, out / f"d_warmup_gp{_suffix(groups, grp)}.png"))
    return paths


# ---------------------------------------------------------------------------------------------
# (e) accuracy vs compute
# ---------------------------------------------------------------------------------------------
def _time_unit(seconds: np.ndarray) -> tuple[float, str]:
    """One unit per axis, so ticks read as round numbers: seconds, minutes or hours."""
    top = float(np.nanmax(seconds)) if seconds.size else 0.0
    return (1.0, "s") if top < 300 else (60.0, "min") if top < 3 * 3600 else (3600.0, "h")


def _time_axis(ax: Any, values: np.ndarray) -> None:
    vals = values[np.isfinite(values) & (values > 0)]
    # a log axis only where costs differ by orders of magnitude; over a narrow range its ticks vanish
    if vals.size and vals.max() / vals.min() > 20:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    elif vals.size:
        ax.set_xlim(0, vals.max() * 1.15)


def fig_compute(col: Collation, stats: pd.DataFrame, out: Path, log: Log) -> list[Path]:
    s = stats[(stats["n_finished"] > 0) & (stats["total_device_s"] > 0)] if len(stats) else stats
    if not len(s):
        log("skip (e) accuracy vs compute: no finished final runs with timing")
        return []
    groups = sorted({(m, o) for m, o in zip(s["model"], s["opt"], strict=True)})
    fig, axes = _subplots(len(groups), 2, figsize=(13, 4.8 * len(groups)), squeeze=False, layout="constrained")
    for row, grp in zip(axes, groups, strict=True):
        g = s[(s["model"] == grp[0]) & (s["opt"] == grp[1])]
        ax, ax_tot = row
        totals = g.groupby("method")["total_device_s"].sum().to_numpy(dtype=float)
        div, unit = _time_unit(np.concatenate([g["total_device_s"].to_numpy(dtype=float), totals]))
        for method in sorted(g["method"].unique(), key=method_rank):
            m = g[g["method"] == method].sort_values("bs")
            c, mk = METHOD_COLORS.get(method), METHOD_MARKERS.get(method, "o")
            x = m["total_device_s"].to_numpy(dtype=float) / div
            y = m["test_acc_pct_mean"].to_numpy(dtype=float)
            ax.errorbar(x, y, yerr=m["test_acc_pct_std"].fillna(0.0).to_numpy(dtype=float), ls="none", marker=mk,
                        color=c, capsize=3, ms=7, label=_label(method))
            for xi, yi, bs in zip(x, y, m["bs"], strict=True):
                ax.annotate(bs_label(int(bs)), (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8,
                            color=c)
            ax_tot.scatter(x.sum(), y.mean(), marker=mk, color=c, s=90,
                           label=f"{_label(method)} ({int(m['tuning_runs'].sum())} tuning runs)")
        _time_axis(ax, g["total_device_s"].to_numpy(dtype=float) / div)
        ax.set_xlabel(f"device time of the cell, tuning + final runs ({unit})")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_title(f"{grp[0]} / {grp[1]}: per batch size (labels)")
        ax.legend(loc="best")
        _time_axis(ax_tot, totals / div)
        ax_tot.set_xlabel(f"device time over every batch size, tuning + final runs ({unit})")
        ax_tot.set_ylabel("mean final test accuracy over batch sizes (%)")
        ax_tot.set_title(f"{grp[0]} / {grp[1]}: whole grid per method")
        ax_tot.legend(loc="best")
    fig.suptitle(_title(col, "final test accuracy vs compute spent, tuning included"))
    return [_save(fig, out / "e_accuracy_vs_compute.png")]


# ---------------------------------------------------------------------------------------------
# (f) where AutoWU's budget goes
# ---------------------------------------------------------------------------------------------
BUDGET_PARTS = (("share_before_min", "before the smoothed loss minimum", "#9ecae1"),
                ("share_detect", "detecting it (minimum → switch)", "#d62728"),
                ("share_decay", "decay (switch → end)", "#bdbdbd"))


def fig_budget(col: Collation, out: Path, log: Log) -> list[Path]:
    diag = diagnose_records(col.raw, col.stages).dropna(subset=["share_detect"])
    if not len(diag):
        log("skip (f) AutoWU budget: no AutoWU run with warmup losses and a switch")
        return []
    parts = [p for p, _, _ in BUDGET_PARTS]
    means = diag.groupby(["model", "opt", "label", "bs"])[parts].mean()
    seeds = diag.groupby(["model", "opt", "label", "bs"]).size()
    groups = sorted({(m, o) for m, o, _, _ in means.index})
    fig, axes = _subplots(1, len(groups), figsize=(6.4 * len(groups), 4.6), squeeze=False)
    for ax, (model, opt) in zip(axes[0], groups, strict=True):
        sub = means.loc[(model, opt)]
        keys = sorted(sub.index, key=lambda k: (method_rank(k[0]), k[1]))
        names = [bs_label(int(bs)) + ("" if lab == "auto" else f"\n{lab}") for lab, bs in keys]
        x = np.arange(len(keys))
        bottom = np.zeros(len(keys))
        for part, label, color in BUDGET_PARTS:
            v = np.array([100 * sub.loc[k, part] for k in keys], dtype=float)
            ax.bar(x, v, bottom=bottom, color=color, edgecolor="white", width=0.6, label=label)
            for xi, b, vi in zip(x, bottom, v, strict=True):
                if vi >= 4:
                    ax.text(xi, b + vi / 2, f"{vi:.0f}%", ha="center", va="center", fontsize=9)
            bottom += v
        ax.set_xticks(x, [f"{n}\n({seeds.loc[(model, opt, *k)]} seed{'s' if seeds.loc[(model, opt, *k)] > 1 else ''})"
                          for n, k in zip(names, keys, strict=True)])
        ax.set_ylim(0, 100)
        ax.set_ylabel("share of all optimizer steps (%)")
        ax.set_xlabel("global batch size")
        ax.set_title(f"{model} / {opt}")
        ax.grid(axis="x", visible=False)
    _fig_legend(fig, axes, ncol=3)
    fig.suptitle(_title(col, "where AutoWU's steps go (loss smoothed over one epoch; mean over seeds)"))
    return [_save(fig, out / "f_autowu_budget.png")]


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
# ---------------------------------------------------------------------------------------------
# (g) AutoWU's gap to tuned fixed warmup against the epoch budget, across sweeps
# ---------------------------------------------------------------------------------------------
def gap_vs_budget(sweep_dirs: list[Path]) -> pd.DataFrame:
    """One row per (sweep, batch size): the budget in epochs, and each method's mean test accuracy
    minus tuned fixed warmup's (points; negative: below it), with the seeds both have."""
    rows = []
    for d in sweep_dirs:
        col = collate(d)
        stats = pd.DataFrame(cell_stats(col.cells.values()))
        epochs = {r["config"]["epochs"] for r in col.raw.values()}
        if stats.empty or len(epochs) != 1:
            continue  # a gap is read at one budget
        budget = epochs.pop()
        for bs, g in stats.groupby("bs"):
            by = g.set_index("method")
            if "fixed" not in by.index or not math.isfinite(by.loc["fixed", "test_acc_pct_mean"]):
                continue
            ref = by.loc["fixed", "test_acc_pct_mean"]
            for method, row in by.iterrows():
                if method != "fixed" and math.isfinite(row["test_acc_pct_mean"]):
                    rows.append({"sweep": col.sweep, "epochs": budget, "bs": int(bs), "method": method,
                                 "gap": row["test_acc_pct_mean"] - ref, "n": int(row["n_done"])})
    return pd.DataFrame(rows)


def fig_gap_vs_budget(sweep_dirs: list[Path], out_png: Path, log: Log) -> list[Path]:
    gaps = gap_vs_budget(sweep_dirs)
    if gaps.empty:
        log("skip (g) gap vs budget: no sweep with both fixed warmup and another method")
        return []
    with matplotlib.rc_context(STYLE):
        fig, ax = _subplots(figsize=(6.4, 4.2))
        sizes = sorted(gaps["bs"].unique())
        for (method, bs), g in gaps.groupby(["method", "bs"]):
            g = g.sort_values("epochs")
            base = method.split("@")[0]  # a control (fixed@auto) in its scheduler's colour
            ax.plot(g["epochs"], g["gap"], ("-", "--", ":", "-.")[sizes.index(bs) % 4],
                    marker=METHOD_MARKERS.get(base, "o"), color=METHOD_COLORS.get(base),
                    label=f"{_label(method)}, batch {bs_label(int(bs))}")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log", base=2)
        budgets = sorted(gaps["epochs"].unique())
        ax.xaxis.set_major_locator(FixedLocator(budgets))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("budget (epochs)")
        ax.set_ylabel("test accuracy - tuned fixed warmup (points)")
        ax.set_title("the gap to tuned warmup against the budget")
        ax.legend(loc="lower right")
        return [_save(fig, out_png)]


# ---------------------------------------------------------------------------------------------
def make_figures(sweep_dir: str | Path, out_dir: str | Path, log: Log | None = None) -> list[Path]:
    """Draw every figure the sweep's records support into ``out_dir``; return the PNG paths.

    ``log`` receives a line for every figure skipped for lack of data (default: stderr).
    """
    log = log or (lambda msg: print(f"autolr.plots: {msg}", file=sys.stderr))
    out = Path(out_dir)
    col = collate(sweep_dir)
    raw = col.raw
    stats = pd.DataFrame(cell_stats(col.cells.values()))
    if not raw:
        log(f"no run records under {Path(sweep_dir) / 'runs'}: no figures")
        return []
    paths: list[Path] = []
    with matplotlib.rc_context(STYLE):
        paths += fig_accuracy(col, stats, out, log)
        paths += fig_lr_schedules(col, raw, out, log)
        paths += fig_switch_lr(col, raw, stats, out, log)
        paths += fig_warmup_gp(col, raw, out, log)
        paths += fig_compute(col, stats, out, log)
        paths += fig_budget(col, out, log)
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m autolr.plots", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_dir", nargs="?", type=Path, help="results/<sweep>")
    p.add_argument("out_dir", nargs="?", type=Path, help="where the PNGs go (default: plots/<sweep>)")
    p.add_argument("--all", action="store_true",
                   help="every sweep folder results/<name>/ (runs and stages.json) -> plots/<name>/")
    p.add_argument("--results-root", type=Path, default=Path("results"), help="with --all (default: results)")
    p.add_argument("--plots-root", type=Path, default=Path("plots"), help="with --all (default: plots)")
    p.add_argument("--gap-vs-budget", type=Path, metavar="PNG", default=None,
                   help="draw figure g from the sweep folders given after it (budgets of one setting)")
    args, rest = p.parse_known_args(argv)
    if args.gap_vs_budget is not None:
        dirs = [Path(d) for d in ([args.sweep_dir, args.out_dir] if args.sweep_dir else []) + rest if d]
        missing = [str(d) for d in dirs if not (d / "runs").is_dir()]
        if not dirs or missing:
            print("autolr.plots: error: --gap-vs-budget needs sweep folders with runs/ "
                  f"({', '.join(missing) or 'none given'})", file=sys.stderr)
            return 2
        for path in fig_gap_vs_budget(sorted(dirs), args.gap_vs_budget,
                                      lambda msg: print(f"autolr.plots: {msg}", file=sys.stderr)):
            print(f"wrote {path}")
        return 0
    if rest:
        p.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.all == (args.sweep_dir is not None):
        p.error("give either a sweep directory or --all")
    if args.all:
        # a sweep's folder (its runner wrote stages.json); loose records, such as a method's
        # development runs of many variants, have no cells to draw
        jobs = [(d, args.plots_root / d.name) for d in sorted(args.results_root.glob("*"))
                if d.is_dir() and any((d / "runs").glob("*.json")) and (d / "stages.json").is_file()]
        if not jobs:
            print(f"autolr.plots: no sweep under {args.results_root}/ has run records yet")
    else:
        if not args.sweep_dir.is_dir():
            print(f"autolr.plots: error: {args.sweep_dir} is not a directory", file=sys.stderr)
            return 2
        jobs = [(args.sweep_dir, args.out_dir or Path("plots") / args.sweep_dir.name)]
    for sweep_dir, out_dir in jobs:
        for path in make_figures(sweep_dir, out_dir):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

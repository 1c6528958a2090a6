"""Where an AutoWU run's budget went, computed from its record alone (issue 8, section 1).

Any record with an ``autowu`` block is diagnosed: the reference (``auto``) and its variants
(``autoplus`` records the same block).

    from autolr.diagnose import diagnose_sweep
    df = diagnose_sweep("results/fashion")        # one row per AutoWU record

``python -m autolr.results`` writes it as the section "AutoWU diagnosis" of every sweep's
TABLE.md and ``python -m autolr.plots`` draws it (figure f). Per run:

- the smoothed warmup loss and its minimum: step and LR. The smoother is a centred moving
  average over one epoch of steps (an odd window of at least 3, NaN losses skipped, shrinking
  at the ends). An epoch is the interval at which AutoWU itself looks at the loss, so the
  smoother sees the curve at the same resolution as the test, without the test's GP, whose
  lengthscale of 0.2 of the history is what is being diagnosed;
- the LR of a step: the record's ``lr_trace``, the LR that step ran at (log-interpolated where
  the trace is sparse); the reference's warmup formula from ``autowu.config`` (init_lr, max_lr,
  max_warmup_steps, exp or linear) where a record has no trace;
- every test: its epoch, p values, verdict and candidate LR (the reference's mapping of the
  GP's argmin back along the warmup path);
- the share of all steps before the minimum, between the minimum and the switch (detection),
  and after the switch (the decay); they sum to 1;
- the switch LR over the LR at the minimum and over the tuned peak of the same cell (the LR
  tuned fixed warmup chose at that batch size in the same sweep's stages.json);
- for a forced switch: the candidate of the last positive test against the LR actually used.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autolr.records import finite_float

__all__ = ["DIAGNOSIS_COLUMNS", "smooth", "warmup_lr", "diagnose_run", "tuned_peaks", "diagnose_records",
           "diagnose_sweep"]

DIAGNOSIS_COLUMNS = [
    "run_id", "label", "model", "opt", "bs", "seed", "total_steps", "steps_per_epoch", "warmup_steps",
    "smooth_window", "min_step", "min_loss", "min_lr", "switch_step", "switch_lr", "switch_kind",
    "share_before_min", "share_detect", "share_decay", "tuned_peak_lr", "switch_over_min_lr",
    "switch_over_tuned", "min_lr_over_tuned", "candidate_lr", "candidate_over_tuned", "last_positive_epoch",
    "last_positive_candidate_lr", "forced_candidate_over_used", "n_tests", "n_positive", "tests",
]




def smooth(losses: Any, window: int) -> np.ndarray:
    """Centred moving average of ``losses`` over ``window`` steps (made odd), NaN skipped.

    At the ends the window shrinks to the points there are; a step whose whole window is NaN
    stays NaN.
    """
    y = np.asarray(losses, dtype=float)
    if not y.size:
        return y
    w = max(1, int(window)) | 1
    ok = np.isfinite(y)
    kernel = np.ones(w)
    num = np.convolve(np.where(ok, y, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1.0), np.nan)


def warmup_lr(step: int, config: Mapping[str, Any]) -> float:
    """The LR warmup step ``step`` ran at, from AutoWU's recorded config (``AutoWU._warmup_lr``)."""
    init, peak = float(config["init_lr"]), float(config["max_lr"])
    m = max(int(config["max_warmup_steps"]), 1)
    frac = min(step, m) / m
    if config.get("warmup", "exp") == "linear":
        return init + (peak - init) * frac
    return init * (peak / init) ** frac


def _lr_at(step: int, rec: Mapping[str, Any]) -> float | None:
    # the trace is what ran; the reference's formula is the fallback for records without one (an
    # AutoWU+ ramp is not that formula: its pace changes with the loss, its start with the budget)
    trace = rec.get("lr_trace") or {}
    steps, lrs = trace.get("step") or [], trace.get("lr") or []
    pts = [(int(s), float(v)) for s, v in zip(steps, lrs, strict=False) if finite_float(v) is not None]
    if not pts:
        cfg = (rec.get("autowu") or {}).get("config") or rec.get("schedule") or {}
        if all(k in cfg for k in ("init_lr", "max_lr", "max_warmup_steps")):
            return warmup_lr(step, cfg)
        return None
    # a sparse trace (every > 1): the warmup is exponential, so interpolate log LR
    xs, ys = np.array([p[0] for p in pts], float), np.log(np.maximum([p[1] for p in pts], 1e-300))
    return float(np.exp(np.interp(step, xs, ys)))


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def diagnose_run(rec: Mapping[str, Any], tuned_peak: float | None = None, label: str | None = None) -> dict[str, Any]:
    """The diagnosis of one AutoWU record (see the module doc); keys are ``DIAGNOSIS_COLUMNS``.

    ``tuned_peak``: tuned fixed warmup's LR for the same cell, when known. Fields the record
    cannot support (no warmup losses, no switch) are None.
    """
    cfg = rec.get("config") or {}
    aw = rec.get("autowu") or {}
    spe = int(rec.get("steps_per_epoch") or (aw.get("config") or {}).get("steps_per_epoch") or 1)
    total = rec.get("total_steps") or (aw.get("config") or {}).get("total_steps")
    total = int(total) if total else None
    losses = np.asarray([np.nan if v is None else v for v in aw.get("warmup_losses") or []], dtype=float)
    window = max(3, spe | 1)
    sm = smooth(losses, window)
    min_step = int(np.nanargmin(sm)) if np.isfinite(sm).any() else None
    min_lr = None if min_step is None else _lr_at(min_step, rec)
    switch_step = aw.get("switch_step")
    switch_lr = finite_float(aw.get("switch_lr"))
    kind = aw.get("switch_kind")

    shares: dict[str, float | None] = dict.fromkeys(("share_before_min", "share_detect", "share_decay"))
    if total and min_step is not None and switch_step is not None:
        shares = {"share_before_min": min_step / total, "share_detect": (switch_step - min_step) / total,
                  "share_decay": (total - switch_step) / total}

    tests = []
    for t in aw.get("tests") or []:
        tests.append({"epoch": t.get("epoch"), "step": t.get("step"),
                      "probs": [finite_float(p) for p in t.get("probs") or []], "positive": bool(t.get("positive")),
                      "candidate_lr": finite_float(t.get("candidate_lr")), "lr_now": finite_float(t.get("lr_now")),
                      "switched": bool(t.get("switched"))})
    positives = [t for t in tests if t["positive"]]
    last_pos = positives[-1] if positives else None
    # the GP's own pick: the test that switched, else (forced) the last test that voted positive
    fired = next((t for t in tests if t["switched"]), None)
    candidate = (fired or last_pos or {}).get("candidate_lr")
    forced = kind == "forced"
    return {
        "run_id": rec.get("run_id"), "label": label or cfg.get("sched"), "model": cfg.get("model"),
        "opt": cfg.get("opt"), "bs": cfg.get("bs"), "seed": cfg.get("seed"), "total_steps": total,
        "steps_per_epoch": spe, "warmup_steps": int(losses.size), "smooth_window": window,
        "min_step": min_step, "min_loss": None if min_step is None else float(sm[min_step]), "min_lr": min_lr,
        "switch_step": switch_step, "switch_lr": switch_lr, "switch_kind": kind, **shares,
        "tuned_peak_lr": tuned_peak, "switch_over_min_lr": _ratio(switch_lr, min_lr),
        "switch_over_tuned": _ratio(switch_lr, tuned_peak), "min_lr_over_tuned": _ratio(min_lr, tuned_peak),
        "candidate_lr": candidate, "candidate_over_tuned": _ratio(candidate, tuned_peak),
        "last_positive_epoch": None if last_pos is None else last_pos["epoch"],
        "last_positive_candidate_lr": None if last_pos is None else last_pos["candidate_lr"],
        "forced_candidate_over_used": _ratio(last_pos["candidate_lr"], switch_lr) if forced and last_pos else None,
        "n_tests": len(tests), "n_positive": len(positives), "tests": tests,
    }


def tuned_peaks(stages: Mapping[str, Any] | None) -> dict[tuple[str, str, int], float]:
    """(model, opt, bs) -> the LR tuned fixed warmup chose there, from stages.json's selection."""
    out: dict[tuple[str, str, int], float] = {}
    for e in (stages or {}).get("selection") or []:
        if not isinstance(e, dict) or e.get("method") != "fixed" or e.get("label", "fixed") != "fixed":
            continue
        lr = finite_float(e.get("chosen_lr"))
        try:
            key = (str(e["model"]), str(e["opt"]), int(e["bs"]))
        except (KeyError, TypeError, ValueError):
            continue
        if lr is not None:
            out[key] = lr
    return out


def diagnose_records(raw: Mapping[str, Mapping[str, Any]], stages: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One row per record of ``raw`` (run_id -> record) with an ``autowu`` block (``auto``, ``autoplus``),
    sorted by model, opt, label, batch and seed."""
    peaks = tuned_peaks(stages)
    labels = {f.get("run_id"): f.get("label") for f in (stages or {}).get("final_runs") or []
              if isinstance(f, dict) and f.get("label")}
    rows = []
    for rid, rec in raw.items():
        cfg = rec.get("config") or {}
        if not rec.get("autowu"):  # AutoWU and its variants (autoplus) record one; no other scheduler does
            continue
        try:
            key = (str(cfg.get("model")), str(cfg.get("opt")), int(cfg.get("bs")))
        except (TypeError, ValueError):
            continue
        rows.append(diagnose_run({**rec, "run_id": rec.get("run_id") or rid}, peaks.get(key), labels.get(rid)))
    df = pd.DataFrame(rows, columns=DIAGNOSIS_COLUMNS)
    if len(df):
        df = df.sort_values(["model", "opt", "label", "bs", "seed"], kind="stable").reset_index(drop=True)
    return df


def diagnose_sweep(sweep_dir: str | Path) -> pd.DataFrame:
    """``diagnose_records`` of ``sweep_dir/runs`` with the sweep's stages.json."""
    from autolr.collate import load_stages, read_raw_records

    raw, _ = read_raw_records(sweep_dir)
    return diagnose_records(raw, load_stages(sweep_dir))

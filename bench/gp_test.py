"""Benchmark AutoWU's GP test: the fast path against the gpytorch oracle (shared/AUTOWU.md).

    python bench/gp_test.py [--oracle-curves N] [--history 20000] [--fast-reps 20] [--oracle-reps 5]

1. Timing: milliseconds per epoch test on a synthetic history of ``--history`` steps, for the
   fast path and the oracle (median and p95 of wall time, median CPU time), hyperparameter
   state carried from test to test as in a run.
2. Agreement: every curve of ``bench/curves.py`` (and any recorded trace in ``bench/traces/``)
   is replayed through two ``AutoWU`` schedulers, ``gp_path="fast"`` and ``gp_path="oracle"``,
   fed the same per-step losses until they switch. A curve passes when both switch at the same
   epoch with the same kind, the switch LRs are within 5%, and every p value that is not within
   0.01 of the 0.95 threshold differs by at most 0.01.

Prints both tables, writes ``bench/results/gp_test.json`` (atomically) and exits 1 if any curve
fails. ``--oracle-curves N`` replays only the first N curves with the oracle (the others are
reported fast-only); the oracle costs ~0.4 s a test, so the full run takes a minute or two.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _p in (str(HERE), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import curves as curve_lib  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from autolr.autowu import AutoWU  # noqa: E402
from autolr.files import atomic_write_json  # noqa: E402
from autolr.gp import GPConfig, GPState, run_test  # noqa: E402

RESULTS = HERE / "results" / "gp_test.json"
P_TOL = 0.01  # |Δp| allowed away from the threshold
P_WINDOW = 0.01  # p values this close to the threshold are not compared
LR_TOL = 0.05  # switch LRs within 5%


# -- timing ----------------------------------------------------------------------------------


def _timing_history(n: int) -> np.ndarray:
    """A 20,000-step-like history: a known minimum at 60% of the path, noise, a few inf steps."""
    c = curve_lib.synthetic("timing", 1e-2, steps_per_epoch=max(n // 20, 1), total_epochs=40, noise=0.1,
                            seed=123, n_steps=n)
    losses = c.losses.copy()
    losses[6::97] = math.inf
    return losses


def time_path(losses: np.ndarray, path: str, reps: int) -> dict[str, Any]:
    cfg = GPConfig()
    state, rng = GPState.initial(cfg), np.random.default_rng(0)
    run_test(losses, state, rng, cfg, path)  # warm-up: imports, feature cache
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        run_test(losses, state, rng, cfg, path)
        wall.append(1e3 * (time.perf_counter() - t0))
        cpu.append(1e3 * (time.process_time() - c0))
    return {"path": path, "reps": reps, "n_steps": int(len(losses)),
            "median_ms": float(np.median(wall)), "p95_ms": float(np.percentile(wall, 95)),
            "min_ms": float(np.min(wall)), "cpu_median_ms": float(np.median(cpu)), "wall_ms": wall}


# -- agreement -------------------------------------------------------------------------------


def replay(curve: curve_lib.Curve, path: str) -> dict[str, Any]:
    """Feed the curve's per-step losses to an AutoWU until it switches."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = AutoWU(opt, gp_path=path, **curve.autowu_kwargs())
    t0 = time.perf_counter()
    step = 0
    while sched.phase == "warmup":
        sched.step(curve.loss(step))
        step += 1
    return {"switch_step": sched.switch_step, "switch_lr": sched.switch_lr, "switch_kind": sched.switch_kind,
            "switch_epoch": sched.switch_step / curve.steps_per_epoch,
            "tests": [{"epoch": r["epoch"], "probs": r["probs"], "positive": r["positive"],
                       "argmin_x": r["argmin_x"], "candidate_lr": r["candidate_lr"], "skipped": r["skipped"]}
                      for r in sched.history],
            "seconds": time.perf_counter() - t0, "test_seconds": sched.test_seconds,
            "beyond_curve": step > len(curve.losses)}


def compare(curve: curve_lib.Curve, fast: dict[str, Any], oracle: dict[str, Any] | None,
            threshold: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "curve": curve.name, "kind": curve.kind, "n_tests": len(fast["tests"]),
        "fast_switch_epoch": fast["switch_epoch"], "fast_switch_kind": fast["switch_kind"],
        "fast_switch_lr": fast["switch_lr"], "best_lr": curve.best_lr,
        "switch_over_best": None if curve.best_lr is None else fast["switch_lr"] / curve.best_lr,
        "fast_seconds": fast["seconds"], "beyond_curve": fast["beyond_curve"],
    }
    if oracle is None:
        out.update(status="FAST-ONLY", passed=None)
        return out
    max_dp, n_near, n_compared, decision_mismatch = 0.0, 0, 0, 0
    for f, o in zip(fast["tests"], oracle["tests"], strict=False):
        near_any = False
        for p, q in zip(f["probs"], o["probs"], strict=False):
            if abs(p - threshold) <= P_WINDOW or abs(q - threshold) <= P_WINDOW:
                n_near += 1
                near_any = True
                continue
            n_compared += 1
            max_dp = max(max_dp, abs(p - q))
        if len(f["probs"]) != len(o["probs"]) or f["skipped"] != o["skipped"]:
            decision_mismatch += 1
        elif f["positive"] != o["positive"] and not near_any:
            decision_mismatch += 1
    ratio = (oracle["switch_lr"] / fast["switch_lr"]) if fast["switch_lr"] else math.nan
    same_epoch = fast["switch_step"] == oracle["switch_step"] and fast["switch_kind"] == oracle["switch_kind"]
    passed = bool(same_epoch and abs(ratio - 1.0) <= LR_TOL and max_dp <= P_TOL and decision_mismatch == 0)
    out.update(
        oracle_switch_epoch=oracle["switch_epoch"], oracle_switch_kind=oracle["switch_kind"],
        oracle_switch_lr=oracle["switch_lr"], same_switch_epoch=same_epoch,
        lr_ratio=ratio if math.isfinite(ratio) else None,  # JSON has no NaN
        max_dp=max_dp, p_compared=n_compared, p_near_threshold=n_near, decision_mismatches=decision_mismatch,
        oracle_seconds=oracle["seconds"], oracle_tests=len(oracle["tests"]),
        status="PASS" if passed else "FAIL", passed=passed,
        fast_probs=[t["probs"] for t in fast["tests"]], oracle_probs=[t["probs"] for t in oracle["tests"]],
    )
    return out


# -- output ----------------------------------------------------------------------------------


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        width = "".join(ch for ch in spec.split(".")[0] if ch.isdigit())
        return "-".rjust(int(width or 1))
    return format(v, spec)


def print_timing(rows: list[dict[str, Any]]) -> None:
    print(f"\nGP test timing, history of {rows[0]['n_steps']} steps (torch threads: {torch.get_num_threads()})")
    print(f"{'path':8s} {'reps':>5s} {'median ms':>10s} {'p95 ms':>9s} {'min ms':>8s} {'cpu ms':>8s}")
    for r in rows:
        print(f"{r['path']:8s} {r['reps']:5d} {r['median_ms']:10.2f} {r['p95_ms']:9.2f} {r['min_ms']:8.2f} "
              f"{r['cpu_median_ms']:8.2f}")
    if len(rows) == 2 and rows[0]["median_ms"] > 0:
        print(f"speed-up (median): {rows[1]['median_ms'] / rows[0]['median_ms']:.0f}x")


def print_header() -> None:
    print(f"\n{'curve':16s} {'tests':>5s} {'fast ep':>7s} {'orcl ep':>7s} {'kind':6s} {'same':4s} "
          f"{'lr ratio':>8s} {'max|dp|':>8s} {'near':>4s} {'sw/best':>7s} {'orcl s':>6s}  result")


def print_row(r: dict[str, Any]) -> None:
    same = "-" if r.get("same_switch_epoch") is None else ("yes" if r["same_switch_epoch"] else "NO")
    name = r["curve"][:15] + ("*" if r["beyond_curve"] else "")
    print(f"{name:16s} {r['n_tests']:5d} {_fmt(r['fast_switch_epoch'], '7.1f')} "
          f"{_fmt(r.get('oracle_switch_epoch'), '7.1f')} {r['fast_switch_kind']:6s} {same:4s} "
          f"{_fmt(r.get('lr_ratio'), '8.4f')} {_fmt(r.get('max_dp'), '8.1e')} "
          f"{_fmt(r.get('p_near_threshold'), '4d')} {_fmt(r['switch_over_best'], '7.3f')} "
          f"{_fmt(r.get('oracle_seconds'), '6.1f')}  {r['status']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracle-curves", type=int, default=None,
                    help="replay only the first N curves with the oracle (default: all)")
    ap.add_argument("--history", type=int, default=20000, help="steps in the timing history")
    ap.add_argument("--fast-reps", type=int, default=20)
    ap.add_argument("--oracle-reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the oracle (default 1: steadier on a shared machine; 0 = torch's)")
    ap.add_argument("--traces", type=Path, default=None, help="directory of recorded traces (bench/traces)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    history = _timing_history(args.history)
    timing = [time_path(history, "fast", args.fast_reps)]
    if args.oracle_reps > 0:
        timing.append(time_path(history, "oracle", args.oracle_reps))
    print_timing(timing)

    curves = curve_lib.all_curves(args.traces)
    n_oracle = len(curves) if args.oracle_curves is None else max(0, args.oracle_curves)
    threshold = GPConfig().confidence
    print(f"\nAgreement on {len(curves)} curves ({sum(c.kind == 'trace' for c in curves)} recorded traces), "
          f"oracle on {min(n_oracle, len(curves))}: same switch epoch and kind, switch LR within "
          f"{LR_TOL:.0%}, |dp| <= {P_TOL} away from p = {threshold} +- {P_WINDOW}")
    print_header()
    rows = []
    for i, curve in enumerate(curves):
        fast = replay(curve, "fast")
        oracle = replay(curve, "oracle") if i < n_oracle else None
        row = compare(curve, fast, oracle, threshold)
        row["meta"] = curve.metadata()
        rows.append(row)
        print_row(row)

    if any(r["beyond_curve"] for r in rows):
        print("* the recorded losses ended before the switch; the replay went on with NaN losses")
    judged = [r for r in rows if r["passed"] is not None]
    failed = [r["curve"] for r in judged if not r["passed"]]
    overall = "FAIL" if failed else ("PASS" if judged else "NO ORACLE RUNS")
    print(f"\noverall: {overall} ({len(judged) - len(failed)}/{len(judged)} curves agree"
          + (f"; failed: {', '.join(failed)}" if failed else "") + ")")
    summary = {
        "overall": overall, "failed": failed, "timing": timing, "curves": rows,
        "criteria": {"p_tol": P_TOL, "p_window": P_WINDOW, "lr_tol": LR_TOL, "threshold": threshold},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "numpy": np.__version__, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "machine": platform.machine()},
        "seconds": time.perf_counter() - t_start,
    }
    atomic_write_json(args.out, summary)
    print(f"wrote {args.out} ({summary['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

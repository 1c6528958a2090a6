"""The GP test of ``autolr.gp`` in isolation (shared/AUTOWU.md, "The test").

Covers: decisions on curves with a known answer; the fast path against the gpytorch oracle
(p within 0.01 away from the 0.95 threshold, same decisions, argmin within 5%); robustness to
NaN/inf/huge/constant histories; the state round trip; and the fast fit's analytic gradient and
posterior against an exact GP computed here with numpy in float64.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from autolr.gp import GPConfig, GPState, _fit_fast, _predict_fast, posterior_stats, run_test


def _load_curves():
    path = Path(__file__).resolve().parents[1] / "bench" / "curves.py"
    if "bench_curves" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_curves", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_curves"] = module
        spec.loader.exec_module(module)
    return sys.modules["bench_curves"]


curves = _load_curves()
CFG = GPConfig()
THRESHOLD = CFG.confidence


@pytest.fixture
def one_thread():
    """The oracle with one torch thread: steadier timings on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _test(losses, path="fast", state=None, seed=0):
    state = GPState.initial(CFG) if state is None else state
    return run_test(np.asarray(losses, dtype=np.float64), state, np.random.default_rng(seed), CFG, path)


def _curve_x(n, fn, noise, seed):
    x = np.arange(n) / n
    return fn(x) + noise * np.random.default_rng(seed).standard_normal(n)


# -- decisions on curves with a known answer -------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_minimum_well_in_the_past_is_positive(seed):
    losses = _curve_x(800, lambda x: 1.0 + 4.0 * (x - 0.4) ** 2, 0.1, seed)
    res = _test(losses)
    assert res.skipped is None
    assert res.positive
    assert all(p > THRESHOLD for p in res.probs)
    assert all(abs(x - 0.4) < 0.1 for x in res.argmin_x)


@pytest.mark.parametrize("lengthscale", [0.05, 0.02, 0.01])
def test_short_lengthscales_fit_where_kernel_entries_underflow(lengthscale):
    # exp(-d^2 / 2l^2) underflows to 0 for far pairs: harmless, and not a failed fit
    cfg = GPConfig(lengthscale=lengthscale)
    losses = _curve_x(800, lambda x: 1.0 + 4.0 * (x - 0.4) ** 2, 0.05, 0)
    for path in ("fast", "oracle"):
        res = run_test(losses, GPState.initial(cfg), np.random.default_rng(0), cfg, path)
        assert res.skipped is None, (path, res.skipped)
        assert res.positive and all(abs(x - 0.4) < 0.1 for x in res.argmin_x)


def test_failed_fit_keeps_the_last_good_state():
    state = GPState.initial(CFG)
    assert _test(_curve_x(400, lambda x: 1.0 + (x - 0.4) ** 2, 0.05, 0), state=state).skipped is None
    good = state.to_dict()
    res = _test(np.array([1e308, -1e308] * 200), state=state)  # the data's mean alone overflows
    assert res.skipped is not None and res.skipped.startswith("GP failed")
    assert state.to_dict() == good


@pytest.mark.parametrize("seed", range(3))
def test_decreasing_curve_is_negative(seed):
    losses = _curve_x(800, lambda x: 1.0 + 2.0 * np.exp(-3.0 * x), 0.1, seed)
    res = _test(losses)
    assert res.skipped is None
    assert not res.positive
    assert all(0.0 <= p <= 1.0 for p in res.probs)
    assert all(x > 0.9 for x in res.argmin_x)  # the smoothed curve is lowest "now"


def test_probabilities_and_record_shape():
    losses = _curve_x(1200, lambda x: 1.0 + 4.0 * (x - 0.6) ** 2, 0.3, 7)
    res = _test(losses)
    assert len(res.probs) == len(res.argmin_x) == CFG.n_tests
    assert all(0.0 <= p <= 1.0 for p in res.probs)
    assert all(0.0 <= x <= 1.0 for x in res.argmin_x)
    assert res.n_points == res.n_finite == 1200
    assert 45 <= len(res.grid_x) <= 55 and len(res.grid_mean) == len(res.grid_std) == len(res.grid_x)
    assert res.grid_x[0] == 0.0 and res.grid_x[-1] == 1.0
    assert all(s >= 0 for s in res.grid_std)
    assert set(res.hyper) == {"mean", "noise", "outputscale", "lengthscale"}
    assert res.hyper["lengthscale"] == 0.2 and res.hyper["noise"] >= CFG.noise_floor
    # more than 500 points: each prediction sees its own subsample
    assert len(set(res.probs)) > 1 or len(set(res.argmin_x)) > 1


@pytest.mark.parametrize("x_min", [0.3, 0.55, 0.75])
def test_argmin_near_true_minimum_on_low_noise_curve(x_min):
    losses = _curve_x(1000, lambda x: 1.0 + 3.0 * (x - x_min) ** 2, 0.01, 3)
    res = _test(losses)
    assert res.positive
    for x in res.argmin_x:
        assert abs(x - x_min) < 0.05
    # the recorded band follows the curve
    gx = np.array(res.grid_x)
    assert np.allclose(res.grid_mean, 1.0 + 3.0 * (gx - x_min) ** 2, atol=0.02)


def test_votes_need_a_majority():
    # positive iff more than half of the five p values exceed the threshold
    losses = curves.synthetic("borderline", 0.3, a=0.05, right=1.0, steps_per_epoch=50, total_epochs=40,
                              noise=0.05, seed=18).losses[:950]
    for seed in range(4):
        res = _test(losses, seed=seed)
        assert res.positive == (sum(p > THRESHOLD for p in res.probs) >= 3)


# -- fast path against the oracle -------------------------------------------------------------


def _agreement_cases():
    cat = {c.name: c for c in curves.catalogue()}
    short = curves.synthetic("short", 1e-3, steps_per_epoch=3, total_epochs=10, seed=5)
    noisy = curves.synthetic("noisy", 1e-2, steps_per_epoch=100, total_epochs=30, noise=0.3, seed=13)
    border = curves.synthetic("borderline", 0.3, a=0.05, right=1.0, steps_per_epoch=50, total_epochs=40,
                              noise=0.05, seed=18)
    one = curves.synthetic("one_step", 1e-2, steps_per_epoch=1, total_epochs=40, seed=3)
    div, mixed = cat["diverging"].losses, cat["mixed_precision"].losses
    return {
        "short": (short.losses, [3, 6]),
        "one_step_per_epoch": (one.losses, [4, 8, 12]),
        "diverging": (div, [len(div) - 20, len(div)]),  # NaN/inf after the divergence, kept as x slots
        "mixed_precision": (mixed, [len(mixed) // 2, len(mixed)]),  # inf from skipped steps
        "noisy": (noisy.losses, [900, 1000]),  # votes split around the switch; > 500 points
        "flat": (cat["flat"].losses, [200, 220]),
        "decreasing": (cat["decreasing"].losses, [200, 220]),
        "borderline": (border.losses, [900, 1000]),  # some p within 0.01 of the threshold
    }


def _sequence(losses, ends, path):
    state, rng = GPState.initial(CFG), np.random.default_rng(0)
    results = [run_test(losses[:n], state, rng, CFG, path) for n in ends]
    return results, state, rng.bit_generator.state


def assert_agree(fast, oracle):
    assert fast.skipped == oracle.skipped
    near = [abs(p - THRESHOLD) <= 0.01 or abs(q - THRESHOLD) <= 0.01 for p, q in zip(fast.probs, oracle.probs,
                                                                                       strict=True)]
    for p, q, close in zip(fast.probs, oracle.probs, near, strict=True):
        if not close:
            assert abs(p - q) <= 0.01, (p, q)
    if not any(near):
        assert fast.positive == oracle.positive
    for a, b in zip(fast.argmin_x, oracle.argmin_x, strict=True):
        assert abs(a - b) <= 0.05 * max(abs(b), 1e-12) or abs(a - b) <= 1.0 / (CFG.grid_size - 1)
    for key in ("mean", "noise", "outputscale"):
        assert fast.hyper[key] == pytest.approx(oracle.hyper[key], rel=1e-4)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["short", "one_step_per_epoch", "diverging", "mixed_precision", "noisy", "flat",
                                  "decreasing", "borderline"])
def test_fast_and_oracle_agree(name, one_thread):
    losses, ends = _agreement_cases()[name]
    fast, fast_state, fast_rng = _sequence(losses, ends, "fast")
    oracle, oracle_state, oracle_rng = _sequence(losses, ends, "oracle")
    for f, o in zip(fast, oracle, strict=True):
        assert_agree(f, o)
    # the same subsamples were drawn, and the carried Adam state matches
    assert fast_rng == oracle_rng
    assert fast_state.adam_step == oracle_state.adam_step == len(ends) * CFG.fit_iters
    np.testing.assert_allclose(fast_state.raw, oracle_state.raw, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(fast_state.exp_avg, oracle_state.exp_avg, rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(fast_state.exp_avg_sq, oracle_state.exp_avg_sq, rtol=1e-3, atol=1e-12)


def test_threshold_window_is_exercised():
    # the borderline case of the agreement test has p values within 0.01 of 0.95 (fast path only)
    losses, ends = _agreement_cases()["borderline"]
    fast, _, _ = _sequence(losses, ends, "fast")
    assert any(abs(p - THRESHOLD) <= 0.01 for p in fast[-1].probs)


# -- robustness -------------------------------------------------------------------------------


def test_all_nan_history_is_skipped():
    state = GPState.initial(CFG)
    before = state.to_dict()
    res = _test(np.full(50, np.nan), state=state)
    assert res.skipped and not res.positive and res.probs == [] and res.argmin_x == []
    assert res.n_points == 50 and res.n_finite == 0
    assert state.to_dict() == before


@pytest.mark.parametrize("losses", [[], [1.0], [np.nan, 2.0, np.inf], [np.inf] * 10 + [1.0]])
def test_fewer_than_two_finite_points_is_skipped(losses):
    res = _test(losses)
    assert res.skipped is not None and "fewer than 2" in res.skipped
    assert not res.positive


@pytest.mark.parametrize("losses", [[1.0, 2.0], [2.0, 1.0], [np.nan, 1.5, np.inf, 1.2], [3.0, 3.0]])
def test_two_points_run(losses):
    res = _test(losses)
    assert res.skipped is None
    assert len(res.probs) == CFG.n_tests and all(0.0 <= p <= 1.0 for p in res.probs)


@pytest.mark.parametrize("tail", [np.nan, np.inf, -np.inf, 1e30, 1e300])
def test_diverged_tail_never_raises(tail):
    base = _curve_x(300, lambda x: 1.0 + 4.0 * (x - 0.5) ** 2, 0.05, 1)
    losses = np.concatenate([base, [50.0, 1e4], np.full(30, tail)])
    state = GPState.initial(CFG)
    for _ in range(3):
        res = _test(losses, state=state)
        assert np.isfinite(state.raw).all()
        assert all(0.0 <= p <= 1.0 for p in res.probs)
        if res.skipped is None:
            # the rise is there whether the tail is left out (NaN/inf) or huge
            assert res.positive
        else:
            assert res.skipped.startswith("GP failed")


def test_constant_losses_zero_variance():
    state = GPState.initial(CFG)
    for n in (2, 10, 600):
        res = _test(np.full(n, 2.3), state=state)
        assert not res.positive
        assert all(0.0 <= p <= 1.0 for p in res.probs)
        assert np.isfinite(state.raw).all()


def test_unknown_path_raises():
    with pytest.raises(ValueError):
        _test([1.0, 2.0, 3.0], path="exact")


# -- state ------------------------------------------------------------------------------------


def test_state_round_trip_continues_identically():
    losses = _curve_x(700, lambda x: 1.0 + 4.0 * (x - 0.6) ** 2, 0.2, 2)
    state, rng = GPState.initial(CFG), np.random.default_rng(0)
    run_test(losses[:500], state, rng, CFG)
    d = state.to_dict()
    restored = GPState.from_dict(json.loads(json.dumps(d)))
    assert restored == state and restored.to_dict() == d
    assert restored.adam_step == CFG.fit_iters
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = json.loads(json.dumps(rng.bit_generator.state))
    a = run_test(losses, state, rng, CFG)
    b = run_test(losses, restored, rng2, CFG)
    assert a == b and state == restored


def test_initial_state():
    state = GPState.initial(CFG)
    hp = state.hyperparameters(CFG)
    assert hp["noise"] == pytest.approx(1e-3, rel=1e-12)
    assert hp["outputscale"] == pytest.approx(math.log(2.0), rel=1e-12)
    assert state.adam_step == 0 and state.exp_avg == [0.0, 0.0, 0.0]


# -- the fast fit's gradient and posterior against numpy float64 ------------------------------


def _softplus(v):
    return float(np.logaddexp(0.0, v))


def _rbf(a, b, lengthscale=CFG.lengthscale):
    return np.exp(-0.5 * (a[:, None] - b[None, :]) ** 2 / lengthscale**2)


def _neg_mll(raw, x, y):
    """−log p(y)/m of an exact GP: K = s·RBF + σ²·I, constant mean c, in float64."""
    c, rn, rs = raw
    noise = _softplus(rn) + CFG.noise_floor
    scale = _softplus(rs)
    k = scale * _rbf(x, x) + noise * np.eye(len(x))
    chol = np.linalg.cholesky(k)
    alpha = np.linalg.solve(chol, y - c)
    m = len(y)
    return 0.5 * (alpha @ alpha + 2.0 * np.log(np.diag(chol)).sum() + m * math.log(2 * math.pi)) / m


@pytest.mark.parametrize("raw", [[0.0, -6.9, 0.0], [1.3, -2.0, 0.5], [0.7, 1.0, -3.0], [2.0, -8.0, 2.0]])
def test_fast_fit_gradient_matches_finite_differences(raw):
    rng = np.random.default_rng(11)
    x = np.sort(rng.choice(400, size=30, replace=False)) / 400
    y = 1.0 + 2.0 * (x - 0.3) ** 2 + 0.1 * rng.standard_normal(30)
    state = GPState(raw=list(raw))
    _fit_fast(x, y, state, GPConfig(fit_iters=1))
    # after one Adam step from zero moments, exp_avg = (1 − β1)·g
    grad = np.array(state.exp_avg) / 0.1
    assert np.sqrt(np.array(state.exp_avg_sq) / 0.001) == pytest.approx(np.abs(grad), rel=1e-9)
    def central(i: int, h: float) -> float:
        up, down = list(raw), list(raw)
        up[i] += h
        down[i] -= h
        return (_neg_mll(up, x, y) - _neg_mll(down, x, y)) / (2 * h)

    for i in range(3):
        # Richardson extrapolation cancels the central difference's h² term, which alone reaches
        # 1e-5 relative where the noise is tiny (raw[1] = −8) and the objective curves sharply
        fd = (4 * central(i, 5e-4) - central(i, 1e-3)) / 3
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-8), (i, grad, fd)
    # and the step went downhill: Adam's first step is −lr·g/(|g| + ε) ≈ −lr·sign(g)
    moved = np.array(state.raw) - np.array(raw)
    np.testing.assert_allclose(moved, -CFG.fit_lr * grad / (np.abs(grad) + 1e-8), rtol=1e-9, atol=1e-15)


def test_fast_fit_decreases_the_exact_objective():
    rng = np.random.default_rng(5)
    x = np.sort(rng.choice(1000, size=100, replace=False)) / 1000
    y = 1.0 + 3.0 * (x - 0.5) ** 2 + 0.05 * rng.standard_normal(100)
    state = GPState.initial(CFG)
    state.raw[0] = float(y.mean())
    before = _neg_mll(state.raw, x, y)
    _fit_fast(x, y, state, CFG)
    assert _neg_mll(state.raw, x, y) < before - 0.1


def test_fast_posterior_matches_exact_gp():
    rng = np.random.default_rng(9)
    n = 300
    x = np.arange(n) / n
    y = 1.0 + 3.0 * (x - 0.5) ** 2 + 0.05 * rng.standard_normal(n)
    state = GPState(raw=[1.2, _inv_softplus(0.003 - CFG.noise_floor), _inv_softplus(0.4)])
    grid = np.linspace(0.0, 1.0, CFG.grid_size)
    means, variances, cross = _predict_fast([x], [y], state, CFG, grid)
    hp = state.hyperparameters(CFG)
    c, noise, scale = hp["mean"], hp["noise"], hp["outputscale"]
    k = scale * _rbf(x, x) + noise * np.eye(n)
    ks = scale * _rbf(grid, x)
    mean = c + ks @ np.linalg.solve(k, y - c)
    cov = scale * _rbf(grid, grid) - ks @ np.linalg.solve(k, ks.T)
    np.testing.assert_allclose(means[0], mean, atol=1e-8)
    np.testing.assert_allclose(variances[0], np.diag(cov), atol=1e-8)
    np.testing.assert_allclose(cross[0], cov[:, -1], atol=1e-8)
    # the statistic, from the full covariance
    var = np.diag(cov)[:-1] + cov[-1, -1] - 2 * cov[:-1, -1] + 1e-4
    z = ((mean[-1] - mean[:-1]) / np.sqrt(var)).max()
    expected = 0.5 * math.erfc(-z / math.sqrt(2))
    assert posterior_stats(means, variances, cross)[0] == pytest.approx(expected, abs=1e-8)


def _inv_softplus(v):
    return v + math.log(-math.expm1(-v))

"""The ``AutoWU`` scheduler (shared/AUTOWU.md): warmup path, switch, decay, robustness, state,
parameter groups, the run record, DDP, and the oracle path.

Expected LRs are computed here from the spec's formulas:

    warmup      η(s) = η0 · (η_max/η0)^(s/M)   (linear: η0 + (η_max − η0)·s/M),  M = ⌊p_max·T⌋
    cosine      η(s) = η_sw · ½(1 + cos(π (s − s_sw)/(T − s_sw)))
    const-cos   η_sw until the first s ≥ (1 − c)·T, then cosine from there to 0 at T

Losses are synthetic functions of the LR actually in use at each step, with a known best LR:
loss(η) = 1 + a·d²·(4 if d > 0 else 1) with d = log10 η − log10 η*, plus seeded noise.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from autolr.autowu import AutoWU

INIT_LR, MAX_LR = 1e-5, 1.0
REL = 1e-12


# -- helpers ---------------------------------------------------------------------------------


def make_optimizer(lrs=(1.0,)) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def make(spe=10, epochs=40, lrs=(1.0,), **kw) -> AutoWU:
    return AutoWU(make_optimizer(lrs), spe, epochs, **kw)


def model_loss(lr, best_lr, a=0.5, right=4.0):
    d = math.log10(lr) - math.log10(best_lr)
    return 1.0 + a * d * d * (right if d > 0 else 1.0)


def noise_at(seed, step, *extra):
    return float(np.random.default_rng([seed, step, *extra]).standard_normal())


def synthetic_loss(best_lr, noise=0.05, seed=0):
    """A loss as a function of (step, LR in use): the model plus deterministic per-step noise."""
    return lambda step, lr: model_loss(lr, best_lr) + noise * noise_at(seed, step)


def decreasing_loss(step, lr):
    return 3.0 - math.log10(lr) / 5.0 * 2.0  # falls as the LR grows, never rises


def drive(sched: AutoWU, loss_fn, steps=None, start=0, wrap=float):
    """Steps the scheduler; returns the LRs of steps start … start+steps (the first is current)."""
    steps = sched.total_steps - start if steps is None else steps
    opt = sched.optimizer
    lrs = [sched.get_last_lr()[0]]
    for s in range(start, start + steps):
        lr = opt.param_groups[0]["lr"]
        sched.step(wrap(loss_fn(s, lr)) if sched.phase == "warmup" else None)
        lrs.append(sched.get_last_lr()[0])
        assert opt.param_groups[0]["lr"] == lrs[-1]
    return lrs


def exp_warmup(s, m, init=INIT_LR, peak=MAX_LR):
    return init * (peak / init) ** (s / m)


def cosine(s, start, end, lr):
    return lr * 0.5 * (1.0 + math.cos(math.pi * (s - start) / (end - start)))


def without_timing(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


# -- the warmup path -------------------------------------------------------------------------


@pytest.mark.parametrize("spe,epochs,frac", [(10, 20, 0.5), (7, 13, 0.5), (3, 50, 0.3)])
def test_exponential_warmup_formula(spe, epochs, frac):
    sched = make(spe, epochs, max_warmup_fraction=frac)
    m = math.floor(Fraction(str(frac)) * spe * epochs)
    assert sched.max_warmup_steps == m
    lrs = drive(sched, decreasing_loss, steps=m - 1)
    for s, lr in enumerate(lrs):
        assert lr == pytest.approx(exp_warmup(s, m), rel=REL)
        assert lr == pytest.approx(INIT_LR * (MAX_LR / INIT_LR) ** (s / m), rel=REL)
    assert sched.phase == "warmup" and sched.switch_step is None


def test_linear_warmup_formula():
    sched = make(10, 20, warmup="linear", init_lr=1e-3, max_lr=2.0)
    m = 100
    lrs = drive(sched, decreasing_loss, steps=m - 1)
    for s, lr in enumerate(lrs):
        assert lr == pytest.approx(1e-3 + (2.0 - 1e-3) * s / m, rel=REL)


def test_get_last_lr_matches_optimizer_every_step():
    sched = make(5, 20)
    opt = sched.optimizer
    assert sched.get_last_lr() == [opt.param_groups[0]["lr"]] == [INIT_LR]
    loss = synthetic_loss(1e-2)
    for s in range(sched.total_steps):
        sched.step(loss(s, opt.param_groups[0]["lr"]) if sched.phase == "warmup" else None)
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
        assert sched.last_step == s + 1


# -- finding the best LR ---------------------------------------------------------------------


def _check_test_switch(sched, best_lr, factor=1.5):
    assert sched.switch_kind == "test", sched.summary()["tests"][-1]["probs"]
    assert sched.switch_step % sched.steps_per_epoch == 0  # at an epoch end
    assert sched.switch_step // sched.steps_per_epoch >= sched.patience
    assert sched.switch_step < sched.max_warmup_steps
    assert best_lr / factor < sched.switch_lr < best_lr * factor, (sched.switch_lr, best_lr)
    # the last `patience` tests were positive, the one before (if any) not, and only the last switched
    tests = sched.history
    assert [r["positive"] for r in tests[-sched.patience:]] == [True] * sched.patience
    assert [r["switched"] for r in tests] == [False] * (len(tests) - 1) + [True]
    assert tests[-1]["candidate_lr"] == sched.switch_lr
    assert tests[-1]["step"] == sched.switch_step


@pytest.mark.parametrize("seed", range(10))
def test_switch_near_known_best_lr(seed):
    best = [3e-3, 1e-2, 3e-2][seed % 3]
    sched = make(10, 40)
    lrs = drive(sched, synthetic_loss(best, noise=0.05, seed=seed))
    _check_test_switch(sched, best)
    sw = sched.switch_step
    # the LR jumps to the switch LR and then follows the cosine to 0 at T
    assert lrs[sw] == sched.switch_lr
    for s in range(sw, sched.total_steps + 1):
        assert lrs[s] == pytest.approx(cosine(s, sw, sched.total_steps, sched.switch_lr), rel=REL, abs=1e-15)
    # the switch LR is the mean of the five mapped argmins along the path η0·(η_now/η0)^x
    rec = sched.history[-1]
    lr_now = lrs[sw - 1]
    assert rec["lr_now"] == pytest.approx(lr_now, rel=REL)
    mapped = [INIT_LR * (lr_now / INIT_LR) ** x for x in rec["argmin_x"]]
    assert rec["candidate_lr"] == pytest.approx(float(np.mean(mapped)), rel=1e-12)


@pytest.mark.parametrize("patience", [1, 2, 3, 5])
def test_earliest_switch_is_after_patience_epochs(patience):
    # the loss rises from the very first step: every test is positive
    sched = make(10, 40, patience=patience)
    drive(sched, lambda s, lr: 1.0 + s / 10 + 0.01 * noise_at(1, s))
    assert sched.switch_kind == "test"
    assert sched.switch_step == patience * 10
    assert len(sched.history) == patience and all(r["positive"] for r in sched.history)


def test_negative_test_resets_the_count():
    sched = make(10, 40)
    drive(sched, synthetic_loss(1e-2, noise=0.3, seed=13))
    pos = [r["positive"] for r in sched.history]
    run = 0
    for i, p in enumerate(pos):
        run = run + 1 if p else 0
        assert (run >= 3) == (i == len(pos) - 1)


@pytest.mark.parametrize("seed", range(3))
def test_mixed_precision_inf_steps(seed):
    best = 1e-2
    base = synthetic_loss(best, noise=0.05, seed=seed)
    loss = lambda s, lr: math.inf if s < 3 or s % 7 == 6 else base(s, lr)  # noqa: E731
    sched = make(10, 40)
    drive(sched, loss)
    _check_test_switch(sched, best)
    rec = sched.warmup_losses
    assert all(not math.isfinite(rec[s]) for s in range(len(rec)) if s < 3 or s % 7 == 6)
    assert sched.history[-1]["n_finite"] < sched.history[-1]["n_points"]


def test_one_step_per_epoch():
    sched = make(1, 200)
    drive(sched, synthetic_loss(1e-2, noise=0.05, seed=2))
    _check_test_switch(sched, 1e-2)
    first = sched.history[0]
    assert first["skipped"] and "fewer than 2" in first["skipped"]  # a test on one loss


# -- forced switch and the decays ------------------------------------------------------------


@pytest.mark.parametrize("spe,epochs", [(10, 40), (7, 9), (1, 30)])
def test_forced_switch_then_cosine(spe, epochs):
    sched = make(spe, epochs)
    t = spe * epochs
    m = math.floor(0.5 * t)
    lrs = drive(sched, decreasing_loss)
    assert sched.switch_kind == "forced" and sched.switch_step == m
    assert sched.switch_lr == pytest.approx(exp_warmup(m - 1, m), rel=REL)
    assert sched.switch_lr == lrs[m - 1]  # the LR of the last warmup step
    assert not any(r["positive"] for r in sched.history)
    assert len(sched.history) == len([s for s in range(1, m) if s % spe == 0])
    for s in range(m, t + 1):
        assert lrs[s] == pytest.approx(cosine(s, m, t, sched.switch_lr), rel=REL, abs=1e-15)
    assert lrs[t - 1] > 0 and lrs[t] == 0.0
    assert len(sched.warmup_losses) == m  # one loss per warmup step, none after


@pytest.mark.parametrize("spe,epochs,cooldown", [(10, 40, 0.2), (7, 10, 0.2), (3, 11, 0.35), (10, 40, 1.0)])
def test_forced_switch_then_constant_cosine(spe, epochs, cooldown):
    sched = make(spe, epochs, decay="constant_cosine", cooldown_fraction=cooldown)
    t = spe * epochs
    m = math.floor(0.5 * t)
    lrs = drive(sched, decreasing_loss)
    # first step s with s >= (1 − c)·T, in exact arithmetic
    start = max(m, math.ceil((1 - Fraction(str(cooldown))) * t))  # never before the switch
    assert sched.switch_step == m and sched.switch_lr == lrs[m - 1]
    for s in range(m, t):
        if s < start:
            assert lrs[s] == sched.switch_lr
        else:
            assert lrs[s] == pytest.approx(cosine(s, start, t, sched.switch_lr), rel=REL, abs=1e-15)
    assert lrs[t] == 0.0 and lrs[t - 1] > 0


def test_constant_cosine_without_cooldown_stays_constant():
    sched = make(10, 40, decay="constant_cosine", cooldown_fraction=0.0)
    lrs = drive(sched, decreasing_loss)
    assert sched.switch_step == 200
    assert all(v == sched.switch_lr for v in lrs[200:400])


def test_constant_cosine_after_a_test_switch():
    sched = make(10, 40, decay="constant_cosine")
    lrs = drive(sched, synthetic_loss(1e-2, seed=4))
    _check_test_switch(sched, 1e-2)
    assert all(v == sched.switch_lr for v in lrs[sched.switch_step:321])
    assert lrs[330] == pytest.approx(cosine(330, 320, 400, sched.switch_lr), rel=REL)


def test_constant_cosine_when_warmup_ends_inside_the_cooldown():
    # M = 0.9·T > 0.8·T: the cosine starts at the switch
    sched = make(10, 10, decay="constant_cosine", max_warmup_fraction=0.9)
    lrs = drive(sched, decreasing_loss)
    assert sched.switch_step == 90
    for s in range(90, 101):
        assert lrs[s] == pytest.approx(cosine(s, 90, 100, sched.switch_lr), rel=REL, abs=1e-15)


# -- divergence ------------------------------------------------------------------------------


def test_nan_after_divergence_mid_warmup():
    best = 1e-2
    base = synthetic_loss(best, noise=0.05, seed=5)
    diverged = {"at": None}

    def loss(s, lr):
        if lr > 1.2e-2:
            diverged["at"] = diverged["at"] or s
            return math.nan
        return base(s, lr)

    sched = make(10, 40)
    lrs = drive(sched, loss)
    assert sched.phase == "decay"
    first = diverged["at"]
    assert first is not None
    rec = sched.warmup_losses
    assert all(math.isnan(v) for v in rec[first:])
    assert all(math.isfinite(v) for v in rec[:first])
    # tests went on over the NaN tail
    after = [r for r in sched.history if r["n_finite"] < r["n_points"]]
    assert after and all(r["skipped"] is None for r in after)
    assert all(math.isfinite(v) for v in lrs)
    json.dumps(sched.summary())


def test_all_nan_from_the_start():
    sched = make(10, 20)
    lrs = drive(sched, lambda s, lr: math.nan)
    assert sched.switch_kind == "forced" and sched.switch_step == 100
    assert sched.switch_lr == pytest.approx(exp_warmup(99, 100), rel=REL)
    assert all(r["skipped"] and not r["positive"] for r in sched.history)
    assert len(sched.history) == 9
    assert all(math.isnan(v) for v in sched.warmup_losses) and len(sched.warmup_losses) == 100
    assert lrs[-1] == 0.0


def test_huge_losses_never_raise():
    base = synthetic_loss(1e-2, seed=6)
    sched = make(10, 40)
    drive(sched, lambda s, lr: base(s, lr) if lr < 2e-2 else [1e30, 1e300, -math.inf][s % 3])
    assert sched.phase == "decay"
    json.dumps(sched.summary())


def test_inf_losses_recorded_as_nan():
    sched = make(10, 20)
    for s in range(20):
        sched.step(math.inf if s % 2 else 1.0)
    rec = sched.warmup_losses
    assert len(rec) == 20
    assert all(math.isnan(rec[s]) for s in range(1, 20, 2))


@pytest.mark.parametrize("frac,t,m", [(0.29, 100, 29), (0.57, 200, 114), (0.58, 400, 232)])
def test_max_warmup_steps_is_exact(frac, t, m):
    assert make(10, t // 10, max_warmup_fraction=frac).max_warmup_steps == m


# -- tiny budgets ----------------------------------------------------------------------------


def test_budget_of_one_step():
    sched = make(1, 1)
    assert sched.phase == "decay" and sched.switch_kind == "forced"
    assert sched.switch_step == 0 and sched.switch_lr == MAX_LR
    assert sched.get_last_lr() == [MAX_LR]
    sched.step()
    assert sched.get_last_lr() == [0.0]


@pytest.mark.parametrize("spe,epochs", [(1, 2), (1, 3), (3, 1), (2, 1)])
def test_budgets_of_two_and_three_steps(spe, epochs):
    t = spe * epochs
    sched = make(spe, epochs)
    assert sched.max_warmup_steps == 1 and sched.get_last_lr() == [INIT_LR]
    lrs = drive(sched, lambda s, lr: 1.0)
    assert sched.switch_kind == "forced" and sched.switch_step == 1
    assert sched.switch_lr == INIT_LR and sched.history == []
    for s in range(1, t + 1):
        assert lrs[s] == pytest.approx(cosine(s, 1, t, INIT_LR), rel=REL, abs=1e-20)
    assert lrs[t] == 0.0


def test_zero_warmup_fraction_switches_immediately_at_max_lr():
    sched = make(10, 10, max_warmup_fraction=0.0)
    assert sched.phase == "decay" and sched.switch_kind == "forced"
    assert sched.switch_step == 0 and sched.switch_lr == MAX_LR
    lrs = drive(sched, lambda s, lr: 1.0)
    for s in range(101):
        assert lrs[s] == pytest.approx(cosine(s, 0, 100, MAX_LR), rel=REL, abs=1e-15)
    assert sched.warmup_losses == [] and sched.history == []


def test_full_warmup_fraction():
    sched = make(10, 10, max_warmup_fraction=1.0)
    lrs = drive(sched, decreasing_loss)
    assert sched.switch_step == 100 and sched.switch_lr == lrs[99] and lrs[100] == 0.0


def test_budget_too_short_to_test():
    # two tests before M = 25: patience 3 can never be met, even on a rising loss
    sched = make(10, 5)
    drive(sched, lambda s, lr: 1.0 + s / 10)
    assert len(sched.history) == 2 and all(r["positive"] for r in sched.history)
    assert sched.switch_kind == "forced" and sched.switch_step == 25


def test_warmup_ending_mid_epoch():
    # M = 35 is not a multiple of the epoch: the last partial epoch's losses are still recorded
    sched = make(10, 7)
    drive(sched, decreasing_loss)
    assert sched.switch_step == 35 and len(sched.warmup_losses) == 35
    assert [r["step"] for r in sched.history] == [10, 20, 30]


# -- state_dict ------------------------------------------------------------------------------

# T = 1500, M = 750: the switch comes after more than 500 losses, so every test draws its fit and
# prediction subsamples from the generator, whose state must survive the round trip
_SPE, _EPOCHS = 25, 60
_LOSS = synthetic_loss(1e-2, noise=0.05, seed=21)


@pytest.fixture(scope="module")
def reference_run():
    sched = make(_SPE, _EPOCHS)
    lrs = drive(sched, _LOSS)
    assert sched.switch_kind == "test" and sched.switch_step > 500
    return sched, lrs


def _save_load(sched, **kw):
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf)  # the default weights_only loader must accept it
    fresh = make(_SPE, _EPOCHS, **kw)
    fresh.load_state_dict(state)
    return fresh


def _resume_points(sw, m, t):
    e = _SPE
    return sorted({0, 1, 3, e - 1, e, e + 1, 2 * e + 7, 3 * e, 12 * e + 1, sw - e - 1, sw - e, sw - e + 1,
                   sw - 1, sw, sw + 1, sw + 3, m - 1, m, m + 1, t - 1, t})


def test_state_dict_round_trip_resumes_exactly(reference_run):
    ref, ref_lrs = reference_run
    sw, t = ref.switch_step, ref.total_steps
    points = _resume_points(sw, ref.max_warmup_steps, t)
    assert len(points) >= 18
    for k in points:
        sched = make(_SPE, _EPOCHS)
        head = drive(sched, _LOSS, steps=k)
        resumed = _save_load(sched)
        assert resumed.get_last_lr() == [ref_lrs[k]]
        assert resumed.optimizer.param_groups[0]["lr"] == ref_lrs[k]
        tail = drive(resumed, _LOSS, start=k)
        assert head[:-1] + tail == ref_lrs, f"resumed at step {k}"
        assert resumed.switch_step == ref.switch_step and resumed.switch_lr == ref.switch_lr
        assert resumed.switch_kind == ref.switch_kind and resumed.phase == ref.phase
        assert without_timing(resumed.history) == without_timing(ref.history), f"resumed at step {k}"
        np.testing.assert_array_equal(resumed.warmup_losses, ref.warmup_losses)
        assert resumed.state_dict()["gp_state"] == ref.state_dict()["gp_state"]


def test_state_dict_with_pending_tensor_losses():
    # mid-epoch, with 0-d float32 tensors pending: the resumed run matches an uninterrupted one
    wrap = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    ref = make(_SPE, _EPOCHS)
    ref_lrs = drive(ref, _LOSS, wrap=wrap)
    sched = make(_SPE, _EPOCHS)
    head = drive(sched, _LOSS, steps=39, wrap=wrap)
    assert sched.state_dict()["pending_losses"]
    resumed = _save_load(sched)
    tail = drive(resumed, _LOSS, start=39, wrap=wrap)
    assert head[:-1] + tail == ref_lrs
    assert without_timing(resumed.history) == without_timing(ref.history)


def test_state_dict_is_json_ready_and_contains_the_state(reference_run):
    ref, _ = reference_run
    state = json.loads(json.dumps(ref.state_dict()))
    for key in ("phase", "last_step", "switch_step", "switch_lr", "switch_kind", "consecutive", "history",
                "losses", "pending_losses", "gp_state", "rng_state"):
        assert key in state
    assert state["gp_state"]["adam_step"] == 100 * len(ref.history)


def test_load_state_dict_refuses_other_configurations(reference_run):
    ref, _ = reference_run
    state = ref.state_dict()
    with pytest.raises(ValueError):
        make(_SPE, _EPOCHS, max_lr=2.0).load_state_dict(state)
    with pytest.raises(ValueError):
        make(_SPE, _EPOCHS + 1).load_state_dict(state)
    with pytest.raises(ValueError):
        make(_SPE, _EPOCHS, warmup="linear").load_state_dict(state)
    with pytest.raises(ValueError):
        make(_SPE, _EPOCHS).load_state_dict({"last_step": 3})
    # the same total steps, other decisions: refused too
    for other in (make(_SPE * 2, _EPOCHS // 2),
                  make(_SPE, _EPOCHS, patience=7), make(_SPE, _EPOCHS, confidence=0.5),
                  make(_SPE, _EPOCHS, n_tests=3), make(_SPE, _EPOCHS, seed=9), make(_SPE, _EPOCHS, lengthscale=0.1),
                  make(_SPE, _EPOCHS, cooldown_fraction=0.9), make(_SPE, _EPOCHS, gp_path="oracle")):
        with pytest.raises(ValueError, match="AutoWU state has"):
            other.load_state_dict(state)


# -- inputs, groups, arguments ---------------------------------------------------------------


def test_tensor_and_float_losses_agree():
    runs = []
    for wrap in (float, lambda v: torch.tensor(v, dtype=torch.float64),
                 lambda v: torch.tensor([v], dtype=torch.float64, requires_grad=True) * 1.0):
        sched = make(10, 40)
        lrs = drive(sched, synthetic_loss(1e-2, seed=8), wrap=wrap)
        runs.append((lrs, without_timing(sched.history), sched.warmup_losses))
    assert runs[0] == runs[1] == runs[2]
    # float32 tensors give what their float values give
    a, b = make(10, 40), make(10, 40)
    f32 = lambda s, lr: float(torch.tensor(synthetic_loss(1e-2, seed=8)(s, lr), dtype=torch.float32))  # noqa: E731
    la = drive(a, f32)
    lb = drive(b, f32, wrap=lambda v: torch.tensor(v, dtype=torch.float32))
    assert la == lb and without_timing(a.history) == without_timing(b.history)


def test_two_parameter_groups_keep_their_ratio():
    sched = make(10, 40, lrs=(1.0, 0.1))
    opt = sched.optimizer
    loss = synthetic_loss(1e-2, seed=9)
    for s in range(sched.total_steps):
        g0, g1 = (g["lr"] for g in opt.param_groups)
        assert g1 == pytest.approx(0.1 * g0, rel=REL, abs=1e-300)
        assert sched.get_last_lr() == [g0, g1]
        sched.step(loss(s, g0) if sched.phase == "warmup" else None)
    assert sched.switch_kind == "test"
    # and through a state round trip
    resumed = make(10, 40, lrs=(1.0, 0.1))
    resumed.load_state_dict(sched.state_dict())
    assert resumed.get_last_lr() == sched.get_last_lr()


@pytest.mark.parametrize("kwargs", [
    {"init_lr": 1.0, "max_lr": 1.0}, {"init_lr": 2.0, "max_lr": 1.0}, {"init_lr": 0.0}, {"init_lr": -1e-5},
    {"max_lr": math.nan}, {"max_lr": math.inf}, {"warmup": "cosine"}, {"warmup": "EXP"}, {"decay": "step"},
    {"decay": "linear"}, {"max_warmup_fraction": -0.1}, {"max_warmup_fraction": 1.5},
    {"cooldown_fraction": 1.01}, {"cooldown_fraction": -0.5}, {"patience": 0}, {"patience": -2},
    {"patience": 1.5}, {"patience": True}, {"gp_path": "exact"}, {"gp_path": None}, {"seed": 1.5},
    {"confidence": 1.0}, {"confidence": 0.0}, {"n_tests": 0}, {"lengthscale": 0.0},
    # types: nothing is silently truncated or parsed
    {"n_tests": 2.7}, {"n_tests": "5"}, {"n_tests": True}, {"n_tests": None}, {"confidence": "0.9"},
    {"fit_iters": 2.5}, {"fit_iters": -1}, {"lengthscale": True}, {"max_warmup_fraction": True},
    {"init_lr": True}, {"init_lr": "1e-5"}, {"distributed": "no"}, {"seed": -3}, {"cooldown_fraction": None},
])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make(10, 40, **kwargs)


def test_numpy_integers_and_floats_are_accepted():
    a = make(np.int64(10), np.int32(40), patience=np.int64(3), n_tests=np.int64(5), seed=np.uint8(0),
             confidence=np.float32(0.95), max_lr=np.float64(1.0))
    b = make(10, 40)
    loss = synthetic_loss(1e-2, seed=8)
    assert drive(a, loss) == drive(b, loss)


def test_losses_are_copied_not_aliased():
    # a loop that reuses one loss tensor in place must not rewrite the recorded losses
    sched = make(10, 40)
    buf = torch.zeros((), dtype=torch.float64)
    for s in range(5):
        buf.fill_(float(s + 1))
        sched.step(buf)
    buf.fill_(100.0)
    assert [float(v) for v in sched.state_dict()["pending_losses"]] == [1.0, 2.0, 3.0, 4.0, 5.0]


@pytest.mark.parametrize("spe,epochs", [(0, 10), (10, 0), (2.5, 10)])
def test_invalid_budget_raises(spe, epochs):
    with pytest.raises(ValueError):
        make(spe, epochs)


def test_step_without_loss_during_warmup_raises():
    sched = make(10, 40)
    sched.step(1.0)
    with pytest.raises(ValueError):
        sched.step()
    with pytest.raises(ValueError):
        sched.step(torch.ones(3))
    assert sched.last_step == 1  # a refused step is not counted


# -- the run record --------------------------------------------------------------------------


def test_history_and_summary_are_json_serialisable():
    sched = make(10, 40)
    drive(sched, synthetic_loss(1e-2, seed=10))
    summary = sched.summary()
    text = json.dumps(summary, allow_nan=False)  # finite losses: strict JSON
    back = json.loads(text)
    json.dumps(sched.history, allow_nan=False)
    assert back["switch_step"] == sched.switch_step and back["switch_kind"] == "test"
    assert back["switch_epoch"] == sched.switch_step / 10
    assert len(back["warmup_losses"]) == sched.switch_step
    assert back["config"]["gp_path"] == "fast" and back["config"]["total_steps"] == 400
    tests = back["tests"]
    assert len(tests) == sched.switch_step // 10
    for i, rec in enumerate(tests):
        for key in ("epoch", "step", "probs", "argmin_x", "candidate_lr", "positive", "switched", "hyper",
                    "grid_x", "grid_mean", "grid_std", "n_points", "n_finite", "lr_now"):
            assert key in rec, key
        assert rec["epoch"] == i + 1 and rec["step"] == 10 * (i + 1)
        assert len(rec["probs"]) == len(rec["argmin_x"]) == 5
        assert 45 <= len(rec["grid_x"]) <= 55
        assert len(rec["grid_mean"]) == len(rec["grid_std"]) == len(rec["grid_x"])
        assert set(rec["hyper"]) >= {"mean", "noise", "outputscale", "lengthscale"}
        assert rec["n_points"] == 10 * (i + 1)
        assert INIT_LR <= rec["candidate_lr"] <= rec["lr_now"] * (1 + 1e-12)
    assert tests[-1]["switched"] and not any(r["switched"] for r in tests[:-1])


def test_summary_with_nan_losses_serialises():
    sched = make(10, 20)
    drive(sched, lambda s, lr: math.nan if s % 3 == 0 else 1.0)
    json.loads(json.dumps(sched.summary()))


# -- DDP -------------------------------------------------------------------------------------

_DDP = {"spe": 10, "epochs": 40, "best": 1e-2, "noise": 0.1, "seed": 30}


def _ddp_rank_loss(step, lr, rank):
    return model_loss(lr, _DDP["best"]) + _DDP["noise"] * noise_at(_DDP["seed"], step, rank)


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        sched = make(_DDP["spe"], _DDP["epochs"])
        lrs = drive(sched, lambda s, lr: _ddp_rank_loss(s, lr, rank),
                    wrap=lambda v: torch.tensor(v, dtype=torch.float64))
        out = {"lrs": lrs, "history": sched.history, "switch": [sched.switch_step, sched.switch_lr,
                                                                sched.switch_kind],
               "losses": sched.warmup_losses, "gp_state": sched.state_dict()["gp_state"],
               "rng_state": sched.state_dict()["rng_state"]}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)  # two spawned processes import torch: minutes on a loaded 2-core machine
def test_ddp_ranks_agree_and_match_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2))
    assert r0["lrs"] == r1["lrs"]
    assert r0["switch"] == r1["switch"] and r0["switch"][2] == "test"
    assert r0["history"] == r1["history"]
    assert r0["losses"] == r1["losses"] and r0["gp_state"] == r1["gp_state"]
    assert r0["rng_state"] == r1["rng_state"]  # rank 0 drew the subsamples; rank 1 got its state
    # one process fed the rank average takes the same decisions
    single = make(_DDP["spe"], _DDP["epochs"])
    lrs = drive(single, lambda s, lr: (_ddp_rank_loss(s, lr, 0) + _ddp_rank_loss(s, lr, 1)) / 2)
    assert single.warmup_losses == r0["losses"]
    assert [single.switch_step, single.switch_lr, single.switch_kind] == r0["switch"]
    assert lrs == r0["lrs"]
    assert without_timing(single.history) == without_timing(r0["history"])
    assert json.loads(json.dumps(single.state_dict()["rng_state"])) == r0["rng_state"]
    assert single.state_dict()["rng_state"] != np.random.default_rng(0).bit_generator.state
    assert 1e-2 / 1.5 < single.switch_lr < 1e-2 * 1.5


# -- the oracle path -------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_oracle_path_takes_the_same_switch():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = {}
        for path in ("fast", "oracle"):
            sched = make(10, 20, gp_path=path)
            drive(sched, synthetic_loss(2e-4, noise=0.05, seed=3), steps=70)
            runs[path] = sched
    finally:
        torch.set_num_threads(before)
    fast, oracle = runs["fast"], runs["oracle"]
    assert fast.switch_kind == oracle.switch_kind == "test"
    assert oracle.switch_step == fast.switch_step
    assert len(oracle.history) <= 6
    assert oracle.switch_lr == pytest.approx(fast.switch_lr, rel=0.05)
    threshold = fast.gp.confidence
    for f, o in zip(fast.history, oracle.history, strict=True):
        near = [abs(p - threshold) <= 0.01 or abs(q - threshold) <= 0.01
                for p, q in zip(f["probs"], o["probs"], strict=True)]
        for p, q, close in zip(f["probs"], o["probs"], near, strict=True):
            assert close or abs(p - q) <= 0.01
        assert f["positive"] == o["positive"] or any(near)
        assert f["candidate_lr"] == pytest.approx(o["candidate_lr"], rel=0.05)


# -- PyTorch's scheduler contract, refused states, overflow (issue 12) --------------------------


def test_is_a_torch_lr_scheduler_without_a_first_step():
    sched = make(10, 40, lrs=(1.0, 0.1))
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert sched.base_lrs == [1.0, 0.1]
    assert sched.last_epoch == 0 and sched.get_last_lr() == [INIT_LR, INIT_LR * 0.1]
    assert sched.losses == [] and not sched._epoch_losses  # construction took no step and no loss
    sched.step(1.0)
    assert sched.last_epoch == 1 and sched.get_lr() == sched.get_last_lr()


def test_tensor_lr_is_updated_in_place():
    ref = make(10, 40)
    ref_lrs = drive(ref, synthetic_loss(1e-2, seed=3))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=torch.tensor(1.0, dtype=torch.float64))
    sched = AutoWU(opt, 10, 40)
    lr_tensor = opt.param_groups[0]["lr"]
    loss = synthetic_loss(1e-2, seed=3)
    got = [lr_tensor.item()]
    for s in range(sched.total_steps):
        sched.step(loss(s, lr_tensor.item()) if sched.phase == "warmup" else None)
        assert opt.param_groups[0]["lr"] is lr_tensor
        got.append(lr_tensor.item())
    assert got == ref_lrs and sched.switch_step == ref.switch_step


def test_state_loads_with_weights_only(reference_run):
    ref, _ = reference_run
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    fresh = make(_SPE, _EPOCHS)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert fresh.state_dict() == ref.state_dict()


def _mid_warmup(steps=2 * _SPE + 7, lrs=(1.0,)):
    sched = make(_SPE, _EPOCHS, lrs=lrs)
    drive(sched, _LOSS, steps=steps)
    return sched


def _broken_states():
    good = _mid_warmup(steps=5 * _SPE + 3).state_dict()
    yield "gp_state", {**good, "gp_state": {"raw": [0.0, 0.0, 0.0]}}
    yield "rng_state", {**good, "rng_state": {"bit_generator": "MT19937"}}
    yield "history", {**good, "history": 3}
    yield "losses", {**good, "losses": ["x"]}
    yield "pending_losses", {**good, "pending_losses": None}
    yield "switch", {**good, "phase": "decay"}
    yield "no switch_kind", {k: v for k, v in good.items() if k != "switch_kind"}
    yield "step", {**good, "last_step": good["total_steps"] + 1}
    yield "groups", _mid_warmup(lrs=(1.0, 0.1)).state_dict()
    yield "settings", make(_SPE, _EPOCHS, patience=5).state_dict()
    yield "baseline", {k: v for k, v in good.items() if k != "phase"}


@pytest.mark.parametrize("what", [w for w, _ in _broken_states()])
def test_refused_state_loads_nothing(what):
    state = dict(_broken_states())[what]
    sched = _mid_warmup()
    before = json.dumps(sched.state_dict(), sort_keys=True)
    lr_before = sched.optimizer.param_groups[0]["lr"]
    with pytest.raises(ValueError):
        sched.load_state_dict(state)
    assert json.dumps(sched.state_dict(), sort_keys=True) == before
    assert sched.optimizer.param_groups[0]["lr"] == lr_before
    # and it goes on exactly as one that was never asked to load
    twin = _mid_warmup()
    start = sched.last_step
    assert drive(sched, _LOSS, start=start) == drive(twin, _LOSS, start=start)


@pytest.mark.parametrize("kwargs", [{"init_lr": 1e-300, "max_lr": 1e300}, {"init_lr": 5e-324, "max_lr": 1.0}])
def test_overflowing_warmup_path_raises(kwargs):
    with pytest.raises(ValueError, match="overflows"):
        make(10, 40, **kwargs)

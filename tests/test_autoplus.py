"""AutoWU+ (``autolr.autoplus``): the short ramp, the step-clock test, the candidate read off the
loss curve, the forced switch at a candidate, and the library's promises (state, groups, DDP-free
decisions, records).

Losses are synthetic functions of the LR in use at each step with a known best LR η*:
loss(η) = 1 + a·d²·(4 if d > 0 else 1), d = log10 η − log10 η*, plus seeded per-step noise.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from autolr import build_scheduler
from autolr.autoplus import AutoWUPlus, smoothed_argmin
from autolr.autowu import AutoWU


def make(spe=10, epochs=30, lrs=(1.0,), **kw) -> AutoWUPlus:
    # the mechanisms one at a time: the plain ramp (no speed-up, no bound), no rollback, and the
    # candidate unscaled, since the synthetic losses below follow the LR with no lag, so their minimum
    # is the best LR itself. Tests of a mechanism turn it on; the defaults have tests of their own.
    for key, plain in (("lr_factor", 1.0), ("accel", 1.0), ("max_growth", 0), ("rollback", False)):
        kw.setdefault(key, plain)
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return AutoWUPlus(torch.optim.SGD(groups, lr=lrs[0]), spe, epochs, **kw)


def model_loss(lr: float, best_lr: float, a: float = 0.5, right: float = 4.0) -> float:
    d = math.log10(lr) - math.log10(best_lr)
    return 1.0 + a * d * d * (right if d > 0 else 1.0)


def drive(s: AutoWUPlus, best_lr: float = 0.01, noise: float = 0.02, seed: int = 0, until_switch: bool = False):
    lrs = []
    for step in range(s.total_steps):
        lr = s.get_last_lr()[0]
        lrs.append(lr)
        eps = float(np.random.default_rng([seed, step]).standard_normal())
        s.step(model_loss(lr, best_lr) + noise * eps)
        if until_switch and s.phase == "decay":
            break
    return lrs


# -- the candidate ---------------------------------------------------------------------------


def test_smoothed_argmin_finds_a_known_minimum_under_noise():
    rng = np.random.default_rng(0)
    x = np.arange(400)
    losses = (x - 250.0) ** 2 / 1e4 + 0.3 * rng.standard_normal(400)
    assert abs(smoothed_argmin(losses, 41) - 250) <= 15


def test_smoothed_argmin_skips_nan_and_short_histories():
    losses = np.array([3.0, np.nan, 2.0, 1.0, 0.5, np.nan, 4.0])
    assert smoothed_argmin(losses, 3) == 4  # the window (1.0, 0.5, NaN) averages its two finite values
    assert smoothed_argmin(np.array([2.0, 1.0]), 5) == 1  # shorter than a window: raw minimum
    assert smoothed_argmin(np.array([np.nan, np.nan]), 3) is None


# -- the schedule ----------------------------------------------------------------------------


@pytest.mark.parametrize("spe", [214, 53, 13, 3, 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_switch_near_the_known_best_lr_early_in_the_budget(spe, seed):
    s = make(spe=spe, epochs=30)
    drive(s, best_lr=0.01, seed=seed, until_switch=True)
    assert s.switch_kind == "test"
    assert 0.5 < s.switch_lr / 0.01 < 2.0
    # the ramp reaches η* at 3/5 of 25% of the budget; patience and the clock add a few percent
    assert s.switch_step <= 0.25 * s.total_steps


def test_warmup_path_is_the_exponential_ramp_over_ramp_fraction():
    s = make(spe=20, epochs=10, ramp_fraction=0.2)
    m = s.max_warmup_steps
    assert m == 40
    lrs = drive(s, best_lr=10.0)  # the minimum lies beyond max_lr: the loss falls all the way
    for step in (0, 7, 23, 39):
        assert lrs[step] == pytest.approx(1e-5 * (1.0 / 1e-5) ** (step / m), rel=1e-12)


def test_decay_is_cosine_from_the_switch_to_zero():
    s = make(spe=13, epochs=30)
    lrs = drive(s, best_lr=0.01)
    sw, peak, t = s.switch_step, s.switch_lr, s.total_steps
    for step in range(sw, t, 17):
        assert lrs[step] == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi * (step - sw) / (t - sw))), rel=1e-12)


def test_tests_run_on_a_step_clock_not_per_epoch():
    s = make(spe=500, epochs=4, test_fraction=0.01)  # T = 2000: a test every 20 steps
    assert s.test_every == 20
    drive(s, best_lr=10.0)
    steps = [r["step"] for r in s.history]
    assert steps[:3] == [s.min_test_points, s.min_test_points + 20, s.min_test_points + 40]
    assert all(b - a == 20 for a, b in zip(steps[:-2], steps[1:-1], strict=True))


def test_forced_switch_uses_the_candidate_not_the_current_lr():
    # neither the test (patience) nor the guard switches: the cap forces it, at the curve's minimum
    s = make(spe=3, epochs=30, patience=1000, div_factor=None)
    drive(s, best_lr=0.01, until_switch=True)
    assert s.switch_kind == "forced"
    assert s.switch_step == s.max_warmup_steps
    lr_now = 1e-5 * (1.0 / 1e-5) ** ((s.switch_step - 1) / s.max_warmup_steps)
    assert lr_now > 0.5
    assert 0.3 < s.switch_lr / 0.01 < 3.0


@pytest.mark.parametrize("spe,epochs", [(2, 10), (3, 10), (2, 30), (5, 10)])
def test_short_budgets_with_few_steps_per_epoch_get_a_candidate_based_switch(spe, epochs):
    s = make(spe=spe, epochs=epochs)
    drive(s, best_lr=0.01, noise=0.01)
    assert s.switch_step is not None and s.switch_step <= s.max_warmup_steps
    assert 0.2 < s.switch_lr / 0.01 < 5.0, (s.switch_kind, s.switch_lr)


def test_guard_switches_at_once_when_the_loss_blows_up():
    # a cliff: fine until 0.03, then the loss explodes; the GP's patience would take 3 more tests
    def cliff(lr):
        return 2.0 - 0.1 * math.log10(lr) if lr < 0.03 else 50.0

    s = make(spe=3, epochs=30, patience=1000)
    for _ in range(s.total_steps):
        lr = s.get_last_lr()[0]
        s.step(cliff(lr))
        if s.phase == "decay":
            break
    assert s.switch_kind == "guard"
    assert s.history[-1]["guard"] and s.history[-1]["switched"]
    assert s.switch_lr < 0.03
    off = make(spe=3, epochs=30, patience=1000, div_factor=None)
    for _ in range(off.total_steps):
        off.step(cliff(off.get_last_lr()[0]))
    assert off.switch_kind == "forced"


def test_gp_candidate_and_lr_factor():
    a = make(spe=13, epochs=30, candidate="gp")
    drive(a, until_switch=True)
    rec = a.history[-1]
    assert rec["candidate_lr"] == rec["gp_candidate_lr"]
    b = make(spe=13, epochs=30, lr_factor=0.5)
    drive(b, until_switch=True)
    rec = b.history[-1]
    assert rec["candidate_lr"] == pytest.approx(0.5 * rec["smoothed_candidate_lr"])
    assert b.switch_lr == pytest.approx(rec["candidate_lr"])


def test_nan_losses_keep_their_slot_and_do_not_break_the_switch():
    s = make(spe=13, epochs=30)
    for step in range(s.total_steps):
        lr = s.get_last_lr()[0]
        s.step(float("nan") if step % 7 == 3 else model_loss(lr, 0.01))
    assert s.switch_step is not None and 0.3 < s.switch_lr / 0.01 < 3
    assert sum(math.isnan(v) for v in s.losses) >= 1


def test_state_dict_round_trip_resumes_exactly():
    ref = make(spe=13, epochs=30)
    ref_lrs = drive(ref)
    for cut in (5, 31, 57, 200):
        a = make(spe=13, epochs=30)
        lrs = []
        for step in range(cut):
            lr = a.get_last_lr()[0]
            lrs.append(lr)
            a.step(model_loss(lr, 0.01) + 0.02 * float(np.random.default_rng([0, step]).standard_normal()))
        state = json.loads(json.dumps(a.state_dict()))
        b = make(spe=13, epochs=30)
        b.load_state_dict(state)
        for step in range(cut, b.total_steps):
            lr = b.get_last_lr()[0]
            lrs.append(lr)
            b.step(model_loss(lr, 0.01) + 0.02 * float(np.random.default_rng([0, step]).standard_normal()))
        assert lrs == ref_lrs
        assert b.switch_step == ref.switch_step and b.switch_lr == ref.switch_lr


def test_state_of_another_configuration_is_refused():
    a = make(spe=13, epochs=30)
    drive(a, until_switch=True)
    b = make(spe=13, epochs=30, ramp_fraction=0.3)
    with pytest.raises(ValueError, match="state has"):
        b.load_state_dict(a.state_dict())


def test_parameter_groups_keep_their_ratio():
    s = make(spe=13, epochs=30, lrs=(1.0, 0.1))
    for _ in range(s.total_steps):
        a, b = s.get_last_lr()
        assert b == pytest.approx(0.1 * a, rel=1e-12)
        s.step(model_loss(a, 0.01))


def test_summary_is_json_ready_and_names_the_method():
    s = make(spe=13, epochs=30)
    drive(s)
    out = json.loads(json.dumps(s.summary()))
    assert out["config"]["name"] == "autoplus"
    assert out["switch_kind"] in ("test", "forced")
    assert {"gp_candidate_lr", "smoothed_candidate_lr", "smoothed_argmin_step"} <= set(out["tests"][0])


def test_tensor_losses_need_no_host_sync_between_tests():
    s = make(spe=50, epochs=10)  # a test every 5 steps from step 8
    for _ in range(7):
        s.step(torch.tensor(2.0))
    assert len(s._epoch_losses) == 7 and not s.losses  # still buffered as tensors


@pytest.mark.parametrize("kwargs", [
    {"ramp_fraction": 0.0}, {"ramp_fraction": 1.5}, {"test_fraction": 0.0}, {"candidate": "median"},
    {"smooth_fraction": 0.0}, {"lr_factor": -1.0}, {"min_test_points": 0}, {"max_warmup_fraction": 0.5},
    {"div_factor": 1.0}, {"div_factor": float("nan")},
])
def test_invalid_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


def test_factory_builds_it_and_reference_autowu_is_unchanged():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    s = build_scheduler("autoplus", opt, steps_per_epoch=13, total_epochs=30, batch_size=4096)
    assert isinstance(s, AutoWUPlus)
    ref = build_scheduler("auto", opt, steps_per_epoch=13, total_epochs=30, batch_size=4096)
    assert type(ref) is AutoWU and ref.max_warmup_steps == 195


# -- rollback and the accelerated ramp -----------------------------------------------------------


def _cliff_model(seed: int = 0):
    """A weight vector trained with Adam on a quadratic whose loss explodes once the LR passes 0.05
    (its gradient is amplified there), so the weights at the loss minimum are known."""
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.full((4,), 3.0))
    return w, torch.optim.Adam([w], lr=1.0)


def _train(s, w, opt, steps, record=None):
    for _ in range(steps):
        lr = s.get_last_lr()[0]
        loss = (w ** 2).sum() * (1.0 if lr < 0.05 else 1.0 + 100 * lr)
        opt.zero_grad()
        loss.backward()
        if lr >= 0.05:
            w.grad.mul_(-50.0)  # past the edge: the step pushes the weights away
        opt.step()
        if record is not None:
            record.append(w.detach().clone())  # the weights after this step, before any rollback
        s.step(loss.detach())
        if s.phase == "decay":
            return


def test_rollback_restores_the_weights_at_the_loss_minimum():
    w, opt = _cliff_model()
    s = AutoWUPlus(opt, 4, 30, rollback=True, patience=1000)
    trail = []
    _train(s, w, opt, s.total_steps, trail)
    assert s.switch_kind == "guard" and s.rollback_step is not None
    # after the switch the weights are the ones after step rollback_step, not the blown-up ones
    assert torch.equal(w.detach(), trail[s.rollback_step - 1])
    assert not torch.equal(w.detach(), trail[-1])
    assert s.rollback_step <= s.history[-1]["smoothed_argmin_step"]  # weights evaluated at or before the minimum
    assert s.history[-1]["rollback_to_step"] == s.rollback_step
    assert s._snapshots == []  # memory released after the switch


def test_without_rollback_the_weights_stay_where_the_ramp_left_them():
    w, opt = _cliff_model()
    s = AutoWUPlus(opt, 4, 30, patience=1000, rollback=False)
    trail = []
    _train(s, w, opt, s.total_steps, trail)
    assert s.switch_kind == "guard" and s.rollback_step is None
    assert torch.equal(w.detach(), trail[-1])


def test_rollback_state_resumes_exactly_through_torch_save(tmp_path):
    import io

    w, opt = _cliff_model()
    ref = AutoWUPlus(opt, 4, 30, rollback=True, patience=1000, accel=1.0)
    _train(ref, w, opt, 200)
    w_ref = w.detach().clone()

    w, opt = _cliff_model()
    a = AutoWUPlus(opt, 4, 30, rollback=True, patience=1000, accel=1.0)
    _train(a, w, opt, 10)  # mid-ramp (the plain ramp: the fast one reaches the cliff by then), snapshots held
    assert a.phase == "warmup" and a._snapshots
    buf = io.BytesIO()
    torch.save({"sched": a.state_dict(), "opt": opt.state_dict(), "w": w.detach().clone()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    w2 = torch.nn.Parameter(saved["w"].clone())
    opt2 = torch.optim.Adam([w2], lr=1.0)
    opt2.load_state_dict(saved["opt"])
    b = AutoWUPlus(opt2, 4, 30, rollback=True, patience=1000, accel=1.0)
    b.load_state_dict(saved["sched"])
    _train(b, w2, opt2, 190)
    assert b.switch_step == ref.switch_step and b.rollback_step == ref.rollback_step
    assert torch.equal(w2.detach(), w_ref)


def test_accelerated_ramp_climbs_faster_while_the_loss_is_flat():
    def flat_then_bowl(lr):  # flat below 1e-3, then the usual bowl around 0.01
        return 2.0 if lr < 1e-3 else model_loss(lr, 0.01)

    runs = {}
    for accel in (1.0, 3.0):
        s = make(spe=4, epochs=30, accel=accel)
        lrs = []
        for _ in range(s.total_steps):
            lr = s.get_last_lr()[0]
            lrs.append(lr)
            s.step(flat_then_bowl(lr))
            if s.phase == "decay":
                break
        runs[accel] = (s, lrs)
    plain, fast = runs[1.0][0], runs[3.0][0]
    assert fast.switch_step < plain.switch_step
    assert 0.3 < fast.switch_lr / 0.01 < 3.0
    assert fast.ramp_slowed_step is not None and plain.ramp_slowed_step is None
    # the plain ramp is AutoWU's exponential path, step for step
    for step, lr in enumerate(runs[1.0][1][: plain.max_warmup_steps]):
        assert lr == pytest.approx(1e-5 * (1.0 / 1e-5) ** (step / plain.max_warmup_steps), rel=1e-9)


@pytest.mark.parametrize("kwargs", [{"rollback": 1}, {"accel": 0.5}, {"flat_tol": 0.0}, {"flat_tol": 1.0}])
def test_invalid_rollback_and_accel_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


def test_a_guard_switch_resumes_from_its_state():
    # the guard is a switch of AutoWU+'s own: a checkpoint taken after it must load (AutoWU's
    # state check knew only "test" and "forced")
    def cliff(lr):
        return 2.0 - 0.1 * math.log10(lr) if lr < 0.03 else 50.0

    a = make(spe=3, epochs=30, patience=1000)
    while a.phase == "warmup":
        a.step(cliff(a.get_last_lr()[0]))
    assert a.switch_kind == "guard"
    b = make(spe=3, epochs=30, patience=1000)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert (b.switch_kind, b.switch_step, b.switch_lr) == (a.switch_kind, a.switch_step, a.switch_lr)
    for _ in range(10):
        a.step(1.0)
        b.step(1.0)
    assert a.get_last_lr() == b.get_last_lr()
    # a plain AutoWU refuses a state that says "guard"
    state = AutoWU(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 3, 30).state_dict()
    state.update(phase="decay", switch_step=5, switch_lr=0.01, switch_kind="guard")
    with pytest.raises(ValueError, match="inconsistent switch"):
        AutoWU(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 3, 30).load_state_dict(state)


# -- few steps: the bounded ramp, flatness from the third step, rollback at a forced switch --------


def _ramp_lrs(s: AutoWUPlus, loss_of_lr) -> list[float]:
    lrs = []
    while s.phase == "warmup" and s.last_step < s.total_steps:
        lr = s.get_last_lr()[0]
        lrs.append(lr)
        s.step(loss_of_lr(lr))
    return lrs


@pytest.mark.parametrize("spe, epochs", [(2, 30), (3, 30), (4, 30)])
def test_max_growth_bounds_the_ramp_per_step_whatever_the_budget(spe, epochs):
    def flat_then_bowl(lr):  # nothing moves below 1e-3, then a bowl around 0.05
        return 3.0 if lr < 1e-3 else model_loss(lr, 0.05)

    s = make(spe=spe, epochs=epochs, accel=3.0, max_growth=1.5)
    lrs = _ramp_lrs(s, flat_then_bowl)
    ratios = [b / a for a, b in zip(lrs[:-1], lrs[1:], strict=True)]
    budget = (1.0 / 1e-5) ** (1.0 / math.floor(0.25 * s.total_steps))  # the budget's pace: 1e-5 to 1 in 25% of T
    if budget > 1.5:  # slowed by the bound, the cap moves out to where the ramp reaches max_lr (<= T/2)
        assert s.max_warmup_steps == min(s.total_steps // 2, math.ceil(math.log(1e5) / math.log(1.5)))
    assert max(ratios) == pytest.approx(min(budget, 1.5) ** 3)
    slowed = s.ramp_slowed_step
    assert slowed is not None and slowed < s.min_test_points  # seen before the first test
    assert all(r <= 1.5 * (1 + 1e-9) for r in ratios[slowed:])  # the normal pace after it
    # unbounded, the same budget climbs at its own pace
    u = make(spe=spe, epochs=epochs, accel=3.0)
    unbounded = _ramp_lrs(u, flat_then_bowl)
    assert max(b / a for a, b in zip(unbounded[:-1], unbounded[1:], strict=True)) == pytest.approx(budget ** 3)


def test_max_growth_does_not_touch_a_ramp_slower_than_the_bound():
    a, b = make(spe=40, epochs=30, max_growth=1.5), make(spe=40, epochs=30)
    assert drive(a) == drive(b)


def test_a_forced_switch_rolls_back_too():
    w, opt = _cliff_model()
    # no guard, and a patience no test reaches: only the cap can end the warmup
    s = AutoWUPlus(opt, 2, 30, rollback=True, patience=1000, div_factor=None, max_growth=2.0)
    trail = []
    _train(s, w, opt, s.total_steps, trail)
    assert s.switch_kind == "forced" and s.rollback_step is not None
    assert torch.equal(w.detach(), trail[s.rollback_step - 1])
    assert s.rollback_step <= s.history[-1]["smoothed_argmin_step"]
    assert s.switch_lr == s.history[-1]["candidate_lr"]


@pytest.mark.parametrize("kwargs", [{"max_growth": 1.0}, {"max_growth": -2.0}, {"max_growth": float("nan")}])
def test_invalid_max_growth_raises(kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


@pytest.mark.parametrize("spe, epochs", [(214, 30), (13, 30), (3, 30), (2, 30), (3, 10)])
def test_the_defaults_switch_at_half_the_lr_of_the_minimum_within_the_ramp(spe, epochs):
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 1.0}]
    s = AutoWUPlus(torch.optim.SGD(groups, lr=1.0), spe, epochs)  # every default
    assert (s.rollback, s.accel, s.max_growth, s.lr_factor) == (True, 3.0, 1.5, 0.5)
    lrs = drive(s, best_lr=0.01, until_switch=True)
    assert s.switch_step <= s.max_warmup_steps
    assert s.switch_lr == pytest.approx(0.5 * s.history[-1]["smoothed_candidate_lr"])
    assert 0.25 < s.switch_lr / 0.01 < 1.0  # half the LR of a minimum found within a factor 2
    assert max(b / a for a, b in zip(lrs[:-1], lrs[1:], strict=True)) <= 1.5 ** 3 * (1 + 1e-9)


@pytest.mark.parametrize("spe, epochs", [(2, 10), (3, 10), (2, 20)])
def test_a_budget_too_short_for_the_whole_range_starts_the_ramp_higher(spe, epochs):
    def flat_then_bowl(lr):  # nothing moves below 1e-3, then a bowl around 0.05
        return 3.0 if lr < 1e-3 else model_loss(lr, 0.05)

    s = make(spe=spe, epochs=epochs, max_growth=1.5)
    cap = s.total_steps // 2
    assert s.max_warmup_steps == cap
    assert s.ramp_start_lr == pytest.approx(1.0 / 1.5 ** cap) and s.get_last_lr()[0] == pytest.approx(s.ramp_start_lr)
    lrs = _ramp_lrs(s, flat_then_bowl)
    assert lrs[0] == pytest.approx(s.ramp_start_lr)
    assert s.switch_kind in ("test", "guard", "forced") and 0.25 < s.switch_lr / 0.05 < 4.0


def test_a_short_ramp_keeps_snapshots_before_the_first_test():
    # 30 steps: the ramp starts high (0.0023), runs at the normal pace, and reaches the cliff (LR 0.05)
    # by the first test at step 8; the rollback still finds weights from before it
    w, opt = _cliff_model()
    s = AutoWUPlus(opt, 3, 10, patience=1000)  # every default: rollback on
    assert s.ramp_start_lr > 1e-5 and not s._fast
    trail = []
    _train(s, w, opt, s.total_steps, trail)
    assert s.rollback_step is not None and s.rollback_step < s.min_test_points
    assert torch.equal(w.detach(), trail[s.rollback_step - 1])
    # a budget that covers the range keeps init_lr
    assert make(spe=2, epochs=30, max_growth=1.5).ramp_start_lr == pytest.approx(1e-5)


@pytest.mark.parametrize("spe, epochs, fast", [(2, 10, False), (3, 10, False), (4, 10, True), (5, 10, True),
                                               (2, 30, True)])
def test_the_fast_pace_is_kept_where_the_raised_start_is_still_far_below_max_lr(spe, epochs, fast):
    s = AutoWUPlus(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), spe, epochs)
    assert s._fast is fast
    assert (s.ramp_start_lr < 1e-3) is fast

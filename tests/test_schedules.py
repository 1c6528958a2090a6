"""Unit tests for the baseline LR schedules in ``autolr.schedules``.

Expected values are computed here, independently, from the formulas of the spec
(shared/REPRODUCTION.md, "Schedulers compared") and the ``WarmupCosine`` docstring:

    lr(s) = peak · (s + 1) / W                          for s < W
    lr(s) = peak · ½(1 + cos(π (s − W) / (T − W)))      for W ≤ s ≤ T

with T = steps_per_epoch · total_epochs and W = round(warmup_epochs · steps_per_epoch).
"""

from __future__ import annotations

import copy
import io
import json
import math

import pytest
import torch

from autolr import build_scheduler

BATCH_SIZES = (256, 1024, 4096, 16384)
STEPS_PER_EPOCH = (1, 3, 7)
TOTAL_EPOCHS = 12
BASE_LR = 0.1
B0 = 256
W0 = 1.0  # legw base warmup epochs at B0
REL = 1e-12


# -- helpers ---------------------------------------------------------------------------------


def make_optimizer(lrs=(1.0,)) -> torch.optim.SGD:
    """A tiny SGD optimizer; one parameter group per entry of ``lrs`` (at most two)."""
    model = torch.nn.Linear(2, 2)
    params = [model.weight, model.bias]
    if len(lrs) == 1:
        return torch.optim.SGD(params, lr=lrs[0])
    assert len(lrs) == 2
    return torch.optim.SGD([{"params": [model.weight], "lr": lrs[0]},
                            {"params": [model.bias], "lr": lrs[1]}], lr=lrs[0])


def build(name, *, spe, epochs=TOTAL_EPOCHS, batch=256, lr=BASE_LR, lrs=(1.0,), **kw):
    return build_scheduler(name, make_optimizer(lrs), steps_per_epoch=spe, total_epochs=epochs,
                           batch_size=batch, lr=lr, **kw)


def run_all(sched, total_steps: int) -> list[float]:
    """First-group LR at steps 0..T (T included: the value written after the last step)."""
    lrs = [sched.get_last_lr()[0]]
    for _ in range(total_steps):
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    return lrs


def expected_lr(step: int, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def expected_warmup_steps(name: str, spe: int, batch: int, epochs: int = TOTAL_EPOCHS) -> int:
    if name in ("linear", "fixed"):
        return round(5.0 * spe)
    if name == "legw":
        return round(min(W0 * batch / B0, epochs / 2) * spe)
    return 0  # cosine


def expected_peak(name: str, batch: int) -> float:
    if name == "linear":
        return BASE_LR * batch / 256
    if name == "legw":
        return BASE_LR * math.sqrt(batch / B0)
    return BASE_LR  # fixed, cosine, constant


def build_named(name: str, spe: int, batch: int, lrs=(1.0,), epochs: int = TOTAL_EPOCHS):
    kw = {"legw_b0": B0, "warmup_epochs": W0} if name == "legw" else {}
    return build(name, spe=spe, batch=batch, lrs=lrs, epochs=epochs, **kw)


def key_steps(warmup: int, total: int) -> list[int]:
    """Step 0, mid-warmup, last warmup step, first decay step, middle of decay, last step."""
    steps = {0, total - 1, warmup, (warmup + total) // 2}
    if warmup > 0:
        steps |= {warmup // 2, warmup - 1}
    return sorted(steps)


WARMUP_COSINE = ("linear", "legw", "fixed", "cosine")


# -- the formulas ----------------------------------------------------------------------------


@pytest.mark.parametrize("spe", STEPS_PER_EPOCH)
@pytest.mark.parametrize("batch", BATCH_SIZES)
@pytest.mark.parametrize("name", WARMUP_COSINE)
def test_warmup_cosine_matches_formula(name, batch, spe):
    total = spe * TOTAL_EPOCHS
    peak = expected_peak(name, batch)
    warmup = expected_warmup_steps(name, spe, batch)
    sched = build_named(name, spe, batch)

    desc = sched.describe()
    assert desc["total_steps"] == total
    assert desc["warmup_steps"] == warmup
    assert desc["peak_lr"] == pytest.approx(peak, rel=REL)

    lrs = run_all(sched, total)
    for s in key_steps(warmup, total):
        assert lrs[s] == pytest.approx(expected_lr(s, peak, warmup, total), rel=REL), f"step {s}"
    for s, lr in enumerate(lrs):
        assert lr == pytest.approx(expected_lr(s, peak, warmup, total), rel=REL, abs=1e-15), f"step {s}"
    if warmup > 0:
        assert lrs[0] == pytest.approx(peak / warmup, rel=REL)
        assert lrs[warmup - 1] == pytest.approx(peak, rel=REL)
    assert lrs[warmup] == pytest.approx(peak, rel=REL)

    # ~0 only at step T: positive before, never negative, peak is the maximum
    assert abs(lrs[total]) <= 1e-12 * peak
    assert lrs[total - 1] > 0
    assert all(lr > 0 for lr in lrs[:total])
    assert all(lr >= 0 for lr in lrs)
    assert max(lrs) == pytest.approx(peak, rel=REL)
    # warmup is non-decreasing, decay is non-increasing (up to float rounding: peak·W/W may be
    # one ulp off peak)
    tol = 1e-12 * peak
    assert all(a <= b + tol for a, b in zip(lrs[:warmup], lrs[1:warmup + 1], strict=True))
    assert all(a + tol >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:], strict=False))


def test_linear_hand_computed_values():
    # lr 0.1 per 256 at B=1024 -> peak 0.4; 3 steps/epoch, 12 epochs -> T=36, W=15
    sched = build("linear", spe=3, batch=1024)
    lrs = run_all(sched, 36)
    assert lrs[0] == pytest.approx(0.4 / 15, rel=REL)
    assert lrs[7] == pytest.approx(0.4 * 8 / 15, rel=REL)
    assert lrs[14] == pytest.approx(0.4, rel=REL)
    assert lrs[15] == pytest.approx(0.4, rel=REL)
    # T - W = 21; step 15 + 7 is a third of the way through the decay: ½(1 + cos(π/3)) = 0.75
    assert lrs[22] == pytest.approx(0.4 * 0.75, rel=REL)
    assert lrs[35] == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 20 / 21)), rel=REL)
    assert lrs[36] == pytest.approx(0.0, abs=1e-15)


def test_cosine_hand_computed_values():
    # no warmup: T = 8 steps, halfway at step 4
    sched = build("cosine", spe=1, epochs=8, lr=0.2)
    lrs = run_all(sched, 8)
    assert lrs[0] == pytest.approx(0.2, rel=REL)
    assert lrs[4] == pytest.approx(0.1, rel=REL)
    assert lrs[2] == pytest.approx(0.2 * 0.5 * (1 + math.sqrt(0.5)), rel=REL)
    assert lrs[7] > 0
    assert lrs[8] == pytest.approx(0.0, abs=1e-15)
    assert sched.describe()["warmup_steps"] == 0


@pytest.mark.parametrize("spe", STEPS_PER_EPOCH)
def test_linear_default_warmup_is_five_epochs(spe):
    sched = build("linear", spe=spe, batch=4096)
    assert sched.describe()["warmup_steps"] == 5 * spe
    assert sched.describe()["warmup_epochs"] == 5.0
    assert sched.describe()["peak_lr"] == pytest.approx(BASE_LR * 16, rel=REL)


def test_linear_and_fixed_explicit_warmup_rounds_epochs_to_steps():
    # 1.5 epochs * 3 steps = 4.5 -> round() -> 4 ; 2.4 * 3 = 7.2 -> 7
    assert build("linear", spe=3, warmup_epochs=1.5).describe()["warmup_steps"] == round(1.5 * 3)
    assert build("fixed", spe=3, warmup_epochs=2.4).describe()["warmup_steps"] == 7
    assert build("fixed", spe=3, warmup_epochs=0).describe()["warmup_steps"] == 0
    # rounded, not truncated: 0.9 * 3 = 2.7 -> 3 ; legw 1.3 * 512 / 256 = 2.6 epochs * 3 = 7.8 -> 8
    assert build("fixed", spe=3, warmup_epochs=0.9).describe()["warmup_steps"] == 3
    assert build("legw", spe=3, batch=512, legw_b0=256, warmup_epochs=1.3).describe()["warmup_steps"] == 8


def test_fixed_peak_is_lr_regardless_of_batch():
    for batch in BATCH_SIZES:
        sched = build("fixed", spe=3, batch=batch, lr=0.05)
        lrs = run_all(sched, 36)
        assert max(lrs) == pytest.approx(0.05, rel=REL)
        assert lrs[14] == pytest.approx(0.05, rel=REL)
        assert sched.describe()["warmup_steps"] == 15


@pytest.mark.parametrize("spe", STEPS_PER_EPOCH)
@pytest.mark.parametrize("batch", BATCH_SIZES)
def test_constant_is_constant(batch, spe):
    total = spe * TOTAL_EPOCHS
    sched = build("constant", spe=spe, batch=batch, lr=0.3)
    lrs = run_all(sched, total)
    assert all(lr == pytest.approx(0.3, rel=REL) for lr in lrs)
    assert sched.describe()["lr"] == 0.3
    assert sched.describe()["total_steps"] == total


# -- legw ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "epochs", "capped"), [
    (256, 1.0, False),     # w0 * 1
    (1024, 4.0, False),    # w0 * 4
    (4096, 6.0, True),     # 16 > 12 / 2
    (16384, 6.0, True),    # 64 > 12 / 2
])
def test_legw_warmup_scaling_and_cap(batch, epochs, capped):
    sched = build_named("legw", spe=3, batch=batch)
    desc = sched.describe()
    assert desc["warmup_capped"] is capped
    assert desc["warmup_epochs"] == pytest.approx(epochs)
    assert desc["base_warmup_epochs"] == W0
    assert desc["legw_b0"] == B0
    assert desc["warmup_steps"] == round(epochs * 3)
    assert desc["peak_lr"] == pytest.approx(BASE_LR * math.sqrt(batch / B0), rel=REL)


def test_legw_cap_exactly_half_is_not_capped():
    # w0 * B / B0 = 2 * 1024 / 512 = 4 = 8 / 2: at the cap, not over it
    sched = build("legw", spe=2, epochs=8, batch=1024, legw_b0=512, warmup_epochs=2)
    assert sched.describe()["warmup_capped"] is False
    assert sched.describe()["warmup_steps"] == 8
    sched = build("legw", spe=2, epochs=8, batch=2048, legw_b0=512, warmup_epochs=2)
    assert sched.describe()["warmup_capped"] is True
    assert sched.describe()["warmup_steps"] == 8


def test_legw_default_base_warmup_is_five_epochs():
    sched = build("legw", spe=1, epochs=40, batch=512, legw_b0=256)
    assert sched.describe()["base_warmup_epochs"] == 5.0
    assert sched.describe()["warmup_steps"] == 10


# -- parameter groups ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ("linear", "legw", "fixed", "cosine", "constant"))
def test_param_groups_keep_ratio(name):
    spe, batch = 3, 1024
    total = spe * TOTAL_EPOCHS
    sched = build_named(name, spe, batch, lrs=(1.0, 0.1))
    opt = sched.optimizer
    peak = expected_peak(name, batch)
    warmup = expected_warmup_steps(name, spe, batch)
    for s in range(total + 1):
        if s > 0:
            opt.step()
            sched.step()
        last = sched.get_last_lr()
        assert len(last) == 2
        assert [g["lr"] for g in opt.param_groups] == last
        if name == "constant":
            assert last[0] == pytest.approx(BASE_LR, rel=REL)
        else:
            assert last[0] == pytest.approx(expected_lr(s, peak, warmup, total), rel=REL, abs=1e-15)
        assert last[1] == pytest.approx(last[0] * 0.1, rel=1e-12, abs=1e-16)


def test_param_groups_ratio_is_relative_to_first_group():
    # group ratios are taken from the optimizer's initial lrs, not their absolute values
    sched = build("constant", spe=1, lr=0.3, lrs=(2.0, 0.5))
    assert sched.get_last_lr() == pytest.approx([0.3, 0.075], rel=REL)


# -- state dict ------------------------------------------------------------------------------


def _resume_case(name):
    spe, batch = 3, 4096
    return spe, batch, spe * TOTAL_EPOCHS, expected_warmup_steps(name, spe, batch)


@pytest.mark.parametrize("name", ("linear", "legw", "fixed", "cosine", "constant"))
def test_state_dict_round_trip(name):
    spe, batch, total, warmup = _resume_case(name)
    reference = build_named(name, spe, batch, lrs=(1.0, 0.1))
    ref_lrs = [reference.get_last_lr()]
    for _ in range(total):
        reference.step()
        ref_lrs.append(reference.get_last_lr())

    ks = sorted({0, 1, max(warmup - 1, 0), warmup, total // 2, total - 1})
    for k in ks:
        first = build_named(name, spe, batch, lrs=(1.0, 0.1))
        for _ in range(k):
            first.step()
        assert first.get_last_lr() == ref_lrs[k]
        saved = first.state_dict()
        # the saved state is a snapshot: stepping the old scheduler must not change it
        snapshot = copy.deepcopy(saved)
        first.step()
        assert saved == snapshot
        # and it survives torch.save / torch.load (as in a checkpoint)
        buf = io.BytesIO()
        torch.save(saved, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)

        resumed = build_named(name, spe, batch, lrs=(1.0, 0.1))
        resumed.load_state_dict(loaded)
        assert resumed.last_step == k
        assert resumed.get_last_lr() == ref_lrs[k], f"k={k}"
        assert [g["lr"] for g in resumed.optimizer.param_groups] == ref_lrs[k]
        for s in range(k + 1, total + 1):
            resumed.step()
            assert resumed.get_last_lr() == ref_lrs[s], f"k={k} step {s}"
            assert [g["lr"] for g in resumed.optimizer.param_groups] == ref_lrs[s]


def test_state_dict_restores_group_ratios_from_state():
    # a fresh optimizer with other initial lrs resumes with the saved ratios
    first = build("linear", spe=3, batch=1024, lrs=(1.0, 0.1))
    for _ in range(10):
        first.step()
    state = first.state_dict()
    resumed = build("linear", spe=3, batch=1024, lrs=(1.0, 1.0))
    resumed.load_state_dict(state)
    for _ in range(10, 36):
        first.step()
        resumed.step()
        assert resumed.get_last_lr() == first.get_last_lr()


@pytest.mark.parametrize("name", ("linear", "cosine", "constant"))
def test_load_state_for_other_total_steps_raises(name):
    old = build(name, spe=3, epochs=12)
    for _ in range(4):
        old.step()
    new = build(name, spe=4, epochs=12)
    with pytest.raises(ValueError, match="total steps"):
        new.load_state_dict(old.state_dict())


# -- bad input -------------------------------------------------------------------------------


def _kwargs(**overrides):
    kw = {"steps_per_epoch": 3, "total_epochs": 12, "batch_size": 256, "lr": 0.1}
    kw.update(overrides)
    return kw


@pytest.mark.parametrize(("name", "overrides", "match"), [
    ("nope", {}, r"unknown scheduler 'nope'.*linear"),
    ("Linear", {}, "unknown scheduler"),
    ("linear", {"lr": None}, "needs lr"),
    ("fixed", {"lr": None}, "needs lr"),
    ("constant", {"lr": None}, "needs lr"),
    ("auto", {"lr": 0.1}, "drop lr"),
    ("auto", {"lr": None, "warmup_epochs": 2}, "warmup_epochs"),
    ("auto", {"lr": None, "legw_b0": 256}, "legw_b0"),
    ("linear", {"lr": -0.1}, "lr must be"),
    ("linear", {"lr": 0}, "lr must be"),
    ("cosine", {"lr": 0.0}, "lr must be"),
    ("constant", {"lr": float("nan")}, "lr must be"),
    ("fixed", {"lr": float("inf")}, "lr must be"),
    ("linear", {"lr": "fast"}, "lr must be a number"),
    ("linear", {"steps_per_epoch": 0}, "steps_per_epoch"),
    ("linear", {"steps_per_epoch": 2.5}, "steps_per_epoch"),
    ("cosine", {"steps_per_epoch": -1}, "steps_per_epoch"),
    ("linear", {"total_epochs": 0}, "total_epochs"),
    ("constant", {"total_epochs": 0}, "total_epochs"),
    ("linear", {"batch_size": 0}, "batch_size"),
    ("fixed", {"batch_size": -256}, "batch_size"),
    ("legw", {}, "legw needs legw_b0"),
    ("legw", {"legw_b0": 0}, "legw_b0"),
    ("linear", {"legw_b0": 256}, "legw_b0 is for the legw scheduler only"),
    ("linear", {"warmup_epochs": 12}, "warmup of 36 steps"),
    ("linear", {"warmup_epochs": 20}, "use fewer warmup epochs"),
    ("fixed", {"total_epochs": 5}, "use fewer warmup epochs"),  # default 5 epochs = whole budget
    ("fixed", {"warmup_epochs": -1}, "warmup_epochs"),
    ("linear", {"init_lr": 1e-3}, "AutoWU only"),
    ("fixed", {"max_lr": 1.0}, "AutoWU only"),
    ("cosine", {"warmup_epochs": 2}, "has no warmup"),
    ("constant", {"warmup_epochs": 0.5}, "has no warmup"),
])
def test_bad_input_raises(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        build_scheduler(name, make_optimizer(), **_kwargs(**overrides))


def test_warmup_zero_is_allowed_for_cosine_and_constant():
    for name in ("cosine", "constant"):
        sched = build_scheduler(name, make_optimizer(), **_kwargs(warmup_epochs=0))
        assert sched.get_last_lr()[0] == pytest.approx(0.1)


def test_warmup_one_step_short_of_budget_is_allowed():
    # W = T - 1: the last step is the (single) decay step at the peak, then 0 at T
    sched = build("fixed", spe=1, epochs=6, warmup_epochs=5)
    lrs = run_all(sched, 6)
    assert lrs == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1, 0.0], rel=REL, abs=1e-15)


# -- describe --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ("linear", "legw", "fixed", "cosine", "constant"))
@pytest.mark.parametrize("batch", (256, 16384))
def test_describe_is_json_serialisable(name, batch):
    sched = build_named(name, 3, batch)
    desc = sched.describe()
    assert isinstance(desc, dict)
    assert desc["name"] == name
    assert json.loads(json.dumps(desc)) == desc


# -- PyTorch's scheduler contract (issue 12) ---------------------------------------------------

BASELINES = ("linear", "legw", "fixed", "cosine", "constant")


@pytest.mark.parametrize("name", BASELINES)
def test_is_a_torch_lr_scheduler(name):
    sched = build_named(name, 3, 1024, lrs=(1.0, 0.1))
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    assert sched.base_lrs == [1.0, 0.1]
    assert sched.last_epoch == sched.last_step == 0
    for s in range(1, 8):
        sched.step()
        assert sched.last_epoch == s
        assert sched.get_lr() == sched.get_last_lr() == [g["lr"] for g in sched.optimizer.param_groups]
    # building it neither wrapped optimizer.step nor wrote 'initial_lr' into the groups
    assert not hasattr(sched.optimizer.step, "_wrapped_by_lr_sched")
    assert all("initial_lr" not in g for g in sched.optimizer.param_groups)


@pytest.mark.parametrize("name", BASELINES)
def test_tensor_lr_is_updated_in_place(name):
    floats = build_named(name, 3, 1024)
    ref = run_all(floats, 3 * TOTAL_EPOCHS)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(1.0, dtype=torch.float64), foreach=False)
    kw = {"legw_b0": B0, "warmup_epochs": W0} if name == "legw" else {}
    sched = build_scheduler(name, opt, steps_per_epoch=3, total_epochs=TOTAL_EPOCHS, batch_size=1024,
                            lr=BASE_LR, **kw)
    lr_tensor = opt.param_groups[0]["lr"]
    got = [lr_tensor.item()]
    for _ in range(3 * TOTAL_EPOCHS):
        model(torch.ones(1, 2)).sum().backward()
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] is lr_tensor  # the same tensor: a compiled step keeps reading it
        got.append(lr_tensor.item())
    assert got == ref


@pytest.mark.parametrize("name", BASELINES)
def test_state_loads_with_weights_only(name):
    sched = build_named(name, 3, 1024, lrs=(1.0, 0.1))
    for _ in range(7):
        sched.step()
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    resumed = build_named(name, 3, 1024, lrs=(1.0, 0.1))
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.get_last_lr() == sched.get_last_lr() and resumed.last_epoch == 7


def _stepped(name, steps=4, **kw):
    sched = build(name, spe=3, batch=1024, **kw)
    for _ in range(steps):
        sched.step()
    return sched


@pytest.mark.parametrize(("theirs", "mine"), [
    # the same total steps, another scheduler or other settings: each is another run
    (dict(name="linear"), dict(name="fixed")),
    (dict(name="fixed"), dict(name="linear")),
    (dict(name="cosine"), dict(name="constant")),
    (dict(name="constant"), dict(name="cosine")),
    (dict(name="fixed", warmup_epochs=2), dict(name="fixed", warmup_epochs=3)),
    (dict(name="fixed", lr=0.1), dict(name="fixed", lr=0.2)),
    (dict(name="linear", batch=1024), dict(name="linear", batch=2048)),
    (dict(name="legw", legw_b0=256), dict(name="legw", legw_b0=512)),
    (dict(name="cosine", lr=0.1), dict(name="cosine", lr=0.3)),
])
def test_load_state_of_another_scheduler_raises(theirs, mine):
    def make(name, batch=1024, **kw):
        sched = build(name, spe=3, batch=batch, **kw)
        for _ in range(4):
            sched.step()
        return sched

    old, new = make(**theirs), make(**mine)
    before = (new.last_step, new.get_last_lr(), copy.deepcopy(new.state_dict()))
    with pytest.raises(ValueError, match="scheduler state"):
        new.load_state_dict(old.state_dict())
    assert (new.last_step, new.get_last_lr(), new.state_dict()) == before


def test_load_autowu_state_into_a_baseline_raises():
    from autolr import AutoWU

    auto = AutoWU(make_optimizer(), 3, TOTAL_EPOCHS)
    auto.step(1.0)
    new = _stepped("fixed")
    with pytest.raises(ValueError, match="'auto'"):
        new.load_state_dict(auto.state_dict())
    legacy = {k: v for k, v in auto.state_dict().items() if k != "config"}
    with pytest.raises(ValueError, match="AutoWU's"):
        new.load_state_dict(legacy)


def test_state_saved_before_the_config_still_loads_and_is_checked():
    # checkpoints written before the state held the settings: resumed when the LR fits this schedule
    old = _stepped("fixed", steps=5)
    legacy = {k: v for k, v in old.state_dict().items() if k != "config"}
    resumed = _stepped("fixed", steps=0)
    resumed.load_state_dict(legacy)
    assert resumed.get_last_lr() == old.get_last_lr()
    with pytest.raises(ValueError, match="another scheduler's"):
        _stepped("linear", steps=0).load_state_dict(legacy)


def test_load_state_with_other_group_count_raises_and_loads_nothing():
    old = build("fixed", spe=3, batch=1024, lrs=(1.0, 0.1))
    for _ in range(5):
        old.step()
    new = _stepped("fixed", steps=2)
    before = new.state_dict()
    with pytest.raises(ValueError, match="parameter groups"):
        new.load_state_dict(old.state_dict())
    assert new.state_dict() == before


@pytest.mark.parametrize(("name", "overrides", "match"), [
    ("fixed", {"warmup_epochs": 1e308}, "use fewer warmup epochs"),
    ("linear", {"warmup_epochs": 1e308}, "use fewer warmup epochs"),
    ("linear", {"lr": 1e308, "batch_size": 16384}, "peak lr must be finite"),
])
def test_overflowing_settings_raise_value_error(name, overrides, match):
    with pytest.raises(ValueError, match=match):
        build_scheduler(name, make_optimizer(), **_kwargs(**overrides))


def test_legw_caps_an_overflowing_warmup():
    sched = build_scheduler("legw", make_optimizer(), **_kwargs(warmup_epochs=1e308, legw_b0=256, batch_size=512))
    assert sched.describe()["warmup_capped"] and sched.warmup_steps == 18
    assert all(math.isfinite(v) for v in run_all(sched, 36))

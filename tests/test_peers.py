"""Tests for the peers of AutoWU (autolr/peers): Schedule-Free AdamW's evaluation path and resume,
Prodigy's cosine, d·lr trace and resume, and the LR range test's restore, stop rules and cost.

Tiny BN models on random data, seconds each. Exact means bitwise (``torch.equal``) on CPU.
"""

from __future__ import annotations

import io
import math
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from autolr.peers import batchnorm, prodigy, rangetest, schedulefree

pytest.importorskip("schedulefree")
pytest.importorskip("prodigyopt")


# -- fixtures ----------------------------------------------------------------------------------
def make_model(seed: int = 0, dropout: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Dropout(dropout), torch.nn.Linear(4, 3),
    )


def make_batches(n: int, seed: int = 1, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    # inputs with a non-zero mean and scale, so BN statistics are far from their reset values
    return [(2.0 + 3.0 * torch.randn(size, 1, 6, 6, generator=g), torch.randint(0, 3, (size,), generator=g))
            for _ in range(n)]


def train_steps(model, optimizer, batches, sched=None, trace=None) -> None:
    model.train()
    for x, y in batches:
        if trace is not None:
            trace.append(sched.get_last_lr()[0])
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if sched is not None:
            sched.step()


def same_tensors(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def opt_tensors(optimizer) -> list[torch.Tensor]:
    return [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


def bn_stats(model) -> list[torch.Tensor]:
    return [t.clone() for m in batchnorm.bn_layers(model) for t in (m.running_mean, m.running_var)]


def save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=False)


# -- batch-norm recomputation ------------------------------------------------------------------
def test_recompute_bn_stats_is_the_plain_mean_of_batch_statistics():
    model = make_model()
    batches = make_batches(5)
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), batches[:3])
    bn = batchnorm.bn_layers(model)[0]
    inputs = []
    hook = bn.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach().clone()))
    model.eval()
    assert batchnorm.recompute_bn_stats(model, batches, 4) == 4
    hook.remove()
    assert len(inputs) == 4 and not model.training
    expected_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    expected_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs]).mean(0)
    torch.testing.assert_close(bn.running_mean, expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, expected_var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and int(bn.num_batches_tracked) == 3


def test_recompute_bn_stats_refuses_bad_input_and_changes_nothing():
    model = make_model()
    train_steps(model, torch.optim.SGD(model.parameters(), lr=0.1), make_batches(2))
    before = bn_stats(model)
    with pytest.raises(ValueError, match="empty"):
        batchnorm.recompute_bn_stats(model, [], 4)
    with pytest.raises(ValueError, match="num_batches"):
        batchnorm.recompute_bn_stats(model, make_batches(1), 0)

    def failing(x):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        batchnorm.recompute_bn_stats(model, make_batches(2), 2, forward=failing)
    assert same_tensors(before, bn_stats(model))
    assert all(m.momentum == 0.1 for m in batchnorm.bn_layers(model))


# -- Schedule-Free AdamW -----------------------------------------------------------------------
def test_schedulefree_configuration_is_algoperfs():
    model = make_model()
    opt = schedulefree.build_optimizer(model.parameters(), total_steps=1000, weight_decay=0.1)
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["r"], g["weight_lr_power"], g["weight_decay"]) == (
        0.0025, (0.9, 0.9955159689799007), 0.75, 2.0, 0.1)
    assert g["warmup_steps"] == 15 == int(0.02 * 0.75 * 1000)
    assert g["train_mode"], "built ready to step"


def test_schedulefree_lr_report_matches_the_optimizers_own_warmup():
    model = make_model()
    opt = schedulefree.build_optimizer(model.parameters(), total_steps=400, weight_decay=0.1)  # 6 warmup steps
    sched = schedulefree.ScheduleFreeLR(opt, 400)
    phases = []
    for x, y in make_batches(8):
        reported = sched.get_last_lr()[0]
        phases.append(sched.phase)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        assert reported == opt.param_groups[0]["scheduled_lr"]  # the LR the step used, as the package logs it
        sched.step()
    assert phases == ["warmup"] * 6 + ["constant"] * 2
    assert sched.get_last_lr()[0] == 0.0025 and sched.last_epoch == 8


def test_schedulefree_evaluation_recomputes_bn_at_x_and_switches_back():
    model = make_model()
    batches = make_batches(14)
    opt = schedulefree.build_optimizer(model.parameters(), total_steps=100, weight_decay=0.1)
    train_steps(model, opt, batches[:10])
    y_params = [p.detach().clone() for p in model.parameters()]
    stats_before = bn_stats(model)
    probe = batches[13][0]
    model.eval()
    with torch.no_grad():
        out_y = model(probe)
    model.train()

    with schedulefree.evaluating(model, opt, batches[10:], num_batches=3) as used:
        assert used == 3
        assert not model.training and not opt.param_groups[0]["train_mode"]
        x_params = [p.detach().clone() for p in model.parameters()]
        assert not same_tensors(x_params, y_params), "the parameters hold x, not y"
        stats_x = bn_stats(model)
        assert all(not torch.allclose(a, b) for a, b in zip(stats_x, stats_before, strict=True))
        with torch.no_grad():
            out_x = model(probe)
    assert not torch.allclose(out_x, out_y), "evaluating at x differs from evaluating at y"

    # the statistics are those of x: recomputing them on the same batches at x from scratch agrees
    check = make_model()
    check.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p, x in zip(check.parameters(), x_params, strict=True):
            p.copy_(x)
    batchnorm.recompute_bn_stats(check, batches[10:13], 3)
    assert same_tensors(bn_stats(check), stats_x)

    assert model.training and opt.param_groups[0]["train_mode"], "modes switched back"
    for p, y in zip(model.parameters(), y_params, strict=True):
        torch.testing.assert_close(p.detach(), y, rtol=0, atol=1e-6)  # y again (the round trip rounds)
    assert all(m.momentum == 0.1 for m in batchnorm.bn_layers(model))
    train_steps(model, opt, batches[13:])  # training goes on


def test_schedulefree_evaluation_refuses_other_optimizers():
    model = make_model()
    with pytest.raises(ValueError, match="not a Schedule-Free optimizer"):
        with schedulefree.evaluating(model, torch.optim.AdamW(model.parameters()), make_batches(1)):
            pass
    with pytest.raises(ValueError, match="not a Schedule-Free optimizer"):
        schedulefree.ScheduleFreeLR(torch.optim.AdamW(model.parameters()), 10)


@pytest.mark.parametrize("kwargs, match", [({"total_steps": 0, "weight_decay": 0.1}, "total_steps"),
                                           ({"total_steps": 2.5, "weight_decay": 0.1}, "total_steps"),
                                           ({"total_steps": 10, "weight_decay": -1.0}, "weight_decay"),
                                           ({"total_steps": 10, "weight_decay": float("nan")}, "weight_decay")])
def test_schedulefree_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        schedulefree.build_optimizer(make_model().parameters(), **kwargs)
    assert "\n" not in str(err.value)


def _sf_run(batches, k: int | None):
    """Train on ``batches`` with an evaluation + checkpoint after step ``k``; resume from it when asked."""
    model = make_model()
    opt = schedulefree.build_optimizer(model.parameters(), total_steps=len(batches), weight_decay=0.1)
    sched = schedulefree.ScheduleFreeLR(opt, len(batches))
    train_steps(model, opt, batches[:k], sched)
    with schedulefree.evaluating(model, opt, batches, num_batches=2):
        ckpt = save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    return model, opt, sched, ckpt


def test_schedulefree_resumes_exactly():
    batches = make_batches(12)
    k = 5
    model, opt, sched, ckpt = _sf_run(batches, k)
    train_steps(model, opt, batches[k:], sched)

    state = load(ckpt)
    assert state["optimizer"]["param_groups"][0]["train_mode"] is False, "saved in eval mode"
    model2 = make_model(seed=7)  # other initial weights: everything must come from the checkpoint
    opt2 = schedulefree.build_optimizer(model2.parameters(), total_steps=len(batches), weight_decay=0.1)
    sched2 = schedulefree.ScheduleFreeLR(opt2, len(batches))
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    opt2.train()
    train_steps(model2, opt2, batches[k:], sched2)

    assert same_tensors(list(model.state_dict().values()), list(model2.state_dict().values()))
    assert same_tensors(opt_tensors(opt), opt_tensors(opt2))
    assert opt.param_groups[0]["k"] == opt2.param_groups[0]["k"] == len(batches)
    assert sched.last_epoch == sched2.last_epoch == len(batches)
    with pytest.raises(ValueError, match="same settings"):
        schedulefree.ScheduleFreeLR(opt2, 99).load_state_dict(state["scheduler"])


# -- Prodigy -----------------------------------------------------------------------------------
def test_prodigy_configuration_and_cosine():
    model = make_model()
    opt = prodigy.build_optimizer(model.parameters(), weight_decay=0.1)
    g = opt.param_groups[0]
    assert (g["lr"], g["d_coef"], g["decouple"], g["weight_decay"]) == (1.0, 1.0, True, 0.1)
    T = 10
    sched = prodigy.ProdigyCosine(opt, T)
    for t in range(T + 1):
        assert math.isclose(opt.param_groups[0]["lr"], 0.5 * (1 + math.cos(math.pi * t / T)), rel_tol=1e-12)
        sched.step()
    assert opt.param_groups[0]["lr"] == 0.0  # past T it stays at 0


def test_prodigy_records_d_times_lr_per_step():
    model = make_model()
    batches = make_batches(12)
    opt = prodigy.build_optimizer(model.parameters(), weight_decay=0.1)
    sched = prodigy.ProdigyCosine(opt, len(batches))
    trace, ds, mult = [], [], []
    for x, y in batches:
        trace.append(prodigy.estimated_lr(opt))
        assert sched.get_last_lr()[0] == trace[-1]
        ds.append(opt.param_groups[0]["d"])
        mult.append(sched.multiplier)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    assert trace[0] == 1e-6, "d0 at lr 1"
    assert trace == [d * m for d, m in zip(ds, mult, strict=True)]
    assert all(b >= a for a, b in zip(ds, ds[1:], strict=False)), "d never decreases"
    assert ds[-1] > 10 * ds[0], "d grew from d0"
    summary = sched.summary()
    assert summary["d"] == opt.param_groups[0]["d"] >= ds[-1] and summary["steps"] == len(batches)


def test_prodigy_resumes_exactly():
    batches = make_batches(12)
    k = 5

    def fresh(seed=0):
        model = make_model(seed)
        opt = prodigy.build_optimizer(model.parameters(), weight_decay=0.1)
        return model, opt, prodigy.ProdigyCosine(opt, len(batches))

    model, opt, sched = fresh()
    trace: list[float] = []
    train_steps(model, opt, batches[:k], sched, trace)
    ckpt = save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    train_steps(model, opt, batches[k:], sched, trace)

    state = load(ckpt)
    model2, opt2, sched2 = fresh(seed=7)
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    trace2: list[float] = []
    train_steps(model2, opt2, batches[k:], sched2, trace2)
    assert trace2 == trace[k:]
    assert same_tensors(list(model.state_dict().values()), list(model2.state_dict().values()))
    assert same_tensors(opt_tensors(opt), opt_tensors(opt2))
    assert opt.param_groups[0]["d"] == opt2.param_groups[0]["d"]


def test_prodigy_bad_arguments():
    model = make_model()
    with pytest.raises(ValueError, match="weight_decay") as err:
        prodigy.build_optimizer(model.parameters(), weight_decay=float("inf"))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not Prodigy"):
        prodigy.ProdigyCosine(torch.optim.AdamW(model.parameters()), 10)
    with pytest.raises(ValueError, match="total_steps"):
        prodigy.ProdigyCosine(prodigy.build_optimizer(model.parameters(), weight_decay=0.1), 0)


def test_optimizer_packages_are_imported_lazily():
    code = ("import sys, autolr.peers.schedulefree, autolr.peers.prodigy, autolr.peers.rangetest; "
            "print('schedulefree' in sys.modules, 'prodigyopt' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- LR range test -----------------------------------------------------------------------------
def make_closure(model, batches):
    """One training step's loss and gradients, drawing batches in turn and random numbers (dropout, noise)."""
    it = iter(batches * 100)

    def closure():
        x, y = next(it)
        x = x + 0.01 * torch.randn_like(x)  # uses the global RNG, which the test must restore
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    return closure


def synthetic(optimizer, curve):
    """A closure whose loss is ``curve(lr)`` at the optimizer's current LR; counts its calls."""
    calls = []

    def closure():
        calls.append(1)
        return torch.tensor(curve(optimizer.param_groups[0]["lr"]))

    return closure, calls


def _parabola(lr: float) -> float:
    # minimum 1 at lr 1e-2, 5 at lr 1e-4 and lr 1
    return 1.0 + (math.log10(lr) + 2.0) ** 2


@pytest.mark.parametrize("opt_name", ["adamw", "adamp"])
def test_range_test_restores_everything_and_training_after_it_is_unchanged(opt_name):
    from autolr.optim import build_optimizer

    batches = make_batches(6)

    def setup():
        model = make_model(dropout=0.2)
        opt = build_optimizer(opt_name, model, lr=1.0, weight_decay=0.1)
        train_steps(model, opt, batches[:1])  # some optimizer state and BN statistics to restore
        return model, opt

    torch.manual_seed(123)
    model, opt = setup()
    before = [t.clone() for t in model.state_dict().values()]
    opt_before = [t.clone() for t in opt_tensors(opt)]
    result = rangetest.range_test(model, opt, make_closure(model, batches), num_steps=30)
    assert result.steps > 5
    assert same_tensors(before, list(model.state_dict().values())), "weights and BN buffers are the initial ones"
    assert same_tensors(opt_before, opt_tensors(opt))
    assert [g["lr"] for g in opt.param_groups] == [1.0] * len(opt.param_groups)
    assert model.training
    train_steps(model, opt, batches[1:])
    after_test = [t.clone() for t in model.state_dict().values()]
    rng_after_test = torch.rand(3)

    torch.manual_seed(123)
    model, opt = setup()
    train_steps(model, opt, batches[1:])
    assert same_tensors(after_test, list(model.state_dict().values())), "training after the test is bitwise the same"
    assert torch.equal(rng_after_test, torch.rand(3))


def test_range_test_stops_when_the_loss_blows_up_and_picks_min_over_10():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    closure, calls = synthetic(opt, _parabola)
    r = rangetest.range_test(model, opt, closure, num_steps=51, lr_min=1e-5, lr_max=1.0, smoothing=0.0)
    # without smoothing: 51 points, 10 per decade; the minimum is at 1e-2 exactly (index 30)
    assert r.stop == "diverged"
    assert r.min_index == 30 and math.isclose(r.lr_at_min, 1e-2, rel_tol=1e-9)
    assert math.isclose(r.peak_lr, 1e-3, rel_tol=1e-9)
    assert r.smoothed[-1] > 4 * min(r.smoothed[:-1])
    assert all(s <= 4 * min(r.smoothed[: i + 1]) for i, s in enumerate(r.smoothed[:-1])), "no earlier stop"
    assert r.steps == len(r.lrs) == len(r.losses) == len(calls) < 51
    assert r.lrs[0] == 1e-5 and all(math.isclose(b / a, 10 ** 0.1) for a, b in zip(r.lrs, r.lrs[1:], strict=False))
    assert r.config["smoothing"] == 0.0 and r.config["num_steps"] == 51


def test_range_test_smoothing_is_bias_corrected_ema():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    closure, _ = synthetic(opt, _parabola)
    r = rangetest.range_test(model, opt, closure, num_steps=100)
    beta = rangetest.default_smoothing(100)
    assert beta == 0.8
    avg = 0.0
    for i, (loss, s) in enumerate(zip(r.losses, r.smoothed, strict=True)):
        avg = beta * avg + (1 - beta) * loss
        assert math.isclose(s, avg / (1 - beta ** (i + 1)), rel_tol=1e-12)
    assert r.lr_at_min == r.lrs[r.smoothed.index(min(r.smoothed))]
    assert 1e-2 <= r.lr_at_min < 10 ** -1.5, "the smoothing lags: the minimum moves to larger LRs, boundedly"


def test_range_test_stops_on_a_nonfinite_loss_and_completes_otherwise():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    closure, _ = synthetic(opt, lambda lr: math.inf if lr > 1e-3 else 1.0 - lr)
    r = rangetest.range_test(model, opt, closure, num_steps=21, smoothing=0.5)
    assert r.stop == "nonfinite" and r.losses[-1] is None and r.smoothed[-1] is None
    assert r.lr_at_min <= 1e-3 and r.to_dict()["stop"] == "nonfinite"

    closure, calls = synthetic(opt, lambda lr: 2.0 - lr)
    r = rangetest.range_test(model, opt, closure, num_steps=21, lr_min=1e-4, lr_max=1e-1)
    assert r.stop == "completed" and r.steps == len(calls) == 21
    assert math.isclose(r.lrs[-1], 1e-1) and r.min_index == 20


def test_range_test_cost_accounting():
    model = make_model()
    batches = make_batches(4)
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    t0 = time.perf_counter()
    r = rangetest.range_test(model, opt, make_closure(model, batches), num_steps=20)
    outer = time.perf_counter() - t0
    assert 0 < r.wall_seconds <= outer
    assert r.steps == len(r.lrs) <= 20
    d = r.to_dict()
    assert {"lrs", "losses", "smoothed", "stop", "min_index", "lr_at_min", "peak_lr", "steps", "wall_seconds",
            "config"} <= set(d)
    assert d["config"]["rule"] == "lr at the smoothed-loss minimum / 10"
    assert rangetest.RangeTestResult.from_dict(load(save(d))) == r


def test_range_test_default_steps():
    assert [rangetest.default_steps(t) for t in (1, 90, 199, 200, 500, 1000, 6420)] == [20, 20, 20, 20, 50, 100, 100]
    assert rangetest.default_smoothing(20) == 0.0 and rangetest.default_smoothing(10_000) == 0.98


def test_range_test_restores_on_failure_and_refuses_a_broken_start():
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1.0)
    before = [t.clone() for t in model.state_dict().values()]
    inner = make_closure(model, make_batches(2))
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("out of memory")
        return inner()

    with pytest.raises(RuntimeError, match="out of memory"):
        rangetest.range_test(model, opt, failing, num_steps=10)
    assert same_tensors(before, list(model.state_dict().values())) and not opt.state
    closure, _ = synthetic(opt, lambda lr: math.nan)
    with pytest.raises(RuntimeError, match="first loss was not finite"):
        rangetest.range_test(model, opt, closure, num_steps=10)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_steps": 1}, "num_steps"), ({"num_steps": 10.0}, "num_steps"),
    ({"num_steps": 10, "lr_min": 0.0}, "lr_min"), ({"num_steps": 10, "lr_min": math.nan}, "lr_min"),
    ({"num_steps": 10, "lr_min": 1e-2, "lr_max": 1e-3}, "lr_max must exceed"),
    ({"num_steps": 10, "div_factor": 1.0}, "div_factor"), ({"num_steps": 10, "smoothing": 1.0}, "smoothing"),
    ({"num_steps": 10, "smoothing": -0.1}, "smoothing"),
])
def test_range_test_bad_arguments(kwargs, match):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    with pytest.raises(ValueError, match=match) as err:
        rangetest.range_test(model, opt, lambda: 1.0, **kwargs)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="positive lr"):
        rangetest.range_test(model, torch.optim.SGD(model.parameters(), lr=0.0), lambda: 1.0, num_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        rangetest.default_steps(0)


# -- torch.distributed: two CPU processes (gloo) -----------------------------------------------
def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        batches = make_batches(8)
        model = make_model()
        batchnorm.recompute_bn_stats(model, batches[rank::world], 4)  # each rank its own share
        net = torch.nn.parallel.DistributedDataParallel(make_model(seed=3))
        opt = torch.optim.AdamW(net.parameters(), lr=1.0)
        result = rangetest.range_test(net, opt, make_closure(net, batches[rank::world]), num_steps=40)
        torch.save({"bn": bn_stats(model), "curve": (result.lrs, result.smoothed, result.stop)},
                   f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_bn_statistics_and_range_test_under_ddp(tmp_path):
    world = 2
    torch.multiprocessing.spawn(_ddp_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world)
    got = [torch.load(tmp_path / f"{r}.pt", weights_only=False) for r in range(world)]
    assert same_tensors(got[0]["bn"], got[1]["bn"]), "the ranks hold the same statistics"
    single = make_model()
    batchnorm.recompute_bn_stats(single, make_batches(8), 8)  # one process, every batch
    for a, b in zip(got[0]["bn"], bn_stats(single), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert got[0]["curve"] == got[1]["curve"], "every rank saw the same averaged curve and stopped together"

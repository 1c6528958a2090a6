"""AutoWU: exponential warmup until the GP-smoothed loss has confidently passed its minimum,
then a predefined decay to zero (shared/AUTOWU.md; Kim et al., 2021).

Usage, in any training loop::

    sched = AutoWU(optimizer, steps_per_epoch=len(loader), total_epochs=epochs)
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward(); optimizer.step(); optimizer.zero_grad()
        sched.step(loss.detach())      # a 0-d tensor on any device, or a float

``step`` never synchronises with the device: the epoch's losses stay where they are and move to
the host once per epoch, when the test runs. Under torch.distributed the epoch's loss vector is
averaged over ranks with one all-reduce, rank 0 runs the test, and the outcome is broadcast, so
every rank takes the same decision from the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from autolr.gp import GPConfig, GPState, TestResult, run_test
from autolr.scheduler import Scheduler, _check_positive, _check_positive_int, _check_real, cosine_factor, option

__all__ = ["AutoWU", "AutoWUOptions"]

_PHASES = ("warmup", "decay")


@dataclass(frozen=True)
class AutoWUOptions:
    """AutoWU's settings, each declared once: the signature of ``AutoWU``, train.py's flags (those
    marked ``flag``) and the registry read their defaults here; the GP's come from ``GPConfig``."""

    init_lr: float = option(1e-5, "the warmup's first LR", flag=True)
    max_lr: float = option(1.0, "the LR the warmup reaches at its cap", flag=True)
    max_warmup_fraction: float = option(0.5, "forced switch at this fraction of the budget", flag=True)
    decay: str = option("cosine", "the decay after the switch", choices=("cosine", "constant_cosine"), flag=True)
    gp_path: str = option("fast", "GP implementation", choices=("fast", "oracle"), flag=True)
    warmup: str = option("exp", "the warmup path: exponential (the reference) or linear (ablation)",
                         choices=("exp", "linear"), flag=True)
    cooldown_fraction: float = option(0.2, "constant_cosine: the cosine's share of the budget")
    confidence: float = option(GPConfig.confidence, "a prediction votes 'past the minimum' above this p")
    patience: int = option(3, "consecutive positive tests needed to switch")
    n_tests: int = option(GPConfig.n_tests, "predictions per test, each on its own subsample")
    lengthscale: float = option(GPConfig.lengthscale, "the GP's RBF lengthscale, as a fraction of the history")
    seed: int = option(0, "seeds the test's subsampling (train.py passes the run's seed)")
    fit_iters: int = option(GPConfig.fit_iters, "Adam steps of the GP's hyperparameter fit per test")
    distributed: bool | None = option(None, "average losses over ranks (None: whenever torch.distributed runs)")


class AutoWU(Scheduler):
    """Automated warmup and decay.

    Args:
        optimizer: the wrapped optimizer. Parameter groups keep their LR ratio to the first.
        steps_per_epoch: optimizer steps per epoch (the test runs every this many steps).
        total_epochs: the budget; the LR reaches 0 at step ``steps_per_epoch * total_epochs``.
        init_lr, max_lr: the exponential (or linear) warmup path η(s) from ``init_lr`` at step 0
            to ``max_lr`` at step M = ⌊max_warmup_fraction · T⌋.
        max_warmup_fraction: warmup is forced to end at step M.
        warmup: ``"exp"`` (reference) or ``"linear"`` (ablation).
        decay: ``"cosine"`` or ``"constant_cosine"`` (constant, then cosine over the last
            ``cooldown_fraction`` of all steps).
        confidence: a prediction votes "past the minimum" when its p exceeds this.
        patience: consecutive positive epochs needed to switch.
        n_tests: predictions per test, each on an independent subsample.
        lengthscale: the GP's fixed RBF lengthscale, as a fraction of the history.
        seed: seeds the subsampling generator (its state is part of ``state_dict``).
        gp_path: ``"fast"`` (default) or ``"oracle"`` (the reference recipe, ~100x slower).
        distributed: average losses over ranks and broadcast decisions when torch.distributed is
            initialised (``None``: whenever it is).
    """

    #: why a warmup can end; a state naming another reason is not this scheduler's
    SWITCH_KINDS: tuple[str, ...] = ("test", "forced")

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_epochs: int, *,
                 init_lr: float = AutoWUOptions.init_lr, max_lr: float = AutoWUOptions.max_lr,
                 max_warmup_fraction: float = AutoWUOptions.max_warmup_fraction, warmup: str = AutoWUOptions.warmup,
                 decay: str = AutoWUOptions.decay, cooldown_fraction: float = AutoWUOptions.cooldown_fraction,
                 confidence: float = AutoWUOptions.confidence, patience: int = AutoWUOptions.patience,
                 n_tests: int = AutoWUOptions.n_tests, lengthscale: float = AutoWUOptions.lengthscale,
                 seed: int = AutoWUOptions.seed, gp_path: str = AutoWUOptions.gp_path,
                 distributed: bool | None = AutoWUOptions.distributed,
                 fit_iters: int = AutoWUOptions.fit_iters) -> None:
        super().__init__(optimizer, steps_per_epoch, total_epochs)
        self.init_lr = _check_positive("init_lr", init_lr)
        self.max_lr = _check_positive("max_lr", max_lr)
        if self.max_lr <= self.init_lr:
            raise ValueError(f"max_lr ({max_lr}) must exceed init_lr ({init_lr})")
        if not math.isfinite(self.max_lr / self.init_lr):
            raise ValueError(f"max_lr / init_lr ({max_lr} / {init_lr}) overflows a float: the exponential warmup "
                             "path would reach an infinite LR; use a larger init_lr or a smaller max_lr")
        if not 0.0 <= _check_real("max_warmup_fraction", max_warmup_fraction) <= 1.0:
            raise ValueError(f"max_warmup_fraction must lie in [0, 1], got {max_warmup_fraction}")
        if warmup not in ("exp", "linear"):
            raise ValueError(f"warmup must be 'exp' or 'linear', got {warmup!r}")
        if decay not in ("cosine", "constant_cosine"):
            raise ValueError(f"decay must be 'cosine' or 'constant_cosine', got {decay!r}")
        if not 0.0 <= _check_real("cooldown_fraction", cooldown_fraction) <= 1.0:
            raise ValueError(f"cooldown_fraction must lie in [0, 1], got {cooldown_fraction}")
        patience = _check_positive_int("patience", patience)
        seed = _check_positive_int("seed", seed, minimum=0)
        if gp_path not in ("fast", "oracle"):
            raise ValueError(f"gp_path must be 'fast' or 'oracle', got {gp_path!r}")
        if distributed is not None and not isinstance(distributed, bool):
            raise ValueError(f"distributed must be None, True or False, got {distributed!r}")
        self.gp = GPConfig(lengthscale=_check_real("lengthscale", lengthscale),
                           n_tests=_check_positive_int("n_tests", n_tests),
                           confidence=_check_real("confidence", confidence),
                           fit_iters=_check_positive_int("fit_iters", fit_iters, minimum=0))
        self.max_warmup_fraction = float(max_warmup_fraction)
        self.warmup = warmup
        self.decay = decay
        self.cooldown_fraction = float(cooldown_fraction)
        self.patience = patience
        self.seed = seed
        self.gp_path = gp_path
        self.distributed = distributed
        # the 1e-9 keeps float noise (0.29 * 100 = 28.999...) from losing a step
        self.max_warmup_steps = int(math.floor(self.max_warmup_fraction * self.total_steps + 1e-9))

        # everything below is state (see state_dict)
        self._phase = "warmup"
        self.switch_step: int | None = None  # first step taken with the decay schedule
        self.switch_lr: float | None = None
        self.switch_kind: str | None = None  # "test" (the GP test fired) or "forced"
        self.consecutive = 0
        self.history: list[dict[str, Any]] = []
        self.losses: list[float] = []  # per-step warmup losses (rank-averaged), NaN kept
        self._epoch_losses: list[torch.Tensor | float] = []
        self._gp_state = GPState.initial(self.gp)
        self._rng = np.random.default_rng(seed)
        self.test_seconds = 0.0  # wall time spent in tests (in the state, so a resumed run counts it all)

        if self.max_warmup_steps == 0:
            # no room for a warmup at all: decay from max_lr, as the reference does
            self._switch(0, self.max_lr, "forced")
        self._apply(self._lr(0))

    @property
    def phase(self) -> str:
        """``"warmup"`` until the switch, then ``"decay"``."""
        return self._phase

    # -- the schedule ------------------------------------------------------------------------
    def _warmup_lr(self, step: int) -> float:
        m = max(self.max_warmup_steps, 1)
        frac = min(step, m) / m
        if self.warmup == "linear":
            return self.init_lr + (self.max_lr - self.init_lr) * frac
        return self.init_lr * (self.max_lr / self.init_lr) ** frac

    def _lr(self, step: int) -> float:
        if self.phase == "warmup":
            return self._warmup_lr(step)
        assert self.switch_step is not None and self.switch_lr is not None
        start = self.switch_step
        if self.decay == "constant_cosine":
            # the first step s >= (1 - c)·T starts the cosine (the 1e-9 absorbs float noise in c·T)
            start = max(start, math.ceil((1.0 - self.cooldown_fraction) * self.total_steps - 1e-9))
        if step < start:
            return self.switch_lr
        return self.switch_lr * cosine_factor(step, start, self.total_steps)

    def _lr_from_x(self, x: float, lr_now: float) -> float:
        # maps a point of the history back along the warmup path: x = 0 is init_lr, x = 1 now
        if self.warmup == "linear":
            return self.init_lr + (lr_now - self.init_lr) * x
        return self.init_lr * (lr_now / self.init_lr) ** x

    def _switch(self, step: int, lr: float, kind: str) -> None:
        self._phase = "decay"
        self.switch_step = step
        self.switch_lr = float(lr)
        self.switch_kind = kind

    # -- stepping ----------------------------------------------------------------------------
    def _record_loss(self, loss: float | torch.Tensor | None) -> None:
        """Keep a warmup step's loss where it is (a 0-d tensor stays on its device: no sync)."""
        if loss is None:
            raise ValueError(f"{type(self).__name__}.step needs the step's training loss during warmup")
        if isinstance(loss, torch.Tensor):
            if loss.numel() != 1:
                raise ValueError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
            # a copy: a loop that reuses the loss tensor in place must not rewrite the history
            loss = loss.detach().reshape(()).clone()
        else:
            loss = float(loss)
        self._epoch_losses.append(loss)

    def step(self, loss: float | torch.Tensor | None = None) -> None:
        """Record the loss of the step just taken and set the LR of the next one."""
        if self.phase == "warmup":
            self._record_loss(loss)
        self.last_step += 1
        s = self.last_step
        if self.phase == "warmup":
            lr_now = self._warmup_lr(s - 1)  # the LR of the step just taken
            if s % self.steps_per_epoch == 0 or s >= self.max_warmup_steps:
                self._flush_epoch_losses()
            if s % self.steps_per_epoch == 0 and s < self.max_warmup_steps:
                self._end_of_epoch_test(s, lr_now)
            if self.phase == "warmup" and s >= self.max_warmup_steps:
                self._switch(s, lr_now, "forced")
        self._apply(self._lr(s))

    def _flush_epoch_losses(self) -> None:
        """Move the epoch's losses to the host once, averaged over ranks."""
        if not self._epoch_losses:
            return
        tensors = [v for v in self._epoch_losses if isinstance(v, torch.Tensor)]
        device = tensors[0].device if tensors else torch.device("cpu")
        vec = torch.stack([v.to(device=device, dtype=torch.float64) if isinstance(v, torch.Tensor)
                           else torch.tensor(v, dtype=torch.float64, device=device)
                           for v in self._epoch_losses])
        if self._is_distributed():
            import torch.distributed as dist

            if dist.get_backend() == "nccl" and vec.device.type != "cuda":
                vec = vec.cuda()
            dist.all_reduce(vec)
            vec /= dist.get_world_size()
        self.losses.extend(v if math.isfinite(v) else math.nan for v in vec.cpu().tolist())
        self._epoch_losses = []

    def _is_distributed(self) -> bool:
        import torch.distributed as dist

        active = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if self.distributed is None:
            return active
        return bool(self.distributed) and active

    def _end_of_epoch_test(self, step: int, lr_now: float) -> None:
        t0 = time.perf_counter()
        record = None
        if self._is_distributed():
            import torch.distributed as dist

            if dist.get_rank() == 0:
                record = self._test(step, lr_now)
            # one small object per epoch: the decision, its LR and the record, identical everywhere
            box = [(record, self._gp_state.to_dict(), self._rng.bit_generator.state)]
            dist.broadcast_object_list(box, src=0)
            record, gp_state, rng_state = box[0]
            self._gp_state = GPState.from_dict(gp_state)
            self._rng.bit_generator.state = rng_state
        else:
            record = self._test(step, lr_now)
        self.history.append(record)
        self.consecutive = self.consecutive + 1 if record["positive"] else 0
        if self.consecutive >= self.patience:
            record["switched"] = True
            self._switch(step, record["candidate_lr"], "test")
        self.test_seconds += time.perf_counter() - t0

    def _test(self, step: int, lr_now: float) -> dict[str, Any]:
        t0 = time.perf_counter()
        res: TestResult = run_test(np.asarray(self.losses), self._gp_state, self._rng, self.gp, self.gp_path)
        candidates = [self._lr_from_x(x, lr_now) for x in res.argmin_x]
        record = asdict(res)
        record.update(
            epoch=step // self.steps_per_epoch,
            step=step,
            lr_now=lr_now,
            candidate_lr=float(np.mean(candidates)) if candidates else None,
            candidate_lrs=candidates,
            switched=False,
            seconds=time.perf_counter() - t0,
        )
        return record

    # -- introspection and state -------------------------------------------------------------
    @property
    def warmup_losses(self) -> list[float]:
        """The per-step losses recorded during warmup (NaN where a step's loss was non-finite)."""
        return list(self.losses)

    def describe(self) -> dict[str, Any]:
        return {"name": "auto", "init_lr": self.init_lr, "max_lr": self.max_lr,
                "max_warmup_fraction": self.max_warmup_fraction, "max_warmup_steps": self.max_warmup_steps,
                "warmup": self.warmup, "decay": self.decay, "cooldown_fraction": self.cooldown_fraction,
                "patience": self.patience, "seed": self.seed, "gp_path": self.gp_path, "gp": asdict(self.gp),
                "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps}

    def summary(self) -> dict[str, Any]:
        """What a run record keeps of AutoWU: the switch, every test, and the warmup losses."""
        return {"switch_step": self.switch_step, "switch_lr": self.switch_lr, "switch_kind": self.switch_kind,
                "switch_epoch": None if self.switch_step is None else self.switch_step / self.steps_per_epoch,
                "tests": list(self.history), "warmup_losses": self.warmup_losses,
                "test_seconds": self.test_seconds, "config": self.describe()}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        pending = [float(v.item()) if isinstance(v, torch.Tensor) else float(v) for v in self._epoch_losses]
        state.update(
            phase=self.phase, switch_step=self.switch_step, switch_lr=self.switch_lr,
            switch_kind=self.switch_kind, consecutive=self.consecutive,
            history=[dict(r) for r in self.history], losses=list(self.losses), pending_losses=pending,
            gp_state=self._gp_state.to_dict(), rng_state=self._rng.bit_generator.state,
            config=self.describe(), test_seconds=self.test_seconds,
        )
        return state

    def _check_config(self, state: Mapping[str, Any], last_step: int, ratios: list[float],
                      last_lr: list[float] | None) -> None:
        if state.get("phase") not in _PHASES:
            raise ValueError("not an AutoWU state dict (no valid 'phase')")
        cfg = state.get("config") or {}
        if not isinstance(cfg, Mapping):
            raise ValueError("AutoWU state has no valid 'config'")
        # every setting that shapes the LRs or the decisions must match, or the resumed run is another run
        mine = self.describe()
        for key, value in cfg.items():
            if key in mine and value != mine[key]:
                raise ValueError(f"AutoWU state has {key}={value!r}, this scheduler {mine[key]!r}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # everything is checked and converted before anything is assigned: a refused state loads nothing
        if not isinstance(state, Mapping) or state.get("phase") not in _PHASES:
            raise ValueError("not an AutoWU state dict (no valid 'phase')")
        base = self._check_state(state)
        try:
            switch_step = None if state["switch_step"] is None else int(state["switch_step"])
            switch_lr = None if state["switch_lr"] is None else float(state["switch_lr"])
            switch_kind = state["switch_kind"]
            consecutive = int(state["consecutive"])
            history = [dict(r) for r in state["history"]]
            losses = [float(v) for v in state["losses"]]
            pending = [float(v) for v in state["pending_losses"]]
            gp_state = GPState.from_dict(state["gp_state"])
            rng = np.random.default_rng()
            rng.bit_generator.state = state["rng_state"]
            test_seconds = float(state.get("test_seconds", 0.0))  # kept so a resumed run reports it all
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a usable AutoWU state dict ({type(err).__name__}: {err})") from None
        if (state["phase"] == "decay") != (switch_step is not None and switch_lr is not None) or \
                switch_kind not in ((None,) if switch_step is None else self.SWITCH_KINDS):
            raise ValueError("AutoWU state has an inconsistent switch (phase, switch_step, switch_lr, switch_kind)")
        self._phase = state["phase"]
        self.switch_step, self.switch_lr, self.switch_kind = switch_step, switch_lr, switch_kind
        self.consecutive = consecutive
        self.history = history
        self.losses = losses
        self._epoch_losses = pending
        self._gp_state = gp_state
        self._rng = rng
        self.test_seconds = test_seconds
        self._restore(*base)

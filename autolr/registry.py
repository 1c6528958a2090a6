"""Every scheduling method of autolr, one entry each, and ``build_scheduler``, the factory.

An entry says what the rest of the project needs to know about a method: how to build it, what
``lr`` means for it (or that it takes none), whether it takes a warmup, how the sweep tunes it,
its label in tables and figures, and its own options (type, default, help). train.py's
``--sched`` choices and option flags, the sweep's tuning stages and the results' labels are read
from here, so a new method is one ``register(...)`` call::

    register(Method("mine", build=build_mine, label="Mine", lr="the peak LR", warmup=True,
                    tuning="per_batch"))

The peers of AutoWU (``autolr.peers``, issue 10) are entries too: Schedule-Free AdamW and Prodigy
replace the run's optimizer (``replaces_optimizer``, built by ``optimizer``), and the LR range test
gets its peak from a test train.py runs before training (``stand_ins`` gives the checks made
before then a value for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from autolr import schedules
from autolr.autoplus import AutoWUPlus, AutoWUPlusOptions
from autolr.autowu import AutoWU, AutoWUOptions
from autolr.peers import prodigy, schedulefree
from autolr.scheduler import Option, Scheduler, _check_positive, _check_positive_int, options_of

__all__ = ["Method", "SCHEDULERS", "register", "build_scheduler", "check_settings", "flag_options",
           "methods_tuned", "RANGETEST_WARMUP_EPOCHS"]

#: how the sweep searches a method's lr: once at the smallest batch B0 and carried to the others by
#: the method's rule ("b0"), at every batch size ("per_batch"), not at all ("never"), or with one
#: run of its own before training, such as an LR range test ("one_run")
Tuning = Literal["b0", "per_batch", "never", "one_run"]


@dataclass(frozen=True)
class Method:
    """One scheduling method.

    ``build(optimizer, *, steps_per_epoch, total_epochs, batch_size, **kwargs)`` receives ``lr``
    when ``lr`` is not None, ``warmup_epochs`` when ``warmup``, ``legw_b0`` when ``takes_b0``, and
    the method's ``options``. A method that ``replaces_optimizer`` trains with the optimizer
    ``optimizer(params, *, total_steps, weight_decay)`` builds, not the run's ``--opt``.
    """

    name: str
    build: Callable[..., Scheduler]
    label: str  # in tables and figures
    lr: str | None  # what lr means for it; None: it takes none, it finds its own peak
    warmup: bool  # takes warmup_epochs
    tuning: Tuning
    options: tuple[Option, ...] = ()
    takes_b0: bool = False  # takes legw_b0, the batch size its lr and warmup were tuned at
    replaces_optimizer: bool = False  # builds its own optimizer (Schedule-Free, Prodigy)
    optimizer: Callable[..., torch.optim.Optimizer] | None = None  # that optimizer's builder
    # AutoWU or a variant: its scheduler keeps the GP tests (``history``, ``test_seconds``, ``summary()``,
    # which go to the record's ``autowu`` block and to TensorBoard) and takes AutoWU's search range
    autowu_family: bool = False
    # options train.py sets once training has started (the range test's peak), with the value the
    # checks made before then build the method with (``check_settings``)
    stand_ins: Mapping[str, Any] = field(default_factory=dict)

    @property
    def flags(self) -> tuple[str, ...]:
        """Its options that are train.py flags (part of a run's identity)."""
        return tuple(o.name for o in self.options if o.flag)

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def __post_init__(self) -> None:
        if self.tuning not in ("b0", "per_batch", "never", "one_run"):
            raise ValueError(f"{self.name}: tuning must be b0, per_batch, never or one_run, got {self.tuning!r}")
        if self.replaces_optimizer != (self.optimizer is not None):
            raise ValueError(f"{self.name}: a method that replaces the optimizer gives its builder (optimizer=), "
                             "and only such a method does")
        if self.autowu_family and self.lr is not None:
            raise ValueError(f"{self.name}: AutoWU's family finds its own peak: lr must be None")


#: every method ``build_scheduler`` accepts, by name, in the order of tables and figures
SCHEDULERS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add a method (its name must be new)."""
    if method.name in SCHEDULERS:
        raise ValueError(f"a scheduler named {method.name!r} is registered already")
    SCHEDULERS[method.name] = method
    return method


def flag_options() -> Iterator[tuple[Option, list[str]]]:
    """Every option that is a train.py flag, once, with the names of the methods that take it."""
    seen: dict[str, tuple[Option, list[str]]] = {}
    for m in SCHEDULERS.values():
        for o in m.options:
            if o.flag:
                seen.setdefault(o.name, (o, []))[1].append(m.name)
    yield from seen.values()


def methods_tuned(*how: Tuning) -> tuple[str, ...]:
    """The names of the methods tuned in one of the ways ``how``."""
    return tuple(name for name, m in SCHEDULERS.items() if m.tuning in how)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, *, steps_per_epoch: int,
                    total_epochs: int, batch_size: int, lr: float | None = None,
                    warmup_epochs: float | None = None, legw_b0: int | None = None,
                    **options: Any) -> Scheduler:
    """Build any registered scheduler by name (see ``SCHEDULERS``).

    ``batch_size`` is the global batch. ``warmup_epochs`` defaults to 5 for ``linear`` and
    ``fixed`` and is the base warmup w0 at batch ``legw_b0`` for ``legw``. Remaining keyword
    arguments are the method's own options (``AutoWU``'s ``init_lr``, ``max_lr``, ...).
    """
    m = SCHEDULERS.get(name)
    if m is None:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    batch_size = _check_positive_int("batch_size", batch_size)
    kwargs: dict[str, Any] = {}
    if m.lr is None:
        if lr is not None:
            hint = f" and set {' / '.join(o.name for o in m.options if o.name.endswith('_lr'))} instead" \
                if any(o.name.endswith("_lr") for o in m.options) else ""
            why = "finds its own peak LR" if m.autowu_family else "sets its own LR"
            raise ValueError(f"{m.label} {why}: drop lr{hint}")
    elif lr is None:
        raise ValueError(f"scheduler {name!r} needs lr ({m.lr})")
    else:
        kwargs["lr"] = _check_positive("lr", lr)
    if legw_b0 is not None and not m.takes_b0:
        raise ValueError(f"legw_b0 is for the {' / '.join(n for n, e in SCHEDULERS.items() if e.takes_b0)} "
                         f"scheduler only, not {name!r}")
    if m.takes_b0:
        kwargs["legw_b0"] = legw_b0
    if m.warmup:
        kwargs["warmup_epochs"] = warmup_epochs
    elif m.lr is None and warmup_epochs is not None:
        why = "its warmup length is adaptive" if m.autowu_family else "its warmup is part of the method"
        raise ValueError(f"{m.label} takes no warmup_epochs: {why}")
    elif warmup_epochs not in (None, 0, 0.0):
        raise ValueError(f"scheduler {name!r} has no warmup; drop warmup_epochs")
    unknown = sorted(set(options) - {o.name for o in m.options})
    if unknown:
        owners = [e for e in SCHEDULERS.values() if set(unknown) <= {o.name for o in e.options}]
        where = f"for {owners[0].label} only (schedulers {', '.join(e.name for e in owners)})" if owners else "unknown"
        raise ValueError(f"options {unknown} are {where}, not {name!r}")
    return m.build(optimizer, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs, batch_size=batch_size,
                   **kwargs, **options)


def check_settings(name: str, *, steps_per_epoch: int, total_epochs: int, batch_size: int, weight_decay: float,
                   **options: Any) -> None:
    """Raise ValueError where a run of method ``name`` with these settings would be refused.

    No data and no model are needed: the method is built on a stand-in parameter, with its own
    optimizer when it replaces the run's (an ImportError says which package is missing), and the
    entry's ``stand_ins`` for options only known once training has started. train.py and the
    sweep check every run this way before anything is written.
    """
    m = SCHEDULERS.get(name)
    if m is None:
        raise ValueError(f"unknown scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    param = torch.zeros(1, requires_grad=True)
    if m.optimizer is not None:
        optimizer = m.optimizer([param], total_steps=steps_per_epoch * total_epochs, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.SGD([param], lr=1.0)
    build_scheduler(name, optimizer, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                    batch_size=batch_size, **{**m.stand_ins, **options})


def _build_auto(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                **options: Any) -> Scheduler:
    return AutoWU(optimizer, steps_per_epoch, total_epochs, **options)


def _build_autoplus(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                    **options: Any) -> Scheduler:
    if "div_factor" in options:
        options["div_factor"] = options["div_factor"] or None  # 0 (--div-factor 0) turns the guard off
    return AutoWUPlus(optimizer, steps_per_epoch, total_epochs, **options)


def _build_schedulefree(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int,
                        batch_size: int) -> Scheduler:
    # the optimizer warms up by itself and never decays: the scheduler only reports its LR
    return schedulefree.ScheduleFreeLR(optimizer, steps_per_epoch * total_epochs)  # type: ignore[return-value]


def _schedulefree_optimizer(params: Any, *, total_steps: int, weight_decay: float) -> torch.optim.Optimizer:
    return schedulefree.build_optimizer(params, total_steps=total_steps, weight_decay=weight_decay)


def _build_prodigy(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int,
                   batch_size: int) -> Scheduler:
    return prodigy.ProdigyCosine(optimizer, steps_per_epoch * total_epochs)  # type: ignore[return-value]


def _prodigy_optimizer(params: Any, *, total_steps: int, weight_decay: float) -> torch.optim.Optimizer:
    return prodigy.build_optimizer(params, weight_decay=weight_decay)  # its cosine knows T, not the optimizer


#: the range test's schedule after the test: ``fixed``'s default warmup (PEERS.md: "fixed's 5-epoch warmup")
RANGETEST_WARMUP_EPOCHS = schedules.DEFAULT_WARMUP_EPOCHS


def _build_rangetest(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                     peak_lr: float | None = None) -> Scheduler:
    """``fixed``'s schedule (linear warmup over 5 epochs, cosine to 0) at the peak the range test found."""
    if peak_lr is None:
        raise ValueError("rangetest needs peak_lr, the peak its LR range test found (autolr.peers.rangetest."
                         "range_test; train.py runs it before training)")
    warmup = int(round(RANGETEST_WARMUP_EPOCHS * steps_per_epoch))
    if warmup >= steps_per_epoch * total_epochs:
        raise ValueError(f"rangetest warms up over {RANGETEST_WARMUP_EPOCHS:g} epochs, which leaves no decay in a "
                         f"run of {total_epochs} epochs: give it more epochs")
    return schedules.WarmupCosine(optimizer, steps_per_epoch, total_epochs, peak_lr=peak_lr, warmup_steps=warmup,
                                  info={"name": "rangetest", "warmup_epochs": float(RANGETEST_WARMUP_EPOCHS)})


def _merged(*groups: tuple[Option, ...], drop: tuple[str, ...] = ()) -> tuple[Option, ...]:
    """Options of several groups; a later group's option replaces an earlier one of the same name."""
    out: dict[str, Option] = {}
    for group in groups:
        out.update((o.name, o) for o in group if o.name not in drop)
    return tuple(out.values())


# -- the methods, in the order of tables and figures ---------------------------------------------------
register(Method("auto", build=_build_auto, label="AutoWU", lr=None, warmup=False, tuning="never",
                options=options_of(AutoWUOptions), autowu_family=True))
# AutoWU+ takes AutoWU's options but ramp_fraction for max_warmup_fraction (and its own ramp for the
# warmup path), and its own
register(Method("autoplus", build=_build_autoplus, label="AutoWU+", lr=None, warmup=False, tuning="never",
                options=_merged(options_of(AutoWUOptions), options_of(AutoWUPlusOptions),
                                drop=("max_warmup_fraction", "warmup")), autowu_family=True))
register(Method("linear", build=schedules.build_linear, label="linear (Goyal)",
                lr="base LR per 256 examples: peak = lr * B / 256, linear warmup over warmup_epochs",
                warmup=True, tuning="b0"))
register(Method("legw", build=schedules.build_legw, label="LEGW",
                lr="the LR at legw_b0: peak = lr * sqrt(B / B0), warmup epochs = w0 * B / B0, capped at half "
                   "the budget", warmup=True, tuning="b0", takes_b0=True))
register(Method("fixed", build=schedules.build_fixed, label="fixed warmup",
                lr="the peak, reached by a linear warmup over warmup_epochs", warmup=True, tuning="per_batch"))
register(Method("cosine", build=schedules.build_cosine, label="cosine", lr="the peak: cosine decay, no warmup",
                warmup=False, tuning="per_batch"))
register(Method("constant", build=schedules.build_constant, label="constant", lr="the constant LR",
                warmup=False, tuning="per_batch"))
# the peers (autolr.peers; shared/PEERS.md): no lr of theirs is tuned. Schedule-Free's lr 0.0025 is
# AlgoPerf's fixed default, Prodigy's lr is a multiplier of its estimate fixed at 1, and the range
# test's peak comes from its own test, charged as one tuning run at its real cost
register(Method("schedulefree", build=_build_schedulefree, label="Schedule-Free AdamW", lr=None, warmup=False,
                tuning="never", replaces_optimizer=True, optimizer=_schedulefree_optimizer))
register(Method("prodigy", build=_build_prodigy, label="Prodigy", lr=None, warmup=False, tuning="never",
                replaces_optimizer=True, optimizer=_prodigy_optimizer))
register(Method("rangetest", build=_build_rangetest, label="LR range test", lr=None, warmup=False, tuning="one_run",
                options=(Option("peak_lr", float, None, "the peak its LR range test found (set by train.py)"),),
                stand_ins={"peak_lr": 1.0}))

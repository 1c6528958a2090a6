"""Every scheduling method of autolr, one entry each, and ``build_scheduler``, the factory.

An entry says what the rest of the project needs to know about a method: how to build it, what
``lr`` means for it (or that it takes none), whether it takes a warmup, how the sweep tunes it,
its label in tables and figures, and its own options (type, default, help). train.py's
``--sched`` choices and option flags, the sweep's tuning stages and the results' labels are read
from here, so a new method is one ``register(...)`` call::

    register(Method("mine", build=build_mine, label="Mine", lr="the peak LR", warmup=True,
                    tuning="per_batch"))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from autolr import schedules
from autolr.autoplus import AutoWUPlus, AutoWUPlusOptions
from autolr.autowu import AutoWU, AutoWUOptions
from autolr.scheduler import Option, Scheduler, _check_positive, _check_positive_int, options_of

__all__ = ["Method", "SCHEDULERS", "register", "build_scheduler", "flag_options", "methods_tuned"]

#: how the sweep searches a method's lr: once at the smallest batch B0 and carried to the others by
#: the method's rule ("b0"), at every batch size ("per_batch"), not at all ("never"), or with one
#: run of its own before training, such as an LR range test ("one_run")
Tuning = Literal["b0", "per_batch", "never", "one_run"]


@dataclass(frozen=True)
class Method:
    """One scheduling method.

    ``build(optimizer, *, steps_per_epoch, total_epochs, batch_size, **kwargs)`` receives ``lr``
    when ``lr`` is not None, ``warmup_epochs`` when ``warmup``, ``legw_b0`` when ``takes_b0``, and
    the method's ``options``.
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

    @property
    def flags(self) -> tuple[str, ...]:
        """Its options that are train.py flags (part of a run's identity)."""
        return tuple(o.name for o in self.options if o.flag)

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def __post_init__(self) -> None:
        if self.tuning not in ("b0", "per_batch", "never", "one_run"):
            raise ValueError(f"{self.name}: tuning must be b0, per_batch, never or one_run, got {self.tuning!r}")


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
            raise ValueError(f"{m.label} finds its own peak LR: drop lr{hint}")
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
        raise ValueError(f"{m.label} takes no warmup_epochs: its warmup length is adaptive")
    elif warmup_epochs not in (None, 0, 0.0):
        raise ValueError(f"scheduler {name!r} has no warmup; drop warmup_epochs")
    unknown = sorted(set(options) - {o.name for o in m.options})
    if unknown:
        owners = [e for e in SCHEDULERS.values() if set(unknown) <= {o.name for o in e.options}]
        where = f"for {owners[0].label} only (schedulers {', '.join(e.name for e in owners)})" if owners else "unknown"
        raise ValueError(f"options {unknown} are {where}, not {name!r}")
    return m.build(optimizer, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs, batch_size=batch_size,
                   **kwargs, **options)


def _build_auto(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                **options: Any) -> Scheduler:
    return AutoWU(optimizer, steps_per_epoch, total_epochs, **options)


def _build_autoplus(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, total_epochs: int, batch_size: int,
                    **options: Any) -> Scheduler:
    if "div_factor" in options:
        options["div_factor"] = options["div_factor"] or None  # 0 (--div-factor 0) turns the guard off
    return AutoWUPlus(optimizer, steps_per_epoch, total_epochs, **options)


def _merged(*groups: tuple[Option, ...], drop: tuple[str, ...] = ()) -> tuple[Option, ...]:
    """Options of several groups; a later group's option replaces an earlier one of the same name."""
    out: dict[str, Option] = {}
    for group in groups:
        out.update((o.name, o) for o in group if o.name not in drop)
    return tuple(out.values())


# -- the methods, in the order of tables and figures ---------------------------------------------------
register(Method("auto", build=_build_auto, label="AutoWU", lr=None, warmup=False, tuning="never",
                options=options_of(AutoWUOptions)))
# AutoWU+ takes AutoWU's options but ramp_fraction for max_warmup_fraction, and its own
register(Method("autoplus", build=_build_autoplus, label="AutoWU+", lr=None, warmup=False, tuning="never",
                options=_merged(options_of(AutoWUOptions), options_of(AutoWUPlusOptions),
                                drop=("max_warmup_fraction",))))
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

"""The definition of a run: every train.py setting declared once, with its type, default, help and role.

``RunConfig``'s fields are train.py's flags (its parser is generated from them, so ``--help``
shows the real defaults) plus three values derived from the recipe. Each field has a role:

- ``IDENTITY``: what is computed. Part of the run's id, the hash of the resolved config.
- ``OPERATIONAL``: where things go or how fast, never what is computed: not part of the id (the
  same run on another machine, its data elsewhere, is the same run).

and may be ``sweep``-managed: set by the sweep runner per run, so a sweep file may not set it in
``train_args``. Settings of one family of schedulers only (AutoWU's search range, the baselines'
LR and warmup) leave the resolved config when another family runs.

``resolve`` fills the recipe's defaults and checks every setting; ``run_id`` hashes the result.
The sweep, the benchmarks and the tests import these rather than the script train.py.

The resolved config of a run must never change for an existing run: every committed record's
``run_id`` is the hash of its stored config (tests/test_config.py recomputes them all).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from autolr.recipes import RECIPES, get_recipe  # the datasets' training recipes
from autolr.registry import SCHEDULERS, flag_options  # the methods: lr, warmup, B0, their options

__all__ = ["IDENTITY", "OPERATIONAL", "AUTOWU_FAMILY", "NO_LR", "OWN_OPTIMIZER", "RunConfig", "UsageError",
           "build_parser", "options_of", "scheduler_keys", "operational_keys", "sweep_keys", "resolve", "run_id"]

IDENTITY = "identity"
OPERATIONAL = "operational"
#: methods that take no --lr (nor --warmup-epochs, --legw-b0): AutoWU's family and the peers
NO_LR = tuple(name for name, m in SCHEDULERS.items() if m.lr is None)
#: AutoWU and its variants (the registry's ``autowu_family``): they take AutoWU's search range and
#: report its GP tests; the peers take no lr either, but are not AutoWU
AUTOWU_FAMILY = tuple(name for name, m in SCHEDULERS.items() if m.autowu_family)
#: methods that train with an optimizer of their own (Schedule-Free, Prodigy): no --opt
OWN_OPTIMIZER = tuple(name for name, m in SCHEDULERS.items() if m.replaces_optimizer)
#: a setting of every scheduler outside NO_LR (the baselines)
_BASELINES = "baselines"
DATASETS = tuple(RECIPES)


class UsageError(Exception):
    """Bad flags or impossible settings: train.py reports it in one line, exit code 2."""


def setting(default: Any, help: str, *, group: str, role: str = IDENTITY, sweep: bool = False,
            choices: Callable[[], list[str]] | tuple[str, ...] | None = None,
            recipe: Callable[[Any], Any] | None = None, scheds: str | tuple[str, ...] | None = None,
            resolved: Any = None, flag: bool = True, run_optimizer: bool = False, sparse: bool = False) -> Any:
    """A field of RunConfig. ``recipe``: the recipe's value when the flag is not given (shown in
    --help); ``scheds``: the schedulers it belongs to (None: all; _BASELINES: all outside
    NO_LR); ``resolved``: the value a scheduler's own setting takes when not given;
    ``flag=False``: derived, no flag; ``run_optimizer``: a setting of the run's optimizer, which
    the methods of OWN_OPTIMIZER do not take (nor record); ``sparse``: recorded (and hashed into
    the run_id) only when given, so that a setting added to a method later leaves the run_ids of
    its earlier runs as they were."""
    return field(default=default, metadata={"help": help, "group": group, "role": role, "sweep": sweep,
                                            "choices": choices, "recipe": recipe, "scheds": scheds,
                                            "resolved": resolved, "flag": flag, "run_optimizer": run_optimizer,
                                            "sparse": sparse})


#: every scheduler option that is a train.py flag, with the methods that take it (the registry's)
_SCHEDULER_OPTIONS = {o.name: (o, tuple(methods)) for o, methods in flag_options()}


def scheduler_setting(name: str, *, resolved: bool = True, help: str | None = None, sparse: bool = False) -> Any:
    """A RunConfig field for a scheduler option, declared once in the registry (autolr/registry.py):
    its default, help, choices and the methods that take it come from there. ``resolved``: the flag
    defaults to None and takes the option's default when its method runs (the settings added after
    AutoWU's, so that a record says what was asked); otherwise the option's default is the flag's."""
    option, methods = _SCHEDULER_OPTIONS[name]
    text = f"{', '.join(methods)}: {help or option.help}"
    if sparse:  # None unless given: the scheduler's own default applies, and the record does not name it
        return setting(None, f"{text} (default: {option.default})", group="schedule", sweep=True,
                       choices=option.choices, scheds=methods, sparse=True)
    if resolved:
        return setting(None, text, group="schedule", sweep=True, choices=option.choices, scheds=methods,
                       resolved=option.default)
    return setting(option.default, text, group="schedule", sweep=True, choices=option.choices, scheds=methods)


def _scheduler_names() -> list[str]:
    return list(SCHEDULERS)  # the registry's, in its order


def _b0(r: Any) -> int:
    return r.batch_sizes[0]


@dataclass
class RunConfig:
    """Every setting of a train.py run, in flag order (the record's ``config`` keeps this order)."""

    # -- data
    data: str = setting("fashion-mnist", "the dataset", group="data", choices=DATASETS, sweep=True)
    data_root: str = setting("data", "datasets and .beton files live here", group="data", role=OPERATIONAL)
    subset: int | None = setting(None, "train on N examples of the training pool (default: all of it)",
                                 group="data", sweep=True)
    val_size: int | None = setting(None, "validation examples carved from the official training set",
                                   group="data", recipe=lambda r: r.val_size)
    loader: str | None = setting(None, "ffcv (default), or tensor: the whole split in device memory "
                                 "(small sets only)", group="data", choices=("ffcv", "tensor"))
    loader_workers: int | None = setting(None, "FFCV worker threads (default: the cores)", group="data",
                                         role=OPERATIONAL)
    # -- model and optimizer
    model: str | None = setting(None, "any timm model or a CIFAR one of autolr.models", group="model",
                                sweep=True, recipe=lambda r: r.model)
    opt: str | None = setting(None, "the optimizer (not with --sched " + "/".join(OWN_OPTIMIZER) + ", which bring "
                              "their own)", group="model", sweep=True, choices=("adamp", "lamb", "sgd", "adamw"),
                              recipe=lambda r: r.opt, run_optimizer=True)
    wd: float | None = setting(None, "weight decay", group="model", recipe=lambda r: r.weight_decay)
    label_smoothing: float | None = setting(None, "label smoothing (default: 0.1 for EfficientNet, else 0)",
                                            group="model")
    # -- batch and budget
    bs: int | None = setting(None, "global batch size (B0, the smallest of the recipe's grid, by default)",
                             group="batch", sweep=True, recipe=_b0)
    micro_bs: int | None = setting(None, "examples per forward pass and device: the batch-norm batch",
                                   group="batch", recipe=lambda r: r.micro_bs)
    epochs: int | None = setting(None, "the epoch budget", group="batch", sweep=True, recipe=lambda r: r.epochs)
    seed: int = setting(0, "seed of the weights, the data order and AutoWU's GP", group="batch", sweep=True)
    # -- schedule
    sched: str = setting("auto", "the learning-rate scheduler", group="schedule", sweep=True,
                         choices=_scheduler_names)
    lr: float | None = setting(None, "linear: base LR per 256 examples; legw: LR at --legw-b0; "
                               "fixed/cosine/constant: the peak (required for all of them)", group="schedule",
                               sweep=True, scheds=_BASELINES)
    warmup_epochs: float | None = setting(None, "linear/fixed: warmup epochs (default 5); legw: w0 at B0",
                                          group="schedule", sweep=True, scheds=_BASELINES)
    legw_b0: int | None = setting(None, "legw: the batch size --lr was tuned at (default: the recipe's B0)",
                                  group="schedule", sweep=True, scheds=_BASELINES)
    # the schedulers' own options: defaults, help and owners from the registry, in the records' order
    init_lr: float = scheduler_setting("init_lr", resolved=False)
    max_lr: float = scheduler_setting("max_lr", resolved=False)
    max_warmup_fraction: float = scheduler_setting("max_warmup_fraction", resolved=False)
    decay: str = scheduler_setting("decay", resolved=False)
    gp_path: str = scheduler_setting("gp_path", resolved=False)
    # added after AutoWU's records: the paper's linear-growth ablation (sweeps/ablations.yaml)
    warmup: str | None = scheduler_setting("warmup", sparse=True)
    ramp_fraction: float | None = scheduler_setting("ramp_fraction")
    candidate: str | None = scheduler_setting("candidate")
    lr_factor: float | None = scheduler_setting("lr_factor")
    test_fraction: float | None = scheduler_setting("test_fraction")
    patience: int | None = scheduler_setting("patience")
    div_factor: float | None = scheduler_setting("div_factor")
    rollback: bool | None = scheduler_setting("rollback", help="at the switch, back to the weights at the loss "
                                              "minimum (--no-rollback: keep the weights the ramp left)")
    accel: float | None = scheduler_setting("accel")
    max_growth: float | None = scheduler_setting("max_growth")
    # -- runs
    out: str = setting("results/runs", "the record goes to OUT/<run_id>.json", group="runs", role=OPERATIONAL,
                       sweep=True)
    ckpt_dir: str = setting("checkpoints", "checkpoints go to CKPT_DIR/<run_id>/", group="runs",
                            role=OPERATIONAL, sweep=True)
    resume: bool = setting(False, "continue from the run's checkpoint if there is one", group="runs",
                           role=OPERATIONAL, sweep=True)
    keep_ckpt: bool = setting(False, "keep the checkpoint after the run finishes", group="runs", role=OPERATIONAL)
    device: str | None = setting(None, "cpu, cuda, cuda:1 (default: cuda if available)", group="runs",
                                 role=OPERATIONAL)
    compile: bool = setting(False, "torch.compile the model (GPU)", group="runs", role=OPERATIONAL)
    amp: str = setting("auto", "bf16 autocast (auto: on GPU)", group="runs", choices=("auto", "bf16", "off"))
    channels_last: str = setting("auto", "channels-last memory format (auto: on GPU)", group="runs",
                                 choices=("auto", "on", "off"))
    progress: str = setting("auto", "tqdm bars (auto: on a terminal)", group="runs", role=OPERATIONAL,
                            sweep=True, choices=("auto", "on", "off"))
    tensorboard: str | None = setting(None, "write TensorBoard event files (loss, LR, accuracy, AutoWU's tests) "
                                      "to TENSORBOARD/<run_id>/ (needs the tensorboard package)", group="runs",
                                      role=OPERATIONAL)
    overwrite: bool = setting(False, "train again a run whose finished record exists, and replace the record",
                              group="runs", role=OPERATIONAL)
    # -- derived from the recipe (no flags)
    recipe_micro_bs: int | None = setting(None, "the recipe's batch-norm batch", group="derived", flag=False)
    sync_bn: bool = setting(False, "sync batch norm over processes (EfficientNet)", group="derived", flag=False)
    recipe: str | None = setting(None, "the recipe's name", group="derived", flag=False)

    def as_record(self) -> dict[str, Any]:
        """The config as stored in the run's record and hashed into its id: other schedulers'
        settings left out."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if _belongs(f, self.sched)
                and not (f.metadata["sparse"] and getattr(self, f.name) is None)}

    def scheduler_options(self) -> dict[str, Any]:
        """build_scheduler's keyword arguments for this run's scheduler."""
        opts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["scheds"] is not None and _belongs(f, self.sched)
                and not (f.metadata["sparse"] and getattr(self, f.name) is None)}
        if "seed" in {o.name for o in SCHEDULERS[self.sched].options}:
            opts["seed"] = self.seed  # the method's seed is the run's
        if self.sched == "autoplus":
            opts["div_factor"] = self.div_factor or None  # 0: no divergence guard
        return opts


def _belongs(f: dataclasses.Field[Any], sched: str) -> bool:
    if f.metadata["run_optimizer"] and sched in OWN_OPTIMIZER:
        return False
    scheds = f.metadata["scheds"]
    if scheds is None:
        return True
    if scheds == _BASELINES:
        return sched not in NO_LR
    return sched in scheds


def options_of(sched: str) -> tuple[str, ...]:
    """The settings of one scheduler (its flags beyond the common ones)."""
    return tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["scheds"] is not None
                 and _belongs(f, sched))


def scheduler_keys() -> frozenset[str]:
    """Settings of some schedulers only (every scheduler's own options together)."""
    return frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata["scheds"] is not None)


def operational_keys() -> frozenset[str]:
    """Settings that never change what is computed: left out of the run_id."""
    return frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata["role"] == OPERATIONAL)


def sweep_keys() -> frozenset[str]:
    """Settings the sweep runner sets per run (a sweep file's train_args may not)."""
    return frozenset(f.name for f in dataclasses.fields(RunConfig) if f.metadata["sweep"])


# ---------------------------------------------------------------------------------------------
# The command line, generated from RunConfig
# ---------------------------------------------------------------------------------------------
_GROUPS = {"data": "data", "model": "model and optimizer", "batch": "batch and budget", "schedule": "schedule",
           "runs": "runs"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, not the whole usage: the flags are in --help
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _recipe_default_text(get: Callable[[Any], Any]) -> str:
    by_value: dict[str, list[str]] = {}
    for name, r in RECIPES.items():
        by_value.setdefault(str(get(r)), []).append(name)
    return "; ".join(f"{'/'.join(names)}: {value}" for value, names in by_value.items())


def build_parser(prog: str = "train.py", description: str | None = None) -> argparse.ArgumentParser:
    """train.py's parser: one flag per RunConfig field, its default shown as resolved."""
    import typing

    p = _Parser(prog=prog, description=description, allow_abbrev=False,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {k: p.add_argument_group(title) for k, title in _GROUPS.items()}
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        m = f.metadata
        if not m["flag"]:
            continue
        flag = "--" + f.name.replace("_", "-")
        choices = m["choices"]() if callable(m["choices"]) else m["choices"]
        help_text = m["help"]
        if m["recipe"] is not None:
            help_text += f" (default: the recipe's, {_recipe_default_text(m['recipe'])})"
        elif m["resolved"] is not None:
            help_text += f" (default: {m['resolved']})"
        elif f.default is not None and f.default is not False:
            help_text += f" (default: {f.default})"
        kwargs: dict[str, Any] = {"default": f.default, "help": help_text.replace("%", "%%")}
        base = [t for t in typing.get_args(hints[f.name]) if t is not type(None)] or [hints[f.name]]
        if hints[f.name] is bool:
            kwargs["action"] = "store_true"
        elif base[0] is bool:  # a switch that is on unless turned off: --x / --no-x
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if base[0] is not str:
                kwargs["type"] = base[0]
            if choices is not None:
                kwargs["choices"] = list(choices)
        groups[m["group"]].add_argument(flag, **kwargs)
    return p


# ---------------------------------------------------------------------------------------------
# Resolution and identity
# ---------------------------------------------------------------------------------------------
def resolve(args: argparse.Namespace | Mapping[str, Any]) -> RunConfig:
    """Fill the recipe's defaults, check every setting, and return the run's full config.

    Raises UsageError for impossible settings. Checks that need the data or the devices are
    train.py's (they come before anything is written, too).
    """
    from autolr.schedules import DEFAULT_WARMUP_EPOCHS

    given = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    unknown = set(given) - {f.name for f in dataclasses.fields(RunConfig)}
    if unknown:
        raise UsageError(f"unknown settings {sorted(unknown)}")
    c = RunConfig(**given)
    r = get_recipe(c.data)
    method = SCHEDULERS[c.sched]
    if method.replaces_optimizer and c.opt is not None:
        raise UsageError(f"--opt is not accepted with --sched {c.sched}: {method.label} trains with its own "
                         "optimizer (drop --opt)")
    # `is None`, not `or`: an explicit 0 is an error below, not a request for the default
    for f in dataclasses.fields(c):
        if f.metadata["recipe"] is not None and getattr(c, f.name) is None and _belongs(f, c.sched):
            setattr(c, f.name, f.metadata["recipe"](r))
    c.recipe_micro_bs = r.micro_bs
    c.loader = c.loader or "ffcv"
    if c.label_smoothing is None:
        c.label_smoothing = r.label_smoothing_for(c.model)
    c.sync_bn = r.sync_bn_for(c.model)
    c.recipe = r.dataset

    if c.loader == "tensor" and not r.spec.in_memory:
        raise UsageError(f"--loader tensor holds a whole split in memory: {r.spec.title} needs --loader ffcv")
    for name in ("bs", "micro_bs", "epochs"):
        value = getattr(c, name)
        if value is None or value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if c.subset is not None and c.subset < 1:
        raise UsageError(f"--subset must be a positive integer, got {c.subset}")
    if c.val_size < 1:
        raise UsageError(f"--val-size must be a positive integer, got {c.val_size}")
    if c.loader_workers is not None and c.loader_workers < 1:
        raise UsageError("--loader-workers must be at least 1")
    if not 0 <= c.label_smoothing < 1:
        raise UsageError("--label-smoothing must lie in [0, 1)")
    if not (math.isfinite(c.wd) and c.wd >= 0):
        raise UsageError(f"--wd must be finite and >= 0, got {c.wd}")
    if not 0 <= c.seed < 2**32:
        raise UsageError(f"--seed must lie in [0, 2**32), got {c.seed}")
    # a scheduler's own settings take their defaults for it, and are refused for any other
    for f in dataclasses.fields(c):
        if f.metadata["resolved"] is None:
            continue
        if _belongs(f, c.sched):
            if getattr(c, f.name) is None:
                setattr(c, f.name, f.metadata["resolved"])
        elif getattr(c, f.name) is not None:
            raise UsageError(f"--{f.name.replace('_', '-')} is for --sched {'/'.join(f.metadata['scheds'])} only")
    if c.sched in AUTOWU_FAMILY:
        if c.lr is not None:
            raise UsageError(f"--lr is not accepted with --sched {c.sched}: {method.label} finds the peak LR itself "
                             "(set --init-lr / --max-lr to change its search range)")
        if c.warmup_epochs is not None or c.legw_b0 is not None:
            raise UsageError(f"--warmup-epochs / --legw-b0 are for the baselines; {method.label}'s warmup is "
                             "adaptive")
        _check_autowu_range(c.init_lr, c.max_lr)
    elif c.sched in NO_LR:
        # the peers: the LR and the warmup are the method's own (registry.py says what each does)
        for name in ("lr", "warmup_epochs", "legw_b0"):
            if getattr(c, name) is not None:
                raise UsageError(f"--{name.replace('_', '-')} is not accepted with --sched {c.sched}: "
                                 f"the LR and the warmup are {method.label}'s own")
    else:
        if c.lr is None:
            raise UsageError(f"--sched {c.sched} needs --lr (see --help for what it means there)")
        if not method.takes_b0 and c.legw_b0 is not None:
            raise UsageError("--legw-b0 is only for --sched "
                             + " / ".join(n for n, m in SCHEDULERS.items() if m.takes_b0))
        if method.takes_b0 and c.legw_b0 is None:
            c.legw_b0 = r.batch_sizes[0]  # B0: the recipe grid's smallest batch
        if method.warmup and c.warmup_epochs is None:
            c.warmup_epochs = DEFAULT_WARMUP_EPOCHS  # resolved: with or without the flag, one run_id
        w = c.warmup_epochs
        if w is not None and not (math.isfinite(w) and w >= 0):
            raise UsageError(f"--warmup-epochs must be finite and >= 0, got {w}")
        # legw scales w0 by B/B0 and caps it at half the budget; the others take it as it is
        if w is not None and not method.takes_b0 and w >= c.epochs:
            raise UsageError(f"--warmup-epochs {w:g} leaves no decay in a run of {c.epochs} epochs: "
                             "use fewer warmup epochs")
    # another family's setting given with a value of its own would be dropped from the run without a
    # word (--init-lr with a peer): refused (a setting given at its default cannot be told apart)
    for f in dataclasses.fields(c):
        if (f.metadata["scheds"] not in (None, _BASELINES) and not _belongs(f, c.sched) and f.metadata["flag"]
                and getattr(c, f.name) != f.default):
            raise UsageError(f"--{f.name.replace('_', '-')} is for --sched {'/'.join(f.metadata['scheds'])} only, "
                             f"not {c.sched}")
    return c


def _check_autowu_range(init_lr: float, max_lr: float) -> None:
    for name, v in (("--init-lr", init_lr), ("--max-lr", max_lr)):
        if not (math.isfinite(v) and v > 0):
            raise UsageError(f"{name} must be finite and > 0, got {v}")
    # the exponential warmup climbs by powers of max_lr / init_lr: the ratio must be a finite number
    if not math.isfinite(max_lr / init_lr):
        raise UsageError(f"--max-lr / --init-lr = {max_lr:g} / {init_lr:g} overflows: "
                         "use a ratio below 1e300")
    if max_lr <= init_lr:
        raise UsageError(f"--max-lr ({max_lr:g}) must exceed --init-lr ({init_lr:g})")


def run_id(cfg: RunConfig | Mapping[str, Any]) -> str:
    """The run's id: a hash of its resolved config, operational settings left out."""
    record = cfg.as_record() if isinstance(cfg, RunConfig) else dict(cfg)
    skip = operational_keys()
    key = {k: v for k, v in sorted(record.items()) if k not in skip}
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


def parse(argv: list[str] | None = None) -> RunConfig:
    """argv (default: sys.argv[1:]) to a resolved config; for callers outside train.py."""
    return resolve(build_parser().parse_args(sys.argv[1:] if argv is None else argv))

"""Train a timm model at any global batch size under any autolr scheduler, and record the run.

    python train.py                                   # AutoWU, small CNN, Fashion-MNIST (offline)
    python train.py --sched auto --bs 16384           # the same at a very large batch
    python train.py --data cifar10 --sched linear --lr 1e-3 --bs 4096
    torchrun --nproc_per_node 8 train.py --data imagenet --bs 16384 --sched auto

``--bs`` is the global batch. Every process runs micro-batches of ``--micro-bs`` examples
(the recipe's per-device batch-norm batch) and accumulates gradients, so a batch of 16384 runs
on one CPU in bounded memory and scales unchanged over GPUs and nodes with torchrun (DDP).
Defaults come from autolr/recipes.py (REPRODUCTION.md's recipe table); every flag is declared
once in autolr/config.py. The run's record goes to ``--out/<run_id>.json`` (written atomically
at the end) and its checkpoint to ``checkpoints/<run_id>/`` (atomically at every epoch's end;
``--resume`` continues from it). Ctrl-C or SIGTERM stops a run with its last checkpoint kept.

The peers of AutoWU (``--sched schedulefree / prodigy / rangetest``, autolr/peers) need three
things of this loop: Schedule-Free AdamW evaluates, and is checkpointed, at its averaged weights x
with batch-norm statistics recomputed there (``to_eval_weights``), and trains at y
(``to_train_weights``); Prodigy's LR trace is its step size d·lr (its scheduler reports it); the
range test runs once before training from the initial weights, which it restores exactly, and
its result travels in the checkpoint so that a resumed run does not test again.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import random
import shlex
import signal
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autolr.config import AUTOWU_FAMILY, RunConfig, UsageError, build_parser, resolve, run_id
from autolr.files import FileLock, LockHeld, atomic_torch_save, stale_temporaries
from autolr.records import (
    SCHEMA,
    Record,
    RecordError,
    compact_lr_trace,
    git_info,
    read_record,
    record_path,
    write_record,
)

__all__ = ["SCHEMA", "CKPT_KEYS", "EVAL_MICRO_BS", "Interrupted", "main", "train", "cpu_threads"]

#: what an epoch-end checkpoint holds (see save_checkpoint); a rangetest run's also holds "range_test"
CKPT_KEYS = frozenset({"run_id", "epoch", "model", "optimizer", "scheduler", "rng", "epochs", "lrs", "phases",
                       "wall_seconds"})
#: evaluation's per-process batch (at least the training micro-batch): no gradients are kept, and
#: batch norm runs on its running statistics, so only the order of float sums depends on it
EVAL_MICRO_BS = 1024


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run stops where it is, its last checkpoint kept."""

    def __init__(self, signame: str = "SIGINT", checkpoint: Path | None = None, epochs_saved: int = 0):
        super().__init__(signame)
        self.signame, self.checkpoint, self.epochs_saved = signame, checkpoint, epochs_saved


# ---------------------------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------------------------
def cpu_threads() -> int:
    """torch's intra-op threads for this run: OMP_NUM_THREADS if set (torchrun sets 1), else the
    cores this process may use. Fixed here because FFCV changes it (see check)."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("OMP_NUM_THREADS", "0")) > 0:
            return int(os.environ["OMP_NUM_THREADS"])
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def check_folder(flag: str, path: str, *, write: bool) -> None:
    """``path`` is, or can become, a folder (writable when ``write``): else a UsageError now, not
    after the whole training."""
    p = Path(path)
    existing = p
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is a file, not a folder")
    if (write or existing != p) and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: {existing} is not writable")


def pick_device(name: str | None, local_rank: int) -> Any:
    import torch

    if name is None:
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        try:
            torch.empty(1, device=device)
            usable = device.type != "meta"
        except Exception:  # noqa: BLE001 - whatever the backend raises, the device is not usable here
            usable = False
        if not usable:
            raise UsageError(f"--device {name}: not available in this PyTorch build or on this machine; "
                             "use cpu or cuda")
    return device


# ---------------------------------------------------------------------------------------------
# 1. Resolve and check: every check comes before a process group starts or a file is written
# ---------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """A checked run: its config, its place among the processes, its device and its files."""

    cfg: RunConfig
    run_id: str
    info: dict[str, Any]  # autolr.data.dataset_info
    world: int
    rank: int
    per_rank: int
    micro: int
    accum: int
    device: Any
    threads: int
    model: Any  # built on the CPU, checked on this dataset's images
    out_path: Path
    ckpt_path: Path
    use_amp: bool
    channels_last: bool
    progress: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def log(self, *args: Any, **kwargs: Any) -> None:
        if self.is_main:
            print(*args, **kwargs)


def check(args: argparse.Namespace) -> Setup:
    import numpy as np
    import torch

    from autolr.data import dataset_info
    from autolr.models import build_model
    from autolr.registry import check_settings

    cfg = resolve(args)
    pool = dataset_info(cfg.data, val_size=cfg.val_size)["train_size"]  # before --subset is checked against it
    if pool < 1:
        n = pool + cfg.val_size
        raise UsageError(f"--val-size {cfg.val_size} leaves no training examples: {cfg.data}'s official "
                         f"training set has {n}; pick at most {n - 1}")
    info = dataset_info(cfg.data, subset=cfg.subset, val_size=cfg.val_size)
    if cfg.bs > info["train_size"]:
        raise UsageError(f"--bs {cfg.bs} is larger than the training split ({info['train_size']} examples): "
                         "use a smaller batch or more data")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if cfg.bs % world:
        raise UsageError(f"--bs {cfg.bs} does not split over {world} processes: use a multiple of {world}")
    per_rank = cfg.bs // world
    if args.micro_bs is not None and args.micro_bs > per_rank:
        raise UsageError(f"--micro-bs {args.micro_bs} is larger than the per-process batch {per_rank} "
                         f"(--bs {cfg.bs} over {world} processes); pick a divisor of {per_rank}")
    micro = min(cfg.micro_bs, per_rank)  # the recipe's default shrinks to a small batch
    if per_rank % micro:
        raise UsageError(f"--micro-bs {micro} does not divide the per-process batch {per_rank} "
                         f"(--bs {cfg.bs} over {world} processes); pick a divisor of {per_rank}")
    device = pick_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    check_folder("--out", cfg.out, write=True)
    check_folder("--ckpt-dir", cfg.ckpt_dir, write=True)
    check_folder("--data-root", cfg.data_root, write=False)
    if cfg.tensorboard is not None:
        check_folder("--tensorboard", cfg.tensorboard, write=True)
        try:
            import tensorboard  # noqa: F401 - torch.utils.tensorboard needs it
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install tensorboard "
                             "(or the project's [tensorboard] extra)") from None

    # FFCV sets torch's thread count when it is imported (to 1) and whenever one of its loaders is
    # built or iterated (to its worker count). CPU results depend on the thread count, so it is
    # pinned here and after every loader pass: speed and numbers never depend on --loader-workers,
    # nor on which loader ran earlier in this process (a run and its resumption agree bitwise)
    threads = cpu_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    try:
        model = build_model(cfg.model, num_classes=info["num_classes"], in_chans=info["in_chans"])
    except ValueError as err:  # unknown model or arguments it does not take
        raise UsageError(str(err)) from None
    # a model that cannot take this dataset's images is bad input too, found before anything is written
    # (eval mode, no grad: no batch-norm statistics move and no random numbers are drawn)
    shape = (2, info["in_chans"], info["image_size"], info["image_size"])
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    except Exception as err:  # noqa: BLE001 - any failure here means "wrong model for this data"
        raise UsageError(f"--model {cfg.model} does not take {cfg.data} images "
                         f"({'x'.join(map(str, shape[1:]))}): {type(err).__name__}: {str(err)[:120]}") from None
    model.train()
    try:
        # the schedule's settings (and a peer's own optimizer), checked on a stand-in parameter
        # before the data is converted or loaded
        check_settings(cfg.sched, steps_per_epoch=max(1, info["train_size"] // cfg.bs), total_epochs=cfg.epochs,
                       batch_size=cfg.bs, weight_decay=cfg.wd, **cfg.scheduler_options())
    except (ValueError, OverflowError, ImportError) as err:
        raise UsageError(str(err)) from None

    rid = run_id(cfg)
    return Setup(cfg=cfg, run_id=rid, info=info, world=world, rank=rank, per_rank=per_rank, micro=micro,
                 accum=per_rank // micro, device=device, threads=threads, model=model,
                 out_path=record_path(cfg.out, rid), ckpt_path=Path(cfg.ckpt_dir) / rid / "last.pt",
                 use_amp=cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda"),
                 channels_last=cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda"),
                 progress=rank == 0 and (cfg.progress == "on" or (cfg.progress == "auto" and sys.stderr.isatty())))


@contextlib.contextmanager
def run_lock(s: Setup) -> Iterator[bool]:
    """One process trains a run at a time; a finished record is kept unless --overwrite. Yields
    False when there is nothing to do (--resume of a finished run)."""
    with contextlib.ExitStack() as held:
        if s.is_main:  # rank 0 holds the lock for the job
            try:
                held.enter_context(FileLock(Path(s.cfg.ckpt_dir) / f"{s.run_id}.lock", blocking=False, remove=True))
            except LockHeld as err:
                raise UsageError(f"run {s.run_id} is being trained by another process ({err.holder}): wait for "
                                 "it or stop it first") from None
            # a writer killed mid-save (SIGKILL, a lost node) leaves its temporary behind
            for tmp in stale_temporaries(s.ckpt_path) + stale_temporaries(s.out_path):
                tmp.unlink(missing_ok=True)
        if s.out_path.exists() and not s.cfg.overwrite:
            with contextlib.suppress(RecordError):
                if read_record(s.out_path).is_result:
                    if not s.cfg.resume:
                        raise UsageError(f"run {s.run_id} is already done (record {s.out_path}): pass --overwrite "
                                         "to train it again")
                    s.log(f"run {s.run_id} is already done (record {s.out_path}): nothing to resume")
                    yield False
                    return
        yield True


def read_checkpoint(s: Setup) -> dict[str, Any] | None:
    import torch

    if not (s.cfg.resume and s.ckpt_path.exists()):
        return None
    try:
        ckpt = torch.load(s.ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("run_id") != s.run_id:
            raise ValueError("run id mismatch")
        missing = CKPT_KEYS - set(ckpt)
        if missing:
            raise KeyError(f"no {', '.join(sorted(missing))}")
    except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same user error
        raise UsageError(f"checkpoint {s.ckpt_path} is unreadable ({type(err).__name__}: {str(err)[:80]}); "
                         "delete it to start over") from None
    return ckpt


# ---------------------------------------------------------------------------------------------
# 2. Build: process group, data, model, optimizer, schedule, record
# ---------------------------------------------------------------------------------------------
@dataclass
class State:
    """A run being trained: what build made, and what the loop moves on."""

    s: Setup
    loaders: dict[str, Any]
    steps_per_epoch: int
    model: Any  # the bare model: checkpoints and evaluation
    net: Any  # what trains: DDP and/or compiled
    eval_net: Any
    optimizer: Any
    sched: Any
    record: Record
    tb: Any  # autolr.tblog.TensorBoardLog, or None
    range_test: Any = None  # rangetest: its autolr.peers.rangetest.RangeTestResult
    bn_batches: int | None = None  # Schedule-Free: batches of the last BN recomputation
    lrs: list[float] = field(default_factory=list)
    phases: list[str] = field(default_factory=list)
    start_epoch: int = 0
    epochs_saved: int = 0
    wall_before: float = 0.0
    t_start: float = 0.0


def build(s: Setup, ckpt: dict[str, Any] | None) -> State:
    """Everything the run trains with; ``ckpt`` (the checkpoint to resume, or None) holds a
    rangetest run's range test result, which is not run again."""
    import torch
    import torch.distributed as dist

    from autolr import build_scheduler
    from autolr.data import build_loaders
    from autolr.optim import build_optimizer
    from autolr.registry import SCHEDULERS

    cfg, device = s.cfg, s.device
    if s.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if s.micro != cfg.recipe_micro_bs and s.is_main:
        warnings.warn(f"micro-batch {s.micro} differs from the recipe's batch-norm batch {cfg.recipe_micro_bs}: "
                      "batch-norm statistics, and so results, depend on it (recorded in the run)", stacklevel=1)
    eval_bs = max(s.micro, EVAL_MICRO_BS)
    loaders = build_loaders(cfg.data, cfg.data_root, loader=cfg.loader, batch_size=s.micro, subset=cfg.subset,
                            seed=cfg.seed, device=device, rank=s.rank, world_size=s.world,
                            num_workers=cfg.loader_workers, val_size=cfg.val_size, global_batch_size=cfg.bs,
                            eval_batch_size=eval_bs)
    # full global batches only; counted from the loader, which knows what is really on disk
    steps_per_epoch = len(loaders["train"]) // s.accum
    if steps_per_epoch < 1:
        raise UsageError(f"--bs {cfg.bs} leaves no full batch in the training split: use a smaller batch")
    model = s.model.to(device)
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if s.distributed and cfg.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    method = SCHEDULERS[cfg.sched]
    if method.optimizer is not None:  # Schedule-Free, Prodigy: their own optimizer, no --opt
        optimizer = method.optimizer(model.parameters(), total_steps=steps_per_epoch * cfg.epochs,
                                     weight_decay=cfg.wd)
    else:
        optimizer = build_optimizer(cfg.opt, model, lr=1.0, weight_decay=cfg.wd)
    net = model
    if s.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    # evaluation runs the bare model: the ranks' strided shares of a split may take different numbers
    # of batches, so no forward there may involve the other ranks
    eval_net = model
    if cfg.compile:
        net = torch.compile(net)
        eval_net = torch.compile(model)
    st = State(s=s, loaders=loaders, steps_per_epoch=steps_per_epoch, model=model, net=net, eval_net=eval_net,
               optimizer=optimizer, sched=None, record=Record(), tb=None)

    options: dict[str, Any] = {}
    if cfg.sched == "rangetest":
        st.range_test = range_test_of(st, ckpt)
        options["peak_lr"] = st.range_test.peak_lr
        # the test is part of the method's cost: the run's wall time starts with it (a resumed run's
        # comes from its checkpoint, which counted it)
        st.wall_before = st.range_test.wall_seconds
    st.sched = build_scheduler(cfg.sched, optimizer, steps_per_epoch=steps_per_epoch, total_epochs=cfg.epochs,
                               batch_size=cfg.bs, **cfg.scheduler_options(), **options)
    st.record = Record(
        schema=SCHEMA, run_id=s.run_id, config=cfg.as_record(), git=git_info(),
        env={"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
             "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
             "host": socket.gethostname(), "world_size": s.world, "micro_bs": s.micro, "accum_steps": s.accum,
             "per_rank_bs": s.per_rank, "eval_micro_bs": eval_bs, "amp": "bf16" if s.use_amp else "off",
             "channels_last": s.channels_last, "cpu_threads": s.threads,
             "torch_interop_threads": torch.get_num_interop_threads()},
        data=s.info, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * cfg.epochs,
        schedule=st.sched.describe(), peer=peer_summary(st))
    if cfg.tensorboard is not None and s.is_main:
        from autolr.tblog import TensorBoardLog

        st.tb = TensorBoardLog(Path(cfg.tensorboard) / s.run_id)
    return st


def training_batches(st: State) -> Iterator[Any]:
    """The training micro-batches epoch after epoch from epoch 0, full global batches only, as the
    epochs train on them (for the range test, which may take more steps than an epoch has)."""
    for epoch in itertools.count():
        st.loaders["train"].set_epoch(epoch)
        yield from itertools.islice(pinned(st.loaders["train"], st.s.threads), st.steps_per_epoch * st.s.accum)


def range_test_of(st: State, ckpt: dict[str, Any] | None) -> Any:
    """rangetest: the LR range test's result, from the checkpoint when resuming, else run now.

    The test starts from the run's initial weights and optimizer, takes up to ``default_steps(T)``
    steps of the training loop's own forward/backward on the training batches, and restores the
    weights, buffers, optimizer state and RNG states exactly: training afterwards is bitwise the
    training of ``fixed`` at the same peak.
    """
    from autolr.peers import rangetest

    s = st.s
    if ckpt is not None:
        try:
            return rangetest.RangeTestResult.from_dict(ckpt["range_test"])
        except (KeyError, TypeError) as err:
            raise UsageError(f"checkpoint {s.ckpt_path} holds no range test result ({type(err).__name__}); "
                             "delete it to start over") from None
    total = st.steps_per_epoch * s.cfg.epochs
    batches = training_batches(st)
    try:
        result = rangetest.range_test(st.model, st.optimizer, lambda: forward_backward(st, batches)[0],
                                      num_steps=rangetest.default_steps(total))
    finally:
        batches.close()  # an FFCV epoch left half-read is let go of now, not at garbage collection
    s.log(f"LR range test: {result.steps} steps ({result.stop}), smoothed-loss minimum at LR {result.lr_at_min:.4g}, "
          f"peak {result.peak_lr:.4g}, {result.wall_seconds:.1f}s")
    return result


def peer_summary(st: State) -> dict[str, Any] | None:
    """A peer's block of the record: the peak LR it ended with (``peak_lr``, the tables' number) and
    what it found or spent; None for AutoWU and the baselines."""
    s, sched = st.s, st.s.cfg.sched
    if sched == "schedulefree":
        g = st.optimizer.param_groups[0]
        # AlgoPerf's fixed LR, reached by the optimizer's own warmup and never decayed
        return {"peak_lr": float(g["lr"]), "warmup_steps": int(g["warmup_steps"]),
                "bn_batches": st.bn_batches, "eval_weights": "x, batch-norm statistics recomputed there"}
    if sched == "prodigy":
        # the LR it found is its estimate d (times lr, 1): the cosine's peak had d been known from the
        # start; max_step_lr is the largest step size d·lr·cosine it took
        return {**st.sched.summary(), "peak_lr": float(st.optimizer.param_groups[0]["d"]) * st.sched.base_lrs[0],
                "max_step_lr": max(st.lrs, default=None)}
    if sched == "rangetest":
        r = st.range_test
        # one tuning run, at its real cost: its steps, the images they took and the device time
        return {"peak_lr": r.peak_lr, "range_test": {**r.to_dict(), "images": r.steps * s.cfg.bs,
                                                     "device_seconds": r.wall_seconds * s.world}}
    return None


# ---------------------------------------------------------------------------------------------
# 3. Restore, and the checkpoint that is restored
# ---------------------------------------------------------------------------------------------
def restore(st: State, ckpt: dict[str, Any] | None) -> None:
    s = st.s
    if ckpt is not None:
        try:
            # a Schedule-Free checkpoint holds x and an optimizer in eval mode (saved at x): it stays
            # there until the next epoch trains (to_train_weights), as in the run that saved it
            st.model.load_state_dict(ckpt["model"])
            st.optimizer.load_state_dict(ckpt["optimizer"])
            st.sched.load_state_dict(ckpt["scheduler"])
            set_rng_state(ckpt["rng"])
            st.record.epochs, st.lrs, st.phases = ckpt["epochs"], ckpt["lrs"], ckpt["phases"]
            st.start_epoch, st.wall_before = int(ckpt["epoch"]), float(ckpt["wall_seconds"])
            st.epochs_saved = st.start_epoch
        except Exception as err:  # noqa: BLE001 - a checkpoint of another shape is the same user error
            raise UsageError(f"checkpoint {s.ckpt_path} does not fit this run ({type(err).__name__}: "
                             f"{str(err)[:120]}); delete it to start over") from None
        s.log(f"resuming run {s.run_id} from {s.ckpt_path} after epoch {st.start_epoch}")
    c = s.cfg
    s.log(f"run {s.run_id}: {c.model} on {c.data} ({s.info['train_size']} train), bs {c.bs} = "
          f"{s.world} x {s.accum} x {s.micro}, {st.steps_per_epoch} steps/epoch x {c.epochs} epochs, "
          f"sched {c.sched}, device {s.device}")


def save_checkpoint(st: State, epoch: int) -> None:
    """The state after ``epoch`` epochs, atomically: a run killed at any moment resumes bitwise.

    Schedule-Free is saved at its evaluation weights x (to_eval_weights has run): the model a user
    wants, and the state its own resume expects.
    """
    import torch.distributed as dist

    if st.s.is_main:
        extra = {} if st.range_test is None else {"range_test": st.range_test.to_dict()}
        atomic_torch_save({"run_id": st.s.run_id, "epoch": epoch, "model": st.model.state_dict(),
                           "optimizer": st.optimizer.state_dict(), "scheduler": st.sched.state_dict(),
                           "rng": rng_state(), "epochs": st.record.epochs, "lrs": st.lrs, "phases": st.phases,
                           "wall_seconds": st.wall_before + time.perf_counter() - st.t_start, **extra},
                          st.s.ckpt_path)
    st.epochs_saved = epoch
    if st.s.distributed:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# 4. One epoch, and evaluation
# ---------------------------------------------------------------------------------------------
def pinned(loader: Any, threads: int) -> Iterator[Any]:
    """Iterate ``loader`` with torch's thread count pinned (FFCV resets it on every pass)."""
    import torch

    for batch in loader:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        yield batch


def all_sum(s: Setup, *values: Any) -> list[float]:
    """Sums over the ranks, as float64 on the host: one sync."""
    import torch
    import torch.distributed as dist

    t = torch.stack([v.detach().to(device=s.device, dtype=torch.float64) for v in values])
    if s.distributed:
        dist.all_reduce(t)
    return t.cpu().tolist()


def forward_backward(st: State, it: Iterator[Any]) -> tuple[Any, Any]:
    """One global batch's forward and backward over its micro-batches (gradients accumulated, DDP
    synchronised on the last); returns the step's loss (the micro-batches' mean, a 0-d tensor on the
    device) and its correct predictions. The training step and the range test share it."""
    import torch
    import torch.nn.functional as F

    s, cfg, device = st.s, st.s.cfg, st.s.device
    step_loss = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    for i in range(s.accum):
        try:
            x, y = next(it)
        except StopIteration:
            raise RuntimeError("the training loader ran out of batches mid-epoch") from None
        if s.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync = contextlib.nullcontext() if (not s.distributed or i == s.accum - 1) else st.net.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.use_amp):
                logits = st.net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            # every micro-batch has the same size, so the step loss is their plain mean
            (loss / s.accum).backward()
        step_loss += loss.detach().double() / s.accum
        correct += (logits.argmax(1) == y).sum()
    return step_loss, correct


def _schedule_free(st: State) -> bool:
    from autolr.peers.schedulefree import is_schedule_free

    return is_schedule_free(st.optimizer)


def to_train_weights(st: State) -> None:
    """Schedule-Free: the parameters back to y, the optimizer in train mode (its step refuses
    eval mode). Called before each epoch's first step, not right after each evaluation: a run
    then holds x from its evaluation through its checkpoint, its final test and its end, and a
    resumed run, which loads x, meets y again exactly where the uninterrupted run did (the
    y -> x -> y round trip is not bitwise the identity)."""
    if _schedule_free(st) and not st.optimizer.param_groups[0]["train_mode"]:
        st.optimizer.train()


def _bn_batches_wanted(st: State) -> int:
    from autolr.peers.batchnorm import DEFAULT_BN_BATCHES

    # micro-batches of one epoch at most: every rank has the same number (the recomputation needs it)
    return min(DEFAULT_BN_BATCHES, st.steps_per_epoch * st.s.accum)


def to_eval_weights(st: State, epoch: int) -> None:
    """Schedule-Free: the parameters to x (optimizer eval mode) and batch-norm statistics recomputed
    at x on epoch ``epoch``'s first training micro-batches, before evaluating or saving; nothing
    when already there (a second evaluation of the same weights) or for any other optimizer."""
    import torch

    from autolr.peers.batchnorm import recompute_bn_stats

    if not _schedule_free(st) or not st.optimizer.param_groups[0]["train_mode"]:
        return
    s = st.s
    st.optimizer.eval()

    def forward(x: Any) -> Any:
        with torch.autocast(s.device.type, dtype=torch.bfloat16, enabled=s.use_amp):
            return st.model(x.contiguous(memory_format=torch.channels_last) if s.channels_last else x)

    st.loaders["train"].set_epoch(epoch)
    batches = pinned(st.loaders["train"], s.threads)
    try:
        # the bare model: a DDP forward would hand rank 0's buffers to every rank; the statistics are
        # averaged over the ranks instead
        st.bn_batches = recompute_bn_stats(st.model, batches, _bn_batches_wanted(st), forward=forward)
    finally:
        batches.close()


def train_one_epoch(st: State, epoch: int) -> tuple[Any, float]:
    """Train one epoch; returns each step's loss (averaged over ranks, on the host) and the
    training accuracy. One host sync, at the end."""
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    s, cfg, device = st.s, st.s.cfg, st.s.device
    to_train_weights(st)
    st.loaders["train"].set_epoch(epoch)
    it = pinned(st.loaders["train"], s.threads)
    step_losses = torch.zeros(st.steps_per_epoch, device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    bar = tqdm(range(st.steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not s.progress,
               leave=False, dynamic_ncols=True)
    for step in bar:
        # the LR this step applies (Prodigy: its step size d·lr; Schedule-Free: its warmup's)
        st.lrs.append(st.sched.get_last_lr()[0])
        st.phases.append(st.sched.phase)
        step_loss, step_correct = forward_backward(st, it)
        correct += step_correct
        st.optimizer.step()
        st.optimizer.zero_grad(set_to_none=True)
        st.sched.step(step_loss)
        step_losses[step] = step_loss
        if s.progress and (step % 10 == 0 or step == st.steps_per_epoch - 1):
            bar.set_postfix(loss=f"{step_loss.item():.4f}", lr=f"{st.lrs[-1]:.3g}")
    bar.close()
    if s.distributed:
        dist.all_reduce(step_losses)
        step_losses /= s.world
    return step_losses.cpu(), all_sum(s, correct)[0] / (st.steps_per_epoch * cfg.bs)


def evaluate(st: State, split: str) -> dict[str, float]:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    s, device = st.s, st.s.device
    if s.distributed:
        # DDP hands rank 0's buffers (batch-norm statistics) to every rank at each training forward,
        # so after the last one each rank holds its own: evaluate with rank 0's, the checkpoint's
        for buf in st.model.buffers():
            dist.broadcast(buf, 0)
    st.model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    with torch.no_grad():
        for x, y in pinned(st.loaders[split], s.threads):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.use_amp):
                logits = st.eval_net(x.contiguous(memory_format=torch.channels_last) if s.channels_last else x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            count += y.numel()
    total_loss, total_correct, n = all_sum(s, loss_sum, correct, count)
    st.model.train()
    return {"loss": total_loss / max(n, 1), "acc": total_correct / max(n, 1), "n": int(n)}


def log_epoch(st: State, epoch: int, step_losses: Any, train_acc: float, val: dict[str, float],
              seconds: float) -> dict[str, Any]:
    """The epoch's row of the record, its log line and its TensorBoard points."""
    import torch

    from autolr.records import finite_or_none

    finite = torch.isfinite(step_losses)
    n_seen = st.steps_per_epoch * st.s.cfg.bs
    row = {"epoch": epoch + 1, "train_loss": float(step_losses[finite].mean()) if finite.any() else None,
           "train_acc": train_acc, "val_loss": val["loss"], "val_acc": val["acc"],
           "lr": st.sched.get_last_lr()[0], "phase": st.sched.phase, "nonfinite_steps": int((~finite).sum()),
           "wall_seconds": seconds, "images_per_s": n_seen / seconds}
    st.record.epochs.append(finite_or_none(row))
    tl = row["train_loss"]
    st.s.log(f"epoch {epoch + 1:3d}/{st.s.cfg.epochs}  train loss {tl if tl is None else round(tl, 4)}  "
             f"acc {row['train_acc']:.4f}  val loss {val['loss']:.4f} acc {val['acc']:.4f}  lr {row['lr']:.4g} "
             f"({st.sched.phase})  {seconds:.1f}s  {row['images_per_s']:.0f} img/s", flush=True)
    if st.tb is not None:
        first = epoch * st.steps_per_epoch
        st.tb.steps(first, step_losses.tolist(), st.lrs[first:first + st.steps_per_epoch])
        st.tb.epoch(epoch + 1, {"train/loss": tl, "train/acc": row["train_acc"], "val/loss": val["loss"],
                                "val/acc": val["acc"]})
        if st.s.cfg.sched in AUTOWU_FAMILY:
            st.tb.autowu_tests(st.sched.history)
    return row


# ---------------------------------------------------------------------------------------------
# 5. Finish: test, record, clean up
# ---------------------------------------------------------------------------------------------
def finish(st: State, outcome: str, val: dict[str, float] | None) -> int:
    import torch.distributed as dist

    s, rec = st.s, st.record
    to_eval_weights(st, len(rec.epochs) - 1)  # at x already, unless a diverged epoch broke off before
    test = evaluate(st, "test")
    if val is None:  # resumed from the last epoch's checkpoint: nothing was evaluated here
        val = evaluate(st, "val")
    wall = st.wall_before + time.perf_counter() - st.t_start
    rec.outcome = {"status": outcome, "error": None}
    rec.final = {"val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"], "test_acc": test["acc"],
                 "test_n": test["n"], "val_n": val["n"], "epochs_done": len(rec.epochs)}
    rec.lr_trace = compact_lr_trace(st.lrs, st.phases)
    autowu_seconds = 0.0
    if s.cfg.sched in AUTOWU_FAMILY:
        rec.autowu = st.sched.summary()
        autowu_seconds = st.sched.test_seconds
    rec.peer = peer_summary(st)
    rec.timing = {"wall_seconds": wall, "autowu_test_seconds": autowu_seconds,
                  "autowu_test_share": autowu_seconds / wall if wall > 0 else None,
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if st.tb is not None:
        st.tb.epoch(len(rec.epochs), {"test/loss": test["loss"], "test/acc": test["acc"]})
    if s.is_main:
        write_record(s.out_path, rec)
        if not s.cfg.keep_ckpt and s.ckpt_path.exists():
            s.ckpt_path.unlink()
            with contextlib.suppress(OSError):
                s.ckpt_path.parent.rmdir()
    s.log(f"run {s.run_id} {outcome}: test acc {test['acc']:.4f}, test loss {test['loss']:.4f}; record: {s.out_path}")
    if s.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0 if outcome == "finished" else 3


def record_failure(st: State, err: Exception) -> None:
    """A crash is a result too: recorded so that a sweep moves on (and tries it again later)."""
    if st.record.outcome is not None:  # the run's own record is written: a crash after it changes nothing
        return
    st.record.outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]}
    st.record.lr_trace = compact_lr_trace(st.lrs, st.phases)
    if st.s.is_main:
        write_record(st.s.out_path, st.record)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> int:
    s = check(args)
    with run_lock(s) as todo:
        if not todo:
            return 0
        ckpt = read_checkpoint(s)  # an unreadable one is found before any data is converted or loaded
        st = build(s, ckpt)
        restore(st, ckpt)
        outcome, val = "finished", None  # val: the last epoch's validation, of the final weights
        try:
            st.t_start = time.perf_counter()
            for epoch in range(st.start_epoch, s.cfg.epochs):
                t_epoch = time.perf_counter()
                step_losses, train_acc = train_one_epoch(st, epoch)
                to_eval_weights(st, epoch)  # Schedule-Free evaluates and is saved at x
                val = evaluate(st, "val")
                row = log_epoch(st, epoch, step_losses, train_acc, val, time.perf_counter() - t_epoch)
                if row["train_loss"] is None:
                    outcome = "diverged"
                    s.log(f"run {s.run_id} diverged: the training loss was non-finite for all of epoch {epoch + 1}")
                    break
                save_checkpoint(st, epoch + 1)
            return finish(st, outcome, val)
        except KeyboardInterrupt as err:
            # the file, not the count: a signal may land between a save's rename and its return
            saved = s.ckpt_path if s.ckpt_path.exists() else None
            raise Interrupted(getattr(err, "signame", "SIGINT"), saved, st.epochs_saved) from None
        except Exception as err:
            record_failure(st, err)
            raise
        finally:
            if st.tb is not None:
                st.tb.close()


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C, unless someone else (submitit, a host program) handles it."""
    def stop(signum: int, frame: Any) -> None:
        raise Interrupted("SIGTERM")

    try:
        previous = signal.getsignal(signal.SIGTERM)
        mine = previous == signal.SIG_DFL
        if mine:
            signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        mine = False
    try:
        yield
    finally:
        if mine:
            signal.signal(signal.SIGTERM, previous)


def interrupt_message(err: KeyboardInterrupt, argv: list[str]) -> str:
    signame = getattr(err, "signame", "SIGINT")
    cmd = shlex.join(["python", "train.py", *argv, *([] if "--resume" in argv else ["--resume"])])
    launcher = " (under the same launcher)" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    ckpt = getattr(err, "checkpoint", None)
    if ckpt is not None:
        after = f" after epoch {err.epochs_saved}" if err.epochs_saved else ""
        return f"train.py: stopped by {signame}; the checkpoint{after} is kept in {ckpt}; resume with{launcher}: {cmd}"
    return f"train.py: stopped by {signame} before any checkpoint of this run; run again with{launcher}: {cmd}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(description=__doc__).parse_args(argv)
    from autolr.data import DataError
    try:
        with sigterm_stops():
            return train(args)
    except (UsageError, DataError) as err:
        # the user's to fix: one line, no traceback
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        if int(os.environ.get("RANK", "0")) == 0:
            print(interrupt_message(err, argv), file=sys.stderr, flush=True)
        raise


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:
        sys.exit(128 + (signal.SIGTERM if getattr(stop, "signame", "") == "SIGTERM" else signal.SIGINT))

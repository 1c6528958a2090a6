"""Train a timm model at any global batch size under any autolr scheduler, and record the run.

    python train.py                                   # AutoWU, small CNN, Fashion-MNIST (offline)
    python train.py --sched auto --bs 16384           # the same at a very large batch
    python train.py --data cifar10 --sched linear --lr 1e-3 --bs 4096
    torchrun --nproc_per_node 8 train.py --data imagenet --bs 16384 --sched auto

``--bs`` is the global batch. Every process runs micro-batches of ``--micro-bs`` examples
(the recipe's per-device batch-norm batch) and accumulates gradients, so a batch of 16384 runs
on one CPU in bounded memory and scales unchanged over GPUs and nodes with torchrun (DDP).
Defaults come from autolr/recipes.py (REPRODUCTION.md's recipe table). The run's record goes to
``--out/<run_id>.json`` (written atomically at the end) and its checkpoint to
``checkpoints/<run_id>/`` (atomically at every epoch's end; ``--resume`` continues from it).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

SCHEMA = 1
REPO = Path(__file__).resolve().parent
# flags that change where things go or how fast, never what is computed: not part of run_id
# (data_root too: the same run on another machine, its data elsewhere, is the same run)
OPERATIONAL = ("out", "resume", "loader_workers", "ckpt_dir", "progress", "device", "compile", "keep_ckpt",
               "data_root")


class UsageError(Exception):
    """Bad flags or impossible settings: reported in one line, exit code 2."""


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from autolr.registry import SCHEDULERS, flag_options

    p = argparse.ArgumentParser(prog="train.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data", default="fashion-mnist", choices=["fashion-mnist", "cifar10", "cifar100", "imagenet"])
    g.add_argument("--data-root", default="data", help="datasets and .beton files live here (default: data/)")
    g.add_argument("--subset", type=int, default=None, help="train on N examples of the training pool")
    g.add_argument("--val-size", type=int, default=None,
                   help="validation examples carved from the official training set (default: the recipe's)")
    g.add_argument("--loader", default=None, choices=["ffcv", "tensor"],
                   help="ffcv (default), or tensor: the whole split in device memory (small sets only)")
    g.add_argument("--loader-workers", type=int, default=None, help="FFCV worker threads (default: cores)")
    g = p.add_argument_group("model and optimizer (defaults: the dataset's recipe)")
    g.add_argument("--model", default=None, help="any timm model or a CIFAR one of autolr.models")
    g.add_argument("--opt", default=None, choices=["adamp", "lamb", "sgd", "adamw"])
    g.add_argument("--wd", type=float, default=None, help="weight decay (default: the recipe's)")
    g.add_argument("--label-smoothing", type=float, default=None)
    g = p.add_argument_group("batch and budget")
    g.add_argument("--bs", type=int, default=None,
                   help="global batch size (default: the recipe's smallest, B0: 256, or 1024 for imagenet)")
    g.add_argument("--micro-bs", type=int, default=None,
                   help="examples per forward pass and device (default: the recipe's batch-norm batch)")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("schedule")
    g.add_argument("--sched", default="auto", choices=list(SCHEDULERS))
    g.add_argument("--lr", type=float, default=None,
                   help="linear: base LR per 256 examples; legw: LR at --legw-b0; fixed/cosine/constant: the peak")
    g.add_argument("--warmup-epochs", type=float, default=None, help="linear/fixed: default 5; legw: w0 at B0")
    g.add_argument("--legw-b0", type=int, default=None, help="legw: the batch size --lr was tuned at")
    for o, methods in flag_options():  # the methods' own options (autolr/registry.py), resolved per method
        defaults = {m: SCHEDULERS[m].option(o.name).default for m in methods}
        shown = o.default if len(set(defaults.values())) == 1 else ", ".join(f"{m} {d}" for m, d in defaults.items())
        g.add_argument(f"--{o.name.replace('_', '-')}", type=o.type, default=None, choices=o.choices,
                       help=f"{'/'.join(methods)}: {o.help} (default: {shown})")
    g = p.add_argument_group("runs")
    g.add_argument("--out", default="results/runs", help="the record goes to OUT/<run_id>.json")
    g.add_argument("--ckpt-dir", default="checkpoints", help="checkpoints go to CKPT_DIR/<run_id>/")
    g.add_argument("--resume", action="store_true", help="continue from the run's checkpoint if there is one")
    g.add_argument("--keep-ckpt", action="store_true", help="keep the checkpoint after the run finishes")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"], help="bf16 autocast (auto: on GPU)")
    g.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    g.add_argument("--progress", default="auto", choices=["auto", "on", "off"], help="tqdm bars")
    return p


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Fill recipe defaults, check every flag, and return the run's full config."""
    from autolr.recipes import EFFICIENTNET_PREFIX, get_recipe
    from autolr.registry import SCHEDULERS, flag_options
    from autolr.schedules import DEFAULT_WARMUP_EPOCHS

    r = get_recipe(args.data)
    cfg = dict(vars(args))
    cfg["model"] = args.model or r.model
    cfg["opt"] = args.opt or r.opt
    cfg["wd"] = r.weight_decay if args.wd is None else args.wd
    # `is None`, not `or`: an explicit 0 is an error below, not a request for the default
    cfg["epochs"] = r.epochs if args.epochs is None else args.epochs
    cfg["bs"] = r.batch_sizes[0] if args.bs is None else args.bs
    cfg["micro_bs"] = r.micro_bs if args.micro_bs is None else args.micro_bs
    cfg["recipe_micro_bs"] = r.micro_bs
    cfg["loader"] = args.loader or "ffcv"
    is_effnet = cfg["model"].startswith(EFFICIENTNET_PREFIX)
    cfg["label_smoothing"] = (0.1 if is_effnet else 0.0) if args.label_smoothing is None else args.label_smoothing
    cfg["sync_bn"] = is_effnet
    cfg["recipe"] = r.dataset
    cfg["val_size"] = r.val_size if args.val_size is None else args.val_size

    if args.data == "imagenet" and cfg["loader"] == "tensor":
        raise UsageError("--loader tensor holds a whole split in memory: use it for fashion-mnist or cifar only")
    for name in ("bs", "micro_bs", "epochs"):
        if cfg[name] is None or cfg[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {cfg[name]}")
    if args.subset is not None and args.subset < 1:
        raise UsageError(f"--subset must be a positive integer, got {args.subset}")
    if cfg["val_size"] < 1:
        raise UsageError(f"--val-size must be a positive integer, got {cfg['val_size']}")
    if args.loader_workers is not None and args.loader_workers < 1:
        raise UsageError("--loader-workers must be at least 1")
    if not 0 <= cfg["label_smoothing"] < 1:
        raise UsageError("--label-smoothing must lie in [0, 1)")
    if not (math.isfinite(cfg["wd"]) and cfg["wd"] >= 0):
        raise UsageError(f"--wd must be finite and >= 0, got {cfg['wd']}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed must lie in [0, 2**32), got {args.seed}")
    method = SCHEDULERS[args.sched]
    if method.lr is None:
        if args.lr is not None:
            raise UsageError(f"--lr is not accepted with --sched {args.sched}: {method.label} finds the peak LR "
                             "itself (set --init-lr / --max-lr to change its search range)")
        if args.warmup_epochs is not None or args.legw_b0 is not None:
            raise UsageError(f"--warmup-epochs / --legw-b0 are for the baselines; {method.label}'s warmup is "
                             "adaptive")
        for k in ("lr", "warmup_epochs", "legw_b0"):
            cfg.pop(k)
    else:
        if args.lr is None:
            raise UsageError(f"--sched {args.sched} needs --lr (see --help for what it means there)")
        if not method.takes_b0 and args.legw_b0 is not None:
            raise UsageError("--legw-b0 is only for --sched legw")
        if method.takes_b0 and args.legw_b0 is None:
            cfg["legw_b0"] = r.batch_sizes[0]  # B0: the recipe grid's smallest batch
        if method.warmup and args.warmup_epochs is None:
            cfg["warmup_epochs"] = DEFAULT_WARMUP_EPOCHS  # resolved: with or without the flag, one run_id
    # the method's own flags enter the config (so the run_id) with their defaults; another method's are refused
    for o, methods in flag_options():
        if o.name in method.flags:
            cfg[o.name] = method.option(o.name).default if cfg[o.name] is None else cfg[o.name]
        elif cfg.pop(o.name) is not None:
            raise UsageError(f"--{o.name.replace('_', '-')} is for --sched {' / '.join(methods)} only")
    return cfg


#: what an epoch-end checkpoint holds (see the atomic_torch_save in train)
CKPT_KEYS = frozenset({"run_id", "epoch", "model", "optimizer", "scheduler", "rng", "epochs", "lrs", "phases",
                       "wall_seconds"})


def run_id_of(cfg: dict[str, Any]) -> str:
    key = {k: v for k, v in sorted(cfg.items()) if k not in OPERATIONAL}
    blob = json.dumps(key, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------------------------
def finite_or_none(obj: Any) -> Any:
    """JSON has no NaN or inf: non-finite numbers become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(finite_or_none(obj), f, indent=1, allow_nan=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def cpu_threads() -> int:
    """torch's intra-op threads for this run: OMP_NUM_THREADS if set (torchrun sets 1), else the
    cores this process may use. Fixed here because FFCV changes it (see train)."""
    with contextlib.suppress(ValueError):
        if int(os.environ.get("OMP_NUM_THREADS", "0")) > 0:
            return int(os.environ["OMP_NUM_THREADS"])
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def git_info() -> dict[str, Any]:
    # a copy of the tree whose .git is missing or stale (a lent GPU machine, a container) names its commit
    if os.environ.get("AUTOLR_GIT_COMMIT"):
        return {"commit": os.environ["AUTOLR_GIT_COMMIT"], "dirty": os.environ.get("AUTOLR_GIT_DIRTY") == "1"}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"commit": commit or None, "dirty": dirty if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


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


def compact_lr_trace(lrs: list[float], phases: list[str], max_len: int = 20000) -> dict[str, Any]:
    """Every step's LR, or every k-th step plus each step where the phase changes."""
    k = max(1, math.ceil(len(lrs) / max_len))
    steps = [s for s in range(len(lrs)) if s % k == 0 or s == len(lrs) - 1 or (s and phases[s] != phases[s - 1])]
    return {"every": k, "step": steps, "lr": [lrs[s] for s in steps], "phase_change_steps":
            [s for s in range(1, len(phases)) if phases[s] != phases[s - 1]]}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
def train(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    run_id = run_id_of(cfg)

    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from tqdm import tqdm

    from autolr import SCHEDULERS, build_scheduler
    from autolr.data import build_loaders, dataset_info
    from autolr.models import build_model
    from autolr.optim import build_optimizer

    # -- processes and devices: every check comes before a process group starts or a file is written
    info = dataset_info(cfg["data"], subset=cfg["subset"], val_size=cfg["val_size"])
    if info["train_size"] < 1:
        raise UsageError(f"--val-size {cfg['val_size']} leaves no training examples: {cfg['data']}'s official "
                         f"training set has {info['train_size'] + cfg['val_size']}")
    if cfg["bs"] > info["train_size"]:
        raise UsageError(f"--bs {cfg['bs']} is larger than the training split ({info['train_size']} examples): "
                         "use a smaller batch or more data")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg["bs"] % world:
        raise UsageError(f"--bs {cfg['bs']} does not split over {world} processes: use a multiple of {world}")
    per_rank = cfg["bs"] // world
    if args.micro_bs is not None and args.micro_bs > per_rank:
        raise UsageError(f"--micro-bs {args.micro_bs} is larger than the per-process batch {per_rank} "
                         f"(--bs {cfg['bs']} over {world} processes); pick a divisor of {per_rank}")
    micro = min(cfg["micro_bs"], per_rank)  # the recipe's default shrinks to a small batch
    if per_rank % micro:
        raise UsageError(f"--micro-bs {micro} does not divide the per-process batch {per_rank} "
                         f"(--bs {cfg['bs']} over {world} processes); pick a divisor of {per_rank}")
    accum = per_rank // micro
    if args.device:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise UsageError(f"--device {args.device!r}: use cpu, cuda or cuda:N") from None
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {args.device}: CUDA is not available here")
    # FFCV sets torch's thread count when it is imported (to 1) and whenever one of its loaders is
    # built or iterated (to its worker count). CPU results depend on the thread count, so it is
    # pinned here and after every loader pass: speed and numbers never depend on --loader-workers,
    # nor on which loader ran earlier in this process (a run and its resumption agree bitwise)
    threads = cpu_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    try:
        model = build_model(cfg["model"], num_classes=info["num_classes"], in_chans=info["in_chans"])
    except ValueError as err:  # unknown model or arguments it does not take
        raise UsageError(str(err)) from None
    # a model that cannot take this dataset's images is bad input too, found before anything is written
    # (eval mode, no grad: no batch-norm statistics move and no random numbers are drawn)
    shape = (2, info["in_chans"], info["image_size"], info["image_size"])
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    except Exception as err:  # noqa: BLE001 - any failure here means "wrong model for this data"
        raise UsageError(f"--model {cfg['model']} does not take {cfg['data']} images "
                         f"({'x'.join(map(str, shape[1:]))}): {type(err).__name__}: {str(err)[:120]}") from None
    model.train()
    method = SCHEDULERS[cfg["sched"]]
    sched_opts = {k: cfg[k] for k in ("lr", "warmup_epochs", "legw_b0") if k in cfg}
    # the method's own flags, and its seed from the run's
    sched_opts.update({name: cfg[name] for name in method.flags})
    if "seed" in {o.name for o in method.options}:
        sched_opts["seed"] = cfg["seed"]
    try:
        # the schedule's settings, checked on a stand-in optimizer before the data is converted or loaded
        build_scheduler(cfg["sched"], torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0),
                        steps_per_epoch=max(1, info["train_size"] // cfg["bs"]), total_epochs=cfg["epochs"],
                        batch_size=cfg["bs"], **sched_opts)
    except ValueError as err:
        raise UsageError(str(err)) from None
    out_path = Path(args.out) / f"{run_id}.json"
    ckpt_path = Path(args.ckpt_dir) / run_id / "last.pt"
    ckpt = None
    if args.resume and ckpt_path.exists():
        try:
            ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            if ckpt.get("run_id") != run_id:
                raise ValueError("run id mismatch")
            missing = CKPT_KEYS - set(ckpt)
            if missing:
                raise KeyError(f"no {', '.join(sorted(missing))}")
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint is the same user error
            raise UsageError(f"checkpoint {ckpt_path} is unreadable ({type(err).__name__}: {str(err)[:80]}); "
                             "delete it to start over") from None

    distributed = world > 1
    if distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    is_main = rank == 0
    if micro != cfg["recipe_micro_bs"] and is_main:
        warnings.warn(f"micro-batch {micro} differs from the recipe's batch-norm batch {cfg['recipe_micro_bs']}: "
                      "batch-norm statistics, and so results, depend on it (recorded in the run)", stacklevel=1)
    use_amp = args.amp == "bf16" or (args.amp == "auto" and device.type == "cuda")
    channels_last = args.channels_last == "on" or (args.channels_last == "auto" and device.type == "cuda")
    progress = is_main and (args.progress == "on" or (args.progress == "auto" and sys.stderr.isatty()))
    log = print if is_main else (lambda *a, **k: None)

    # -- data, model, optimizer, schedule -----------------------------------------------------
    loaders = build_loaders(cfg["data"], cfg["data_root"], loader=cfg["loader"], batch_size=micro,
                            subset=cfg["subset"], seed=cfg["seed"], device=device, rank=rank, world_size=world,
                            num_workers=args.loader_workers, val_size=cfg["val_size"], global_batch_size=cfg["bs"])
    # full global batches only; counted from the loader, which knows what is really on disk
    steps_per_epoch = len(loaders["train"]) // accum
    if steps_per_epoch < 1:
        raise UsageError(f"--bs {cfg['bs']} leaves no full batch in the training split: use a smaller batch")
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if distributed and cfg["sync_bn"]:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(cfg["opt"], model, lr=1.0, weight_decay=cfg["wd"])
    try:
        sched = build_scheduler(cfg["sched"], optimizer, steps_per_epoch=steps_per_epoch, total_epochs=cfg["epochs"],
                                batch_size=cfg["bs"], **sched_opts)
    except ValueError as err:
        raise UsageError(str(err)) from None
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)
    # evaluation runs the bare model: the ranks' strided shares of a split may take different numbers
    # of batches, so no forward there may involve the other ranks
    eval_net = model
    if args.compile:
        net = torch.compile(net)
        eval_net = torch.compile(model)

    record: dict[str, Any] = {
        "schema": SCHEMA, "run_id": run_id, "config": cfg, "git": git_info(),
        "env": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                "host": socket.gethostname(), "world_size": world, "micro_bs": micro, "accum_steps": accum,
                "per_rank_bs": per_rank, "amp": "bf16" if use_amp else "off", "channels_last": channels_last,
                "cpu_threads": threads},
        "data": info, "steps_per_epoch": steps_per_epoch, "total_steps": steps_per_epoch * cfg["epochs"],
        "schedule": sched.describe(), "outcome": None, "epochs": [], "final": None, "lr_trace": None,
        "autowu": None, "timing": {},
    }
    lrs: list[float] = []
    phases: list[str] = []
    start_epoch = 0
    wall_before = 0.0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            set_rng_state(ckpt["rng"])
            record["epochs"], lrs, phases = ckpt["epochs"], ckpt["lrs"], ckpt["phases"]
            start_epoch, wall_before = int(ckpt["epoch"]), float(ckpt["wall_seconds"])
        except Exception as err:  # noqa: BLE001 - a checkpoint of another shape is the same user error
            raise UsageError(f"checkpoint {ckpt_path} does not fit this run ({type(err).__name__}: "
                             f"{str(err)[:120]}); delete it to start over") from None
        log(f"resuming run {run_id} from {ckpt_path} after epoch {start_epoch}")
    log(f"run {run_id}: {cfg['model']} on {cfg['data']} ({info['train_size']} train), bs {cfg['bs']} = "
        f"{world} x {accum} x {micro}, {steps_per_epoch} steps/epoch x {cfg['epochs']} epochs, "
        f"sched {cfg['sched']}, device {device}")

    def pinned(loader: Any) -> Any:
        """Iterate ``loader`` with torch's thread count pinned (FFCV resets it on every pass)."""
        for batch in loader:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            yield batch

    def forward_loss(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg["label_smoothing"])
        return loss, (logits.argmax(1) == y).sum()

    def all_sum(*values: torch.Tensor) -> list[float]:
        t = torch.stack([v.detach().to(device=device, dtype=torch.float64) for v in values])
        if distributed:
            dist.all_reduce(t)
        return t.cpu().tolist()

    @torch.no_grad()
    def evaluate(split: str) -> dict[str, float]:
        if distributed:
            # DDP hands rank 0's buffers (batch-norm statistics) to every rank at each training forward,
            # so after the last one each rank holds its own: evaluate with rank 0's, the checkpoint's
            for buf in model.buffers():
                dist.broadcast(buf, 0)
        model.eval()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.float64)
        count = torch.zeros((), device=device, dtype=torch.float64)
        for x, y in pinned(loaders[split]):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = eval_net(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(1) == y).sum()
            count += y.numel()
        total_loss, total_correct, n = all_sum(loss_sum, correct, count)
        model.train()
        return {"loss": total_loss / max(n, 1), "acc": total_correct / max(n, 1), "n": int(n)}

    outcome = "finished"
    val: dict[str, float] | None = None  # the last epoch's validation, of the final weights
    try:
        t_start = time.perf_counter()
        net.train()
        for epoch in range(start_epoch, cfg["epochs"]):
            t_epoch = time.perf_counter()
            loaders["train"].set_epoch(epoch)
            it = pinned(loaders["train"])
            step_losses = torch.zeros(steps_per_epoch, device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.float64)
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg['epochs']}", disable=not progress,
                       leave=False, dynamic_ncols=True)
            for step in bar:
                lrs.append(sched.get_last_lr()[0])
                phases.append(sched.phase)
                step_loss = torch.zeros((), device=device, dtype=torch.float64)
                for i in range(accum):
                    try:
                        x, y = next(it)
                    except StopIteration:
                        raise RuntimeError("the training loader ran out of batches mid-epoch") from None
                    sync = contextlib.nullcontext() if (not distributed or i == accum - 1) else net.no_sync()
                    with sync:
                        loss, hits = forward_loss(x, y)
                        # every micro-batch has the same size, so the step loss is their plain mean
                        (loss / accum).backward()
                    step_loss += loss.detach().double() / accum
                    correct += hits
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                sched.step(step_loss)
                step_losses[step] = step_loss
                if progress and (step % 10 == 0 or step == steps_per_epoch - 1):
                    bar.set_postfix(loss=f"{step_loss.item():.4f}", lr=f"{lrs[-1]:.3g}")
            bar.close()
            # one host sync per epoch: the epoch's loss vector and accuracy, averaged over ranks
            per_step = step_losses.clone()
            if distributed:
                dist.all_reduce(per_step)
                per_step /= world
            per_step_host = per_step.cpu()
            finite = torch.isfinite(per_step_host)
            n_seen = steps_per_epoch * cfg["bs"]
            train_correct = all_sum(correct)[0]
            val = evaluate("val")
            seconds = time.perf_counter() - t_epoch
            row = {"epoch": epoch + 1, "train_loss": float(per_step_host[finite].mean()) if finite.any() else None,
                   "train_acc": train_correct / n_seen, "val_loss": val["loss"], "val_acc": val["acc"],
                   "lr": sched.get_last_lr()[0], "phase": sched.phase, "nonfinite_steps": int((~finite).sum()),
                   "wall_seconds": seconds, "images_per_s": n_seen / seconds}
            record["epochs"].append(finite_or_none(row))
            tl = row["train_loss"]
            log(f"epoch {epoch + 1:3d}/{cfg['epochs']}  train loss {tl if tl is None else round(tl, 4)}  "
                f"acc {row['train_acc']:.4f}  val loss {val['loss']:.4f} acc {val['acc']:.4f}  lr {row['lr']:.4g} "
                f"({sched.phase})  {seconds:.1f}s  {row['images_per_s']:.0f} img/s", flush=True)
            if not finite.any():
                outcome = "diverged"
                log(f"run {run_id} diverged: the training loss was non-finite for all of epoch {epoch + 1}")
                break
            if is_main:
                atomic_torch_save({"run_id": run_id, "epoch": epoch + 1, "model": model.state_dict(),
                                   "optimizer": optimizer.state_dict(), "scheduler": sched.state_dict(),
                                   "rng": rng_state(), "epochs": record["epochs"], "lrs": lrs, "phases": phases,
                                   "wall_seconds": wall_before + time.perf_counter() - t_start}, ckpt_path)
            if distributed:
                dist.barrier()

    except KeyboardInterrupt:
        raise
    except Exception as err:
        # a crash is a result too: record it so a sweep moves on, then let the traceback through
        record["outcome"] = {"status": "failed", "error": f"{type(err).__name__}: {err}"[:2000]}
        record["lr_trace"] = compact_lr_trace(lrs, phases)
        if is_main:
            atomic_write_json(out_path, record)
        raise

    test = evaluate("test")
    if val is None:  # resumed from the last epoch's checkpoint: nothing was evaluated here
        val = evaluate("val")
    wall = wall_before + time.perf_counter() - t_start
    record["outcome"] = {"status": outcome, "error": None}
    record["final"] = {"val_loss": val["loss"], "val_acc": val["acc"], "test_loss": test["loss"],
                       "test_acc": test["acc"], "test_n": test["n"], "val_n": val["n"],
                       "epochs_done": len(record["epochs"])}
    record["lr_trace"] = compact_lr_trace(lrs, phases)
    autowu_seconds = 0.0
    if cfg["sched"] in ("auto", "autoplus"):
        record["autowu"] = sched.summary()
        autowu_seconds = sched.test_seconds
    record["timing"] = {"wall_seconds": wall, "autowu_test_seconds": autowu_seconds,
                        "autowu_test_share": autowu_seconds / wall if wall > 0 else None,
                        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if is_main:
        atomic_write_json(out_path, record)
        if not args.keep_ckpt and ckpt_path.exists():
            ckpt_path.unlink()
            with contextlib.suppress(OSError):
                ckpt_path.parent.rmdir()
    log(f"run {run_id} {outcome}: test acc {test['acc']:.4f}, test loss {test['loss']:.4f}; record: {out_path}")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0 if outcome == "finished" else 3


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return train(args)
    except UsageError as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        # data problems are the user's to fix: one line, no traceback
        if type(err).__name__ == "DataError":
            print(f"train.py: error: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())

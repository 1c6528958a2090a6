"""Throughput of train.py's training step against a bare PyTorch loop, of the two loaders, and the
cost of AutoWU's end-of-epoch test next to an epoch's time.

    python bench/throughput.py                                   # cnn_fashion, batch 256, CPU or GPU
    python bench/throughput.py --model cnn_fashion --bs 256 --steps 30 --device cpu

- step: train.py itself (imported, run in-process for 3 epochs of ``--steps`` steps) on one fixed
  synthetic batch handed out by a stand-in loader, so its epoch time is its step (forward,
  backward, optimizer, scheduler, loss bookkeeping) and nothing else; against a bare loop
  (forward, cross-entropy, backward, optimizer step, zero_grad) over the same model, optimizer,
  batch, micro-batches, thread count, autocast and memory format. Target: train.py >= 0.95x.
  Three rounds in alternating order; a round's figure is its best timed chunk (train.py: its
  epochs 2-3; bare: two chunks of ``--steps`` after 5 warm-up steps), each side's figure its
  median round (the best round is recorded too).
- loaders: one training epoch of Fashion-MNIST's train split (55,000 images) through the FFCV and
  the tensor loader to ``--device``, after a warm-up epoch.
- autowu: AutoWU's GP test replayed on the recipe's warmup (fashion, batch ``--bs``: every
  end-of-epoch test up to the forced switch) with a synthetic loss curve; each test's seconds
  against the epoch time implied by the measured train.py throughput.
- on CUDA also ``--gpu-models`` (default ResNet-50 at 224 px and CIFAR ResNet-18), bf16 autocast +
  channels-last.

Prints a table and writes bench/results/throughput.json atomically. Timings on a shared machine
are noisy: the load average is recorded next to them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
os.environ.setdefault("NUMBA_CACHE_DIR", str(REPO / ".cache" / "numba"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import autolr.data as autolr_data  # noqa: E402
from autolr.files import atomic_write_json  # noqa: E402
from autolr.models import build_model  # noqa: E402
from autolr.optim import build_optimizer  # noqa: E402
from autolr.recipes import get_recipe  # noqa: E402

OUT = REPO / "bench" / "results" / "throughput.json"
#: the dataset whose recipe (image size, channels, classes) a model is benchmarked with
MODEL_DATA = {"cnn_fashion": "fashion-mnist", "mlp_tiny": "fashion-mnist", "resnet50": "imagenet",
              "efficientnet_b0": "imagenet"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FixedBatches:
    """A stand-in loader: ``n`` times the same batch, with the loaders' interface."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int):
        self.x, self.y, self.n = x, y, n
        self.num_examples = n * len(y)

    def set_epoch(self, epoch: int) -> None:
        pass

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Any:
        for _ in range(self.n):
            yield self.x, self.y


def synthetic_batch(data: str, micro: int, device: torch.device, image_size: int | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    r = get_recipe(data)
    size = image_size or r.image_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(micro, r.in_chans, size, size, generator=g)
    y = torch.randint(0, r.num_classes, (micro,), generator=g)
    return x.to(device), y.to(device)


# ---------------------------------------------------------------------------------------------
# train.py's step against a bare loop
# ---------------------------------------------------------------------------------------------
def bench_train_py(train: Any, *, model: str, data: str, bs: int, micro: int, steps: int, device: torch.device,
                   amp: bool, channels_last: bool) -> dict[str, Any]:
    """train.py, in-process, for 3 epochs of ``steps`` steps on one fixed batch (best of epochs 2-3)."""
    x, y = synthetic_batch(data, micro, device)
    accum = bs // micro
    fake = {"train": FixedBatches(x, y, steps * accum), "val": FixedBatches(x[:1], y[:1], 1),
            "test": FixedBatches(x[:1], y[:1], 1)}
    original = autolr_data.build_loaders
    autolr_data.build_loaders = lambda *a, **k: fake  # train.py imports it when it runs
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
                contextlib.redirect_stdout(open(os.devnull, "w")):  # noqa: SIM115
            warnings.simplefilter("ignore")
            rc = train.main(["--data", data, "--model", model, "--bs", str(bs), "--micro-bs", str(micro),
                             "--epochs", "3", "--sched", "cosine", "--lr", "1e-3", "--device", str(device),
                             "--amp", "bf16" if amp else "off", "--channels-last", "on" if channels_last else "off",
                             "--out", f"{tmp}/out", "--ckpt-dir", f"{tmp}/ckpt", "--data-root", f"{tmp}/data",
                             "--progress", "off"])
            if rc != 0:
                raise RuntimeError(f"train.py exited with {rc}")
            record = json.loads(next(Path(tmp, "out").glob("*.json")).read_text())
    finally:
        autolr_data.build_loaders = original
    epochs = record["epochs"]
    best = min(e["wall_seconds"] for e in epochs[1:])  # epoch 1 warms up
    return {"images_per_s": steps * bs / best, "epoch_seconds": [e["wall_seconds"] for e in epochs],
            "cpu_threads": record["env"].get("cpu_threads")}


def bench_bare(*, model: str, data: str, bs: int, micro: int, steps: int, device: torch.device, amp: bool,
               channels_last: bool, threads: int, chunks: int = 2, compile: bool = False) -> dict[str, Any]:
    """The same step written as the plainest PyTorch loop (best of ``chunks`` timed chunks). Its
    ``losses`` (every step's, from the same initial weights and batch) show whether an option
    changes what is computed."""
    torch.set_num_threads(threads)
    r = get_recipe(data)
    torch.manual_seed(0)
    net = build_model(model, num_classes=r.num_classes, in_chans=r.in_chans).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = build_optimizer(r.opt, net, lr=1e-3, weight_decay=r.weight_decay)  # train.py's defaults
    forward = torch.compile(net) if compile else net
    x, y = synthetic_batch(data, micro, device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    accum = bs // micro
    net.train()

    losses: list[float] = []

    def step() -> None:
        total = 0.0
        for _ in range(accum):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            (loss / accum).backward()
            total += loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total)

    for _ in range(min(5, steps)):
        step()
    sync(device)
    seconds = []
    for _ in range(chunks):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        seconds.append(time.perf_counter() - t0)
    return {"images_per_s": steps * bs / min(seconds), "chunk_seconds": seconds,
            "losses": [float(v) / accum for v in losses]}


def _bare_worker(kw: dict[str, Any], start: Any, out: Any) -> None:
    start.wait()  # both processes time the same seconds
    out.put(bench_bare(**kw))


def bench_cpu_options(*, model: str, data: str, bs: int, micro: int, steps: int, threads: int) -> list[dict]:
    """The CPU's options side by side on the bare loop: today's default (fp32, ``threads`` threads,
    one run), two one-thread runs at once (their images/s summed), bf16 autocast, channels-last and
    torch.compile. Each row says whether its losses are bitwise today's default's (then the option
    changes nothing a run computes) and how far they move."""
    import multiprocessing as mp

    kw = {"model": model, "data": data, "bs": bs, "micro": micro, "steps": steps, "device": torch.device("cpu"),
          "amp": False, "channels_last": False, "threads": threads, "chunks": 3}
    rows = [{"option": f"default: fp32, one run, {threads} threads", **bench_bare(**kw)}]
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_bare_worker, args=({**kw, "threads": 1}, start, out)) for _ in range(2)]
    for proc in procs:
        proc.start()
    pair = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    rows.append({"option": "two runs at once, one thread each (sum)",
                 "images_per_s": sum(r["images_per_s"] for r in pair), "losses": pair[0]["losses"],
                 "per_run_images_per_s": [r["images_per_s"] for r in pair]})
    rows.append({"option": "one run, one thread", **bench_bare(**{**kw, "threads": 1})})
    rows.append({"option": "bf16 autocast", **bench_bare(**{**kw, "amp": True})})
    rows.append({"option": "channels-last", **bench_bare(**{**kw, "channels_last": True})})
    try:
        rows.append({"option": "torch.compile", **bench_bare(**{**kw, "compile": True})})
    except Exception as err:  # no compiler toolchain, an unsupported op: say so, keep the other rows
        rows.append({"option": "torch.compile", "error": f"{type(err).__name__}: {err}"})
    ref = np.asarray(rows[0]["losses"])
    for row in rows:
        if "losses" in row:
            mine = np.asarray(row["losses"])
            row["same_losses"] = bool(np.array_equal(mine, ref))
            row["max_loss_change"] = float(np.max(np.abs(mine - ref)))
            row["speedup"] = row["images_per_s"] / rows[0]["images_per_s"]
    return rows


def bench_step(train: Any, *, model: str, data: str, bs: int, micro: int, steps: int, device: torch.device,
               amp: bool, channels_last: bool) -> dict[str, Any]:
    kw = {"model": model, "data": data, "bs": bs, "micro": micro, "steps": steps, "device": device, "amp": amp,
          "channels_last": channels_last}
    threads = train.cpu_threads()
    # three rounds, interleaved in alternating order (bare first, then train.py first, ...), and the best
    # of each side: load on a shared machine comes and goes, and the process itself warms up (allocator)
    runs: dict[str, list[dict[str, Any]]] = {"bare": [], "train_py": []}
    for i in range(3):
        for side in ("bare", "train_py") if i % 2 == 0 else ("train_py", "bare"):
            runs[side].append(bench_bare(**kw, threads=threads) if side == "bare" else bench_train_py(train, **kw))
    # the median round of each side: one round that a neighbour slowed (or a turbo sped up) moves neither
    bare = float(np.median([r["images_per_s"] for r in runs["bare"]]))
    mine = float(np.median([r["images_per_s"] for r in runs["train_py"]]))
    best_bare = max(r["images_per_s"] for r in runs["bare"])
    best_mine = max(r["images_per_s"] for r in runs["train_py"])
    return {"model": model, "data": data, "bs": bs, "micro_bs": micro, "steps": steps, "device": str(device),
            "amp": "bf16" if amp else "off", "channels_last": channels_last, "cpu_threads": threads,
            "bare_images_per_s": bare, "train_py_images_per_s": mine, "ratio": mine / bare,
            "best_round": {"bare_images_per_s": best_bare, "train_py_images_per_s": best_mine,
                           "ratio": best_mine / best_bare}, "runs": runs}


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------
def bench_loader(kind: str, *, data_root: str, bs: int, device: torch.device, workers: int | None,
                 threads: int) -> dict[str, Any]:
    loaders = autolr_data.build_loaders("fashion-mnist", data_root, loader=kind, batch_size=bs, subset=None,
                                        seed=0, device=device, num_workers=workers)
    train = loaders["train"]
    torch.set_num_threads(threads)  # FFCV changes it when built (see train.py)
    times = []
    n = 0
    for epoch in range(3):  # the first pass compiles (FFCV) and warms caches; then the best of two
        train.set_epoch(epoch)
        t0 = time.perf_counter()
        n = 0
        for x, _ in train:
            n += len(x)
        sync(device)
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return {"loader": kind, "images": n, "seconds": min(times[1:]), "images_per_s": n / min(times[1:]),
            "first_epoch_seconds": times[0]}


# ---------------------------------------------------------------------------------------------
# AutoWU's test
# ---------------------------------------------------------------------------------------------
def bench_autowu(*, bs: int, epoch_seconds: float) -> dict[str, Any]:
    """Every end-of-epoch test of the fashion recipe's warmup at batch ``bs``, on a synthetic curve."""
    from autolr.autowu import AutoWU

    r = get_recipe("fashion-mnist")
    steps_per_epoch = (60000 - r.val_size) // bs
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    # a patience no run reaches: the warmup goes to its cap, so every test of the budget runs
    sched = AutoWU(opt, steps_per_epoch, r.epochs, patience=10**6, seed=0)
    rng = np.random.default_rng(0)
    m = sched.max_warmup_steps
    seconds = []
    for s in range(m):
        t = s / m
        loss = 2.3 - 1.6 * t + 3.0 * max(0.0, t - 0.7) ** 2 + 0.05 * rng.standard_normal()
        before = sched.test_seconds
        sched.step(loss)
        if sched.test_seconds != before:
            seconds.append(sched.test_seconds - before)
    return {"recipe": "fashion-mnist", "bs": bs, "steps_per_epoch": steps_per_epoch, "tests": len(seconds),
            "test_seconds_mean": float(np.mean(seconds)) if seconds else None,
            "test_seconds_max": float(np.max(seconds)) if seconds else None,
            "test_seconds_total": float(np.sum(seconds)), "epoch_seconds": epoch_seconds,
            "max_share_of_epoch": (float(np.max(seconds)) / epoch_seconds) if seconds else None,
            "share_of_run": float(np.sum(seconds)) / (epoch_seconds * r.epochs)}


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cnn_fashion")
    p.add_argument("--data", default=None, help="the recipe the model runs under (default: from the model)")
    p.add_argument("--bs", type=int, default=256, help="global batch")
    p.add_argument("--micro-bs", type=int, default=None, help="default: the recipe's (256), at most --bs")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per timed chunk")
    p.add_argument("--device", default=None, help="default: cuda if available")
    p.add_argument("--data-root", default="data", help="Fashion-MNIST .beton files go here (as train.py)")
    p.add_argument("--loader-workers", type=int, default=None)
    p.add_argument("--skip-loaders", action="store_true")
    p.add_argument("--cpu-options", action="store_true",
                   help="only the CPU's options side by side (threads, two runs at once, bf16, channels-last, "
                        "compile) on the bare loop, into bench/results/cpu_options.json")
    p.add_argument("--gpu-models", default="resnet50@imagenet:256,resnet18_cifar@cifar10:512",
                   help="on CUDA, also these (comma-separated MODEL@DATA:BS), bf16 autocast and channels-last")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    try:
        gpu_models = parse_gpu_models(args.gpu_models)
    except ValueError as err:
        p.error(f"--gpu-models: {err}")

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = args.data or MODEL_DATA.get(args.model, "cifar10" if "cifar" in args.model or "_32" in args.model
                                       else "fashion-mnist")
    micro = min(args.micro_bs or get_recipe(data).micro_bs, args.bs)
    if args.bs % micro:
        p.error(f"--micro-bs {micro} does not divide --bs {args.bs}")
    import train  # the script at the repository root, on sys.path above

    threads = train.cpu_threads()
    if args.cpu_options:
        return cpu_options_main(args, data, micro, threads)
    gpu = device.type == "cuda"
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
                    "device_name": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
                    "cpu_count": os.cpu_count(), "cpu_threads": threads,
                    "load_average_before": list(os.getloadavg())},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": [], "loaders": [], "autowu": None,
    }
    configs = [(args.model, data, args.bs, micro, gpu, gpu)]
    if gpu:
        configs += [(model, d, bs, min(get_recipe(d).micro_bs, bs), True, True) for model, d, bs in gpu_models]
    for model, d, bs, mb, amp, cl in configs:
        print(f"step: {model} ({d}) bs {bs} micro {mb} on {device} ...", flush=True)
        results["steps"].append(bench_step(train, model=model, data=d, bs=bs, micro=mb, steps=args.steps,
                                           device=device, amp=amp, channels_last=cl))
    if not args.skip_loaders:
        for kind in ("ffcv", "tensor"):
            print(f"loader: {kind} ...", flush=True)
            try:
                results["loaders"].append(bench_loader(kind, data_root=args.data_root, bs=micro, device=device,
                                                       workers=args.loader_workers, threads=threads))
            except autolr_data.DataError as err:
                results["loaders"].append({"loader": kind, "error": str(err)})
    first = results["steps"][0]
    if first["data"] == "fashion-mnist":
        steps_per_epoch = (60000 - get_recipe("fashion-mnist").val_size) // args.bs
        epoch_seconds = steps_per_epoch * args.bs / first["train_py_images_per_s"]
        print("autowu: replaying the fashion recipe's warmup tests ...", flush=True)
        results["autowu"] = bench_autowu(bs=args.bs, epoch_seconds=epoch_seconds)
    results["machine"]["load_average_after"] = list(os.getloadavg())
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(Path(args.out), results)

    print(f"\n{'step':<40} {'bare img/s':>12} {'train.py img/s':>15} {'ratio':>7}")
    for s in results["steps"]:
        name = f"{s['model']} bs {s['bs']}/{s['micro_bs']} {s['amp']}{' cl' if s['channels_last'] else ''}"
        print(f"{name:<40} {s['bare_images_per_s']:>12.0f} {s['train_py_images_per_s']:>15.0f} {s['ratio']:>7.3f}")
    if results["loaders"]:
        print(f"\n{'loader (fashion-mnist train, 55k)':<40} {'img/s':>12} {'first epoch s':>15}")
        for ld in results["loaders"]:
            if "error" in ld:
                print(f"{ld['loader']:<40} error: {ld['error']}")
            else:
                print(f"{ld['loader']:<40} {ld['images_per_s']:>12.0f} {ld['first_epoch_seconds']:>15.2f}")
    a = results["autowu"]
    if a is not None:
        print(f"\nAutoWU test (fashion recipe, bs {a['bs']}, {a['steps_per_epoch']} steps/epoch): {a['tests']} "
              f"tests, mean {a['test_seconds_mean']:.3f} s, max {a['test_seconds_max']:.3f} s; epoch "
              f"{a['epoch_seconds']:.2f} s -> max {100 * a['max_share_of_epoch']:.1f}% of an epoch, "
              f"{100 * a['share_of_run']:.2f}% of the run")
    la = results["machine"]["load_average_before"]
    print(f"\n{device} ({results['machine']['device_name']}), {threads} threads, load average {la[0]:.1f} before / "
          f"{results['machine']['load_average_after'][0]:.1f} after (shared machine: noisy). -> {args.out}")
    return 0 if all(math.isfinite(s["ratio"]) for s in results["steps"]) else 1


def parse_gpu_models(text: str) -> list[tuple[str, str, int]]:
    """``MODEL@DATA:BS,...`` as (model, data, batch) triples; ValueError says what is wrong."""
    out = []
    for item in filter(None, text.split(",")):
        model, _, rest = item.partition("@")
        data, _, bs = rest.partition(":")
        if not model or not bs.isdigit() or int(bs) < 1:
            raise ValueError(f"{item!r} is not MODEL@DATA:BS with a batch size >= 1")
        get_recipe(data)  # ValueError for an unknown dataset
        out.append((model, data, int(bs)))
    return out


def cpu_options_main(args: argparse.Namespace, data: str, micro: int, threads: int) -> int:
    out = Path(args.out) if args.out != str(OUT) else OUT.with_name("cpu_options.json")
    load_before = list(os.getloadavg())
    rows = bench_cpu_options(model=args.model, data=data, bs=args.bs, micro=micro, steps=args.steps,
                             threads=threads)
    result = {"machine": {"python": platform.python_version(), "torch": torch.__version__,
                          "cpu": platform.processor() or "cpu", "cpu_count": os.cpu_count(),
                          "load_average_before": load_before, "load_average_after": list(os.getloadavg())},
              "model": args.model, "bs": args.bs, "micro_bs": micro, "steps": args.steps,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    atomic_write_json(out, result)
    print(f"\n{'CPU option (' + args.model + f', bs {args.bs})':<48} {'img/s':>8} {'x default':>10} {'losses':>22}")
    for r in rows:
        if "error" in r:
            print(f"{r['option']:<48} error: {r['error']}")
            continue
        same = "bitwise the same" if r["same_losses"] else f"differ by <= {r['max_loss_change']:.1e}"
        print(f"{r['option']:<48} {r['images_per_s']:>8.0f} {r['speedup']:>10.2f} {same:>22}")
    print(f"load average {load_before[0]:.1f} before (shared machine: noisy) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Record real per-step training-loss traces along AutoWU's warmup path, for bench/gp_test.py.

A trace is what AutoWU's test sees in a real run: the loss of every step while the LR grows
exponentially from init_lr towards max_lr. The warmup here never switches (patience too large to
be reached), so each trace covers the whole warmup budget M = 0.5·T and the bench can replay the
test sequence on it up to any switch.

    python bench/record_traces.py                       # the default set, into bench/traces/
    python bench/record_traces.py --bs 512 --subset 20000 --epochs 30
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autolr import AutoWU  # noqa: E402
from autolr.data import build_loaders  # noqa: E402
from autolr.files import atomic_write_json  # noqa: E402
from autolr.models import build_model  # noqa: E402
from autolr.optim import build_optimizer  # noqa: E402

OUT = Path(__file__).resolve().parent / "traces"
DEFAULTS = [(512, 20000, 30), (2048, 20000, 30)]  # (global batch, training subset, epochs)


def record(bs: int, subset: int, epochs: int, seed: int = 0, data_root: str = "data") -> Path:
    torch.manual_seed(seed)
    loaders = build_loaders("fashion-mnist", data_root, loader="tensor", batch_size=min(bs, 256), subset=subset,
                            seed=seed, device="cpu", global_batch_size=bs)
    accum = max(1, bs // 256)
    steps_per_epoch = len(loaders["train"]) // accum
    model = build_model("cnn_fashion", num_classes=10, in_chans=1)
    opt = build_optimizer("adamp", model, lr=1.0, weight_decay=0.1)
    # patience beyond the number of epochs: the warmup runs to its cap, so the trace is complete
    sched = AutoWU(opt, steps_per_epoch, epochs, patience=10**6, seed=seed)
    losses: list[float] = []
    t0 = time.perf_counter()
    for epoch in range(epochs):
        loaders["train"].set_epoch(epoch)
        it = iter(loaders["train"])
        for _ in range(steps_per_epoch):
            if sched.phase != "warmup":
                break
            step_loss = 0.0
            for _ in range(accum):
                x, y = next(it)
                loss = F.cross_entropy(model(x), y)
                (loss / accum).backward()
                step_loss += loss.item() / accum
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step(step_loss)
            losses.append(step_loss)
        if sched.phase != "warmup":
            break
    name = f"fashion_cnn_bs{bs}_n{subset}_e{epochs}"
    out = OUT / f"{name}.json"
    atomic_write_json(out, {
        "name": name, "steps_per_epoch": steps_per_epoch, "total_epochs": epochs, "init_lr": sched.init_lr,
        "max_lr": sched.max_lr, "max_warmup_fraction": sched.max_warmup_fraction, "warmup": "exp",
        "description": f"cnn_fashion + AdamP on a {subset}-image Fashion-MNIST subset, batch {bs}, exponential "
                       f"warmup to its cap (M={sched.max_warmup_steps} steps), seed {seed}",
        "command": f"python bench/record_traces.py --bs {bs} --subset {subset} --epochs {epochs}",
        "losses": [v if v == v and abs(v) != float("inf") else None for v in losses]}, indent=0)
    print(f"{name}: {len(losses)} steps in {time.perf_counter() - t0:.0f}s -> {out}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bs", type=int)
    p.add_argument("--subset", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--data-root", default="data")
    a = p.parse_args()
    for bs, subset, epochs in ([(a.bs, a.subset, a.epochs)] if a.bs else DEFAULTS):
        record(bs, subset, epochs, data_root=a.data_root)


if __name__ == "__main__":
    main()

"""Batch-norm running statistics recomputed at the current weights (PreciseBN, SWA's ``update_bn``).

A model's BN running statistics are an exponential average of the batch statistics seen while
training, at the weights it trained at. An optimizer that evaluates at other weights than it
trains at (Schedule-Free evaluates at the average x, trains at y) must recompute them at the
evaluation weights before every evaluation, else the model is evaluated with another model's
statistics (facebookresearch/schedule_free README; shared/PEERS.md section 2).

``recompute_bn_stats`` resets every BN layer, runs ``num_batches`` training batches through the
model in ``train()`` mode with no gradient and a cumulative average (``momentum=None``: every
batch counts equally, so the result does not depend on the batches' order), then restores each
layer's momentum, its ``num_batches_tracked`` counter and the model's train/eval flags. Under
``torch.distributed`` every rank must call it with the same number of batches; the statistics are
then averaged over the ranks, which equals one process averaging all ranks' batches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["DEFAULT_BN_BATCHES", "bn_layers", "recompute_bn_stats"]

#: batches for a recomputation: "about 50" in the Schedule-Free README (shared/PEERS.md section 2)
DEFAULT_BN_BATCHES = 50


def bn_layers(model: torch.nn.Module) -> list[_BatchNorm]:
    """Every batch-norm layer of ``model`` that keeps running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


_EMPTY = object()


def _first(batch: Any) -> Any:
    # a loader yields (inputs, targets): BN needs the inputs only
    return batch[0] if isinstance(batch, (list, tuple)) else batch


@torch.no_grad()
def recompute_bn_stats(model: torch.nn.Module, batches: Iterable[Any], num_batches: int = DEFAULT_BN_BATCHES, *,
                       forward: Callable[[Any], Any] | None = None, average_ranks: bool = True) -> int:
    """Recompute ``model``'s BN running statistics on the first ``num_batches`` of ``batches``.

    ``batches`` yields input tensors or (inputs, targets) pairs; ``forward(inputs)`` runs the
    model on one (default ``model(inputs)``; pass one that applies the run's autocast, memory
    format and device). Give the bare model, not a DDP wrapper (whose forward would broadcast
    rank 0's buffers). Returns the number of batches used (fewer when ``batches`` runs out).
    A model without BN layers is left alone and 0 is returned.
    """
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches must be a positive integer, got {num_batches!r}")
    layers = bn_layers(model)
    if not layers:
        return 0
    it = iter(batches)
    first = next(it, _EMPTY)
    if first is _EMPTY:
        raise ValueError("no batches to recompute the batch-norm statistics on: the iterable is empty")
    run = forward if forward is not None else model
    modes = [m.training for m in model.modules()]
    # everything a layer holds, so that a failure half-way leaves the model as it was
    saved = [(m.momentum, m.num_batches_tracked.clone(), m.running_mean.clone(), m.running_var.clone())
             for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
    used = 0
    ok = False
    try:
        model.train()
        for batch in itertools.islice(itertools.chain([first], it), num_batches):
            run(_first(batch))
            used += 1
        ok = True
    finally:
        for m, (momentum, tracked, mean, var) in zip(layers, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)
            if not ok:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        for m, mode in zip(model.modules(), modes, strict=True):
            m.training = mode
    if average_ranks and torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        for m in layers:
            for buf in (m.running_mean, m.running_var):
                torch.distributed.all_reduce(buf)
                buf.div_(world)
    return used

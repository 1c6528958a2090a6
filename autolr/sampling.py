"""Which examples each rank sees in each epoch, and the seeded streams every random draw uses.

Both loaders draw the training order and every example's augmentation from generators seeded
by ``(seed, epoch, stream)``, never from thread timing or process history: a run resumed after
a restart sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import numpy as np
import torch

from autolr.datasets import DataError

__all__ = ["ORDER", "AUGMENT", "RESIZED_CROP", "COLOUR", "stream_seed", "stream_generator", "train_order",
           "eval_indices"]

#: streams of the (seed, epoch) generators: order, small-image crop/flip, ImageNet crop, colour
ORDER, AUGMENT, RESIZED_CROP, COLOUR = 0, 1, 2, 3


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed}, {epoch}")
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0])


def stream_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(stream_seed(seed, epoch, stream))


def train_order(n: int, batch_size: int, seed: int, epoch: int, *, rank: int = 0, world_size: int = 1,
                global_batch_size: int | None = None) -> np.ndarray:
    """Positions (into ``n`` examples) that ``rank`` trains on in ``epoch``, in order.

    A global step takes ``global_batch_size`` consecutive entries of one permutation of
    (seed, epoch); each rank takes its own ``batch_size`` slices of every step. The permutation's
    tail that does not fill a global batch is dropped.
    """
    g = global_batch_size or batch_size * world_size
    if g % (batch_size * world_size):
        raise DataError(f"global batch {g} is not a multiple of {world_size} ranks x micro-batch {batch_size}")
    steps = n // g
    if steps == 0:
        raise DataError(f"the training split has {n} examples, fewer than one global batch of {g}")
    perm = torch.randperm(n, generator=stream_generator(seed, epoch, ORDER)).numpy()
    accum = g // (batch_size * world_size)
    return perm[: steps * g].reshape(steps, accum, world_size, batch_size)[:, :, rank].reshape(-1)


def eval_indices(n: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """A disjoint strided share of ``n`` examples: together the ranks see each exactly once."""
    return np.arange(rank, n, world_size, dtype=np.int64)

"""The in-memory loader: a whole split as one uint8 tensor on the device, batched and augmented there.

For the datasets that fit in memory (``DatasetSpec.in_memory``); it needs no FFCV, and gives the
same batches as the FFCV loader with its default ("exact") augmentation.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np
import torch

from autolr.augment import augment_normalize, augment_params
from autolr.datasets import DataError, get_spec
from autolr.sampling import eval_indices, train_order

__all__ = ["TensorLoader"]


class TensorLoader:
    """A whole split as one uint8 tensor on the device, batched and augmented there.

    Training: ``train_order`` gives this rank's examples, full batches only; every example's crop
    and flip come from ``augment_params(seed, epoch)``. Evaluation: a strided disjoint share per
    rank, every example once, no augmentation; ``indices`` replaces that share (evaluation only).
    Iterating uses the current epoch and then moves to the next one, like FFCV's loader;
    ``set_epoch`` pins it (do so every epoch when resuming).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, *, dataset: str,
                 batch_size: int, device: torch.device | str, seed: int, train: bool, rank: int = 0,
                 world_size: int = 1, indices: np.ndarray | None = None, global_batch_size: int | None = None):
        spec = get_spec(dataset)
        self.device = torch.device(device)
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"TensorLoader wants uint8 NHWC images, got {images.dtype} {tuple(images.shape)}")
        self.images = images.to(self.device).contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.n = len(self.images)
        self.batch_size, self.seed, self.train = int(batch_size), int(seed), bool(train)
        self.padding = spec.augment.crop_padding if train else 0
        self.flip = spec.augment.flip and train
        self.mean = torch.tensor(spec.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(spec.std, dtype=torch.float32, device=self.device)
        self.epoch = 0
        if train:
            self._order = functools.partial(train_order, self.n, self.batch_size, self.seed, rank=rank,
                                            world_size=world_size, global_batch_size=global_batch_size)
            self.num_examples = len(self._order(0))
        else:
            fixed = eval_indices(self.n, rank, world_size) if indices is None else np.asarray(indices)
            self._fixed = torch.as_tensor(fixed, dtype=torch.int64)
            self.num_examples = len(fixed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.train:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        self.epoch += 1
        if self.train:
            order = torch.as_tensor(self._order(epoch), dtype=torch.int64).to(self.device)
            offsets, flips = augment_params(self.n, self.seed, epoch, self.padding, self.flip)
            offsets = None if offsets is None else offsets.to(self.device)
            flips = None if flips is None else flips.to(self.device)
        else:
            order, offsets, flips = self._fixed.to(self.device), None, None
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = augment_normalize(self.images[idx], self.mean, self.std, padding=self.padding,
                                  offsets=None if offsets is None else offsets[idx],
                                  flips=None if flips is None else flips[idx])
            yield x, self.labels[idx]

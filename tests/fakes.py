"""Files written in the real on-disk formats of the datasets, for the data and train.py tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def write_fake_cifar(root: Path, dataset: str, n_train: int = 300, n_test: int = 70,
                     seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Random images in torchvision's exact layout (bytes keys, as the published Python-2 pickles)."""
    rng = np.random.default_rng(seed)
    classes = 10 if dataset == "cifar10" else 100
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        flat = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8)
        labels = rng.integers(0, classes, n)
        out[split] = (flat.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels.astype(np.int64))
        if dataset == "cifar10":
            d = root / "cifar-10-batches-py"
            d.mkdir(parents=True, exist_ok=True)
            parts = np.array_split(np.arange(n), 5) if split == "train" else [np.arange(n)]
            for i, part in enumerate(parts):
                name = f"data_batch_{i + 1}" if split == "train" else "test_batch"
                entry = {b"batch_label": name.encode(), b"labels": labels[part].tolist(), b"data": flat[part],
                         b"filenames": [f"img{j}.png".encode() for j in part]}
                (d / name).write_bytes(pickle.dumps(entry, protocol=2))
            (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))
        else:
            d = root / "cifar-100-python"
            d.mkdir(parents=True, exist_ok=True)
            entry = {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(), b"fine_labels": labels.tolist(),
                     b"coarse_labels": (labels // 5).tolist(), b"data": flat}
            (d / split).write_bytes(pickle.dumps(entry, protocol=2))
            (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [b"c%d" % i for i in range(100)]}))
    return out

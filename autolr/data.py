"""Datasets, splits, FFCV conversion and the two loaders (FFCV and in-memory tensors).

Splits follow REPRODUCTION.md: the validation split is carved first from the official training
set with the recipe's split seed (0, independent of the run seed); ``subset`` then takes the first
N examples of the remaining pool in the same seeded order, so subsets are nested; test is the
official test set (for ImageNet: the official validation folder).

Both loaders share one interface (iteration yields ``(x, y)``: float32 NCHW normalised images and
int64 labels on the device; ``len()``; ``set_epoch(e)``; ``num_examples``) and, by default, the
same randomness: the training order and every example's crop offset and flip are functions of
``(seed, epoch, example index)`` drawn with torch's CPU generator, never of thread timing or
process history. A run resumed after a restart therefore sees exactly the batches the
uninterrupted run would have seen, whatever the number of loader workers; the FFCV and tensor
loaders even give bit-identical batches on the same device. FFCV's own random operations draw
from numba's per-thread generators, seeded from OS entropy at start-up, so they are not
reproducible across restarts (nor between two identical runs); they stay available as
``augment="ffcv"``.

FFCV is imported only inside functions: a machine without it still runs ``--loader tensor``.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import logging
import os
import pickle
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autolr.recipes import get_recipe

__all__ = [
    "DataError",
    "DATASETS",
    "SMALL_DATASETS",
    "FORMAT_VERSION",
    "read_idx",
    "load_arrays",
    "split_indices",
    "split_arrays",
    "dataset_info",
    "prepare_ffcv",
    "ffcv_loader",
    "FFCVLoader",
    "TensorLoader",
    "build_loaders",
    "train_order",
    "eval_indices",
    "augment_params",
    "augment_normalize",
    "imagenet_train_postprocess",
]

log = logging.getLogger("autolr.data")

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagenet")
SMALL_DATASETS = ("fashion-mnist", "cifar10", "cifar100")
#: bump when the .beton layout or the manifest's meaning changes: every existing file is rebuilt
FORMAT_VERSION = 1
#: official split sizes, for dataset_info without touching the disk
OFFICIAL_SIZES = {
    "fashion-mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "cifar100": (50000, 10000),
    "imagenet": (1281167, 50000),
}
#: where Debian's dataset-fashion-mnist package puts the gzipped IDX files
SYSTEM_FASHION_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets/fashion-mnist"),)
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
#: beton files up to this size are verified with a full sha256 on every reuse (~0.1 s per 100 MB);
#: larger ones (ImageNet) by size, header and the hash of their first and last MiB
_FULL_HASH_LIMIT = 2 << 30
#: streams of the (seed, epoch) generators: order, small-image crop/flip, ImageNet crop, colour
_ORDER, _AUGMENT, _RRC, _COLOUR = 0, 1, 2, 3


class DataError(Exception):
    """Missing, corrupt or unusable data: train.py reports it in one line with exit code 2."""


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
def _recipe_val_size(dataset: str, val_size: int | None) -> int:
    return get_recipe(dataset).val_size if val_size is None else int(val_size)


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one IDX file (plain or gzipped) of unsigned bytes, checking magic number and size."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path} is unreadable or corrupt ({type(err).__name__}: {err}); "
                        "delete it and reinstall or re-download it") from None
    if len(raw) < 4:
        raise DataError(f"{path} is truncated: {len(raw)} bytes, not even an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DataError(f"{path} is not an IDX file of unsigned bytes (magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated inside its IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path} is corrupt or truncated: {len(raw)} bytes where its header {dims} "
                        f"implies {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _fashion_dir(data_root: Path) -> Path | None:
    # all four files must come from one place: mixing copies could pair images with wrong labels
    for d in (data_root / "FashionMNIST" / "raw", *SYSTEM_FASHION_DIRS):
        names = [n for pair in _FASHION_FILES.values() for n in pair]
        if all((d / n).is_file() or (d / f"{n}.gz").is_file() for n in names):
            return d
    return None


def _fashion_paths(data_root: Path, download: bool) -> dict[str, tuple[Path, Path]]:
    d = _fashion_dir(data_root)
    failed = None
    if d is None and download:
        failed = _torchvision_download("FashionMNIST", data_root)
        d = _fashion_dir(data_root)
    if d is None:
        where = ", ".join(str(p) for p in (data_root / "FashionMNIST" / "raw", *SYSTEM_FASHION_DIRS))
        why = f" (the download failed: {failed})" if failed else ""
        raise DataError(f"Fashion-MNIST not found under {where}{why}; install it with `sudo apt-get install "
                        "dataset-fashion-mnist` or, on a machine with internet, run python -c \"import "
                        f"torchvision; torchvision.datasets.FashionMNIST('{data_root}', download=True)\"")

    def pick(name: str) -> Path:
        return d / name if (d / name).is_file() else d / f"{name}.gz"

    return {split: (pick(img), pick(lab)) for split, (img, lab) in _FASHION_FILES.items()}


def _torchvision_download(cls_name: str, data_root: Path) -> str | None:
    """Download with torchvision; None when it worked, else why not (for the caller's one-line error)."""
    try:
        import torchvision
    except ImportError:
        return "torchvision is not installed"
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # without internet the download should fail fast, not hang
    try:
        log.info("downloading %s into %s with torchvision", cls_name, data_root)
        for train in (True, False):
            getattr(torchvision.datasets, cls_name)(str(data_root), train=train, download=True)
    except Exception as err:  # noqa: BLE001 - any download failure means "not available here"
        return f"{type(err).__name__}: {err}"[:200]
    finally:
        socket.setdefaulttimeout(old)
    return None


def _cifar_paths(dataset: str, data_root: Path, download: bool) -> dict[str, list[Path]]:
    d = data_root / _CIFAR_DIRS[dataset]
    if dataset == "cifar10":
        files = {"train": [d / f"data_batch_{i}" for i in range(1, 6)], "test": [d / "test_batch"]}
    else:
        files = {"train": [d / "train"], "test": [d / "test"]}
    missing = [p for ps in files.values() for p in ps if not p.is_file()]
    failed = None
    if missing and download:
        failed = _torchvision_download("CIFAR10" if dataset == "cifar10" else "CIFAR100", data_root)
        missing = [p for ps in files.values() for p in ps if not p.is_file()]
    if missing:
        cls = "CIFAR10" if dataset == "cifar10" else "CIFAR100"
        why = f" (the download failed: {failed})" if failed else ""
        raise DataError(f"{dataset} not found{why}: {missing[0]} is missing; put torchvision's {d.name}/ folder "
                        f"under {data_root}, or on a machine with internet run python -c \"import torchvision; "
                        f"torchvision.datasets.{cls}('{data_root}', download=True)\"")
    return files


def _read_cifar_file(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    # torchvision's own reader uses pickle too: the files are the user's, in the published format
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        entry = {(k.decode() if isinstance(k, bytes) else k): v for k, v in entry.items()}
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"{path} is corrupt or not a CIFAR pickle ({type(err).__name__}: {err})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise DataError(f"{path} has unexpected shapes: data {data.shape}, {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels


def _source_files(dataset: str, data_root: Path, download: bool) -> list[Path]:
    if dataset == "fashion-mnist":
        return [p for pair in _fashion_paths(data_root, download).values() for p in pair]
    if dataset in _CIFAR_DIRS:
        return [p for ps in _cifar_paths(dataset, data_root, download).values() for p in ps]
    raise DataError(f"{dataset} has no array source")


def load_arrays(dataset: str, data_root: str | os.PathLike[str], *,
                download: bool | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official train and test sets of a small dataset: uint8 NHWC images, int64 labels.

    ``download``: None tries torchvision's downloader for Fashion-MNIST only (it is small and the
    offline default); True tries it for CIFAR too; False never touches the network.
    """
    _check_dataset(dataset)
    data_root = Path(data_root)
    if dataset == "imagenet":
        raise DataError("imagenet is read from its ImageFolder tree by prepare_ffcv; there are no arrays "
                        "(use --loader ffcv)")
    if download is None:
        download = dataset == "fashion-mnist"
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if dataset == "fashion-mnist":
        for split, (img_path, lab_path) in _fashion_paths(data_root, download).items():
            images, labels = read_idx(img_path), read_idx(lab_path)
            if images.ndim != 3 or images.shape[1:] != (28, 28):
                raise DataError(f"{img_path} holds images of shape {images.shape[1:]}, not 28x28")
            if labels.ndim != 1 or len(labels) != len(images):
                raise DataError(f"{lab_path} holds {len(labels)} labels for {len(images)} images in {img_path}")
            if labels.max(initial=0) > 9:
                raise DataError(f"{lab_path} holds labels above 9: not Fashion-MNIST")
            out[split] = (images[..., None].copy(), labels.astype(np.int64))
        return out
    label_key = "labels" if dataset == "cifar10" else "fine_labels"
    for split, paths in _cifar_paths(dataset, data_root, download).items():
        parts = [_read_cifar_file(p, label_key) for p in paths]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def _imagenet_files(data_root: Path) -> dict[str, tuple[list[Path], np.ndarray]]:
    root = data_root / "imagenet"
    out: dict[str, tuple[list[Path], np.ndarray]] = {}
    classes: list[str] = []
    for official, split in (("train", "train"), ("val", "test")):
        d = root / official
        if not d.is_dir():
            raise DataError(f"imagenet not found: {d} is missing; put the ImageFolder tree there "
                            f"({root}/train/<class>/*.JPEG and {root}/val/<class>/*.JPEG)")
        these = sorted(e.name for e in os.scandir(d) if e.is_dir())
        if official == "train":
            classes = these
        elif not set(these) <= set(classes):
            raise DataError(f"{d} has class folders that {root}/train lacks: {sorted(set(these) - set(classes))[:3]}")
        index = {c: i for i, c in enumerate(classes)}
        files: list[Path] = []
        labels: list[int] = []
        for c in these:
            names = sorted(e.name for e in os.scandir(d / c)
                           if e.is_file() and e.name.lower().endswith(_IMAGE_EXTENSIONS))
            files += [d / c / n for n in names]
            labels += [index[c]] * len(names)
        if not files:
            raise DataError(f"{d} holds no images (*.JPEG, *.jpg, *.png in class folders)")
        out[split] = (files, np.asarray(labels, dtype=np.int64))
    return out


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------
def split_indices(n_train: int, val_size: int, split_seed: int, subset: int | None) -> dict[str, np.ndarray]:
    """Sorted indices into the official training set: ``val`` first, then ``train`` from the rest.

    One seeded permutation decides both: its first ``val_size`` entries are the validation split,
    and ``subset`` takes the next N, so a smaller subset is always contained in a larger one.
    """
    if not 0 < val_size < n_train:
        raise DataError(f"a validation split of {val_size} needs more than {val_size} training examples "
                        f"(have {n_train})")
    perm = np.random.default_rng(split_seed).permutation(n_train)
    pool = perm[val_size:]
    if subset is not None:
        if subset < 1 or subset > len(pool):
            raise DataError(f"--subset {subset}: the training pool has {len(pool)} examples "
                            f"({n_train} minus {val_size} for validation); pick 1..{len(pool)}")
        pool = pool[:subset]
    return {"train": np.sort(pool), "val": np.sort(perm[:val_size])}


def split_arrays(dataset: str, data_root: str | os.PathLike[str], *, subset: int | None = None,
                 val_size: int | None = None, download: bool | None = None,
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """train / val / test arrays of a small dataset after the protocol's splits."""
    arrays = load_arrays(dataset, data_root, download=download)
    x, y = arrays["train"]
    idx = split_indices(len(x), _recipe_val_size(dataset, val_size), get_recipe(dataset).split_seed, subset)
    return {"train": (x[idx["train"]], y[idx["train"]]), "val": (x[idx["val"]], y[idx["val"]]),
            "test": arrays["test"]}


def dataset_info(dataset: str, subset: int | None = None, val_size: int | None = None) -> dict[str, Any]:
    """What a model and a schedule need to know, from the recipe and the official split sizes."""
    _check_dataset(dataset)
    r = get_recipe(dataset)
    n_train, n_test = OFFICIAL_SIZES[dataset]
    val = _recipe_val_size(dataset, val_size)
    pool = n_train - val
    if subset is not None and not 0 < subset <= pool:
        raise DataError(f"--subset {subset}: the training pool of {dataset} has {pool} examples")
    return {"dataset": dataset, "num_classes": r.num_classes, "in_chans": r.in_chans, "image_size": r.image_size,
            "train_size": pool if subset is None else subset, "val_size": val, "test_size": n_test,
            "subset": subset, "split_seed": r.split_seed, "mean": list(r.mean), "std": list(r.std)}


# ---------------------------------------------------------------------------------------------
# Randomness shared by both loaders: functions of (seed, epoch, example), never of history
# ---------------------------------------------------------------------------------------------
def _stream_seed(seed: int, epoch: int, stream: int) -> int:
    if seed < 0 or epoch < 0:
        raise ValueError(f"seed and epoch must be non-negative, got {seed}, {epoch}")
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0])


def _generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(seed, epoch, stream))


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
    perm = torch.randperm(n, generator=_generator(seed, epoch, _ORDER)).numpy()
    accum = g // (batch_size * world_size)
    return perm[: steps * g].reshape(steps, accum, world_size, batch_size)[:, :, rank].reshape(-1)


def eval_indices(n: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """A disjoint strided share of ``n`` examples: together the ranks see each exactly once."""
    return np.arange(rank, n, world_size, dtype=np.int64)


def augment_params(n: int, seed: int, epoch: int, padding: int, flip: bool,
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-example crop offsets in [0, 2*padding] (n x 2) and flip flags (n) for one epoch."""
    g = _generator(seed, epoch, _AUGMENT)
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=g) if padding > 0 else None
    flips = torch.rand(n, generator=g) < 0.5 if flip else None
    return offsets, flips


def augment_normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *, padding: int = 0,
                      offsets: torch.Tensor | None = None, flips: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 NHWC batch -> float32 NCHW, optionally zero-padded random crop then horizontal flip.

    Output pixel (i, j) is input pixel (i + dy - p, j' + dx - p) with j' = W-1-j when flipped
    (zero outside the image): one gather, so it runs as a handful of kernels on a GPU.
    """
    b, h, w, c = x.shape
    if offsets is not None or flips is not None:
        dev = x.device
        rows = torch.arange(h, device=dev).expand(b, h)
        cols = torch.arange(w, device=dev).expand(b, w)
        if flips is not None:
            cols = torch.where(flips[:, None], w - 1 - cols, cols)
        if offsets is not None and padding > 0:
            rows = rows + (offsets[:, :1] - padding)
            cols = cols + (offsets[:, 1:] - padding)
        valid = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        src = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
        flat = x.reshape(b, h * w, c)
        x = torch.gather(flat, 1, src.reshape(b, h * w, 1).expand(b, h * w, c))
        x = (x * valid.reshape(b, h * w, 1)).reshape(b, h, w, c)
    y = x.permute(0, 3, 1, 2).float().div_(255.0)
    return y.sub_(mean.view(1, c, 1, 1)).div_(std.view(1, c, 1, 1)).contiguous()


# ImageNet PCA lighting (AlexNet): eigenvalues and eigenvectors of the RGB covariance
_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))


def imagenet_train_postprocess(x: torch.Tensor, *, generator: torch.Generator | None = None,
                               jitter: float = 0.4, lighting: float = 0.1,
                               mean: Sequence[float] = (0.485, 0.456, 0.406),
                               std: Sequence[float] = (0.229, 0.224, 0.225)) -> torch.Tensor:
    """Colour jitter (brightness, contrast, saturation) and PCA lighting on a normalised batch.

    Runs on the tensor after loading, on its device, per image and vectorised: the image is
    un-normalised to [0, 1], jittered with factors drawn from U[1 - jitter, 1 + jitter], clamped,
    shifted by the AlexNet lighting noise (alpha ~ N(0, lighting)) and normalised again. With a
    ``generator`` on the batch's device the draws are reproducible.
    """
    b, dev = x.shape[0], x.device
    m = torch.tensor(mean, device=dev, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=dev, dtype=x.dtype).view(1, 3, 1, 1)
    img = x * s + m
    gray_w = torch.tensor((0.299, 0.587, 0.114), device=dev, dtype=x.dtype).view(1, 3, 1, 1)

    def factor() -> torch.Tensor:
        u = torch.rand(b, 1, 1, 1, device=dev, generator=generator, dtype=x.dtype)
        return 1.0 + jitter * (2.0 * u - 1.0)

    if jitter > 0:
        img = img * factor()  # brightness
        gray_mean = (img * gray_w).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        img = gray_mean + factor() * (img - gray_mean)  # contrast
        gray = (img * gray_w).sum(1, keepdim=True)
        img = gray + factor() * (img - gray)  # saturation
        img = img.clamp(0.0, 1.0)
    if lighting > 0:
        alpha = torch.randn(b, 3, device=dev, generator=generator, dtype=x.dtype) * lighting
        eigval = torch.tensor(_PCA_EIGVAL, device=dev, dtype=x.dtype)
        eigvec = torch.tensor(_PCA_EIGVEC, device=dev, dtype=x.dtype)
        img = img + ((alpha * eigval) @ eigvec.T).view(b, 3, 1, 1)
    return (img - m) / s


# ---------------------------------------------------------------------------------------------
# Tensor loader
# ---------------------------------------------------------------------------------------------
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
        recipe = get_recipe(dataset)
        self.device = torch.device(device)
        images = torch.as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"TensorLoader wants uint8 NHWC images, got {images.dtype} {tuple(images.shape)}")
        self.images = images.to(self.device).contiguous()
        self.labels = torch.as_tensor(labels, dtype=torch.int64).to(self.device)
        self.n = len(self.images)
        self.batch_size, self.seed, self.train = int(batch_size), int(seed), bool(train)
        self.rank, self.world_size, self.global_batch_size = rank, world_size, global_batch_size
        self.padding = recipe.crop_padding if train else 0
        self.flip = recipe.flip and train
        self.mean = torch.tensor(recipe.mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(recipe.std, dtype=torch.float32, device=self.device)
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


# ---------------------------------------------------------------------------------------------
# FFCV: conversion with manifests
# ---------------------------------------------------------------------------------------------
def _require_ffcv() -> None:
    try:
        import ffcv  # noqa: F401
    except ImportError as err:
        raise DataError(f"FFCV is not importable here ({err}); use --loader tensor (Fashion-MNIST, CIFAR) or "
                        "install ffcv (make setup)") from None


def _ffcv_versions() -> dict[str, Any]:
    from importlib.metadata import version

    from ffcv.types import CURRENT_VERSION

    return {"ffcv": version("ffcv"), "beton_format": int(CURRENT_VERSION)}


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    # keyed by size and mtime so one process hashes each source once, and a changed file again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    st = path.stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def _source_fingerprint(dataset: str, data_root: Path, download: bool | None) -> dict[str, Any]:
    if dataset == "imagenet":
        h = hashlib.sha256()
        count = 0
        root = data_root / "imagenet"
        for split, (files, _) in _imagenet_files(data_root).items():
            for p in files:
                st = p.stat()
                h.update(f"{split}\0{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                count += 1
        return {"kind": "imagefolder", "files": count, "listing_sha256": h.hexdigest()}
    if download is None:
        download = dataset == "fashion-mnist"
    files = _source_files(dataset, data_root, download)
    # content, not paths: the same files copied elsewhere still match
    return {"kind": "files", "files": {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}}


def _beton_digest(path: Path) -> str:
    size = path.stat().st_size
    if size <= _FULL_HASH_LIMIT:
        return "sha256:" + _sha256(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        f.seek(size - (1 << 20))
        h.update(f.read(1 << 20))
    return "sha256-head-tail:" + h.hexdigest()


def _beton_header_ok(path: Path, count: int) -> str | None:
    from ffcv.types import CURRENT_VERSION, HeaderType

    size = path.stat().st_size
    if size < HeaderType.itemsize:
        return "shorter than its header"
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    if int(header["version"]) != CURRENT_VERSION:
        return f"beton format {int(header['version'])}, this FFCV writes {CURRENT_VERSION}"
    if int(header["num_samples"]) != count:
        return f"{int(header['num_samples'])} samples in its header, {count} in the manifest"
    if not 0 < int(header["alloc_table_ptr"]) <= size:
        return "allocation table pointer outside the file"
    return None


def _manifest_problem(beton: Path, expected: dict[str, Any]) -> str | None:
    """Why an existing beton cannot be reused (None: it can); checked without reading its data."""
    manifest = beton.with_suffix(".json")
    if not beton.exists():
        return "missing"
    if not manifest.exists():
        return "no manifest (an interrupted or foreign write)"
    try:
        found = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return "unreadable manifest"
    for key, value in expected.items():
        if key == "source" and value is None:
            continue  # the source is absent: checked by the caller
        if found.get(key) != value:
            return f"{key} differs (stale)"
    if beton.stat().st_size != found.get("bytes"):
        return f"size {beton.stat().st_size} bytes, manifest says {found.get('bytes')} (truncated or partial)"
    problem = _beton_header_ok(beton, found.get("count", -1))
    if problem:
        return f"corrupt: {problem}"
    if _beton_digest(beton) != found.get("digest"):
        return "content hash differs from the manifest (corrupt)"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # ranks of one job may all call prepare_ffcv: one builds, the others wait and then reuse
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _ArraySource:
    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.images[i], int(self.labels[i])


class _ImageFileSource:
    def __init__(self, files: list[Path], labels: np.ndarray):
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        from PIL import Image

        try:
            with Image.open(self.files[i]) as im:
                return np.asarray(im.convert("RGB")), int(self.labels[i])
        except Exception as err:
            raise DataError(f"cannot decode {self.files[i]}: {type(err).__name__}: {err}") from err


def _write_beton(path: Path, source: Any, fields: dict[str, Any], num_workers: int, desc: str,
                 page_size: int) -> None:
    """FFCV's DatasetWriter, with a labelled progress bar and no endless wait on a dead worker."""
    import ctypes
    from multiprocessing import Process, Queue, Value

    from ffcv.memory_allocator import MemoryAllocator
    from ffcv.utils import chunks
    from ffcv.writer import DatasetWriter, worker_job_indexed_dataset
    from tqdm import tqdm

    writer = DatasetWriter(str(path), fields, num_workers=num_workers, page_size=page_size)
    n = len(source)
    writer.num_samples = n
    writer.prepare()
    work: Queue = Queue()
    for chunk in chunks(list(enumerate(range(n))), 100):
        work.put(chunk)
    for _ in range(writer.num_workers):
        work.put(None)
    allocations: Queue = Queue()
    done = Value(ctypes.c_uint64, 0)
    allocator = MemoryAllocator(str(path), writer.data_region_start, writer.page_size)
    args = (work, writer.metadata_sm, writer.metadata_type, writer.fields, allocator, done, allocations, source)
    procs = [Process(target=worker_job_indexed_dataset, args=args) for _ in range(writer.num_workers)]
    try:
        for p in procs:
            p.start()
        with tqdm(total=n, desc=desc, unit="img", leave=False, disable=None) as bar:  # bars on terminals only
            seen = 0
            while seen < n:
                time.sleep(0.05)
                bar.update(done.value - seen)
                seen = done.value
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise DataError(f"writing {path.name} failed: a writer process exited with code "
                                    f"{dead[0].exitcode} (its traceback is above)")
        table = []
        for _ in procs:
            table.extend(allocations.get(timeout=600))
        for p in procs:
            p.join()
        writer.finalize(table)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        writer.metadata_sm.close()
        writer.metadata_sm.unlink()


def _beton_name(split: str, dataset: str, subset: int | None, val_size: int) -> str:
    parts = [split]
    if split != "test" and val_size != get_recipe(dataset).val_size:
        parts.append(f"val{val_size}")
    if split == "train" and subset is not None:
        parts.append(f"subset{subset}")
    return "-".join(parts) + ".beton"


def prepare_ffcv(dataset: str, data_root: str | os.PathLike[str], *, subset: int | None = None,
                 out_dir: str | os.PathLike[str] | None = None, val_size: int | None = None,
                 num_workers: int | None = None, max_resolution: int = 256, jpeg_quality: int = 90,
                 download: bool | None = None) -> dict[str, Path]:
    """Write (or reuse) one .beton per split with a manifest JSON next to each; return their paths.

    A file is reused only when its manifest matches the source fingerprint, split settings, field
    layout, FFCV version and this module's format version, and the file's size, header and hash
    match the manifest; anything else (stale, partial, corrupt) is rebuilt, never read. Files go
    to ``<data_root>/ffcv/<dataset>/`` by default; the subset is in the train file's name (val and
    test do not depend on it). Writes go to a temporary name and are renamed into place.
    ``max_resolution`` and ``jpeg_quality`` apply to ImageNet (stored as JPEG, longest side capped).
    """
    _check_dataset(dataset)
    _require_ffcv()
    from ffcv.fields import IntField, NDArrayField, RGBImageField

    data_root = Path(data_root)
    recipe = get_recipe(dataset)
    val = _recipe_val_size(dataset, val_size)
    out = Path(out_dir) if out_dir is not None else data_root / "ffcv" / dataset
    workers = max(1, min(num_workers or os.cpu_count() or 1, os.cpu_count() or 1))

    if dataset == "fashion-mnist":
        layout = {"image": {"field": "NDArrayField", "dtype": "uint8", "shape": [28, 28, 1]},
                  "label": {"field": "IntField"}}
    elif dataset == "imagenet":
        layout = {"image": {"field": "RGBImageField", "write_mode": "jpg", "max_resolution": max_resolution,
                            "jpeg_quality": jpeg_quality}, "label": {"field": "IntField"}}
    else:
        layout = {"image": {"field": "RGBImageField", "write_mode": "raw"}, "label": {"field": "IntField"}}

    def make_fields() -> dict[str, Any]:
        if dataset == "fashion-mnist":
            image: Any = NDArrayField(dtype=np.dtype("uint8"), shape=(28, 28, 1))
        elif dataset == "imagenet":
            image = RGBImageField(write_mode="jpg", max_resolution=max_resolution, jpeg_quality=jpeg_quality)
        else:
            image = RGBImageField(write_mode="raw")
        return {"image": image, "label": IntField()}

    missing_source: DataError | None = None
    try:
        fingerprint: dict[str, Any] | None = _source_fingerprint(dataset, data_root, download)
    except DataError as err:
        # betons copied without their source (an ImageNet cluster) are usable, unverified against it
        fingerprint, missing_source = None, err
    common = {"format_version": FORMAT_VERSION, **_ffcv_versions(), "dataset": dataset, "source": fingerprint,
              "split_seed": recipe.split_seed, "val_size": val, "fields": layout}
    paths = {s: out / _beton_name(s, dataset, subset, val) for s in ("train", "val", "test")}
    if missing_source is not None and not any(p.is_file() for p in paths.values()):
        raise missing_source  # before anything is created: a mistyped --data-root leaves no folders behind
    out.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Any] | None = None

    def load_sources() -> dict[str, Any]:
        if dataset == "imagenet":
            files = _imagenet_files(data_root)
            tr_files, tr_labels = files["train"]
            idx = split_indices(len(tr_files), val, recipe.split_seed, subset)
            return {"train": _ImageFileSource([tr_files[i] for i in idx["train"]], tr_labels[idx["train"]]),
                    "val": _ImageFileSource([tr_files[i] for i in idx["val"]], tr_labels[idx["val"]]),
                    "test": _ImageFileSource(*files["test"])}
        arrays = split_arrays(dataset, data_root, subset=subset, val_size=val, download=download)
        return {s: _ArraySource(*arrays[s]) for s in arrays}

    for split, beton in paths.items():
        expected = {**common, "split": split, "subset": subset if split == "train" else None}
        with _locked(out / f".{beton.name}.lock"):
            problem = _manifest_problem(beton, expected)
            if problem is None:
                if missing_source is None:
                    log.info("reusing %s (manifest matches)", beton)
                else:
                    log.warning("reusing %s: its source is not here to check against (%s)", beton, missing_source)
                continue
            if missing_source is not None:
                raise DataError(f"{missing_source} (and {beton} cannot be reused: {problem})")
            if problem != "missing":
                log.warning("rebuilding %s: %s", beton, problem)
            if sources is None:
                sources = load_sources()
            src = sources[split]
            manifest = beton.with_suffix(".json")
            manifest.unlink(missing_ok=True)  # a crash from here on leaves no manifest: rebuilt next time
            tmp = beton.with_name(f".{beton.name}.tmp-{os.getpid()}")
            try:
                # each writer process fills its own pages: small pages keep small sets small
                page = 1 << 21 if dataset in SMALL_DATASETS else 1 << 23
                _write_beton(tmp, src, make_fields(), workers, f"{dataset} {split} -> {beton.name}", page)
                os.replace(tmp, beton)
            finally:
                tmp.unlink(missing_ok=True)
            labels = np.asarray(src.labels, dtype=np.int64)
            record = {**expected, "count": len(src), "bytes": beton.stat().st_size, "digest": _beton_digest(beton),
                      "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            tmp_manifest = manifest.with_name(f".{manifest.name}.tmp-{os.getpid()}")
            tmp_manifest.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            os.replace(tmp_manifest, manifest)
            log.info("wrote %s (%d examples, %.1f MB)", beton, len(src), record["bytes"] / 1e6)
    return paths


# ---------------------------------------------------------------------------------------------
# FFCV: loaders
# ---------------------------------------------------------------------------------------------
@functools.cache
def _ffcv_ops() -> Any:
    """FFCV operations of this module, defined on first use so that importing it needs no FFCV."""
    from dataclasses import replace
    from types import SimpleNamespace

    from ffcv.fields.rgb_image import RandomResizedCropRGBImageDecoder, get_random_crop
    from ffcv.libffcv import imdecode, resize_crop
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler
    from ffcv.pipeline.operation import Operation
    from ffcv.pipeline.state import State
    from ffcv.traversal_order.base import TraversalOrder

    class AugmentNormalize(Operation):
        """uint8 NHWC tensor on the device -> float32 NCHW, with this module's exact crop and flip.

        A Python-level (not jitted) operation: it reads the epoch's per-example parameters when
        called and receives the batch's example indices, so its output depends only on
        (seed, epoch, example), as in TensorLoader.
        """

        def __init__(self, mean: Sequence[float], std: Sequence[float], *, seed: int, padding: int, flip: bool):
            super().__init__()
            self.mean_values, self.std_values = tuple(mean), tuple(std)
            self.seed, self.padding, self.flip = seed, padding, flip
            self.params: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
            self.epoch: int | None = None

        def set_epoch(self, epoch: int) -> None:
            if self.epoch != epoch and (self.padding > 0 or self.flip):
                n = len(self.metadata)
                offsets, flips = augment_params(n, self.seed, epoch, self.padding, self.flip)
                self.params = tuple(None if t is None else t.to(self.device) for t in (offsets, flips))
                if self.device.type == "cuda":
                    # FFCV runs this op on its own CUDA stream: the copies must have landed first
                    torch.cuda.current_stream(self.device).synchronize()
            self.epoch = epoch

        def generate_code(self) -> Callable:
            mean = torch.tensor(self.mean_values, dtype=torch.float32, device=self.device)
            std = torch.tensor(self.std_values, dtype=torch.float32, device=self.device)

            def augment(images: torch.Tensor, _dst: Any, indices: np.ndarray) -> torch.Tensor:
                offsets, flips = self.params
                if offsets is not None or flips is not None:
                    idx = torch.from_numpy(indices.astype(np.int64)).to(self.device)
                    offsets = None if offsets is None else offsets[idx]
                    flips = None if flips is None else flips[idx]
                return augment_normalize(images, mean, std, padding=self.padding, offsets=offsets, flips=flips)

            augment.with_indices = True  # type: ignore[attr-defined]
            return augment

        def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery | None]:
            self.device = previous_state.device
            h, w, c = previous_state.shape
            return replace(previous_state, jit_mode=False, shape=(c, h, w), dtype=torch.float32), None

    class SeededRandomResizedCrop(RandomResizedCropRGBImageDecoder):
        """FFCV's random-resized-crop decoder, its crop drawn from a generator seeded per example.

        numba's generator is per thread; seeding it with a hash of (seed, epoch, example) right
        before each draw makes the crop independent of threads and history. The epoch enters the
        compiled code as a constant, so the loader recompiles at every epoch (a few seconds,
        small against an ImageNet epoch).
        """

        def __init__(self, output_size: tuple[int, int], *, seed: int, **kwargs: Any):
            super().__init__(output_size, **kwargs)
            self.seed = seed
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def generate_code(self) -> Callable:
            jpg = 0
            mem_read = self.memory_read
            my_range = Compiler.get_iterator()
            # fresh dispatchers per compile, as FFCV does: numba dispatchers shared between
            # compiled pipelines break (KeyError) once an older pipeline is garbage-collected
            imdecode_c = Compiler.compile(imdecode)
            resize_crop_c = Compiler.compile(resize_crop)
            get_crop_c = Compiler.compile(get_random_crop)
            scale, ratio = np.array(self.scale), np.array(self.ratio)
            base = np.uint64(_stream_seed(self.seed, self.epoch, _RRC))
            mult = np.uint64(0x9E3779B97F4A7C15)
            low32 = np.uint64(0xFFFFFFFF)
            shift = np.uint64(29)

            def decode(batch_indices, my_storage, metadata, storage_state):
                destination, temp_storage = my_storage
                for dst_ix in my_range(len(batch_indices)):
                    source_ix = batch_indices[dst_ix]
                    field = metadata[source_ix]
                    image_data = mem_read(field["data_ptr"], storage_state)
                    height = np.uint32(field["height"])
                    width = np.uint32(field["width"])
                    if field["mode"] == jpg:
                        temp_buffer = temp_storage[dst_ix]
                        imdecode_c(image_data, temp_buffer, height, width, height, width, 0, 0, 1, 1, False, False)
                        selected_size = 3 * height * width
                        temp_buffer = temp_buffer.reshape(-1)[:selected_size]
                        temp_buffer = temp_buffer.reshape(height, width, 3)
                    else:
                        temp_buffer = image_data.reshape(height, width, 3)
                    h = (np.uint64(source_ix) * mult) ^ base
                    h = h ^ (h >> shift)
                    np.random.seed(np.uint32(h & low32))
                    i, j, ch_, cw = get_crop_c(height, width, scale, ratio)
                    resize_crop_c(temp_buffer, i, i + ch_, j, j + cw, destination[dst_ix])
                return destination[: len(batch_indices)]

            decode.is_parallel = True
            return decode

    class EpochOrder(TraversalOrder):
        """FFCV traversal order that is ``train_order`` over the loader's indices."""

        def __init__(self, *, batch_size: int, seed: int, rank: int, world_size: int,
                     global_batch_size: int | None):
            self.kw = {"rank": rank, "world_size": world_size, "global_batch_size": global_batch_size}
            self.batch_size, self.seed_value = batch_size, seed

        def __call__(self, loader: Any) -> EpochOrder:
            # FFCV instantiates orders with order(loader); an instance stands in for the class here
            super().__init__(loader)
            return self

        def sample_order(self, epoch: int) -> np.ndarray:
            pos = train_order(len(self.indices), self.batch_size, self.seed_value, epoch, **self.kw)
            return np.asarray(self.indices)[pos]

    return SimpleNamespace(AugmentNormalize=AugmentNormalize, SeededRandomResizedCrop=SeededRandomResizedCrop,
                           EpochOrder=EpochOrder)


def _iterate_ffcv(loader: Any) -> Iterator[Any]:
    """FFCV's EpochIterator.__next__ with a watchdog on its worker thread.

    FFCV waits on its queue forever, so an exception in the loading thread (its traceback is
    printed) would hang training; here it becomes a DataError.
    """
    import queue

    from ffcv.loader.epoch_iterator import IS_CUDA

    it = iter(loader)
    if not hasattr(it, "output_queue"):  # another FFCV version: no watchdog
        yield from it
        return
    while True:
        try:
            item = it.output_queue.get(timeout=1.0)
        except queue.Empty:
            if it.is_alive():
                continue
            it.close()
            raise DataError(f"FFCV's loading thread for {loader.fname} died (its traceback is above)") from None
        if item is None:
            it.close()
            return
        slot, result = item
        if IS_CUDA:
            it.current_stream.wait_stream(it.cuda_streams[slot])
        yield result


class FFCVLoader:
    """An FFCV Loader behind the interface of TensorLoader (see there for the epoch semantics)."""

    def __init__(self, loader: Any, *, epoch_ops: Sequence[Any], num_examples: int,
                 postprocess: Callable[..., torch.Tensor] | None, seed: int, device: torch.device):
        self.loader = loader
        self.num_examples = num_examples
        self._epoch_ops = list(epoch_ops)
        self._postprocess = postprocess
        self._seed, self._device = seed, device

    def set_epoch(self, epoch: int) -> None:
        self.loader.next_epoch = int(epoch)

    @property
    def epoch(self) -> int:
        return int(self.loader.next_epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = self.epoch
        for op in self._epoch_ops:
            op.set_epoch(epoch)
        gen = None
        if self._postprocess is not None:
            gen = torch.Generator(device=self._device).manual_seed(_stream_seed(self._seed, epoch, _COLOUR))
        for x, y in _iterate_ffcv(self.loader):
            # FFCV reuses its label buffers a few batches later: hand out a copy
            y = y.reshape(-1).clone()
            if x.is_cuda:
                # x was allocated on FFCV's side stream: keep the allocator from reusing its memory
                # there while this (the consumer's) stream may still be reading it
                x.record_stream(torch.cuda.current_stream(x.device))
            if self._postprocess is not None:
                x = self._postprocess(x, generator=gen)
            yield x, y


def ffcv_loader(beton_path: str | os.PathLike[str], *, dataset: str, split: str, batch_size: int,
                device: torch.device | str, seed: int, train: bool, distributed: bool = False, rank: int = 0,
                world_size: int = 1, indices: Sequence[int] | np.ndarray | None = None,
                num_workers: int | None = None, augment: str = "exact", image_size: int | None = None,
                global_batch_size: int | None = None, batches_ahead: int = 3) -> FFCVLoader:
    """One split's FFCV loader yielding (float32 NCHW normalised images, int64 labels) on ``device``.

    Training: random order from ``train_order`` (a function of seed and epoch, split over ranks
    when ``distributed``), full batches only, crop-with-padding + flip (Fashion-MNIST: padding 2,
    CIFAR: 4) or, for ImageNet, random-resized crop + flip + ``imagenet_train_postprocess``.
    ``augment="exact"`` (default) draws every random choice from (seed, epoch, example);
    ``augment="ffcv"`` uses FFCV's RandomTranslate / RandomHorizontalFlip / random-resized-crop
    decoder, which are not reproducible. Evaluation: no augmentation (ImageNet: centre crop), every
    example once; with ``distributed`` each rank reads the strided share ``eval_indices`` (FFCV's
    own distributed mode pads the last batch with repeats). ``split`` is used in messages only.
    """
    _check_dataset(dataset)
    _require_ffcv()
    if augment not in ("exact", "ffcv"):
        raise ValueError(f"augment must be 'exact' or 'ffcv', got {augment!r}")
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.ndarray import NDArrayDecoder
    from ffcv.fields.rgb_image import CenterCropRGBImageDecoder, RandomResizedCropRGBImageDecoder, SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor

    ops = _ffcv_ops()
    beton_path = Path(beton_path)
    if not beton_path.is_file():
        raise DataError(f"{beton_path} does not exist: run prepare_ffcv first")
    device = torch.device(device)
    recipe = get_recipe(dataset)
    if not distributed:
        rank, world_size = 0, 1
    exact = augment == "exact"
    epoch_ops: list[Any] = []
    image_pipe: list[Any] = []
    recompile = False
    if dataset == "imagenet":
        size = image_size or recipe.image_size
        if train and exact:
            decoder = ops.SeededRandomResizedCrop((size, size), seed=seed)
            epoch_ops.append(decoder)
            recompile = True
        elif train:
            decoder = RandomResizedCropRGBImageDecoder((size, size))
        else:
            decoder = CenterCropRGBImageDecoder((size, size), ratio=recipe.image_size / recipe.extra["val_resize"])
        image_pipe.append(decoder)
        padding = 0
    else:
        image_pipe.append(NDArrayDecoder() if dataset == "fashion-mnist" else SimpleRGBImageDecoder())
        padding = recipe.crop_padding
    flip = recipe.flip and train
    if train and not exact:
        if padding:
            image_pipe.append(RandomTranslate(padding=padding, fill=(0,) * recipe.in_chans))
        if flip:
            image_pipe.append(RandomHorizontalFlip())
    norm = ops.AugmentNormalize(recipe.mean, recipe.std, seed=seed, padding=padding if (train and exact) else 0,
                                flip=flip and exact)
    epoch_ops.append(norm)
    image_pipe += [ToTensor(), ToDevice(device, non_blocking=True), norm]
    label_pipe = [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True)]

    if train:
        order: Any = ops.EpochOrder(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                                    global_batch_size=global_batch_size)
    else:
        order = OrderOption.SEQUENTIAL
        if distributed and indices is None:
            from ffcv.reader import Reader

            indices = eval_indices(int(Reader(str(beton_path)).num_samples), rank, world_size)
    try:
        loader = Loader(str(beton_path), batch_size=batch_size, num_workers=num_workers or -1, order=order,
                        indices=None if indices is None else np.asarray(indices, dtype=np.uint64),
                        pipelines={"image": image_pipe, "label": label_pipe}, drop_last=train, seed=seed,
                        batches_ahead=batches_ahead, recompile=recompile)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot open {beton_path} for {dataset}/{split} ({type(err).__name__}: {err}); "
                        "delete it to rebuild it") from err
    num = len(loader.first_traversal_order)
    if train:
        num = len(loader) * batch_size
    post = None
    if dataset == "imagenet" and train:
        post = functools.partial(imagenet_train_postprocess, jitter=recipe.extra.get("color_jitter", 0.4),
                                 lighting=recipe.extra.get("pca_lighting", 0.1), mean=recipe.mean, std=recipe.std)
    return FFCVLoader(loader, epoch_ops=epoch_ops, num_examples=num, postprocess=post, seed=seed, device=device)


# ---------------------------------------------------------------------------------------------
# Entry point for train.py
# ---------------------------------------------------------------------------------------------
def build_loaders(dataset: str, data_root: str | os.PathLike[str], *, loader: str, batch_size: int,
                  subset: int | None, seed: int, device: torch.device | str, rank: int = 0, world_size: int = 1,
                  num_workers: int | None = None, val_size: int | None = None,
                  global_batch_size: int | None = None, eval_batch_size: int | None = None,
                  augment: str = "exact") -> dict[str, TensorLoader | FFCVLoader]:
    """train / val / test loaders; ``batch_size`` is the per-rank micro-batch.

    ``global_batch_size`` (default: batch_size x world_size) sets where an epoch ends: only full
    global batches are trained on, so with gradient accumulation pass the global batch and every
    micro-batch yielded belongs to a full step.
    """
    _check_dataset(dataset)
    if loader not in ("ffcv", "tensor"):
        raise DataError(f"unknown loader {loader!r}: use ffcv or tensor")
    distributed = world_size > 1
    eval_bs = eval_batch_size or batch_size
    if loader == "tensor":
        if dataset not in SMALL_DATASETS:
            raise DataError(f"--loader tensor holds a whole split in memory: not for {dataset} (use --loader ffcv)")
        arrays = split_arrays(dataset, data_root, subset=subset, val_size=val_size)
        return {split: TensorLoader(x, y, dataset=dataset, batch_size=batch_size if split == "train" else eval_bs,
                                    device=device, seed=seed, train=split == "train", rank=rank,
                                    world_size=world_size, global_batch_size=global_batch_size)
                for split, (x, y) in arrays.items()}
    paths = prepare_ffcv(dataset, data_root, subset=subset, val_size=val_size, num_workers=num_workers)
    return {split: ffcv_loader(path, dataset=dataset, split=split,
                               batch_size=batch_size if split == "train" else eval_bs, device=device, seed=seed,
                               train=split == "train", distributed=distributed, rank=rank, world_size=world_size,
                               num_workers=num_workers, augment=augment, global_batch_size=global_batch_size)
            for split, path in paths.items()}

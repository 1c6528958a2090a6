"""The datasets' files, the protocol's splits, and the two loaders (in-memory tensors and FFCV).

Splits follow REPRODUCTION.md: the validation split is carved first from the official training
set with the recipe's split seed (0, independent of the run seed); ``subset`` then takes the first
N examples of the remaining pool in the same seeded order, so subsets are nested; test is the
official test set (for ImageNet: the official validation folder).

Both loaders share one interface (iteration yields ``(x, y)``: float32 NCHW normalised images and
int64 labels on the device; ``len()``; ``set_epoch(e)``; ``num_examples``) and, by default, the
same randomness (autolr/sampling.py, autolr/augment.py): they give bit-identical batches on the
same device, whatever the number of loader workers or restarts.

Where things are: each dataset's facts, file layout and augmentation are its entry in
autolr/datasets.py; this module reads the files and makes the splits; the in-memory loader is
autolr/tensor_loader.py; FFCV conversion and loading are autolr/ffcv_data.py, imported only when
FFCV is used (a machine without FFCV still runs ``--loader tensor``). The names of those modules
that the rest of autolr uses are importable from here too.
"""

from __future__ import annotations

import gzip
import logging
import os
import pickle
import socket
import struct
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from autolr.augment import augment_normalize, augment_params, imagenet_train_postprocess
from autolr.datasets import DATASET_SPECS, DataError, DatasetSpec, get_spec
from autolr.recipes import get_recipe
from autolr.sampling import eval_indices, train_order
from autolr.tensor_loader import TensorLoader

if TYPE_CHECKING:
    from autolr.ffcv_data import FFCVLoader

__all__ = [
    "DataError",
    "DATASETS",
    "SMALL_DATASETS",
    "read_idx",
    "load_arrays",
    "check_val_size",
    "split_indices",
    "split_arrays",
    "dataset_info",
    "prepare_ffcv",
    "ffcv_loader",
    "TensorLoader",
    "build_loaders",
    "train_order",
    "eval_indices",
    "augment_params",
    "augment_normalize",
    "imagenet_train_postprocess",
]

log = logging.getLogger("autolr.data")

DATASETS = tuple(DATASET_SPECS)
#: the datasets the tensor loader can hold in memory
SMALL_DATASETS = tuple(name for name, spec in DATASET_SPECS.items() if spec.in_memory)
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
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


def _system_dirs(spec: DatasetSpec) -> tuple[Path, ...]:
    return (Path(spec.system_dir),) if spec.system_dir else ()


def _idx_dir(spec: DatasetSpec, data_root: Path) -> Path | None:
    # all four files must come from one place: mixing copies could pair images with wrong labels
    names = [n for pair in spec.files.values() for n in pair]
    for d in (data_root / spec.folder, *_system_dirs(spec)):
        if all((d / n).is_file() or (d / f"{n}.gz").is_file() for n in names):
            return d
    return None


def _idx_paths(spec: DatasetSpec, data_root: Path, download: bool) -> dict[str, tuple[Path, Path]]:
    d = _idx_dir(spec, data_root)
    failed = None
    if d is None and download and spec.torchvision:
        failed = _torchvision_download(spec.torchvision, data_root)
        d = _idx_dir(spec, data_root)
    if d is None:
        where = ", ".join(str(p) for p in (data_root / spec.folder, *_system_dirs(spec)))
        why = f" (the download failed: {failed})" if failed else ""
        apt = f" install it with `sudo apt-get install {spec.apt_package}` or," if spec.apt_package else ""
        raise DataError(f"{spec.title} not found under {where}{why};{apt} on a machine with internet, run python -c "
                        f"\"import torchvision; torchvision.datasets.{spec.torchvision}('{data_root}', "
                        "download=True)\"")

    def pick(name: str) -> Path:
        return d / name if (d / name).is_file() else d / f"{name}.gz"

    return {split: (pick(img), pick(lab)) for split, (img, lab) in spec.files.items()}


def _fashion_paths(data_root: Path, download: bool) -> dict[str, tuple[Path, Path]]:
    # tests/test_train.py asks this whether Fashion-MNIST is installed
    return _idx_paths(DATASET_SPECS["fashion-mnist"], data_root, download)


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


def _cifar_paths(spec: DatasetSpec, data_root: Path, download: bool) -> dict[str, list[Path]]:
    d = data_root / spec.folder
    files = {split: [d / name for name in names] for split, names in spec.files.items()}
    missing = [p for ps in files.values() for p in ps if not p.is_file()]
    failed = None
    if missing and download:
        failed = _torchvision_download(spec.torchvision, data_root)
        missing = [p for ps in files.values() for p in ps if not p.is_file()]
    if missing:
        why = f" (the download failed: {failed})" if failed else ""
        raise DataError(f"{spec.name} not found{why}: {missing[0]} is missing; put torchvision's {d.name}/ folder "
                        f"under {data_root}, or on a machine with internet run python -c \"import torchvision; "
                        f"torchvision.datasets.{spec.torchvision}('{data_root}', download=True)\"")
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


def _source_files(dataset: str, data_root: Path, download: bool | None) -> list[Path]:
    """Every file a small dataset is read from (for the fingerprint in FFCV's manifests)."""
    spec = get_spec(dataset)
    download = spec.download_by_default if download is None else download
    if spec.layout == "idx":
        return [p for pair in _idx_paths(spec, data_root, download).values() for p in pair]
    if spec.layout == "cifar":
        return [p for ps in _cifar_paths(spec, data_root, download).values() for p in ps]
    raise DataError(f"{dataset} has no array source")


def load_arrays(dataset: str, data_root: str | os.PathLike[str], *,
                download: bool | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The official train and test sets of a small dataset: uint8 NHWC images, int64 labels.

    ``download``: None tries torchvision's downloader for the datasets whose entry says so
    (Fashion-MNIST: small, the offline default); True tries it for CIFAR too; False never touches
    the network.
    """
    spec = get_spec(dataset)
    data_root = Path(data_root)
    if spec.layout == "imagefolder":
        raise DataError(f"{dataset} is read from its ImageFolder tree by prepare_ffcv; there are no arrays "
                        "(use --loader ffcv)")
    download = spec.download_by_default if download is None else download
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if spec.layout == "idx":
        size = (spec.image_size - 2 * spec.pad,) * 2
        for split, (img_path, lab_path) in _idx_paths(spec, data_root, download).items():
            images, labels = read_idx(img_path), read_idx(lab_path)
            if images.ndim != 3 or images.shape[1:] != size:
                raise DataError(f"{img_path} holds images of shape {images.shape[1:]}, not {size[0]}x{size[1]}")
            if spec.pad:
                images = np.pad(images, ((0, 0), (spec.pad, spec.pad), (spec.pad, spec.pad)))
            if labels.ndim != 1 or len(labels) != len(images):
                raise DataError(f"{lab_path} holds {len(labels)} labels for {len(images)} images in {img_path}")
            if labels.max(initial=0) >= spec.num_classes:
                raise DataError(f"{lab_path} holds labels above {spec.num_classes - 1}: not {spec.title}")
            out[split] = (images[..., None].copy(), labels.astype(np.int64))
        return out
    for split, paths in _cifar_paths(spec, data_root, download).items():
        parts = [_read_cifar_file(p, spec.label_key) for p in paths]
        out[split] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    return out


def _imagefolder_files(dataset: str, data_root: Path) -> dict[str, tuple[list[Path], np.ndarray]]:
    """An ImageFolder tree's files and labels per official split (class index: sorted train folders)."""
    spec = get_spec(dataset)
    root = data_root / spec.folder
    out: dict[str, tuple[list[Path], np.ndarray]] = {}
    classes: list[str] = []
    (train_dir,), (test_dir,) = spec.files["train"], spec.files["test"]
    for official, split in ((train_dir, "train"), (test_dir, "test")):
        d = root / official
        if not d.is_dir():
            raise DataError(f"{dataset} not found: {d} is missing; put the ImageFolder tree there "
                            f"({root}/{train_dir}/<class>/*.JPEG and {root}/{test_dir}/<class>/*.JPEG)")
        these = sorted(e.name for e in os.scandir(d) if e.is_dir())
        if split == "train":
            classes = these
        elif not set(these) <= set(classes):
            raise DataError(f"{d} has class folders that {root}/{train_dir} lacks: "
                            f"{sorted(set(these) - set(classes))[:3]}")
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
def _val_size_error(val_size: int, n_train: int, what: str) -> DataError:
    return DataError(f"--val-size {val_size}: {what} has {n_train} examples and the validation split must leave "
                     f"some for training; pick a --val-size from 1 to {n_train - 1}")


def check_val_size(dataset: str, val_size: int | None) -> int:
    """The validation split's size (default: the recipe's), checked against the official training set."""
    spec = get_spec(dataset)
    val = get_recipe(dataset).val_size if val_size is None else int(val_size)
    if not 0 < val < spec.train_size:
        raise _val_size_error(val, spec.train_size, f"the official training set of {dataset}")
    return val


def split_indices(n_train: int, val_size: int, split_seed: int, subset: int | None) -> dict[str, np.ndarray]:
    """Sorted indices into the official training set: ``val`` first, then ``train`` from the rest.

    One seeded permutation decides both: its first ``val_size`` entries are the validation split,
    and ``subset`` takes the next N, so a smaller subset is always contained in a larger one.
    """
    if not 0 < val_size < n_train:
        raise _val_size_error(val_size, n_train, "the training set")
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
    idx = split_indices(len(x), check_val_size(dataset, val_size), get_recipe(dataset).split_seed, subset)
    return {"train": (x[idx["train"]], y[idx["train"]]), "val": (x[idx["val"]], y[idx["val"]]),
            "test": arrays["test"]}


def dataset_info(dataset: str, subset: int | None = None, val_size: int | None = None) -> dict[str, Any]:
    """What a model and a schedule need to know, from the dataset's entry and the recipe."""
    spec = get_spec(dataset)
    val = check_val_size(dataset, val_size)
    pool = spec.train_size - val
    if subset is not None and not 0 < subset <= pool:
        raise DataError(f"--subset {subset}: the training pool of {dataset} has {pool} examples "
                        f"({spec.train_size} minus {val} for validation); pick 1..{pool}")
    return {"dataset": dataset, "num_classes": spec.num_classes, "in_chans": spec.in_chans,
            "image_size": spec.image_size, "train_size": pool if subset is None else subset, "val_size": val,
            "test_size": spec.test_size, "subset": subset, "split_seed": get_recipe(dataset).split_seed,
            "mean": list(spec.mean), "std": list(spec.std)}


# ---------------------------------------------------------------------------------------------
# FFCV, imported on first use
# ---------------------------------------------------------------------------------------------
def _ffcv_module() -> ModuleType:
    try:
        import autolr.ffcv_data as module
    except ImportError as err:
        if (err.name or "").startswith("autolr"):
            raise
        raise DataError(f"FFCV is not importable here ({err}); use --loader tensor (Fashion-MNIST, CIFAR) or "
                        "install ffcv (make setup)") from None
    return module


def prepare_ffcv(dataset: str, data_root: str | os.PathLike[str], **options: Any) -> dict[str, Path]:
    """Write (or reuse) one .beton per split with its manifest: ``autolr.ffcv_data.prepare_ffcv``."""
    get_spec(dataset)
    return _ffcv_module().prepare_ffcv(dataset, data_root, **options)


def ffcv_loader(beton_path: str | os.PathLike[str], **options: Any) -> FFCVLoader:
    """One split's FFCV loader: ``autolr.ffcv_data.ffcv_loader``."""
    return _ffcv_module().ffcv_loader(beton_path, **options)


def __getattr__(name: str) -> Any:
    # the FFCV-only names, without importing FFCV when this module is imported
    if name in ("FFCVLoader", "FORMAT_VERSION"):
        return getattr(_ffcv_module(), name)
    raise AttributeError(f"module 'autolr.data' has no attribute {name!r}")


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
    spec = get_spec(dataset)
    if loader not in ("ffcv", "tensor"):
        raise DataError(f"unknown loader {loader!r}: use ffcv or tensor")
    distributed = world_size > 1
    eval_bs = eval_batch_size or batch_size
    if loader == "tensor":
        if not spec.in_memory:
            raise DataError(f"--loader tensor holds a whole split in memory: not for {dataset} (use --loader ffcv)")
        arrays = split_arrays(dataset, data_root, subset=subset, val_size=val_size)
        return {split: TensorLoader(x, y, dataset=dataset, batch_size=batch_size if split == "train" else eval_bs,
                                    device=device, seed=seed, train=split == "train", rank=rank,
                                    world_size=world_size, global_batch_size=global_batch_size)
                for split, (x, y) in arrays.items()}
    ffcv = _ffcv_module()
    paths = ffcv.prepare_ffcv(dataset, data_root, subset=subset, val_size=val_size, num_workers=num_workers)
    return {split: ffcv.ffcv_loader(path, dataset=dataset, split=split,
                               batch_size=batch_size if split == "train" else eval_bs, device=device, seed=seed,
                               train=split == "train", distributed=distributed, rank=rank, world_size=world_size,
                               num_workers=num_workers, augment=augment, global_batch_size=global_batch_size)
            for split, path in paths.items()}

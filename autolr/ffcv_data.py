"""FFCV: .beton conversion with manifests, and the FFCV loader with the same batches as TensorLoader.

This module imports FFCV (and numba) when it is imported, so nothing imports it at start-up:
``autolr.data`` imports it on the first call that needs FFCV, and a machine without FFCV still
runs ``--loader tensor``.

Conversion: one .beton per split with a manifest JSON next to it; a file is reused only while
its manifest matches the source, the split settings, the field layout and the FFCV version.

Loading: by default ("exact") the training order, every crop offset and flip, ImageNet's
random-resized crop and its colour noise are functions of (seed, epoch, example), as in
TensorLoader, so a resumed run sees exactly the batches an uninterrupted one would have seen.
FFCV's own random operations draw from numba's per-thread generators, seeded from OS entropy,
so they are not reproducible; they stay available as ``augment="ffcv"``.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import logging
import os
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from importlib.metadata import version
from multiprocessing import Process, Queue, Value
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ffcv.fields import IntField, NDArrayField, RGBImageField
from ffcv.fields.basics import IntDecoder
from ffcv.fields.ndarray import NDArrayDecoder
from ffcv.fields.rgb_image import (
    CenterCropRGBImageDecoder,
    RandomResizedCropRGBImageDecoder,
    SimpleRGBImageDecoder,
    get_random_crop,
)
from ffcv.libffcv import imdecode, resize_crop
from ffcv.loader import Loader, OrderOption
from ffcv.loader.epoch_iterator import IS_CUDA
from ffcv.memory_allocator import MemoryAllocator
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from ffcv.reader import Reader
from ffcv.transforms import RandomHorizontalFlip, RandomTranslate, ToDevice, ToTensor
from ffcv.traversal_order.base import TraversalOrder
from ffcv.types import CURRENT_VERSION, HeaderType
from ffcv.utils import chunks
from ffcv.writer import DatasetWriter, worker_job_indexed_dataset

from autolr import data
from autolr.augment import augment_normalize, augment_params, imagenet_train_postprocess
from autolr.datasets import DataError, DatasetSpec, get_spec
from autolr.files import atomic_path, atomic_write_json
from autolr.recipes import get_recipe
from autolr.sampling import COLOUR, RESIZED_CROP, eval_indices, stream_seed, train_order

__all__ = ["FORMAT_VERSION", "prepare_ffcv", "ffcv_loader", "FFCVLoader", "AugmentNormalize",
           "SeededRandomResizedCrop", "EpochOrder"]

log = logging.getLogger("autolr.data")

#: bump when the .beton layout or the manifest's meaning changes: every existing file is rebuilt
FORMAT_VERSION = 1
#: beton files up to this size are verified with a full sha256 on every reuse (~0.1 s per 100 MB);
#: larger ones (ImageNet) by size, header and the hash of their first and last MiB
_FULL_HASH_LIMIT = 2 << 30


# ---------------------------------------------------------------------------------------------
# Conversion with manifests
# ---------------------------------------------------------------------------------------------
def _ffcv_versions() -> dict[str, Any]:
    return {"ffcv": version("ffcv"), "beton_format": int(CURRENT_VERSION)}


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - size and mtime key the cache
    # keyed by size and mtime so one process hashes each source once, and a changed file again
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    st = path.stat()
    return _file_sha256(str(path), st.st_size, st.st_mtime_ns)


def _source_fingerprint(spec: DatasetSpec, data_root: Path, download: bool | None) -> dict[str, Any]:
    if spec.layout == "imagefolder":
        h = hashlib.sha256()
        count = 0
        root = data_root / spec.folder
        for split, (files, _) in data._imagefolder_files(spec.name, data_root).items():
            for p in files:
                st = p.stat()
                h.update(f"{split}\0{p.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                count += 1
        return {"kind": "imagefolder", "files": count, "listing_sha256": h.hexdigest()}
    files = data._source_files(spec.name, data_root, download)
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


def _image_field(spec: DatasetSpec, max_resolution: int, jpeg_quality: int) -> tuple[dict[str, Any], Any]:
    """The image field's description in the manifest, and the field itself."""
    if spec.beton_image == "ndarray":
        shape = (spec.image_size, spec.image_size, spec.in_chans)
        return ({"field": "NDArrayField", "dtype": "uint8", "shape": list(shape)},
                NDArrayField(dtype=np.dtype("uint8"), shape=shape))
    if spec.beton_image == "jpg":
        return ({"field": "RGBImageField", "write_mode": "jpg", "max_resolution": max_resolution,
                 "jpeg_quality": jpeg_quality},
                RGBImageField(write_mode="jpg", max_resolution=max_resolution, jpeg_quality=jpeg_quality))
    return {"field": "RGBImageField", "write_mode": "raw"}, RGBImageField(write_mode="raw")


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
    spec = get_spec(dataset)
    data_root = Path(data_root)
    recipe = get_recipe(dataset)
    val = data.check_val_size(dataset, val_size)
    out = Path(out_dir) if out_dir is not None else data_root / "ffcv" / dataset
    workers = max(1, min(num_workers or os.cpu_count() or 1, os.cpu_count() or 1))
    layout = {"image": _image_field(spec, max_resolution, jpeg_quality)[0], "label": {"field": "IntField"}}

    missing_source: DataError | None = None
    try:
        fingerprint: dict[str, Any] | None = _source_fingerprint(spec, data_root, download)
    except DataError as err:
        # betons copied without their source (an ImageNet cluster) are usable, unverified against it
        fingerprint, missing_source = None, err
    common = {"format_version": FORMAT_VERSION, **_ffcv_versions(), "dataset": dataset, "source": fingerprint,
              "split_seed": recipe.split_seed, "val_size": val, "fields": layout}
    paths = {s: out / _beton_name(s, dataset, subset, val) for s in ("train", "val", "test")}
    expected = {s: {**common, "split": s, "subset": subset if s == "train" else None} for s in paths}
    if missing_source is not None and not any(p.is_file() for p in paths.values()):
        raise missing_source  # before anything is created: a mistyped --data-root leaves no folders behind

    def load_sources() -> dict[str, Any]:
        if spec.layout == "imagefolder":
            files = data._imagefolder_files(dataset, data_root)
            tr_files, tr_labels = files["train"]
            idx = data.split_indices(len(tr_files), val, recipe.split_seed, subset)
            return {"train": _ImageFileSource([tr_files[i] for i in idx["train"]], tr_labels[idx["train"]]),
                    "val": _ImageFileSource([tr_files[i] for i in idx["val"]], tr_labels[idx["val"]]),
                    "test": _ImageFileSource(*files["test"])}
        arrays = data.split_arrays(dataset, data_root, subset=subset, val_size=val, download=download)
        return {s: _ArraySource(*arrays[s]) for s in arrays}

    sources: dict[str, Any] | None = None
    if missing_source is None and any(_manifest_problem(paths[s], expected[s]) for s in paths):
        # read (and so check) the source before anything is created: bad input leaves no folder or lock
        sources = load_sources()
    out.mkdir(parents=True, exist_ok=True)
    for split, beton in paths.items():
        with _locked(out / f".{beton.name}.lock"):
            problem = _manifest_problem(beton, expected[split])  # again: another rank may have built it
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
            with atomic_path(beton) as tmp:
                # each writer process fills its own pages: small pages keep small sets small
                page = 1 << 21 if spec.in_memory else 1 << 23
                fields = {"image": _image_field(spec, max_resolution, jpeg_quality)[1], "label": IntField()}
                _write_beton(tmp, src, fields, workers, f"{dataset} {split} -> {beton.name}", page)
            labels = np.asarray(src.labels, dtype=np.int64)
            record = {**expected[split], "count": len(src), "bytes": beton.stat().st_size,
                      "digest": _beton_digest(beton), "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            atomic_write_json(manifest, record, sort_keys=True)
            log.info("wrote %s (%d examples, %.1f MB)", beton, len(src), record["bytes"] / 1e6)
    return paths


# ---------------------------------------------------------------------------------------------
# Pipeline operations whose randomness is a function of (seed, epoch, example)
# ---------------------------------------------------------------------------------------------
class AugmentNormalize(Operation):
    """uint8 NHWC tensor on the device -> float32 NCHW, with the exact crop and flip of TensorLoader.

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
        base = np.uint64(stream_seed(self.seed, self.epoch, RESIZED_CROP))
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

    def __init__(self, *, batch_size: int, seed: int, rank: int, world_size: int, global_batch_size: int | None):
        self.kw = {"rank": rank, "world_size": world_size, "global_batch_size": global_batch_size}
        self.batch_size, self.seed_value = batch_size, seed

    def __call__(self, loader: Any) -> EpochOrder:
        # FFCV instantiates orders with order(loader); an instance stands in for the class here
        super().__init__(loader)
        return self

    def sample_order(self, epoch: int) -> np.ndarray:
        pos = train_order(len(self.indices), self.batch_size, self.seed_value, epoch, **self.kw)
        return np.asarray(self.indices)[pos]


# ---------------------------------------------------------------------------------------------
# The loader
# ---------------------------------------------------------------------------------------------
def _iterate_ffcv(loader: Loader) -> Iterator[Any]:
    """FFCV's EpochIterator.__next__ with a watchdog on its worker thread.

    FFCV waits on its queue forever, so an exception in the loading thread (its traceback is
    printed) would hang training; here it becomes a DataError.
    """
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

    def __init__(self, loader: Loader, *, epoch_ops: Sequence[Any], num_examples: int,
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
            gen = torch.Generator(device=self._device).manual_seed(stream_seed(self._seed, epoch, COLOUR))
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
    when ``distributed``), full batches only, the dataset's augmentation: crop-with-padding + flip
    (Fashion-MNIST: padding 2, CIFAR: 4) or, for ImageNet, random-resized crop + flip +
    ``imagenet_train_postprocess``. ``augment="exact"`` (default) draws every random choice from
    (seed, epoch, example); ``augment="ffcv"`` uses FFCV's RandomTranslate / RandomHorizontalFlip /
    random-resized-crop decoder, which are not reproducible. Evaluation: no augmentation (ImageNet:
    centre crop), every example once; with ``distributed`` each rank reads the strided share
    ``eval_indices`` (FFCV's own distributed mode pads the last batch with repeats). ``split`` is
    used in messages only.
    """
    spec = get_spec(dataset)
    aug = spec.augment
    if augment not in ("exact", "ffcv"):
        raise ValueError(f"augment must be 'exact' or 'ffcv', got {augment!r}")
    beton_path = Path(beton_path)
    if not beton_path.is_file():
        raise DataError(f"{beton_path} does not exist: run prepare_ffcv first")
    device = torch.device(device)
    if not distributed:
        rank, world_size = 0, 1
    exact = augment == "exact"
    epoch_ops: list[Any] = []
    image_pipe: list[Any] = []
    recompile = False
    if aug.resized_crop:
        size = image_size or spec.image_size
        if train and exact:
            decoder = SeededRandomResizedCrop((size, size), seed=seed)
            epoch_ops.append(decoder)
            recompile = True
        elif train:
            decoder = RandomResizedCropRGBImageDecoder((size, size))
        else:
            decoder = CenterCropRGBImageDecoder((size, size), ratio=spec.image_size / aug.eval_resize)
        image_pipe.append(decoder)
        padding = 0
    else:
        image_pipe.append(NDArrayDecoder() if spec.beton_image == "ndarray" else SimpleRGBImageDecoder())
        padding = aug.crop_padding
    flip = aug.flip and train
    if train and not exact:
        if padding:
            image_pipe.append(RandomTranslate(padding=padding, fill=(0,) * spec.in_chans))
        if flip:
            image_pipe.append(RandomHorizontalFlip())
    norm = AugmentNormalize(spec.mean, spec.std, seed=seed, padding=padding if (train and exact) else 0,
                            flip=flip and exact)
    epoch_ops.append(norm)
    image_pipe += [ToTensor(), ToDevice(device, non_blocking=True), norm]
    label_pipe = [IntDecoder(), ToTensor(), ToDevice(device, non_blocking=True)]

    if train:
        order: Any = EpochOrder(batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                                global_batch_size=global_batch_size)
    else:
        order = OrderOption.SEQUENTIAL
        if distributed and indices is None:
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
    if train and (aug.color_jitter > 0 or aug.pca_lighting > 0):
        post = functools.partial(imagenet_train_postprocess, jitter=aug.color_jitter, lighting=aug.pca_lighting,
                                 mean=spec.mean, std=spec.std)
    return FFCVLoader(loader, epoch_ops=epoch_ops, num_examples=num, postprocess=post, seed=seed, device=device)

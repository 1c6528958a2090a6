"""Tests of autolr.data: sources, splits, .beton conversion with manifests, and both loaders.

Fashion-MNIST tests read the real IDX files (Debian's dataset-fashion-mnist); CIFAR and ImageNet
tests write small files in the exact on-disk formats (torchvision's pickles, an ImageFolder tree
of JPEGs). Every test runs offline.
"""

from __future__ import annotations

import dataclasses
import gc
import gzip
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# numba reads these when first imported (by ffcv): the defaults of the Makefile, for bare pytest
os.environ.setdefault("NUMBA_THREADING_LAYER", "omp")
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "numba"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from autolr import data  # noqa: E402
from autolr.datasets import DATASET_SPECS  # noqa: E402
from autolr.recipes import get_recipe  # noqa: E402

from fakes import write_fake_cifar  # noqa: E402

FASHION_SUBSET = 2000
BS = 256


def _fashion_or_skip() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    try:
        return data.load_arrays("fashion-mnist", "/nonexistent-autolr-root", download=False)
    except data.DataError as err:
        pytest.skip(f"Fashion-MNIST is not installed here ({err})")


@pytest.fixture(scope="module")
def fashion() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return _fashion_or_skip()


@pytest.fixture(scope="module")
def fashion_betons(tmp_path_factory: pytest.TempPathFactory, fashion: dict) -> tuple[Path, dict[str, Path]]:
    pytest.importorskip("ffcv")
    root = tmp_path_factory.mktemp("fashion-root")
    return root, data.prepare_ffcv("fashion-mnist", root, subset=FASHION_SUBSET)


def normalised(images: np.ndarray, dataset: str) -> torch.Tensor:
    r = get_recipe(dataset)
    x = torch.as_tensor(images).permute(0, 3, 1, 2).double() / 255
    return ((x - torch.tensor(r.mean).view(1, -1, 1, 1)) / torch.tensor(r.std).view(1, -1, 1, 1)).float()


def collect(loader: Any) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*[(x, y) for x, y in loader], strict=True)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------------------------------------
# Sources and splits
# ---------------------------------------------------------------------------------------------
def test_fashion_idx_files(fashion: dict) -> None:
    (xtr, ytr), (xte, yte) = fashion["train"], fashion["test"]
    assert xtr.shape == (60000, 28, 28, 1) and xte.shape == (10000, 28, 28, 1)
    assert xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert ytr.shape == (60000,) and yte.shape == (10000,)
    assert np.bincount(ytr).tolist() == [6000] * 10 and np.bincount(yte).tolist() == [1000] * 10
    # the recipe's normalisation constants are those of these images
    assert abs(xtr.mean() / 255 - get_recipe("fashion-mnist").mean[0]) < 1e-3


def test_fashion_at_32_is_fashion_with_a_black_border(fashion: dict) -> None:
    padded = data.load_arrays("fashion-mnist-32", "/nonexistent-autolr-root", download=False)
    for split in ("train", "test"):
        (x32, y32), (x28, y28) = padded[split], fashion[split]
        assert x32.shape == (len(x28), 32, 32, 1) and x32.dtype == np.uint8
        assert np.array_equal(x32[:, 2:30, 2:30], x28) and np.array_equal(y32, y28)
        assert x32.sum() == x28.sum()  # the border is zeros
    spec = DATASET_SPECS["fashion-mnist-32"]
    x = padded["train"][0] / 255
    assert abs(x.mean() - spec.mean[0]) < 1e-3 and abs(x.std() - spec.std[0]) < 1e-3
    # the same split (indices) as the 28x28 grid: the runs differ by the border alone
    a, b = data.split_arrays("fashion-mnist-32", "/nonexistent-autolr-root"), \
        data.split_arrays("fashion-mnist", "/nonexistent-autolr-root")
    assert np.array_equal(a["val"][1], b["val"][1]) and np.array_equal(a["val"][0][:, 2:30, 2:30], b["val"][0])


def test_split_indices_protocol() -> None:
    s = data.split_indices(60000, 5000, 0, None)
    assert len(s["train"]) == 55000 and len(s["val"]) == 5000
    assert np.intersect1d(s["train"], s["val"]).size == 0
    assert np.array_equal(np.union1d(s["train"], s["val"]), np.arange(60000))
    assert all(np.all(np.diff(v) > 0) for v in s.values())
    # the run seed plays no part: global RNG state changes nothing
    np.random.seed(123)
    torch.manual_seed(123)
    assert all(np.array_equal(s[k], data.split_indices(60000, 5000, 0, None)[k]) for k in s)
    # another split seed gives another split
    assert not np.array_equal(s["val"], data.split_indices(60000, 5000, 1, None)["val"])
    # subsets come from the pool, leave val unchanged and are nested
    small, big = data.split_indices(60000, 5000, 0, 1000), data.split_indices(60000, 5000, 0, FASHION_SUBSET)
    assert len(small["train"]) == 1000 and len(big["train"]) == FASHION_SUBSET
    assert np.array_equal(small["val"], s["val"]) and np.array_equal(big["val"], s["val"])
    assert np.isin(big["train"], s["train"]).all() and np.isin(small["train"], big["train"]).all()
    with pytest.raises(data.DataError, match="pool has 55000"):
        data.split_indices(60000, 5000, 0, 55001)
    with pytest.raises(data.DataError):
        data.split_indices(100, 100, 0, None)


def test_split_arrays_and_info(fashion: dict) -> None:
    a = data.split_arrays("fashion-mnist", "/nonexistent-autolr-root", subset=FASHION_SUBSET, download=False)
    assert {k: len(v[0]) for k, v in a.items()} == {"train": FASHION_SUBSET, "val": 5000, "test": 10000}
    idx = data.split_indices(60000, 5000, 0, FASHION_SUBSET)
    assert np.array_equal(a["val"][0], fashion["train"][0][idx["val"]])
    assert np.array_equal(a["train"][1], fashion["train"][1][idx["train"]])
    info = data.dataset_info("fashion-mnist", subset=FASHION_SUBSET)
    assert (info["train_size"], info["val_size"], info["test_size"]) == (FASHION_SUBSET, 5000, 10000)
    assert (info["num_classes"], info["in_chans"], info["image_size"]) == (10, 1, 28)
    assert data.dataset_info("cifar100")["train_size"] == 45000
    assert data.dataset_info("imagenet")["train_size"] == 1281167 - 10000


def test_corrupt_idx_is_a_data_error(tmp_path: Path, fashion: dict) -> None:
    src = data._idx_dir(DATASET_SPECS["fashion-mnist"], Path("/nonexistent-autolr-root"))
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in src.iterdir():
        if f.name.endswith("ubyte") or f.name.endswith("ubyte.gz"):
            shutil.copy(f, raw / f.name)
    labels = next(raw.glob("t10k-labels*"))
    # a gzipped file cut short
    blob = labels.read_bytes()
    labels.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(data.DataError, match=labels.name):
        data.load_arrays("fashion-mnist", tmp_path, download=False)
    # a plain IDX whose header promises more than the file holds
    labels.unlink()
    plain = raw / "t10k-labels-idx1-ubyte"
    plain.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0x27, 0x10]) + bytes(100))
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.*truncated"):
        data.load_arrays("fashion-mnist", tmp_path, download=False)
    # wrong magic number
    plain.write_bytes(b"\x00\x00\x0d\x01" + bytes(20))
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.load_arrays("fashion-mnist", tmp_path, download=False)


def test_missing_data_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DATASET_SPECS, "fashion-mnist", dataclasses.replace(DATASET_SPECS["fashion-mnist"],
                                                                            system_dir=""))
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.load_arrays("fashion-mnist", tmp_path, download=False)
    with pytest.raises(data.DataError, match=r"cifar-10-batches-py.*CIFAR10\('.*', download=True\)"):
        data.load_arrays("cifar10", tmp_path)
    with pytest.raises(data.DataError, match="CIFAR100"):
        data.build_loaders("cifar100", tmp_path, loader="tensor", batch_size=8, subset=None, seed=0, device="cpu")
    with pytest.raises(data.DataError, match="ImageFolder"):
        data._imagefolder_files("imagenet", tmp_path)
    with pytest.raises(data.DataError, match="loader ffcv"):
        data.build_loaders("imagenet", tmp_path, loader="tensor", batch_size=8, subset=None, seed=0, device="cpu")
    if importlib.util.find_spec("ffcv"):
        with pytest.raises(data.DataError, match="cifar-10-batches-py"):
            data.prepare_ffcv("cifar10", tmp_path)
        assert not list((tmp_path / "ffcv").rglob("*.beton"))


def test_cifar_pickles_read_like_torchvision(tmp_path: Path) -> None:
    for dataset in ("cifar10", "cifar100"):
        fake = write_fake_cifar(tmp_path, dataset)
        got = data.load_arrays(dataset, tmp_path)
        for split in ("train", "test"):
            assert np.array_equal(got[split][0], fake[split][0]) and np.array_equal(got[split][1], fake[split][1])
            assert got[split][0].shape[1:] == (32, 32, 3)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load_arrays("cifar10", tmp_path)


# ---------------------------------------------------------------------------------------------
# Orders and the tensor loader
# ---------------------------------------------------------------------------------------------
def test_train_order_global_batches_and_ranks() -> None:
    n, b = 1000, 16
    one = data.train_order(n, b, seed=3, epoch=2)
    assert len(one) == (n // b) * b and len(set(one.tolist())) == len(one)
    assert np.array_equal(one, data.train_order(n, b, seed=3, epoch=2))
    assert not np.array_equal(one, data.train_order(n, b, seed=3, epoch=3))
    # two ranks with accumulation: every global step is the same set of examples as on one rank
    g = 64
    ranks = [data.train_order(n, b, 3, 2, rank=r, world_size=2, global_batch_size=g) for r in range(2)]
    single = data.train_order(n, b, 3, 2, global_batch_size=g)
    assert len(single) == (n // g) * g and all(len(r) == len(single) // 2 for r in ranks)
    for step in range(n // g):
        per_rank = [set(r[step * g // 2:(step + 1) * g // 2].tolist()) for r in ranks]
        assert not per_rank[0] & per_rank[1]
        assert per_rank[0] | per_rank[1] == set(single[step * g:(step + 1) * g].tolist())
    with pytest.raises(data.DataError, match="fewer than one global batch"):
        data.train_order(10, 16, 0, 0)
    shares = [data.eval_indices(70, r, 3) for r in range(3)]
    assert sorted(np.concatenate(shares).tolist()) == list(range(70))


def test_tensor_loader_exact_and_complete(fashion: dict) -> None:
    a = data.split_arrays("fashion-mnist", "/nonexistent-autolr-root", subset=FASHION_SUBSET, download=False)
    tl = data.TensorLoader(*a["train"], dataset="fashion-mnist", batch_size=BS, device="cpu", seed=5, train=True)
    assert len(tl) == FASHION_SUBSET // BS and tl.num_examples == len(tl) * BS
    tl.set_epoch(4)
    first = collect(tl)
    again = data.TensorLoader(*a["train"], dataset="fashion-mnist", batch_size=BS, device="cpu", seed=5, train=True)
    again.set_epoch(4)
    second = collect(again)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert tl.epoch == 5  # iterating moved on to the next epoch
    third = collect(tl)
    assert not torch.equal(first[0], third[0])
    assert first[0].shape == (len(tl) * BS, 1, 28, 28) and first[0].dtype == torch.float32
    # evaluation: every example once, in order, unaugmented, also when the batch does not divide
    ev = data.TensorLoader(*a["val"], dataset="fashion-mnist", batch_size=300, device="cpu", seed=5, train=False)
    x, y = collect(ev)
    assert len(ev) == 17 and ev.num_examples == 5000
    assert torch.equal(y, torch.as_tensor(a["val"][1]))
    torch.testing.assert_close(x, normalised(a["val"][0], "fashion-mnist"), rtol=0, atol=1e-5)
    shares = [collect(data.TensorLoader(*a["val"], dataset="fashion-mnist", batch_size=300, device="cpu", seed=5,
                                        train=False, rank=r, world_size=2))[1] for r in range(2)]
    assert Counter(torch.cat(shares).tolist()) == Counter(a["val"][1].tolist())
    assert sum(len(s) for s in shares) == 5000


def test_build_loaders_tensor_with_ranks_and_accumulation(fashion: dict) -> None:
    kw = {"loader": "tensor", "batch_size": 256, "subset": FASHION_SUBSET, "seed": 0, "device": "cpu",
          "world_size": 2, "global_batch_size": 1024}
    ranks = [data.build_loaders("fashion-mnist", "/nonexistent-autolr-root", rank=r, **kw) for r in range(2)]
    info = data.dataset_info("fashion-mnist", subset=FASHION_SUBSET)
    for loaders in ranks:
        assert set(loaders) == {"train", "val", "test"}
        # one full global step of 1024 = 2 ranks x 2 micro-batches of 256; the rest is dropped
        assert len(loaders["train"]) == 2 and loaders["train"].num_examples == 512
        assert loaders["val"].num_examples == info["val_size"] // 2
        assert loaders["test"].num_examples == info["test_size"] // 2
    y = [collect(loaders["train"])[1] for loaders in ranks]
    assert len(torch.cat(y)) == 1024


def recover_params(out: torch.Tensor, src: np.ndarray, dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Which (dy, dx, flip) candidates turn each source image into its output image, exactly.

    Compared in pixel space: the zero-padded source shifted by (dy, dx), flipped or not, against
    the output with the normalisation undone (exact for uint8 pixels).
    """
    r = get_recipe(dataset)
    p = r.crop_padding
    mean, std = torch.tensor(r.mean).view(1, -1, 1, 1), torch.tensor(r.std).view(1, -1, 1, 1)
    pixels = ((out * std + mean) * 255).round().to(torch.uint8)
    h, w = pixels.shape[-2:]
    padded = torch.nn.functional.pad(torch.as_tensor(src).permute(0, 3, 1, 2), (p, p, p, p))
    cands = [(dy, dx, f) for dy in range(2 * p + 1) for dx in range(2 * p + 1) for f in (False, True)]
    match = torch.zeros(len(out), len(cands), dtype=torch.bool)
    for k, (dy, dx, f) in enumerate(cands):
        crop = padded[:, :, dy:dy + h, dx:dx + w]
        match[:, k] = ((crop.flip(-1) if f else crop) == pixels).flatten(1).all(1)
    return match, torch.tensor(cands)


def test_tensor_loader_augmentation_is_its_parameters(fashion: dict) -> None:
    a = data.split_arrays("fashion-mnist", "/nonexistent-autolr-root", subset=FASHION_SUBSET, download=False)
    tl = data.TensorLoader(*a["train"], dataset="fashion-mnist", batch_size=BS, device="cpu", seed=9, train=True)
    tl.set_epoch(1)
    x, y = collect(tl)
    order = data.train_order(FASHION_SUBSET, BS, 9, 1)
    assert torch.equal(y, torch.as_tensor(a["train"][1][order]))
    match, cands = recover_params(x, a["train"][0][order], "fashion-mnist")
    offsets, flips = data.augment_params(FASHION_SUBSET, 9, 1, 2, True)
    expected = torch.cat([offsets, flips[:, None].long()], 1)[order]
    k = (cands[None, :, :] == expected[:, None, :]).all(2).float().argmax(1)
    assert match[torch.arange(len(k)), k].all()


# ---------------------------------------------------------------------------------------------
# FFCV: conversion, manifests, loaders
# ---------------------------------------------------------------------------------------------
def test_cifar_betons_and_loaders(tmp_path: Path) -> None:
    pytest.importorskip("ffcv")
    fake10 = write_fake_cifar(tmp_path, "cifar10")
    val = 50
    idx = data.split_indices(300, val, 0, None)
    loaders = data.build_loaders("cifar10", tmp_path, loader="ffcv", batch_size=32, subset=None, seed=1,
                                 device="cpu", val_size=val, num_workers=2)
    assert set(loaders) == {"train", "val", "test"}
    x, y = collect(loaders["train"])
    assert len(loaders["train"]) == 250 // 32 and x.shape == (7 * 32, 3, 32, 32) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and len(set(y.tolist()) - set(fake10["train"][1].tolist())) == 0
    for split, (images, labels) in (("val", (fake10["train"][0][idx["val"]], fake10["train"][1][idx["val"]])),
                                    ("test", fake10["test"])):
        x, y = collect(loaders[split])
        assert loaders[split].num_examples == len(labels) and torch.equal(y, torch.as_tensor(labels))
        torch.testing.assert_close(x, normalised(images, "cifar10"), rtol=0, atol=1e-5)
    # two simulated ranks: disjoint strided shares, every test example exactly once
    betons = data.prepare_ffcv("cifar10", tmp_path, val_size=val)
    seen = []
    for rank in range(2):
        ld = data.ffcv_loader(betons["test"], dataset="cifar10", split="test", batch_size=32, device="cpu", seed=1,
                              train=False, distributed=True, rank=rank, world_size=2)
        _, y = collect(ld)
        assert ld.num_examples == 35 and len(ld) == 2
        assert torch.equal(y, torch.as_tensor(fake10["test"][1][rank::2]))
        seen.append(y)
    assert Counter(torch.cat(seen).tolist()) == Counter(fake10["test"][1].tolist())

    fake100 = write_fake_cifar(tmp_path, "cifar100", seed=1)
    b100 = data.prepare_ffcv("cifar100", tmp_path, val_size=val)
    ld = data.ffcv_loader(b100["test"], dataset="cifar100", split="test", batch_size=64, device="cpu", seed=0,
                          train=False)
    x, y = collect(ld)
    assert torch.equal(y, torch.as_tensor(fake100["test"][1])) and len(ld) == 2
    torch.testing.assert_close(x, normalised(fake100["test"][0], "cifar100"), rtol=0, atol=1e-5)


def test_manifest_reuse_and_rebuild(tmp_path: Path) -> None:
    pytest.importorskip("ffcv")
    from autolr import ffcv_data
    write_fake_cifar(tmp_path, "cifar10")
    kw = {"val_size": 50, "num_workers": 1}
    paths = data.prepare_ffcv("cifar10", tmp_path, **kw)
    assert {p.parent for p in paths.values()} == {tmp_path / "ffcv" / "cifar10"}
    manifest = json.loads(paths["train"].with_suffix(".json").read_text())
    for key in ("source", "split_seed", "val_size", "subset", "fields", "count", "ffcv", "format_version", "digest"):
        assert key in manifest
    assert manifest["count"] == 250 and manifest["split_seed"] == 0

    def mtimes() -> dict[str, int]:
        return {s: p.stat().st_mtime_ns for s, p in paths.items()}

    before = mtimes()
    ffcv_data._file_sha256.cache_clear()  # as in a fresh process
    assert data.prepare_ffcv("cifar10", tmp_path, **kw) == paths and mtimes() == before

    # truncated (a partial copy), corrupted in place (same size), manifest lost: each rebuilt alone
    with open(paths["train"], "r+b") as f:
        f.truncate(paths["train"].stat().st_size // 2)
    blob = bytearray(paths["val"].read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    paths["val"].write_bytes(bytes(blob))
    paths["test"].with_suffix(".json").unlink()
    corrupted = mtimes()
    data.prepare_ffcv("cifar10", tmp_path, **kw)
    after = mtimes()
    assert all(after[s] != corrupted[s] for s in paths)
    assert json.loads(paths["train"].with_suffix(".json").read_text())["digest"] == manifest["digest"]

    # a changed source makes every split stale
    new = write_fake_cifar(tmp_path, "cifar10", seed=7)
    data.prepare_ffcv("cifar10", tmp_path, **kw)
    assert all(paths[s].stat().st_mtime_ns != after[s] for s in paths)
    _, y = collect(data.ffcv_loader(paths["test"], dataset="cifar10", split="test", batch_size=64, device="cpu",
                                    seed=0, train=False))
    assert torch.equal(y, torch.as_tensor(new["test"][1]))
    # betons copied without their source stay usable; a missing or broken one then cannot be rebuilt
    moved = tmp_path / "cifar-moved"
    (tmp_path / "cifar-10-batches-py").rename(moved)
    current = mtimes()
    assert data.prepare_ffcv("cifar10", tmp_path, **kw) == paths and mtimes() == current
    paths["val"].with_suffix(".json").unlink()
    with pytest.raises(data.DataError, match="cifar-10-batches-py.*val-val50.beton cannot be reused"):
        data.prepare_ffcv("cifar10", tmp_path, **kw)
    moved.rename(tmp_path / "cifar-10-batches-py")
    # a subset has its own train file; val and test are shared
    sub = data.prepare_ffcv("cifar10", tmp_path, subset=100, **kw)
    assert sub["train"] != paths["train"] and "subset100" in sub["train"].name and sub["test"] == paths["test"]
    assert not list(paths["train"].parent.glob(".*tmp*"))


def test_fashion_ffcv_matches_tensor_loader(fashion_betons: tuple[Path, dict[str, Path]]) -> None:
    root, betons = fashion_betons
    a = data.split_arrays("fashion-mnist", root, subset=FASHION_SUBSET)
    kw = {"dataset": "fashion-mnist", "device": "cpu", "seed": 3, "num_workers": 2}
    ffcv_train = data.ffcv_loader(betons["train"], split="train", batch_size=BS, train=True, **kw)
    tensor_train = data.TensorLoader(*a["train"], batch_size=BS, train=True, **{k: kw[k] for k in kw
                                                                                 if k != "num_workers"})
    assert len(ffcv_train) == len(tensor_train) == FASHION_SUBSET // BS
    assert ffcv_train.num_examples == tensor_train.num_examples
    # the default ("exact") augmentation: bit-identical batches, epoch after epoch
    for epoch in (0, 1):
        ffcv_train.set_epoch(epoch)
        tensor_train.set_epoch(epoch)
        fx, fy = collect(ffcv_train)
        tx, ty = collect(tensor_train)
        assert torch.equal(fx, tx) and torch.equal(fy, ty)
    # evaluation: identical, complete, unaugmented
    ffcv_val = data.ffcv_loader(betons["val"], split="val", batch_size=BS, train=False, **kw)
    vx, vy = collect(ffcv_val)
    tx, ty = collect(data.TensorLoader(*a["val"], batch_size=BS, train=False, device="cpu", seed=3,
                                       dataset="fashion-mnist"))
    assert len(vy) == 5000 and torch.equal(vx, tx) and torch.equal(vy, ty)
    torch.testing.assert_close(vx, normalised(a["val"][0], "fashion-mnist"), rtol=0, atol=1e-5)


def test_fashion_ffcv_native_augmentation_statistics(fashion_betons: tuple[Path, dict[str, Path]]) -> None:
    """FFCV's own RandomTranslate + RandomHorizontalFlip on 1-channel arrays: same distribution."""
    root, betons = fashion_betons
    a = data.split_arrays("fashion-mnist", root, subset=FASHION_SUBSET)
    native = data.ffcv_loader(betons["train"], dataset="fashion-mnist", split="train", batch_size=BS, device="cpu",
                              seed=3, train=True, augment="ffcv", num_workers=2)
    tensor = data.TensorLoader(*a["train"], dataset="fashion-mnist", batch_size=BS, device="cpu", seed=3, train=True)
    order = data.train_order(FASHION_SUBSET, BS, 3, 0)
    stats = {}
    for name, loader in (("ffcv", native), ("tensor", tensor)):
        loader.set_epoch(0)
        x, y = collect(loader)
        assert torch.equal(y, torch.as_tensor(a["train"][1][order]))  # same order in both
        match, cands = recover_params(x, a["train"][0][order], "fashion-mnist")
        assert match.any(1).all(), f"{name}: some images are not a padded crop/flip of their source"
        unique = match.sum(1) == 1
        assert unique.float().mean() > 0.9
        params = cands[match[unique].float().argmax(1)]
        stats[name] = {"mean": x.mean().item(), "std": x.std().item(), "flip": params[:, 2].float().mean().item(),
                       "dy": torch.bincount(params[:, 0], minlength=5).float() / len(params),
                       "dx": torch.bincount(params[:, 1], minlength=5).float() / len(params)}
    f, t = stats["ffcv"], stats["tensor"]
    assert abs(f["mean"] - t["mean"]) < 0.02 and abs(f["std"] - t["std"]) < 0.02
    assert abs(f["flip"] - 0.5) < 0.06 and abs(t["flip"] - 0.5) < 0.06
    for axis in ("dy", "dx"):
        assert (f[axis] - 0.2).abs().max() < 0.05 and (t[axis] - 0.2).abs().max() < 0.05
    # eval through the native pipeline is the same as everywhere else
    vx, _ = collect(data.ffcv_loader(betons["test"], dataset="fashion-mnist", split="test", batch_size=1000,
                                     device="cpu", seed=0, train=False, augment="ffcv"))
    torch.testing.assert_close(vx, normalised(a["test"][0], "fashion-mnist"), rtol=0, atol=1e-5)


_REPRO_SCRIPT = """
import hashlib, sys, torch
from autolr import data
ld = data.ffcv_loader(sys.argv[1], dataset="fashion-mnist", split="train", batch_size=256, device="cpu", seed=11,
                      train=True, num_workers=int(sys.argv[2]))
ld.set_epoch(2)
h = hashlib.sha256()
for x, y in ld:
    h.update(x.numpy().tobytes()); h.update(y.numpy().tobytes())
print(h.hexdigest())
"""


def test_fashion_ffcv_exact_across_processes(fashion_betons: tuple[Path, dict[str, Path]]) -> None:
    """A resumed run (a fresh process, other worker count) sees exactly the same epoch."""
    _, betons = fashion_betons
    ld = data.ffcv_loader(betons["train"], dataset="fashion-mnist", split="train", batch_size=BS, device="cpu",
                          seed=11, train=True, num_workers=2)
    ld.set_epoch(2)
    h = hashlib.sha256()
    for x, y in ld:
        h.update(x.numpy().tobytes())
        h.update(y.numpy().tobytes())
    out = subprocess.run([sys.executable, "-c", _REPRO_SCRIPT, str(betons["train"]), "1"], capture_output=True,
                         text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == h.hexdigest()


# FFCV 1.0.2 with numba 0.68 prints "Exception ignored in finalizer ... KeyError" when a loader with a
# JPEG decoder is garbage-collected (plain FFCV does too); it is harmless
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_imagenet_tree_to_beton_and_loaders(tmp_path: Path) -> None:
    pytest.importorskip("ffcv")
    from PIL import Image

    rng = np.random.default_rng(0)
    for official, n in (("train", 6), ("val", 2)):
        for c in ("n01440764", "n01443537"):
            d = tmp_path / "imagenet" / official / c
            d.mkdir(parents=True)
            for i in range(n):
                h, w = rng.integers(40, 100, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{c}_{i}.JPEG")
    betons = data.prepare_ffcv("imagenet", tmp_path, val_size=2, max_resolution=64, num_workers=2)
    counts = {s: json.loads(p.with_suffix(".json").read_text())["count"] for s, p in betons.items()}
    assert counts == {"train": 10, "val": 2, "test": 4}
    kw = {"dataset": "imagenet", "device": "cpu", "seed": 2, "image_size": 32, "num_workers": 2}
    train = data.ffcv_loader(betons["train"], split="train", batch_size=4, train=True, **kw)
    assert len(train) == 2 and train.num_examples == 8
    x0, y0 = collect(train)
    assert x0.shape == (8, 3, 32, 32) and x0.dtype == torch.float32 and y0.dtype == torch.int64
    assert torch.isfinite(x0).all() and set(y0.tolist()) <= {0, 1}
    # the exact random-resized crop, flip and colour noise depend on (seed, epoch, example) only
    other = data.ffcv_loader(betons["train"], split="train", batch_size=4, train=True, **kw)
    x1, _ = collect(other)
    assert torch.equal(x0, x1)
    x2, _ = collect(other)  # next epoch
    assert not torch.equal(x0, x2)
    del train, other
    test = data.ffcv_loader(betons["test"], split="test", batch_size=3, train=False, **kw)
    x, y = collect(test)
    assert len(test) == 2 and x.shape == (4, 3, 32, 32) and sorted(y.tolist()) == [0, 0, 1, 1]
    # the native FFCV decoder still works (not reproducible)
    native = data.ffcv_loader(betons["train"], split="train", batch_size=4, train=True, augment="ffcv", **kw)
    assert collect(native)[0].shape == (8, 3, 32, 32)
    del native, test
    gc.collect()  # the finalizer noise above, inside this test's warning filter


def test_imagenet_postprocess_is_mild_and_seeded() -> None:
    r = get_recipe("imagenet")
    g = torch.Generator().manual_seed(0)
    img = torch.rand(16, 3, 8, 8, generator=g)
    x = (img - torch.tensor(r.mean).view(1, 3, 1, 1)) / torch.tensor(r.std).view(1, 3, 1, 1)
    a = data.imagenet_train_postprocess(x, generator=torch.Generator().manual_seed(1))
    b = data.imagenet_train_postprocess(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    torch.testing.assert_close(data.imagenet_train_postprocess(x, jitter=0, lighting=0), x, rtol=0, atol=1e-5)


def test_gzip_and_plain_idx_agree(tmp_path: Path, fashion: dict) -> None:
    src = data._idx_dir(DATASET_SPECS["fashion-mnist"], Path("/nonexistent-autolr-root"))
    gz = next(src.glob("t10k-labels-idx1-ubyte*"))
    plain = tmp_path / "labels"
    plain.write_bytes(gzip.decompress(gz.read_bytes()) if gz.suffix == ".gz" else gz.read_bytes())
    assert np.array_equal(data.read_idx(plain), data.read_idx(gz))


# ---------------------------------------------------------------------------------------------
# Without FFCV, and bad input
# ---------------------------------------------------------------------------------------------
_NO_FFCV_SCRIPT = """
import sys
sys.modules["ffcv"] = None  # `import ffcv` now fails, as on a machine without it
from autolr import data
loaders = data.build_loaders("cifar10", sys.argv[1], loader="tensor", batch_size=32, subset=None, seed=0,
                             device="cpu", val_size=50)
x, y = next(iter(loaders["train"]))
print("batch", tuple(x.shape), tuple(y.shape))
for call in (lambda: data.prepare_ffcv("cifar10", sys.argv[1], val_size=50),
             lambda: data.build_loaders("cifar10", sys.argv[1], loader="ffcv", batch_size=32, subset=None, seed=0,
                                        device="cpu", val_size=50)):
    try:
        call()
    except data.DataError as err:
        print("DataError:", err)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("ffcv", "numba") or m == "autolr.ffcv_data"))
"""


def test_tensor_loader_without_ffcv(tmp_path: Path) -> None:
    write_fake_cifar(tmp_path, "cifar10")
    out = subprocess.run([sys.executable, "-c", _NO_FFCV_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "batch (32, 3, 32, 32) (32,)"
    assert len(lines) == 4 and all("FFCV is not importable here" in line and "--loader tensor" in line
                                   for line in lines[1:3])
    assert lines[3] == "loaded: ['ffcv']"  # only the blocked name: neither numba nor autolr.ffcv_data
    assert not (tmp_path / "ffcv").exists()


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_bad_idx_leaves_nothing_behind(tmp_path: Path) -> None:
    pytest.importorskip("ffcv")
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 200), ("t10k", 50)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    labels = raw / "train-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-10])  # cut short
    with pytest.raises(data.DataError, match="train-labels-idx1-ubyte is corrupt or truncated"):
        data.prepare_ffcv("fashion-mnist", tmp_path, val_size=50, download=False)
    # no empty folder, no lock file: the source is read and checked before anything is created
    assert not (tmp_path / "ffcv").exists()


def test_val_size_larger_than_the_training_set(tmp_path: Path) -> None:
    for subset in (None, 1000):
        with pytest.raises(data.DataError) as err:
            data.dataset_info("fashion-mnist", subset=subset, val_size=70000)
        msg = str(err.value)
        assert "--val-size 70000" in msg and "has 60000 examples" in msg and "from 1 to 59999" in msg
        assert "-10000" not in msg and "\n" not in msg
    with pytest.raises(data.DataError, match="--val-size 300: the training set has 300 examples"):
        data.split_indices(300, 300, 0, None)
    # train.py: one line, exit 2, nothing written
    out = subprocess.run([sys.executable, "train.py", "--data", "fashion-mnist", "--subset", "1000", "--val-size",
                          "70000", "--loader", "tensor", "--sched", "cosine", "--lr", "0.1", "--epochs", "1",
                          "--out", str(tmp_path / "runs"), "--data-root", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "--val-size 70000" in out.stderr and "-10000" not in out.stderr
    assert not (tmp_path / "runs").exists()

"""The datasets: one entry per dataset with everything the data code needs to know about it.

An entry states the dataset's facts (official split sizes, classes, channels, image size, the
normalisation constants), where its files lie and in which format, how its images are stored
in a .beton file and how training augments them. The loaders, the FFCV conversion and the
models read these entries instead of testing the dataset's name; the training protocol (split
sizes, models, optimizers, budgets) is in autolr/recipes.py, which refers to an entry by name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

__all__ = ["DataError", "Augmentation", "DatasetSpec", "DATASET_SPECS", "get_spec"]


class DataError(Exception):
    """Missing, corrupt or unusable data: train.py reports it in one line with exit code 2."""


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation (evaluation never augments; ImageNet evaluates on a centre crop)."""

    crop_padding: int = 0  # random crop with this zero padding (0: none)
    flip: bool = True  # random horizontal flip
    resized_crop: bool = False  # random-resized crop while decoding (ImageNet), then colour noise
    color_jitter: float = 0.0  # brightness, contrast and saturation factors in U[1 - j, 1 + j]
    pca_lighting: float = 0.0  # std of AlexNet's PCA lighting noise
    eval_resize: int = 0  # evaluation: the centre image_size crop of an image resized to this side


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str  # as people write it, for messages
    num_classes: int
    in_chans: int
    image_size: int
    train_size: int  # the official training set
    test_size: int  # the official test set (ImageNet: its validation folder)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: on-disk format: gzipped or plain IDX files, torchvision's CIFAR pickles, an ImageFolder tree
    layout: Literal["idx", "cifar", "imagefolder"]
    folder: str  # under the data root
    #: per official split, its files (idx: images then labels; cifar: the pickles; imagefolder: the split's folder)
    files: dict[str, tuple[str, ...]]
    augment: Augmentation
    #: how the images are stored in a .beton: a uint8 array, raw RGB pixels, or JPEG
    beton_image: Literal["ndarray", "raw", "jpg"]
    in_memory: bool  # small enough for the tensor loader, which holds a whole split on the device
    pad: int = 0  # zero border added to each image as it is read: the files hold (image_size - 2 pad)^2
    label_key: str = ""  # cifar: the labels' key in the pickles
    torchvision: str = ""  # torchvision.datasets class that can download it ("": none)
    download_by_default: bool = False  # try that download unless told not to (small and offline-friendly)
    system_dir: str = ""  # where a system package installs the files, also searched
    apt_package: str = ""  # the Debian package that installs them there


_FASHION_MNIST = DatasetSpec(
    name="fashion-mnist", title="Fashion-MNIST", num_classes=10, in_chans=1, image_size=28,
    train_size=60000, test_size=10000, mean=(0.2860,), std=(0.3530,),
    layout="idx", folder="FashionMNIST/raw",
    files={"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
    augment=Augmentation(crop_padding=2), beton_image="ndarray", in_memory=True,
    torchvision="FashionMNIST", download_by_default=True,
    system_dir="/usr/share/datasets/fashion-mnist", apt_package="dataset-fashion-mnist",
)

DATASET_SPECS: dict[str, DatasetSpec] = {
    "fashion-mnist": _FASHION_MNIST,
    # the same files at the 32x32 the CIFAR models expect (issue 13: the paper's model families on
    # offline data): a 2-pixel black border, which is Fashion-MNIST's background; the statistics
    # are the padded training set's, and training crops CIFAR's way
    "fashion-mnist-32": replace(
        _FASHION_MNIST, name="fashion-mnist-32", title="Fashion-MNIST at 32x32", image_size=32, pad=2,
        mean=(0.2190,), std=(0.3318,), augment=Augmentation(crop_padding=4),
    ),
    "cifar10": DatasetSpec(
        name="cifar10", title="CIFAR-10", num_classes=10, in_chans=3, image_size=32,
        train_size=50000, test_size=10000, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
        layout="cifar", folder="cifar-10-batches-py",
        files={"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        augment=Augmentation(crop_padding=4), beton_image="raw", in_memory=True,
        label_key="labels", torchvision="CIFAR10",
    ),
    "cifar100": DatasetSpec(
        name="cifar100", title="CIFAR-100", num_classes=100, in_chans=3, image_size=32,
        train_size=50000, test_size=10000, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
        layout="cifar", folder="cifar-100-python", files={"train": ("train",), "test": ("test",)},
        augment=Augmentation(crop_padding=4), beton_image="raw", in_memory=True,
        label_key="fine_labels", torchvision="CIFAR100",
    ),
    "imagenet": DatasetSpec(
        name="imagenet", title="ImageNet", num_classes=1000, in_chans=3, image_size=224,
        train_size=1281167, test_size=50000, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        layout="imagefolder", folder="imagenet", files={"train": ("train",), "test": ("val",)},
        augment=Augmentation(resized_crop=True, color_jitter=0.4, pca_lighting=0.1, eval_resize=256),
        beton_image="jpg", in_memory=False,
    ),
}


def get_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASET_SPECS[dataset]
    except KeyError:
        raise DataError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASET_SPECS)}") from None

"""The training recipes of REPRODUCTION.md: one source of truth for train.py and the sweeps.

A recipe fixes everything about a dataset's runs that is not the object of a comparison:
the split sizes, the default model and optimizer, the epoch budget, the batch-size grid, the
per-device batch-norm batch and the augmentation. train.py takes its defaults from here and
every sweep file refers to a recipe by name.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    dataset: str
    num_classes: int
    in_chans: int
    image_size: int
    val_size: int  # carved from the official training set with the split seed
    model: str
    models: tuple[str, ...]  # every model the grid covers
    opt: str
    opts: tuple[str, ...]
    epochs: int
    batch_sizes: tuple[int, ...]
    seeds: int  # final-run seeds
    micro_bs: int = 256  # per-device batch-norm batch (the authors')
    weight_decay: float = 0.1
    label_smoothing: float = 0.0
    crop_padding: int = 0  # random crop with this zero padding (0: none)
    flip: bool = True
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    split_seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_CIFAR_MODELS = ("resnet18_cifar", "vit_tiny_patch4_32", "efficientnet_b0_cifar")

RECIPES: dict[str, Recipe] = {
    "fashion-mnist": Recipe(
        dataset="fashion-mnist", num_classes=10, in_chans=1, image_size=28, val_size=5000,
        model="cnn_fashion", models=("cnn_fashion",), opt="adamp", opts=("adamp",), epochs=30,
        batch_sizes=(256, 1024, 4096, 16384), seeds=2, crop_padding=2,
        mean=(0.2860,), std=(0.3530,),
    ),
    "cifar10": Recipe(
        dataset="cifar10", num_classes=10, in_chans=3, image_size=32, val_size=5000,
        model="resnet18_cifar", models=_CIFAR_MODELS, opt="adamp", opts=("adamp", "lamb"), epochs=200,
        batch_sizes=(256, 1024, 4096, 16384), seeds=3, crop_padding=4,
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": Recipe(
        dataset="cifar100", num_classes=100, in_chans=3, image_size=32, val_size=5000,
        model="resnet18_cifar", models=_CIFAR_MODELS, opt="adamp", opts=("adamp", "lamb"), epochs=200,
        batch_sizes=(256, 1024, 4096, 16384), seeds=3, crop_padding=4,
        mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    ),
    "imagenet": Recipe(
        dataset="imagenet", num_classes=1000, in_chans=3, image_size=224, val_size=10000,
        model="resnet50", models=("resnet50", "efficientnet_b0"), opt="adamp", opts=("adamp",), epochs=120,
        batch_sizes=(1024, 4096, 16384), seeds=1,
        mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
        extra={"color_jitter": 0.4, "pca_lighting": 0.1, "val_resize": 256},
    ),
}

#: models that train with label smoothing 0.1 and sync-BN under the recipe (EfficientNet only)
EFFICIENTNET_PREFIX = "efficientnet"


def get_recipe(dataset: str) -> Recipe:
    try:
        return RECIPES[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(RECIPES)}") from None

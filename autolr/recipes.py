"""The training recipes of REPRODUCTION.md: one source of truth for train.py and the sweeps.

A recipe fixes everything about a dataset's runs that is not the object of a comparison:
the split sizes, the default model and optimizer, the epoch budget, the batch-size grid, the
per-device batch-norm batch, and what some models train with (EfficientNet: label smoothing
and sync-BN). The dataset's own facts (classes, image size, normalisation, augmentation) are
its entry in autolr/datasets.py, which a recipe exposes too. train.py takes its defaults from
here and every sweep file refers to a recipe by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from autolr.datasets import DATASET_SPECS, DatasetSpec

__all__ = ["Recipe", "RECIPES", "get_recipe", "EFFICIENTNET_PREFIX"]

#: models that train with label smoothing 0.1 and sync-BN under every recipe (EfficientNet only)
EFFICIENTNET_PREFIX = "efficientnet"


@dataclass(frozen=True)
class Recipe:
    dataset: str  # its entry in autolr.datasets.DATASET_SPECS
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
    #: label smoothing of the models whose name starts with a key; every other model: none
    label_smoothing: tuple[tuple[str, float], ...] = ((EFFICIENTNET_PREFIX, 0.1),)
    #: models (name prefixes) whose batch norm is synchronised across devices
    sync_bn: tuple[str, ...] = (EFFICIENTNET_PREFIX,)
    split_seed: int = 0

    def label_smoothing_for(self, model: str) -> float:
        return next((value for prefix, value in self.label_smoothing if model.startswith(prefix)), 0.0)

    def sync_bn_for(self, model: str) -> bool:
        return model.startswith(self.sync_bn)

    # the dataset's facts, read from its entry so that they are stated once
    @property
    def spec(self) -> DatasetSpec:
        return DATASET_SPECS[self.dataset]

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def in_chans(self) -> int:
        return self.spec.in_chans

    @property
    def image_size(self) -> int:
        return self.spec.image_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.spec.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.spec.std

    @property
    def crop_padding(self) -> int:
        return self.spec.augment.crop_padding

    @property
    def flip(self) -> bool:
        return self.spec.augment.flip


_CIFAR_MODELS = ("resnet18_cifar", "vit_tiny_patch4_32", "efficientnet_b0_cifar")

RECIPES: dict[str, Recipe] = {
    "fashion-mnist": Recipe(
        dataset="fashion-mnist", val_size=5000, model="cnn_fashion", models=("cnn_fashion",), opt="adamp",
        opts=("adamp",), epochs=30, batch_sizes=(256, 1024, 4096, 16384), seeds=2,
    ),
    "fashion-mnist-32": Recipe(
        dataset="fashion-mnist-32", val_size=5000, model="resnet18_cifar", models=_CIFAR_MODELS, opt="adamp",
        opts=("adamp", "lamb"), epochs=30, batch_sizes=(256, 1024, 4096, 16384), seeds=2,
    ),
    "cifar10": Recipe(
        dataset="cifar10", val_size=5000, model="resnet18_cifar", models=_CIFAR_MODELS, opt="adamp",
        opts=("adamp", "lamb"), epochs=200, batch_sizes=(256, 1024, 4096, 16384), seeds=3,
    ),
    "cifar100": Recipe(
        dataset="cifar100", val_size=5000, model="resnet18_cifar", models=_CIFAR_MODELS, opt="adamp",
        opts=("adamp", "lamb"), epochs=200, batch_sizes=(256, 1024, 4096, 16384), seeds=3,
    ),
    "imagenet": Recipe(
        dataset="imagenet", val_size=10000, model="resnet50", models=("resnet50", "efficientnet_b0"), opt="adamp",
        opts=("adamp",), epochs=120, batch_sizes=(1024, 4096, 16384), seeds=1,
    ),
}


def get_recipe(dataset: str) -> Recipe:
    try:
        return RECIPES[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(RECIPES)}") from None

"""Models of the recipes, registered with timm so that every grid builds its model the same way.

Importing this module registers the small-image models below with ``timm.register_model``; after
that ``timm.create_model(name, num_classes=..., in_chans=...)`` builds them like any timm model
(``build_model`` does the import for you). ImageNet recipes use timm's own models unchanged.

| name | input | what it is |
|---|---|---|
| ``cnn_fashion`` | 1×28×28 | 3 × (conv3×3-BN-ReLU-pool) + linear head, ~24k params |
| ``resnet18_cifar`` | 3×32×32 | timm ResNet-18 with a 3×3 stride-1 stem and no max-pool |
| ``resnet{20,32,56}_cifar`` | 3×32×32 | He et al. (2016) CIFAR ResNets, option-A shortcuts |
| ``vit_{tiny,small}_patch4_32`` | 3×32×32 | timm VisionTransformer, 4×4 patches (8×8 tokens) |
| ``efficientnet_b0_cifar`` | 3×32×32 | timm EfficientNet-B0 with a stride-1 stem (2×2 final map) |
| ``mlp_tiny`` | any | tests only: 7×7 average pool + 2-layer MLP, no batch norm (~1.9k params) |

None of them has pretrained weights: asking for them is an error rather than a silent random init.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.efficientnet import EfficientNet
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from autolr.recipes import RECIPES

__all__ = ["CIFAR_MODELS", "TEST_MODELS", "CnnFashion", "CifarResNet", "MlpTiny", "build_model", "count_params"]

#: every model this module registers (timm also lists them, e.g. ``timm.list_models("*cifar*")``)
CIFAR_MODELS: tuple[str, ...] = (
    "cnn_fashion",
    "resnet18_cifar",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet56_cifar",
    "vit_tiny_patch4_32",
    "vit_small_patch4_32",
    "efficientnet_b0_cifar",
)
#: registered for tests only (not part of any recipe)
TEST_MODELS: tuple[str, ...] = ("mlp_tiny",)


def _cfg(dataset: str, **kwargs: Any) -> dict[str, Any]:
    # Metadata only (nothing downloads from it); the normalisation comes from the recipe so that
    # timm's data helpers, if anyone uses them, agree with the training pipeline.
    recipe = RECIPES[dataset]
    size = recipe.image_size
    return {
        "url": "",
        "num_classes": recipe.num_classes,
        "input_size": (recipe.in_chans, size, size),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": recipe.mean,
        "std": recipe.std,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
        **kwargs,
    }


# register_model picks these up by entrypoint name, so it must exist before the decorators run.
default_cfgs = generate_default_cfgs(
    {
        "cnn_fashion": _cfg("fashion-mnist", first_conv="features.0.conv", classifier="fc"),
        "resnet18_cifar": _cfg("cifar10"),
        "resnet20_cifar": _cfg("cifar10"),
        "resnet32_cifar": _cfg("cifar10"),
        "resnet56_cifar": _cfg("cifar10"),
        # timm uses fixed_input_size to pass img_size through to the ViT constructor
        "vit_tiny_patch4_32": _cfg(
            "cifar10", first_conv="patch_embed.proj", classifier="head", fixed_input_size=True
        ),
        "vit_small_patch4_32": _cfg(
            "cifar10", first_conv="patch_embed.proj", classifier="head", fixed_input_size=True
        ),
        "efficientnet_b0_cifar": _cfg("cifar10", first_conv="conv_stem", classifier="classifier"),
        "mlp_tiny": _cfg("fashion-mnist", first_conv="hidden", classifier="fc"),
    }
)


def _no_pretrained(name: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{name} has no pretrained weights; build it with pretrained=False")


def _build_own(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> Any:
    _no_pretrained(variant, pretrained)
    if kwargs.get("features_only"):
        # these models declare no feature_info; fail here rather than deep inside timm
        raise ValueError(f"{variant} does not support features_only")
    return build_model_with_cfg(cls, variant, pretrained, **kwargs)


class _ClassifierMixin:
    """The parts of timm's classifier interface that training code and timm helpers rely on."""

    num_classes: int
    num_features: int
    fc: nn.Module

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        del global_pool  # always average pooling
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        x = F.dropout(x, p=self.drop_rate, training=self.training)  # type: ignore[attr-defined]
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# cnn_fashion


class _ConvBNAct(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, pool: bool) -> None:
        super().__init__()
        # no conv bias: the batch norm that follows has its own shift
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class CnnFashion(_ClassifierMixin, nn.Module):
    """Three conv-BN-ReLU layers (28→14→7 with max-pooling after the first two), global average
    pooling and a linear head: 24,058 parameters at widths (16, 32, 64), 1 channel, 10 classes.

    The third layer is not max-pooled: at 7×7 the global pool that follows does that job, and
    keeping the widest layer on the smallest map is what keeps it fast on CPU.
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        widths: Sequence[int] = (16, 32, 64),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if drop_path_rate:
            raise ValueError("cnn_fashion has no residual branches, so drop_path_rate must be 0")
        if len(widths) != 3:
            raise ValueError(f"cnn_fashion has 3 conv layers, got widths {tuple(widths)}")
        chs = (in_chans, *widths)
        self.features = nn.Sequential(*(_ConvBNAct(chs[i], chs[i + 1], pool=i < 2) for i in range(3)))
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model
def cnn_fashion(pretrained: bool = False, **kwargs: Any) -> CnnFashion:
    """Small CNN for Fashion-MNIST (1×28×28), the fashion and demo grids' model."""
    return _build_own(CnnFashion, "cnn_fashion", pretrained, **kwargs)


# --------------------------------------------------------------------------------------------
# He et al. CIFAR ResNets (resnet20/32/56_cifar)


class _CifarBasicBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, drop_path: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.stride = stride
        self.pad_chs = out_chs - in_chs

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        # Option A of He et al.: subsample and zero-pad the new channels, so the shortcut has no
        # parameters and the 20/32/56-layer counts match the paper's 0.27M/0.46M/0.85M.
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_chs:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_chs))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(self.drop_path(out) + self.shortcut(x), inplace=True)


class CifarResNet(_ClassifierMixin, nn.Module):
    """The CIFAR ResNet of He et al. (2016), section 4.2: a 3×3 conv with 16 channels, then three
    stages of ``depth_per_stage`` basic blocks with 16/32/64 channels at 32/16/8 px, global average
    pooling and a linear head; depth = 6·n + 2."""

    def __init__(
        self,
        depth_per_stage: int,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        n_blocks = depth_per_stage * len(widths)
        stages: list[nn.Module] = []
        in_chs, idx = widths[0], 0
        for stage_idx, out_chs in enumerate(widths):
            blocks = []
            for block_idx in range(depth_per_stage):
                stride = 2 if stage_idx > 0 and block_idx == 0 else 1
                # stochastic depth grows linearly with depth, as in timm's own models
                dpr = drop_path_rate * idx / max(n_blocks - 1, 1)
                blocks.append(_CifarBasicBlock(in_chs, out_chs, stride, dpr))
                in_chs, idx = out_chs, idx + 1
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = widths[-1]
        self.drop_rate = drop_rate
        self.reset_classifier(num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(F.relu(self.bn1(self.conv1(x)), inplace=True))


def _cifar_resnet(variant: str, depth: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    return _build_own(CifarResNet, variant, pretrained, depth_per_stage=(depth - 2) // 6, **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 of He et al. for CIFAR (0.27M params)."""
    return _cifar_resnet("resnet20_cifar", 20, pretrained, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 of He et al. for CIFAR (0.46M params)."""
    return _cifar_resnet("resnet32_cifar", 32, pretrained, **kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 of He et al. for CIFAR (0.85M params)."""
    return _cifar_resnet("resnet56_cifar", 56, pretrained, **kwargs)


# --------------------------------------------------------------------------------------------
# timm models adapted to 32 px


def _rescale_feature_info(model: nn.Module, rescale: Any) -> None:
    # keep features_only / feature_info users honest about the new strides
    for info in getattr(model, "feature_info", None) or []:
        if isinstance(info, dict) and "reduction" in info:
            info["reduction"] = rescale(info["reduction"])


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """timm ResNet-18 (BasicBlock, [2, 2, 2, 2]) with the usual CIFAR stem: a 3×3 stride-1 conv and
    no max-pool, so the stages run at 32/16/8/4 px instead of 8/4/2/1."""
    _no_pretrained("resnet18_cifar", pretrained)
    model = build_model_with_cfg(
        ResNet, "resnet18_cifar", pretrained, block=BasicBlock, layers=(2, 2, 2, 2), **kwargs
    )
    old = model.conv1
    assert isinstance(old, nn.Conv2d), "expected timm's plain 7×7 stem"
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    # the same init timm's ResNet gives its convs
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    _rescale_feature_info(model, lambda r: max(1, r // 4))
    return model


def _vit_cifar(variant: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    _no_pretrained(variant, pretrained)
    kwargs.setdefault("img_size", 32)
    return build_model_with_cfg(
        VisionTransformer,
        variant,
        pretrained,
        patch_size=4,
        feature_cfg=dict(out_indices=3, feature_cls="getter"),  # as timm's own ViTs
        **kwargs,
    )


@register_model
def vit_tiny_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Tiny (embed 192, depth 12, 3 heads) on 32 px images with 4×4 patches: 64 tokens + cls."""
    return _vit_cifar("vit_tiny_patch4_32", pretrained, **dict(dict(embed_dim=192, depth=12, num_heads=3), **kwargs))


@register_model
def vit_small_patch4_32(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """ViT-Small (embed 384, depth 12, 6 heads) on 32 px images with 4×4 patches."""
    return _vit_cifar("vit_small_patch4_32", pretrained, **dict(dict(embed_dim=384, depth=12, num_heads=6), **kwargs))


@register_model
def efficientnet_b0_cifar(pretrained: bool = False, **kwargs: Any) -> EfficientNet:
    """timm EfficientNet-B0 with a stride-1 stem: at 32 px the last stage sees 2×2 instead of 1×1."""
    _no_pretrained("efficientnet_b0_cifar", pretrained)
    # timm's own B0 generator (private, but it is the one definition of B0's block table)
    from timm.models.efficientnet import _gen_efficientnet

    model = _gen_efficientnet(
        "efficientnet_b0_cifar", channel_multiplier=1.0, depth_multiplier=1.0, pretrained=pretrained, **kwargs
    )
    old = model.conv_stem
    # a plain Conv2d with static padding 1 ("same" for 3×3 at stride 1 and 2); a Conv2dSame would
    # pad for stride 2 and need another fix
    assert type(old) is nn.Conv2d and old.padding == (1, 1), f"unexpected stem {old}"
    new = nn.Conv2d(old.in_channels, old.out_channels, old.kernel_size, stride=1, padding=old.padding, bias=False)
    new.load_state_dict(old.state_dict())  # same shape: keep timm's init
    model.conv_stem = new
    _rescale_feature_info(model, lambda r: max(1, r // 2))
    return model


# --------------------------------------------------------------------------------------------
# mlp_tiny (tests)


class MlpTiny(nn.Module):
    """7×7 adaptive average pool, one hidden layer, a linear head: no batch norm, so a batch
    accumulated over micro-batches gives the same gradient as the whole batch at once."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, hidden: int = 32, **kwargs: Any) -> None:
        super().__init__()
        kwargs.pop("drop_rate", None)
        if kwargs.pop("drop_path_rate", None):
            raise ValueError("mlp_tiny has no residual branches, so drop_path_rate must be 0")
        if kwargs:
            raise ValueError(f"mlp_tiny takes no arguments {sorted(kwargs)}")
        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.hidden = nn.Linear(in_chans * 49, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.hidden(self.pool(x).flatten(1))))


@register_model
def mlp_tiny(pretrained: bool = False, **kwargs: Any) -> MlpTiny:
    """Tiny batch-norm-free MLP for tests (e.g. gradient accumulation against one big batch)."""
    return _build_own(MlpTiny, "mlp_tiny", pretrained, **kwargs)


# --------------------------------------------------------------------------------------------
# factory


def build_model(
    name: str, *, num_classes: int, in_chans: int, drop_path_rate: float | None = None
) -> nn.Module:
    """Build ``name`` (one of ``CIFAR_MODELS`` or any timm model) without pretrained weights.

    ``drop_path_rate=None`` leaves the model's default, and is not passed to models without one.
    """
    if not timm.is_model(name):
        # timm lists our models too; dict.fromkeys dedupes while keeping ours first
        candidates = list(dict.fromkeys([*CIFAR_MODELS, *timm.list_models()]))
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.7)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"unknown model {name!r}; {hint}choose from {', '.join(CIFAR_MODELS)} "
            "or any timm model, e.g. resnet50"
        )
    # timm drops None-valued kwargs, so drop_path_rate=None reaches no model
    return timm.create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_chans, drop_path_rate=drop_path_rate
    )


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())

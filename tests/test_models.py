"""Tests of the model registry (``autolr.models``) and the optimizer factory (``autolr.optim``).

Every registered model runs one forward and backward pass at its dataset's resolution; the
architecture claims of the module docstring (stems, strides, parameter counts) are checked on the
module structure; the optimizer tests check where weight decay lands, both in the parameter
groups and in what one step does to the parameters.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.optim import AdamP, Lamb
from torch import nn

from autolr.models import CIFAR_MODELS, build_model, count_params
from autolr.optim import OPTIMIZERS, build_optimizer
from autolr.recipes import RECIPES

pytestmark = pytest.mark.timeout(60)

FASHION = RECIPES["fashion-mnist"]
CIFAR = RECIPES["cifar10"]


def _shape_of(name: str) -> tuple[int, int]:
    """(in_chans, image size) of the dataset a model is meant for."""
    recipe = FASHION if name == "cnn_fashion" else CIFAR
    return recipe.in_chans, recipe.image_size


# ------------------------------------------------------------------------------------------
# models


def test_all_recipe_models_are_registered() -> None:
    recipe_models = {m for r in RECIPES.values() for m in r.models}
    for name in (*CIFAR_MODELS, *recipe_models):
        assert timm.is_model(name), name
    for name in CIFAR_MODELS:
        # the name resolves to our entrypoint (timm has no model of that name that we'd shadow)
        assert timm.models.model_entrypoint(name).__module__ == "autolr.models", name


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    in_chans, size = _shape_of(name)
    num_classes = 7  # not a default of any config, so it must come through create_model
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    model.train()
    x = torch.randn(3, in_chans, size, size)
    out = model(x)
    assert out.shape == (3, num_classes)
    assert torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    # timm's config plumbing: the cfg describes the input the model is built for
    assert model.pretrained_cfg["input_size"] == (in_chans, size, size)
    assert model.default_cfg is model.pretrained_cfg


def test_cnn_fashion_size() -> None:
    model = build_model("cnn_fashion", num_classes=10, in_chans=1)
    n = count_params(model)
    assert 22_000 <= n <= 28_000, n
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3


def test_count_params() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert count_params(model) == (3 * 4 + 4) + (4 + 4)  # BN running stats are buffers


def test_resnet18_cifar_stem() -> None:
    model = build_model("resnet18_cifar", num_classes=10, in_chans=3)
    assert isinstance(model, timm.models.resnet.ResNet)
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert conv1.in_channels == 3 and conv1.out_channels == 64
    assert isinstance(model.maxpool, nn.Identity)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [2, 2, 2, 2]
    assert isinstance(model.layer1[0], timm.models.resnet.BasicBlock)
    with torch.no_grad():
        feats = model.eval().forward_features(torch.zeros(1, 3, 32, 32))
    assert feats.shape == (1, 512, 4, 4)  # 32 px / 8, not / 32
    assert 11.1e6 < count_params(model) < 11.2e6


@pytest.mark.parametrize(("name", "paper_params"), [
    ("resnet20_cifar", 0.27e6), ("resnet32_cifar", 0.46e6), ("resnet56_cifar", 0.85e6),
])
def test_he_cifar_resnets(name: str, paper_params: float) -> None:
    depth = int(name[len("resnet"):].split("_")[0])
    model = build_model(name, num_classes=10, in_chans=3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # convs + the linear head; option-A shortcuts add no convs
    assert {c.out_channels for c in convs} == {16, 32, 64}
    assert count_params(model) == pytest.approx(paper_params, rel=0.01)
    with torch.no_grad():
        assert model.eval().forward_features(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize(("name", "dim", "heads"), [
    ("vit_tiny_patch4_32", 192, 3), ("vit_small_patch4_32", 384, 6),
])
def test_vit_cifar(name: str, dim: int, heads: int) -> None:
    model = build_model(name, num_classes=10, in_chans=3)
    assert isinstance(model, timm.models.vision_transformer.VisionTransformer)
    assert model.patch_embed.proj.kernel_size == (4, 4)
    assert model.patch_embed.grid_size == (8, 8)
    assert model.embed_dim == dim and len(model.blocks) == 12
    assert model.blocks[0].attn.num_heads == heads


def test_efficientnet_b0_cifar() -> None:
    model = build_model("efficientnet_b0_cifar", num_classes=10, in_chans=3)
    assert isinstance(model, timm.models.efficientnet.EfficientNet)
    assert model.conv_stem.stride == (1, 1)
    # same blocks as timm's B0: only the stem differs
    reference = timm.create_model("efficientnet_b0", num_classes=10)
    assert count_params(model) == count_params(reference)
    with torch.no_grad():
        assert model.eval().forward_features(torch.zeros(1, 3, 32, 32)).shape[-2:] == (2, 2)


def test_drop_path_rate_reaches_model() -> None:
    model = build_model("resnet20_cifar", num_classes=10, in_chans=3, drop_path_rate=0.2)
    rates = [m.drop_prob for m in model.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates and max(rates) == pytest.approx(0.2)
    model = build_model("resnet20_cifar", num_classes=10, in_chans=3)
    assert not any(isinstance(m, timm.layers.DropPath) for m in model.modules())
    with pytest.raises(ValueError, match="drop_path_rate"):
        build_model("cnn_fashion", num_classes=10, in_chans=1, drop_path_rate=0.1)


def test_timm_models_pass_through() -> None:
    model = build_model("resnet10t", num_classes=5, in_chans=1)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 5)


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet18cifar'") as info:
        build_model("resnet18cifar", num_classes=10, in_chans=3)
    message = str(info.value)
    assert "resnet18_cifar" in message and "resnet50" in message


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_no_pretrained_weights(name: str) -> None:
    # a silent random init would pass for a pretrained model
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model(name, pretrained=True)


# ------------------------------------------------------------------------------------------
# optimizers

LR, WD = 0.01, 0.1


def _model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn_fashion", num_classes=10, in_chans=1)


def _decay_of(opt: torch.optim.Optimizer) -> dict[int, float]:
    """weight decay of every parameter, by id; each parameter must be in exactly one group."""
    decay: dict[int, float] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            assert id(p) not in decay
            decay[id(p)] = group["weight_decay"]
    return decay


@pytest.mark.parametrize(("name", "cls"), [
    ("adamp", AdamP), ("lamb", Lamb), ("sgd", torch.optim.SGD), ("adamw", torch.optim.AdamW),
])
def test_optimizer_types(name: str, cls: type) -> None:
    model = _model()
    opt = build_optimizer(name, model, lr=LR, weight_decay=WD)
    assert type(opt) is cls
    assert all(g["lr"] == LR for g in opt.param_groups)
    assert len(_decay_of(opt)) == len(list(model.parameters()))
    assert set(OPTIMIZERS) == {"adamp", "lamb", "sgd", "adamw"}


def test_adamp_recipe() -> None:
    opt = build_optimizer("adamp", _model(), lr=LR, weight_decay=WD)
    for source in (opt.defaults, *opt.param_groups):
        assert source["delta"] == 0.1 and source["wd_ratio"] == 0.1
        assert source["nesterov"] is False


def test_sgd_recipe() -> None:
    opt = build_optimizer("sgd", _model(), lr=LR, weight_decay=WD)
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in opt.param_groups)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_groups(name: str) -> None:
    model = _model()
    decay = _decay_of(build_optimizer(name, model, lr=LR, weight_decay=WD))
    for pname, p in model.named_parameters():
        every = name in ("adamp", "lamb")  # REPRODUCTION.md: decay on every parameter
        expected = WD if every or p.ndim > 1 else 0.0
        assert decay[id(p)] == expected, (name, pname)
    # the model has the parameters the exclusion is about
    names = dict(model.named_parameters())
    assert "fc.bias" in names and "features.0.bn.weight" in names


@pytest.mark.parametrize("name", ["adamp", "lamb"])
def test_vit_tokens_decay_under_the_authors_recipe(name: str) -> None:
    # timm exempts what a model's no_weight_decay() names (cls_token, pos_embed); the recipe decays all
    model = build_model("vit_tiny_patch4_32", num_classes=10, in_chans=3)
    assert {"cls_token", "pos_embed"} <= set(model.no_weight_decay())
    decay = _decay_of(build_optimizer(name, model, lr=LR, weight_decay=WD))
    assert all(decay[id(p)] == WD for p in model.parameters())


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_step(name: str) -> None:
    """One step with zero gradients moves a parameter only through weight decay."""
    model = _model()
    opt = build_optimizer(name, model, lr=LR, weight_decay=WD)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
            p.grad = torch.zeros_like(p)
    opt.step()
    for pname, p in model.named_parameters():
        decayed = bool((p < 1.0).all())
        if name in ("adamp", "lamb") or p.ndim > 1:
            assert decayed, (name, pname)
        else:
            assert torch.equal(p, torch.ones_like(p)), (name, pname)


def test_unknown_optimizer() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'adam'.*adamp, lamb, sgd, adamw"):
        build_optimizer("adam", _model(), lr=LR, weight_decay=WD)

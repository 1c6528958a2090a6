"""Training augmentation on batches of tensors, identical in both loaders.

Small images: a zero-padded random crop and a horizontal flip whose parameters are drawn per
example from the (seed, epoch) stream, applied by one gather together with the normalisation.
ImageNet: colour jitter and PCA lighting on the normalised batch, after FFCV's decoder has
cropped it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from autolr.datasets import DATASET_SPECS
from autolr.sampling import AUGMENT, stream_generator

__all__ = ["augment_params", "augment_normalize", "imagenet_train_postprocess"]


def augment_params(n: int, seed: int, epoch: int, padding: int, flip: bool,
                   ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-example crop offsets in [0, 2*padding] (n x 2) and flip flags (n) for one epoch."""
    g = stream_generator(seed, epoch, AUGMENT)
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
_IMAGENET = DATASET_SPECS["imagenet"]


def imagenet_train_postprocess(x: torch.Tensor, *, generator: torch.Generator | None = None,
                               jitter: float = _IMAGENET.augment.color_jitter,
                               lighting: float = _IMAGENET.augment.pca_lighting,
                               mean: Sequence[float] = _IMAGENET.mean, std: Sequence[float] = _IMAGENET.std,
                               ) -> torch.Tensor:
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

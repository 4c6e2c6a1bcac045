"""Image quality on the device: PSNR and SSIM of images in [0, 1] (torchmetrics' functional forms,
so that nothing is pooled across calls)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``10 log10(1 / mse)`` over the whole image (all channels), as a 0-d tensor."""
    return peak_signal_noise_ratio(x.clamp(0, 1), reference, data_range=1.0)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse)


def rounded(values: Iterable[float] | torch.Tensor) -> list[float | None]:
    """Rounded as ``metrics.json`` keeps them; null where infinite (an exact fit) or NaN (a diverged one)."""
    return [round(value, 4) if math.isfinite(value) else None for value in map(float, values)]


def per_image_psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The PSNR of each of ``N`` images (``N x C x H x W``, clamped to [0, 1]) against one reference."""
    return psnr_from_mse((images.clamp(0, 1) - reference).square().flatten(1).mean(1))


def ssim(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SSIM with the usual Gaussian window (sigma 1.5, 11 taps), narrowed to fit smaller images."""
    window = min(11, *(size - 1 + size % 2 for size in reference.shape[-2:]))
    return structural_similarity_index_measure(
        x.clamp(0, 1).float(), reference.float(), data_range=1.0, sigma=1.5 * window / 11
    )


def luma(x: torch.Tensor) -> torch.Tensor:
    """The Y channel on the 0-255 scale: ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` computes it,
    ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB in [0, 1]. A one-channel image is scored as
    its RGB replica, ``Y = 16 + 219 x``, as the authors' evaluation script did (it stacks a grey image
    three times before ``rgb2ycbcr``): their Set14 mean, which ours is compared with, counts bridge that
    way. LapSRN's MATLAB script scores it as it is, ``255 x``: 1.32 dB lower on that image."""
    weights = x.new_tensor([65.481, 128.553, 24.966]).view(3, 1, 1)
    if x.shape[-3] == 1:
        return 16.0 + weights.sum() * x
    return 16.0 + (x * weights).sum(dim=-3, keepdim=True)


def psnr_y(x: torch.Tensor, reference: torch.Tensor, shave: int = 4) -> torch.Tensor:
    """PSNR of the luma (see ``luma``) with ``shave`` pixels cut from every border, peak 255: the
    super-resolution protocol of the paper (and of LapSRN, whose ground truths it used)."""
    window = (..., slice(shave, -shave or None), slice(shave, -shave or None))
    difference = luma(x.clamp(0, 1))[window] - luma(reference)[window]
    return 10.0 * torch.log10(255.0**2 / difference.double().pow(2).mean()).to(x.dtype)

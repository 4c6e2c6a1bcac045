"""Image quality on the device: PSNR and SSIM of images in [0, 1] (torchmetrics' functional forms,
so that nothing is pooled across calls)."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def psnr(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``10 log10(1 / mse)`` over the whole image (all channels), as a 0-d tensor."""
    return peak_signal_noise_ratio(x.clamp(0, 1), reference, data_range=1.0)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse)


def ssim(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SSIM with the usual Gaussian window (sigma 1.5, 11 taps), narrowed to fit smaller images."""
    window = min(11, *(size - 1 + size % 2 for size in reference.shape[-2:]))
    return structural_similarity_index_measure(
        x.clamp(0, 1).float(), reference.float(), data_range=1.0, sigma=1.5 * window / 11
    )

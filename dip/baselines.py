"""Classical estimates that the benchmark tables set beside Deep Image Prior's.

Each baseline maps an observation ``y`` (``1 x C x h x w`` in [0, 1]) and the degradation that made
it to an estimate of the clean image, and works only for its kind of degradation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from dip.images import array_to_tensor
from dip.physics import BayerMosaic, Degradation, GaussianNoise, Inpainting, LanczosDownsample

_BM3D_LOCK = threading.Lock()  # the bm3d library aborts the process when two threads call it at once


class BaselineUnavailableError(Exception):
    """An optional baseline whose package is not installed; the table says so instead of a number."""


def operators_own(y: torch.Tensor, physics: Degradation) -> torch.Tensor:
    """The degradation's own naive estimate (``physics.baseline``): bicubic upsampling by the
    super-resolution factor, bilinear demosaicing."""
    return physics.baseline(y)


def _to_numpy(y: torch.Tensor) -> np.ndarray:
    return y[0].permute(1, 2, 0).double().cpu().numpy()


def _from_numpy(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return array_to_tensor(array)[None].to(like).clamp(0, 1)


def non_local_means(y: torch.Tensor, physics: GaussianNoise) -> torch.Tensor:
    """scikit-image's non-local means given the noise level ``sigma``: 5x5 patches searched within
    13x13 and filter strength ``h = 0.6 sigma``, the best of a few settings on CSet9 at sigma 25
    (29.76 dB; ``0.8 sigma`` gave 29.08)."""
    from skimage.restoration import denoise_nl_means

    sigma = physics.sigma / 255.0
    denoised = denoise_nl_means(_to_numpy(y), h=0.6 * sigma, sigma=sigma, patch_size=5, patch_distance=6,
                                fast_mode=True, channel_axis=-1)
    return _from_numpy(denoised, y)


def cbm3d(y: torch.Tensor, physics: GaussianNoise) -> torch.Tensor:
    """BM3D (CBM3D for colour) through the optional ``bm3d`` package, given the noise level."""
    try:
        import bm3d
    except ImportError:
        raise BaselineUnavailableError("the bm3d package is not installed (pip install 'dip[bm3d]')") from None
    image = _to_numpy(y)
    sigma = physics.sigma / 255.0
    with _BM3D_LOCK:
        denoised = bm3d.bm3d_rgb(image, sigma) if image.shape[-1] == 3 else bm3d.bm3d(image[..., 0], sigma)
    return _from_numpy(denoised, y)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter with zero padding (what normalised convolution needs at borders)."""
    radius = max(1, round(3 * sigma))
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    row = (taps / taps.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    x = F.conv2d(x, row, padding=(0, radius), groups=x.shape[1])
    return F.conv2d(x, row.transpose(-1, -2), padding=(radius, 0), groups=x.shape[1])


def normalised_fill(y: torch.Tensor, physics: Inpainting) -> torch.Tensor:
    """Known pixels kept, missing ones filled by normalised convolution,
    ``G * (m y) / G * m`` with a Gaussian ``G`` of 1 pixel; where a hole is wider than that the
    Gaussian doubles until every pixel has known neighbours."""
    mask = physics.mask.to(y)
    estimate, covered, sigma = torch.zeros_like(y), torch.zeros_like(mask), 1.0
    while not bool(covered.all()) and sigma <= 2 * max(y.shape[-2:]):
        weight = _gaussian_blur(mask, sigma)
        fill = _gaussian_blur(y * mask, sigma) / weight.clamp_min(1e-12)
        fresh = (covered == 0) & (weight > 1e-6)
        estimate = torch.where(fresh, fill, estimate)
        covered = torch.maximum(covered, fresh.to(covered))
        sigma *= 2
    return (mask * y + (1 - mask) * estimate).clamp(0, 1)


@dataclass(frozen=True)
class Baseline:
    label: str  # column heading in the tables
    physics: type[Degradation]  # the degradation it undoes
    estimate: Callable[[torch.Tensor, Degradation], torch.Tensor]


BASELINES = {
    "bicubic": Baseline("bicubic", LanczosDownsample, operators_own),
    "bilinear": Baseline("bilinear", BayerMosaic, operators_own),
    "nlm": Baseline("NLM", GaussianNoise, non_local_means),
    "cbm3d": Baseline("CBM3D", GaussianNoise, cbm3d),
    "fill": Baseline("fill", Inpainting, normalised_fill),
}

"""A colour filter array: each pixel observes one of the three channels (demosaicing's forward model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dip.physics.base import OneChannelOfColour
from dip.physics.denoising import GaussianNoise

CHANNEL_OF = {"R": 0, "G": 1, "B": 2}
TENT = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])


class BayerMosaic(OneChannelOfColour):
    """``A(x) = sum_c m_c x_c``: a one-channel mosaic of the colour image ``x``, where the masks ``m_c``
    repeat ``pattern`` (the channels of the 2x2 tile's top-left, top-right, bottom-left and
    bottom-right pixels) over the image. Restoring ``x`` from ``y = A(x)`` is demosaicing; with
    ``sigma`` > 0 (on the 0-255 scale) a synthetic mosaic has the Gaussian noise of ``GaussianNoise``
    (clipped to [0, 1] unless ``clip`` is false), and ``early_stop=discrepancy`` knows its energy:
    joint demosaicing and denoising.

    The baseline is bilinear demosaicing: each channel keeps its samples and fills the other pixels by
    the normalised convolution ``T * (m_c y) / T * m_c`` with the 3x3 tent ``T`` (the mean of the two or
    four nearest samples of that channel), written as ``bilinear.png``."""

    baseline_name = "bilinear"

    def __init__(self, pattern: str = "RGGB", sigma: float = 0.0, clip: bool = True):
        super().__init__()
        self.noise = GaussianNoise(sigma, clip)
        if len(pattern) != 4 or set(pattern) - set(CHANNEL_OF) or set(CHANNEL_OF) - set(pattern):
            raise ValueError(f"pattern must name the 2x2 tile's channels with R, G and B each at least once, "
                             f"like RGGB, got {pattern!r}")
        self.pattern = pattern
        self.register_buffer("masks", torch.ones(1, 3, 1, 1), persistent=False)

    def prepare(self, height, width, generator=None, loaded_size=None):
        tile = torch.zeros(3, 2, 2)
        for position, channel in enumerate(self.pattern):
            tile[CHANNEL_OF[channel], position // 2, position % 2] = 1
        self.masks = tile.repeat(1, (height + 1) // 2, (width + 1) // 2)[None, :, :height, :width].contiguous()

    def check_fits(self, height: int, width: int) -> None:
        if min(height, width) < 2:
            raise ValueError(f"a {width}x{height} image holds no whole {self.pattern} tile")

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return (x * self.masks.to(x.dtype)).sum(1, keepdim=True)

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.noise.observe(self.A(x), generator)

    def expected_residual(self, x: torch.Tensor) -> torch.Tensor | None:
        return self.noise.expected_residual(self.A(x)) if self.noise.sigma > 0 else None

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        masks = self.masks.to(y.dtype)
        tent = TENT.to(y).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        samples = F.conv2d(y * masks, tent, padding=1, groups=3)
        weights = F.conv2d(masks.expand_as(samples), tent, padding=1, groups=3)
        return y * masks + (1 - masks) * samples / weights

"""Lanczos-2 downsampling, the super-resolution forward model ``y = d(x)``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dip.physics.base import Degradation


def lanczos2_kernel(factor: int) -> torch.Tensor:
    """The authors' ``4t x 4t`` Lanczos-2 kernel for downsampling by ``t``, sampled at phase 1/2.

    Tap ``i = 0 ... 4t - 1`` sits at ``d = (i + 1/2 - 2t) / t`` (so taps are symmetric about the centre)
    and weighs ``L(d) = 2 sin(pi d) sin(pi d / 2) / (pi d)^2``; the 2-D kernel is the outer product,
    normalised to sum to 1 so that a constant image stays constant.
    """
    if factor < 1:
        raise ValueError(f"downsampling factor must be >= 1, got {factor}")
    support = 2
    width = 4 * factor
    d = (torch.arange(width, dtype=torch.float64) + 0.5 - 2 * factor) / factor
    taps = support * torch.sin(math.pi * d) * torch.sin(math.pi * d / support) / (math.pi * d) ** 2
    kernel = torch.outer(taps, taps)
    return (kernel / kernel.sum()).float()


class LanczosDownsample(Degradation):
    """``d(x)``: Lanczos-2 filtering with replicate padding, then decimation by ``factor``.

    The padding (``3t`` pixels in all, split between the two sides) makes the output exactly
    ``H / t`` x ``W / t``; inputs must be multiples of ``t``. Each channel is filtered alike, so it
    also serves inside a generator (``downsample_mode=lanczos2``).
    """

    baseline_name = "bicubic"

    def __init__(self, factor: int = 4):
        super().__init__()
        if factor != int(factor) or factor < 2:  # int() would quietly make 2.5 a x2; x1 restores nothing
            raise ValueError(f"the downsampling factor must be a whole number >= 2, got {factor}")
        self.factor = int(factor)
        self.register_buffer("kernel", lanczos2_kernel(self.factor)[None, None], persistent=False)
        total = 3 * self.factor
        self.padding = (total // 2, total - total // 2) * 2

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        batch, channels, height, width = x.shape
        flat = F.pad(x.reshape(batch * channels, 1, height, width), self.padding, mode="replicate")
        y = F.conv2d(flat, self.kernel.to(x.dtype), stride=self.factor)
        return y.reshape(batch, channels, *y.shape[-2:])

    def check_fits(self, height: int, width: int) -> None:
        if min(height, width) < 2 * self.factor:
            raise ValueError(
                f"a {width}x{height} image is too small for x{self.factor} super-resolution "
                f"(needs at least {2 * self.factor} pixels per side)"
            )

    def observation_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.factor, width // self.factor

    def solution_size(self, height: int, width: int) -> tuple[int, int]:
        return height * self.factor, width * self.factor

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        """Bicubic upsampling, the usual super-resolution baseline."""
        return F.interpolate(y, scale_factor=self.factor, mode="bicubic", align_corners=False).clamp(0, 1)

"""Additive white Gaussian noise: ``A = I``, ``y = clip(x + sigma n)``."""

from __future__ import annotations

import torch

from dip.physics.base import Degradation


class GaussianNoise(Degradation):
    """Identity forward model with Gaussian noise of std ``sigma`` on the 0-255 scale.

    ``clip`` keeps the noisy observation in [0, 1], as the paper's denoising protocol does.
    """

    def __init__(self, sigma: float = 25.0, clip: bool = True):
        super().__init__()
        if sigma < 0:
            raise ValueError(f"noise sigma must be >= 0, got {sigma}")
        self.sigma = sigma
        self.clip = clip

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return x

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        y = x + noise * (self.sigma / 255.0)
        return y.clamp(0, 1) if self.clip else y

"""The pixel parameterisation: no generator at all, for explicit priors (``prior=tv``)."""

from __future__ import annotations

import torch
from torch import nn


class Pixels(nn.Module):
    """``f(z) = z``: with ``z`` optimised (``input=pixels``) the pixels themselves are the unknowns."""

    size_multiple = 1

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if in_channels != out_channels:
            raise ValueError(
                f"the pixel parameterisation needs an input code with one channel per image channel "
                f"({out_channels}), got {in_channels}: use input=pixels"
            )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z

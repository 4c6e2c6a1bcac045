"""Colour to grey: ``A(x) = w_R x_R + w_G x_G + w_B x_B``, the forward model of colourisation."""

from __future__ import annotations

import torch

from dip.physics.base import Degradation

BT601_LUMA = (0.299, 0.587, 0.114)


class Greyscale(Degradation):
    """The luma of a colour image, ``A(x) = sum_c w_c x_c`` (ITU-R BT.601 weights by default, as
    Pillow's ``convert("L")``): restoring ``x`` from ``y = A(x)`` is colourisation, where the prior
    alone decides the chroma. The observation has one channel, the restoration three.

    ``weights`` are the three channel weights (they need not sum to 1); the baseline is the grey
    observation as a colour image, ``y / sum_c w_c`` in every channel."""

    def __init__(self, weights: tuple[float, float, float] = BT601_LUMA):
        super().__init__()
        if len(weights) != 3 or sum(weights) <= 0:
            raise ValueError(f"weights must be three channel weights with a positive sum, got {list(weights)}")
        self.register_buffer("weights", torch.tensor([float(w) for w in weights]).view(1, 3, 1, 1),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"weights={tuple(round(w, 6) for w in self.weights.flatten().tolist())}"

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return (x * self.weights.to(x.dtype)).sum(1, keepdim=True)

    def solution_channels(self, observed: int) -> int:
        if observed != 1:
            raise ValueError(f"colourisation observes a grey image, not {observed} channels (data.mode=L reads "
                             "a grey image stored as colour)")
        return 3

    def baseline(self, y: torch.Tensor) -> torch.Tensor:
        return (y / self.weights.sum().to(y.dtype)).expand(-1, 3, -1, -1)

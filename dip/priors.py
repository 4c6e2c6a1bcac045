"""Explicit image priors, the hand-made regularisers Deep Image Prior is compared against."""

from __future__ import annotations

import torch
from torch import nn


class TotalVariation(nn.Module):
    """``weight * mean_{pixels, channels} ((x[i, j+1] - x[i, j])^2 + (x[i+1, j] - x[i, j])^2)^(beta / 2)``.

    The TV^beta regulariser of Mahendran & Vedaldi's pre-images (the paper's TV-norm baseline);
    ``beta = 1`` is the usual total variation, ``beta = 2`` (their choice) penalises squared
    gradients. ``eps`` keeps the gradient finite where the image is flat when ``beta < 2``.
    """

    def __init__(self, weight: float = 1.0, beta: float = 2.0, eps: float = 1e-8):
        super().__init__()
        if weight < 0 or beta <= 0:
            raise ValueError(f"TV weight must be >= 0 and beta > 0, got weight {weight}, beta {beta}")
        self.weight, self.beta, self.eps = weight, beta, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = x[..., :-1, 1:] - x[..., :-1, :-1]
        dy = x[..., 1:, :-1] - x[..., :-1, :-1]
        squared = dx.square() + dy.square()
        variation = squared if self.beta == 2 else (squared + self.eps).pow(self.beta / 2)
        return self.weight * variation.mean()

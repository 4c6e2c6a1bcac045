"""The identity forward model ``A = I`` for observations used as they are (flash / no-flash)."""

from __future__ import annotations

import torch

from dip.physics.base import Degradation


class Identity(Degradation):
    """``A(x) = x``: the data term is ``|x - y|^2``, the output is fitted to the observation itself.

    Deep Image Prior with this operator is a guided filter when ``z`` is an image (flash / no-flash),
    and blind restoration when it is noise (the early-stopped fit keeps the image, not the artefacts).
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return x

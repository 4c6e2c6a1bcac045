"""The degradation ("physics") interface: a forward model ``A`` and a synthetic observation."""

from __future__ import annotations

import torch
from torch import nn


def settings_text(owner: object) -> str:
    """``name=value`` of ``owner``'s public attributes: what a config records of an object given in Python."""
    return ", ".join(f"{name}={value!r}" for name, value in vars(owner).items()
                     if not name.startswith("_") and name != "training")


class Degradation(nn.Module):
    """A forward model ``y = A(x)`` (plus noise, for synthetic observations).

    The data term Deep Image Prior minimises is ``E(x; y) = mean (A(x) - y)^2``. Subclasses
    implement ``A``; operators whose state depends on the image size (masks) build it in
    ``prepare``, which is called once the size of the solution is known.

    ``observation_is_image`` is False for operators whose observation is not a picture (features);
    ``baseline_name`` names the naive estimate when it is not the observation itself (written as
    ``<baseline_name>.png`` beside the result).
    """

    observation_is_image = True
    baseline_name: str | None = None

    def extra_repr(self) -> str:
        return settings_text(self)

    def prepare(self, height: int, width: int, generator: torch.Generator | None = None,
                loaded_size: tuple[int, int] | None = None) -> None:
        """Build size-dependent state for a solution of ``height`` x ``width`` pixels; ``loaded_size`` is
        the image's (height, width) as loaded, before ``data.size`` cropped it."""

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 (the operator's usual name)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A synthetic observation of the clean image ``x``; noise-free unless overridden."""
        return self.A(x)

    def data_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``E(x; y)`` of each image of the batch ``x`` against the observation ``y`` (one for the whole batch,
        or one per image, as ``x``'s images are restarts of one or fits of several): shape ``N``."""
        return (self.A(x) - y).square().flatten(1).mean(1)

    def expected_residual(self, x: torch.Tensor) -> torch.Tensor | None:
        """``E mean (y - A(x))^2`` per image of ``x`` over the observations ``y`` of the clean ``x``: the
        data term a perfect restoration leaves, i.e. the energy of the noise. None where the
        degradation has no noise model (the discrepancy principle, ``early_stop=discrepancy``, needs one)."""
        return None

    def A_adjoint(self, y: torch.Tensor, x_shape: torch.Size) -> torch.Tensor:  # noqa: N802
        """``A^T y`` for a linear ``A``, as the vector-Jacobian product at zero."""
        x = torch.zeros(x_shape, dtype=y.dtype, device=y.device, requires_grad=True)
        with torch.enable_grad():
            (adjoint,) = torch.autograd.grad(self.A(x), x, grad_outputs=y)
        return adjoint

    def observation_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of the observation of a ``height`` x ``width`` image."""
        return height, width

    def solution_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of the image to restore from an observation of ``height`` x ``width``."""
        return height, width

    def solution_channels(self, observed: int) -> int:
        """Channels of the image to restore from an observation of ``observed`` channels (demosaicing
        restores three from one); ``ValueError`` naming the problem when it cannot be restored."""
        return observed

    def baseline(self, y: torch.Tensor) -> torch.Tensor | None:
        """The naive estimate of ``x`` from ``y`` that a restoration has to beat (None: there is none)."""
        return y

    def check_observed(self) -> None:
        """Raise ``ValueError`` naming what is missing when an observation given as a file, not made
        here from a clean image, cannot be modelled."""

    def check_fits(self, height: int, width: int) -> None:
        """Raise ``ValueError`` naming the problem when an image of this size cannot be degraded."""


class OneChannelOfColour(Degradation):
    """An operator whose observation is one channel made of a colour image's three (a colour filter
    mosaic): three channels are restored from one."""

    def solution_channels(self, observed: int) -> int:
        if observed != 1:
            raise ValueError(f"{type(self).__name__} observes one channel, not {observed} (read the observation "
                             "with data.mode=L)")
        return 3

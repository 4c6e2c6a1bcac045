"""The generator's input ``z``: how it is made, perturbed at each step, and optionally learnt."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dip.errors import DipError, check_choice
from dip.images import load_image


class InputCode:
    """Base for the ways of making ``z``.

    ``reg_noise_std`` adds fresh Gaussian noise of that std to ``z`` at every step (the authors'
    regulariser); ``optimize`` makes ``z`` a parameter optimised with the network.
    """

    channels: int

    def __init__(self, reg_noise_std: float = 0.0, optimize: bool = False):
        if not reg_noise_std >= 0:
            raise ValueError(f"reg_noise_std must be >= 0, got {reg_noise_std}")
        self.reg_noise_std = reg_noise_std
        self.optimize = optimize

    def make(self, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A ``1 x channels x height x width`` code."""
        raise NotImplementedError

    def prepare(self, channels: int, height: int, width: int, loaded_size: tuple[int, int] | None = None,
                offset: tuple[int, int] = (0, 0)) -> None:
        """Check the code fits an image of this many channels and this size (``loaded_size`` before
        ``data.size`` cropped it, where known, with the image's (top, left) in it at ``offset``); load
        what it needs."""


class NoiseCode(InputCode):
    """``channels`` maps of i.i.d. noise: uniform in ``[0, scale)`` or normal with std ``scale``."""

    def __init__(self, channels: int = 32, scale: float = 0.1, distribution: str = "uniform", **kwargs):
        super().__init__(**kwargs)
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        check_choice("noise distribution", distribution, ("uniform", "normal"))
        self.channels, self.scale, self.distribution = channels, scale, distribution

    def make(self, height, width, generator=None):
        shape = (1, self.channels, height, width)
        sample = torch.rand if self.distribution == "uniform" else torch.randn
        return sample(shape, generator=generator) * self.scale


class MeshgridCode(InputCode):
    """Two maps holding the x and y coordinates in [0, 1] (the authors' choice for large holes)."""

    channels = 2

    def make(self, height, width, generator=None):
        ys = torch.linspace(0, 1, height).view(height, 1).expand(height, width)
        xs = torch.linspace(0, 1, width).view(1, width).expand(height, width)
        return torch.stack([xs, ys])[None].clone()


class ImageCode(InputCode):
    """A given image as ``z`` (flash / no-flash: the flash photo), padded by replication if needed.

    It is aligned with the restored image: of its size as loaded (for super-resolution, the size the
    observation restores to) and cut at the same window, whatever ``data.size`` crop or trim to the
    operator's factor made it. A pair of other sizes is refused rather than cropped out of alignment.
    """

    def __init__(self, path: str, mode: str = "RGB", **kwargs):
        super().__init__(**kwargs)
        self.path, self.mode = path, mode
        self.image: torch.Tensor | None = None
        self.channels = 3 if mode == "RGB" else 1

    def prepare(self, channels, height, width, loaded_size=None, offset=(0, 0)):
        image = load_image(self.path, mode=self.mode, what="input image")
        size, wanted = tuple(image.shape[-2:]), loaded_size or (height, width)
        if size != wanted:
            raise DipError(f"input image {self.path} is {size[1]}x{size[0]}, but the image to restore is "
                           f"{wanted[1]}x{wanted[0]}: the guide must be aligned with it, of its size")
        top, left = offset
        self.image = image[None, :, top : top + height, left : left + width]

    def make(self, height, width, generator=None):
        image = self.image
        pad_h, pad_w = height - image.shape[-2], width - image.shape[-1]
        padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        return F.pad(image, padding, mode="replicate") if any(padding) else image.clone()


class PixelCode(InputCode):
    """The image itself as the code, one channel per image channel, starting as uniform noise in
    ``mean +- scale / 2``; optimised, with the ``Pixels`` generator, for explicit priors (``prior=tv``).

    ``channels`` is accepted and ignored (they follow the image), so that a task's ``input.channels``
    for its generator does not break ``prior=tv``.
    """

    def __init__(self, mean: float = 0.5, scale: float = 0.1, optimize: bool = True, channels: int | None = None,
                 **kwargs):
        super().__init__(optimize=optimize, **kwargs)
        self.mean, self.scale = mean, scale
        self.channels = 3

    def prepare(self, channels, height, width, loaded_size=None, offset=(0, 0)):
        self.channels = channels

    def make(self, height, width, generator=None):
        return self.mean + self.scale * (torch.rand((1, self.channels, height, width), generator=generator) - 0.5)


def padded_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """The smallest size >= (``height``, ``width``) that a network halving ``log2(multiple)`` times
    accepts, with more than one pixel at its coarsest scale (BatchNorm needs two values)."""
    padded_h = -(-height // multiple) * multiple
    padded_w = -(-width // multiple) * multiple
    if padded_h == padded_w == multiple:
        padded_w *= 2
    return padded_h, padded_w

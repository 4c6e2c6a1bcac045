"""Where the pixels are known: mask sources for inpainting (1 = known pixel, 0 = missing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from dip.images import data_crop, read_image
from dip.physics.base import settings_text


class MaskSource:
    """Makes a ``1 x 1 x H x W`` mask for an image of the given size; ``str()`` names it in messages."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({settings_text(self)})"

    def __call__(self, height: int, width: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


class BernoulliMask(MaskSource):
    """Each pixel is missing independently with probability ``fraction`` (the paper's Table 1: 0.5)."""

    def __init__(self, fraction: float = 0.5):
        if not 0 <= fraction < 1:
            raise ValueError(f"missing-pixel fraction must be in [0, 1), got {fraction}")
        self.fraction = fraction

    def __str__(self) -> str:
        return f"the Bernoulli mask (mask.fraction={self.fraction})"

    def __call__(self, height, width, generator=None):
        keep = torch.rand((1, 1, height, width), generator=generator) >= self.fraction
        return keep.float()


class RegionMask(MaskSource):
    """A large rectangular hole covering ``fraction`` of each side, centred at (``cy``, ``cx``)."""

    def __init__(self, fraction: float = 0.3, cy: float = 0.5, cx: float = 0.5):
        if not 0 < fraction < 1:
            raise ValueError(f"hole fraction must be in (0, 1), got {fraction}")
        self.fraction, self.cy, self.cx = fraction, cy, cx

    def __str__(self) -> str:
        return f"the region mask (mask.fraction={self.fraction})"

    def __call__(self, height, width, generator=None):
        mask = torch.ones(1, 1, height, width)
        hole_h, hole_w = max(1, round(height * self.fraction)), max(1, round(width * self.fraction))
        top = min(max(0, round(self.cy * height - hole_h / 2)), height - hole_h)
        left = min(max(0, round(self.cx * width - hole_w / 2)), width - hole_w)
        mask[..., top : top + hole_h, left : left + hole_w] = 0
        return mask


class TextMask(MaskSource):
    """Text drawn over the image, repeated on lines (the paper's text-removal example).

    ``font_size`` is a fraction of the image height, so the mask looks alike at every size.
    """

    def __init__(self, text: str = "Deep Image Prior", font_size: float = 0.08, line_spacing: float = 2.0):
        if not 0 < font_size <= 1:  # the least drawn is 6 pixels, whatever the fraction
            raise ValueError(f"font_size is a fraction of the image height, in (0, 1], got {font_size}")
        if not line_spacing > 0:
            raise ValueError(f"line_spacing is in font sizes, above 0, got {line_spacing}")
        self.text, self.font_size, self.line_spacing = text, font_size, line_spacing

    def __str__(self) -> str:
        return "the text mask"

    def __call__(self, height, width, generator=None):
        size = max(6, round(self.font_size * height))
        font = ImageFont.load_default(size=size)
        canvas = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(canvas)
        step = max(1, round(size * self.line_spacing))
        for row, top in enumerate(range(size // 2, height, step)):
            draw.text((-(row * size) % max(1, size * 3), top), (self.text + "  ") * 8, fill=0, font=font)
        return torch.from_numpy(np.asarray(canvas) > 127).float()[None, None]


class FileMask(MaskSource):
    """A mask read from an image file: white (>= 128) marks a known pixel, unless it is transparent.

    Its size is the restored image's, or ``image_size`` (height, width): the size of the image it
    masks before ``data.size`` centre-cropped it, and then it is cropped the same way.
    """

    def __init__(self, path: str | Path, image_size: tuple[int, int] | None = None):
        self.path = Path(path)
        self.image_size = image_size

    def __str__(self) -> str:
        return f"mask {self.path}"

    def __call__(self, height, width, generator=None):
        loaded = read_image(self.path, mode="L", what="mask")
        known = loaded.pixels >= 0.5
        if loaded.alpha is not None:  # holes erased to transparency in an image editor are missing pixels too
            known &= loaded.alpha >= 0.5
        size = tuple(known.shape[-2:])
        if size != (height, width) and size != self.image_size:
            image = self.image_size if self.image_size and self.image_size != (height, width) else None
            cropped = f" ({image[1]}x{image[0]} before data.size cropped it)" if image else ""
            raise ValueError(f"mask {self.path} is {size[1]}x{size[0]} but the image is {width}x{height}{cropped}: "
                             f"give one of the image's size (data.mask=FILE), or data.mask=null for the mask group's")
        return data_crop(known, height, width).float()[None]

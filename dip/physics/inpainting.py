"""Inpainting: ``A(x) = m * x`` with a binary mask ``m`` of known pixels."""

from __future__ import annotations

import logging

import torch

from dip.physics.base import Degradation
from dip.physics.masks import FileMask, MaskSource

log = logging.getLogger("dip")


class Inpainting(Degradation):
    """Masking by ``m`` (1 = known); the data term only sees known pixels: ``|(x - y) * m|^2``.

    ``mask`` makes the mask once the image size is known; a ``mask_file`` takes precedence (the
    ``data.mask=FILE`` override).
    """

    def __init__(self, mask: MaskSource, mask_file: str | None = None):
        super().__init__()
        self.source = FileMask(mask_file) if mask_file else mask
        self.register_buffer("mask", torch.ones(1, 1, 1, 1))

    def prepare(self, height, width, generator=None, loaded_size=None):
        if isinstance(self.source, FileMask):  # a mask file may be the size of the image as loaded
            self.source.image_size = loaded_size
        self.mask = self.source(height, width, generator)
        if not self.mask.any():
            raise ValueError(f"{self.source} marks no pixel known (white) on a {width}x{height} image: there is "
                             f"nothing to fit")
        if self.mask.all():  # a mask with its holes grey (>= 128) or its colours swapped, most likely
            log.warning(f"{self.source} marks every pixel known (white, >= 128) on a {width}x{height} image: nothing "
                        f"is inpainted")

    def check_observed(self) -> None:
        if not isinstance(self.source, FileMask):  # a drawn mask would not be the holes the photo has
            raise ValueError("an observed image needs the mask of its known pixels: give data.mask=FILE (white = "
                             "known pixel); the mask group draws masks over clean images only")

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return x * self.mask

    def data_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # not (A(x) - y)^2: a photo given with its holes (data.observation) has pixels there that A(x) has not
        return ((x - y) * self.mask).square().flatten(1).mean(1)

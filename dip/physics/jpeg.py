"""Blind JPEG artefact removal: ``A = I``, the observation a JPEG of the clean image."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from dip.images import array_to_tensor, to_pil
from dip.physics.identity import Identity


def jpeg_round_trip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """``B x C x H x W`` images in [0, 1] (C = 1 or 3) encoded as JPEG at ``quality`` and decoded, in memory."""
    decoded = []
    for image in x:
        buffer = io.BytesIO()
        pil = to_pil(image)
        pil.save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as jpeg:
            array = np.asarray(jpeg.convert(pil.mode), dtype=np.float32) / 255.0
        decoded.append(array_to_tensor(array))
    return torch.stack(decoded).to(device=x.device, dtype=x.dtype)


class JpegCompression(Identity):
    """The data term is ``|x - y|^2`` (the paper's blind restoration: no model of the artefacts);
    a synthetic observation is the clean image saved as JPEG at ``quality`` (1-100, Pillow's scale)
    and read back, so that the restoration's PSNR can be measured. A real JPEG comes in through
    ``data.observation=FILE``."""

    def __init__(self, quality: int = 10):
        super().__init__()
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
        self.quality = int(quality)

    def observe(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return jpeg_round_trip(x, self.quality)

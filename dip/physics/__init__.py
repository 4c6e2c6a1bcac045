"""Degradation operators: each has a forward model ``A(x)`` and makes synthetic observations."""

from dip.physics.base import Degradation
from dip.physics.denoising import GaussianNoise
from dip.physics.downsample import LanczosDownsample, lanczos2_kernel
from dip.physics.inpainting import Inpainting
from dip.physics.masks import BernoulliMask, FileMask, MaskSource, RegionMask, TextMask

__all__ = [
    "BernoulliMask",
    "Degradation",
    "FileMask",
    "GaussianNoise",
    "Inpainting",
    "LanczosDownsample",
    "MaskSource",
    "RegionMask",
    "TextMask",
    "lanczos2_kernel",
]

"""Degradation operators: each has a forward model ``A(x)`` and makes synthetic observations."""

from dip.physics.base import Degradation
from dip.physics.denoising import GaussianNoise
from dip.physics.downsample import LanczosDownsample, lanczos2_kernel
from dip.physics.features import FeatureInversion
from dip.physics.greyscale import Greyscale
from dip.physics.identity import Identity
from dip.physics.inpainting import Inpainting
from dip.physics.jpeg import JpegCompression
from dip.physics.masks import BernoulliMask, FileMask, MaskSource, RegionMask, TextMask

__all__ = [
    "BernoulliMask",
    "Degradation",
    "FeatureInversion",
    "FileMask",
    "GaussianNoise",
    "Greyscale",
    "Identity",
    "Inpainting",
    "JpegCompression",
    "LanczosDownsample",
    "MaskSource",
    "RegionMask",
    "TextMask",
    "lanczos2_kernel",
]

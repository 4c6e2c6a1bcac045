"""Degradation operators: each has a forward model ``A(x)`` and makes synthetic observations."""

from dip.physics.base import Degradation, OneChannelOfColour
from dip.physics.denoising import GaussianNoise
from dip.physics.downsample import LanczosDownsample, lanczos2_kernel
from dip.physics.features import FeatureInversion
from dip.physics.identity import Identity
from dip.physics.inpainting import Inpainting
from dip.physics.jpeg import JpegCompression
from dip.physics.masks import BernoulliMask, FileMask, MaskSource, RegionMask, TextMask
from dip.physics.mosaic import BayerMosaic

__all__ = [
    "BayerMosaic",
    "BernoulliMask",
    "Degradation",
    "FeatureInversion",
    "FileMask",
    "GaussianNoise",
    "Identity",
    "Inpainting",
    "JpegCompression",
    "LanczosDownsample",
    "MaskSource",
    "OneChannelOfColour",
    "RegionMask",
    "TextMask",
    "lanczos2_kernel",
]

"""Generators ``x = f(z)``; each exposes ``size_multiple``, the input sizes it accepts."""

from dip.nets.pixels import Pixels
from dip.nets.resnet import ResNet
from dip.nets.skip import Skip
from dip.nets.unet import UNet

__all__ = ["Pixels", "ResNet", "Skip", "UNet"]

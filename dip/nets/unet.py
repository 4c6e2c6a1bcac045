"""U-Net generator, as the paper compares it against "skip" (Fig. 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dip.errors import check_choice
from dip.nets.layers import UPSAMPLERS, Upsample, conv

NORMS = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "none": None}


def double_conv(in_channels: int, out_channels: int, norm: str, pad: str, bias: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels_in in (in_channels, out_channels):
        layers.append(conv(channels_in, out_channels, 3, bias=bias, pad=pad))
        if NORMS[norm] is not None:
            layers.append(NORMS[norm](out_channels))
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net: max-pool encoder; decoder of a 2x up-convolution, concatenation with the encoder's features of
    that resolution, and two 3x3 convolutions.

    ``channels`` lists the width at each resolution, finest first; ``len(channels) - 1`` poolings
    mean inputs must be multiples of ``size_multiple``. ``upsample_mode`` is ``deconv`` (a learnt
    2x transposed convolution) or an interpolation mode followed by a 3x3 convolution. ``norm``
    follows each encoder convolution and ``decoder_norm`` each decoder one: the authors' U-Net
    (Fig. 8) normalises its encoder per instance and leaves its decoder unnormalised.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels=(8, 16, 32, 64, 128, 128),
        upsample_mode: str = "deconv",
        norm: str = "instance",
        decoder_norm: str = "none",
        pad: str = "zero",
        need_bias: bool = True,
        need_sigmoid: bool = True,
    ):
        super().__init__()
        check_choice("upsample mode", upsample_mode, ("deconv", *UPSAMPLERS))
        check_choice("norm", norm, tuple(NORMS))
        check_choice("decoder norm", decoder_norm, tuple(NORMS))
        channels = list(channels)
        self.size_multiple = 2 ** (len(channels) - 1)
        self.upsample = None if upsample_mode == "deconv" else Upsample(upsample_mode)
        self.start = double_conv(in_channels, channels[0], norm, pad, need_bias)
        self.downs = nn.ModuleList(
            double_conv(c_in, c_out, norm, pad, need_bias) for c_in, c_out in zip(channels, channels[1:])
        )
        self.ups = nn.ModuleList()
        self.upconvs = nn.ModuleList()
        for coarse, fine in zip(reversed(channels[1:]), reversed(channels[:-1])):
            if upsample_mode == "deconv":
                self.upconvs.append(nn.ConvTranspose2d(coarse, fine, 4, stride=2, padding=1,
                                                       bias=need_bias))
            else:
                self.upconvs.append(conv(coarse, fine, 3, bias=need_bias, pad=pad))
            self.ups.append(double_conv(2 * fine, fine, decoder_norm, pad, need_bias))
        head: list[nn.Module] = [nn.Conv2d(channels[0], out_channels, 1, bias=need_bias)]
        if need_sigmoid:
            head.append(nn.Sigmoid())
        self.head = nn.Sequential(*head)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        features = [self.start(z)]
        for down in self.downs:
            features.append(down(F.max_pool2d(features[-1], 2)))
        x = features.pop()
        for upconv, up in zip(self.upconvs, self.ups):
            skip = features.pop()
            if self.upsample is not None:
                x = self.upsample(x, skip.shape[-2:])
            x = up(torch.cat([skip, upconv(x)], dim=1))
        return self.head(x)

"""ResNet generator without downsampling, as the paper compares it against "skip" (Fig. 8)."""

from __future__ import annotations

import torch
from torch import nn

from dip.nets.layers import activation, conv


class ResidualBlock(nn.Module):
    """``x + BN(conv(act(BN(conv(x)))))``."""

    def __init__(self, channels: int, act: str, pad: str, bias: bool):
        super().__init__()
        self.body = nn.Sequential(
            conv(channels, channels, 3, bias=bias, pad=pad),
            nn.BatchNorm2d(channels),
            activation(act),
            conv(channels, channels, 3, bias=bias, pad=pad),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """``blocks`` residual blocks of ``channels`` features at full resolution; any input size.

    The first and last convolutions pad by ``pad``, the blocks and the convolution after them by
    ``block_pad``: zero in the authors' ResNet (Fig. 8), whose blocks are plain zero-padded convolutions.
    """

    size_multiple = 1

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: int = 8,
        channels: int = 32,
        act: str = "LeakyReLU",
        pad: str = "reflection",
        block_pad: str = "zero",
        need_bias: bool = True,
        need_sigmoid: bool = True,
    ):
        super().__init__()
        layers: list[nn.Module] = [conv(in_channels, channels, 3, bias=need_bias, pad=pad), activation(act)]
        layers += [ResidualBlock(channels, act, block_pad, need_bias) for _ in range(blocks)]
        layers += [
            conv(channels, channels, 3, bias=need_bias, pad=block_pad),
            nn.BatchNorm2d(channels),
            conv(channels, out_channels, 3, bias=need_bias, pad=pad),
        ]
        if need_sigmoid:
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)

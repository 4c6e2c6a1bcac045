"""The paper's "skip" encoder-decoder generator."""

from __future__ import annotations

import torch
from torch import nn

from dip.nets.layers import Upsample, activation, cat_channels, conv, conv_bn_act, per_scale


class SkipLevel(nn.Module):
    """One scale: ``up(BN([skip(x), upsample(inner(down(x)))]))``.

    ``down`` halves the resolution (two conv-BN-act blocks, the first downsampling), ``inner`` is
    the next coarser level (absent at the coarsest), ``skip`` is an optional 1x1-style branch at
    this resolution, and ``up`` mixes the concatenation back to ``up_channels``. With
    ``groups > 1`` in ``conv_kwargs`` every convolution is grouped and the concatenation keeps
    each group's channels together (packed copies, see ``Skip``).
    """

    def __init__(self, in_channels, down_channels, up_channels, skip_channels, inner_channels, inner,
                 kernel_down, kernel_up, kernel_skip, upsample_mode, need1x1_up, act, **conv_kwargs):
        super().__init__()
        self.groups = conv_kwargs.get("groups", 1)
        self.skip = (
            conv_bn_act(in_channels, skip_channels, kernel_skip, act, **conv_kwargs) if skip_channels else None
        )
        down_kwargs = dict(conv_kwargs, stride=2, downsample_mode=conv_kwargs.get("downsample_mode", "stride"))
        plain_kwargs = {k: v for k, v in conv_kwargs.items() if k != "downsample_mode"}
        self.down = nn.Sequential(
            conv_bn_act(in_channels, down_channels, kernel_down, act, **down_kwargs),
            conv_bn_act(down_channels, down_channels, kernel_down, act, **plain_kwargs),
        )
        self.inner = inner
        self.upsample = Upsample(upsample_mode)
        merged = skip_channels + inner_channels
        up = [nn.BatchNorm2d(merged), conv_bn_act(merged, up_channels, kernel_up, act, **plain_kwargs)]
        if need1x1_up:
            up.append(conv_bn_act(up_channels, up_channels, 1, act, **plain_kwargs))
        self.up = nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deeper = self.down(x)
        if self.inner is not None:
            deeper = self.inner(deeper)
        deeper = self.upsample(deeper, x.shape[-2:])
        if self.skip is not None:
            deeper = cat_channels([self.skip(x), deeper], self.groups)
        return self.up(deeper)


class Skip(nn.Module):
    """Encoder-decoder with skip connections, ``x = f(z)`` (Ulyanov et al., supplementary).

    Per-scale settings (``channels_up``, ``channels_skip``, ``kernel_down``, ``kernel_up``,
    ``upsample_mode``, ``downsample_mode``) take a list with one entry per scale or a scalar for
    all; ``channels_down`` lists the scales, and ``kernel_skip`` is one size for every skip branch.
    Each scale halves the resolution, so inputs must be multiples of ``size_multiple``.

    ``copies > 1`` packs that many independent networks into one: every convolution is grouped
    by copy and every BatchNorm channel belongs to one copy, so copy ``k`` maps input channels
    ``[k in_channels, (k + 1) in_channels)`` to output channels ``[k out_channels, ...)`` exactly as a
    separate network would, and all copies share each kernel launch (``dip.nets.packed``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels_down=(128, 128, 128, 128, 128),
        channels_up=(128, 128, 128, 128, 128),
        channels_skip=(4, 4, 4, 4, 4),
        kernel_down=3,
        kernel_up=3,
        kernel_skip=1,
        downsample_mode="stride",
        upsample_mode="bilinear",
        pad: str = "reflection",
        act: str = "LeakyReLU",
        need_bias: bool = True,
        need_sigmoid: bool = True,
        need1x1_up: bool = True,
        copies: int = 1,
    ):
        super().__init__()
        if copies < 1:
            raise ValueError(f"copies must be >= 1, got {copies}")
        if not isinstance(channels_down, (list, tuple)):
            raise ValueError(f"channels_down lists the channels of each scale, its length the depth "
                             f"([16, 32, 64] for three scales), not {channels_down!r}")
        scales = len(channels_down)
        channels_up = per_scale(channels_up, scales, "channels_up")
        channels_skip = per_scale(channels_skip, scales, "channels_skip")
        if min(*channels_down, *channels_up) < 1 or min(channels_skip) < 0:
            raise ValueError(f"a scale needs at least one channel down and up (and none or more on its skip), not "
                             f"channels_down={list(channels_down)}, channels_up={channels_up}, "
                             f"channels_skip={channels_skip}")
        channels_down = [copies * c for c in channels_down]
        channels_up = [copies * c for c in channels_up]
        channels_skip = [copies * c for c in channels_skip]
        in_channels, out_channels = copies * in_channels, copies * out_channels
        kernel_down = per_scale(kernel_down, scales, "kernel_down")
        kernel_up = per_scale(kernel_up, scales, "kernel_up")
        upsample_mode = per_scale(upsample_mode, scales, "upsample_mode")
        downsample_mode = per_scale(downsample_mode, scales, "downsample_mode")
        activation(act)  # validate early, with a clear message
        self.size_multiple = 2**scales
        self.copies = copies

        level = None
        for i in reversed(range(scales)):
            level = SkipLevel(
                in_channels=in_channels if i == 0 else channels_down[i - 1],
                down_channels=channels_down[i],
                up_channels=channels_up[i],
                skip_channels=channels_skip[i],
                inner_channels=channels_down[i] if i == scales - 1 else channels_up[i + 1],
                inner=level,
                kernel_down=kernel_down[i],
                kernel_up=kernel_up[i],
                kernel_skip=kernel_skip,
                upsample_mode=upsample_mode[i],
                need1x1_up=need1x1_up,
                act=act,
                bias=need_bias,
                pad=pad,
                downsample_mode=downsample_mode[i],
                groups=copies,
            )
        head: list[nn.Module] = [conv(channels_up[0], out_channels, 1, bias=need_bias, pad=pad, groups=copies)]
        if need_sigmoid:
            head.append(nn.Sigmoid())
        self.body = level
        self.head = nn.Sequential(*head)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))

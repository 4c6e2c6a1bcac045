"""Building blocks shared by the generators: padded convolutions, downsamplers, activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dip.errors import check_choice
from dip.physics.downsample import LanczosDownsample

PADDINGS = ("zero", "reflection")
DOWNSAMPLERS = ("stride", "avg", "max", "lanczos2")
UPSAMPLERS = ("nearest", "bilinear")
ACTIVATIONS = ("LeakyReLU", "Swish", "ELU", "ReLU", "none")


class ReflectionPad(nn.Module):
    """Reflection padding by ``pad`` pixels on each side.

    Reflection needs ``pad < size``; on a side too small for that (the deepest scales of a deep
    network on a tiny image) it falls back to replicating the border, so any image size runs.
    """

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) > self.pad else "replicate"
        return F.pad(x, (self.pad,) * 4, mode=mode)


class Upsample(nn.Module):
    """Upsampling to a given size by ``nearest`` or ``bilinear`` interpolation (``align_corners=False``).

    With ``gather=True`` an exact doubling is computed from shifted copies instead of
    ``F.interpolate``: along each axis, nearest is ``y[2i] = y[2i+1] = x[i]`` and bilinear is
    ``y[2i] = 0.75 x[i] + 0.25 x[i-1]``, ``y[2i+1] = 0.75 x[i] + 0.25 x[i+1]`` with the border
    pixel repeated: the same values up to rounding. Why: inductor compiles the gradient of
    ``F.interpolate`` to a scatter-add (``index_put``, atomic adds on a GPU), and the gradient of
    shifts and sums to a gather that fuses with its neighbours. Eager, the shifts are more kernels.
    Other sizes always go through ``F.interpolate``.
    """

    def __init__(self, mode: str, gather: bool = False):
        super().__init__()
        self.mode = check_choice("upsample mode", mode, UPSAMPLERS)
        self.gather = gather

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        size = tuple(size)
        if self.gather and size == (2 * x.shape[-2], 2 * x.shape[-1]):
            return self._double(self._double(x, -1), -2)
        corners = {"align_corners": False} if self.mode == "bilinear" else {}
        return F.interpolate(x, size=size, mode=self.mode, **corners)

    def _double(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """``x`` with its size along ``dim`` (negative) doubled, interleaving the even and odd outputs."""
        if self.mode == "nearest":
            even = odd = x
        else:
            n = x.shape[dim]
            before = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)
            after = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)
            even, odd = torch.lerp(x, before, 0.25), torch.lerp(x, after, 0.25)
        return torch.stack([even, odd], dim).flatten(dim - 1, dim)


def activation(name: str) -> nn.Module:
    check_choice("activation", name, ACTIVATIONS)
    return {
        "LeakyReLU": lambda: nn.LeakyReLU(0.2, inplace=True),
        "Swish": nn.SiLU,
        "ELU": nn.ELU,
        "ReLU": nn.ReLU,
        "none": nn.Identity,
    }[name]()


def conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    bias: bool = True,
    pad: str = "zero",
    downsample_mode: str = "stride",
    groups: int = 1,
) -> nn.Sequential:
    """A 'same'-padded convolution; ``stride > 1`` downsamples with ``downsample_mode``.

    ``stride`` strides the convolution itself; ``avg``/``max``/``lanczos2`` run a stride-1
    convolution and then pool by ``stride``. ``groups`` splits the channels into independent groups.
    """
    check_choice("padding", pad, PADDINGS)
    check_choice("downsample mode", downsample_mode, DOWNSAMPLERS)
    layers: list[nn.Module] = []
    to_pad = (kernel_size - 1) // 2
    if pad == "reflection" and to_pad > 0:
        layers.append(ReflectionPad(to_pad))
        to_pad = 0
    downsampler: nn.Module | None = None
    if stride != 1 and downsample_mode != "stride":
        downsampler = {
            "avg": lambda: nn.AvgPool2d(stride, stride),
            "max": lambda: nn.MaxPool2d(stride, stride),
            "lanczos2": lambda: LanczosDownsample(stride),
        }[downsample_mode]()
        stride = 1
    layers.append(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=to_pad, bias=bias, groups=groups))
    if downsampler is not None:
        layers.append(downsampler)
    return nn.Sequential(*layers)


def conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, act: str, **conv_kwargs) -> nn.Sequential:
    return nn.Sequential(
        conv(in_channels, out_channels, kernel_size, **conv_kwargs),
        nn.BatchNorm2d(out_channels),
        activation(act),
    )


def cat_channels(tensors: list[torch.Tensor], groups: int = 1) -> torch.Tensor:
    """Concatenate along channels within each of ``groups`` channel groups: ``[a_1 b_1 a_2 b_2 ...]``
    (plain concatenation for one group), so that packed networks keep each copy's channels together."""
    if groups == 1:
        return torch.cat(tensors, dim=1)
    return torch.cat([t.unflatten(1, (groups, -1)) for t in tensors], dim=2).flatten(1, 2)


def per_scale(value, scales: int, name: str) -> list:
    """Broadcast a scalar setting to every scale, or check that a list has one entry per scale."""
    if isinstance(value, (list, tuple)):
        if len(value) != scales:
            raise ValueError(f"{name} has {len(value)} entries but the network has {scales} scales")
        return list(value)
    return [value] * scales

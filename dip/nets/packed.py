"""Several independent generators as one network (``Skip(copies=N)``): moving weights and tensors
between the packed form and ``N`` separate networks.

Packed layout: copy ``k`` owns rows ``[k n, (k + 1) n)`` of every weight, bias and BatchNorm
statistic of ``n`` rows in one network, and channels ``[k c, (k + 1) c)`` of every activation of
``c`` channels in one network. A packed input is the copies' inputs concatenated along channels;
a packed output splits the same way. Because no weight is shared, the gradient of
``sum_k loss_k`` with respect to copy ``k``'s weights is that of ``loss_k`` alone, and an optimizer
that acts element by element (Adam, SGD) updates each copy as it would update a separate network.
"""

from __future__ import annotations

import torch


def pack_state_dicts(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state dict of a packed network from those of its copies (same architecture)."""
    packed = {}
    for name, first in state_dicts[0].items():
        if first.dim() == 0:  # BatchNorm's step counter: the same for every copy trained together
            packed[name] = first.clone()
        else:
            packed[name] = torch.cat([state[name] for state in state_dicts])
    return packed


def unpack_state_dict(state_dict: dict[str, torch.Tensor], copies: int) -> list[dict[str, torch.Tensor]]:
    """The copies' own state dicts from a packed network's."""
    parts = [
        [value] * copies if value.dim() == 0 else value.chunk(copies) for value in state_dict.values()
    ]
    return [{name: part[k].clone() for name, part in zip(state_dict, parts)} for k in range(copies)]


def pack_images(images: torch.Tensor) -> torch.Tensor:
    """``N x C x H x W`` (one image per copy) to the packed ``1 x NC x H x W``."""
    return images.flatten(0, 1)[None]


def unpack_images(packed: torch.Tensor, copies: int) -> torch.Tensor:
    """The packed ``1 x NC x H x W`` to ``N x C x H x W``, one image per copy."""
    return packed.reshape(copies, -1, *packed.shape[-2:])

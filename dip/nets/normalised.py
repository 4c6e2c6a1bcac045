"""Removing what a normalisation in training mode makes redundant in a built generator.

Deep Image Prior keeps its generator in training mode for the whole fit and for its outputs (as the
paper's code does), so every BatchNorm normalises with the statistics of the batch it sees:

- a convolution whose output goes straight into a per-channel normalisation (BatchNorm or
  InstanceNorm) has its bias cancelled by the mean subtraction, ``N(W x + b) = N(W x)``, so the
  bias costs a forward add, a gradient reduction and an optimizer update per step for nothing
  (beyond rounding, the fit computes the same function with or without it);
- BatchNorm's running mean, running variance and step counter are updated every step and never read.
"""

from __future__ import annotations

from torch import nn

CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)
PER_CHANNEL_NORMS = (nn.BatchNorm2d, nn.InstanceNorm2d)


def _last_layer(module: nn.Module) -> nn.Module:
    while isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    return module


def drop_cancelled_biases(generator: nn.Module) -> int:
    """Remove (in place) the bias of every convolution whose output feeds a per-channel normalisation
    directly, in the same ``nn.Sequential``; return how many were removed. Only data flow that a
    ``Sequential`` makes explicit counts, so a convolution followed by anything else (pooling, an
    activation, another branch) keeps its bias."""
    dropped = 0
    for sequence in generator.modules():
        if not isinstance(sequence, nn.Sequential):
            continue
        for before, after in zip(sequence, list(sequence)[1:]):
            layer = _last_layer(before)
            if isinstance(after, PER_CHANNEL_NORMS) and isinstance(layer, CONVOLUTIONS) and layer.bias is not None:
                layer.register_parameter("bias", None)
                dropped += 1
    return dropped


def drop_running_statistics(generator: nn.Module) -> int:
    """Make every BatchNorm of ``generator`` normalise with batch statistics only (in training and in
    evaluation mode), without keeping running ones; return how many BatchNorms changed."""
    changed = 0
    for norm in generator.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and norm.track_running_stats:
            norm.track_running_stats = False
            norm.running_mean = norm.running_var = norm.num_batches_tracked = None
            changed += 1
    return changed

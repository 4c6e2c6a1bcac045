"""Natural pre-image: ``A(x) = Phi(x)``, the AlexNet features of ``x`` at one layer."""

from __future__ import annotations

import torch

from dip.errors import check_choice
from dip.nets.alexnet import MIN_SIZE, check_layer, load_alexnet
from dip.physics.base import Degradation

# Input normalisations: torchvision's (RGB in [0, 1], per-channel mean and std), which its weight file
# was trained with, and Caffe's (BGR in [0, 255] minus the ImageNet mean), for Caffe-converted weights.
NORMALIZATIONS = {
    "torchvision": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225], False),
    "caffe": ([123.68 / 255, 116.779 / 255, 103.939 / 255], [1 / 255] * 3, True),
}


class FeatureInversion(Degradation):
    """``Phi(x)``: AlexNet truncated at ``layer`` (conv1 ... conv5, fc6, fc7, fc8) applied to the
    normalised image. The observation is ``Phi(x0)``, a feature tensor rather than an image.

    Data term ``|Phi(x) - Phi(x0)|^2 / |Phi(x0)|^2``: normalised by the target's energy, so that one
    regulariser weight (the TV prior's) suits layers whose features differ in scale by orders of
    magnitude; the minimiser is the paper's. ``weights``: a torchvision-format file, None for the
    torch hub cache, ``random`` for tests. The network is frozen and always in eval mode (no dropout).
    """

    observation_is_image = False

    def __init__(self, layer: str = "conv5", weights: str | None = None, normalization: str = "torchvision"):
        super().__init__()
        check_layer(layer)  # before the weights are looked for: a mistyped layer is the error to see
        check_choice("normalization", normalization, NORMALIZATIONS)
        self.layer = layer
        mean, std, self.bgr = NORMALIZATIONS[normalization]
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.extractor = load_alexnet(weights).truncated(layer).requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.extractor.eval()  # Lightning puts the whole module in training mode: keep dropout off
        return self

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        if self.bgr:
            x = x.flip(1)
        return self.extractor(x)

    def data_term(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().data_term(x, y) / y.square().mean().clamp_min(1e-12)

    def baseline(self, y: torch.Tensor) -> None:
        """Features have no naive image estimate."""
        return None

    def check_fits(self, height: int, width: int) -> None:
        if min(height, width) < MIN_SIZE[self.layer]:
            raise ValueError(
                f"a {width}x{height} image is too small for AlexNet's {self.layer} "
                f"(needs at least {MIN_SIZE[self.layer]} pixels per side)"
            )

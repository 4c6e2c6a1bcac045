"""AlexNet (Krizhevsky et al. 2012) in torchvision's layout, for natural pre-images (``Phi`` in the paper).

The module names match torchvision's ``alexnet`` so that its ImageNet weight file
(``alexnet-owt-7be5be79.pth``, "one weird trick" variant) loads with ``load_state_dict``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dip.errors import DipError, check_choice, load_fault

WEIGHTS_FILE = "alexnet-owt-7be5be79.pth"
WEIGHTS_URL = f"https://download.pytorch.org/models/{WEIGHTS_FILE}"

# Where each layer's output is, as (module, number of its leading children to run). Convolutional
# and fc6 / fc7 features are taken after their ReLU; fc8 is the class scores before the softmax.
LAYERS = {
    "conv1": ("features", 2),
    "conv2": ("features", 5),
    "conv3": ("features", 8),
    "conv4": ("features", 10),
    "conv5": ("features", 12),
    "fc6": ("classifier", 3),
    "fc7": ("classifier", 6),
    "fc8": ("classifier", 7),
}
# The smallest input side each layer accepts: every 3x3 max-pool on the way needs at least 3 pixels.
MIN_SIZE = {"conv1": 7, "conv2": 15, "conv3": 31, "conv4": 31, "conv5": 31, "fc6": 63, "fc7": 63, "fc8": 63}


class AlexNet(nn.Module):
    """Five convolutions (64, 192, 384, 256, 256 channels) with three max-pools, an adaptive average
    pool to 6x6, and three fully connected layers (4096, 4096, ``num_classes``). Expects
    normalised RGB (see :class:`dip.physics.FeatureInversion`); any input of at least 63 pixels a side.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def truncated(self, layer: str) -> nn.Sequential:
        """The network up to ``layer``'s output (sharing this network's modules)."""
        check_layer(layer)
        part, children = LAYERS[layer]
        if part == "features":
            return nn.Sequential(*self.features[:children])
        return nn.Sequential(self.features, self.avgpool, nn.Flatten(1), *self.classifier[:children])


def check_layer(layer: str) -> None:
    check_choice("AlexNet layer", layer, LAYERS)


def default_weights_path() -> Path:
    """Where ``torchvision.models.alexnet(weights=...)`` caches the file: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def load_alexnet(weights: str | Path | None = None) -> AlexNet:
    """AlexNet with ImageNet weights from ``weights`` (a torchvision-format state dict), from the
    torch hub cache when None, or randomly initialised for ``"random"``: the same weights every time,
    drawn without touching torch's global random state (so building a problem never depends on it)."""
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return AlexNet()
    net = AlexNet()
    path = Path(weights).expanduser() if weights is not None else default_weights_path()
    if not path.is_file():
        raise DipError(
            f"AlexNet ImageNet weights not found at {path}: download {WEIGHTS_URL} to "
            + (f"{default_weights_path()} (or pass task.physics.weights=PATH)" if weights is None else "that path")
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt or empty file, not one of torch's: say which file
        raise DipError(f"cannot load AlexNet weights from {path}: {load_fault(error)}") from None
    if problem := _not_alexnet(net, state):
        raise DipError(f"{path} holds no AlexNet weights (torchvision's alexnet state dict): {problem}")
    net.load_state_dict(state)
    return net


def _not_alexnet(net: nn.Module, state) -> str | None:
    """What stops ``state`` loading into ``net`` (another network's weights, not a state dict), else None."""
    if not isinstance(state, dict):
        return f"a {type(state).__name__}, not a dict of tensors"
    wanted = net.state_dict()
    if missing := [key for key in wanted if key not in state]:
        return f"{len(missing)} of its {len(wanted)} tensors missing, {missing[0]} first"
    if extra := [key for key in state if key not in wanted]:
        return f"{len(extra)} tensor(s) that it lacks, {extra[0]} first"
    for key, tensor in wanted.items():
        if (shape := getattr(state[key], "shape", None)) != tensor.shape:
            found = tuple(shape) if shape is not None else f"of type {type(state[key]).__name__}"
            return f"{key} is {found}, not {tuple(tensor.shape)}"
    return None

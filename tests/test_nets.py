"""Generators: output shapes on odd sizes, every knob of skip, parameter counts."""

import pytest
import torch

from dip.inputs import MeshgridCode, NoiseCode, padded_size
from dip.module import DeepImagePrior
from dip.nets import ResNet, Skip, UNet
from dip.physics import GaussianNoise


def test_default_skip_matches_the_paper_size():
    params = sum(p.numel() for p in Skip(32, 3).parameters())
    assert 2.1e6 < params < 2.3e6  # "about 2.2 M parameters"


@pytest.mark.parametrize(
    "knobs",
    [
        {"downsample_mode": "avg", "upsample_mode": "nearest", "pad": "zero"},
        {"downsample_mode": "max", "act": "Swish", "need1x1_up": False},
        {"downsample_mode": "lanczos2", "act": "ELU", "kernel_down": 5, "kernel_up": [3, 5, 3]},
        {"channels_skip": [0, 4, 8], "need_sigmoid": False, "need_bias": False},
    ],
)
def test_skip_knobs(knobs):
    net = Skip(4, 3, **{"channels_down": [8, 16, 16], "channels_up": [8, 16, 16], "channels_skip": 4, **knobs})
    out = net(torch.rand(2, 4, 32, 24))
    assert out.shape == (2, 3, 32, 24)
    if knobs.get("need_sigmoid", True):
        assert out.min() >= 0 and out.max() <= 1


def test_skip_rejects_impossible_options():
    with pytest.raises(ValueError, match="upsample mode 'cubic'"):
        Skip(2, 3, upsample_mode="cubic")
    with pytest.raises(ValueError, match="channels_skip has 2 entries but the network has 5 scales"):
        Skip(2, 3, channels_skip=[4, 4])
    with pytest.raises(ValueError, match="activation"):
        Skip(2, 3, act="Tanhish")


def test_padded_size():
    assert padded_size(61, 47, 32) == (64, 64)
    assert padded_size(64, 64, 64) == (64, 128)  # one pixel at the coarsest scale is not enough for BatchNorm
    assert padded_size(5, 3, 1) == (5, 3)


def make_generators(in_channels, out_channels):
    return {
        "skip": Skip(in_channels, out_channels, channels_down=[8] * 5, channels_up=[8] * 5, channels_skip=2),
        "skip_depth6": Skip(in_channels, out_channels, channels_down=[4] * 6, channels_up=[4] * 6,
                            channels_skip=0, kernel_down=5, upsample_mode="nearest"),
        "unet": UNet(in_channels, out_channels, channels=[4, 8, 8, 8]),
        "resnet": ResNet(in_channels, out_channels, blocks=2, channels=8),
    }


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["skip", "skip_depth6", "unet", "resnet"])
def test_module_restores_odd_sizes_in_grey_and_colour(name, channels):
    code = NoiseCode(channels=3)
    generator = make_generators(code.channels, channels)[name]
    y = torch.rand(1, channels, 61, 47)
    module = DeepImagePrior(generator, GaussianNoise(), y, code, torch.optim.Adam, output_size=(61, 47))
    assert module.z.shape[-2:] == padded_size(61, 47, getattr(generator, "size_multiple", 1))
    assert module().shape == (1, channels, 61, 47)


def test_meshgrid_code_spans_the_unit_square():
    z = MeshgridCode().make(5, 9)
    assert z.shape == (1, 2, 5, 9)
    assert z[0, 0, 0, 0] == 0 and z[0, 0, 0, -1] == 1 and z[0, 1, -1, 0] == 1

"""Generators: output shapes on odd sizes, every knob of skip, parameter counts, and what their
BatchNorms make redundant."""

import pytest
import torch
import torch.nn.functional as F

from dip.inputs import MeshgridCode, NoiseCode, padded_size
from dip.module import DeepImagePrior
from dip.nets import ResNet, Skip, UNet
from dip.nets.layers import Upsample
from dip.nets.normalised import drop_cancelled_biases, drop_running_statistics
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
    with pytest.raises(ValueError, match=r"channels_down lists the channels of each scale, .* not 16$"):
        Skip(2, 3, channels_down=16)  # len() of an int, before
    with pytest.raises(ValueError, match=r"at least one channel down and up .* channels_up=\[8, 0\]"):
        Skip(2, 3, channels_down=[8, 8], channels_up=[8, 0], channels_skip=4)  # a failed step, before
    with pytest.raises(ValueError, match="channels must be >= 1, got 0"):
        NoiseCode(channels=0)
    assert Skip(2, 3, channels_down=[8, 8], channels_up=8, channels_skip=0).size_multiple == 4  # no skips: fine


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 2, 1, 1)])
def test_gathered_doubling_is_interpolation(mode, shape):
    """``Upsample(gather=True)`` has ``F.interpolate``'s values and gradient, also on one-pixel sides."""
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    size = (2 * shape[2], 2 * shape[3])
    expected = F.interpolate(x, size=size, mode=mode, **({"align_corners": False} if mode == "bilinear" else {}))
    gathered = Upsample(mode, gather=True)(x, size)
    weights = torch.randn_like(expected)
    gradients = [torch.autograd.grad((y * weights).sum(), x)[0] for y in (expected, gathered)]
    torch.testing.assert_close(gathered, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(gradients[1], gradients[0], rtol=0, atol=1e-12)


def test_upsample_weights_and_other_sizes():
    row = torch.tensor([[[[0.0, 4.0]]]])
    assert Upsample("bilinear", gather=True)(row, (2, 4)).tolist() == [[[[0.0, 1.0, 3.0, 4.0]] * 2]]
    x = torch.rand(1, 2, 5, 7)  # not a doubling: interpolation as usual
    expected = F.interpolate(x, size=(9, 14), mode="bilinear", align_corners=False)
    assert torch.equal(Upsample("bilinear", gather=True)(x, (9, 14)), expected)


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


@pytest.mark.parametrize(("name", "cancelled", "batchnorms"), [
    ("skip", 25, 30),  # per scale: skip, 2 down, up and 1x1 up convolutions feed BatchNorms; the head does not
    ("skip_depth6", 24, 30),  # no skip branch: 4 per scale
    ("unet", 8, 0),  # the encoder's 4 double convolutions feed instance norms; the decoder has none
    ("resnet", 5, 5),  # 2 per block and the one before the last; the first and last feed none
])
def test_normalisation_makes_biases_and_running_statistics_redundant(name, cancelled, batchnorms):
    torch.manual_seed(0)
    generator = make_generators(3, 3)[name].double()
    z = torch.rand(1, 3, 128, 128, dtype=torch.float64)  # 2 x 2 at skip_depth6's coarsest scale
    before, weights = generator(z), sum(1 for _ in generator.parameters())
    assert drop_cancelled_biases(generator) == cancelled
    assert drop_running_statistics(generator) == batchnorms
    assert sum(1 for _ in generator.parameters()) == weights - cancelled
    assert not any("running" in key or "num_batches" in key for key in generator.state_dict())
    torch.testing.assert_close(generator(z), before, rtol=0, atol=1e-12)
    generator.eval()  # batch statistics now, as in training: there are no others
    torch.testing.assert_close(generator(z), before, rtol=0, atol=1e-12)


def test_a_bias_that_no_norm_cancels_stays():
    # A pooled convolution feeds BatchNorm through the pooling; the head feeds the sigmoid.
    generator = Skip(3, 3, channels_down=[8, 8], channels_up=[8, 8], channels_skip=2, downsample_mode="max")
    assert drop_cancelled_biases(generator) == 8  # of 5 convolutions per scale, the pooled one keeps its bias
    assert generator.head[0][-1].bias is not None
    assert all(level.down[0][0][1].bias is not None for level in (generator.body, generator.body.inner))

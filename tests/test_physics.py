"""Operator math: Lanczos kernel, downsampling shapes, adjoints, masks, noise."""

import numpy as np
import pytest
import torch
from PIL import Image

from dip.physics import (
    BayerMosaic,
    BernoulliMask,
    FileMask,
    GaussianNoise,
    Inpainting,
    LanczosDownsample,
    RegionMask,
    TextMask,
    lanczos2_kernel,
)
from tests.conftest import make_png


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_lanczos_kernel_is_normalised_symmetric_and_4t_wide(factor):
    kernel = lanczos2_kernel(factor)
    assert kernel.shape == (4 * factor, 4 * factor)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(kernel, kernel.flip(0)) and torch.allclose(kernel, kernel.T)
    # Lanczos-2 has negative lobes near the edge of its support
    assert kernel.min() < 0 < kernel.max()


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
@pytest.mark.parametrize("size", [(64, 64), (48, 40), (24, 72)])
def test_downsampling_keeps_constants_and_divides_the_size(factor, size):
    op = LanczosDownsample(factor)
    x = torch.full((1, 3, size[0] - size[0] % factor, size[1] - size[1] % factor), 0.37)
    y = op.A(x)
    assert y.shape == (1, 3, x.shape[2] // factor, x.shape[3] // factor)
    assert torch.allclose(y, torch.full_like(y, 0.37), atol=1e-6)
    assert op.observation_size(61, 47) == (61 // factor, 47 // factor)
    assert op.solution_size(*y.shape[-2:]) == tuple(x.shape[-2:])


def test_downsampling_is_a_low_pass_filter():
    stripes = torch.zeros(1, 1, 32, 32)
    stripes[..., ::2] = 1.0  # highest horizontal frequency aliases to a constant, not to stripes
    y = LanczosDownsample(4).A(stripes)[..., 2:-2]  # the borders see replicated stripes
    assert y.std() < 0.01 and y.mean().item() == pytest.approx(0.5, abs=0.05)


def prepared(op, height: int, width: int):
    op.prepare(height, width)
    return op


@pytest.mark.parametrize(
    "op, shape",
    [
        (LanczosDownsample(4), (1, 3, 32, 24)),
        (LanczosDownsample(3), (1, 1, 27, 18)),
        (GaussianNoise(25), (1, 3, 9, 7)),
        (prepared(BayerMosaic(), 9, 7), (1, 3, 9, 7)),
    ],
)
def test_adjoint_satisfies_the_inner_product_identity(op, shape):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=generator, dtype=torch.float64)
    y = torch.rand(op.A(x).shape, generator=generator, dtype=torch.float64)
    op = op.double()
    lhs = (op.A(x) * y).sum()
    rhs = (x * op.A_adjoint(y, x.shape)).sum()
    assert lhs.item() == pytest.approx(rhs.item(), rel=1e-10)


@pytest.mark.parametrize("pattern", ["RGGB", "GBRG"])
def test_a_bayer_mosaic_samples_one_channel_per_pixel_and_bilinear_fills_the_rest(pattern):
    op = BayerMosaic(pattern)
    op.prepare(7, 9)  # odd sizes: the last tile is cut
    assert op.masks.shape == (1, 3, 7, 9) and torch.equal(op.masks.sum(1), torch.ones(1, 7, 9))
    x = torch.rand(1, 3, 7, 9)
    y = op.A(x)
    for position, channel in enumerate(pattern):  # the tile's pixel samples its channel, here and two pixels on
        row, column = divmod(position, 2)
        assert y[0, 0, row, column] == x[0, "RGB".index(channel), row, column]
        assert y[0, 0, row + 2, column + 4] == x[0, "RGB".index(channel), row + 2, column + 4]
    ramp = torch.linspace(0, 1, 9).expand(1, 3, 7, 9)  # bilinear is exact on a linear image, away from borders
    estimate = op.baseline(op.A(ramp))
    assert estimate.shape == (1, 3, 7, 9)
    assert torch.allclose(estimate[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1], atol=1e-6)
    assert torch.allclose(op.baseline(y) * op.masks, x * op.masks)  # samples are kept
    assert op.solution_channels(1) == 3
    with pytest.raises(ValueError, match="BayerMosaic observes one channel, not 3"):
        op.solution_channels(3)
    with pytest.raises(ValueError, match="R, G and B each at least once"):
        BayerMosaic("RGGG")
    assert op.expected_residual(x) is None  # noise-free: no noise level for the discrepancy principle


def test_a_noisy_mosaic_has_the_noise_and_the_noise_energy_of_gaussian_noise():
    op = BayerMosaic(sigma=25)
    op.prepare(64, 64)
    x = torch.full((1, 3, 64, 64), 0.5)
    noise = op.observe(x, torch.Generator().manual_seed(0)) - op.A(x)
    assert noise.std().item() == pytest.approx(25 / 255, rel=0.05)
    assert torch.equal(op.expected_residual(x), GaussianNoise(25).expected_residual(op.A(x)))


def test_inpainting_only_sees_known_pixels_and_is_self_adjoint():
    op = Inpainting(BernoulliMask(0.5))
    op.prepare(16, 16, torch.Generator().manual_seed(0))
    x = torch.rand(1, 3, 16, 16)
    y = op.observe(x)
    assert torch.equal(y, x * op.mask)
    changed = x + (1 - op.mask) * 5.0  # change only the missing pixels
    assert op.data_term(changed, y).item() == 0.0
    assert torch.equal(op.A_adjoint(y, x.shape), y)
    # a photo given with its holes (data.observation=): what they hold is not fitted either
    photo = y + (1 - op.mask) * torch.rand(1, 3, 16, 16)
    assert op.data_term(changed, photo).item() == 0.0
    assert op.data_term(torch.zeros_like(x), photo) == pytest.approx(op.data_term(torch.zeros_like(x), y))


def test_bernoulli_mask_fraction_and_seed():
    first = BernoulliMask(0.5)(64, 64, torch.Generator().manual_seed(1))
    again = BernoulliMask(0.5)(64, 64, torch.Generator().manual_seed(1))
    assert torch.equal(first, again)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    assert first.mean().item() == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError):
        BernoulliMask(1.5)


def test_region_mask_hole_size():
    mask = RegionMask(fraction=0.25)(40, 64)
    assert mask.shape == (1, 1, 40, 64)
    assert (mask == 0).sum().item() == 10 * 16
    assert mask[..., 20, 32].item() == 0 and mask[..., 0, 0].item() == 1


def test_text_mask_hides_some_pixels_at_any_size():
    for height, width in [(64, 64), (47, 61), (512, 384)]:
        mask = TextMask()(height, width)
        assert mask.shape == (1, 1, height, width)
        assert 0.01 < 1 - mask.mean().item() < 0.5


@pytest.mark.parametrize("settings, message", [({"font_size": -1}, r"font_size .* in \(0, 1\], got -1"),
                                               ({"line_spacing": 0}, "line_spacing .* above 0, got 0")])
def test_a_text_mask_of_no_size_is_refused(settings, message):
    """It was drawn at the least size, 6 pixels, as if the setting were right."""
    with pytest.raises(ValueError, match=message):
        TextMask(**settings)


def test_file_mask_white_is_known_and_size_must_match(tmp_path):
    path = make_png(tmp_path / "mask.png", 20, 10, mode="L")
    mask = FileMask(path)(10, 20)
    assert mask.shape == (1, 1, 10, 20) and set(mask.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="mask.png is 20x10 but the image is 30x10: give one of the image's size "
                                         r"\(data.mask=FILE\), or data.mask=null for the mask group's$"):
        FileMask(path)(10, 30)
    # the size of the image before data.size cropped it: cropped the same way, centred
    assert torch.equal(FileMask(path, image_size=(10, 20))(6, 8), mask[..., 2:8, 6:14])
    with pytest.raises(ValueError, match="mask.png is 20x10 but the image is 8x6 \\(24x12 before data.size cropped it"):
        FileMask(path, image_size=(12, 24))(6, 8)  # larger than the crop, but not the image's size


def test_a_transparent_pixel_of_a_mask_is_missing_whatever_its_colour(tmp_path):
    """Holes erased to transparency in an image editor: white underneath, they were read as known."""
    pixels = np.full((4, 6, 4), 255, dtype=np.uint8)
    pixels[1:3, 2:4, 3] = 0  # transparent white
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "erased.png")
    expected = torch.ones(1, 1, 4, 6)
    expected[..., 1:3, 2:4] = 0
    assert torch.equal(FileMask(tmp_path / "erased.png")(4, 6), expected)


def test_a_mask_with_no_known_pixel_is_refused_whatever_made_it(tmp_path):
    path = tmp_path / "black.png"
    Image.new("L", (8, 8), 0).save(path)
    with pytest.raises(ValueError, match="black.png marks no pixel known"):
        Inpainting(TextMask(), mask_file=str(path)).prepare(8, 8)
    with pytest.raises(ValueError, match=r"the region mask \(mask.fraction=0.99\) marks no pixel known .* 17x33"):
        Inpainting(RegionMask(0.99)).prepare(33, 17)  # each side rounds to the whole image
    with pytest.raises(ValueError, match=r"the Bernoulli mask \(mask.fraction=0.5\) marks no pixel known .* 1x1"):
        Inpainting(BernoulliMask(0.5)).prepare(1, 1, torch.Generator().manual_seed(0))  # its one pixel missing


def test_a_mask_with_every_pixel_known_is_said(tmp_path, caplog):
    """Holes painted grey (>= 128) count as known: nothing was inpainted, and nothing said so."""
    path = tmp_path / "grey_holes.png"
    pixels = np.full((8, 8), 255, np.uint8)
    pixels[2:5, 2:5] = 128
    Image.fromarray(pixels).save(path)
    with caplog.at_level("WARNING", logger="dip"):
        Inpainting(TextMask(), mask_file=str(path)).prepare(8, 8)
    assert "grey_holes.png marks every pixel known (white, >= 128) on a 8x8 image: nothing is inpainted" in caplog.text
    pixels[2:5, 2:5] = 127
    Image.fromarray(pixels).save(path)
    caplog.clear()
    Inpainting(TextMask(), mask_file=str(path)).prepare(8, 8)
    assert "every pixel known" not in caplog.text


def test_gaussian_noise_has_the_right_std_and_is_clipped():
    x = torch.full((1, 3, 128, 128), 0.5)
    noisy = GaussianNoise(25, clip=False).observe(x, torch.Generator().manual_seed(0))
    assert (noisy - x).std().item() == pytest.approx(25 / 255, rel=0.03)
    clipped = GaussianNoise(100, clip=True).observe(x, torch.Generator().manual_seed(0))
    assert clipped.min() >= 0 and clipped.max() <= 1

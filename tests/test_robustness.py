"""Any input image works or fails with one clear line; divergence and memory limits stop cleanly."""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from PIL import Image

import dip.images
import dip.memory
from dip.config import compose_config
from dip.errors import DipError
from dip.images import read_image, save_image
from dip.memory import (
    LiveTensors,
    check_codes_fit,
    check_memory_fits,
    estimate,
    run_device,
    simulated_step,
    step_tensors,
)
from dip.module import DeepImagePrior
from dip.outputs import OUTPUT_FILES, describe
from dip.physics import Degradation
from dip.pipeline import check_shapes, prepare, run
from tests.conftest import make_png, run_cli

FAST = ["logger=none", "arch=skip_depth2", "checkpoint.every_n_steps=0", "trainer.enable_progress_bar=false"]


def rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def restore_file(path: Path, out: Path, *overrides: str) -> dict:
    cfg = compose_config([f"data.path={path}", "trainer.max_steps=2", *FAST, *overrides], output_dir=out)
    return run(cfg, out).metrics


# --- every kind of image file ------------------------------------------------------------------

def test_grey_rgb_palette_bilevel_jpeg_tiff(tmp_path):
    pixels = rgb(9, 13)
    Image.fromarray(pixels[..., 0], "L").save(tmp_path / "grey.png")
    Image.fromarray(pixels).save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "rgb.tif")
    Image.fromarray(pixels).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(pixels[..., 0], "L").convert("P").save(tmp_path / "grey_palette.png")
    Image.fromarray(pixels[..., 0] > 127).save(tmp_path / "bilevel.png")
    expected = {"grey.png": 1, "rgb.jpg": 3, "rgb.tif": 3, "palette.png": 3, "grey_palette.png": 1, "bilevel.png": 1}
    for name, channels in expected.items():
        loaded = read_image(tmp_path / name)
        assert loaded.pixels.shape == (channels, 9, 13), name
        assert loaded.alpha is None and loaded.bits == 8
        assert 0 <= float(loaded.pixels.min()) and float(loaded.pixels.max()) <= 1


def test_alpha_is_set_aside_for_rgba_la_and_transparent_palette(tmp_path):
    pixels, alpha = rgb(6, 5), np.linspace(0, 255, 30, dtype=np.uint8).reshape(6, 5)
    Image.fromarray(np.dstack([pixels, alpha]), "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.dstack([pixels[..., 0], alpha]), "LA").save(tmp_path / "la.png")
    palette = Image.fromarray(pixels).convert("P")
    palette.save(tmp_path / "transparent.png", transparency=palette.getpixel((0, 0)))
    rgba = read_image(tmp_path / "rgba.png")
    assert rgba.pixels.shape == (3, 6, 5) and rgba.source_mode == "RGBA"
    assert torch.allclose(rgba.alpha[0], torch.from_numpy(alpha / 255.0).float())
    assert torch.allclose(rgba.pixels, torch.from_numpy(pixels.transpose(2, 0, 1) / 255.0).float())
    la = read_image(tmp_path / "la.png")
    assert la.pixels.shape == (1, 6, 5) and la.alpha.shape == (1, 6, 5)
    transparent = read_image(tmp_path / "transparent.png")
    assert transparent.alpha is not None and float(transparent.alpha.min()) == 0.0


def test_a_float_image_is_read_in_0_1_and_refused_outside_it(tmp_path):
    Image.fromarray(np.array([[0.0, 0.25, 1.0]], dtype=np.float32), mode="F").save(tmp_path / "unit.tiff")
    assert torch.allclose(read_image(tmp_path / "unit.tiff").pixels[0, 0], torch.tensor([0.0, 0.25, 1.0]))
    Image.fromarray(np.array([[0.0, 300.0, 65535.0]], dtype=np.float32), mode="F").save(tmp_path / "raw.tiff")
    with pytest.raises(DipError, match=r"raw.tiff: its floating-point samples run from 0 to 65535, not within"):
        read_image(tmp_path / "raw.tiff")  # was clipped: an image almost all white


def test_sixteen_bit_grey_keeps_its_precision(tmp_path):
    values = np.array([[0, 1, 257, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    loaded = read_image(tmp_path / "deep.png")
    assert loaded.bits == 16 and loaded.pixels.shape == (1, 1, 4)
    assert torch.allclose(loaded.pixels[0, 0], torch.tensor([0, 1, 257, 65535]) / 65535.0)
    save_image(loaded.pixels, tmp_path / "copy.png", bits=16)
    with Image.open(tmp_path / "copy.png") as copy:
        assert copy.mode.startswith("I") and np.array_equal(np.asarray(copy), values)


def test_sixteen_bit_grey_with_a_transparent_level_keeps_its_precision_and_its_alpha(tmp_path):
    values = np.array([[0, 20000, 40000, 60000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "keyed.png", transparency=20000)
    loaded = read_image(tmp_path / "keyed.png")
    assert loaded.bits == 16 and torch.allclose(loaded.pixels[0, 0], torch.tensor([0, 20000, 40000, 60000]) / 65535.0)
    assert loaded.alpha.flatten().tolist() == [1.0, 0.0, 1.0, 1.0]  # was read as 8 bits: {0, 1} and white


@pytest.mark.parametrize("values, found", [(np.array([[0, 10_000_000]], dtype=np.int32), "0 to 1e+07"),
                                           (np.array([[-1000, 996]], dtype=np.int16), "-1000 to 996")])
def test_integer_samples_beyond_16_bits_are_refused(tmp_path, values, found):
    tifffile.imwrite(tmp_path / "wide.tif", values)
    with pytest.raises(DipError, match=re.escape(f"wide.tif: its integer samples run from {found}, beyond 16 bits")):
        read_image(tmp_path / "wide.tif")


def test_a_pipe_given_as_an_image_is_named_as_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(DipError, match="image file .*pipe.png is not a regular file"):
        read_image(tmp_path / "pipe.png")


def test_a_file_of_several_frames_is_read_at_its_first_and_says_so(tmp_path, caplog):
    frames = [Image.fromarray(np.full((4, 6), level, np.uint8)) for level in (10, 200)]
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    with caplog.at_level("INFO", logger="dip"):
        loaded = read_image(tmp_path / "pages.tif")
    assert torch.allclose(loaded.pixels, torch.full((1, 4, 6), 10 / 255))
    assert "pages.tif holds 2 frames: the first is read" in caplog.text


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    Image.fromarray(rgb(4, 10)).save(tmp_path / "sideways.jpg", exif=exif)
    assert read_image(tmp_path / "sideways.jpg").pixels.shape == (3, 10, 4)


def test_rgba_input_gives_rgba_outputs_with_the_same_alpha(tmp_path):
    alpha = np.full((12, 10), 255, dtype=np.uint8)
    alpha[:, :5] = 40
    Image.fromarray(np.dstack([rgb(12, 10), alpha]), "RGBA").save(tmp_path / "in.png")
    metrics = restore_file(tmp_path / "in.png", tmp_path / "out")
    for name in ("restored.png", "restored_ema.png", "observation.png"):
        with Image.open(tmp_path / "out" / name) as output:
            assert output.mode == "RGBA" and output.size == (10, 12)
            assert np.array_equal(np.asarray(output)[..., 3], alpha)
    assert "alpha" in metrics and "RGBA" in metrics["alpha"]


def test_sixteen_bit_grey_input_gives_sixteen_bit_grey_output(tmp_path):
    Image.fromarray((np.random.default_rng(1).random((11, 9)) * 65535).astype(np.uint16)).save(tmp_path / "in.png")
    restore_file(tmp_path / "in.png", tmp_path / "out")
    with Image.open(tmp_path / "out" / "restored.png") as output:
        assert output.mode.startswith("I") and output.size == (9, 11)



def png_with_filters(samples: np.ndarray, transparent: tuple[int, int, int] | None = None) -> bytes:
    """A 16-bit grey + alpha, RGB or RGBA PNG of ``samples`` (H x W x C uint16) written here,
    independently of dip's writer, with its rows cycling through the filter types none, Sub, Up,
    Average and Paeth; an RGB one with ``transparent`` as its transparent colour (tRNS)."""
    height, width, channels = samples.shape
    raw = samples.astype(">u2").reshape(height, -1).view(np.uint8).astype(np.int32)
    step = 2 * channels  # bytes per pixel
    left = np.pad(raw, ((0, 0), (step, 0)))[:, :-step]
    up = np.pad(raw, ((1, 0), (0, 0)))[:-1]
    up_left = np.pad(up, ((0, 0), (step, 0)))[:, :-step]
    estimate = left + up - up_left
    distances = [np.abs(estimate - neighbour) for neighbour in (left, up, up_left)]
    paeth = np.where((distances[0] <= distances[1]) & (distances[0] <= distances[2]), left,
                     np.where(distances[1] <= distances[2], up, up_left))
    predictions = [np.zeros_like(raw), left, up, (left + up) // 2, paeth]
    rows = b"".join(bytes([row % 5]) + ((raw[row] - predictions[row % 5][row]) % 256).astype(np.uint8).tobytes()
                    for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)
    key = chunk(b"tRNS", struct.pack(">HHH", *transparent)) if transparent else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + key + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [3, 4])
def test_sixteen_bit_colour_png_keeps_its_precision(tmp_path, channels):
    samples = np.random.default_rng(channels).integers(0, 65536, (7, 6, channels), dtype=np.uint16)
    samples[0, :2, :3] = [[0, 1, 255], [256, 65534, 65535]]
    (tmp_path / "deep.png").write_bytes(png_with_filters(samples))
    loaded = read_image(tmp_path / "deep.png")
    assert loaded.bits == 16 and loaded.pixels.shape == (3, 7, 6)
    expected = torch.from_numpy(samples.transpose(2, 0, 1) / 65535.0).float()
    assert torch.equal(loaded.pixels, expected[:3])
    assert (loaded.alpha is None) == (channels == 3)
    if channels == 4:
        assert torch.equal(loaded.alpha, expected[3:])
    save_image(loaded.pixels, tmp_path / "copy.png", loaded.alpha, bits=16)
    with Image.open(tmp_path / "copy.png") as copy:  # a valid PNG, which Pillow reads as the high bytes
        assert np.array_equal(np.asarray(copy), (samples >> 8).astype(np.uint8))
    again = read_image(tmp_path / "copy.png")
    assert torch.equal(again.pixels, loaded.pixels) and again.bits == 16


def test_sixteen_bit_colour_png_with_a_transparent_colour_keys_it_at_16_bits(tmp_path):
    samples = np.random.default_rng(3).integers(0, 65536, (5, 4, 3), dtype=np.uint16)
    samples[1, 2] = [1000, 2000, 3000]
    samples[3, 0] = [1001, 2000, 3000]  # the same high bytes: opaque
    (tmp_path / "keyed.png").write_bytes(png_with_filters(samples, transparent=(1000, 2000, 3000)))
    loaded = read_image(tmp_path / "keyed.png")
    expected = torch.from_numpy(samples.transpose(2, 0, 1) / 65535.0).float()
    assert loaded.bits == 16 and torch.equal(loaded.pixels, expected)
    assert loaded.alpha.shape == (1, 5, 4) and loaded.alpha.sum() == 19 and loaded.alpha[0, 1, 2] == 0


def test_sixteen_bit_grey_and_alpha_png_keeps_its_precision(tmp_path):
    samples = np.random.default_rng(5).integers(0, 65536, (7, 6, 2), dtype=np.uint16)
    samples[0, :3] = [[0, 65535], [1, 255], [256, 65534]]
    (tmp_path / "deep.png").write_bytes(png_with_filters(samples))
    loaded = read_image(tmp_path / "deep.png")
    expected = torch.from_numpy(samples.transpose(2, 0, 1) / 65535.0).float()
    assert loaded.bits == 16 and loaded.source_mode == "LA;16"
    assert torch.equal(loaded.pixels, expected[:1]) and torch.equal(loaded.alpha, expected[1:])
    assert torch.equal(read_image(tmp_path / "deep.png", mode="RGB").pixels, expected[:1].expand(3, -1, -1))
    save_image(loaded.pixels, tmp_path / "copy.png", loaded.alpha, bits=16)
    again = read_image(tmp_path / "copy.png")
    assert torch.equal(again.pixels, loaded.pixels) and torch.equal(again.alpha, loaded.alpha)


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_sixteen_bit_colour_tiff_keeps_its_precision(tmp_path, compression):
    samples = np.random.default_rng(2).integers(0, 65536, (5, 9, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", samples, photometric="rgb", compression=compression)
    loaded = read_image(tmp_path / "deep.tif")
    assert loaded.bits == 16
    assert torch.equal(loaded.pixels, torch.from_numpy(samples.transpose(2, 0, 1) / 65535.0).float())
    grey = read_image(tmp_path / "deep.tif", mode="L")
    luma = samples / 65535.0 @ np.array([0.299, 0.587, 0.114])
    assert grey.pixels.shape == (1, 5, 9) and torch.allclose(grey.pixels[0], torch.from_numpy(luma).float())


def test_sixteen_bit_colour_input_gives_sixteen_bit_colour_output(tmp_path):
    samples = np.random.default_rng(3).integers(0, 65536, (11, 9, 3), dtype=np.uint16)
    (tmp_path / "in.png").write_bytes(png_with_filters(samples))
    restore_file(tmp_path / "in.png", tmp_path / "out")
    for name in ("restored.png", "observation.png"):
        written = read_image(tmp_path / "out" / name)
        assert written.bits == 16 and written.source_mode == "RGB;16" and written.pixels.shape == (3, 11, 9)

# --- any size ----------------------------------------------------------------------------------

@pytest.mark.parametrize("task,arch,height,width", [
    ("denoising", "skip", 1, 1), ("denoising", "skip", 2, 3), ("denoising", "skip", 7, 7),
    ("denoising", "unet", 1, 7), ("denoising", "resnet", 1, 1), ("inpainting", "skip", 3, 3),
])
def test_tiny_images_restore_at_their_size(tmp_path, task, arch, height, width):
    Image.fromarray(rgb(height, width)).save(tmp_path / "tiny.png")
    cfg = compose_config([f"task={task}", f"arch={arch}", f"data.path={tmp_path / 'tiny.png'}",
                          "trainer.max_steps=1", "logger=none"])
    result = run(cfg, None)
    assert result.restored.shape == (1, 3, height, width)
    assert all(np.isfinite(v) for v in (result.metrics["psnr"], result.metrics["ssim"]))


def test_too_small_for_super_resolution_is_one_clear_line(tmp_path):
    Image.fromarray(rgb(5, 5)).save(tmp_path / "tiny.png")
    with pytest.raises(DipError, match=r"tiny.png.*too small for x4") as error:
        prepare(compose_config(["task=sr_x4", f"data.path={tmp_path / 'tiny.png'}", "logger=none"]))
    assert "\n" not in str(error.value)
    Image.fromarray(rgb(1, 2)).save(tmp_path / "observed.png")  # said at its restored size alone, before
    with pytest.raises(DipError, match=re.escape(f"{tmp_path / 'observed.png'}: its 2x1 observation restores to "
                                                 "16x8: a 16x8 image is too small for x8")):
        prepare(compose_config(["task=sr_x8", f"data.observation={tmp_path / 'observed.png'}", "logger=none"]))


def test_cli_odd_sized_grey_png_keeps_size_and_mode(tmp_path):
    odd = make_png(tmp_path / "ODD.png", 61, 47, mode="L")
    done = run_cli(f"data.path={odd}", "trainer.max_steps=2", "logger=csv", f"hydra.run.dir={tmp_path / 'OUT'}")
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "OUT" / "restored.png") as restored:
        assert restored.size == (61, 47) and restored.mode == "L"


# --- bad input never gets a traceback ----------------------------------------------------------

@pytest.fixture(scope="module")
def valid_png(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("seed") / "seed.png"
    Image.fromarray(rgb(8, 8)).save(path)
    return path.read_bytes()


def assert_clear_failure(path: Path, what: str = "image", mode: str = "auto") -> None:
    try:
        read_image(path, mode=mode, what=what)
    except DipError as error:
        message = str(error)
        assert "\n" not in message and str(path) in message, message
    # Some byte strings are valid images (a truncated PNG may still decode): no failure is fine too.


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".png", ".jpg", ".tif", ".gif", ".bmp", ".txt", ""]))
def test_fuzz_random_bytes(tmp_path, data, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(data)
    assert_clear_failure(path)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=400), flip=st.integers(min_value=0, max_value=400))
def test_fuzz_truncated_and_corrupted_png(tmp_path, valid_png, cut, flip):
    data = bytearray(valid_png[: max(0, len(valid_png) - cut)])
    if data and flip < len(data):
        data[flip] ^= 0xFF
    path = tmp_path / "broken.png"
    path.write_bytes(bytes(data))
    assert_clear_failure(path)
    assert_clear_failure(path, what="mask", mode="L")


def test_empty_file_directory_and_wrong_extension(tmp_path, valid_png):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "really_png.jpg").write_bytes(valid_png)
    for name in ("empty.png", "folder.png"):
        with pytest.raises(DipError, match=name):
            read_image(tmp_path / name)
    assert read_image(tmp_path / "really_png.jpg").pixels.shape == (3, 8, 8)  # the content decides, not the name


@pytest.mark.parametrize("problem", ["bad image", "bad mask", "mismatched mask"])
def test_bad_input_leaves_no_outputs(tmp_path, problem):
    Image.fromarray(rgb(16, 16)).save(tmp_path / "image.png")
    Image.fromarray(np.full((8, 8), 255, dtype=np.uint8)).save(tmp_path / "small_mask.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    image, mask = {
        "bad image": ("broken.png", None),
        "bad mask": ("image.png", "broken.png"),
        "mismatched mask": ("image.png", "small_mask.png"),
    }[problem]
    out = tmp_path / "out"
    with pytest.raises(DipError, match=(mask or image).replace(".", r"\.")) as error:
        restore_file(tmp_path / image, out, "task=inpainting", *([f"data.mask={tmp_path / mask}"] if mask else []))
    assert "\n" not in str(error.value)
    assert not any((out / name).exists() for name in OUTPUT_FILES)


# --- divergence --------------------------------------------------------------------------------

def test_repeated_divergence_stops_with_the_last_good_weights(tmp_path):
    Image.fromarray(rgb(16, 16)).save(tmp_path / "image.png")
    # A huge step size and a strict rule: every update is rolled back.
    metrics = restore_file(tmp_path / "image.png", tmp_path / "out", "trainer.max_steps=50", "optim.lr=1e4",
                           "backtrack_db=0.5", "max_rollbacks=3", "metrics_every=2")
    assert metrics["stop_reason"].startswith("diverged: 3 rollbacks")
    assert metrics["steps"] < 50 and np.isfinite(metrics["psnr"]) and metrics["rollbacks"] >= 3
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["stop_reason"] == metrics["stop_reason"]


def test_non_finite_loss_is_rolled_back_then_stops(tmp_path, monkeypatch):
    from dip.physics import GaussianNoise

    def poisoned(self, x, y):  # finite on the first two steps, NaN from then on
        loss = (x - y).square().flatten(1).mean(1)
        poisoned.calls += 1
        return loss * float("nan") if poisoned.calls > 2 else loss

    poisoned.calls = 0
    monkeypatch.setattr(GaussianNoise, "data_term", poisoned)
    Image.fromarray(rgb(16, 16)).save(tmp_path / "image.png")
    cfg = compose_config([f"data.path={tmp_path / 'image.png'}", "trainer.max_steps=40", "max_rollbacks=4",
                          "metrics_every=1", *FAST])
    (tmp_path / "out").mkdir()
    result = run(cfg, tmp_path / "out")
    assert result.metrics["stop_reason"].startswith("diverged: 4 rollbacks")
    assert torch.isfinite(result.restored).all() and torch.isfinite(result.restored_ema).all()

    def refuse(constant):
        raise AssertionError(f"metrics.json holds {constant}, which strict JSON readers refuse")

    # the data term is NaN to the end: its PSNR is null, and the summary says so
    written = json.loads((tmp_path / "out" / "metrics.json").read_text(), parse_constant=refuse)
    assert written["psnr_fit"] is None and np.isfinite(written["psnr"])
    assert "not finite" not in describe(result)
    result.metrics["psnr"] = None
    assert "no ground truth: PSNR of the fit to the observation not finite" in describe(result)


def test_kicked_weights_cost_one_rollback_when_the_diverged_gradient_is_dropped(tmp_path):
    """experiments/rollback_kick.py, tiny: the same kick for each rule, each rule's rollbacks counted."""
    Image.fromarray(rgb(32, 32)).save(tmp_path / "image.png")
    figures = tmp_path / "kick.json"
    done = run_cli(f"data.path={tmp_path / 'image.png'}", "arch=skip_depth2", "metrics_every=5", "--kick-step", "20",
                   "--steps", "30", "--kick", "100", "--out", str(figures), script="experiments/rollback_kick.py")
    assert done.returncode == 0, done.stderr[-2000:]
    rules = json.loads(figures.read_text())["rules"]
    assert (rules["drop"]["rollbacks"], rules["drop"]["recovered_after_steps"]) == (1, 1)
    assert rules["keep"]["rollbacks"] >= 1  # the same kick diverged under the authors' rule too
    assert "| drop | 1 | 1 | 30 |" in done.stdout
    assert rules["damp"]["rollbacks"] >= 1 and rules["damp"]["steps"] == 30


# --- memory ------------------------------------------------------------------------------------

def test_live_tensors_count_each_storage_from_its_creation_to_its_release():
    with LiveTensors() as tensors:
        first = torch.ones(1000)  # 4000 bytes
        view = first[:10]  # the same storage: nothing new
        second = first * 2
        del first, view
        third = second + 1  # made after the first was freed: the peak stays at two tensors
    assert (tensors.peak, tensors.live, tensors.largest) == (8000, 8000, 4000)
    del second, third
    assert tensors.live == 0


@pytest.mark.parametrize("overrides", [["arch=skip_depth2"], ["task=inpainting", "arch=skip_depth2"],
                                       ["restarts=2", "arch=skip_depth2"], ["prior=tv"]])
def test_the_simulated_step_holds_what_a_real_step_holds(overrides):
    module = prepare(compose_config([*overrides, "data.size=24", "logger=none"]))[1]
    real = step_tensors(module)  # the step run for real on the CPU
    assert real.peak > real.live > 0
    assert simulated_step(module) == (real.peak - real.live, real.largest)


@pytest.mark.parametrize("devices, device", [(1, "cuda:0"), ("1", "cuda:0"), ([2], "cuda:2"),
                                             (OmegaConf.create({"d": ["3"]}).d, "cuda:3")])
def test_the_memory_check_looks_at_the_gpu_trainer_devices_picks(devices, device):
    assert run_device("gpu", devices) == torch.device(device)
    assert run_device("cpu", devices) == torch.device("cpu")


def test_memory_estimate_grows_with_the_image_and_refuses_what_cannot_fit(tmp_path):
    small = prepare(compose_config(["data.size=32", "logger=none"]))[1]
    large = prepare(compose_config(["data.size=128", "logger=none"]))[1]
    assert estimate(large).activations > 3 * estimate(small).activations
    assert 0.45 < estimate(large, "bf16-mixed").activations / estimate(large).activations < 0.55
    need = estimate(large).total
    with pytest.raises(DipError) as error:
        check_memory_fits(large, torch.device("cpu"), available=int(need * 0.5))
    message = str(error.value)
    assert "128x128" in message and "GiB" in message and "data.size=" in message and "\n" not in message
    assert check_memory_fits(large, torch.device("cpu"), available=need * 2).total == need


def test_a_code_larger_than_the_hosts_memory_is_refused_before_it_is_made(monkeypatch):
    """z is made on the host before the module that check_memory_fits estimates: x4 super-resolution of a large
    photo asked for a 46 GiB code and ended in the allocator's traceback."""
    with pytest.raises(DipError, match=r"^a 40x30 restoration's 2 codes z of 32 channels alone need 0.0 GiB, but "):
        check_codes_fit(32, 30, 40, count=2, available=100_000)  # 2 x 32 x 30 x 40 x 4 bytes = 307,200
    check_codes_fit(32, 30, 40, count=2, available=400_000)
    monkeypatch.setattr(dip.memory, "available_bytes", lambda device: 100_000)
    with pytest.raises(DipError, match="code z of 32 channels alone needs"):
        prepare(compose_config(["data.size=32", "logger=none"]))
    assert prepare(compose_config(["data.size=32", "logger=none", "check_memory=false"]))[1].z.shape[1] == 32


def test_an_image_is_weighed_against_the_memory_not_pillows_pixel_limit(tmp_path, monkeypatch):
    """Pillow refuses images over 179 MP as decompression bombs, and warns over 89 MP: a large scan that
    data.size would crop could not be read. The machine's free memory decides instead."""
    path = make_png(tmp_path / "scan.png", 40, 30)
    palette = tmp_path / "palette.png"  # one index a pixel on disk, three colours once read
    Image.open(path).convert("P").save(palette)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1,200 pixels: past twice the limit, an error
    assert read_image(path).pixels.shape == (3, 30, 40)
    assert Image.MAX_IMAGE_PIXELS == 100  # the limit is lifted for dip's reads alone
    monkeypatch.setattr(dip.memory, "available_bytes", lambda device: 200_000)  # 30 x 40 x 3 x 24 B = 86,400
    assert read_image(path).pixels.shape == (3, 30, 40)
    monkeypatch.setattr(dip.memory, "available_bytes", lambda device: 90_000)
    with pytest.raises(DipError, match=re.escape(f"image file {path} is 40x30 (0 MP): reading it needs about 0.0 GiB, "
                                                 "but this machine has 0.0 GiB free: crop or shrink it")):
        read_image(path)
    with pytest.raises(DipError, match=f"image file {palette} is 40x30"):
        read_image(palette)


def test_pillows_limit_stays_lifted_until_the_last_of_overlapping_reads_ends(monkeypatch):
    """Two threads reading at once (the benchmark's baselines): the first to end put the limit back under the
    other's read, or the second put back the first's lifted one, leaving it lifted for good."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    first, second = dip.images._any_size(), dip.images._any_size()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert Image.MAX_IMAGE_PIXELS is None  # the second read still under way
    second.__exit__(None, None, None)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_running_out_of_memory_mid_fit_is_one_line_with_the_options(tmp_path, monkeypatch):
    def exhausted(module, batch, batch_idx):  # what the allocator raises when a step does not fit
        if module.global_step == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return training_step(module, batch, batch_idx)

    training_step = DeepImagePrior.training_step
    monkeypatch.setattr(DeepImagePrior, "training_step", exhausted)
    cfg = compose_config([f"data.path={make_png(tmp_path / 'image.png', 40, 40)}", "trainer.max_steps=5", *FAST])
    with pytest.raises(DipError) as error:
        run(cfg, None)
    message = str(error.value)
    assert "cpu ran out of memory at step 2" in message and "40x40 image" in message, message
    assert "data.size=" in message and "\n" not in message


def test_written_images_get_the_permissions_of_any_new_file(tmp_path):
    """Written to a private temporary file, then renamed: it must not stay private (mkstemp's 0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    save_image(torch.rand(3, 4, 4), tmp_path / "image.png")
    assert (tmp_path / "image.png").stat().st_mode & 0o777 == 0o666 & ~umask


class _HalfSize(torch.nn.Module):
    def forward(self, z):
        return torch.sigmoid(z[:, :3, ::2, ::2])


class _Pair(torch.nn.Module):
    def forward(self, z):
        return z[:, :3], z[:, 3:]


class _Buggy(torch.nn.Module):
    def forward(self, z):
        return z.view(1, 16, -1, 7)  # a typo of one's own: its message said where only with a traceback


class _Shrinks(torch.nn.Module):
    """An operator of one's own that loses a pixel at each border but keeps the observation's size."""

    def A(self, x):  # noqa: N802
        return x[..., 1:-1, 1:-1]

    def baseline(self, y):
        return y


class _HalvesWithoutBaseline(_Shrinks):
    def A(self, x):  # noqa: N802
        return torch.nn.functional.avg_pool2d(x, 2)


@pytest.mark.parametrize("generator, physics, message", [
    (_HalfSize(), None, "the generator gives 1 x 3 x 16 x 16 for a 1 x 32 x 32 x 32 code, but task denoising restores "
                        "1 x 3 x 32 x 32"),
    (_Pair(), None, "the generator returns a tuple, not one N x C x H x W tensor"),
    (_Buggy(), None, f"is invalid for input of size 32768 (at {__file__}:"),
    (None, _Shrinks(), "A(x) maps the 1 x 3 x 32 x 32 restoration to 1 x 3 x 30 x 30, but the observation is"),
    (None, _HalvesWithoutBaseline(), "A(x) maps the 1 x 3 x 32 x 32 restoration to 1 x 3 x 16 x 16"),
])
def test_a_generator_or_operator_of_the_wrong_shape_is_refused_before_the_fit(generator, physics, message):
    module = prepare(compose_config(["arch=skip_depth2", "data.size=32", "logger=none"]))[1]
    module.generator = generator or module.generator
    module.physics = physics or module.physics
    with pytest.raises(DipError, match=re.escape(message)):
        check_shapes(module, "mine", "denoising")


class _ScalarTerm(Degradation):
    """A data term written as most would write it: one number for the batch."""

    def A(self, x):  # noqa: N802
        return x

    def data_term(self, x, y):
        return (self.A(x) - y).abs().mean()


class _ThroughNumpy(Degradation):
    def A(self, x):  # noqa: N802
        return torch.from_numpy(x.detach().cpu().numpy())


OWN_PHYSICS = ["~task.physics.sigma", "~task.physics.clip", "arch=skip_depth2", "data.size=32", "logger=none",
               "trainer.max_steps=2"]


def test_an_operator_whose_data_term_is_no_value_per_image_or_carries_no_gradient_is_one_line():
    """A scalar data term fitted every step, then failed when the outputs were scored, and nothing was kept; an
    A(x) through numpy failed at the first step with autograd's traceback."""
    module = prepare(compose_config(["arch=skip_depth2", "data.size=32", "logger=none"]))[1]
    module.physics = _ScalarTerm()
    with pytest.raises(DipError, match=re.escape("physics tests.test_robustness._ScalarTerm: data_term(x, y) gives a "
                                                 "scalar, not one value per image of x (1): reduce over all but the "
                                                 "first dimension")):
        check_shapes(module, "skip_depth2", "mine")
    numpy = compose_config(["task.physics._target_=tests.test_robustness._ThroughNumpy", *OWN_PHYSICS])
    with pytest.raises(DipError, match=re.escape("physics tests.test_robustness._ThroughNumpy: data_term(x, y) carries "
                                                 "no gradient back to x: A(x) must be computed with torch operations")):
        run(numpy, None)


def test_a_task_whose_physics_is_no_degradation_is_one_line():
    """It ended in "'Identity' object has no attribute 'check_fits'", as a traceback."""
    with pytest.raises(DipError, match=re.escape("task.physics must be a dip.physics.Degradation (a subclass defining "
                                                 "A(x)), not Identity")):
        prepare(compose_config(["task.physics._target_=torch.nn.Identity", *OWN_PHYSICS]))


def test_an_operator_whose_baseline_is_not_the_restorations_shape_is_refused_before_the_fit():
    problem, module = prepare(compose_config(["task=sr_x4", "arch=skip_depth2", "data.size=32", "logger=none"]))
    module.physics.baseline = lambda y: y  # the default of an operator of one's own that changes the size
    with pytest.raises(DipError, match=re.escape("baseline(y) gives 1 x 3 x 8 x 8, not the 1 x 3 x 32 x 32")):
        check_shapes(module, "skip", "sr_x4")

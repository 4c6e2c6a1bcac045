"""Every task of the paper runs from the command line; the JPEG and AlexNet operators behave."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dip import restore
from dip.config import compose_config
from dip.errors import DipError
from dip.images import centre_crop, load_image
from dip.inputs import ImageCode
from dip.metrics import psnr
from dip.nets.alexnet import MIN_SIZE, WEIGHTS_URL, AlexNet, load_alexnet
from dip.outputs import describe
from dip.physics import FeatureInversion, JpegCompression
from dip.physics.jpeg import jpeg_round_trip
from dip.pipeline import prepare, run
from dip.priors import TotalVariation
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
TINY = ["trainer.max_steps=2", "logger=none", "metrics_every=1"]
SMALL_NET = "arch=skip_depth2"  # where the generator is not what a test is about


def smooth_image(size: int, seed: int = 0, grey: bool = False) -> np.ndarray:
    """A smooth random colour image (uint8, ``size`` x ``size``), so that JPEG and upsampling behave as on photos."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (4, 4, 1 if grey else 3)).astype(np.uint8)
    image = Image.fromarray(coarse[..., 0] if grey else coarse).resize((size, size), Image.BICUBIC)
    return np.asarray(image)


def save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture(scope="module")
def flash_pair(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("flash")
    flash = smooth_image(64, seed=1)
    no_flash = (flash * 0.4).astype(np.uint8)
    return save(flash, folder / "flash.png"), save(no_flash, folder / "noflash.png")


CLI_RUN = ["trainer.max_steps=3", "data.size=64", "logger=csv"]
SWEPT_TASKS = ["denoising", "jpeg", "sr_x4", "sr_x8", "inpainting", "demosaicing"]  # need nothing beyond the defaults
TASK_ARGUMENTS = {
    "flash_no_flash": ["data.observation={noflash}", "input.path={flash}"],
    "preimage": ["task.physics.weights=random"],
}


@pytest.fixture(scope="module")
def task_sweep(tmp_path_factory) -> Path:
    """One multirun over the tasks that need no extra argument (one process: Lightning is imported
    once), each job in a folder named after its task."""
    sweep = tmp_path_factory.mktemp("tasks")
    done = run_cli("-m", f"task={','.join(SWEPT_TASKS)}", *CLI_RUN, f"hydra.sweep.dir={sweep}",
                   "hydra.sweep.subdir=${task.name}")
    assert done.returncode == 0, done.stderr[-2000:]
    return sweep


@pytest.mark.parametrize("task", SWEPT_TASKS + list(TASK_ARGUMENTS))
def test_every_task_runs_from_the_command_line(task, tmp_path, flash_pair, request):
    if task in SWEPT_TASKS:
        out = request.getfixturevalue("task_sweep") / task
    else:
        flash, noflash = flash_pair
        extra = [argument.format(flash=flash, noflash=noflash) for argument in TASK_ARGUMENTS[task]]
        out = tmp_path / "out"
        done = run_cli(f"task={task}", *CLI_RUN, f"hydra.run.dir={out}", *extra)
        assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == task and metrics["steps"] == 3
    assert (out / "restored.png").is_file() and (out / "observation.png").is_file()
    restored = load_image(out / "restored.png")
    if task == "flash_no_flash":  # a real observation: no ground truth, only the fit
        assert metrics["psnr"] is None and metrics["psnr_fit"] is not None
    else:
        assert restored.shape[-2:] == (64, 64) and metrics["psnr"] is not None
    if task.startswith("sr_"):  # the baseline: bicubic upsampling, written beside the result, PSNR kept
        factor = int(task[-1])
        bicubic = load_image(out / "bicubic.png")
        assert bicubic.shape[-2:] == (64, 64)
        assert load_image(out / "observation.png").shape[-2:] == (64 // factor, 64 // factor)
        assert metrics["psnr_observation"] is not None
    else:
        assert not (out / "bicubic.png").exists()
    if task == "demosaicing":  # three channels restored from one, and the bilinear baseline written
        assert load_image(out / "observation.png").shape[0] == 1 and restored.shape[0] == 3
        assert load_image(out / "bilinear.png").shape == (3, 64, 64)
    if task == "preimage":  # the observation is features: observation.png shows the original image
        assert metrics["psnr_observation"] is None
        assert load_image(out / "observation.png").shape == (3, 64, 64)


def test_flash_no_flash_without_the_dataset_says_so_in_one_line(tmp_path):
    out = tmp_path / "out"
    done = run_cli("task=flash_no_flash", "trainer.max_steps=1", "logger=none", f"hydra.run.dir={out}",
                   env={"DIP_DATA": str(tmp_path / "no-datasets")})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cave01_01_noflash.jpg" in lines[0] and "DIP_DATA" in lines[0], done.stderr
    assert not out.exists()


def test_denoising_sigma_is_configurable_and_a_real_noisy_file_is_restored_blind(tmp_path):
    overrides = ["task=denoising", "task.physics.sigma=50", "task.physics.clip=false", "data.size=64", *TINY]
    problem, _ = prepare(compose_config(overrides))
    assert (problem.observation - problem.ground_truth).std().item() == pytest.approx(50 / 255, rel=0.05)

    noisy = save(smooth_image(48, seed=3), tmp_path / "noisy.png")
    cfg = compose_config(["task=denoising", f"data.observation={noisy}", "data.size=64", SMALL_NET, *TINY])
    result = run(cfg, None)
    assert result.ground_truth is None and result.metrics["psnr"] is None
    assert result.restored.shape[-2:] == (48, 48) and result.metrics["psnr_fit"] is not None


def test_jpeg_round_trip_quantises_and_loses_more_at_lower_quality():
    clean = torch.from_numpy(smooth_image(40, seed=2).transpose(2, 0, 1).copy()).float()[None] / 255
    clean = clean + 0.05 * torch.rand(clean.shape, generator=torch.Generator().manual_seed(0))  # some texture
    clean = clean.clamp(0, 1)
    low, high = jpeg_round_trip(clean, 5), jpeg_round_trip(clean, 95)
    assert low.shape == high.shape == clean.shape
    assert torch.allclose(low * 255, (low * 255).round(), atol=1e-4)  # 8-bit values
    assert psnr(low, clean) < psnr(high, clean) - 5
    grey = jpeg_round_trip(clean[:, :1], 30)
    assert grey.shape == (1, 1, 40, 40)
    jpeg = JpegCompression(quality=20)
    assert torch.equal(jpeg.A(clean), clean) and torch.equal(jpeg.observe(clean), jpeg_round_trip(clean, 20))
    with pytest.raises(ValueError, match="quality"):
        JpegCompression(quality=0)


def test_jpeg_task_restores_a_real_jpeg_blind(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(smooth_image(48, seed=4)).save(path, quality=15)
    result = run(compose_config(["task=jpeg", f"data.observation={path}", SMALL_NET, *TINY]), None)
    assert result.metrics["psnr"] is None and result.restored.shape == (1, 3, 48, 48)


def test_super_resolution_takes_any_factor(tmp_path):
    result = run(compose_config(["task=sr_x4", "task.physics.factor=3", "data.size=50", SMALL_NET, *TINY]), tmp_path)
    assert result.observation.shape[-2:] == (16, 16) and result.restored.shape[-2:] == (48, 48)
    bicubic = load_image(tmp_path / "bicubic.png")[None]
    assert bicubic.shape[-2:] == (48, 48)
    # psnr_observation is the bicubic baseline's PSNR (up to the PNG's 8-bit rounding)
    assert float(psnr(bicubic, result.ground_truth)) == pytest.approx(result.metrics["psnr_observation"], abs=0.1)


@pytest.mark.parametrize("size", [28, 24, None])
def test_a_cropped_observation_is_scored_against_the_same_window_of_its_ground_truth(tmp_path, size):
    """A 10 px observation cropped to 7 starts at its pixel 1 (4 in the ground truth); a centre crop of
    the 40 px ground truth to 28 would start at 6. The ground truth degraded must be the observation."""
    from dip.physics import LanczosDownsample
    from dip.problem import problem_from_config

    truth = torch.from_numpy(np.random.default_rng(0).uniform(0, 1, (1, 3, 5, 5))).float()
    truth = torch.nn.functional.interpolate(truth, size=(40, 40), mode="bicubic").clamp(0, 1)
    observation = LanczosDownsample(4).A(truth).clamp(0, 1)
    for image, name in ((truth, "truth.png"), (observation, "observation.png")):
        Image.fromarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(tmp_path / name)
    problem = problem_from_config(compose_config(["task=sr_x4", f"data.size={size or 'null'}",
                                                  f"data.path={tmp_path / 'truth.png'}",
                                                  f"data.observation={tmp_path / 'observation.png'}"]))
    assert float(psnr(problem.physics.A(problem.ground_truth), problem.observation)) > 40


def test_inpainting_variants_carry_the_authors_settings(tmp_path):
    cfg = compose_config(["task=inpainting_region", "data.size=64", *TINY])
    assert cfg.input._target_ == "dip.inputs.MeshgridCode" and cfg.arch.upsample_mode == "nearest"
    assert set(cfg.arch.channels_skip) == {0} and cfg.task.physics.mask._target_ == "dip.physics.RegionMask"
    result = run(cfg, None)
    assert result.restored.shape == (1, 3, 64, 64)

    cfg = compose_config(["task=inpainting_bernoulli", "data.size=32", *TINY])
    assert cfg.optim.lr == 0.001 and cfg.task.physics.mask.fraction == 0.5
    problem, _ = prepare(cfg)
    assert problem.channels == 1  # greyscale, one output channel
    assert problem.physics.mask.mean().item() == pytest.approx(0.5, abs=0.1)


def test_an_observation_with_nothing_missing_writes_strict_json(tmp_path):
    """Its PSNR is infinite, which strict JSON cannot hold: null, and no 'gain -inf' printed."""
    cfg = compose_config(["task=inpainting", "mask=bernoulli", "mask.fraction=0", "data.size=32", *TINY])
    result = run(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text(),
                         parse_constant=lambda name: pytest.fail(f"{name} in metrics.json"))
    assert metrics["psnr_observation"] is None
    assert result.metrics["psnr"] > 0 and "gain" not in describe(result)


def test_a_mask_file_of_the_image_before_the_crop_is_cropped_with_it(tmp_path):
    mask = np.full((96, 96), 255, np.uint8)
    mask[40:56, 40:56] = 0  # a hole in the centre
    path = save(mask, tmp_path / "mask.png")
    image = save(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8), tmp_path / "image.png")
    problem, _ = prepare(compose_config(["task=inpainting", f"data.path={image}", f"data.mask={path}", "data.size=32",
                                         *TINY]))
    assert problem.physics.mask.shape[-2:] == (32, 32)
    assert problem.physics.mask[..., 8:24, 8:24].sum() == 0 and problem.physics.mask.mean() == 0.75


@pytest.fixture(scope="module")
def alexnet() -> AlexNet:
    torch.manual_seed(0)
    return load_alexnet("random").eval()


def test_alexnet_layers_have_torchvisions_shapes(alexnet):
    x = torch.rand(1, 3, 227, 227)
    expected = {"conv1": (64, 56, 56), "conv2": (192, 27, 27), "conv3": (384, 13, 13), "conv4": (256, 13, 13),
                "conv5": (256, 13, 13), "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    with torch.no_grad():
        for layer, shape in expected.items():
            assert alexnet.truncated(layer)(x).shape[1:] == shape, layer
        assert torch.equal(alexnet(x), alexnet.truncated("fc8")(x))
        assert alexnet.truncated("conv5")(torch.rand(1, 3, 99, 131)).shape[1:] == (256, 5, 7)  # odd sizes


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3", "fc6"])
def test_alexnet_minimum_sizes_are_exact(alexnet, layer):
    with torch.no_grad():
        alexnet.truncated(layer)(torch.rand(1, 3, MIN_SIZE[layer], MIN_SIZE[layer]))
        with pytest.raises(RuntimeError):
            alexnet.truncated(layer)(torch.rand(1, 3, MIN_SIZE[layer] - 1, MIN_SIZE[layer] - 1))


def test_alexnet_weights_load_in_torchvisions_format_and_absent_weights_say_where(alexnet, tmp_path):
    keys = {f"{part}.{index}.{kind}" for part, indices in (("features", (0, 3, 6, 8, 10)), ("classifier", (1, 4, 6)))
            for index in indices for kind in ("weight", "bias")}
    assert set(alexnet.state_dict()) == keys
    path = tmp_path / "alexnet.pth"
    torch.save(alexnet.state_dict(), path)
    loaded = load_alexnet(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), alexnet.state_dict().values()))

    with pytest.raises(DipError, match="not found") as error:
        load_alexnet(tmp_path / "absent.pth")
    assert WEIGHTS_URL in str(error.value) and "\n" not in str(error.value)
    for text in (b"not a state dict", b"e", b""):  # "e" and "" gave KeyError's '101' and EOFError
        path.write_bytes(text)
        with pytest.raises(DipError, match="cannot load AlexNet weights .*: not a PyTorch file of tensors$"):
            load_alexnet(path)
    state = alexnet.state_dict()
    for other, problem in [({"conv.weight": torch.zeros(1)}, "16 of its 16 tensors missing, features.0.weight first"),
                           ({**state, "extra": torch.zeros(1)}, "1 tensor(s) that it lacks, extra first"),
                           ({**state, "classifier.6.bias": torch.zeros(10)}, "classifier.6.bias is (10,), not (1000,)"),
                           ({**state, "features.0.bias": 3}, "features.0.bias is of type int, not (64,)"),
                           ([1, 2], "a list, not a dict of tensors")]:
        torch.save(other, path)
        with pytest.raises(DipError, match=re.escape(f"{path} holds no AlexNet weights (torchvision's alexnet state "
                                                     f"dict): {problem}")):
            load_alexnet(path)
    with pytest.raises(DipError, match="^AlexNet ImageNet weights not found"):  # as is, not as "invalid settings"
        prepare(compose_config(["task=preimage", f"task.physics.weights={tmp_path / 'absent.pth'}", *TINY]))


def test_a_checkpoint_is_not_continued_with_other_weights_at_the_same_path(tmp_path):
    """Pre-images invert the features of the weights' network: other weights under the same file name, or a
    moved file, were not told apart from the weights the fit started with."""
    weights = tmp_path / "alexnet.pth"
    state = load_alexnet("random").state_dict()
    torch.save(state, weights)
    settings = ["task=preimage", "task.physics.layer=conv1", "data.size=64", "checkpoint.keep=true", *TINY]
    run(compose_config([*settings, f"task.physics.weights={weights}"]), tmp_path / "run")
    moved = weights.rename(tmp_path / "moved.pth")  # the same weights elsewhere: the same run, continued
    result = run(compose_config([*settings, f"task.physics.weights={moved}", "trainer.max_steps=3"]), tmp_path / "run")
    assert result.metrics["resumed_from_step"] == 2
    torch.save({**state, "features.0.bias": state["features.0.bias"] + 1}, moved)
    with pytest.raises(DipError, match=r"task\.physics\.weights: its file's contents changed, sha256 \w{12}\.\.\. -> "):
        run(compose_config([*settings, f"task.physics.weights={moved}", "trainer.max_steps=4"]), tmp_path / "run")


def test_feature_inversion_is_frozen_in_eval_mode_and_zero_at_the_original():
    torch.manual_seed(0)
    physics = FeatureInversion(layer="fc6", weights="random", normalization="caffe")
    physics.train()
    assert not physics.extractor.training and not any(p.requires_grad for p in physics.parameters())
    x = torch.rand(1, 3, 64, 64)
    y = physics.observe(x)
    assert y.shape == (1, 4096) and physics.data_term(x, y).item() == 0
    assert physics.data_term(torch.rand(1, 1, 64, 64), y).item() > 0  # grey images are fed as RGB
    with pytest.raises(ValueError, match="too small"):
        physics.check_fits(62, 80)


def test_tv_prior_swaps_the_generator_for_the_pixels():
    cfg = compose_config(["task=preimage", "prior=tv", "task.physics.weights=random", "task.physics.layer=conv2",
                          "data.size=32", *TINY])
    _, module = prepare(cfg)
    assert module.regularizer is not None and module.trainable_parameters() == [module.z]
    assert module.z.shape == (1, 3, 32, 32)
    result = run(cfg, None)  # the same seed: starts from the same pixels, which the optimiser moves
    assert result.metrics["arch"] == "pixels" and result.restored.shape == (1, 3, 32, 32)
    assert not torch.allclose(result.restored, module.z.detach().clamp(0, 1))
    tv = TotalVariation(weight=2.0, beta=1.0)
    assert tv(torch.full((1, 3, 8, 8), 0.3)).item() == pytest.approx(0, abs=1e-3)
    steps = torch.zeros(1, 1, 8, 8)
    steps[..., 4:] = 1
    assert TotalVariation(weight=1.0, beta=2.0)(steps).item() == pytest.approx(7 / 49)


def test_a_flash_image_of_another_size_is_refused_unless_both_are_cropped(tmp_path, flash_pair):
    flash, _ = flash_pair  # 64 x 64
    noflash = save(smooth_image(60), tmp_path / "noflash.png")
    overrides = [f"input.path={flash}", "trainer.max_steps=1", "logger=none", SMALL_NET]
    for size in ("null", "128", "48"):  # 48: both would be cut to 48 x 48, about centres 2 pixels apart
        with pytest.raises(DipError, match=r"is 64x64, but the image to restore is 60x60: the guide must be aligned"):
            restore(observation=noflash, task="flash_no_flash", overrides=[*overrides, f"data.size={size}"])
    cropped = restore(observation=flash, task="flash_no_flash", overrides=[*overrides, "data.size=48"])
    assert cropped.restored.shape == (1, 3, 48, 48)


@pytest.mark.parametrize("clean_size, observed, data_size", [(110, False, "null"), (110, False, "100"),
                                                             (104, True, "64")])
def test_a_super_resolution_guide_is_cut_where_the_image_to_restore_is(tmp_path, clean_size, observed, data_size):
    """Guided x8 super-resolution, the guide being the ground truth itself: the guide's window is the truth's,
    after a top-left trim to the factor (110 -> 104), a data.size crop before it, or a crop of a real observation
    (13 x 13 -> 8 x 8 at (2, 2), so 64 x 64 at (16, 16)); a centre cut of its own would be 2 to 4 pixels off."""
    clean = save(smooth_image(clean_size), tmp_path / "clean.png")
    data = [f"data.path={clean}", f"data.size={data_size}"]
    if observed:
        small = Image.open(clean).resize((clean_size // 8,) * 2, Image.BICUBIC)
        small.save(tmp_path / "small.png")
        data.append(f"data.observation={tmp_path / 'small.png'}")
    problem, module = prepare(compose_config(["task=sr_x8", "input=image", f"input.path={clean}", SMALL_NET,
                                              *data, "logger=none"]))
    assert module.code.image.shape[-2:] == problem.ground_truth.shape[-2:] != (clean_size, clean_size)
    assert torch.equal(module.code.image, problem.ground_truth)


def test_a_padded_guide_is_where_the_generators_output_is_cropped(tmp_path):
    """z is the guide padded to the network's multiple, and the output is cropped back about the same centre."""
    code = ImageCode(str(save(smooth_image(58), tmp_path / "guide.png")))
    code.prepare(3, 58, 58, (58, 58))
    assert torch.equal(centre_crop(code.make(64, 64), 58, 58), code.image)  # 3 pixels of padding before

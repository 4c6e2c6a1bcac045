"""The real configs, composed with Hydra's compose API, run end to end at tiny size."""

import json

import pytest
import torch

from dip.config import compose_config, config_groups
from dip.metrics import psnr, ssim
from dip.pipeline import prepare, run

TASKS = config_groups()["task"]
ARCHS = config_groups()["arch"]


def test_groups_hold_what_the_docs_promise():
    assert {"denoising", "sr_x4", "sr_x8", "inpainting"} <= set(TASKS)
    assert {"skip", "skip_depth2", "skip_depth4", "skip_depth6", "unet", "resnet"} <= set(ARCHS)


def tiny(task, arch, tmp_path, steps=2):
    return compose_config([f"task={task}", f"arch={arch}", f"trainer.max_steps={steps}", "data.size=32",
                           "logger=none", "trainer.enable_progress_bar=false"], output_dir=tmp_path)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_builds_with_every_arch(task, tmp_path):
    for arch in ARCHS:
        problem, module = prepare(tiny(task, arch, tmp_path))
        assert module().shape == problem.ground_truth.shape, (task, arch)
        assert problem.physics.A(module()).shape == problem.observation.shape


# every task and every arch through the real Trainer, pairing them off rather than all pairs
RUNS = [(task, ARCHS[i % len(ARCHS)]) for i, task in enumerate(TASKS)]
RUNS += [(TASKS[i % len(TASKS)], arch) for i, arch in enumerate(ARCHS) if arch not in dict(RUNS).values()]


@pytest.mark.parametrize("task, arch", RUNS)
def test_task_and_arch_run_end_to_end(task, arch, tmp_path):
    result = run(tiny(task, arch, tmp_path), tmp_path)
    assert result.restored.shape == result.ground_truth.shape == (1, 3, 32, 32)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["arch"] == arch and metrics["task"] == task
    assert all(metrics[k] is not None for k in ("psnr", "psnr_ema", "ssim", "psnr_observation"))


def test_profiles_pick_settings(tmp_path):
    quick = compose_config(["profile=quick"], output_dir=tmp_path)
    full = compose_config(["profile=full", "task=sr_x4"], output_dir=tmp_path)
    assert quick.trainer.max_steps == 500 and quick.data.size == 128
    assert full.trainer.max_steps == 2000 and full.data.size is None
    assert full.input.reg_noise_std == 0.03 and full.task.physics.factor == 4


def test_inpainting_selects_the_authors_text_setup(tmp_path):
    cfg = compose_config(["task=inpainting"], output_dir=tmp_path)
    assert cfg.arch.channels_skip == [128] * 5 and cfg.arch.upsample_mode == "nearest"
    assert compose_config(["task=inpainting", "arch=skip_depth6"], output_dir=tmp_path).arch.kernel_down == 5


def test_psnr_and_ssim_known_cases():
    x = torch.full((1, 3, 16, 16), 0.5)
    assert psnr(x + 0.1, x).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(x + 0.01, x).item() == pytest.approx(40.0, abs=1e-3)
    # PSNR is per call, not pooled: a bad pair does not drag down the next one
    assert psnr(x + 0.5, x).item() < psnr(x + 0.1, x).item() == pytest.approx(20.0, abs=1e-4)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    assert ssim(torch.rand(1, 1, 7, 5), torch.rand(1, 1, 7, 5)).item() < 0.9  # window shrinks to fit


def test_denoising_gains_on_a_tiny_image(tmp_path):
    cfg = compose_config(["trainer.max_steps=150", "data.size=32", "logger=none", "arch=skip_depth4",
                          "input.reg_noise_std=0", "trainer.enable_progress_bar=false"], output_dir=tmp_path)
    metrics = run(cfg, None).metrics
    assert metrics["psnr"] > metrics["psnr_observation"] - 1.0 or metrics["psnr_ema"] > metrics["psnr_observation"]

"""The real configs, composed with Hydra's compose API, run end to end at tiny size."""

import hashlib
import json
import re

import pytest
import torch

from dip.config import compose_config, config_groups
from dip.memory import estimate
from dip.metrics import psnr, ssim
from dip.pipeline import prepare, run
from dip.run_settings import result_settings, setting_differences
from tests.conftest import make_png

TASKS = config_groups()["task"]
ARCHS = config_groups()["arch"]


def test_groups_hold_what_the_docs_promise():
    assert {"denoising", "jpeg", "sr_x4", "sr_x8", "inpainting", "flash_no_flash", "preimage"} <= set(TASKS)
    assert {"skip", "skip_depth2", "skip_depth4", "skip_depth6", "unet", "resnet"} <= set(ARCHS)


@pytest.fixture(scope="module")
def flash_pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    return make_png(folder / "flash.png", 40, 40, seed=1), make_png(folder / "noflash.png", 40, 40, seed=2)


def tiny(task, arch, tmp_path, flash_pair, steps=2):
    """A tiny run of ``task`` with ``arch``, plus what the task needs beyond the defaults."""
    extra = {
        "preimage": ["task.physics.weights=random"],
        "flash_no_flash": [f"data.observation={flash_pair[1]}", f"input.path={flash_pair[0]}"],
    }.get(task, [])
    architecture = ["prior=tv"] if arch == "pixels" else [f"arch={arch}"]  # pixels go with the TV prior
    return compose_config([f"task={task}", *architecture, f"trainer.max_steps={steps}", "data.size=32",
                           "logger=none", "trainer.enable_progress_bar=false", *extra], output_dir=tmp_path)


def builds(task, arch, tmp_path, flash_pair):
    """Whether ``arch`` builds for ``task`` and restores its solution's size; the memory check simulates
    the task's step (it raises where it cannot)."""
    problem, module = prepare(tiny(task, arch, tmp_path, flash_pair))
    assert module().shape[-2:] == problem.solution_size, (task, arch)
    assert estimate(module).activations > module.z.numel() * 4, (task, arch)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_builds_and_its_step_is_simulated(task, tmp_path, flash_pair):
    builds(task, "skip_depth2", tmp_path, flash_pair)


# each composition costs Hydra a third of a second here: the fast suite pairs tasks and archs off below
@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_every_task_builds_with_every_arch(task, tmp_path, flash_pair):
    for arch in ARCHS:
        if not (task == "flash_no_flash" and arch == "pixels"):  # its input is the flash image, not free pixels
            builds(task, arch, tmp_path, flash_pair)


# every task and every arch through the real Trainer, pairing them off rather than all pairs
RUNS = [(task, ARCHS[i % len(ARCHS)]) for i, task in enumerate(TASKS)]
RUNS += [(TASKS[i % len(TASKS)], arch) for i, arch in enumerate(ARCHS) if arch not in dict(RUNS).values()]


@pytest.mark.parametrize("task, arch", RUNS)
def test_task_and_arch_run_end_to_end(task, arch, tmp_path, flash_pair):
    result = run(tiny(task, arch, tmp_path, flash_pair), tmp_path)
    assert result.restored.shape[-2:] == (32, 32) or task == "flash_no_flash"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["task"] == task
    if result.ground_truth is not None:
        assert all(metrics[k] is not None for k in ("psnr", "psnr_ema", "ssim"))


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


@pytest.mark.parametrize("overrides, needle", [
    ("trainer.max_steps=0", "trainer.max_steps must be a whole number >= 1, got 0"),
    ("trainer.max_steps=-1", "trainer.max_steps must be a whole number >= 1, got -1"),
    ("data.size=0", "data.size must be a whole number >= 1, or null for the whole image, got 0"),
    ("data.size=abc", "data.size must be a whole number >= 1, or null for the whole image, got 'abc'"),
    ("data.mode=XYZ", "data.mode must be auto, L or RGB, got 'XYZ'"),
    ("optim.lr=-1", "optim.lr must be a finite number > 0, got -1"),
    ("metrics_every=0", "metrics_every must be a whole number >= 1, got 0"),
    ("backtrack_db=-1", "backtrack_db must be a finite number > 0, or null for none, got -1"),
    ("max_rollbacks=0", "max_rollbacks must be a whole number >= 1, or null for never stopping, got 0"),
    ("profile=bogus", "unknown profile 'bogus' (choose from: auto, full, quick)"),
    ("data.mask=mask.png", "data.mask=mask.png is given, but task denoising takes no mask"),
    ("task=inpainting data.observation=photo.png", "photo.png: an observed image needs the mask of its known pixels"),
    ("task=sr_x4 task.physics.factor=2.5", "task.physics.factor must be a whole number, got 2.5"),
    ("task=sr_x4 task.physics.factor=1", "the downsampling factor must be a whole number >= 2, got 1"),
    ("task=sr_x4 task.physics.factor=0", "the downsampling factor must be a whole number >= 2, got 0"),
    # of a kind the constructor's annotation excludes: taken as it is, or failing without naming the setting
    ("task.physics.sigma=lots", "task.physics.sigma must be a finite number, got 'lots'"),
    ("task.physics.sigma=nan", "task.physics.sigma must be a finite number, got nan"),  # was a garbage observation
    ("task=jpeg task.physics.quality=abc", "task.physics.quality must be a whole number, got 'abc'"),
    ("task=inpainting mask=bernoulli mask.fraction=abc", "mask.fraction must be a finite number, got 'abc'"),
    ("optim.lr=inf", "optim.lr must be a finite number > 0, got inf"),  # was a fit of NaNs
    ("checkpoint.keep=maybe", "checkpoint.keep must be true or false, got 'maybe'"),  # was read as true
    ("data.path=", "data.path is empty: name a file, or leave data.path out"),  # was "image file . is a directory"
    ("task=inpainting data.mask=", "data.mask is empty: name a file"),  # was the text mask, silently
])
def test_impossible_settings_are_one_line_before_anything_is_built(overrides, needle):
    from dip.errors import DipError
    from dip.problem import problem_from_config

    with pytest.raises(DipError, match=re.escape(needle)):
        problem_from_config(compose_config(overrides.split()))


def test_overrides_that_name_no_setting_say_what_would():
    from dip.config_checks import checked_config
    from dip.errors import DipError

    assert checked_config(["~early_stop"]).get("early_stop") is None  # a run can do without it
    assert checked_config(["+data.folder=/x", "data.path=${data.folder}/a.png"]).data.path == "/x/a.png"  # read
    assert checked_config(["+folder=/x", "data.path=${folder}/a.png"]).data.path == "/x/a.png"
    assert checked_config(["++seed=3", "++data.size=16"]).data.size == 16  # ++ sets what is there as = does
    for overrides, pattern in [
        (["~speed"], r"~speed: a run needs a config of the speed group \(choose from: default, exact, fast\)"),
        (["+data.maks=m.png"], r"\+data.maks: nothing reads a setting named 'data.maks' \(did you mean data.mask\?\)"),
        (["++data.maks=m.png"], r"\+\+data.maks: nothing reads a setting named 'data.maks' \(did you mean data.mask"),
        (["++lrr=0.01"], r"\+\+lrr: nothing reads a setting named 'lrr' \(a typo\?\)"),
        (["+optimm.lr=0.1"], r"\+optimm.lr: nothing reads a setting named 'optimm.lr' \(did you mean optim.lr\?\)"),
        (["data.maks=m.png"], r"data.maks: no such setting \(did you mean data.mask\?\)$"),  # not: add it with '+'
        (["optim.lrr=1"], r"optim.lrr: no such setting \(did you mean optim.lr\?\); \+optim.lrr=VALUE adds one"),
        (["experiment=fig2_noise_impedance"], r"use \+experiment=fig2_noise_impedance"),  # a group: Hydra's advice
    ]:
        with pytest.raises(DipError, match=pattern):
            checked_config(overrides)


@pytest.mark.parametrize("overrides, name", [(["task=sr_x4"], "sr_x4"), (["task=sr_x8"], "sr_x8"),
                                             (["task=sr_x4", "task.physics.factor=3"], "sr_x3")])
def test_a_super_resolution_task_is_named_by_its_factor(overrides, name):
    """The name heads the run's line and its folder (outputs/sr_x3/...), and groups W&B runs."""
    assert compose_config(overrides).task.name == name


def test_metrics_every_decides_the_result_only_with_rollbacks():
    """It sets when a collapse is judged and max_rollbacks checked; without backtracking, only the logging."""
    def differences(*overrides):
        return setting_differences(result_settings(compose_config(list(overrides))),
                                   result_settings(compose_config([*overrides, "metrics_every=10"])))

    assert differences() == "metrics_every: 50 -> 10"
    assert differences("backtrack_db=null") == ""


def test_an_input_file_s_contents_decide_the_result_where_both_runs_recorded_them(tmp_path):
    """A file replaced at the same path is another run; a checkpoint or run from before digests were kept
    (none recorded) still matches, and a setting that names no file (the default image) has no digest."""
    image = tmp_path / "photo.png"
    image.write_bytes(b"first")
    settings = result_settings(compose_config([f"data.path={image}"]))
    assert settings["sha256(data.path)"] == hashlib.sha256(b"first").hexdigest()
    assert "sha256(data.path)" not in result_settings(compose_config([]))
    assert "sha256(data.path)" not in result_settings(compose_config([f"data.path={image}"]), digests=False)
    image.write_bytes(b"second")
    replaced = result_settings(compose_config([f"data.path={image}"]))
    assert setting_differences(settings, replaced) == (
        f"data.path: its file's contents changed, sha256 {hashlib.sha256(b'first').hexdigest()[:12]}... -> "
        f"{hashlib.sha256(b'second').hexdigest()[:12]}...")
    older = {key: value for key, value in settings.items() if key != "sha256(data.path)"}
    assert setting_differences(older, replaced) == setting_differences(replaced, older) == ""


def test_a_file_with_a_digest_on_both_sides_is_compared_by_its_contents_not_its_name(tmp_path, monkeypatch):
    """The same photo named relative instead of absolute, or moved, is the same run; another photo under
    another name says both; without a digest on one side (an older run) the name still decides."""
    image, moved = tmp_path / "photo.png", tmp_path / "moved" / "photo.png"
    image.write_bytes(b"first")
    moved.parent.mkdir()
    moved.write_bytes(b"first")
    monkeypatch.chdir(tmp_path)
    absolute = result_settings(compose_config([f"data.path={image}"]))
    assert setting_differences(absolute, result_settings(compose_config(["data.path=photo.png"]))) == ""
    assert setting_differences(absolute, result_settings(compose_config([f"data.path={moved}"]))) == ""
    moved.write_bytes(b"second")
    assert setting_differences(absolute, result_settings(compose_config([f"data.path={moved}"]))) == (
        f"data.path: '{image}' -> '{moved}', another file's contents (sha256 "
        f"{hashlib.sha256(b'first').hexdigest()[:12]}... -> {hashlib.sha256(b'second').hexdigest()[:12]}...)")
    older = {key: value for key, value in absolute.items() if key != "sha256(data.path)"}
    assert setting_differences(older, result_settings(compose_config(["data.path=photo.png"]))) == (
        f"data.path: '{image}' -> 'photo.png'")


def test_the_trainer_s_gradient_settings_decide_the_result_and_a_benchmark_s_image_is_named_by_its_dataset(
        tmp_path):
    """Gradient clipping changes every update: a finished run or checkpoint without it is another result.
    A benchmark's image is named under data.root, so its checkpoint moves with the datasets' folder; the
    image a user gives run.py is named as given."""
    plain = result_settings(compose_config([]))
    clipped = result_settings(compose_config(["+trainer.gradient_clip_val=0.5"]))
    assert setting_differences(plain, clipped) == "trainer.gradient_clip_val: None -> 0.5"
    image = tmp_path / "Set5" / "a.png"
    named = {config_name: result_settings(compose_config([f"data.root={tmp_path}", f"data.path={image}",
                                                           *(["benchmark=set5_x4"] if config_name else [])],
                                                          config_name=config_name or "config"))["data.path"]
             for config_name in ("benchmark", None)}
    assert named == {"benchmark": "Set5/a.png", None: str(image)}


def test_settings_at_their_bounds_are_accepted():
    from dip.problem import problem_from_config

    cfg = compose_config(["trainer.max_steps=1", "data.size=1", "backtrack_db=null", "max_rollbacks=null",
                          "data.mode=L", "metrics_every=1"])
    assert problem_from_config(cfg).observation.shape[-2:] == (1, 1)


def test_a_hydra_message_keeps_the_line_that_gives_its_reason():
    from hydra.errors import InstantiationException

    from dip.config_checks import config_message

    error = InstantiationException("Error in call to target 'dip.sweeps.PinToGPU':\n"
                                   "ValueError('jobs_per_gpu must be >= 1, got 0')\nfull_key: hydra.callbacks.x")
    assert config_message(error) == ("Error in call to target 'dip.sweeps.PinToGPU': "
                                     "ValueError('jobs_per_gpu must be >= 1, got 0')")  # the first line alone, before
    assert config_message(InstantiationException("Cannot find key\nfull_key: arch")) == "Cannot find key"

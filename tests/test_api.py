"""The Python API that run.py and notebooks share."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dip import restore
from dip.errors import DipError, RunInterruptedError
from dip.images import data_crop_offsets
from dip.module import DeepImagePrior
from dip.physics import BayerMosaic, Degradation, Inpainting, LanczosDownsample, RegionMask
from tests.conftest import ROOT, held_elsewhere, make_png


def test_restore_a_tensor_without_writing_anything(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = torch.rand(3, 24, 40)
    result = restore(image, task="denoising", arch="resnet",
                     overrides=["trainer.max_steps=2", "trainer.enable_progress_bar=false"])
    assert result.restored.shape == result.restored_ema.shape == (1, 3, 24, 40)
    assert torch.equal(result.ground_truth[0], image)
    assert result.metrics["steps"] == 2 and result.output_dir is None
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_restore_into_a_folder_says_how_to_continue_in_python(tmp_path, monkeypatch):
    """Ctrl-C in a notebook: the message was the command line's (hydra.run.dir=...)."""
    step = DeepImagePrior.training_step

    def interrupted_at_first(self, batch, batch_idx):
        if self.global_step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(DeepImagePrior, "training_step", interrupted_at_first)
    image, out = torch.rand(3, 16, 16), tmp_path / "out"
    call = {"arch": "skip_depth2", "output_dir": out, "overrides": ["trainer.max_steps=3", "logger=none"]}
    with pytest.raises(RunInterruptedError, match=re.escape(f"call restore() again with output_dir={out} to continue")):
        restore(image, **call)
    monkeypatch.undo()
    assert restore(image, **call).metrics["resumed_from_step"] == 1


@pytest.mark.parametrize("imported", ["from dip import restore", "from dip.api import restore"])
def test_the_first_call_of_a_session_leaves_python_s_random_state_as_it_was(imported):
    """Importing Lightning, on the first call or with dip.api, drew from Python's generator: later calls kept
    it, the first did not."""
    script = (f"import random, torch; random.seed(1); before = random.getstate(); {imported}; "
              "restore(torch.rand(3, 8, 8), arch='skip_depth2', overrides=['trainer.max_steps=1']); "
              "print(random.getstate() == before)")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().splitlines()[-1] == "True", done.stderr[-2000:]


@pytest.mark.filterwarnings("ignore:There is a wandb run already in progress")  # the user's own, logged into
def test_another_image_into_a_folder_is_another_run_and_a_failed_fit_ends_its_w_and_b_run(tmp_path, monkeypatch):
    """An image given to restore() stayed out of the run's settings: another one continued the first one's
    checkpoint. A fit that raised left its W&B run open, and the next call logged into it."""
    keep = ["trainer.max_steps=2", "arch=skip_depth2", "logger=none", "checkpoint.keep=true"]
    photo = make_png(tmp_path / "photo.png", 16, 16)
    first = restore(photo, output_dir=tmp_path / "file", overrides=keep)
    assert first.metrics["input_sha256"] == {"data.path": hashlib.sha256(photo.read_bytes()).hexdigest()}
    torch.manual_seed(1)
    drawn = torch.rand(2, 3, 16, 16)  # the session's next two draws, if a call leaves its random state be
    torch.manual_seed(1)
    restore(torch.rand(3, 16, 16), output_dir=tmp_path / "tensor", overrides=keep)
    assert torch.equal(torch.rand(3, 16, 16), drawn[1])
    more = [*keep[1:], "trainer.max_steps=3"]
    with pytest.raises(DipError, match=r"data.path: 'tensor:sha256:\w{12}\.\.\.' -> 'tensor:sha256:\w{12}\.\.\.'"):
        restore(drawn[0].reshape(3, 8, 32), output_dir=tmp_path / "tensor", overrides=more)  # its values, reshaped
    with pytest.raises(DipError, match=r"data.path: 'tensor:sha256:\w{12}\.\.\.' -> 'tensor:sha256:\w{12}\.\.\.'"):
        restore(drawn[1], output_dir=tmp_path / "tensor", overrides=more)  # another tensor of its shape

    def broken(self, *args):
        raise RuntimeError("a generator of one's own that breaks")

    import wandb

    for failing in ("training_step", "restart_outputs"):  # in the fit's steps, or after them
        monkeypatch.setattr(DeepImagePrior, failing, broken)
        with pytest.raises(RuntimeError, match="breaks"):
            restore(torch.rand(3, 16, 16), output_dir=tmp_path / failing, overrides=[*keep[:2], "logger=wandb"])
        assert wandb.run is None
        monkeypatch.undo()
    # a run of the user's own, open before the call, is not the failed fit's to end
    own = wandb.init(project="mine", mode="offline", dir=tmp_path)
    try:
        monkeypatch.setattr(DeepImagePrior, "training_step", broken)
        with pytest.raises(RuntimeError, match="breaks"):
            restore(torch.rand(3, 16, 16), overrides=[*keep[:2], "logger=none"])
        assert wandb.run is own
        monkeypatch.undo()  # nor is a fit's that finished: the W&B logger logs into the open run, and leaves it open
        restore(torch.rand(3, 16, 16), output_dir=tmp_path / "logged", overrides=[*keep[:2], "logger=wandb"])
        assert wandb.run is own
        own.log({"after": 1.0})
    finally:
        own.finish()


def test_restore_a_grey_file_into_a_directory(tmp_path, grey_png):
    out = tmp_path / "out"
    result = restore(grey_png, task="inpainting", arch="skip_depth2", output_dir=out,
                     overrides=["trainer.max_steps=2", "logger=csv", "mask=bernoulli"])
    assert result.restored.shape == (1, 1, 47, 61)
    assert json.loads((out / "metrics.json").read_text())["psnr"] == result.metrics["psnr"]
    finished = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    with pytest.raises(DipError, match=f"output_dir {out} holds a finished run .*delete that metrics.json"):
        restore(grey_png, task="inpainting", arch="skip_depth2", output_dir=out, overrides=["trainer.max_steps=3"])
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir()} == finished


@pytest.mark.parametrize("arguments, message", [
    ({"image": torch.rand(3, 8, 8), "task": "denoisng"}, "unknown task 'denoisng' (choose from: demosaicing, denoi"),
    ({"image": torch.full((3, 8, 8), 200.0)}, "image tensor holds values in [200, 200], not in [0, 1] (8-bit"),
    ({"image": torch.rand(3, 8, 8), "observation": torch.rand(3, 8, 8) - 0.1}, "observation tensor holds values in"),
    ({"image": torch.rand(3, 0, 8)}, "image tensor is empty (3x0x8)"),
    ({"image": torch.rand(3, 8, 8, device="meta")}, "image tensor is on the meta device: it has a shape but no values"),
    ({"image": torch.rand(3, 8, 8, dtype=torch.complex64)}, "image tensor is torch.complex64, not real"),
    ({"image": torch.rand(3, 8, 8).to_sparse()}, "image tensor is sparse_coo: pass a dense one (.to_dense())"),
    ({"image": torch.rand(3, 8, 8).index_fill(2, torch.tensor([3]), float("nan"))},
     "image tensor holds 24 NaN value(s) of 192"),  # not "values in [nan, nan]": as if all were NaN
    ({"image": np.random.rand(8, 8, 3)}, "image must be a file path or a torch.Tensor (C x H x W in [0, 1]), not of "
                                         "type numpy.ndarray (torch.from_numpy(a).permute(2, 0, 1)"),
    ({"observation": np.random.rand(8, 8, 3)}, "observation must be a file path or a torch.Tensor"),
    ({"image": Image.new("RGB", (8, 8))}, "image must be a file path or a torch.Tensor (C x H x W in [0, 1]), not of "
                                          "type PIL.Image.Image"),
    ({"image": 5}, "image must be a file path or a torch.Tensor (C x H x W in [0, 1]), not of type int"),
    ({"image": torch.rand(3, 8, 8), "generator": "net"}, "generator must be a torch.nn.Module, not of type str"),
])
def test_bad_input_is_one_line_as_on_the_command_line(arguments, message):
    with pytest.raises(DipError) as refused:
        restore(**arguments, overrides=["trainer.max_steps=1"])
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_an_output_dir_under_the_home_folder_is_there(tmp_path, monkeypatch):
    """As an input file's path: output_dir='~/restored' made a folder named ~ in the working directory."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = restore(torch.rand(3, 8, 8), output_dir="~/restored", overrides=["trainer.max_steps=1"])
    assert result.output_dir == tmp_path / "restored" and (tmp_path / "restored" / "metrics.json").is_file()
    assert not (tmp_path / "~").exists()


def test_a_result_image_can_be_restored_again():
    """A result's images are 1 x C x H x W: they go back in as they are (as a restored image, observed)."""
    first = restore(torch.rand(3, 16, 16), overrides=["trainer.max_steps=1"])
    again = restore(observation=first.restored, overrides=["trainer.max_steps=1"])
    assert again.observation.shape == first.restored.shape == (1, 3, 16, 16)


def test_a_colour_ground_truth_tensor_of_a_grey_observation_is_compared_in_grey():
    """As a colour ground-truth file would be read: Pillow's luma, so PSNR compares one channel with one."""
    truth = torch.rand(3, 16, 16)
    grey = (0.299 * truth[0] + 0.587 * truth[1] + 0.114 * truth[2])[None]
    result = restore(truth, observation=grey.clone(), overrides=["trainer.max_steps=1"])
    assert result.ground_truth.shape == (1, 1, 16, 16)
    assert torch.allclose(result.ground_truth[0], grey, atol=1e-6)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_data_mode_converts_a_tensor_as_it_converts_a_file(mode, channels):
    image = torch.rand(3 if mode == "L" else 1, 16, 16)
    result = restore(image, overrides=["trainer.max_steps=1", f"data.mode={mode}"])
    assert result.observation.shape[1] == result.ground_truth.shape[1] == channels


def test_a_config_folder_of_ones_own_from_python(tmp_path):
    mine = tmp_path / "my_conf"
    (mine / "arch").mkdir(parents=True)
    (mine / "arch" / "narrow.yaml").write_text("defaults: [skip_depth2]\nchannels_down: [8, 8]\nchannels_up: [8, 8]\n")
    result = restore(torch.rand(3, 16, 16), arch="narrow",
                     overrides=[f"hydra.searchpath=[file://{mine}]", "trainer.max_steps=1"])
    assert result.metrics["arch"] == "narrow"


def test_demosaicing_restores_three_channels_from_one():
    truth = torch.rand(3, 16, 16)
    result = restore(truth, task="demosaicing", arch="skip_depth2", overrides=["trainer.max_steps=1"])
    assert result.observation.shape == (1, 1, 16, 16) and result.restored.shape == (1, 3, 16, 16)
    assert result.observation[0, 0, 0, 0] == truth[0, 0, 0] and result.observation[0, 0, 1, 1] == truth[2, 1, 1]
    # a real mosaic with its colour original: the original is read in colour, not as its luma
    again = restore(truth, observation=result.observation, task="demosaicing", arch="skip_depth2",
                    overrides=["trainer.max_steps=1"])
    assert again.ground_truth.shape == (1, 3, 16, 16) and again.metrics["psnr_observation"] is not None
    cropped = restore(truth, observation=result.observation, task="demosaicing", arch="skip_depth2",
                      overrides=["trainer.max_steps=1", "data.size=13"])  # at an even offset: the tile's phase kept
    mosaic = BayerMosaic()
    mosaic.prepare(13, 13)
    assert torch.equal(mosaic.A(cropped.ground_truth), cropped.observation)
    assert data_crop_offsets((33, 20), 14, 14) == (8, 2)  # where a guide image or a mask is cut too


def test_noisy_demosaicing_stops_at_the_noise_level_of_its_mosaic():
    result = restore(torch.rand(3, 16, 16), task="demosaicing", arch="skip_depth2",
                     overrides=["task.physics.sigma=25", "early_stop=discrepancy", "early_stop.check_every=1",
                                "early_stop.factor=1e6", "early_stop.delay=0", "trainer.max_steps=3"])
    assert result.metrics["noise_level_step"] == 1 and result.metrics["stop_reason"] == "early stopping"


@pytest.mark.parametrize("arguments, message", [
    ({"image": torch.rand(1, 16, 16)}, "the image tensor has 1 channel(s), but BayerMosaic restores 3"),
    ({"observation": torch.rand(3, 16, 16)}, "the observation tensor: BayerMosaic observes one channel, not 3"),
])
def test_demosaicing_refuses_a_grey_image_or_a_colour_observation(arguments, message):
    with pytest.raises(DipError, match=re.escape(message)):
        restore(**arguments, task="demosaicing", overrides=["trainer.max_steps=1"])


def test_a_degradation_built_in_python_replaces_the_tasks(tmp_path):
    physics = Inpainting(RegionMask(fraction=0.25))
    result = restore(torch.rand(3, 16, 16), task="inpainting", arch="skip_depth2", physics=physics,
                     output_dir=tmp_path, overrides=["trainer.max_steps=1", "logger=csv"])
    assert result.observation[0, :, 8, 8].eq(0).all()  # the region's centre is missing
    assert physics.mask.shape == (1, 1, 1, 1)  # the caller's object is not prepared for this image
    recorded = OmegaConf.load(tmp_path / "csv" / "hparams.yaml")  # the logger's record of the run's settings
    assert recorded["task.physics._target_"] == "dip.physics.inpainting.Inpainting"
    assert recorded["task.physics.given"] == "Inpainting(source=RegionMask(fraction=0.25, cy=0.5, cx=0.5))"
    scaled = restore(torch.rand(3, 16, 16), task="sr_x4", physics=LanczosDownsample(2),
                     overrides=["trainer.max_steps=1"])
    assert scaled.observation.shape == (1, 3, 8, 8) and scaled.metrics["task"] == "LanczosDownsample"  # not sr_x4
    with pytest.raises(DipError, match=re.escape("physics must be a dip.physics.Degradation (a subclass defining "
                                                 "A(x)), not str")):
        restore(torch.rand(3, 16, 16), physics="blur", overrides=["trainer.max_steps=1"])


class TwoConvolutions(torch.nn.Module):
    """A network of one's own: 2 code channels to 3 image channels in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.ReLU(),
                                          torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Sigmoid())

    def forward(self, z):
        return self.layers(z)


def test_a_double_generator_is_fitted_in_float_and_a_degradation_that_rounds_up_is_one_line():
    """Both passed the checks before the fit, then failed at its first step, deep in Lightning."""
    generator = torch.nn.Sequential(torch.nn.Conv2d(8, 3, 3, padding=1), torch.nn.Sigmoid()).double()
    result = restore(torch.rand(3, 33, 47), generator=generator,
                     overrides=["trainer.max_steps=2", "input.channels=8", "trainer.enable_progress_bar=false"])
    assert result.metrics["steps"] == 2 and next(generator.parameters()).dtype == torch.float64  # the caller's

    class EveryOther(LanczosDownsample):  # x[::2, ::2] keeps a 33rd row: its observation rounds up
        def A(self, x):  # noqa: N802
            return x[..., ::2, ::2]

        def observation_size(self, height, width):
            return (height + 1) // 2, (width + 1) // 2

    with pytest.raises(DipError, match=r"EveryOther: solution_size\(observation_size\(33, 47\)\) is 34x48, larger "
                                       r"than the 33x47 image .*: observation_size must round down"):
        restore(torch.rand(3, 33, 47), physics=EveryOther(2), overrides=["trainer.max_steps=2"])


def test_a_generator_built_in_python_replaces_the_arch(tmp_path):
    network = TwoConvolutions()
    before = [parameter.clone() for parameter in network.parameters()]
    result = restore(torch.rand(3, 12, 20), generator=network, output_dir=tmp_path,
                     overrides=["trainer.max_steps=3", "input.channels=2", "logger=csv"])
    assert result.restored.shape == (1, 3, 12, 20) and result.metrics["arch"] == "TwoConvolutions"
    assert all(torch.equal(a, b) for a, b in zip(before, network.parameters()))  # a copy was fitted
    recorded = OmegaConf.load(tmp_path / "csv" / "hparams.yaml")
    assert recorded["arch._target_"] == "tests.test_api.TwoConvolutions" and recorded["arch.given"] == "371 parameters"
    with pytest.raises(DipError, match=re.escape("arch tests.test_api.TwoConvolutions / task denoising: the step fails "
                                                 "on a 1 x 32 x 12 x 20 code (its channels: input.channels)")):
        restore(torch.rand(3, 12, 20), generator=network, overrides=["trainer.max_steps=1"])  # z has 32 channels
    with pytest.raises(DipError, match="a generator given in Python is one network: restarts=2 packs copies"):
        restore(torch.rand(3, 12, 20), generator=network, overrides=["trainer.max_steps=1", "restarts=2"])


@pytest.mark.parametrize("overrides, kind", [("trainer.max_steps=2", "of type str"),
                                              (["trainer.max_steps=1", 2], "a list holding one of type int")])
def test_overrides_must_be_a_list_of_strings(overrides, kind):
    """One string is not one override: Hydra would read its characters as overrides."""
    message = f"overrides must be a list of strings like ['optim.lr=0.01'], not {kind}"
    with pytest.raises(DipError, match=re.escape(message)):
        restore(torch.rand(3, 8, 8), overrides=overrides)


def test_arguments_that_cannot_make_a_fit_are_one_line():
    """A raw TypeError from pathlib, NotImplementedError from the operator, ValueError from the optimizer."""
    with pytest.raises(DipError, match=r"output_dir must be a folder's path \(str or pathlib.Path\), not of type int"):
        restore(torch.rand(3, 8, 8), output_dir=5)

    class Unwritten(Degradation):  # without its A
        pass

    with pytest.raises(DipError, match=r"physics Unwritten defines no A\(x\), the degradation it stands for"):
        restore(torch.rand(3, 8, 8), physics=Unwritten())
    with pytest.raises(DipError, match="generator Sigmoid has no parameters: there is nothing to fit"):
        restore(torch.rand(3, 8, 8), generator=torch.nn.Sigmoid(), overrides=["input.channels=3"])
    frozen = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.Sigmoid()).requires_grad_(False)
    with pytest.raises(DipError, match=r"generator Sequential has no parameters that require a gradient \("):
        restore(torch.rand(3, 8, 8), generator=frozen, overrides=["input.channels=3"])  # was the optimizer's error


@pytest.mark.parametrize("logger", ["logger=none", "logger=wandb"])
def test_an_output_dir_that_a_file_stands_in_is_refused_before_the_run(tmp_path, logger):
    taken = tmp_path / "taken"
    taken.write_text("a file of the user's")
    for output_dir, message in [(taken, f"output_dir {taken}: {taken} is a file, not a folder"),
                                (taken / "run", f"output_dir {taken / 'run'}: {taken} is a file, not a folder")]:
        with pytest.raises(DipError, match=re.escape(message)):
            restore(torch.rand(3, 8, 8), output_dir=output_dir, overrides=["trainer.max_steps=1", logger])
    assert taken.read_text() == "a file of the user's"


def test_an_output_dir_the_file_system_refuses_is_refused_before_the_fit(tmp_path, monkeypatch):
    """The fit ran to its end and only then failed to write (or the W&B logger's folder failed first)."""
    monkeypatch.setattr("dip.api.run", lambda *args, **kwargs: pytest.fail("the fit started"))
    too_long = tmp_path / ("x" * 300)
    with pytest.raises(DipError, match=re.escape(f"output_dir {too_long}: cannot write there (File name too long)")):
        restore(torch.rand(3, 8, 8), output_dir=too_long, overrides=["trainer.max_steps=1"])


def test_an_experiment_is_not_one_restoration():
    """+experiment=NAME makes a figure of several runs; restore() would quietly have made one of its task."""
    with pytest.raises(DipError, match=re.escape("restore() makes one restoration, and +experiment=NAME a figure")):
        restore(torch.rand(3, 16, 16), overrides=["+experiment=fig8_architectures"])


def test_a_ground_truth_of_the_wrong_size_is_named_as_a_file_or_as_a_tensor(tmp_path):
    truth, observed = make_png(tmp_path / "a.png", 32, 32), make_png(tmp_path / "b.png", 10, 10)
    for image, observation, message in [
        (truth, observed, f"ground truth {truth} is 32x32, but the observation {observed} restores to 40x40"),
        (torch.rand(3, 32, 32), torch.rand(3, 10, 10),
         "the ground-truth tensor is 32x32, but the observation tensor restores to 40x40"),
    ]:
        with pytest.raises(DipError, match=re.escape(message)):
            restore(image, observation=observation, task="sr_x4", overrides=["trainer.max_steps=1"])


def test_resuming_from_a_torch_file_that_is_no_checkpoint_says_so(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"a": 1}, other)
    with pytest.raises(DipError) as refused:
        restore(torch.rand(3, 8, 8), overrides=["trainer.max_steps=1", f"resume={other}"])
    assert str(refused.value) == (f"{other} is not a dip checkpoint (it lacks the run's settings and step): name "
                                  f"another with resume=, or leave resume= out")


def test_an_output_dir_another_run_is_writing_into_is_refused_and_one_held_is_let_go(tmp_path):
    """restore() held no folder: a command line run into its output_dir meanwhile wrote its metrics beside the
    call's outputs. A folder the call made and left empty is removed; one it held is let go of after it."""
    busy, tiny = tmp_path / "busy", ["trainer.max_steps=1", "logger=none"]
    with held_elsewhere(busy), pytest.raises(DipError, match=f"^{re.escape(str(busy))} is in use by another run"):
        restore(torch.rand(3, 16, 16), output_dir=busy, overrides=tiny)
    assert list(busy.iterdir()) == []
    with pytest.raises(DipError, match="the generator gives 1 x 1 x 16 x 16"):  # fails after holding the folder
        restore(torch.rand(3, 16, 16), output_dir=tmp_path / "made" / "below", generator=torch.nn.Conv2d(32, 1, 1),
                overrides=tiny)
    assert not (tmp_path / "made").exists()
    restore(torch.rand(3, 16, 16), output_dir=tmp_path / "done", overrides=tiny)
    lock = "import fcntl, os, sys; fcntl.flock(os.open(sys.argv[1], os.O_RDONLY), fcntl.LOCK_EX | fcntl.LOCK_NB)"
    done = subprocess.run([sys.executable, "-c", lock, str(tmp_path / "done")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


STARTED_THEN_SLOW = """
import signal, sys, time, torch
from dip import restore

if sys.argv[2] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Announced(torch.nn.Module):  # says when the fit has started, then takes its time over each step
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(32, 3, 1)

    def forward(self, z):
        if z.device.type != "meta":
            print("fitting", flush=True)
            time.sleep(0.2)
        return torch.sigmoid(self.conv(z))

steps = sys.argv[1]
result = restore(torch.rand(3, 16, 16), generator=Announced(), overrides=[f"trainer.max_steps={steps}", "logger=none"])
print("returned", result.metrics["stop_reason"], result.metrics["steps"], flush=True)
"""


@pytest.mark.parametrize("sent, steps, handler, ends", [
    (signal.SIGTERM, 1000, "default", "the script"),
    (signal.SIGINT, 1000, "default", "the fit"),
    (signal.SIGTERM, 12, "ignore", "nothing"),  # the script's own SIG_IGN: the fit stopped all the same
])
def test_a_scheduler_stop_during_restore_without_a_folder_ends_the_script(sent, steps, handler, ends):
    """SIGTERM (timeout, SLURM, kill) stopped the fit and restore() returned, so the script went on to its next
    fit and exited 0. Ctrl-C still returns the result so far, as in a notebook."""
    script = subprocess.Popen([sys.executable, "-c", STARTED_THEN_SLOW, str(steps), handler], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "fitting\n" in iter(script.stdout.readline, "")  # the fit has started
    script.send_signal(sent)
    stdout, stderr = script.communicate(timeout=120)
    assert (f"{signal.Signals(sent).name}: stopping at step" in stderr) is (ends != "nothing"), stderr[-2000:]
    if ends == "the script":
        assert script.returncode == -sent and "returned" not in stdout
    elif ends == "the fit":
        assert script.returncode == 0 and f"returned interrupted by {signal.Signals(sent).name}" in stdout
    else:
        assert script.returncode == 0 and f"returned None {steps}" in stdout

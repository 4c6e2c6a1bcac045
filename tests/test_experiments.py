"""Every figure of the paper composes and runs at tiny size, writing its plot and numbers."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from dip.config import compose_config
from dip.errors import DipError
from dip.experiments import run_experiment
from dip.images import load_image
from dip.outputs import CHECKPOINT_NAME
from tests.conftest import make_png, run_cli, run_cli_signalled

ROOT = Path(__file__).resolve().parent.parent
TINY = ["logger=none", "trainer.max_steps=2", "metrics_every=1"]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def experiment(name: str, overrides: list[str], output_dir: Path) -> str:
    return run_experiment(compose_config([f"+experiment={name}", *overrides], output_dir), output_dir)


@pytest.fixture(scope="module")
def image_and_mask(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("inpainting")
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.uniform(0, 255, (4, 4, 3)).astype(np.uint8)).resize((40, 40), Image.BICUBIC)
    mask = np.full((40, 40), 255, np.uint8)
    mask[12:28, 12:28] = 0
    image.save(folder / "image.png")
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "image.png", folder / "mask.png"


def test_fig2_from_the_command_line_plots_one_point_per_step(tmp_path):
    out = tmp_path / "out"
    done = run_cli("+experiment=fig2_noise_impedance", "trainer.max_steps=5", "data.size=32", "arch=skip_depth2",
                   "logger=csv", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(out / "fig2_noise_impedance.png").format == "PNG"
    rows = read_csv(out / "curves.csv")
    assert [int(row["step"]) for row in rows] == [1, 2, 3, 4, 5]
    assert set(rows[0]) == {"step", "natural", "noisy", "shuffled", "noise"}
    assert all(float(value) > 0 for row in rows for value in row.values())
    for name in ("natural", "noisy", "shuffled", "noise"):  # each curve is a full run of its own
        assert json.loads((out / name / "metrics.json").read_text())["steps"] == 5
    observations = [load_image(out / name / "observation.png") for name in ("natural", "shuffled")]
    assert observations[0].shape == observations[1].shape == (3, 32, 32)
    assert observations[0].mean().item() == pytest.approx(observations[1].mean().item(), abs=1e-3)  # a permutation


def test_fig3_keeps_the_output_at_each_snapshot(tmp_path):
    summary = experiment("fig3_jpeg_progress", ["data.observation=null", "data.size=32", "experiment.snapshots=[1,2,9]",
                                                "trainer.max_steps=3", "logger=none"], tmp_path)
    progress = json.loads((tmp_path / "fig3_jpeg_progress.json").read_text())
    assert [p["step"] for p in progress["snapshots"]] == [1, 2, 3]  # 9 is never reached; the last step is kept
    assert all(p["psnr"] is not None for p in progress["snapshots"]) and progress["psnr_observation"] is not None
    assert (tmp_path / "fig3_jpeg_progress.png").is_file() and "3:" in summary


def test_fig6_inpaints_at_each_learning_rate(tmp_path, image_and_mask):
    """Under a name of one's own (a config of one's own on the runner), which names its files."""
    image, mask = image_and_mask
    overrides = [f"data.path={image}", f"data.mask={mask}", "experiment.name=my_lrs", "experiment.lrs=[0.1,0.001]",
                 "data.size=32", "arch=skip_depth2", *TINY]
    summary = experiment("fig6_inpainting_lr", overrides, tmp_path)
    assert summary.startswith("my_lrs: lr 0.1: ")
    rows = read_csv(tmp_path / "my_lrs.csv")
    assert [float(row["lr"]) for row in rows] == [0.1, 0.001]
    for lr in ("0.1", "0.001"):
        assert OmegaConf.load(tmp_path / f"lr_{lr}" / "config.yaml").optim.lr == float(lr)
        assert load_image(tmp_path / f"lr_{lr}" / "restored.png").shape == (3, 32, 32)
    assert (tmp_path / "my_lrs.png").is_file() and not list(tmp_path.glob("fig6*"))


def test_fig8_compares_architectures_with_their_own_settings(tmp_path, image_and_mask):
    image, mask = image_and_mask
    experiment("fig8_architectures", [f"data.path={image}", f"data.mask={mask}", "data.size=32",
                                      "experiment.archs=[skip_depth2,unet,resnet]", *TINY], tmp_path)
    rows = read_csv(tmp_path / "fig8_architectures.csv")
    assert [row["arch"] for row in rows] == ["skip_depth2", "unet", "resnet"]
    assert all(float(row["psnr"]) > 0 for row in rows)
    configs = {arch: OmegaConf.load(tmp_path / arch / "config.yaml") for arch in ("skip_depth2", "resnet")}
    assert configs["skip_depth2"].optim.lr == 0.01 and configs["resnet"].optim.lr == 0.001
    assert configs["resnet"].arch_name == "resnet" and configs["skip_depth2"].input.channels == 1
    assert (tmp_path / "fig8_architectures.png").is_file()


def test_fig9_inverts_each_layer_with_both_priors(tmp_path):
    experiment("fig9_preimage", ["task.physics.weights=random", "data.size=64", "experiment.layers=[conv1,fc8]",
                                 *TINY], tmp_path)
    rows = read_csv(tmp_path / "fig9_preimage.csv")
    assert [(row["layer"], row["prior"]) for row in rows] == [("conv1", "dip"), ("fc8", "dip"), ("conv1", "tv"),
                                                             ("fc8", "tv")]
    assert OmegaConf.load(tmp_path / "fc8_tv" / "config.yaml").arch_name == "pixels"
    assert OmegaConf.load(tmp_path / "fc8_dip" / "config.yaml").arch_name == "skip_preimage"
    assert (tmp_path / "fig9_preimage.png").is_file()


def test_two_run_average_averages_runs_on_the_same_observation(tmp_path):
    said = experiment("two_run_average", ["data.size=32", "arch=skip_depth2", *TINY], tmp_path)
    summary = json.loads((tmp_path / "two_run_average.json").read_text())
    assert [run["seed"] for run in summary["runs"]] == [0, 1]
    assert f"PSNR average {summary['psnr_average']:.2f} dB" in said
    runs = [load_image(tmp_path / f"run{i}" / "restored.png") for i in (0, 1)]
    assert not np.array_equal(runs[0], runs[1])  # independent runs
    observations = [load_image(tmp_path / f"run{i}" / "observation.png") for i in (0, 1)]
    assert np.array_equal(observations[0], observations[1])  # of the same noisy image
    average = load_image(tmp_path / "average.png")
    assert np.abs(average - (runs[0] + runs[1]) / 2).max() <= 1.5 / 255  # up to 8-bit rounding
    assert summary["psnr_average"] is not None and (tmp_path / "two_run_average.png").is_file()
    # a figure's numbers that cannot be written (a folder in their place): one line, the sub-runs kept
    (tmp_path / "two_run_average.json").unlink()
    (tmp_path / "two_run_average.json").mkdir()
    with pytest.raises(DipError, match=f"^cannot write {re.escape(str(tmp_path / 'two_run_average.json'))}: Is a "
                                       "directory$"):
        experiment("two_run_average", ["data.size=32", "arch=skip_depth2", *TINY], tmp_path)
    assert (tmp_path / "run1" / "metrics.json").is_file()


def test_two_run_average_of_a_real_observation_says_it_has_no_ground_truth(tmp_path):
    """It printed "PSNR average None dB"."""
    noisy = make_png(tmp_path / "noisy.png", 24, 24)
    said = experiment("two_run_average", [f"data.observation={noisy}", "arch=skip_depth2", *TINY], tmp_path / "out")
    assert said.startswith("two_run_average: no ground truth to score against\n"), said


@pytest.mark.parametrize("name, overrides, message", [
    ("two_run_average", ["experiment.runs=0"], "experiment.runs must be a whole number >= 1, got 0"),
    ("fig8_architectures", ["experiment.archs=[]"], "experiment.archs must list at least one value"),
    ("fig8_architectures", ["experiment.archs=[skip_depth2,skip_deep]"], "unknown arch 'skip_deep'"),
    ("fig6_inpainting_lr", ["experiment.lrs=[0.01,-1]"], "optim.lr must be a finite number > 0, got -1"),
    ("fig2_noise_impedance", ["experiment.sigma=-3"], "experiment.sigma must be a finite number >= 0"),
    # no step of a 2-step run would be recorded: no curve to write, found after the four fits
    ("fig2_noise_impedance", ["experiment.record_every=3"],
     "experiment.record_every must be a whole number from 1 to 2, got 3"),
    ("fig3_jpeg_progress", ["experiment.snapshots=[1,abc]"], "experiment.snapshots must list step numbers"),
    ("fig3_jpeg_progress", ["experiment.snapshots=5"], "experiment.snapshots must list step numbers"),
    ("fig8_architectures", ["experiment.runner=dip.experiments.nope.run"],
     "experiment.runner=dip.experiments.nope.run names no function"),
])
def test_an_experiments_impossible_settings_are_refused_before_any_fit(tmp_path, image_and_mask, name, overrides,
                                                                        message):
    """In process; the command line's one line and removed folder are the test below's."""
    image, mask = image_and_mask
    with pytest.raises(DipError, match=re.escape(message)):
        experiment(name, [*overrides, f"data.path={image}", f"data.mask={mask}", *TINY], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overrides, message", [
    # a later sub-run's network or input that cannot be: found before the first sub-run's fit
    (["+experiment=fig8_architectures", "experiment.archs=[skip_depth2,resnet]", "restarts=2"],
     "restarts=2 packs copies of the generator into one network, which arch 'resnet'"),
    # refused by the Trainer, once the first sub-run's fit starts: its folder goes too
    (["+experiment=fig6_inpainting_lr", "+trainer.foo=1"], "invalid trainer settings"),
])
def test_an_impossible_experiment_is_refused_before_any_fit(tmp_path, image_and_mask, overrides, message):
    image, mask = image_and_mask
    out = tmp_path / "out"
    done = run_cli(*overrides, f"data.path={image}", f"data.mask={mask}", *TINY, f"hydra.run.dir={out}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ") and message in done.stderr
    assert not out.exists()  # no sub-run folder, no Hydra record: nothing was fitted


def test_an_experiment_keeps_its_finished_sub_runs_from_other_settings(tmp_path):
    experiment("two_run_average", ["data.size=32", "arch=skip_depth2", *TINY], tmp_path)
    kept = (tmp_path / "run1" / "metrics.json").read_bytes()
    (tmp_path / "run0" / "metrics.json").unlink()  # run0 may be replaced; run1 holds a finished run
    with pytest.raises(DipError, match=r"run1 holds a finished run with other settings \(trainer.max_steps: 2 -> 3\)"):
        experiment("two_run_average", ["data.size=32", "arch=skip_depth2", "logger=none", "trainer.max_steps=3",
                                       "metrics_every=1"], tmp_path)
    assert (tmp_path / "run1" / "metrics.json").read_bytes() == kept
    assert OmegaConf.load(tmp_path / "run0" / "config.yaml").trainer.max_steps == 2  # no fit started
    summary = json.loads((tmp_path / "two_run_average.json").read_text())
    # the same settings again: run0 is run, the finished run1 reused as it was
    experiment("two_run_average", ["data.size=32", "arch=skip_depth2", *TINY], tmp_path)
    assert json.loads((tmp_path / "run0" / "metrics.json").read_text())["steps"] == 2
    assert (tmp_path / "run1" / "metrics.json").read_bytes() == kept
    assert json.loads((tmp_path / "two_run_average.json").read_text()) == summary  # the same seeds, the same fits


def test_a_sub_run_that_kept_its_checkpoint_continues_to_more_steps_as_run_py_does(tmp_path):
    settings = ["data.size=32", "arch=skip_depth2", "experiment.runs=1", "checkpoint.keep=true", "logger=none",
                "metrics_every=1"]
    experiment("two_run_average", [*settings, "trainer.max_steps=2"], tmp_path)
    kept = (tmp_path / "run0" / "metrics.json").read_bytes()
    experiment("two_run_average", [*settings, "trainer.max_steps=2"], tmp_path)  # finished as asked: reused
    assert (tmp_path / "run0" / "metrics.json").read_bytes() == kept
    experiment("two_run_average", [*settings, "trainer.max_steps=3"], tmp_path)
    metrics = json.loads((tmp_path / "run0" / "metrics.json").read_text())
    assert (metrics["steps"], metrics["resumed_from_step"]) == (3, 2)
    continued = (tmp_path / "run0" / "metrics.json").read_bytes()
    with pytest.raises(DipError, match="already holds 3 steps"):  # refused before any fit
        experiment("two_run_average", [*settings, "trainer.max_steps=2"], tmp_path)
    assert (tmp_path / "run0" / "metrics.json").read_bytes() == continued


def test_recorded_sub_runs_continued_from_their_checkpoints_keep_what_they_recorded_before(tmp_path,
                                                                                           image_and_mask):
    """Fig. 2's loss curves and Fig. 3's snapshots are in the fit's checkpoints: a sub-run continued
    from one (cut short, or kept and given more steps) records from its first step, not from the
    checkpoint's. Fig. 2 on one's own image, cut to data.size, scores each fit against the cut image."""
    image, _ = image_and_mask
    settings = [f"data.path={image}", "data.size=32", "arch=skip_depth2", "checkpoint.keep=true", "logger=none"]
    for steps in (2, 3):
        experiment("fig2_noise_impedance", [*settings, f"trainer.max_steps={steps}"], tmp_path / "fig2")
    assert [int(row["step"]) for row in read_csv(tmp_path / "fig2" / "curves.csv")] == [1, 2, 3]
    assert json.loads((tmp_path / "fig2" / "natural" / "metrics.json").read_text())["resumed_from_step"] == 2
    snapshots = ["data.observation=null", "data.size=32", "arch=skip_depth2", "experiment.snapshots=[1,2]",
                 "checkpoint.keep=true", "logger=none"]
    for steps in (2, 3):
        experiment("fig3_jpeg_progress", [*snapshots, f"trainer.max_steps={steps}"], tmp_path / "fig3")
    progress = json.loads((tmp_path / "fig3" / "fig3_jpeg_progress.json").read_text())["snapshots"]
    assert [p["step"] for p in progress] == [1, 2, 3]
    # kept once more and continued, asking for other snapshots and a coarser curve: what is asked for only
    experiment("fig3_jpeg_progress", [*snapshots[:3], "experiment.snapshots=[]", *snapshots[4:],
                                      "trainer.max_steps=4"], tmp_path / "fig3")
    progress = json.loads((tmp_path / "fig3" / "fig3_jpeg_progress.json").read_text())["snapshots"]
    assert [p["step"] for p in progress] == [4]
    experiment("fig2_noise_impedance", [*settings, "trainer.max_steps=4", "experiment.record_every=2"],
               tmp_path / "fig2")
    assert [int(row["step"]) for row in read_csv(tmp_path / "fig2" / "curves.csv")] == [2, 4]
    # what the checkpoint did not record, or an image the experiment now makes otherwise, is refused: it went
    # on with the old sigma's noisy image, left out snapshots and ended fig. 2 in an IndexError
    kept = {sub: (tmp_path / "fig2" / sub / "checkpoint.ckpt").read_bytes() for sub in ("natural", "noisy")}
    with pytest.raises(DipError, match=r"checkpoint .*noisy/checkpoint.ckpt was made with other settings "
                                       r"\(sub_run.observation: 'tensor:sha256:\w{12}\.\.\.' -> "):
        experiment("fig2_noise_impedance", [*settings, "trainer.max_steps=5", "experiment.record_every=2",
                                            "experiment.sigma=50"], tmp_path / "fig2")
    with pytest.raises(DipError, match=r"checkpoint .*natural/checkpoint.ckpt recorded no loss at step\(s\) 1, 3, "
                                       r"where this run records one every 1 step\(s\)"):
        experiment("fig2_noise_impedance", [*settings, "trainer.max_steps=5"], tmp_path / "fig2")
    assert {sub: (tmp_path / "fig2" / sub / "checkpoint.ckpt").read_bytes() for sub in kept} == kept
    with pytest.raises(DipError, match=r"checkpoint .*checkpoint.ckpt \(at step 4\) holds no snapshot of step\(s\) "
                                       r"1: ask for those it took \(4\)"):
        experiment("fig3_jpeg_progress", [*snapshots[:3], "experiment.snapshots=[1]", *snapshots[4:],
                                          "trainer.max_steps=5"], tmp_path / "fig3")


def test_recorded_sub_runs_finished_before_are_reused_with_their_records_unless_made_otherwise(tmp_path):
    """Fig. 2 and Fig. 3 fitted every sub-run again when run again, and after an interruption the finished
    ones too: what their recorders held was not kept with them."""
    settings = ["data.size=32", "arch=skip_depth2", "logger=none", "trainer.max_steps=3"]

    def finished(folder: Path) -> dict[str, bytes]:
        return {sub.name: (sub / "metrics.json").read_bytes() for sub in sorted(folder.iterdir()) if sub.is_dir()}

    experiment("fig2_noise_impedance", settings, tmp_path / "fig2")
    before, curves = finished(tmp_path / "fig2"), (tmp_path / "fig2" / "curves.csv").read_text()
    experiment("fig2_noise_impedance", settings, tmp_path / "fig2")
    assert finished(tmp_path / "fig2") == before and (tmp_path / "fig2" / "curves.csv").read_text() == curves
    experiment("fig2_noise_impedance", [*settings, "experiment.sigma=50"], tmp_path / "fig2")  # another noisy image
    after = finished(tmp_path / "fig2")
    assert [name for name in before if after[name] != before[name]] == ["noisy"]

    snapshots = ["data.observation=null", *settings, "experiment.snapshots=[1,2]"]
    experiment("fig3_jpeg_progress", snapshots, tmp_path / "fig3")
    before = finished(tmp_path / "fig3")
    experiment("fig3_jpeg_progress", snapshots, tmp_path / "fig3")
    assert finished(tmp_path / "fig3") == before
    experiment("fig3_jpeg_progress", [*snapshots[:-1], "experiment.snapshots=[1,3]"], tmp_path / "fig3")
    assert finished(tmp_path / "fig3") != before  # snapshots it did not take: fitted again
    progress = json.loads((tmp_path / "fig3" / "fig3_jpeg_progress.json").read_text())["snapshots"]
    assert [p["step"] for p in progress] == [1, 3]


def test_a_sub_run_that_stopped_early_and_kept_its_checkpoint_is_finished(tmp_path):
    settings = ["data.size=32", "arch=skip_depth2", "experiment.runs=1", "checkpoint.keep=true", "logger=none",
                "trainer.max_steps=6", "early_stop=discrepancy", "early_stop.check_every=1", "early_stop.factor=1e6",
                "early_stop.delay=0"]
    experiment("two_run_average", settings, tmp_path)
    stopped = (tmp_path / "run0" / "metrics.json").read_bytes()
    assert json.loads(stopped)["stop_reason"] == "early stopping"
    experiment("two_run_average", settings, tmp_path)
    assert (tmp_path / "run0" / "metrics.json").read_bytes() == stopped  # reused, not fitted on past its stop


def test_an_experiment_cut_short_reuses_its_finished_sub_runs(tmp_path, image_and_mask):
    image, mask = image_and_mask
    settings = [f"data.path={image}", f"data.mask={mask}", "experiment.archs=[skip_depth2,unet]", "data.size=32",
                *TINY]
    experiment("fig8_architectures", settings, tmp_path)
    rows = read_csv(tmp_path / "fig8_architectures.csv")
    kept = (tmp_path / "skip_depth2" / "metrics.json").stat().st_mtime_ns
    (tmp_path / "unet" / "metrics.json").unlink()  # as if cut short during the second fit
    experiment("fig8_architectures", settings, tmp_path)
    assert (tmp_path / "skip_depth2" / "metrics.json").stat().st_mtime_ns == kept
    again = read_csv(tmp_path / "fig8_architectures.csv")
    assert again[0] == rows[0]  # reused, its fit seconds included
    assert (again[1]["arch"], again[1]["psnr"]) == ("unet", rows[1]["psnr"])  # run again, the same fit


def test_ctrl_c_while_a_sub_run_is_written_says_how_to_continue(tmp_path, image_and_mask):
    image, mask = image_and_mask
    out = tmp_path / "out"
    done = run_cli_signalled(tmp_path, "dip.experiments.common._write_sub_run", "SIGINT",
                             "+experiment=fig8_architectures",
                             f"data.path={image}", f"data.mask={mask}", "data.size=32",
                             "experiment.archs=[skip_depth2,unet]", *TINY, f"hydra.run.dir={out}")
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.rstrip().endswith(f"interrupted by SIGINT: run the same command again with hydra.run.dir={out} "
                                         "to continue")
    assert (out / "skip_depth2" / "metrics.json").is_file() and not (out / "unet").exists()


@pytest.mark.slow
def test_sigterm_during_an_experiment_then_its_folder_continues_it(tmp_path, image_and_mask):
    """The message names the experiment's folder, not the sub-run's; run again into it, the experiment
    reuses the finished sub-run and continues the one cut short from its checkpoint."""
    image, mask = image_and_mask
    out = tmp_path / "out"
    settings = ["+experiment=fig8_architectures", f"data.path={image}", f"data.mask={mask}", "data.size=32",
                "experiment.archs=[skip_depth2,unet]", "logger=none", "trainer.max_steps=2",
                "checkpoint.every_n_steps=3", f"hydra.run.dir={out}"]
    process = subprocess.Popen([sys.executable, "run.py", *settings,
                                '+experiment.arch_overrides.unet=["trainer.max_steps=100000"]'],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (out / "unet" / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 128 + signal.SIGTERM and "Traceback" not in stderr, stderr
    assert f"run the same command again with hydra.run.dir={out} to continue" in stderr
    step = int(torch.load(out / "unet" / CHECKPOINT_NAME, weights_only=True)["global_step"])
    finished = (out / "skip_depth2" / "metrics.json").stat().st_mtime_ns

    done = run_cli(*settings, f'+experiment.arch_overrides.unet=["trainer.max_steps={step + 2}"]')
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "skip_depth2" / "metrics.json").stat().st_mtime_ns == finished
    metrics = json.loads((out / "unet" / "metrics.json").read_text())
    assert (metrics["resumed_from_step"], metrics["steps"]) == (step, step + 2)
    assert [row["arch"] for row in read_csv(out / "fig8_architectures.csv")] == ["skip_depth2", "unet"]

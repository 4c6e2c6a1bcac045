"""The benchmark runner: datasets, protocol metrics, baselines, concurrency, tables, the CLI."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from skimage import data as skdata

from dip.baselines import BASELINES, BaselineUnavailableError, normalised_fill
from dip.benchmark import (
    ImageJob,
    IncompleteTableError,
    TimeBudget,
    _restoration_key,
    _some_names,
    compute_baselines,
    image_jobs,
    run_benchmark,
)
from dip.config import compose_config
from dip.config_checks import instantiate_settings
from dip.datasets import open_dataset, sha256_of
from dip.errors import DipError, Interrupted
from dip.images import load_image
from dip.metrics import psnr, psnr_y
from dip.outputs import BEFORE_COLLAPSE_OUTPUT
from dip.physics import BernoulliMask, GaussianNoise, Inpainting, RegionMask
from tests.conftest import offline_run_file, offline_summary, run_cli, run_cli_probing_lightning

sha256_hash = hashlib.sha256  # before a test counts the digests begun

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "experiments" / "benchmark.py"
SHARED = Path(os.environ.get("DIP_DATA", ROOT.parent / "shared" / "datasets"))
FAST = ["trainer.max_steps=2", "data.size=48", "logger=none", "metrics_every=1"]


def make_dataset(root: Path, folder: str, names: list[str], mode: str = "RGB", size: int = 48) -> Path:
    """A tiny dataset: crops of scikit-image's astronaut, with a MANIFEST.tsv like the shared ones."""
    directory = root / folder
    directory.mkdir(parents=True)
    rows = ["file\twidth\theight\tmode\tsha256\tsource\tnotes"]
    for index, name in enumerate(names):
        crop = skdata.astronaut()[100 + 40 * index : 100 + 40 * index + size, 150 : 150 + size + 4 * index]
        image = Image.fromarray(crop).convert(mode)
        image.save(directory / name)
        digest = hashlib.sha256((directory / name).read_bytes()).hexdigest()
        rows.append(f"{name}\t{image.width}\t{image.height}\t{mode}\t{digest}\ttest\tsynthetic")
    (directory / "MANIFEST.tsv").write_text("\n".join(rows) + "\n")
    return directory


def read_csv(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


# --- metrics -------------------------------------------------------------------------------------

def test_psnr_y_follows_matlab_rgb2ycbcr_and_shaves_the_border():
    truth = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(0)) * 0.8
    shifted = truth + 0.01  # Y moves by (65.481 + 128.553 + 24.966) * 0.01 = 2.19 on the 0-255 scale
    assert float(psnr_y(shifted, truth, shave=0)) == pytest.approx(20 * np.log10(255 / 2.19), abs=1e-3)
    rgb = truth.numpy()[0].transpose(1, 2, 0)
    luma = 16 + rgb @ np.array([65.481, 128.553, 24.966])
    noisy = (truth + 0.05 * torch.randn_like(truth)).clamp(0, 1)
    noisy_luma = 16 + noisy.numpy()[0].transpose(1, 2, 0) @ np.array([65.481, 128.553, 24.966])
    mse = ((luma - noisy_luma)[4:-4, 4:-4] ** 2).mean()
    assert float(psnr_y(noisy, truth, shave=4)) == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-3)
    border_only = truth.clone()
    border_only[..., :4, :] = 0
    assert float(psnr_y(border_only, truth, shave=4)) > 100  # the shaved border does not count
    assert float(psnr_y(border_only, truth, shave=0)) < 40
    grey = truth[:, :1]
    # grey is scored as its RGB replica (the authors' script): its luma spans 219 of the 255 levels
    assert float(psnr_y(grey + 0.01, grey, shave=0)) == pytest.approx(40.0 + 20 * np.log10(255 / 219), abs=1e-3)
    assert float(psnr_y(grey + 0.01, grey, shave=0)) == pytest.approx(
        float(psnr_y((grey + 0.01).expand(-1, 3, -1, -1), grey.expand(-1, 3, -1, -1), shave=0)), abs=1e-4)


# --- datasets -------------------------------------------------------------------------------------

def test_dataset_checks_name_what_is_missing_or_wrong(tmp_path):
    with pytest.raises(DipError, match=r"dataset Set5 not found: expected the folder .*Set5"):
        open_dataset(tmp_path, "Set5")
    folder = make_dataset(tmp_path, "Set5", ["a.png", "b.png", "c.png"])
    assert [image.name for image in open_dataset(tmp_path, "Set5", ["c.png", "a.png"])] == ["a.png", "c.png"]
    with pytest.raises(DipError, match="nope.png not in"):
        open_dataset(tmp_path, "Set5", ["nope.png"])
    Image.new("RGB", (8, 8)).save(folder / "b.png")
    with pytest.raises(DipError, match=r"checksum mismatch for .*b\.png"):
        open_dataset(tmp_path, "Set5")
    assert len(open_dataset(tmp_path, "Set5", verify_checksums=False)) == 3
    (folder / "c.png").unlink()
    with pytest.raises(DipError, match=r"incomplete: .*c\.png is missing"):
        open_dataset(tmp_path, "Set5", verify_checksums=False)
    (folder / "MANIFEST.tsv").write_text("name\tsize\nx.png\t3\n")
    with pytest.raises(DipError, match="bad dataset manifest .*no column file"):
        open_dataset(tmp_path, "Set5")


def test_a_file_is_digested_once_per_version_of_it(tmp_path, monkeypatch):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"a" * 64)
    reads = []
    monkeypatch.setattr(hashlib, "sha256", lambda: reads.append(1) or sha256_hash())
    assert sha256_of(weights) == sha256_of(tmp_path / "." / "weights.pth") == sha256_hash(b"a" * 64).hexdigest()
    assert len(reads) == 1
    written = weights.stat().st_mtime_ns
    time.sleep(0.02)  # past the file system's clock tick
    weights.write_bytes(b"b" * 64)  # the same size at the same time: what the digest is known by still changes
    os.utime(weights, ns=(written, written))
    assert sha256_of(weights) == sha256_hash(b"b" * 64).hexdigest()
    (tmp_path / "other.pth").write_bytes(b"c" * 64)
    (tmp_path / "other.pth").replace(weights)
    assert sha256_of(weights) == sha256_hash(b"c" * 64).hexdigest()
    assert len(reads) == 3


# --- baselines ------------------------------------------------------------------------------------

def test_fill_keeps_known_pixels_and_fills_scattered_and_large_holes():
    camera = torch.from_numpy(skdata.camera()[200:264, 200:264] / 255.0).float()[None, None]
    ramp = torch.linspace(0.2, 0.8, 64).expand(1, 1, 64, 64)
    for truth, mask in ((camera, BernoulliMask(0.5)), (ramp, RegionMask(0.5))):
        physics = Inpainting(mask)
        physics.prepare(64, 64, torch.Generator().manual_seed(0))
        observation = physics.observe(truth)
        filled = normalised_fill(observation, physics)
        known = physics.mask.bool().expand_as(truth)
        assert torch.equal(filled[known], observation[known])
        assert float(psnr(filled, truth)) > float(psnr(observation, truth)) + 10


def test_denoising_baselines_beat_the_noisy_image():
    truth = torch.from_numpy(skdata.astronaut()[:40, :40] / 255.0).float().permute(2, 0, 1)[None]
    physics = GaussianNoise(25)
    noisy = physics.observe(truth, torch.Generator().manual_seed(0))
    pytest.importorskip("bm3d")
    for name in ("nlm", "cbm3d"):
        assert float(psnr(BASELINES[name].estimate(noisy, physics), truth)) > float(psnr(noisy, truth)) + 3


# --- the runner -----------------------------------------------------------------------------------

def compose(benchmark: str, root: Path, run_dir: Path, *overrides: str):
    return compose_config([f"benchmark={benchmark}", *FAST, f"data.root={root}", *overrides], output_dir=run_dir,
                          config_name="benchmark")


def test_sr_table_has_a_row_per_image_a_mean_row_and_resumes(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png", "woman.png"])
    mean = run_benchmark(compose("set5_x4", root, run_dir), run_dir)

    rows = read_csv(run_dir / "table.csv")
    assert [row["image"] for row in rows] == ["baby.png", "bird.png", "woman.png", "mean"]
    for row in rows[:3]:
        metrics = json.loads((run_dir / "images" / Path(row["image"]).stem / "metrics.json").read_text())
        assert float(row["psnr_y"]) == pytest.approx(metrics["psnr_y"], abs=1e-4)
        assert float(row["bicubic_psnr_y"]) > float(row["psnr_y"])  # two steps do not beat bicubic
        assert (row["seed"], row["steps"], row["width"], row["height"]) == ("0", "2", "48", "48")
        assert row["psnr"] and row["psnr_ema"] and row["bicubic_psnr"] and not row["paper"]
    assert float(rows[3]["psnr_y"]) == pytest.approx(np.mean([float(row["psnr_y"]) for row in rows[:3]]), abs=1e-3)
    assert float(rows[3]["paper"]) == mean["paper"] == 29.9
    table = (run_dir / "table.md").read_text()
    assert "| image | size | PSNR-Y | PSNR-Y EMA | paper | bicubic | PSNR RGB |" in table
    assert "| **mean** |" in table and "| 29.90 |" in table and "4-pixel border shaved" in table

    finished = run_dir / "images" / "bird" / "metrics.json"
    before = finished.stat().st_mtime_ns
    run_benchmark(compose("set5_x4", root, run_dir), run_dir)  # same config: nothing restored again
    assert finished.stat().st_mtime_ns == before
    table_before = (run_dir / "table.csv").read_bytes()
    with pytest.raises(DipError, match=r"images/baby holds a finished run with other settings "
                                       r"\(observation_seed: 0 -> 1; seed: 0 -> 1\)"):
        run_benchmark(compose("set5_x4", root, run_dir, "seed=1"), run_dir)  # refused before any fit
    assert finished.stat().st_mtime_ns == before and (run_dir / "table.csv").read_bytes() == table_before
    shutil.rmtree(run_dir / "images" / "woman")  # restoring it alone with seed=1 would leave two settings here
    with pytest.raises(DipError, match=r"images/baby holds a finished run with other settings"):
        run_benchmark(compose("set5_x4", root, run_dir, "seed=1", "benchmark.restore=[woman.png]"), run_dir)
    assert not (run_dir / "images" / "woman").exists()
    (run_dir / "table.md").unlink()
    (run_dir / "table.md").mkdir()  # a table that cannot be written: the restorations stay, said in one line
    csv_before = (run_dir / "table.csv").stat().st_mtime_ns
    with pytest.raises(IncompleteTableError, match=r"cannot write .*table.md: Is a directory; the restorations are "
                                                   r"in .*images, and the same command writes the table from them"):
        run_benchmark(compose("set5_x4", root, run_dir), run_dir)
    assert finished.stat().st_mtime_ns == before
    # the csv stays the earlier run's, as the markdown does: never a table beside another run's
    assert (run_dir / "table.csv").stat().st_mtime_ns == csv_before and not list(run_dir.glob(".table*"))
    (run_dir / "images" / "bird" / "config.yaml").write_text("{damaged")
    with pytest.raises(DipError, match=r"cannot read .*bird/config.yaml: delete .*bird/metrics.json to restore"):
        run_benchmark(compose("set5_x4", root, run_dir), run_dir)


def test_an_image_cut_mid_fit_continues_from_its_checkpoint(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["bird.png", "baby.png"])
    image_run = run_dir / "images" / "bird"
    run_benchmark(compose("set5_x4", root, run_dir, "checkpoint.keep=true", "benchmark.images=[bird.png]"), run_dir)
    assert (image_run / "checkpoint.ckpt").is_file()
    (image_run / "metrics.json").unlink()  # as if the benchmark had been stopped after step 2
    # another seed: refused before any fit (it failed bird's fit alone, after baby's had run with it)
    with pytest.raises(DipError, match=r"checkpoint .*bird/checkpoint.ckpt was made with other settings .*seed: 0"):
        run_benchmark(compose("set5_x4", root, run_dir, "trainer.max_steps=3", "seed=1"), run_dir)
    assert not (run_dir / "images" / "baby").exists()
    run_benchmark(compose("set5_x4", root, run_dir, "trainer.max_steps=3", "benchmark.images=[bird.png]"), run_dir)
    metrics = json.loads((image_run / "metrics.json").read_text())
    assert (metrics["resumed_from_step"], metrics["steps"]) == (2, 3)
    assert not (image_run / "checkpoint.ckpt").exists()  # a finished image keeps none (checkpoint.keep=false)


def test_ctrl_c_while_an_image_is_written_keeps_it_and_starts_no_other(tmp_path, monkeypatch, capfd):
    """The fit is over: the image is written whole, then the run stops."""
    import dip.benchmark

    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    write_outputs = dip.benchmark.write_outputs

    def press_ctrl_c_first(result, output_dir, files):
        os.kill(os.getpid(), signal.SIGINT)
        write_outputs(result, output_dir, files)

    monkeypatch.setattr(dip.benchmark, "write_outputs", press_ctrl_c_first)
    with pytest.raises(Interrupted):
        run_benchmark(compose("set5_x4", root, run_dir), run_dir)
    assert "SIGINT after the last step: the run was finished first" in capfd.readouterr().err
    assert (run_dir / "images" / "baby" / "metrics.json").is_file()
    assert not (run_dir / "images" / "bird" / "metrics.json").exists() and not (run_dir / "table.md").exists()
    monkeypatch.undo()
    finished = (run_dir / "images" / "baby" / "metrics.json").stat().st_mtime_ns
    run_benchmark(compose("set5_x4", root, run_dir), run_dir)
    assert (run_dir / "images" / "baby" / "metrics.json").stat().st_mtime_ns == finished
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["baby.png", "bird.png", "mean"]


def test_a_packed_fit_cut_mid_fit_continues_from_its_checkpoint(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2", "checkpoint.keep=true"), run_dir)
    (pack,) = (run_dir / "packs").iterdir()
    assert (pack / "checkpoint.ckpt").is_file()
    for stem in ("baby", "bird"):  # as if the benchmark had been stopped after step 2
        (run_dir / "images" / stem / "metrics.json").unlink()
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2", "trainer.max_steps=3"), run_dir)
    for stem in ("baby", "bird"):
        metrics = json.loads((run_dir / "images" / stem / "metrics.json").read_text())
        assert (metrics["resumed_from_step"], metrics["steps"]) == (2, 3)
    assert not (pack / "checkpoint.ckpt").exists()


def test_a_packed_fit_is_not_continued_on_an_image_whose_file_changed(tmp_path, caplog):
    """The pack's checkpoint kept only its first image's file digest: the second image replaced under its
    name was fitted on by a network trained on the old one, reported as a continuation."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    dataset = make_dataset(root, "Set5", ["baby.png", "bird.png"])
    settings = ["images_per_fit=2", "checkpoint.keep=true", "benchmark.baselines=[]"]
    run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    for stem in ("baby", "bird"):  # as if the benchmark had been stopped after step 2
        (run_dir / "images" / stem / "metrics.json").unlink()
    bird = Image.open(dataset / "bird.png")
    bird.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dataset / "bird.png")
    manifest = (dataset / "MANIFEST.tsv").read_text().splitlines()
    digest = hashlib.sha256((dataset / "bird.png").read_bytes()).hexdigest()
    (dataset / "MANIFEST.tsv").write_text("\n".join(
        "\t".join([*row.split("\t")[:4], digest, *row.split("\t")[5:]]) if row.startswith("bird.png") else row
        for row in manifest) + "\n")
    with caplog.at_level(logging.WARNING, logger="dip"):
        run_benchmark(compose("set5_x4", root, run_dir, *settings, "trainer.max_steps=3"), run_dir)
    assert re.search(r"checkpoint\.ckpt was made with other settings \(sub_run\.clean: 'tensor:sha256:\w{12}\.\.\.' "
                     r"-> 'tensor:sha256:\w{12}\.\.\.'; sub_run\.observation: .*restoring its images one at a time",
                     caplog.text)
    for stem in ("baby", "bird"):  # fitted anew, each on its own
        metrics = json.loads((run_dir / "images" / stem / "metrics.json").read_text())
        assert (metrics["steps"], "resumed_from_step" in metrics, "packed_with" in metrics) == (3, False, False)


@pytest.mark.parametrize("images_per_fit, keep", [(1, False), (2, True)])
def test_outputs_that_cannot_be_written_keep_the_fit_for_the_same_command_to_finish(tmp_path, images_per_fit,
                                                                                    keep):
    """A folder where bird's restored.png goes (as a full disk would): the fit's checkpoint stays, and
    no image of that fit counts as finished (a packed fit is not split into fits of one, which would
    start again from step 0). Once the way is clear, the same command resumes the fit and writes them
    (with checkpoint.keep, the last step's checkpoint then replaces the one it resumed)."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    settings = [f"images_per_fit={images_per_fit}", "trainer.max_steps=3", "checkpoint.every_n_steps=2",
                "benchmark.baselines=[]", f"checkpoint.keep={keep}"]
    blocked = run_dir / "images" / "bird" / "restored.png"
    blocked.mkdir(parents=True)
    with pytest.raises(DipError, match=f"cannot write {re.escape(str(blocked))}: Is a directory; the checkpoint "
                                       r"\S+ is kept: the same command, once the outputs can be written, resumes"):
        run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    packed = images_per_fit > 1
    checkpoint = (next((run_dir / "packs").iterdir()) if packed else blocked.parent) / "checkpoint.ckpt"
    assert checkpoint.is_file() and not (blocked.parent / "metrics.json").exists()
    assert (run_dir / "images" / "baby" / "metrics.json").exists() is not packed
    blocked.rmdir()
    run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    for stem in ("baby", "bird") if packed else ("bird",):
        metrics = json.loads((run_dir / "images" / stem / "metrics.json").read_text())
        assert (metrics["resumed_from_step"], metrics["steps"], "packed_with" in metrics) == (2, 3, packed)
    assert checkpoint.exists() is keep


@pytest.mark.parametrize("images_per_fit", [1, 2])
def test_a_finished_benchmark_whose_fits_were_kept_goes_on_to_more_steps(tmp_path, images_per_fit):
    """checkpoint.keep=true: a larger trainer.max_steps continues each kept fit and replaces its
    restorations; another seed is still refused, the finished restorations kept."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    settings = [f"images_per_fit={images_per_fit}", "checkpoint.keep=true", "benchmark.baselines=[]"]
    run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    with pytest.raises(DipError, match="holds a finished run with other settings .*seed: 0 -> 1"):
        run_benchmark(compose("set5_x4", root, run_dir, *settings, "seed=1", "trainer.max_steps=3"), run_dir)
    run_benchmark(compose("set5_x4", root, run_dir, *settings, "trainer.max_steps=3"), run_dir)
    for stem in ("baby", "bird"):
        metrics = json.loads((run_dir / "images" / stem / "metrics.json").read_text())
        assert (metrics["resumed_from_step"], metrics["steps"]) == (2, 3)
    assert [row["steps"] for row in read_csv(run_dir / "table.csv")] == ["3", "3", "3"]


def test_a_packed_fit_carried_with_its_run_folder_to_other_paths_continues_there(tmp_path):
    """As from a CPU to a GPU machine: the run folder and the datasets both lie elsewhere there."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2", "checkpoint.keep=true",
                          "benchmark.baselines=[]"), run_dir)
    for stem in ("baby", "bird"):  # as if the benchmark had been stopped after step 2
        (run_dir / "images" / stem / "metrics.json").unlink()
    root, run_dir = (Path(shutil.move(old, new)) for old, new in ((root, tmp_path / "datasets"),
                                                                   (run_dir, tmp_path / "elsewhere" / "run")))
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2", "trainer.max_steps=3",
                          "benchmark.baselines=[]"), run_dir)
    for stem in ("baby", "bird"):
        metrics = json.loads((run_dir / "images" / stem / "metrics.json").read_text())
        assert (metrics["resumed_from_step"], metrics["steps"]) == (2, 3)


def test_restorations_carried_from_another_machine_are_reused(tmp_path):
    """A sub-run's config, metrics and baselines, copied from a run with another data root, run
    folder (another checkout or machine), image selection, thread count and speed switches, count as
    finished, also from before a setting was added at the value its absence meant: only the missing
    image is restored."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    run_benchmark(compose("set5_x4", root, run_dir), run_dir)
    other_root, other_run = tmp_path / "elsewhere" / "datasets", tmp_path / "elsewhere" / "run"
    shutil.copytree(root, other_root)
    carried = other_run / "images" / "bird"
    carried.mkdir(parents=True)
    for name in ("config.yaml", "metrics.json", "baselines.json"):
        shutil.copy2(run_dir / "images" / "bird" / name, carried / name)
    metrics = json.loads((carried / "metrics.json").read_text())
    (carried / "metrics.json").write_text(json.dumps(dict(metrics, device_name="NVIDIA H100 80GB HBM3")))
    config = yaml.safe_load((carried / "config.yaml").read_text())
    assert (config.pop("backtrack_against"), config.pop("diverged_gradient")) == ("last", "keep")
    (carried / "config.yaml").write_text(yaml.safe_dump(config))
    for other in ({"backtrack_against": "best"}, {"diverged_gradient": "drop"}):
        assert _restoration_key(config | other) != _restoration_key(config)
    before = (carried / "metrics.json").stat().st_mtime_ns

    elsewhere = ["benchmark.images=[baby.png,bird.png]", "baseline_jobs=2", "speed=exact"]
    run_benchmark(compose("set5_x4", other_root, other_run, *elsewhere), other_run)
    assert (carried / "metrics.json").stat().st_mtime_ns == before
    assert not (carried / "restored.png").exists() and not (carried / "baseline_bicubic.png").exists()
    assert (other_run / "images" / "baby" / "restored.png").is_file()
    rows = read_csv(other_run / "table.csv")
    assert [row["image"] for row in rows] == ["baby.png", "bird.png", "mean"]
    assert rows[0]["seconds"] and not rows[2]["seconds"]  # no mean of fit times from two devices
    table = (other_run / "table.md").read_text()
    assert "on CPU (1 image), NVIDIA H100 80GB HBM3 (1 image)" in table
    assert "1 restoration(s) reused, finished by an earlier run" in table
    # the table again, from what is finished: nothing runs, so the run line claims no processes or rate
    run_benchmark(compose("set5_x4", other_root, other_run, *elsewhere), other_run)
    run_line = next(line for line in (other_run / "table.md").read_text().splitlines() if line.startswith("- run:"))
    assert run_line.endswith("all 2 restorations finished by earlier runs (each image's fit seconds below)")


def test_denoising_runs_worker_processes_pinned_to_gpus_and_classical_baselines(tmp_path, monkeypatch):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "bm3d_color", ["one.png", "two.png"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")  # two "GPUs": workers pin to them, then find no CUDA
    run_benchmark(compose("cset9_denoise25", root, run_dir, "jobs_per_gpu=1", "data.size=32"), run_dir)
    rows = read_csv(run_dir / "table.csv")
    assert [row["image"] for row in rows] == ["one.png", "two.png", "mean"]
    metrics = [json.loads((run_dir / "images" / name / "metrics.json").read_text()) for name in ("one", "two")]
    # each worker pinned to one of the GPUs (which worker takes which image is up to the pool)
    assert {m["gpus_visible"] for m in metrics} <= {"4", "7"}
    for row, m in zip(rows, metrics):
        assert float(row["nlm_psnr"]) > m["psnr_observation"] + 3
    table = (run_dir / "table.md").read_text()
    assert "2 process(es) on 2 GPU(s)" in table and "| NLM |" in table and "paper (EMA)" in table
    try:
        import bm3d  # noqa: F401
    except ImportError:
        assert "CBM3D skipped: the bm3d package is not installed" in table
    else:
        assert all(float(row["cbm3d_psnr"]) > float(row["nlm_psnr"]) - 3 for row in rows)


def test_time_budget_starts_what_the_slowest_rate_so_far_finishes_in_time():
    now = [0.0]
    budget = TimeBudget(100, clock=lambda: now[0])

    def job(pixels: int, steps: int = 10, restarts: int = 1) -> ImageJob:
        config = {"trainer": {"max_steps": steps}, "restarts": restarts}
        return ImageJob("x.png", config, Path("x"), "rgb", 0, (pixels, 1))

    assert budget.allows(job(10**9))  # nothing finished: no estimate, so it starts
    budget.record(job(100), {"steps": 10, "seconds": 10.0, "warmup_seconds": 0.0})  # 0.01 s per pixel-step
    budget.record(job(100, restarts=2), {"steps": 10, "seconds": 10.0, "warmup_seconds": 0.0})  # the slowest rate stays
    assert budget.estimate(job(200, restarts=2)) == pytest.approx(40.0)
    now[0] = 60.0
    assert budget.allows(job(400))  # 40 s of 40 left
    assert not budget.allows(job(200, restarts=2, steps=11))
    budget.record(job(100), {"steps": 10, "resumed_from_step": 5, "seconds": 10.0, "warmup_seconds": 0.0})
    assert budget.estimate(job(100)) == pytest.approx(20.0)  # 10 s for 5 steps
    # a compiled fit: 15 s of compiling, then the same rate; a small image pays the compiling in full
    budget.record(job(400), {"steps": 10, "seconds": 95.0, "warmup_seconds": 15.0})
    assert budget.estimate(job(10)) == pytest.approx(15.0 + 0.02 * 10 * 10)
    assert TimeBudget(None).allows(job(10**9))
    with pytest.raises(DipError, match="time_budget_s must be a positive number of seconds, got 0"):
        TimeBudget(0)


@pytest.mark.slow
def test_a_time_budget_leaves_the_images_that_would_not_finish_for_a_later_run(tmp_path, monkeypatch):
    """With time_budget_s, the two workers start an image each (nothing measured yet); the third would
    not finish in time, so it waits. The table covers the two and says so; the same command with no
    budget then restores only the third."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png", "woman.png"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,7")  # two workers
    settings = ["jobs_per_gpu=1", "benchmark.baselines=[]"]
    mean = run_benchmark(compose("set5_x4", root, run_dir, *settings, "time_budget_s=0.01"), run_dir)
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["baby.png", "bird.png", "mean"]
    assert mean["paper"] is None  # the paper's mean is over all five images, not these
    table = (run_dir / "table.md").read_text()
    assert "not started, as they would not have finished within time_budget_s=0.01: woman.png" in table
    assert not (run_dir / "images" / "woman" / "metrics.json").exists()
    run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["baby.png", "bird.png", "woman.png", "mean"]
    assert "2 restoration(s) reused" in (run_dir / "table.md").read_text()


@pytest.mark.parametrize("gpus", ["", pytest.param("4,7", marks=pytest.mark.slow)])  # here; two worker processes
def test_a_failed_fit_leaves_the_others_to_finish_then_is_retried(tmp_path, monkeypatch, gpus):
    """An image too small for x4 fails its fit, also when it comes first (whose problem the baselines'
    check would build); the other image is still restored and tabulated, the run line names the failure,
    and the run ends with one line naming it. Once the image is replaced, the same command restores only it."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    directory = make_dataset(root, "Set5", ["baby.png", "bird.png"])
    good = (directory / "baby.png").read_bytes()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(directory / "baby.png")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpus)
    settings = ["jobs_per_gpu=1", "benchmark.baselines=[]", "benchmark.verify_checksums=false"]
    failure = r"^1 image\(s\) failed \(baby.png\): .*baby.png: a 6x6 image is too small for x4"
    with pytest.raises(DipError, match=failure) as error:
        run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    assert "covers the 1 image(s) finished, and the same command retries the failed" in str(error.value)
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["bird.png", "mean"]
    run_line = next(line for line in (run_dir / "table.md").read_text().splitlines() if line.startswith("- run:"))
    assert "; failed (" in run_line and "baby.png: a 6x6 image is too small for x4" in run_line
    assert not (run_dir / "images" / "baby" / "config.yaml").exists()  # written beside metrics.json only
    (directory / "baby.png").write_bytes(good)
    run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["baby.png", "bird.png", "mean"]
    assert "1 restoration(s) reused" in (run_dir / "table.md").read_text()


def test_a_failed_baseline_leaves_the_restorations_in_the_table_then_is_retried(tmp_path, monkeypatch, caplog):
    """A baseline that raises on one image empties that image's cells, not its row: the restorations are
    tabulated, the table says which baseline failed where, and the run ends with one line naming it and
    the file that keeps its traceback (the log has none). The same command computes the baseline again
    and reuses the fits."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    bicubic, calls = BASELINES["bicubic"], []

    def fails_on_bird(y, physics):  # one baseline thread takes the images in order: baby, then bird
        calls.append(y)
        if len(calls) == 2:
            raise ValueError("no estimate for this one")
        return bicubic.estimate(y, physics)

    monkeypatch.setitem(BASELINES, "bicubic", dataclasses.replace(bicubic, estimate=fails_on_bird))
    settings = ["cpu_jobs=1", "baseline_jobs=1"]
    with pytest.raises(DipError, match=r"^baseline bicubic failed on 1 image\(s\) \(bird.png\): ValueError: no "
                                       r"estimate for this one \(its traceback: .*failure.log\); the table in .* "
                                       r"leaves its cells empty"):
        run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    assert "in fails_on_bird" in (run_dir / "images" / "bird" / "failure.log").read_text()
    assert not any(record.exc_info for record in caplog.records)
    rows = read_csv(run_dir / "table.csv")
    assert [row["image"] for row in rows] == ["baby.png", "bird.png", "mean"]
    assert rows[0]["bicubic_psnr_y"] and not rows[1]["bicubic_psnr_y"] and not rows[2]["bicubic_psnr_y"]
    assert "bicubic failed on bird.png (empty cells; the same command retries it)" in (run_dir / "table.md").read_text()
    assert "bicubic" not in json.loads((run_dir / "images" / "bird" / "baselines.json").read_text())["scores"]

    monkeypatch.setitem(BASELINES, "bicubic", bicubic)
    run_benchmark(compose("set5_x4", root, run_dir, *settings), run_dir)
    rows = read_csv(run_dir / "table.csv")
    assert all(row["bicubic_psnr_y"] for row in rows)
    assert "2 restorations finished by earlier runs" in (run_dir / "table.md").read_text()


def test_saved_baselines_count_for_the_same_image_observation_and_protocol_only(tmp_path, monkeypatch):
    """baselines.json is reused only for the image file, observation and scoring window it was computed
    for; a baseline whose package was missing is not saved, so installing it later fills its cells."""
    root = tmp_path / "data"
    make_dataset(root, "Set5", ["baby.png"])
    cfg = compose("set5_x4", root, tmp_path / "run")
    (job,) = image_jobs(cfg, open_dataset(root, "Set5")[0], tmp_path / "run" / "images" / "baby",
                        instantiate_settings(cfg.task.physics, "task.physics"))
    bicubic, calls = BASELINES["bicubic"], []

    def counted(y, physics):
        calls.append(y)
        return bicubic.estimate(y, physics)

    monkeypatch.setitem(BASELINES, "bicubic", dataclasses.replace(bicubic, estimate=counted))
    shaved = compute_baselines(job, ["bicubic"])["bicubic"]["psnr_y"]
    assert compute_baselines(job, ["bicubic"])["bicubic"]["psnr_y"] == shaved and len(calls) == 1
    whole = compute_baselines(dataclasses.replace(job, shave=0), ["bicubic"])["bicubic"]["psnr_y"]
    assert len(calls) == 2 and whole != shaved
    compute_baselines(dataclasses.replace(job, shave=0, sha256="another image's"), ["bicubic"])
    assert len(calls) == 3

    def missing(y, physics):
        raise BaselineUnavailableError("bicubic skipped: its package is not installed")

    monkeypatch.setitem(BASELINES, "bicubic", dataclasses.replace(bicubic, estimate=missing))
    assert "unavailable" in compute_baselines(job, ["bicubic"])["bicubic"]
    assert json.loads((job.output_dir / "baselines.json").read_text())["scores"] == {}
    monkeypatch.setitem(BASELINES, "bicubic", dataclasses.replace(bicubic, estimate=counted))
    assert compute_baselines(job, ["bicubic"])["bicubic"]["psnr_y"] == shaved and len(calls) == 4


@pytest.mark.parametrize("first, then", [([], []), (["checkpoint.keep=true"], ["trainer.max_steps=3"])])
def test_a_restoration_of_an_image_since_replaced_is_kept_and_refused(tmp_path, first, then):
    """A dataset replaced under the same file names (its manifest updated): the sub-run restored the old
    pixels, so it is neither reused nor overwritten, nor its kept fit continued on the new ones."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png"])
    run_benchmark(compose("set5_x4", root, run_dir, "benchmark.baselines=[]", *first), run_dir)
    shutil.rmtree(root)
    make_dataset(root, "Set5", ["other.png", "baby.png"])  # baby.png now holds the second crop
    finished = (run_dir / "images" / "baby" / "metrics.json").read_bytes()
    with pytest.raises(DipError, match=rf"^{re.escape(str(run_dir / 'images' / 'baby'))} holds a restoration of "
                                       r"another baby.png \(sha256 \w{12}\.\.\., the dataset's is \w{12}\.\.\.\)"):
        run_benchmark(compose("set5_x4", root, run_dir, "benchmark.baselines=[]", "benchmark.images=[baby.png]",
                              *first, *then), run_dir)
    assert (run_dir / "images" / "baby" / "metrics.json").read_bytes() == finished


def test_images_whose_names_share_a_stem_are_refused_before_any_fit(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["x.png", "x.bmp"])
    with pytest.raises(DipError, match=r"x.png and x.bmp in .*Set5 would share the sub-run images/x: rename one"):
        run_benchmark(compose("set5_x4", root, run_dir), run_dir)
    assert not (run_dir / "images").exists()


@pytest.mark.slow
def test_a_table_of_bf16_fits_says_so(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png"])
    run_benchmark(compose("set5_x4", root, run_dir, "benchmark.baselines=[]", "benchmark.verify_checksums=false",
                          "trainer.precision=bf16-mixed"), run_dir)
    settings = next(line for line in (run_dir / "table.md").read_text().splitlines() if line.startswith("- settings"))
    assert "EMA weight 0.99, trainer.precision bf16-mixed (the generator's arithmetic), seed 0" in settings


def test_restore_adds_one_image_to_a_table_of_images_finished_elsewhere(tmp_path):
    """benchmark.restore: a run seeded with another run's finished sub-runs restores only the images
    named (and computes only their baselines), and its table covers those finished before too; []
    restores nothing and only remakes the table. A name outside the selection, or nothing restored at
    all, is an error, not an empty table."""
    root, elsewhere, run_dir = tmp_path / "data", tmp_path / "elsewhere", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png", "woman.png"])
    settings = ["benchmark.baselines=[]", "cpu_jobs=1"]
    run_benchmark(compose("set5_x4", root, elsewhere, "cpu_jobs=1", "benchmark.restore=[bird.png]"), elsewhere)
    for name in ("metrics.json", "baselines.json"):  # no baseline for an image left out of the table either
        assert sorted(path.parent.name for path in elsewhere.glob(f"images/*/{name}")) == ["bird"]

    shutil.copytree(elsewhere / "images", run_dir / "images")
    run_benchmark(compose("set5_x4", root, run_dir, *settings, "benchmark.restore=[woman.png]"), run_dir)
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["bird.png", "woman.png", "mean"]
    table = (run_dir / "table.md").read_text()
    assert "1 restoration(s) reused" in table
    assert "not started, as they are outside benchmark.restore: baby.png" in table
    assert not (run_dir / "images" / "baby" / "metrics.json").exists()

    (run_dir / "table.csv").unlink()
    fitted = (run_dir / "images" / "woman" / "metrics.json").stat().st_mtime_ns
    run_benchmark(compose("set5_x4", root, run_dir, *settings, "benchmark.restore=[]"), run_dir)
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["bird.png", "woman.png", "mean"]
    assert "all 2 restorations finished by earlier runs" in (run_dir / "table.md").read_text()
    assert (run_dir / "images" / "woman" / "metrics.json").stat().st_mtime_ns == fitted

    with pytest.raises(DipError, match=r"benchmark.restore names head.png, not among the images of this benchmark"):
        run_benchmark(compose("set5_x4", root, run_dir, *settings, "benchmark.restore=[head.png]"), run_dir)
    empty = tmp_path / "empty"
    with pytest.raises(DipError, match=r"restore=\[\] only tabulates, but no image of set5_x4 is restored in .*empty"):
        run_benchmark(compose("set5_x4", root, empty, *settings, "benchmark.restore=[]"), empty)
    assert not empty.exists()


def test_images_of_one_size_share_a_fit_and_each_is_scored_on_its_own(tmp_path):
    """images_per_fit=2: two of the three 48 px images are restored by one packed fit (curves in its
    folder under packs/), the third by a fit of its own; each image's metrics come from its own
    observation (its bicubic baseline is the one baselines.json scores) and name the images packed
    with it. A second run, one image per fit, reuses all three."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png", "woman.png"])
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2", "logger=csv"), run_dir)
    (pack,) = (run_dir / "packs").iterdir()  # the packed fit's own folder, with its curves
    assert pack.name.startswith("baby+1-") and (pack / "csv" / "metrics.csv").is_file()
    assert not (run_dir / "images" / "baby" / "csv").exists()
    assert (run_dir / "images" / "woman" / "csv" / "metrics.csv").is_file()
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == ["baby.png", "bird.png", "woman.png", "mean"]
    metrics = {stem: json.loads((run_dir / "images" / stem / "metrics.json").read_text())
               for stem in ("baby", "bird", "woman")}
    assert metrics["baby"]["packed_with"] == ["bird.png"] and metrics["bird"]["packed_with"] == ["baby.png"]
    assert "packed_with" not in metrics["woman"]
    for stem, image in metrics.items():
        bicubic = json.loads((run_dir / "images" / stem / "baselines.json").read_text())["scores"]["bicubic"]
        assert image["psnr_observation"] == pytest.approx(bicubic["psnr"], abs=1e-3)
    assert metrics["baby"]["psnr_y"] != metrics["bird"]["psnr_y"]
    seconds = {row["image"]: float(row["seconds"]) for row in read_csv(run_dir / "table.csv")}
    assert seconds["baby.png"] == pytest.approx(metrics["baby"]["seconds"] / 2, abs=1e-3)  # its share of the fit
    assert seconds["woman.png"] == pytest.approx(metrics["woman"]["seconds"], abs=1e-3)
    assert "fits of several images (images_per_fit): baby.png, bird.png; each one's fit s is its share" in (
        run_dir / "table.md").read_text()

    run_benchmark(compose("set5_x4", root, run_dir), run_dir)  # one image per fit now: the same restorations
    assert "all 3 restorations finished by earlier runs" in (run_dir / "table.md").read_text()


def room_for_one_image_and_a_half(module, device, precision="32-true", kept=(0, 0)):
    """The real memory check on a device with room for one and a half of the module's images."""
    import dip.memory

    per_image = dip.memory.checked_estimate(module, precision, kept).total / module.restarts
    available = int(1.5 * per_image / dip.memory.HEADROOM)
    return dip.memory.check_memory_fits(module, device, precision, kept, available=available)


def restore_with_room_for_one_image_and_a_half(pack):
    """``restore_pack`` on that device: module-level, so that a spawned worker process imports it."""
    import dip.benchmark
    import dip.pipeline

    dip.pipeline.check_memory_fits = room_for_one_image_and_a_half  # this worker's own module
    return dip.benchmark.restore_pack(pack)


def assert_restored_alone(run_dir: Path, stems: list[str]) -> None:
    for stem in stems:
        assert "packed_with" not in json.loads((run_dir / "images" / stem / "metrics.json").read_text())
    assert [row["image"] for row in read_csv(run_dir / "table.csv")] == [f"{stem}.png" for stem in stems] + ["mean"]


def test_a_packed_fit_short_of_memory_gives_its_images_fits_of_their_own(tmp_path, monkeypatch, caplog):
    """Two images packed need about twice one image's memory: on a device with room for one and a
    half (the real memory check, told how much is free), the packed fit is refused and costs the run
    nothing: each image is restored alone. Two CPU jobs were allowed, but with one fit to run the
    benchmark runs it in its own process."""
    import dip.pipeline

    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    monkeypatch.setattr(dip.pipeline, "check_memory_fits", room_for_one_image_and_a_half)
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2", "cpu_jobs=2"), run_dir)
    assert "the packed fit of baby.png, bird.png does not fit in memory (a 48x48 image" in caplog.text
    assert "restoring its images one at a time" in caplog.text
    assert_restored_alone(run_dir, ["baby", "bird"])
    assert "(1 process(es) on the CPU)" in (run_dir / "table.md").read_text()


def test_a_packed_fit_that_fails_otherwise_gives_its_images_fits_of_their_own(tmp_path, monkeypatch, caplog):
    """A packed fit that fails for another reason than memory (here: packing the problems raises) costs
    its images nothing either: each is restored alone, and the run succeeds."""
    import dip.benchmark

    def packing_fails(*args, **kwargs):
        raise RuntimeError("packing broke")

    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    monkeypatch.setattr(dip.benchmark, "stack_problems", packing_fails)
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2"), run_dir)
    assert re.search(r"the packed fit of baby.png, bird.png failed \(RuntimeError: packing broke \(its traceback: "
                     r"\S+/packs/baby\+1-\w+/failure.log\)\); restoring its images one at a time", caplog.text)
    assert_restored_alone(run_dir, ["baby", "bird"])


@pytest.mark.slow
def test_in_worker_processes_a_packed_fit_short_of_memory_falls_back_too(tmp_path, monkeypatch, caplog):
    """The same refusal in a worker process: its error crosses to the main process, which queues the
    pack's images as fits of their own beside the other worker's fit."""
    import dip.benchmark

    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png", "woman.png"])
    monkeypatch.setattr(dip.benchmark, "restore_pack", restore_with_room_for_one_image_and_a_half)
    run_benchmark(compose("set5_x4", root, run_dir, "images_per_fit=2", "cpu_jobs=2"), run_dir)
    assert "the packed fit of baby.png, bird.png does not fit in memory (a 48x48 image" in caplog.text
    assert_restored_alone(run_dir, ["baby", "bird", "woman"])
    assert "(2 process(es) on the CPU)" in (run_dir / "table.md").read_text()


@pytest.mark.parametrize("overrides, message", [
    (["images_per_fit=2", "restarts=2"], "restarts=2 does not combine with packing 2 images"),
    (["images_per_fit=2", "arch=unet"], "packing 2 images packs copies of the generator"),
    (["images_per_fit=0"], "images_per_fit must be a whole number >= 1, got 0"),
    (["images_per_fit=1.5"], "images_per_fit must be a whole number >= 1, got 1.5"),  # was a TypeError
])
def test_impossible_packing_is_one_line_before_any_fit(tmp_path, overrides, message):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png"])
    with pytest.raises(DipError, match=message):
        run_benchmark(compose("set5_x4", root, run_dir, *overrides), run_dir)
    assert not list(run_dir.glob("images/*/metrics.json"))
    assert not list(run_dir.glob("images/*/baselines.json"))  # refused before the baselines start, too


@pytest.mark.parametrize("overrides, message", [
    (["jobs_per_gpu=0"], "jobs_per_gpu must be a whole number >= 1, got 0"),
    (["cpu_jobs=0"], "cpu_jobs must be a whole number >= 1, got 0"),  # was quietly read as 1
    (["baseline_jobs=-2"], "baseline_jobs must be a whole number >= 1, got -2"),
    (["cpu_jobs=1.5"], "cpu_jobs must be a whole number >= 1, got 1.5"),
    (["benchmark.runs=2.5"], "benchmark.runs must be a whole number >= 1, got 2.5"),  # was a TypeError
    (["benchmark.runs=true"], "benchmark.runs must be a whole number >= 1, got True"),  # was one run
    (["benchmark.shave=-1"], "benchmark.shave must be a whole number >= 0, got -1"),  # was a table of nan
    (["benchmark.shave=24"], r"benchmark.shave=24 leaves nothing of baby.png \(48x48\) to score"),  # nan too
    # as super-resolution crops it to a multiple of the factor: 27 px is scored at 24 (a table of nan)
    (["data.size=27", "benchmark.shave=12"], r"benchmark.shave=12 leaves nothing of baby.png \(24x24\) to score"),
    (["benchmark.images=[]"], r"benchmark.images=\[\] names no image to restore.*"),  # was an IndexError
    (["benchmark.images=baby.png"], r"benchmark.images must be a list of file names .* got 'baby.png'"),  # b, a, ...
    (["benchmark.restore=baby.png"], r"benchmark.restore must be a list of file names .* got 'baby.png'"),
])
def test_impossible_orchestration_settings_are_one_line_before_any_fit(tmp_path, overrides, message):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png"])
    with pytest.raises(DipError, match=f"^{message}$"):
        run_benchmark(compose("set5_x4", root, run_dir, *overrides), run_dir)
    assert not run_dir.exists()


def test_the_run_line_names_a_few_images_left_for_later_and_counts_the_rest():
    names = [f"{stem}.png" for stem in ("baboon", "barbara", "bridge", "lenna", "man")]
    assert _some_names(names[:4]) == "baboon.png, barbara.png, bridge.png, lenna.png"
    assert _some_names(names) == "baboon.png, barbara.png, bridge.png and 2 more"


@pytest.mark.parametrize("images_per_fit", [1, 2])
def test_runs_on_one_observation_and_their_average(tmp_path, images_per_fit):
    """benchmark.runs=2: two restorations of one observation, by two fits or (images_per_fit=2) one."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "bm3d_color", ["one.png"])
    run_benchmark(compose("cset9_denoise25", root, run_dir, "benchmark.runs=2", "data.size=32",
                          "benchmark.baselines=[]", f"images_per_fit={images_per_fit}"), run_dir)
    image_dir = run_dir / "images" / "one"
    runs = [image_dir / f"seed{seed}" for seed in (0, 1)]
    packed = [json.loads((run / "metrics.json").read_text()).get("packed_with") for run in runs]
    assert packed == ([None, None] if images_per_fit == 1 else [["one.png"], ["one.png"]])
    observations = [np.asarray(Image.open(run / "observation.png")) for run in runs]
    assert np.array_equal(*observations)  # one noisy image
    outputs = [torch.load(run / "outputs.pt") for run in runs]
    assert not torch.equal(outputs[0]["restored"], outputs[1]["restored"])  # two independent restorations
    truth = torch.from_numpy(np.array(Image.open(root / "bm3d_color" / "one.png"))).permute(2, 0, 1)[None] / 255
    truth = truth[..., 8:40, 8:40]  # the centre crop of data.size=32 from 48 x 48
    row = read_csv(run_dir / "table.csv")[0]
    for suffix in ("", "_ema"):
        average = (outputs[0]["restored" + suffix] + outputs[1]["restored" + suffix]) / 2
        assert float(row["psnr_average" + suffix]) == pytest.approx(float(psnr(average, truth)), abs=1e-3)
        assert (image_dir / f"average{suffix}.png").is_file()
    assert row["seed"] == "0" and float(row["psnr"]) == pytest.approx(
        json.loads((runs[0] / "metrics.json").read_text())["psnr"], abs=1e-4)
    table = (run_dir / "table.md").read_text()
    assert "| PSNR avg of 2 | PSNR EMA avg of 2 |" in table and "2 runs per image (seeds 0 to 1" in table
    assert "paper (avg of 2)" in table and "31.00" in table


def test_packed_restarts_give_the_average_and_what_one_run_scores(tmp_path):
    """restarts=2 restores each image twice in one network: the PSNR columns are their average's, and
    the 'one run' columns the mean of each restart's own PSNR (what a single run scores)."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "bm3d_color", ["one.png"])
    run_benchmark(compose("cset9_denoise25", root, run_dir, "restarts=2", "data.size=32", "benchmark.baselines=[]"),
                  run_dir)
    metrics = json.loads((run_dir / "images" / "one" / "metrics.json").read_text())
    row = read_csv(run_dir / "table.csv")[0]
    assert float(row["psnr"]) == pytest.approx(metrics["psnr"], abs=1e-4)
    # no border shaved here: the protocol's PSNR of each restart is the pipeline's per-restart PSNR
    assert float(row["psnr_restart_mean"]) == pytest.approx(np.mean(metrics["psnr_restarts"]), abs=1e-3)
    assert float(row["psnr_ema_restart_mean"]) == pytest.approx(np.mean(metrics["psnr_ema_restarts"]), abs=1e-3)
    assert metrics["psnr_restarts"][0] != pytest.approx(metrics["psnr_restarts"][1], abs=1e-3)  # independent
    table = (run_dir / "table.md").read_text()
    assert "| PSNR | PSNR EMA | PSNR one run | PSNR EMA one run |" in table and "2 restarts packed" in table


@pytest.mark.parametrize("packing, step", [("images_per_fit=2", 2), ("restarts=2", [2, 2])])
def test_packed_fits_under_the_discrepancy_principle_keep_each_copy_s_step(tmp_path, packing, step):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "bm3d_color", ["one.png", "two.png"])
    # a huge factor: every copy reaches the noise level at the first check, step 2
    run_benchmark(compose("cset9_denoise25", root, run_dir, packing, "data.size=32", "trainer.max_steps=6",
                          "benchmark.baselines=[]", "early_stop=discrepancy", "early_stop.check_every=2",
                          "early_stop.factor=1e6", "early_stop.delay=0"), run_dir)
    rows = read_csv(run_dir / "table.csv")
    for stem, row in zip(("one", "two"), rows):
        metrics = json.loads((run_dir / "images" / stem / "metrics.json").read_text())
        assert metrics["early_stop_step"] == step and metrics["steps"] == 2
        # the last step's EMA (the plain protocol's PSNR here), and with restarts what one of them scores
        assert float(row["psnr_ema_final"]) == pytest.approx(metrics["psnr_ema_final"], abs=1e-4)
        if isinstance(step, list):
            one_run = np.mean(metrics["psnr_ema_final_restarts"])
            assert float(row["psnr_ema_final_restart_mean"]) == pytest.approx(one_run, abs=1e-4)
    assert [row["early_stop_step"] for row in rows] == [str(step)] * 3
    table = (run_dir / "table.md").read_text()
    assert "up to 6 steps, early stopping by DiscrepancyStopping" in table and "| stop step |" in table
    cell = "2/2" if isinstance(step, list) else "2"  # each restart's step
    assert f"| {cell} |" in table


def test_a_table_under_variance_early_stopping_has_no_empty_column_of_the_last_step_s_ema(tmp_path):
    """Only the discrepancy principle records the EMA at the last step; a column of nothing is left out."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "bm3d_color", ["one.png"])
    run_benchmark(compose("cset9_denoise25", root, run_dir, "data.size=32", "trainer.max_steps=4",
                          "benchmark.baselines=[]", "early_stop=wmv", "early_stop.window=2", "early_stop.patience=1",
                          "early_stop.check_every=1"), run_dir)
    header = read_csv(run_dir / "table.csv")[0].keys()
    assert "early_stop_step" in header and "psnr_ema_final" not in header
    assert "| stop step |" in (run_dir / "table.md").read_text()


def test_inpainting_table_quotes_the_paper_and_csc_per_image(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "inpainting_heide", ["barbara.png", "boat.png"], mode="L")
    run_benchmark(compose("heide11_inpaint50", root, run_dir, "benchmark.images=[boat.png]"), run_dir)
    rows = read_csv(run_dir / "table.csv")
    assert [(row["image"], row["paper"], row["reference"]) for row in rows] == [
        ("boat.png", "33.0600", "31.4400"), ("mean", "33.0600", "31.4400")]
    assert float(rows[0]["fill_psnr"]) > 20
    metrics = json.loads((run_dir / "images" / "boat" / "metrics.json").read_text())
    assert metrics["task"] == "inpainting" and metrics["arch"] == "skip"
    assert Image.open(run_dir / "images" / "boat" / "restored.png").mode == "L"  # one output channel
    assert "| image | size | PSNR | PSNR EMA | paper | CSC | fill |" in (run_dir / "table.md").read_text()


# --- the command line -----------------------------------------------------------------------------

def run_script(*arguments: str, data: Path) -> subprocess.CompletedProcess:
    return run_cli(*arguments, script="experiments/benchmark.py", env={"DIP_DATA": str(data), "WANDB_MODE": "offline"})


def test_a_data_root_the_environment_does_not_give_is_one_line_and_leaves_nothing(tmp_path):
    """Left to the job, which may have the variable (hydra.job.env_set): its traceback left the run's folder."""
    out = tmp_path / "out"
    done = run_script("benchmark=set5_x4", "data.root=${oc.env:DIP_TEST_UNSET}", f"hydra.run.dir={out}", data=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("error: data.root: ") and "DIP_TEST_UNSET" in done.stderr
    assert len(done.stderr.splitlines()) == 1 and not out.exists()


def test_missing_dataset_is_one_line_naming_the_folder(tmp_path):
    with pytest.raises(DipError) as error:
        run_benchmark(compose("set14_x8", tmp_path / "nowhere", tmp_path / "run"), tmp_path / "run")
    assert str(error.value) == (f"dataset Set14 not found: expected the folder {tmp_path / 'nowhere' / 'Set14'} "
                                "(set DIP_DATA to the folder holding the datasets)")
    assert not (tmp_path / "run").exists()


def test_cli_missing_dataset_fails_before_lightning_is_imported(tmp_path):
    out = tmp_path / "out"
    done = run_cli_probing_lightning(tmp_path, "benchmark=set5_x4", f"hydra.run.dir={out}",
                                     script="experiments/benchmark.py", env={"DIP_DATA": str(tmp_path / "nowhere")})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    expected = tmp_path / "nowhere" / "Set5"
    assert done.stderr.strip() == (f"error: dataset Set5 not found: expected the folder {expected} "
                                   "(set DIP_DATA to the folder holding the datasets)")
    assert "lightning imported: False" in done.stdout
    assert not out.exists()


def test_cli_restore_outside_the_selection_is_one_line_before_lightning(tmp_path):
    make_dataset(tmp_path / "data", "Set5", ["baby.png", "bird.png"])
    out = tmp_path / "out"
    done = run_cli_probing_lightning(tmp_path, "benchmark=set5_x4", "benchmark.images=[baby.png]",
                                     "benchmark.restore=[bird.png]", f"hydra.run.dir={out}",
                                     script="experiments/benchmark.py", env={"DIP_DATA": str(tmp_path / "data")})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == ("error: benchmark.restore names bird.png, not among the images of this benchmark "
                                   f"({tmp_path / 'data' / 'Set5'}, benchmark.images)")
    assert "lightning imported: False" in done.stdout
    assert not out.exists()


@pytest.mark.slow
def test_cli_keeps_a_partly_failed_benchmark_and_refuses_to_replace_it_with_other_settings(tmp_path):
    directory = make_dataset(tmp_path / "data", "Set5", ["baby.png", "bird.png"])
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(directory / "bird.png")
    out = tmp_path / "out"
    settings = ["benchmark=set5_x4", *FAST, "benchmark.baselines=[]", "benchmark.verify_checksums=false",
                f"hydra.run.dir={out}"]
    done = run_script(*settings, data=tmp_path / "data")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: 1 image(s) failed (bird.png)") and len(done.stderr.splitlines()) == 1
    files = [out / "table.md", out / "benchmark.log", out / ".hydra" / "config.yaml",
             out / "images" / "baby" / "metrics.json"]
    kept = {path: path.read_bytes() for path in files}
    done = run_script(*settings, "seed=1", data=tmp_path / "data")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"error: {out / 'images' / 'baby'} holds a finished run with other settings "
                                   "(observation_seed: 0 -> 1; seed: 0 -> 1): run into another folder, or delete its "
                                   "metrics.json to replace that run")
    assert {path: path.read_bytes() for path in kept} == kept


def test_cli_keeps_the_log_of_a_benchmark_whose_every_image_failed(tmp_path):
    """Fits ran, for hours perhaps: the log that says how they failed stays, though there is no table
    (here the one image's outputs cannot be written: a folder stands where restored.png goes)."""
    make_dataset(tmp_path / "data", "Set5", ["bird.png"])
    out = tmp_path / "out"
    (out / "images" / "bird" / "restored.png").mkdir(parents=True)
    done = run_script("benchmark=set5_x4", *FAST, "benchmark.baselines=[]", f"hydra.run.dir={out}",
                      data=tmp_path / "data")
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith("error: 1 image(s) failed (bird.png)") and "; no table" in done.stderr
    assert "restored.png: Is a directory" in (out / "benchmark.log").read_text()
    assert not (out / "table.md").exists()


@pytest.mark.skipif(not (SHARED / "Set5" / "MANIFEST.tsv").is_file(), reason=f"no shared datasets at {SHARED}")
def test_cli_set5_x4_on_the_shared_dataset(tmp_path):
    out = tmp_path / "out"
    result = run_script("benchmark=set5_x4", "trainer.max_steps=2", "data.size=64", f"hydra.run.dir={out}",
                        data=SHARED)
    assert result.returncode == 0, result.stderr[-2000:]
    table = (out / "table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| image")]
    assert [row.split(" | ")[0] for row in rows] == [
        "| baby.png", "| bird.png", "| butterfly.png", "| head.png", "| woman.png", "| **mean**"]
    assert "| 29.90 |" in rows[-1]
    assert len(list(out.glob("images/*/metrics.json"))) == 5
    assert len(list(out.glob("images/*/wandb/offline-run-*"))) == 5  # one W&B run per image


@pytest.mark.parametrize("images_per_fit", [1, 2])
def test_an_image_s_w_and_b_summary_has_the_table_s_psnr(tmp_path, images_per_fit):
    """The protocol's PSNRs (super-resolution's psnr_y) were added to metrics.json after the W&B run had ended; a
    packed fit's run has each image's."""
    names = ["baby.png", "bird.png"][:images_per_fit]
    make_dataset(tmp_path / "data", "Set5", names)
    out = tmp_path / "out"
    done = run_script("benchmark=set5_x4", "trainer.max_steps=2", "data.size=48", "benchmark.baselines=[]",
                      "logger=wandb", f"images_per_fit={images_per_fit}", f"hydra.run.dir={out}",
                      data=tmp_path / "data")
    assert done.returncode == 0, done.stderr[-2000:]
    (fit_folder,) = {path.parent.parent for path in out.glob("**/wandb/offline-run-*")}
    summary = offline_summary(offline_run_file(fit_folder))
    metrics = [json.loads((out / "images" / Path(name).stem / "metrics.json").read_text()) for name in names]
    keys = ("psnr_y", "psnr_y_ema", "psnr")
    if images_per_fit == 1:
        assert {key: summary[key] for key in keys} == {key: pytest.approx(metrics[0][key]) for key in keys}
    else:
        assert summary["image"] == names
        assert {key: summary[key] for key in keys} == {key: pytest.approx([m[key] for m in metrics]) for key in keys}


def file_results(*args, **env) -> subprocess.CompletedProcess:
    """bash experiments/file_results.sh ARGS, with ``env`` added to the environment."""
    return subprocess.run(["bash", str(ROOT / "experiments" / "file_results.sh"), *map(str, args)],
                          capture_output=True, text=True, env={**os.environ, **env})


def test_filing_a_device_archive_merges_finished_restorations_into_progress(tmp_path):
    """experiments/file_results.sh: a device call's archive adds the images it finished to the
    progress folder of the label its run names (a run made faster files with the others), keeps those
    already there, skips unfinished ones, files each fit's PSNR curve with the call's results under the
    run's own folder, and writes nothing from a bad archive."""
    call = tmp_path / "call"
    label = call / "set5_x4_speed_fast" / "images"
    label.mkdir(parents=True)
    (label.parent / "label").write_text("set5_x4\n")
    for image, files in {"baby": ("config.yaml", "metrics.json", "baselines.json"), "bird": ("metrics.json",),
                         "head": ("baselines.json",)}.items():
        (label / image).mkdir(parents=True)
        for name in files:
            (label / image / name).write_text(f"{image} from the device")
    (label / "bird" / "config.yaml").write_text("bird config")
    (label / "bird" / "csv").mkdir()
    (label / "bird" / "csv" / "metrics.csv").write_text("psnr,psnr_ema,step\n20.5,19.0,49\n")
    (label / "bird" / "seed1" / "csv").mkdir(parents=True)  # a run of benchmark.runs=N: its curve only
    (label / "bird" / "seed1" / "csv" / "metrics.csv").write_text("psnr,psnr_ema,step\n20.7,19.2,49\n")
    for seed in ("seed0", "seed1"):  # benchmark.runs=2, finished: averaged from outputs.pt, not kept in progress
        (label / "kid" / seed).mkdir(parents=True)
        (label / "kid" / seed / "metrics.json").write_text("kid from the device")
    (call / "bench-main.json").write_text("{}")
    (call / "log.txt").write_text("Epoch 0:  50%|#####\r[1/2] baby.png: psnr 30.1 dB\nEpoch 0: 100%\n")
    archive = tmp_path / "results.tar.gz"
    subprocess.run(["tar", "czf", str(archive), "-C", str(call), "."], check=True)
    progress = tmp_path / "progress"
    (progress / "set5_x4" / "images" / "bird").mkdir(parents=True)
    (progress / "set5_x4" / "images" / "bird" / "metrics.json").write_text("bird finished earlier")

    dest = tmp_path / "results"
    merged = file_results(archive, dest, progress)
    assert merged.returncode == 0 and merged.stdout == "merged set5_x4/baby\n"
    assert merged.stderr == (f"note: kept set5_x4/bird as it is in {progress}; this run's fit of it differs "
                             "(its config.yaml?)\n"
                             "note: not merged set5_x4/kid: its benchmark.runs=N restorations are averaged from "
                             f"their outputs.pt, which {progress} does not keep\n")
    kept = progress / "set5_x4" / "images"
    assert (kept / "baby" / "baselines.json").read_text() == "baby from the device"
    assert (kept / "bird" / "metrics.json").read_text() == "bird finished earlier"
    assert not (kept / "head").exists() and not (kept / "kid").exists()
    assert (dest / "bench-main.json").is_file()
    assert (dest / "log-summary.txt").read_text() == "[1/2] baby.png: psnr 30.1 dB\n"
    assert sorted(path.name for path in (dest / "set5_x4_speed_fast" / "curves").iterdir()) == ["bird", "bird.csv"]
    assert (dest / "set5_x4_speed_fast" / "curves" / "bird" / "seed1.csv").read_text().endswith("20.7,19.2,49\n")
    assert (dest / "set5_x4_speed_fast" / "curves" / "bird.csv").read_text().endswith("20.5,19.0,49\n")

    broken = tmp_path / "broken.tar.gz"
    broken.write_text("not an archive")
    failed = file_results(broken, tmp_path / "none", progress)
    assert failed.returncode == 1 and failed.stderr.strip() == f"error: cannot unpack {broken}"
    assert not (tmp_path / "none").exists()


def test_filing_a_run_folder_adds_its_image_and_its_wider_table_to_progress(tmp_path):
    """experiments/file_results.sh on a run folder of the runner: its label is the benchmark's name
    plus the overrides that change the restoration (not speed or images_per_fit, which only orchestrate);
    a packed fit's curve is filed beside the images'; the new image joins the progress folder (an image
    copied in from elsewhere that the run neither fitted nor tabulated does not), and the
    run's table replaces the progress table when it covers every image of it, not otherwise."""
    root, run_dir, progress = tmp_path / "data", tmp_path / "run", tmp_path / "progress"
    make_dataset(root, "Set5", ["baby.png", "bird.png", "woman.png"])
    settings = ["benchmark.baselines=[]", "cpu_jobs=1"]
    run_benchmark(compose("set5_x4", root, run_dir, *settings, "benchmark.restore=[bird.png,woman.png]"), run_dir)
    (run_dir / ".hydra").mkdir()
    hydra_config = "task:\n  name: sr\nbenchmark:\n  name: set5_x4\nlogger:\n  name: x\n"  # the benchmark's name
    (run_dir / ".hydra" / "config.yaml").write_text(hydra_config)
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "- benchmark=set5_x4\n- logger=csv\n- trainer.max_steps=2\n- '+data.size=48'\n"
        "- 'benchmark.restore=[bird.png]'\n- checkpoint.every_n_steps=100\n- images_per_fit=2\n- speed=fast\n"
        "- trainer.enable_progress_bar=false\n")
    (run_dir / "packs" / "bird+1-0a1b2c3d" / "csv").mkdir(parents=True)  # a packed fit's curve
    (run_dir / "packs" / "bird+1-0a1b2c3d" / "csv" / "metrics.csv").write_text("psnr,step\n20.0,1\n")
    (run_dir / "benchmark.log").write_text("[1/1] bird.png (seed 0): psnr_y 20.00 dB\n")
    label = "set5_x4_trainer.max_steps_2_+data.size_48"
    (progress / label / "images" / "bird").mkdir(parents=True)
    (progress / label / "images" / "bird" / "metrics.json").write_text("bird finished earlier")
    (progress / label / "table.csv").write_text("image,psnr_y\nbird.png,20.0\nmean,20.0\n")
    foreign = run_dir / "images" / "head"  # copied in from another label's progress; the runner ignored it
    foreign.mkdir()
    (foreign / "metrics.json").write_text("head, finished under other settings")

    filed = file_results(run_dir, tmp_path / "dest", progress)
    assert filed.returncode == 0, filed.stderr
    assert filed.stdout == f"merged {label}/woman\ntable {label}: 2 images\n"
    assert "note: skipped head: this run neither fitted it nor tabulated it" in filed.stderr
    assert not (progress / label / "images" / "head").exists()
    assert (progress / label / "images" / "bird" / "metrics.json").read_text() == "bird finished earlier"
    assert json.loads((progress / label / "images" / "woman" / "metrics.json").read_text())["image"] == "woman.png"
    assert [row["image"] for row in read_csv(progress / label / "table.csv")] == ["bird.png", "woman.png", "mean"]
    assert (tmp_path / "dest" / "log-summary.txt").read_text() == "[1/1] bird.png (seed 0): psnr_y 20.00 dB\n"
    assert (tmp_path / "dest" / label / "table.md").is_file()
    assert (tmp_path / "dest" / label / "curves" / "pack-bird+1-0a1b2c3d.csv").read_text() == "psnr,step\n20.0,1\n"

    (progress / label / "table.csv").write_text("image\nbaby.png\nmean\n")
    again = file_results(run_dir, tmp_path / "dest", progress, LABEL=label)
    assert again.returncode == 0 and again.stdout == ""  # nothing new, and a table without baby stays out
    assert [row["image"] for row in read_csv(progress / label / "table.csv")] == ["baby.png", "mean"]
    not_a_run = file_results(root, tmp_path / "none")
    assert not_a_run.returncode == 1 and "is not a run folder of experiments/benchmark.py" in not_a_run.stderr
    assert not (tmp_path / "none").exists()


def test_device_phase_limit_kills_a_step_that_ignores_sigterm(tmp_path):
    """experiments/gpu_env.sh's `limited`: a command that outlives SIGTERM (as Lightning does while a
    step compiles) is killed after the grace, and what it wrote is in the archive the call returns."""
    script = (f"source {ROOT / 'experiments' / 'gpu_env.sh'} test.sh > /dev/null; "
              "limited 1 bash -c 'trap \"\" TERM; echo measured > \"$0/figures.txt\"; sleep 120' \"$RESULTS\"; "
              "echo \"status $?\"")
    env = {**os.environ, "OUT": str(tmp_path / "out"), "DIP_RESULTS": str(tmp_path / "results"),
           "KILL_AFTER": "1", "PY": sys.executable}
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=150)
    assert done.stdout.strip().splitlines()[-1] == "status 137", done.stderr
    assert time.monotonic() - started < 60
    listed = subprocess.run(["tar", "tzf", str(tmp_path / "out" / "results.tar.gz")], capture_output=True, text=True)
    assert "./figures.txt" in listed.stdout.split()


def test_an_image_whose_fit_collapsed_is_named_under_the_table_with_its_ema_from_before(tmp_path, monkeypatch):
    from dip.callbacks import CollapseGuard

    class SpoiledAtTheEnd(CollapseGuard):  # the real guard, after an EMA gone bad in the last step
        def on_train_end(self, trainer, pl_module):
            pl_module.ema.zero_()
            super().on_train_end(trainer, pl_module)

    monkeypatch.setattr("dip.pipeline.CollapseGuard", SpoiledAtTheEnd)
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png"])
    run_benchmark(compose("set5_x4", root, run_dir, "benchmark.baselines=[]", "cpu_jobs=1", "ema_weight=0.5"),
                  run_dir)
    metrics = json.loads((run_dir / "images" / "baby" / "metrics.json").read_text())
    step = metrics["ema_before_collapse_step"]  # the best of the checks at steps 1 and 2
    assert step in (1, 2) and (run_dir / "images" / "baby" / BEFORE_COLLAPSE_OUTPUT).is_file()
    before = metrics["psnr_y_ema_before_collapse"]  # scored by the benchmark's protocol, as the columns are
    assert before > metrics["psnr_y_ema"] + 3
    assert (f"the fit collapsed at its end (its EMA's data term more than backtrack_db = 5.0 dB above its best): "
            f"baby.png, EMA {before:.2f} dB at step {step} against {metrics['psnr_y_ema']:.2f} at the end") \
        in (run_dir / "table.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_a_stop_of_the_main_process_alone_checkpoints_the_workers_fits_and_leaves_no_process(tmp_path, signum):
    """SIGTERM as `timeout` or a scheduler sends it, SIGHUP as a closed terminal: the main process passes
    it on to its workers' fits (as SIGTERM, which they listen to), each writes its checkpoint, and nothing
    outlives the run. SIGKILL: the workers, orphaned, do the same (they waited for work for good)."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "Set5", ["baby.png", "bird.png", "woman.png"], size=32)
    command = [sys.executable, str(SCRIPT), "benchmark=set5_x4", f"data.root={root}", "data.size=32", "logger=none",
               "cpu_jobs=2", "benchmark.baselines=[]", "trainer.max_steps=100000", "checkpoint.every_n_steps=5",
               f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))  # not nohup's
    deadline = time.monotonic() + 240
    while len(list(run_dir.glob("images/*/checkpoint.ckpt"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)  # its end: the workers' too, which hold the pipe
    if signum == signal.SIGKILL:
        assert process.returncode == -signal.SIGKILL
    else:
        assert process.returncode == 128 + signum, stderr[-3000:]  # as sent: SIGHUP is passed on as SIGTERM
        assert f"interrupted by {signal.Signals(signum).name}: the finished images" in stderr
        assert f"run the same command again with hydra.run.dir={run_dir}" in stderr
    assert "Traceback" not in stderr and stderr.count("SIGTERM: writing a checkpoint at step") == 2, stderr[-3000:]
    assert len(workers) >= 2
    def alive(pid: str) -> bool:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 10  # the resource tracker leaves once the main process has
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)
    assert not (run_dir / "images" / "woman" / "checkpoint.ckpt").exists()  # not started: no fit starts after it


def test_a_demosaicing_table_sets_dip_beside_bilinear_demosaicing(tmp_path):
    root, run_dir = tmp_path / "data", tmp_path / "run"
    make_dataset(root, "kodak24_500crop", ["kodim01.png", "kodim02.png"])
    run_benchmark(compose("kodak24_demosaic", root, run_dir), run_dir)
    rows = read_csv(run_dir / "table.csv")
    assert [row["image"] for row in rows] == ["kodim01.png", "kodim02.png", "mean"]
    assert all(float(row["bilinear_psnr"]) > 20 for row in rows)  # the astronaut's crops, demosaiced bilinearly
    assert "| image | size | PSNR | PSNR EMA | bilinear | fit s |" in (run_dir / "table.md").read_text()  # no paper
    assert load_image(run_dir / "images" / "kodim01" / "observation.png").shape[0] == 1
    assert load_image(run_dir / "images" / "kodim01" / "baseline_bilinear.png").shape[0] == 3

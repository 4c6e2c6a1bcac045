"""Sweeps: grid and Optuna multiruns, the GPU-pinning joblib launcher, submitit's local executor, the
cluster configs, W&B sweep groups, and the compare.py dashboard. Real runs at 32 px, 2-3 steps."""

from __future__ import annotations

import csv
import fcntl
import importlib.util
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra.types import RunMode
from omegaconf import OmegaConf

from dip import sweeps
from dip.checkpoint import CHECKPOINT_NAME, Resumable, check_resumable
from dip.config import compose_config, sweep_name
from dip.loggers import flat_config
from dip.pipeline import make_logger, run
from dip.run_settings import result_settings
from dip.wandb_files import offline_run_records
from tests.conftest import assert_one_line_error, make_png, offline_run_file, run_cli, run_cli_signalled

ROOT = Path(__file__).resolve().parent.parent
TINY = ["trainer.max_steps=3", "metrics_every=1", "data.size=32"]
sys.path.insert(0, str(ROOT / "experiments"))
import compare  # noqa: E402


def multirun(sweep_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = run_cli("-m", *overrides, *TINY, f"hydra.sweep.dir={sweep_dir}",
                     env={"WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


# --- GPU assignment, on the CPU -------------------------------------------------------------------

@pytest.fixture
def fresh_slot(monkeypatch):
    """Each claim acts as a new worker process: forget the slot held, keep its lock file open."""
    held, claim_slot = [], sweeps.claim_slot

    def claim(directory: Path, slots: int) -> int:
        monkeypatch.setattr(sweeps, "_held_slot", None)
        slot = claim_slot(directory, slots)
        held.append(sweeps._held_slot)
        return slot

    claim.held = held
    yield claim
    for _, handle in held:
        handle.close()
    monkeypatch.setattr(sweeps, "_held_slot", None)


def test_claim_slot_gives_each_worker_its_own_slot_until_it_exits(tmp_path, fresh_slot):
    assert [fresh_slot(tmp_path, 3) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="all 3 GPU slots"):
        fresh_slot(tmp_path, 3)
    fresh_slot.held[-1][1].close()  # the last worker exits: the kernel drops its lock
    assert fresh_slot(tmp_path, 3) == 2


def test_a_worker_refused_a_slot_leaves_its_holders_pid_in_the_lock_file(tmp_path, fresh_slot):
    fresh_slot(tmp_path, 2)
    (tmp_path / "slot-1.lock").write_text("12345\n")  # as another worker process left it
    with open(tmp_path / "slot-1.lock", "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="all 2 GPU slots"):
            fresh_slot(tmp_path, 2)
    assert (tmp_path / "slot-1.lock").read_text() == "12345\n"
    assert fresh_slot(tmp_path, 2) == 1 and (tmp_path / "slot-1.lock").read_text() == f"{os.getpid()}\n"


def test_a_worker_keeps_its_slot_across_jobs(tmp_path, monkeypatch):
    monkeypatch.setattr(sweeps, "_held_slot", None)
    try:
        assert sweeps.claim_slot(tmp_path, 4) == sweeps.claim_slot(tmp_path, 4) == 0
    finally:
        sweeps._held_slot[1].close()  # its lock, which the monkeypatch's undo would leave held


def job_config(sweep_dir: Path, num: int, mode=RunMode.MULTIRUN):
    return OmegaConf.create({"hydra": {"mode": mode, "job": {"num": num}, "sweep": {"dir": str(sweep_dir)},
                                       "runtime": {"cwd": str(ROOT)}}})


def test_pin_to_gpu_puts_jobs_per_gpu_workers_on_each_gpu(tmp_path, monkeypatch, fresh_slot):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(sweeps, "claim_slot", fresh_slot)
    pin = sweeps.PinToGPU(jobs_per_gpu=2)
    pin.on_multirun_start(job_config(tmp_path, 0))
    assert pin.gpus == ["3", "5"]
    pinned = []
    for job in range(4):  # four workers, each starting its first job
        pin.on_job_start(job_config(tmp_path, job))
        pinned.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert sorted(pinned) == ["3", "3", "5", "5"]
    with pytest.raises(RuntimeError):  # a fifth concurrent worker would overload a GPU
        pin.on_job_start(job_config(tmp_path, 4))


def test_pin_to_gpu_leaves_single_runs_and_cpu_jobs_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    sweeps.PinToGPU().on_job_start(job_config(tmp_path, 1, RunMode.RUN))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    sweeps.PinToGPU().on_job_start(job_config(tmp_path, 1))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "" and not (tmp_path / ".gpu_slots").exists()
    with pytest.raises(ValueError, match="jobs_per_gpu"):
        sweeps.PinToGPU(jobs_per_gpu=0)


# --- configs ------------------------------------------------------------------------------------

def test_gpus_launcher_runs_jobs_per_gpu_times_gpus_workers(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    cfg = compose_config(["hydra/launcher=gpus", "jobs_per_gpu=2"])
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 6
    assert cfg.hydra.callbacks.pin_to_gpu.jobs_per_gpu == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert compose_config(["hydra/launcher=gpus"]).hydra.launcher.n_jobs == 1


def test_cluster_launcher_configs_compose_with_overrides():
    slurm = compose_config(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30",
                            "hydra.launcher.mem_gb=32"]).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert (slurm.partition, slurm.timeout_min, slurm.mem_gb) == ("gpu", 30, 32)
    assert (slurm.gpus_per_node, slurm.tasks_per_node, slurm.nodes) == (1, 1, 1)
    assert slurm.max_num_timeout >= 1  # a timed-out job is requeued, and resumes from its checkpoint
    local = compose_config(["hydra/launcher=local"]).hydra.launcher
    assert local._target_.endswith("submitit_launcher.LocalLauncher")
    ray = compose_config(["hydra/launcher=ray_cluster", "hydra.launcher.ray.init.address=auto"]).hydra.launcher
    assert ray._target_ == "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher"
    assert (ray.ray.init.address, ray.ray.remote.num_gpus) == ("auto", 1)


def test_optuna_search_config_maximises_over_lr_and_noise():
    cfg = compose_config(["+hparams_search=optuna_lr"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "maximize"
    assert set(sweeper.params) == {"optim.lr", "input.reg_noise_std"}
    assert cfg.hydra.mode == RunMode.MULTIRUN


def test_wandb_logger_config_outside_a_sweep_and_flat_config(tmp_path):
    cfg = compose_config(["task=denoising", "data.default_image=skimage:camera"], output_dir=tmp_path)
    logger = OmegaConf.to_container(cfg.logger, resolve=True)
    assert logger["group"] == "denoising" and logger["job_type"] == "denoising"
    assert logger["tags"] == ["skip", "camera"]
    flat = flat_config(cfg)
    assert flat["optim.lr"] == 0.01 and flat["arch.channels_down"] == [128] * 5
    assert not any(key.startswith(("hydra.", "paths.")) for key in flat)
    assert sweep_name("fallback") == "fallback"  # compose() is not a multirun


def test_sweep_summary_lists_failed_jobs_and_a_rerun_starts_a_fresh_list(tmp_path, capsys):
    summary = sweeps.SweepSummary()
    config = job_config(tmp_path, 0)
    summary.on_multirun_start(config)
    summary.on_multirun_end(config)  # nothing failed: no exit
    assert "failed" not in capsys.readouterr().out
    sweeps.record_failure(tmp_path, "job 1 (data.path=a.png): image file not found: a.png", str(tmp_path / "1"))
    with pytest.raises(SystemExit) as exited:
        summary.on_multirun_end(config)
    assert exited.value.code == 2
    assert "failed: 1 job(s)" in capsys.readouterr().out
    summary.on_multirun_start(config)  # the same sweep folder again
    assert not (tmp_path / sweeps.FAILED_JOBS).exists()


# --- real multiruns -----------------------------------------------------------------------------

def test_a_grid_sweep_runs_every_job_even_when_some_fail(tmp_path):
    """2 architectures x 2 images, one of them missing: the two jobs on the missing image fail with one
    line each and leave no folder; the two others run, each with its own architecture."""
    sweep, missing = tmp_path / "sweep", tmp_path / "missing.png"
    result = run_cli("-m", "arch=skip_depth2,resnet", f"data.path={missing},{make_png(tmp_path / 'good.png', 32, 32)}",
                     "logger=none", *TINY, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(str(missing) in line and "image file not found" in line for line in errors)
    assert all(re.match(r"error: job \d \(arch=\w+ data\.path=", line) for line in errors), errors
    finished = sorted(path.parent for path in sweep.glob("*/metrics.json"))
    assert len(finished) == 2 and len([path for path in sweep.iterdir() if path.name.isdigit()]) == 2
    assert sorted(metrics(run)["arch"] for run in finished) == ["resnet", "skip_depth2"]
    assert "sweep: 2 of 4 job(s) finished" in result.stdout and "failed: 2 job(s)" in result.stdout
    page = compare.write_dashboard(sweep, sweep).read_text()
    assert "2 job(s) failed" in page and "image file not found" in page


class FailsInTheFit(torch.nn.Module):
    """A generator of one's own with a bug that shows only in the fit (the shape check runs on the meta device)."""

    def __init__(self, in_channels: int, out_channels: int, **settings):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, z):
        if not z.is_meta:
            raise RuntimeError("a bug of one's own")
        return self.conv(z)


def test_a_job_that_raises_a_bug_fails_alone_with_one_line_and_keeps_its_traceback(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "arch=resnet", "arch._target_=dip.nets.ResNet,tests.test_sweeps.FailsInTheFit",
                     "logger=none", *TINY, f"hydra.sweep.dir={sweep}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: job 1 (arch=resnet arch._target_=tests.test_sweeps.Fails")
    assert errors[0].endswith(f"): RuntimeError: a bug of one's own (its traceback: {sweep / '1' / 'cli.log'})")
    assert "Traceback" in (sweep / "1" / "cli.log").read_text() and (sweep / "0" / "metrics.json").is_file()
    assert "sweep: 1 of 2 job(s) finished" in result.stdout and "failed: 1 job(s)" in result.stdout


def test_a_finished_run_in_a_nested_job_folder_is_kept_when_the_sweep_runs_again_otherwise(tmp_path):
    """Job folders below the sweep's (``hydra.sweep.subdir``) and a sweep folder set with ``++`` are
    protected as ``<sweep>/<num>`` is: a job of other settings is refused, and the finished run stays."""
    sweep, nested = tmp_path / "sweep", "hydra.sweep.subdir=${hydra.runtime.choices.arch}/${hydra.job.num}"
    multirun(sweep, "arch=skip_depth2", "seed=0", "logger=none", nested)
    job = sweep / "skip_depth2" / "0"
    def outputs() -> dict:  # the job's log is added to, as a run's log is
        return {path.name: path.read_bytes() for path in job.iterdir() if path.is_file() and path.suffix != ".log"}

    written = outputs()
    again = run_cli("-m", "arch=skip_depth2", "seed=5", "logger=none", nested, *TINY, f"++hydra.sweep.dir={sweep}")
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert f"{job} holds a finished run with other settings" in again.stderr
    assert outputs() == written and (job / ".hydra" / "config.yaml").is_file()


def test_a_failed_job_of_a_sweep_whose_jobs_change_directory_is_listed(tmp_path):
    """``hydra.job.chdir=true`` runs each job in its folder, which a failed job removes: the sweep's list of
    failures is kept where the sweep's folder is, named from where the sweep started."""
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "hydra.job.chdir=true", "ema_weight=0.5,1.5", "logger=none", *TINY,
                   f"hydra.sweep.dir={os.path.relpath(sweep, ROOT)}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1").exists()
    assert len(sweeps.failed_jobs(sweep)) == 1 and "failed: 1 job(s)" in done.stdout


@pytest.mark.slow
def test_a_sweep_run_again_into_its_folder_runs_only_the_jobs_it_lacks(tmp_path):
    sweep = tmp_path / "sweep"
    multirun(sweep, "seed=0,1", "logger=none")
    written = {job: (sweep / job / "metrics.json").stat().st_mtime_ns for job in ("0", "1")}
    result = multirun(sweep, "seed=0,1,2", "logger=none")
    assert result.stdout.count("already finished in") == 2
    assert f"sweep: 3 of 3 job(s) finished in {sweep}\n" in result.stdout
    assert {job: (sweep / job / "metrics.json").stat().st_mtime_ns for job in ("0", "1")} == written
    assert [metrics(sweep / job)["seed"] for job in ("0", "1", "2")] == [0, 1, 2]

    # The dashboard lists a folder it cannot read (a damaged metrics.json, a damaged W&B run file) and
    # shows the others.
    (sweep / "1" / "metrics.json").write_text("{damaged")
    damaged_record = b":W&B\x00\x00\x00" + b"\x00" * 4 + struct.pack("<HB", 4, 1) + b"\xff" * 4
    (sweep / "2" / "wandb" / "offline-run-20261205_000000-x").mkdir(parents=True)
    (sweep / "2" / "wandb" / "offline-run-20261205_000000-x" / "run-x.wandb").write_bytes(damaged_record)
    page = compare.write_dashboard(sweep, sweep).read_text()
    assert "1 finished run(s), 2 unfinished or unreadable" in page
    assert f"unreadable: {sweep / '1' / 'metrics.json'}: Expecting" in page
    assert f"unreadable: {sweep / '2' / 'wandb'}" in page and "damaged record" in page


@pytest.mark.slow
def test_a_sweep_run_again_in_worker_processes_keeps_its_finished_runs(tmp_path):
    """joblib's pool runs the jobs in worker processes: what the launching process noted of the sweep
    folder reaches them, so the finished runs are reported, not run again."""
    sweep = tmp_path / "sweep"
    multirun(sweep, "seed=0,1", "logger=none")
    finished = {job: (sweep / job / "metrics.json").read_bytes() for job in ("0", "1")}
    records = {job: (sweep / job / ".hydra" / "config.yaml").read_bytes() for job in ("0", "1")}
    again = multirun(sweep, "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "logger=none")
    assert again.stdout.count("already finished in") == 2, again.stdout[-2000:]
    assert {job: (sweep / job / "metrics.json").read_bytes() for job in ("0", "1")} == finished
    assert {job: (sweep / job / ".hydra" / "config.yaml").read_bytes() for job in ("0", "1")} == records


def test_a_sweep_of_experiments_counts_each_finished_job(tmp_path):
    """An experiment's job writes no metrics.json of its own (its sub-runs do): the summary said 0 of 1."""
    result = multirun(tmp_path / "sweep", "+experiment=two_run_average", "experiment.runs=1", "seed=0", "logger=none")
    assert f"sweep: 1 of 1 job(s) finished in {tmp_path / 'sweep'}\n" in result.stdout


def test_grid_multirun_then_dashboard(tmp_path):
    sweep = tmp_path / "grid"
    result = multirun(sweep, "arch=skip,unet,resnet", "logger=csv")
    assert f"sweep: 3 of 3 job(s) finished in {sweep}\n" in result.stdout
    # a shorter sweep into the folder counts its own job, and the earlier sweep's others apart
    again = multirun(sweep, "arch=skip", "logger=csv")
    assert f"sweep: 1 of 1 job(s) finished in {sweep}; 2 run(s) of earlier sweeps there too" in again.stdout
    refused = run_cli("-m", "arch=skip", "seed=5", "logger=csv", *TINY, f"hydra.sweep.dir={sweep}")  # job 0 is taken
    assert refused.returncode == 2
    assert f"sweep: 0 of 1 job(s) finished in {sweep}; 3 run(s) of earlier" in refused.stdout
    assert f"dashboard: python experiments/compare.py {sweep}" in result.stdout
    runs = {metrics(sweep / str(job))["arch"]: metrics(sweep / str(job)) for job in range(3)}
    assert set(runs) == {"skip", "unet", "resnet"}
    assert all(run["peak_mem_mb"] > 0 and run["peak_mem_source"] == "process_max_rss" for run in runs.values())
    estimates = {arch: run["memory_estimate_mb"] for arch, run in runs.items()}  # each network's own
    assert all(value > 0 for value in estimates.values()) and len(set(estimates.values())) == 3, estimates

    compare.main([str(sweep)])
    page = (sweep / "dashboard.html").read_text()
    for job in range(3):
        assert f"<a href='{job}/'>{job}</a>" in page and f"src='{job}/restored.png'" in page
    assert "<th>estimated MiB</th>" in page and f"<td>{estimates['skip']:.0f}</td>" in page
    for arch in runs:
        assert f"<tr><td>{arch}</td><td>1</td>" in page  # one row per architecture in the summary table
    assert page.count("class='best'") == 1  # one image, one best run
    best = max(runs.values(), key=lambda run: run["psnr"])
    assert re.search(rf"<tr class='best'><td><a href='\d/'>\d</a></td><td>{best['arch']}</td>", page)
    for figure in ("psnr_curves.png", "image_grid.png"):
        assert f'src="{figure}"' in page and (sweep / figure).read_bytes()[:4] == b"\x89PNG"
    assert "http" not in page  # opens from disk: nothing to fetch
    curves = compare.read_csv_curves(sweep / "0" / "csv" / "metrics.csv")
    assert [step for step, _ in curves["psnr"]] == [1, 2, 3]


def test_curves_of_a_resumed_run_have_one_value_per_step(tmp_path):
    """A log that holds the steps after the last checkpoint twice (a CSV log from before dip's logger
    dropped them on resume; W&B runs joined): the later pass, which the result continued from, wins."""
    path = tmp_path / "metrics.csv"
    path.write_text("step,psnr,psnr_ema\n0,10.0,\n1,11.0,9.0\n2,12.0,9.5\n1,11.5,9.1\n2,12.5,9.6\n3,13.0,9.9\n")
    curves = compare.read_csv_curves(path)
    assert curves["psnr"] == [(1, 10.0), (2, 11.5), (3, 12.5), (4, 13.0)]
    assert curves["psnr_ema"] == [(2, 9.1), (3, 9.6), (4, 9.9)]


def test_dashboard_joins_the_wandb_runs_of_a_continued_run(tmp_path):
    """W&B starts a new offline run when a run resumes: the dashboard's curve covers both."""
    out = tmp_path / "run"
    for steps, keep in ((3, "true"), (5, "false")):  # the second continues from the kept checkpoint
        cfg = compose_config(["logger=wandb", f"checkpoint.keep={keep}", *TINY, f"trainer.max_steps={steps}"],
                             output_dir=out)
        if keep == "false":  # the checkpoint names the W&B run to continue online (offline W&B cannot resume)
            run_id = check_resumable(out / CHECKPOINT_NAME, result_settings(cfg), steps, out).wandb_run_id
            assert [path.name for path in out.glob(f"wandb/offline-run-*-{run_id}")]
        run(cfg, out)
    assert len(list(out.glob("wandb/offline-run-*"))) == 2
    curves, source = compare.read_curves(out)
    assert source == "wandb" and [step for step, _ in curves["psnr"]] == [1, 2, 3, 4, 5]
    resumed = Resumable(3, "abc123")
    online = make_logger(compose_config(["logger=wandb", "logger.mode=online"], output_dir=out), resumed)
    assert (online._wandb_init["id"], online._wandb_init["resume"]) == ("abc123", "allow")
    offline = make_logger(compose_config(["logger=wandb", "logger.mode=offline"], output_dir=out), resumed)
    assert offline._wandb_init["id"] is None  # a new offline run


def test_a_resumed_csv_log_keeps_the_rows_before_the_checkpoint(tmp_path):
    """Lightning's CSV writer deletes an existing metrics.csv: dip's logger puts back the rows before
    the step the fit resumes from, so the curve covers the whole fit, each step once."""
    out, log = tmp_path / "run", tmp_path / "run" / "csv" / "metrics.csv"
    run(compose_config(["logger=csv", "checkpoint.keep=true", *TINY], output_dir=out), out)  # checkpoint at 3
    with log.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["0", "1", "2"]
    with log.open("a") as handle:  # as if logged after the checkpoint, before the fit was stopped
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerow(dict(rows[-1], step="3", psnr="99.0"))
    run(compose_config(["logger=csv", *TINY, "trainer.max_steps=5"], output_dir=out), out)
    with log.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["step"] for row in rows] == ["0", "1", "2", "3", "4"]
    assert float(rows[3]["psnr"]) != 99.0  # the resumed fit's own step 3


def test_compare_refuses_a_folder_without_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: no finished run (no */metrics.json under it)\n"


def test_optuna_search_of_two_trials(tmp_path):
    sweep = tmp_path / "optuna"
    result = multirun(sweep, "+hparams_search=optuna_lr", "hydra.sweeper.n_trials=2", "logger=none")
    assert "setup plugin" not in result.stdout
    trials = [metrics(sweep / str(job)) for job in range(2)]
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert found["best_value"] == pytest.approx(max(trial["psnr"] for trial in trials), abs=1e-3)
    assert 1e-4 <= found["best_params"]["optim.lr"] <= 0.05
    lrs = [yaml.safe_load((sweep / str(job) / ".hydra" / "overrides.yaml").read_text()) for job in range(2)]
    assert lrs[0] != lrs[1]


def test_an_optuna_search_chooses_among_a_globs_options(tmp_path):
    """Optuna's sweeper reads a choice, not a glob (it asserted): run.py writes the glob out as one."""
    sweep = tmp_path / "optuna"
    multirun(sweep, "+hparams_search=optuna_lr", "hydra.sweeper.n_trials=1", "arch=glob(skip_depth2)", "logger=none")
    assert metrics(sweep / "0")["arch"] == "skip_depth2"


@pytest.mark.parametrize("script, extra, what", [
    ("run.py", ["+hparams_search=optuna_lr", "+experiment=two_run_average"], "+experiment=NAME makes a figure"),
    ("experiments/benchmark.py", ["+hparams_search=optuna_lr", "benchmark=set5_x4"], "a benchmark makes a table"),
    # Optuna chosen as Hydra's sweeper was not seen: the figure was made, then "no trial of the search finished"
    ("run.py", ["hydra/sweeper=optuna", "optim.lr=interval(0.001,0.1)", "+experiment=two_run_average"],
     "+experiment=NAME makes a figure"),
])
def test_an_optuna_search_of_what_returns_no_psnr_is_refused(tmp_path, script, extra, what):
    """Each trial ran, returned nothing to maximise and counted as failed, and the search ended in "no trial
    finished" without a reason."""
    done = run_cli("-m", "hydra.sweeper.n_trials=1", *extra, "logger=none", *TINY,
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", script=script)
    assert_one_line_error(done, f"an Optuna search maximises one restoration's PSNR, and {what} of several")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("extra, advice", [
    (["-m", "+hydra.sweeper.params.ema_weight='interval(0.9,0.999)'"],
     "sweep values with -m KEY=A,B, or search with +hparams_search=optuna_lr"),
    (["--cfg", "job", "+hydra.sweeper.params.ema_weight='interval(0.9,0.999)'"], "sweep values with -m KEY=A,B"),
    (["-m", "hydra/sweeper=optuna", "+hydra.sweeper.params.ema_weight='interval(0.9,0.999)'"],
     "start from +hparams_search=optuna_lr, which sets a search space"),
    (["-m", "hydra.sweeper.params={seed:'1,2'}"], "sweep values with -m KEY=A,B"),  # OmegaConf's AttributeError
])
def test_a_search_space_added_where_there_is_none_is_one_line(tmp_path, extra, advice):
    """As the search config's comment writes it, but without +hparams_search: Hydra's assertion, as a traceback."""
    done = run_cli(*extra, "logger=none", *TINY, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert_one_line_error(done, f"{extra[-1]}: this sweeper's hydra.sweeper.params is null, which Hydra cannot set "
                                f"or add to: {advice}")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("search", [["+hparams_search=optuna_lr", "hydra.sweeper.n_trials=2"], ["-m", "seed=0,1"]])
def test_an_input_every_job_would_fail_on_is_refused_before_the_first(tmp_path, search):
    """Optuna's sweeper ends a search of only failed trials in a traceback; a grid would fail each job:
    an input that all jobs share is read once, first."""
    sweep, missing = tmp_path / "sweep", tmp_path / "missing.png"
    done = run_cli(*search, f"data.path={missing}", "logger=none", *TINY, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 2 and done.stderr == f"error: image file not found: {missing}\n", done.stderr[-2000:]
    assert not sweep.exists()


@pytest.mark.slow
def test_a_search_whose_every_trial_fails_ends_in_one_line(tmp_path):
    """Each trial fails on its own (an ema_weight out of range, drawn from the search space): each one's
    line, then the search's instead of Optuna's traceback."""
    sweep = tmp_path / "sweep"
    done = run_cli("+hparams_search=optuna_lr", "hydra.sweeper.n_trials=2",
                   "+hydra.sweeper.params.ema_weight='interval(2,3)'", "logger=none", *TINY, f"hydra.sweep.dir={sweep}")
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    trial_lines = lines[:-1]
    assert len(trial_lines) == 2 and all(line.startswith("error: job ") for line in trial_lines)
    assert all("ema_weight must be in [0, 1)" in line for line in trial_lines)
    listed = sweep / sweeps.FAILED_JOBS
    assert lines[-1] == f"error: no trial of the search finished, each one failed: {listed} lists them"
    assert len(sweeps.failed_jobs(sweep)) == 2 and not (sweep / "optimization_results.yaml").exists()
    assert "float-castable" not in done.stderr + done.stdout and "max_failure_rate" not in done.stderr  # the sweeper's

    in_workers = tmp_path / "in_workers"  # the trials' failures are recorded by joblib's processes
    done = run_cli("+hparams_search=optuna_lr", "hydra.sweeper.n_trials=2", "hydra/launcher=gpus",
                   "+hydra.sweeper.params.ema_weight='interval(2,3)'", "logger=none", *TINY,
                   f"hydra.sweep.dir={in_workers}")
    assert done.returncode == 2 and done.stderr.endswith(f"each one failed: {in_workers / sweeps.FAILED_JOBS} "
                                                         "lists them\n"), done.stderr[-2000:]


def test_joblib_gpus_launcher_two_jobs_with_wandb(tmp_path):
    """Two fake GPUs (no CUDA here: the jobs run on the CPU), one job per GPU, W&B offline."""
    sweep = tmp_path / "lr_sweep"
    result = multirun(sweep, "hydra/launcher=gpus", "optim.lr=0.01,0.001", "logger=wandb",
                      env={"CUDA_VISIBLE_DEVICES": "0,1"})
    pins = {}
    for job in range(2):
        log = (sweep / str(job) / "cli.log").read_text()
        gpu, pid = re.search(r"runs on GPU (\d) \(worker slot \d of 2, pid (\d+)\)", log).groups()
        pins[job] = (gpu, pid)
    (gpu0, pid0), (gpu1, pid1) = pins[0], pins[1]
    assert (gpu0 == gpu1) == (pid0 == pid1)  # a worker keeps its GPU; two workers never share one

    for job, lr in enumerate((0.01, 0.001)):
        run_file = offline_run_file(sweep / str(job))
        records = list(offline_run_records(run_file))
        (run,) = [record.run for record in records if record.WhichOneof("record_type") == "run"]
        assert (run.run_group, run.job_type, list(run.tags)) == ("lr_sweep", "denoising", ["skip", "astronaut"])
        config = {item.key: json.loads(item.value_json) for record in records
                  if record.WhichOneof("record_type") == "config" for item in record.config.update}
        config.update({item.key: json.loads(item.value_json) for item in run.config.update})
        assert config["optim.lr"] == lr and config["arch._target_"] == "dip.nets.Skip"
    assert f"wandb sync {sweep}/*/wandb/offline-run-*" in result.stdout
    assert "W&B: 2 offline run(s), one group named 'lr_sweep'" in result.stdout

    compare.main([str(sweep), "--by", "optim.lr", "--out", str(tmp_path / "report")])
    page = (tmp_path / "report" / "dashboard.html").read_text()
    assert "<td>wandb</td>" in page  # curves read from the offline W&B run files
    assert "<tr><td>0.01</td><td>1</td>" in page and "<tr><td>0.001</td><td>1</td>" in page
    assert "src='../lr_sweep/0/restored.png'" in page


@pytest.mark.slow  # submitit's local executor: what the other launchers check, in processes of its own
def test_submitit_local_launcher_two_jobs(tmp_path):
    sweep = tmp_path / "submitit"
    multirun(sweep, "hydra/launcher=local", "arch=skip,unet", "logger=csv")
    assert {metrics(sweep / str(job))["arch"] for job in range(2)} == {"skip", "unet"}
    assert len([path for path in (sweep / ".submitit").iterdir() if path.name.isdigit()]) == 2  # one process each


def test_jobs_of_one_sweep_into_one_folder_one_after_another_keep_the_first(tmp_path):
    """The second job replaced the first's outputs and record without a word, and the sweep said 1 of 1 finished."""
    shared = tmp_path / "shared"
    done = run_cli("-m", "seed=1,2", "arch=skip_depth2", "logger=none", *TINY, f"hydra.sweep.dir={shared}",
                   "hydra.sweep.subdir=same")
    assert done.returncode == 2 and "holds a finished run that was not there when this command started" in done.stdout
    assert metrics(shared / "same")["seed"] == 1  # the first job's, kept; the second's record is not left beside it
    assert not (shared / "same" / ".hydra" / "config.yaml").exists()


@pytest.mark.slow  # submitit's local executor, whose jobs run at once in processes of their own
def test_jobs_of_one_folder_at_once_leave_the_finished_ones_record_and_the_sweeps_folder_is_its_own(tmp_path):
    """Jobs sharing hydra.sweep.subdir: the refused one deleted the record of the one going on there. With
    hydra.sweep.subdir='', every job in a worker process was refused, as the sweep's main process held it."""
    shared = tmp_path / "shared"
    done = run_cli("-m", "seed=1,2", "arch=skip_depth2", "logger=none", *TINY, "hydra/launcher=local",
                   f"hydra.sweep.dir={shared}", "hydra.sweep.subdir=same")
    assert done.returncode == 2 and "is in use by another run that is still going" in done.stdout
    seed = metrics(shared / "same")["seed"]
    assert f"seed={seed}" in (shared / "same" / ".hydra" / "overrides.yaml").read_text()
    assert OmegaConf.load(shared / "same" / ".hydra" / "config.yaml").seed == seed
    itself = tmp_path / "itself"
    multirun(itself, "seed=1", "arch=skip_depth2", "logger=none", "hydra/launcher=local", "hydra.sweep.subdir=''")
    assert metrics(itself)["seed"] == 1 and (itself / "multirun.yaml").is_file()


@pytest.mark.slow
def test_an_interrupted_sweep_says_to_run_it_again_into_its_folder(tmp_path):
    """The job's message names the sweep's folder (hydra.run.dir would start a single run); the sweep
    run again continues the interrupted job from its checkpoint and runs the one it had not started."""
    sweep = tmp_path / "sweep"
    command = [sys.executable, "run.py", "-m", "seed=0,1", "trainer.max_steps=100000", "checkpoint.every_n_steps=3",
               "data.size=32", "logger=none", f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (sweep / "0" / CHECKPOINT_NAME).exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.rstrip().endswith(f"run the same command again with hydra.sweep.dir={sweep} to continue")
    assert not (sweep / "1").exists()
    step = int(torch.load(sweep / "0" / CHECKPOINT_NAME, weights_only=True)["global_step"])
    again = run_cli("-m", "seed=0,1", f"trainer.max_steps={step + 2}", "checkpoint.every_n_steps=3", "data.size=32",
                    "logger=none", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert metrics(sweep / "0")["resumed_from_step"] == step and metrics(sweep / "1")["steps"] == step + 2



def test_ctrl_c_while_a_job_is_written_finishes_it_and_starts_no_other(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli_signalled(tmp_path, "dip.pipeline.write_outputs", "SIGINT", "-m", "seed=0,1", *TINY, "logger=none",
                             f"hydra.sweep.dir={sweep}")
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.rstrip().endswith(f"job 0 finished first; run the sweep again with hydra.sweep.dir={sweep} "
                                         "for any jobs left")
    assert (sweep / "0" / "metrics.json").is_file() and not (sweep / "1").exists()


def test_sigterm_before_a_jobs_fit_removes_the_job_and_names_the_sweep(tmp_path):
    """As from a scheduler: Python's default would end the process silently, leaving the job's folder."""
    sweep = tmp_path / "sweep"
    done = run_cli_signalled(tmp_path, "dip.pipeline.prepare", "SIGTERM", "-m", "seed=0,1", *TINY, "logger=none",
                             f"hydra.sweep.dir={sweep}")
    assert done.returncode == 128 + signal.SIGTERM and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.rstrip().endswith(f"interrupted by SIGTERM: run the sweep again with hydra.sweep.dir={sweep} "
                                         "to continue")
    assert not (sweep / "0").exists() and not (sweep / "1").exists()


@pytest.mark.parametrize("launcher, needle", [
    pytest.param("slurm", "no srun here", marks=pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM")),
    pytest.param("ray_cluster", "pip install -e '.[ray]'", marks=pytest.mark.skipif(
        importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is not None, reason="Ray launcher installed")),
])
def test_a_launcher_that_cannot_start_here_is_one_line_before_the_sweeps_folder(tmp_path, launcher, needle):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", f"hydra/launcher={launcher}", "seed=0,1", *TINY, "logger=none", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 2 and done.stderr.startswith(f"error: hydra/launcher={launcher}"), done.stderr
    assert needle in done.stderr and "Traceback" not in done.stderr and not sweep.exists()

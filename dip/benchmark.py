"""Benchmarks: restore every image of a dataset with one config and tabulate PSNR against the paper.

``run_benchmark(cfg, run_dir)`` takes a config composed from ``conf/benchmark.yaml`` (the base
config, a ``benchmark/NAME`` file and overrides). Each image is one ordinary restoration
(``dip.pipeline.run``) with ``data.path`` pointing at it, written to ``run_dir/images/<stem>/``.
Restorations run in a pool of processes, ``jobs_per_gpu`` per visible GPU, each process pinned to
its GPU; meanwhile threads of the main process compute the classical baselines on the CPU, so a
slow CBM3D never holds a GPU. With ``benchmark.runs=N`` each image is restored N times (seeds
``seed`` to ``seed + N - 1``, one observation: ``observation_seed`` stays) into
``images/<stem>/seed<S>/``, and the table adds the PSNR of the runs' averaged outputs (the paper's
31.00 dB denoising protocol). A sub-run already finished with the same config (its ``config.yaml``
and ``metrics.json``) is not run again, so a benchmark cut short resumes when started again with
the same ``hydra.run.dir``, and one can span machines: finished sub-runs copied into the run
folder count wherever they ran (``_restoration_key``). With ``time_budget_s`` a restoration starts
only when it is expected to finish within the budget (``TimeBudget``); the table then covers the
images finished, and a later run with the same ``hydra.run.dir`` does the others. ``benchmark.restore``
names the images this run may restore: the table still covers every image of the selection finished
before, so one new image can join a table made over many runs, and ``benchmark.restore=[]`` only
remakes the table.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import csv
import dataclasses
import hashlib
import io
import json
import logging
import multiprocessing
import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from dip.baselines import BASELINES, BaselineUnavailableError
from dip.config import dotted
from dip.config_checks import check_whole_number
from dip.datasets import DatasetImage, open_dataset
from dip.earlier_runs import read_metrics, saved_sub_run_config
from dip.errors import (
    DipError,
    Interrupted,
    MemoryShortError,
    OutputsNotWrittenError,
    RunInterruptedError,
    check_choice,
    kept_traceback,
    one_line,
    pasted_override,
)
from dip.files import atomic_path
from dip.gpus import pin_to_gpu, visible_gpus, worker_count
from dip.images import save_image
from dip.memory import activation_dtype
from dip.metrics import psnr, psnr_y
from dip.outputs import (
    BEFORE_COLLAPSE_OUTPUT,
    CHECKPOINT_NAME,
    METRICS_FILE,
    OUTPUTS_FILE,
    Result,
    save_averages,
    write_error,
    write_json,
    write_outputs,
)
from dip.physics import Degradation
from dip.problem import built_physics, problem_from_config, stack_problems
from dip.run_settings import RESULT_SETTINGS, made_images_settings, refuse_other_settings, without_implied_settings
from dip.signals import reset_handlers, set_handlers, signal_finished_first, stop_signals, until_the_fit_listens

log = logging.getLogger("dip.benchmark")


@dataclass(frozen=True)
class ImageJob:
    """One image of a benchmark: its restoration config (resolved, so that a fresh process can run
    it without Hydra) and where its outputs go."""

    name: str  # file name in the dataset manifest
    config: dict
    output_dir: Path
    protocol: str
    shave: int
    size: tuple[int, int]  # (height, width) of the image as restored (the manifest's, cut to data.size)
    keep_outputs: bool = False  # save the float outputs (OUTPUTS_FILE) for averaging runs
    sha256: str | None = None  # the image's, as the dataset's manifest gives it

    @property
    def pixels(self) -> int:
        return self.size[0] * self.size[1]

    def score(self, x: torch.Tensor, truth: torch.Tensor, suffix: str = "") -> dict[str, float]:
        """The PSNRs of ``x`` by this job's protocol (``score``), each named with ``suffix`` (``psnr_ema``)."""
        return {key + suffix: value for key, value in score(x, truth, self.protocol, self.shave).items()}

    @property
    def step_pixels(self) -> int:
        """Pixels one step restores: the image's, times the restarts packed."""
        return self.pixels * self.config.get("restarts", 1)

    @property
    def work(self) -> int:
        """Pixel-steps of the whole fit: what its time is roughly proportional to."""
        return self.step_pixels * self.config["trainer"]["max_steps"]


class TimeBudget:
    """Whether a restoration started now would finish within ``seconds`` of this budget's creation
    (``None``: no limit). The estimate is the longest warm-up of the fits finished so far (their first
    steps: compiling, CUDA graphs; the same for a small image as for a large one) plus the job's
    pixel-steps times the slowest rate, in seconds per pixel-step, of their later steps. Until one has
    finished, every job starts."""

    def __init__(self, seconds: float | None, clock=time.monotonic):
        if seconds is not None and seconds <= 0:
            raise DipError(f"time_budget_s must be a positive number of seconds, got {seconds}")
        self.clock, self.seconds = clock, seconds
        self.deadline = None if seconds is None else clock() + seconds
        self.rate: float | None = None
        self.warmup = 0.0

    def record(self, job: ImageJob | Pack, metrics: dict) -> None:
        """Learn from a finished fit (of the steps it ran: a resumed one ran fewer)."""
        steps = metrics["steps"] - (metrics.get("resumed_from_step") or 0)
        warmup = metrics["warmup_seconds"]
        rate = (metrics["seconds"] - warmup) / max(1, job.step_pixels * steps)
        self.rate = rate if self.rate is None else max(self.rate, rate)
        self.warmup = max(self.warmup, warmup)

    def estimate(self, job: ImageJob | Pack) -> float | None:
        return None if self.rate is None else self.warmup + self.rate * job.work

    def left(self) -> float:
        return self.deadline - self.clock()

    def allows(self, job: ImageJob | Pack) -> bool:
        estimate = self.estimate(job)
        return self.deadline is None or estimate is None or estimate <= self.left()


def score(x: torch.Tensor, truth: torch.Tensor, protocol: str, shave: int) -> dict[str, float]:
    """The protocol's PSNRs of ``x``: ``y`` gives the luma PSNR (``psnr_y``, border shaved) and the
    RGB PSNR over the whole image (``psnr``); ``rgb`` gives ``psnr`` over all channels, shaved."""
    if protocol == "y":
        return {"psnr_y": float(psnr_y(x, truth, shave)), "psnr": float(psnr(x, truth))}
    window = (..., slice(shave, -shave or None), slice(shave, -shave or None))
    return {"psnr": float(psnr(x[window], truth[window]))}


def headline_metric(protocol: str) -> str:
    """The PSNR a table reports by ``protocol`` (``score``): luma's for ``y``, else over all channels."""
    return "psnr_y" if protocol == "y" else "psnr"


class IncompleteTableError(DipError):
    """Some images or baselines failed after the fits began: the table written, if any image finished,
    covers the others, and the run's log says what happened."""


def _config_text(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=True)


# What of a benchmark's own settings decides its restorations; the others label the table (title, notes, the
# published columns), choose which images run, or how (the baselines are matched by their own observation).
BENCHMARK_RESULT_KEYS = ("name", "dataset", "protocol", "shave", "runs")


def _restoration_key(config: dict) -> dict:
    """What decides a sub-run's restoration in its ``config``: the settings a run's result depends on
    (``dip.run_settings.RESULT_SETTINGS``, but the ``speed`` switches, which change it only up to rounding),
    its steps and ``BENCHMARK_RESULT_KEYS``. Paths under the sub-run's folder become relative to
    ``{output_dir}``, the data root drops out and the image is named by its dataset folder and file. So a
    restoration finished in another checkout or on another machine, with any device, process count, logger,
    image selection or table text, and carried here, counts as finished (the images themselves are checked
    against their manifest's sha256). Nested, as a config is: ``baselines.json`` keeps its part of it."""
    output_dir = config.get("paths", {}).get("output_dir")
    relocated = _relocate(config, output_dir, "{output_dir}") if output_dir else config
    top_level = {name.split(".")[0] for name in RESULT_SETTINGS} - {"speed", "trainer"}
    key = {name: value for name, value in relocated.items() if name in top_level}
    trainer = ["max_steps", *(name.split(".")[1] for name in RESULT_SETTINGS if name.startswith("trainer."))]
    key["trainer"] = {name: relocated.get("trainer", {}).get(name) for name in trainer}
    key["benchmark"] = {name: relocated.get("benchmark", {}).get(name) for name in BENCHMARK_RESULT_KEYS}
    key = without_implied_settings(key)
    if "data" in key:  # a copy: the config's own stays as it is
        data = key["data"] = {name: value for name, value in key["data"].items() if name != "root"}
        if data.get("path"):
            data["path"] = "/".join(Path(data["path"]).parts[-2:])
    return key


def _relocate(value, old: str, new: str):
    """``value`` (a config, or any part of one) with each path under ``old`` moved under ``new``."""
    if isinstance(value, dict):
        return {key: _relocate(item, old, new) for key, item in value.items()}
    if isinstance(value, list):
        return [_relocate(item, old, new) for item in value]
    if isinstance(value, str) and value.startswith(old):
        return new + value[len(old):]
    return value


def _finished(job: ImageJob, saved: dict | None) -> dict | None:
    """The saved metrics of ``job`` if an earlier run, here or elsewhere, finished it with the same config
    (``saved``, that run's config)."""
    if saved is None or _restoration_key(saved) != _restoration_key(job.config):
        return None
    if job.keep_outputs and not (job.output_dir / OUTPUTS_FILE).is_file():
        return None
    return _saved_metrics(job)


def _saved_metrics(job: ImageJob) -> dict:
    """The ``metrics.json`` of ``job``'s finished sub-run; ``DipError`` if it is unreadable, or if it
    restored the same file name with other pixels (a dataset replaced): that sub-run is kept, as one
    finished with other settings is."""
    metrics = read_metrics(job.output_dir / METRICS_FILE, f"delete it to restore {job.name} again")
    if (recorded := metrics.get("image_sha256")) and job.sha256 and recorded != job.sha256:
        raise DipError(f"{job.output_dir} holds a restoration of another {job.name} (sha256 {recorded[:12]}..., the "
                       f"dataset's is {job.sha256[:12]}...): delete its metrics.json to restore the image again, or "
                       f"run into another folder")
    return metrics


def _continued(job: ImageJob, saved: dict, pack: Pack) -> bool:
    """Whether ``job`` goes on from the fit kept in ``pack``'s folder (``checkpoint.keep``) that finished
    the restoration whose config was ``saved``: the same settings, more steps."""
    if not (pack.directory / CHECKPOINT_NAME).is_file():
        return False
    earlier, now = _restoration_key(saved), _restoration_key(job.config)
    more = earlier["trainer"]["max_steps"] < now["trainer"]["max_steps"]
    earlier["trainer"]["max_steps"] = now["trainer"]["max_steps"]
    if not (more and earlier == now):
        return False
    _saved_metrics(job)  # a restoration of an image since replaced is refused, not continued
    return True


@dataclass(frozen=True)
class Pack:
    """Jobs restored by one fit: one job, or up to ``images_per_fit`` images of one size packed into
    one generator (``dip.problem.stack_problems``), whose checkpoint and curves go to ``directory``."""

    jobs: tuple[ImageJob, ...]
    directory: Path

    @property
    def step_pixels(self) -> int:
        return sum(job.step_pixels for job in self.jobs)

    @property
    def work(self) -> int:
        return sum(job.work for job in self.jobs)

    @property
    def names(self) -> str:
        return ", ".join(job.name for job in self.jobs)


def pack_jobs(jobs: list[ImageJob], images_per_fit: int, directory: Path) -> list[Pack]:
    """``jobs`` in fits of up to ``images_per_fit`` images of one size (in the order each size first
    comes); a fit of several gets a folder of its own under ``directory``, one job keeps its own."""
    by_size: dict[tuple[int, int], list[ImageJob]] = {}
    for job in jobs:
        by_size.setdefault(job.size, []).append(job)
    packs = []
    for group in by_size.values():
        for start in range(0, len(group), images_per_fit):
            members = tuple(group[start:start + images_per_fit])
            packs.append(Pack(members, members[0].output_dir if len(members) == 1 else
                              directory / _pack_name(members, directory.parent)))
    return packs


def _pack_name(jobs: tuple[ImageJob, ...], run_dir: Path) -> str:
    """A packed fit's folder: its first sub-run, how many more, and a digest of them all (another
    selection of images makes another fit, which must not resume this one's checkpoint), named within
    ``run_dir``: a run folder moved elsewhere resumes its packed fits."""
    names = "\n".join(job.output_dir.relative_to(run_dir).as_posix() for job in jobs)
    digest = hashlib.sha1(names.encode()).hexdigest()[:8]
    first = jobs[0].output_dir
    label = first.name if first.parent.name == "images" else f"{first.parent.name}-{first.name}"  # runs: seed<S>
    return f"{label}+{len(jobs) - 1}-{digest}"


def restore_pack(pack: Pack) -> list[dict]:
    """Restore the pack's images by one fit (in a worker process or in-process) and score each one's
    last output and EMA with the benchmark's protocol; each job's outputs, ``config.yaml`` and
    ``metrics.json`` go to its sub-run. The fit's checkpoint stays until all are written: when one
    cannot be and there is a checkpoint, none of the pack counts as finished, so the same command packs
    them again and resumes it."""
    from dip.pipeline import run  # here, not at the top: a missing dataset is reported before Lightning loads

    written: list[dict] = []

    def write(result: Result) -> None:
        images = [result] if len(pack.jobs) == 1 else [result.image(k) for k in range(len(pack.jobs))]
        try:
            for job, image in zip(pack.jobs, images, strict=True):
                written.append(_score_and_write(job, image, pack))
        except BaseException:
            if (pack.directory / CHECKPOINT_NAME).is_file():  # the fit resumes from it, for all its images
                for job in pack.jobs[:len(written)]:
                    (job.output_dir / METRICS_FILE).unlink(missing_ok=True)
            raise
        if len(pack.jobs) > 1:  # the fit's W&B summary: each image's figures as the table has them, where they differ
            for key in written[0]:
                if (values := [metrics.get(key) for metrics in written]) != [result.metrics.get(key)] * len(values):
                    result.metrics[key] = values

    # the checkpoint in the sub-run (or the pack's folder): an interrupted benchmark, run again, continues it
    config = OmegaConf.create(_fit_config(pack))
    if len(pack.jobs) == 1:
        run(config, None, checkpoint_dir=pack.directory, write=write)
    else:
        problem = stack_problems([problem_from_config(OmegaConf.create(job.config)) for job in pack.jobs],
                                 [job.name for job in pack.jobs])
        run(config, None, problem, checkpoint_dir=pack.directory, seeds=[job.config["seed"] for job in pack.jobs],
            write=write, extra_settings=made_images_settings(problem.observation, problem.ground_truth))
    return written


def _fit_config(pack: Pack) -> dict:
    """The config of the fit that restores ``pack``: its one job's, or the first job's moved to the pack's folder."""
    first = pack.jobs[0]
    if len(pack.jobs) == 1:
        return first.config
    config = _relocate(first.config, first.config["paths"]["output_dir"], str(pack.directory))
    if "group" in config["logger"]:  # W&B: the fit's run is named by its folder
        config["logger"]["name"] = f"{config['benchmark']['name']}/{pack.directory.name}"
    return config


def _check_checkpoint(pack: Pack) -> None:
    """``DipError`` before any fit when the checkpoint in ``pack``'s folder cannot be continued by its fit
    (made with other settings, damaged): found in the fit, it failed that fit alone, after the others ran."""
    if (pack.directory / CHECKPOINT_NAME).is_file():
        from dip.checkpoint import checked_resume  # only here: Lightning takes seconds to load

        checked_resume(OmegaConf.create(_fit_config(pack)), pack.directory)


def _score_and_write(job: ImageJob, result: Result, pack: Pack) -> dict:
    metrics = result.metrics
    for suffix, image in (("", result.restored), ("_ema", result.restored_ema)):
        metrics.update(job.score(image, result.ground_truth, suffix))
    if result.restarts is not None:  # packed restarts: the mean of what each one, a run of its own, scores
        for suffix, images in (("", result.restarts), ("_ema", result.restarts_ema)):
            scores = [job.score(image[None], result.ground_truth) for image in images]
            metrics.update({f"{key}{suffix}_restart_mean": statistics.fmean(s[key] for s in scores)
                            for key in scores[0]})
    if result.ema_before_collapse is not None:  # scored as the table's columns are, for its note
        metrics.update(job.score(result.ema_before_collapse, result.ground_truth, "_ema_before_collapse"))
    metrics.update(image=job.name, image_sha256=job.sha256, seed=job.config["seed"],
                   gpus_visible=os.environ.get("CUDA_VISIBLE_DEVICES"),
                   device_name=torch.cuda.get_device_name() if metrics["device"].startswith("cuda") else "CPU")
    if len(pack.jobs) > 1:  # the fit's seconds and peak memory are those of all its images together
        metrics["packed_with"] = [other.name for other in pack.jobs if other is not job]
    text = _config_text(job.config).encode()
    # the config only now, beside the metrics.json that follows: a fit that fails leaves a finished one's as it was
    files = {"config.yaml": lambda handle: handle.write(text)}
    if job.keep_outputs:
        outputs = {"restored": result.restored, "restored_ema": result.restored_ema}
        files[OUTPUTS_FILE] = lambda handle: torch.save(outputs, handle)
    write_outputs(result, job.output_dir, files)
    return metrics


def average_runs(jobs: list[ImageJob], runs: list[dict], directory: Path) -> dict:
    """The first run's metrics, plus the protocol's PSNRs of the runs' averaged outputs
    (``<metric>_average``, ``<metric>_average_ema``), saved as ``average.png`` / ``average_ema.png``."""
    truth = problem_from_config(OmegaConf.create(jobs[0].config)).ground_truth
    outputs = [torch.load(job.output_dir / OUTPUTS_FILE) for job in jobs]
    metrics = dict(runs[0], seeds=[run["seed"] for run in runs])
    averages = save_averages(*([output[key] for output in outputs] for key in ("restored", "restored_ema")), directory)
    for suffix, average in zip(("", "_ema"), averages, strict=True):
        metrics.update(jobs[0].score(average, truth, f"_average{suffix}"))
    return metrics


def compute_baselines(job: ImageJob, names: list[str]) -> dict:
    """Rebuild the image's observation (same observation seed, so the same noise or mask as its
    restorations), run each classical baseline not yet in ``baselines.json`` (for this observation,
    image file and protocol) on it and score it; each estimate is saved as ``baseline_NAME.png`` and
    the scores in ``baselines.json``. An optional baseline whose package is missing scores
    ``{"unavailable": reason}``, one that raises ``{"failed": reason}``; both are left out of the
    file, so the next run tries them again. The image's restorations do not depend on them."""
    restoration = _restoration_key(job.config)
    key = {name: restoration[name] for name in ("task", "data", "observation_seed")}
    key.update(image_sha256=job.sha256, protocol=job.protocol, shave=job.shave)  # what the scores are of
    saved_file = job.output_dir / "baselines.json"
    saved = json.loads(saved_file.read_text()) if saved_file.is_file() else {}
    scores = dict(saved["scores"]) if saved.get("observation") == key else {}
    missing = [name for name in names if name not in scores]
    if not missing:
        return scores
    problem = problem_from_config(OmegaConf.create(job.config))
    for name in missing:
        try:
            estimate = BASELINES[name].estimate(problem.observation, problem.physics)
        except BaselineUnavailableError as error:
            scores[name] = {"unavailable": str(error)}
            continue
        except Exception as error:
            scores[name] = {"failed": _failure(error, job.output_dir)}
            log.error(f"baseline {name} failed on {job.name}: {scores[name]['failed']}")
            continue
        save_image(estimate[0], job.output_dir / f"baseline_{name}.png")
        scores[name] = job.score(estimate, problem.ground_truth)
    # one that failed, or whose package is missing, is tried again by the next run
    kept = {name: value for name, value in scores.items() if not {"failed", "unavailable"} & value.keys()}
    write_json({"observation": key, "scores": kept}, saved_file)
    return scores


def check_baselines(names: list[str], jobs: list[ImageJob]) -> None:
    """Each baseline named must exist and undo the benchmark's kind of degradation, checked on the
    problem of the first image that makes one. An image that does not fails its own fit, the others go
    on; when none does, the first one's error ends the run before any fit."""
    errors = []
    for job in jobs:
        try:
            physics = problem_from_config(OmegaConf.create(job.config)).physics
            break
        except DipError as error:
            errors.append(error)
    else:
        raise errors[0]
    for name in names:
        check_choice("baseline", name, BASELINES, DipError)
        if not isinstance(physics, BASELINES[name].physics):
            raise DipError(f"baseline '{name}' undoes {BASELINES[name].physics.__name__}, "
                           f"not this benchmark's {type(physics).__name__}")


def image_jobs(cfg: DictConfig, image: DatasetImage, directory: Path, physics: Degradation) -> list[ImageJob]:
    """The restorations of one image: one into ``directory``, or ``benchmark.runs`` of them (seeds
    ``seed``, ``seed + 1``, ...; one observation) into ``directory/seed<S>``; ``physics`` is the task's
    degradation (built once for the benchmark), which decides the size scored."""
    runs = cfg.benchmark.runs
    check_whole_number("benchmark.runs", runs)
    crop = cfg.data.size
    size = (image.height, image.width) if not crop else (min(crop, image.height), min(crop, image.width))
    scored = physics.solution_size(*physics.observation_size(*size))  # super-resolution's crop to the factor too
    if min(scored) <= 2 * cfg.benchmark.shave:  # scored on an empty window, every PSNR would be nan
        raise DipError(f"benchmark.shave={cfg.benchmark.shave} leaves nothing of {image.name} "
                       f"({scored[1]}x{scored[0]}) to score")
    jobs = []
    for seed in range(cfg.seed, cfg.seed + runs):
        output_dir = directory if runs == 1 else directory / f"seed{seed}"
        job = copy.deepcopy(cfg)
        with open_dict(job):
            job.pop("hydra", None)
            job.observation_seed = cfg.observation_seed
            job.seed = seed
            job.data.path = str(image.path.absolute())  # under data.root, symbolic links kept: result_settings
            job.paths.output_dir = str(output_dir)
            if "group" in job.logger:  # W&B: one run per restoration, grouped by benchmark
                job.logger.group = cfg.benchmark.name
                job.logger.name = f"{cfg.benchmark.name}/{image.stem}" + (f"/seed{seed}" if runs > 1 else "")
        jobs.append(ImageJob(image.name, OmegaConf.to_container(job, resolve=True), output_dir,
                             cfg.benchmark.protocol, cfg.benchmark.shave, size, keep_outputs=runs > 1,
                             sha256=image.sha256))
    return jobs


FAILURE_LOG = "failure.log"


def _failure(error: Exception, folder: Path) -> str:
    """Why a restoration or baseline failed, in one line: a ``DipError``'s message, or the error's type and
    message, its traceback appended to ``folder``'s ``failure.log``."""
    # our own message names its files, often two paths: room for them
    return one_line(error, 600) if isinstance(error, DipError) else kept_traceback(error, folder / FAILURE_LOG, 300)


_FITTING = threading.Event()  # set while a worker process fits


def _start_worker(slots, gpus: list[str], cpu_threads: int) -> None:
    """Pool initialiser: take a worker slot and pin this process to its GPU before CUDA starts. SIGTERM
    and SIGHUP are the main process's to act on (it passes them on to the fits): an idle worker ignores
    them. A worker outlives no main process (``_stop_when_orphaned``)."""
    set_handlers(until_the_fit_listens, stop_signals()[1:])
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    if pin_to_gpu(slots.get(), gpus) is None:
        torch.set_num_threads(cpu_threads)


def _stop_when_orphaned(parent: int) -> None:
    """Once the main process ``parent`` is gone (killed, its terminal closed), stop this worker: its fit
    under way checkpoints at the end of its step, as on SIGTERM (sent until the fit listens), and the
    process ends. It would otherwise wait for work for good, holding its memory (a GPU's too)."""
    while os.getppid() == parent:
        time.sleep(1)
    while _FITTING.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    os._exit(128 + signal.SIGTERM)


def _restore_in_worker(restore: Callable[[Pack], list[dict]], pack: Pack) -> list[dict]:
    """``restore(pack)`` (``restore_pack``, as the main process names it) in a worker process, marked as
    fitting for ``_stop_when_orphaned``."""
    _FITTING.set()
    try:
        return restore(pack)
    finally:
        _FITTING.clear()


def restore_all(packs: list[Pack], done_before: int, gpus: list[str], workers: int,
                budget: TimeBudget) -> tuple[dict[Path, dict], dict[str, str], dict[str, str]]:
    """Restore the jobs of ``packs``, one fit per pack, ``workers`` fits at a time (in this process
    when 1), each started only if ``budget`` allows it. A packed fit that fails (short of memory:
    refused by the memory check, or out of memory; or otherwise) is not the end of its images: they go
    back to the queue, each to a fit of its own. A fit of one image that fails is logged in one line
    (its traceback, unless it is a ``DipError``, in the fit folder's ``failure.log``) and the others go
    on; an interruption (Ctrl-C, SIGTERM) or a crashed worker process ends the run; a SIGTERM sent to the
    main process alone (a scheduler's, ``timeout``'s) is passed on to the workers' fits. The metrics by
    output directory, why each image left unrestored was not started, and why each failed (by its
    name). ``done_before`` restorations finished before count in the progress lines."""
    results: dict[Path, dict] = {}
    not_started: dict[str, str] = {}
    failed: dict[str, str] = {}
    pending = collections.deque(packs)
    total = done_before + sum(len(pack.jobs) for pack in packs)

    def report(pack: Pack, pack_metrics: list[dict]) -> None:
        budget.record(pack, pack_metrics[0])  # the fit's steps and seconds, the same for each of its images
        for job, metrics in zip(pack.jobs, pack_metrics, strict=True):
            results[job.output_dir] = metrics
            key = headline_metric(job.protocol)
            packed = f", packed with {len(pack.jobs) - 1} more" if len(pack.jobs) > 1 else ""
            log.info(f"[{done_before + len(results)}/{total}] {metrics['image']} (seed {metrics['seed']}): {key} "
                     f"{metrics[key]:.2f} dB (EMA {metrics[key + '_ema']:.2f}) in {metrics['seconds']:.1f} s "
                     f"on {metrics['device']}{packed}")

    interrupted: list[int] = []

    def next_pack() -> Pack | None:
        while pending and not interrupted:
            pack = pending.popleft()
            if budget.allows(pack):
                return pack
            for job in pack.jobs:
                not_started[job.name] = f"they would not have finished within time_budget_s={budget.seconds}"
            log.info(f"not starting {pack.names} ({pack.directory.name}): about {budget.estimate(pack):.0f} s, "
                     f"{max(0.0, budget.left()):.0f} s left of time_budget_s")
        return None

    def fail(pack: Pack, error: Exception) -> None:
        if isinstance(error, (RunInterruptedError, Interrupted)) and interrupted:  # said as the user sent it:
            raise error.sent_as(interrupted[0])  # workers get SIGTERM for a SIGHUP, which they ignore
        if isinstance(error, (RunInterruptedError, Interrupted, BrokenProcessPool)):
            raise error
        # each image alone may fit, or find the one image at fault; a fit that finished is resumed as it was
        if len(pack.jobs) > 1 and not isinstance(error, OutputsNotWrittenError):
            why = "does not fit in memory" if isinstance(error, MemoryShortError) else "failed"
            log.warning(f"the packed fit of {pack.names} {why} ({_failure(error, pack.directory)}); restoring its "
                        f"images one at a time")
            pending.extendleft(reversed(pack_jobs(list(pack.jobs), 1, pack.directory)))  # one fit each, in order
            return
        reason = _failure(error, pack.directory)
        failed.update((job.name, reason) for job in pack.jobs)
        log.error(f"the fit of {pack.names} failed; going on with the others: {reason}")

    if workers <= 1:
        while (pack := next_pack()) is not None:
            try:
                report(pack, restore_pack(pack))
            except Exception as error:
                fail(pack, error)
            if (signum := signal_finished_first()) is not None:  # at its last step: it finished first
                interrupted.append(signum)
    else:
        context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
        slots = context.Queue()
        for slot in range(workers):
            slots.put(slot)
        cpu_threads = max(1, (os.cpu_count() or 1) // workers)
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                   initargs=(slots, gpus, cpu_threads))

        def signal_workers() -> None:  # each fit under way checkpoints and stops
            for process in list(pool._processes.values()):  # the executor names its workers nowhere else
                with contextlib.suppress(ProcessLookupError):  # SIGTERM for SIGHUP too, which workers ignore
                    os.kill(process.pid, signal.SIGTERM)

        def pass_on(signum, frame) -> None:  # no other fit starts
            interrupted.append(signum)
            signal_workers()

        previous = set_handlers(pass_on, stop_signals()[1:])
        try:
            # one fit per free worker, so that each is started only when a worker can take it at once
            running: dict[Future, Pack] = {}
            while len(running) < workers and (pack := next_pack()) is not None:
                running[pool.submit(_restore_in_worker, restore_pack, pack)] = pack
            while running:
                done, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                if interrupted:  # again: a worker that was starting up ignored it, and its fit listens now
                    signal_workers()
                for future in done:
                    pack = running.pop(future)
                    if (error := future.exception()) is not None:
                        fail(pack, error)
                    else:
                        report(pack, future.result())
                    if (pack := next_pack()) is not None:
                        running[pool.submit(_restore_in_worker, restore_pack, pack)] = pack
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            reset_handlers(previous)
    if interrupted and pending:  # and no fit was under way to raise its own interruption
        raise Interrupted(interrupted[0])
    return results, not_started, failed


def run_benchmark(cfg: DictConfig, run_dir: Path) -> dict:
    """Restore every image of ``cfg.benchmark``, write ``table.md`` and ``table.csv`` into
    ``run_dir``, and return the mean row."""
    spec = cfg.benchmark
    _check_benchmark_settings(cfg)
    budget = TimeBudget(cfg.time_budget_s)  # the whole run counts, checking the dataset included
    images, restorable = _selected_images(cfg)
    physics = built_physics(cfg)
    per_image = [(run_dir / "images" / image.stem, image_jobs(cfg, image, run_dir / "images" / image.stem, physics))
                 for image in images]
    jobs = [job for _, image_runs in per_image for job in image_runs]
    saved = {job.output_dir: saved_sub_run_config(job.output_dir) for job in jobs}
    finished = {job.output_dir: metrics for job in jobs
                if (metrics := _finished(job, saved[job.output_dir])) is not None}
    outside = {job.name: "they are outside benchmark.restore" for job in jobs
               if job.output_dir not in finished and restorable is not None and job.name not in restorable}
    to_restore = [job for job in jobs if job.output_dir not in finished and job.name not in outside]
    packs = pack_jobs(to_restore, cfg.images_per_fit, run_dir / "packs")
    pack_of = {job.output_dir: pack for pack in packs for job in pack.jobs}
    # before any fit: a restoration finished with other settings is kept, and one outside benchmark.restore
    # too (the folder would hold two settings, and neither command could finish it)
    for job in jobs:
        earlier, pack = saved[job.output_dir], pack_of.get(job.output_dir)
        if earlier is not None and job.output_dir not in finished and not (pack and _continued(job, earlier, pack)):
            refuse_other_settings(job.output_dir, dotted(_restoration_key(earlier)),
                                  dotted(_restoration_key(job.config)))
    for pack in packs:
        _check_checkpoint(pack)
    if restorable == set() and not any(all(job.output_dir in finished for job in image_runs)
                                       for _, image_runs in per_image):
        raise DipError(f"benchmark.restore=[] only tabulates, but no image of {spec.name} is restored in "
                       f"{run_dir / 'images'}: there is no table to write")
    check_baselines(list(spec.baselines), [image_runs[0] for _, image_runs in per_image])
    if cfg.images_per_fit > 1:
        from dip.pipeline import check_copies  # after the dataset checks: Lightning takes seconds to load

        check_copies(cfg, cfg.images_per_fit)
    gpus = [] if cfg.trainer.accelerator == "cpu" else visible_gpus()
    workers = max(1, min(len(packs), worker_count(gpus, cfg.jobs_per_gpu, cfg.cpu_jobs)))
    log.info(f"{spec.name}: {len(images)} images x {spec.runs} run(s) from {Path(cfg.data.root) / spec.dataset}, "
             f"{len(packs)} fit(s) to run, {workers} at a time on "
             f"{', '.join(f'GPU {gpu}' for gpu in gpus) or 'the CPU'}")
    if finished:
        log.info(f"reusing {len(finished)} finished restoration(s): {', '.join(m['image'] for m in finished.values())}")
    start = time.perf_counter()
    threads = ThreadPoolExecutor(max(1, cfg.baseline_jobs))
    try:
        # one observation per image whatever the run's seed: the baselines once, in the image's folder
        # (none for an image outside benchmark.restore and unfinished: it has no row in this run's table)
        baselines: list[Future | None] = [
            None if image_runs[0].name in outside else
            threads.submit(compute_baselines, dataclasses.replace(image_runs[0], output_dir=directory),
                           list(spec.baselines))
            for directory, image_runs in per_image]
        restored, not_started, failed = restore_all(packs, len(finished), gpus, workers, budget)
        restored.update(finished)
        not_started.update(outside)
        baseline_scores = []
        for (directory, image_runs), future in zip(per_image, baselines, strict=True):
            try:
                baseline_scores.append(future.result() if future is not None else None)
            except Exception as error:  # the image's observation fails: so did (or would) its fits
                baseline_scores.append(None)
                if image_runs[0].name not in failed:  # its fit's failure, and its traceback, come first
                    failed[image_runs[0].name] = _failure(error, directory)
    finally:
        threads.shutdown(wait=True, cancel_futures=True)
    # an image is in the table once all its runs are done (the others wait for a later run)
    done = [(directory, image_runs, scores)
            for (directory, image_runs), scores in zip(per_image, baseline_scores, strict=True)
            if scores is not None and all(job.output_dir in restored for job in image_runs)]
    metrics = [restored[image_runs[0].output_dir] if spec.runs == 1 else
               average_runs(image_runs, [restored[job.output_dir] for job in image_runs], directory)
               for directory, image_runs, _ in done]
    waiting = dict(sorted(not_started.items()))
    if waiting:
        log.info(f"{len(waiting)} image(s) left for a later run with {pasted_override('hydra.run.dir', run_dir)}: "
                 f"{', '.join(waiting)}")
    run_info = {"wall_seconds": time.perf_counter() - start, "workers": workers, "gpus": len(gpus),
                "date": datetime.now().strftime("%Y-%m-%d %H:%M"), "dataset": str(Path(cfg.data.root) / spec.dataset),
                "all_images": spec.images is None and not waiting and not failed, "reused": len(finished),
                "not_started": waiting, "failed": dict(sorted(failed.items())),
                "image_steps": sum(m["steps"] - m.get("resumed_from_step", 0)  # this run's own steps
                                   for path, m in restored.items() if path not in finished)}
    if metrics or not failed:
        table = Table(cfg, metrics, [scores for _, _, scores in done], run_info)
        _write_table(table, run_dir)
    if failed:
        name, reason = next(iter(run_info["failed"].items()))
        first = reason if len(failed) == 1 else f"the first, {name}: {reason}"
        covered = f"the table in {run_dir} covers the {len(metrics)} image(s) finished" if metrics else "no table"
        raise IncompleteTableError(f"{len(failed)} image(s) failed ({_some_names(sorted(failed))}): {first}; "
                                   f"{covered}, and the same command retries the failed")
    if table.baseline_failures:
        name, failures = next(iter(table.baseline_failures.items()))
        raise IncompleteTableError(f"baseline {name} failed on {len(failures)} image(s) "
                                   f"({_some_names(list(failures))}): {next(iter(failures.values()))}; the table in "
                                   f"{run_dir} leaves its cells empty, and the same command retries it")
    return table.mean


def _check_benchmark_settings(cfg: DictConfig) -> None:
    """``DipError`` for a benchmark's settings that no run could follow, before its dataset is read."""
    spec = cfg.benchmark
    check_choice("benchmark protocol", spec.protocol, ("rgb", "y"), DipError)
    check_whole_number("benchmark.shave", spec.shave, least=0)  # a negative border shaves the whole image away
    for key in ("jobs_per_gpu", "cpu_jobs", "baseline_jobs", "images_per_fit"):
        check_whole_number(key, cfg[key])
    for key in ("images", "restore"):  # a name given without brackets would be read letter by letter
        if (names := spec.get(key)) is not None and not isinstance(names, ListConfig):
            raise DipError(f"benchmark.{key} must be a list of file names ('benchmark.{key}=[bird.png]') or null, "
                           f"got {names!r}")
    if spec.images is not None and not spec.images:
        raise DipError("benchmark.images=[] names no image to restore: leave it null for the whole dataset, or "
                       "name some ('benchmark.images=[bird.png]')")


def _selected_images(cfg: DictConfig) -> tuple[list[DatasetImage], set[str] | None]:
    """The dataset's images that ``benchmark.images`` selects (all by default), and those of them that
    ``benchmark.restore`` lets this run restore (None: all); ``DipError`` for two images that would share a
    sub-run's folder, or a name to restore that is not among them."""
    spec = cfg.benchmark
    folder = Path(cfg.data.root) / spec.dataset
    images = open_dataset(cfg.data.root, spec.dataset, list(spec.images) if spec.images is not None else None,
                          spec.verify_checksums)
    by_stem: dict[str, list[str]] = {}
    for image in images:  # each image's sub-run is named by its stem
        by_stem.setdefault(image.stem, []).append(image.name)
    if shared := next(((stem, names) for stem, names in by_stem.items() if len(names) > 1), None):
        raise DipError(f"{' and '.join(shared[1])} in {folder} would share the sub-run images/{shared[0]}: rename "
                       f"one, or leave one out with benchmark.images")
    restorable = None if spec.restore is None else set(spec.restore)
    if unknown := sorted((restorable or set()) - {image.name for image in images}):
        raise DipError(f"benchmark.restore names {', '.join(unknown)}, not among the images of this benchmark "
                       f"({folder}, benchmark.images)")
    return images, restorable


def _write_table(table: Table, run_dir: Path) -> None:
    """``table.csv`` and ``table.md`` in ``run_dir``, both written before either replaces its earlier version
    (never one table beside another's); ``IncompleteTableError`` when they cannot be."""
    try:
        with atomic_path(run_dir / "table.csv") as csv_file, atomic_path(run_dir / "table.md") as markdown_file:
            Path(csv_file).write_text(table.csv())
            Path(markdown_file).write_text(table.markdown())
    except OSError as error:  # a full disk, a folder in the way: the restorations stay, for the next run
        raise IncompleteTableError(f"{write_error(error, run_dir)}; the restorations are in {run_dir / 'images'}, "
                                   f"and the same command writes the table from them") from None


class Table:
    """One row per image and a mean row: our PSNRs (last output, EMA), the paper's, a published
    reference column, the baselines', then (``y`` protocol) the RGB PSNRs, steps and fit time."""

    def __init__(self, cfg: DictConfig, metrics: list[dict], baselines: list[dict], run_info: dict):
        spec = cfg.benchmark
        self.cfg, self.spec, self.info = cfg, spec, run_info
        key = headline_metric(spec.protocol)
        self.unavailable = {name: reason for scores in baselines for name, value in scores.items()
                            if (reason := value.get("unavailable"))}
        usable = [name for name in spec.baselines if name not in self.unavailable]
        self.baseline_failures: dict[str, dict[str, str]] = collections.defaultdict(dict)  # name: {image: why}
        for m, scores in zip(metrics, baselines, strict=True):
            for name, value in scores.items():
                if "failed" in value:
                    self.baseline_failures[name][m["image"]] = value["failed"]
        published = [(column, node) for column, node in (("paper", spec.paper), ("reference", spec.reference))
                     if node and (node.mean is not None or node.images)]  # a benchmark beyond the paper has none
        metric_label = "PSNR-Y" if spec.protocol == "y" else "PSNR"
        # (CSV key, markdown heading, function of the row's metrics and baselines)
        self.columns = [
            ("image", "image", lambda m, b: m["image"]),
            ("width", None, lambda m, b: m["width"]),
            ("height", None, lambda m, b: m["height"]),
            ("size", "size", lambda m, b: f"{m['width']}x{m['height']}"),
            (key, metric_label, lambda m, b: m[key]),
            (f"{key}_ema", f"{metric_label} EMA", lambda m, b: m[f"{key}_ema"]),
            *([(f"{key}_average{suffix}", f"{metric_label}{label} avg of {spec.runs}",
                lambda m, b, column=f"{key}_average{suffix}": m[column])
               for suffix, label in (("", ""), ("_ema", " EMA"))] if spec.runs > 1 else []),
            *([(f"{key}{suffix}_restart_mean", f"{metric_label}{label} one run",
                lambda m, b, column=f"{key}{suffix}_restart_mean": m[column])
               for suffix, label in (("", ""), ("_ema", " EMA"))] if cfg.restarts > 1 else []),
            *[(column, node.label, lambda m, b, node=node: node.images.get(m["image"]))
              for column, node in published],
            *[(f"{name}_{key}", BASELINES[name].label, lambda m, b, name=name: b[name].get(key)) for name in usable],
        ]
        if spec.protocol == "y":
            self.columns += [
                ("psnr", "PSNR RGB", lambda m, b: m["psnr"]),
                ("psnr_ema", "PSNR RGB EMA", lambda m, b: m["psnr_ema"]),
                *[(f"{name}_psnr", f"{BASELINES[name].label} RGB", lambda m, b, name=name: b[name].get("psnr"))
                  for name in usable],
            ]
        if cfg.get("early_stop"):  # the step whose outputs were kept (with restarts, each one's)
            self.columns.append(("early_stop_step", "stop step", lambda m, b: m.get("early_stop_step")))
            # the discrepancy callback's last-step PSNRs, which are this protocol's
            if spec.protocol == "rgb" and not spec.shave and any("psnr_ema_final" in m for m in metrics):
                self.columns.append(("psnr_ema_final", "EMA at the end", lambda m, b: m.get("psnr_ema_final")))
                if cfg.restarts > 1:
                    self.columns.append(("psnr_ema_final_restart_mean", "EMA one run at the end",
                                         lambda m, b: _mean(m.get("psnr_ema_final_restarts"))))
        self.columns += [
            ("seed", None, lambda m, b: m["seed"]),
            ("steps", None, lambda m, b: m["steps"]),
            ("seconds", "fit s", lambda m, b: _fit_seconds(m)),
        ]
        self.rows = [{column: value(m, b) for column, _, value in self.columns}
                     for m, b in zip(metrics, baselines, strict=True)]
        self.metrics = metrics
        self.mean = {"image": "mean"}
        for column, _, _ in self.columns[4:]:
            values = [row[column] for row in self.rows]
            if column in dict(published):
                self.mean[column] = self._published_mean(dict(published)[column], values)
            elif column in ("seed", "steps", "early_stop_step"):
                self.mean[column] = values[0] if all(value == values[0] for value in values) else None
            elif column == "seconds" and len({m["device_name"] for m in metrics}) > 1:
                continue  # a mean of a GPU's and a CPU's fit times describes neither
            elif all(isinstance(value, (int, float)) for value in values):
                self.mean[column] = statistics.fmean(values)

    def _published_mean(self, node, values: list) -> float | None:
        """The published mean when this run covers the images it was taken over (the dataset, or
        those with published numbers), else the mean of the published numbers of the images run."""
        covered = set(node.images) <= {row["image"] for row in self.rows} if node.images else self.info["all_images"]
        if node.mean is not None and covered:
            return node.mean
        return statistics.fmean(values) if values and all(value is not None for value in values) else None

    def csv(self) -> str:
        keys = [column for column, _, _ in self.columns if column != "size"]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in [*self.rows, self.mean]:
            writer.writerow({key: f"{value:.4f}" if isinstance(value, float) else value
                             for key, value in row.items() if value is not None})
        return out.getvalue()

    def markdown(self) -> str:
        cfg, spec, info, first = self.cfg, self.spec, self.info, self.metrics[0]
        shown = [(column, heading) for column, heading, _ in self.columns if heading]
        shaved = f", {spec.shave}-pixel border shaved" if spec.shave else ""
        protocol = ("PSNR in dB of the Y channel (ITU-R BT.601, MATLAB rgb2ycbcr scaling; a greyscale image as "
                    f"its RGB replica, as the authors' script){shaved}; RGB PSNR over the whole image"
                    if spec.protocol == "y"
                    else f"PSNR in dB over all channels in [0, 1]{shaved}")
        lines = [
            f"# {spec.name}: {spec.title}",
            "",
            f"- dataset: `{info['dataset']}`, {len(self.rows)} images"
            + (", sha256 verified against MANIFEST.tsv" if spec.verify_checksums else ""),
            f"- settings: task {first['task']}, arch {first['arch']}, {self._steps()}, "
            f"lr {cfg.optim.lr}, reg_noise_std {cfg.input.reg_noise_std}, EMA weight {cfg.ema_weight}, "
            + ("" if activation_dtype(cfg.trainer.precision) == torch.float32 else
               f"trainer.precision {cfg.trainer.precision} (the generator's arithmetic), ")
            + (f"seed {self.mean['seed']} for every image" if spec.runs == 1 else
               f"{spec.runs} runs per image (seeds {cfg.seed} to {cfg.seed + spec.runs - 1}, one observation: "
               f"observation seed {cfg.observation_seed}); the PSNR and EMA columns are the first run's, "
               f"the 'avg' columns those of the runs' averaged outputs")
            + (f"; {cfg.restarts} restarts packed into one network per image: the PSNR and EMA columns are "
               f"those of their averaged outputs, the 'one run' columns the mean of each restart's own"
               if cfg.restarts > 1 else ""),
            f"- protocol: {protocol}",
            f"- run: {info['date']} on {self._devices()}{self._work_done()}",
            "",
            "| " + " | ".join(heading for _, heading in shown) + " |",
            "|" + "|".join("---" if column in ("image", "size") else "---:" for column, _ in shown) + "|",
        ]
        for row in [*self.rows, self.mean]:
            cells = [table_cell(row.get(column), column) for column, _ in shown]
            if row is self.mean:
                cells[0] = "**mean**"
            lines.append("| " + " | ".join(cells) + " |")
        notes = list(spec.notes) + [f"{BASELINES[name].label} skipped: {reason}"
                                    for name, reason in self.unavailable.items()]
        notes += [f"{BASELINES[name].label} failed on {_some_names(list(failures))} (empty cells; the same command "
                  f"retries it): {next(iter(failures.values()))}" for name, failures in self.baseline_failures.items()]
        if packed := [m["image"] for m in self.metrics if m.get("packed_with")]:
            notes.append(f"restored in fits of several images (images_per_fit): {_some_names(packed)}; "
                         f"each one's fit s is its share of its fit's time")
        if collapsed := self._collapses():
            notes.append(f"the fit collapsed at its end (its EMA's data term more than backtrack_db = "
                         f"{cfg.backtrack_db} dB above its best): {collapsed}; the table shows the end, "
                         f"`{BEFORE_COLLAPSE_OUTPUT}` in the image's folder the EMA from before")
        if notes:
            lines += ["", *[f"- {note}" for note in notes]]
        return "\n".join(lines) + "\n"

    def _collapses(self) -> str:
        """Each image whose fit collapsed: its EMA's PSNR before the collapse against the table's."""
        column = headline_metric(self.spec.protocol)
        before, end = column + "_ema_before_collapse", column + "_ema"
        return "; ".join(f"{m['image']}, EMA {table_cell(m[before])} dB at step "
                         f"{table_cell(m['ema_before_collapse_step'])} against {table_cell(m[end])} at the end"
                         for m in self.metrics if m.get(before) is not None)

    def _steps(self) -> str:
        if not self.cfg.get("early_stop"):
            return f"{self.mean['steps'] or 'varying'} steps"
        rule = self.cfg.early_stop._target_.rsplit(".", 1)[-1]
        return f"up to {self.cfg.trainer.max_steps} steps, early stopping by {rule} (stop step: the outputs kept)"

    def _work_done(self) -> str:
        """The run line's account of this run's own work: its processes, wall time and rate, and how
        many restorations it took from earlier runs (all of them: no processes or rate to speak of)."""
        info = self.info
        left = {name: f"not started, as {reason}" for name, reason in info["not_started"].items()}
        left |= {name: f"failed ({reason})" for name, reason in info["failed"].items()}
        by_state = collections.defaultdict(list)
        for name, state in left.items():
            by_state[state].append(name)
        waiting = "".join(f"; {state}: {_some_names(names)}" for state, names in by_state.items())
        waiting += " (a later run with this run's hydra.run.dir can do them)" if waiting else ""
        if not info["image_steps"]:
            return (f"; all {info['reused']} restorations finished by earlier runs (each image's fit seconds "
                    f"below){waiting}")
        place = f"{info['gpus']} GPU(s)" if info["gpus"] else "the CPU"
        done = (f" ({info['workers']} process(es) on {place}), wall {info['wall_seconds']:.1f} s, "
                f"{info['image_steps'] / max(info['wall_seconds'], 1e-9):.1f} image-steps/s")
        if info["reused"]:
            done += f"; {info['reused']} restoration(s) reused, finished by an earlier run"
        return done + waiting

    def _devices(self) -> str:
        """The device of the rows, or each device with its number of rows (rows carried from runs elsewhere)."""
        devices = collections.Counter(m["device_name"] for m in self.metrics)
        if len(devices) == 1:
            return next(iter(devices))
        return ", ".join(f"{name} ({count} image{'s' if count > 1 else ''})" for name, count in devices.items())


def _fit_seconds(metrics: dict) -> float:
    """An image's fit time: of the whole fit where a resumed one recorded it, and its share of a fit
    of several images."""
    return metrics.get("seconds_total", metrics["seconds"]) / (1 + len(metrics.get("packed_with", [])))


def _mean(values: list[float] | None) -> float | None:
    return None if values is None else statistics.fmean(values)


def _some_names(names: list[str], shown: int = 3) -> str:
    """The names, or the first ``shown`` and how many more: a run line stays one readable line
    when most of a large benchmark is left for later runs."""
    if len(names) <= shown + 1:
        return ", ".join(names)
    return f"{', '.join(names[:shown])} and {len(names) - shown} more"


def table_cell(value, column: str = "") -> str:
    """A value as a markdown table shows it: dB to 2 decimals, seconds to 1, one per restart joined by /."""
    if value is None:
        return "-"
    if isinstance(value, list):  # one per restart
        return "/".join(table_cell(item, column) for item in value)
    if isinstance(value, float):
        text = f"{value:.1f}" if column == "seconds" else f"{value:.2f}"
        return text.replace("-", "", 1) if float(text) == 0 else text  # a difference of -0.001 is 0.00
    return str(value)

"""Hydra callbacks for multiruns: pin each job to a GPU, and say how to upload offline W&B runs and
which jobs failed.

Registered in ``conf/hydra/``: :class:`SweepSummary` always, :class:`PinToGPU` by the ``gpus``
launcher (``hydra/launcher=gpus``).
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
from pathlib import Path
from typing import IO, Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

import dip.config  # noqa: F401  (registers the config resolvers in the launcher's worker processes)
from dip.gpus import pin_to_gpu, visible_gpus

log = logging.getLogger(__name__)
FAILED_JOBS = "failed_jobs.txt"  # in the sweep folder: a line per job that stopped on a DipError
SWEEP_JOBS = ".sweep_jobs"  # in the sweep folder: this sweep's job folders as each started and finished
_failed_here: set[str] = set()  # the folders of the jobs that failed in this process (record_failure)
_held_slot: tuple[int, IO] | None = None  # (slot, its locked file): this process's place on a GPU


def claim_slot(directory: Path, slots: int) -> int:
    """Claim one of ``slots`` places for this process and hold it until the process ends.

    Each place is an exclusive ``flock`` on ``directory/slot-N.lock``; the kernel drops it when its
    holder exits, so a worker that died frees its place. A process keeps the place it claimed first.
    """
    global _held_slot
    if _held_slot is not None:
        return _held_slot[0]
    directory.mkdir(parents=True, exist_ok=True)
    for slot in range(slots):
        # "a": opening must not empty the file, which holds the pid of the worker that may hold the lock
        handle = open(directory / f"slot-{slot}.lock", "a")  # noqa: SIM115 (held for the process's life)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _held_slot = (slot, handle)
        return slot
    raise RuntimeError(f"all {slots} GPU slots in {directory} are held: more workers than slots")


class PinToGPU(Callback):
    """Runs each job of a multirun on one GPU, at most ``jobs_per_gpu`` jobs on a GPU at a time.

    Pinning goes by worker process, not by job number: a launcher's pool keeps its workers for
    several jobs, and CUDA reads ``CUDA_VISIBLE_DEVICES`` only once per process. The pool has
    ``len(gpus) * jobs_per_gpu`` workers (``hydra.launcher.n_jobs``); each claims a slot ``s``
    (:func:`claim_slot`) and is pinned to ``gpus[s mod len(gpus)]`` before CUDA starts, so however
    long the jobs take, no GPU has more than ``jobs_per_gpu`` of them at once. Without GPUs jobs run
    on the CPU.
    """

    def __init__(self, jobs_per_gpu: int = 1):
        if int(jobs_per_gpu) < 1:
            raise ValueError(f"jobs_per_gpu must be >= 1, got {jobs_per_gpu}")
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.gpus: list[str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Read once in the launching process: a worker's own CUDA_VISIBLE_DEVICES is already narrowed.
        self.gpus = visible_gpus()
        log.info("GPUs %s, %d job(s) per GPU", ",".join(self.gpus) or "none (CPU)", self.jobs_per_gpu)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        gpus = self.gpus if self.gpus is not None else visible_gpus()
        if not gpus:
            log.info("job %s runs on the CPU (no GPU visible)", config.hydra.job.num)
            return
        slots = len(gpus) * self.jobs_per_gpu
        slot = claim_slot(sweep_folder(config.hydra) / ".gpu_slots", slots)
        gpu = pin_to_gpu(slot, gpus)
        log.info("job %s runs on GPU %s (worker slot %d of %d, pid %d)",
                 config.hydra.job.num, gpu, slot, slots, os.getpid())


def sweep_folder(hydra_config: DictConfig) -> Path:
    """The sweep's folder as the launching process names it: ``hydra.sweep.dir`` against the directory
    it started in, since a job under ``hydra.job.chdir=true`` runs in its own folder (``hydra_config``:
    a job's ``HydraConfig``, or a config's ``hydra`` node)."""
    return Path(hydra_config.runtime.cwd, hydra_config.sweep.dir)


def record_failure(sweep_dir: Path, line: str, job_dir: str) -> Path:
    """Append ``line`` (the error of the job in ``job_dir``) to the sweep's list of failed jobs, and return the
    list's path."""
    _failed_here.add(job_dir)
    _append_line(sweep_dir / SWEEP_JOBS, f"failed\t{job_dir}")
    return _append_line(sweep_dir / FAILED_JOBS, line)


def _append_line(path: Path, line: str) -> Path:
    """``line`` appended to the list ``path``; jobs in several worker processes append under an exclusive lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as listed:
        fcntl.flock(listed, fcntl.LOCK_EX)
        listed.write(line.replace("\n", " ") + "\n")
    return path


def sweep_jobs(sweep_dir: Path) -> dict[Path, bool]:
    """The folders of the jobs that the sweep last run in ``sweep_dir`` started, in the order they started, each
    with whether it finished (its run, experiment or benchmark done, or found done before)."""
    jobs: dict[Path, bool] = {}
    for status, folder in _job_records(sweep_dir):
        jobs[folder] = jobs.get(folder, False) or status == "finished"
    return jobs


def failed_job_folders(sweep_dir: Path) -> set[Path]:
    """The folders of the jobs of the sweep last run in ``sweep_dir`` that failed (``record_failure``), resolved:
    a failed job's folder kept for its traceback is a failure, listed as one, not a run still to finish."""
    return {folder.resolve() for status, folder in _job_records(sweep_dir) if status == "failed"}


def _job_records(sweep_dir: Path) -> list[tuple[str, Path]]:
    """``(status, job folder)`` as ``.sweep_jobs`` lists them: started, finished or failed."""
    listed = sweep_dir / SWEEP_JOBS
    lines = listed.read_text(encoding="utf-8", errors="replace").splitlines() if listed.is_file() else []
    return [(status, Path(folder)) for status, _, folder in (line.partition("\t") for line in lines)]


def failed_jobs(sweep_dir: Path) -> list[str]:
    """The lines ``record_failure`` wrote for the sweep in ``sweep_dir`` (none: an empty list); bytes
    that are not UTF-8 (a damaged or hand-edited list) read as U+FFFD rather than stopping the reader."""
    failures = sweep_dir / FAILED_JOBS
    return failures.read_text(encoding="utf-8", errors="replace").splitlines() if failures.is_file() else []


def _not_optuna_s_note_of_a_failed_job(record: logging.LogRecord) -> bool:
    """False for the Optuna sweeper's warning about a job that failed (it returned None), which the job has
    reported in its own line already."""
    return not record.getMessage().startswith("Failed experiment: Return value must be float-castable. Got 'None'")


class SweepSummary(Callback):
    """At the end of a multirun, prints where the runs are, how to build the dashboard, the ``wandb
    sync`` command for the offline W&B runs it left, and the jobs that failed; then exits with status
    2 if any did (the other jobs have run)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # a sweep run again into its folder (to finish it) starts fresh lists
        for listed in (FAILED_JOBS, SWEEP_JOBS):
            (Path(config.hydra.sweep.dir) / listed).unlink(missing_ok=True)
        logging.getLogger("hydra_plugins.hydra_optuna_sweeper._impl").addFilter(_not_optuna_s_note_of_a_failed_job)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # in the job's process, a launcher's worker too
            _append_line(sweep_folder(config.hydra) / SWEEP_JOBS, f"started\t{config.hydra.runtime.output_dir}")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        # a job that failed on a DipError returned (None, its line said): the other jobs go on
        folder = config.hydra.runtime.output_dir
        if config.hydra.mode == RunMode.MULTIRUN and job_return.status == JobStatus.COMPLETED \
                and folder not in _failed_here:
            _append_line(sweep_folder(config.hydra) / SWEEP_JOBS, f"finished\t{folder}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        print(sweep_summary(sweep_dir, sweep_jobs(sweep_dir)))
        if failed_jobs(sweep_dir):
            raise SystemExit(2)


# the dashboard, named in a sweep's summary as it can be typed where the sweep ran
COMPARE_SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "compare.py"


def _job_of(run: Path, sweep_dir: Path) -> Path:
    """The job folder in ``sweep_dir`` that ``run`` is part of: the nearest folder holding Hydra's record of a job
    (``.hydra/``), from ``run`` up; ``run`` itself where none does (``hydra.output_subdir=null``)."""
    return next((folder for folder in [run, *run.parents] if folder.is_relative_to(sweep_dir)
                 and (folder / ".hydra").is_dir()), run)


def sweep_summary(sweep_dir: Path, jobs: dict[Path, bool]) -> str:
    """What the sweep whose job folders are ``jobs`` (each with whether it finished) left in ``sweep_dir``: how
    many of them finished (run now or before), the runs of earlier sweeps there, the dashboard's command, the
    failed jobs, the offline W&B runs to upload."""
    runs = sorted(path.parent for path in sweep_dir.glob("**/metrics.json"))
    # an experiment's or a benchmark's sub-runs are part of their job: this sweep's that holds them, else the folder
    # with Hydra's record above them, an earlier sweep's job; a run in the folder of this sweep's job that failed
    # (refused, as it held other settings) is an earlier sweep's too
    folders = {job.resolve(): done for job, done in jobs.items()}  # the jobs' as Hydra named them: absolute
    earlier = set()
    for run in map(Path.resolve, runs):
        ours = next((job for job in folders if run.is_relative_to(job)), None)
        if ours is None:
            earlier.add(_job_of(run, sweep_dir.resolve()))
        elif run == ours and not folders[ours]:
            earlier.add(run)
    failures = failed_jobs(sweep_dir)
    lines = [f"sweep: {sum(jobs.values())} of {len(jobs)} job(s) finished in {sweep_dir}"
             + (f"; {len(earlier)} run(s) of earlier sweeps there too" if earlier else "")]
    # with no run's record (Hydra's, or an experiment's sub-run's config.yaml), compare.py would only say so
    if any((run / ".hydra" / "config.yaml").is_file() or (run / "config.yaml").is_file() for run in runs):
        script = COMPARE_SCRIPT.relative_to(Path.cwd()) if COMPARE_SCRIPT.is_relative_to(Path.cwd()) else COMPARE_SCRIPT
        lines.append(f"dashboard: python {shlex.quote(str(script))} {shlex.quote(str(sweep_dir))}")
    if failures:
        lines += [f"failed: {len(failures)} job(s), listed in {sweep_dir / FAILED_JOBS}",
                  *(f"  {line}" for line in failures)]
    offline = sorted(sweep_dir.glob("**/wandb/offline-run-*"))
    if offline:  # one glob per depth of run folder: <sweep>/*/wandb/offline-run-*
        patterns = sorted({"/".join([shlex.quote(str(sweep_dir)), *["*"] * (len(path.relative_to(sweep_dir).parts) - 2),
                                     "wandb", "offline-run-*"]) for path in offline})  # the shell expands the *
        lines += [f"W&B: {len(offline)} offline run(s), one group named '{sweep_dir.name}'; upload them with",
                  f"  wandb sync {' '.join(patterns)}"]
    return "\n".join(lines)

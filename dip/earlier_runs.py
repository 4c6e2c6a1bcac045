"""Earlier runs in a run folder: a finished run's config and metrics, and whether it is the run asked for
(then reported, not run again; of other settings, refused); and what the run folders named on the command
line held before Hydra started, so that a failed job removes only what it wrote and puts back the records
Hydra rewrote."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from dip.errors import DipError
from dip.outputs import CHECKPOINT_NAME, METRICS_FILE, OUTPUT_FILES, RESTART_OUTPUT
from dip.overrides import run_folders
from dip.run_settings import digest_settings, finished_run_settings, refuse_other_settings, setting_differences


def saved_sub_run_config(folder: Path) -> dict | None:
    """The config (``config.yaml``) of the run that finished in ``folder`` (beside its ``metrics.json``),
    else None; ``DipError`` when that config cannot be read."""
    config_file = folder / "config.yaml"
    if not (config_file.is_file() and (folder / METRICS_FILE).is_file()):
        return None
    try:
        saved = yaml.safe_load(config_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict):
        raise DipError(f"cannot read {config_file}: delete {folder / METRICS_FILE} to restore it again")
    return saved


def read_metrics(path: Path, advice: str) -> dict:
    """The figures in ``path`` (a finished run's ``metrics.json``); ``DipError`` naming it, with ``advice``, when
    it cannot be read or holds no mapping."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: not UTF-8, not JSON
        metrics = None
    if not isinstance(metrics, dict):
        raise DipError(f"cannot read {path}: {advice}")
    return metrics


def finished_metrics(folder: Path, saved: DictConfig | None, cfg: DictConfig) -> dict | None:
    """The metrics of the run with ``cfg``'s settings finished in ``folder``, whose config was ``saved``
    (None: no run finished there), else None; ``DipError`` if the run that finished there had other
    settings, so that it is not replaced. A final checkpoint kept there (``checkpoint.keep=true``) is
    for the fit to continue, or to refuse, unless the run finished exactly as asked."""
    if saved is None:
        return None
    metrics = read_metrics(folder / METRICS_FILE, "delete it to run again")
    # its config names its files; what they held then, its metrics say
    recorded = metrics.get("input_sha256")
    earlier = {**finished_run_settings(saved, digests=False), **digest_settings(recorded or {})}
    settings = finished_run_settings(cfg)
    kept_checkpoint = (folder / CHECKPOINT_NAME).is_file()
    if kept_checkpoint and setting_differences(earlier, settings):
        return None
    refuse_other_settings(folder, earlier, settings)
    # a continuation interrupted there left the record of its settings beside the shorter run's metrics; a fit
    # that ended early (early stopping, divergence) finished short of them
    shorter = metrics.get("steps") != cfg.trainer.max_steps and not metrics.get("stop_reason")
    return None if kept_checkpoint and shorter else metrics


def job_records(output_dir: Path) -> dict[Path, bytes]:
    """Hydra's record of the job in ``output_dir`` (``.hydra/*``) as it is now: at the job's start, its own."""
    return {path: path.read_bytes() for path in (output_dir / ".hydra").glob("*") if path.is_file()}


def rewrite_records(records: dict[Path, bytes]) -> None:
    """Write ``records`` (``job_records``) again where they changed: a job refused in this folder while this one
    ran had Hydra write its own over them before it could be refused."""
    for path, data in records.items():
        if not path.is_file() or path.read_bytes() != data:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


class EarlierRuns:
    """What the run folders named on the command line (``hydra.run.dir``, ``hydra.sweep.dir`` and the
    job folders in it) held before Hydra started: the times their outputs and logs were written, and
    Hydra's records, which Hydra rewrites before a job can fail. A failed job removes only what it wrote."""

    def __init__(self):
        self.written: dict[Path, int] = {}
        self.records: dict[Path, bytes] = {}
        self.logs: dict[Path, dict[str, str | None]] = {}  # what each run folder's wandb/ held, links' targets
        self.folders: set[Path] | None = None  # the run folder's ancestors that existed, once noted
        self.folder: Path | None = None  # the folder Hydra writes into (hydra.run.dir or hydra.sweep.dir), once noted
        self.held = False  # this process holds the run folder (dip.files.hold_folder): none other writes there
        self.job_started = False  # Hydra's writes before it are its own; an error after it, the job's

    def note_folders(self, folder: str | Path | None) -> None:
        """Note which ancestors of ``folder`` (``hydra.run.dir``, or a sweep's ``hydra.sweep.dir``, before Hydra
        makes it) and of the working directory exist: a failed job removes the empty ones that Hydra added, and
        only those."""
        if folder is None:
            return
        self.folder = Path(folder)
        self.folders = {path for place in (Path(folder).resolve(), Path.cwd().resolve())
                        for path in (place, *place.parents) if path.is_dir()}

    def record(self, arguments: list[str]) -> None:
        """Note what the folders named in the command line ``arguments`` and their job folders hold."""
        for _, folder in run_folders(arguments):
            for run_dir in _run_dirs_in(folder):
                for path in _job_files(run_dir):
                    self.written[path.resolve()] = path.stat().st_mtime_ns
                for path in [*(run_dir / ".hydra").glob("*"), run_dir / SWEEP_RECORD]:
                    if path.is_file():
                        self.records[path.resolve()] = path.read_bytes()
                if (run_dir / WANDB_FOLDER).is_dir():  # W&B's links (latest-run, debug.log) with their targets
                    self.logs[run_dir.resolve()] = {path.name: os.readlink(path) if path.is_symlink() else None
                                                    for path in (run_dir / WANDB_FOLDER).iterdir()}

    def finished_config(self, output_dir: Path) -> DictConfig | None:
        """The config of the run that had finished in ``output_dir`` before Hydra started (its
        ``metrics.json`` and Hydra's record of it were there), else None; ``DipError`` when the record
        is missing (``hydra.output_subdir=null``): nothing says what the run there was."""
        if (output_dir / METRICS_FILE).resolve() not in self.written:
            return None
        if (record := self._record(output_dir)) is None:
            raise DipError(f"{output_dir} holds a finished run without Hydra's record of its settings "
                           f"(.hydra/config.yaml: a run of dip.restore(), or with hydra.output_subdir=null): run into "
                           f"another folder, or delete its metrics.json to replace it")
        return record

    def refuse_unknown_run(self, output_dir: Path) -> None:
        """``DipError`` when ``output_dir`` holds a finished run (its ``metrics.json``) that was not there when the
        command started: in a folder named by the job (``${hydra.job.name}``), or shared by jobs of one sweep.
        Hydra has replaced its record with this job's: it could be neither compared nor replaced."""
        if (output_dir / METRICS_FILE).is_file() and (output_dir / METRICS_FILE).resolve() not in self.written:
            raise DipError(f"{output_dir} holds a finished run that was not there when this command started (in a "
                           "folder named by the job, or shared by jobs of one sweep: give each job its own, as "
                           "hydra.sweep.subdir does by default); run into another folder, or delete its metrics.json "
                           "to replace it")

    def refuse_other_kind(self, output_dir: Path, cfg: DictConfig) -> None:
        """``DipError`` when ``output_dir`` held a run of another kind than ``cfg``'s (a benchmark, a figure
        experiment, one restoration) before Hydra started: neither keeps the other's files and record."""
        try:
            record = self._record(output_dir)
        except DipError:  # finished_config says so where it matters
            return
        if record is not None and (earlier := run_kind(record)) != run_kind(cfg):
            raise DipError(f"{output_dir} holds {earlier}, not {run_kind(cfg)}: run into another folder")

    def _record(self, output_dir: Path) -> DictConfig | None:
        """Hydra's record of the run ``output_dir`` held before Hydra started (None: none); ``DipError``
        when it cannot be read."""
        if (record := self.records.get((output_dir / ".hydra" / "config.yaml").resolve())) is None:
            return None
        try:
            return OmegaConf.create(record.decode())
        except Exception:  # noqa: BLE001 (YAML's or OmegaConf's errors, or bytes that are not text)
            raise DipError(f"{output_dir / '.hydra' / 'config.yaml'}, the record of the finished run there, cannot "
                           f"be read: run into another folder, or delete its metrics.json to replace it") from None

    def discard(self, output_dir: Path) -> None:
        """Remove what this failed job left: the outputs it wrote, its log unless an earlier run's (which
        it added to), Hydra's records (``.hydra/``, a sweep's ``multirun.yaml``; an earlier run's are put back),
        then the folder if empty, and the folders above it that Hydra made for it (``outputs/TASK/``) if empty."""
        for path in _job_files(output_dir):
            earlier = self.written.get(path.resolve())
            if earlier is None or (earlier != path.stat().st_mtime_ns and path.suffix != ".log"):
                path.unlink()
        record_dir = self.put_back_records(output_dir)
        logs, earlier_logs = output_dir / WANDB_FOLDER, self.logs.get(output_dir.resolve(), {})
        for path in logs.iterdir() if logs.is_dir() else ():  # the W&B run this job started, if it got so far
            if path.name not in earlier_logs:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            elif (target := earlier_logs[path.name]) is not None and path.is_symlink() and os.readlink(path) != target:
                path.unlink()  # W&B pointed it at the run just removed: back to the earlier run's
                path.symlink_to(target)
        existed = self.folders is not None and output_dir.resolve() in self.folders  # the user's, if empty
        for folder in (logs, record_dir) if existed else (logs, record_dir, output_dir):
            if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):  # a link is the user's
                folder.rmdir()
        self._remove_folders_above(output_dir)

    def put_back_records(self, output_dir: Path, remove_added: bool = True) -> Path:
        """Put back the records of Hydra's (``.hydra/``, a sweep's ``multirun.yaml``) that ``output_dir`` held
        before Hydra started and that its job rewrote; remove those it added, unless they may be another run's
        (``remove_added`` false: a run that started since). Returns the ``.hydra`` folder."""
        record_dir = output_dir / ".hydra"
        for path in [*record_dir.glob("*"), output_dir / SWEEP_RECORD]:
            if (earlier := self.records.get(path.resolve())) is not None:
                path.write_bytes(earlier)
            elif remove_added and path.is_file():
                path.unlink()
        return record_dir

    def remove_unused_run_folder(self) -> None:
        """Remove the run folder (a sweep's too) if it is empty and was not there before (made to be held, then the
        command refused before its job wrote anything), and the folders above it made for it. Only one this
        process held: a folder another run holds is empty from its making until Hydra writes there."""
        run_dir = self.folder
        if not self.held or self.folders is None or run_dir.resolve() in self.folders or not run_dir.is_dir() \
                or run_dir.is_symlink() or any(run_dir.iterdir()):
            return
        run_dir.rmdir()
        self._remove_folders_above(run_dir)

    def _remove_folders_above(self, output_dir: Path) -> None:
        """The empty folders above the removed ``output_dir`` that were made for it."""
        if self.folders is not None and not output_dir.exists():
            for folder in output_dir.resolve().parents:
                if folder in self.folders or any(folder.iterdir()):
                    break
                folder.rmdir()


WANDB_FOLDER = "wandb"  # where the W&B logger writes its offline runs, in the run folder
SWEEP_RECORD = "multirun.yaml"  # Hydra's record of a sweep, in its folder


def _run_dirs_in(folder: Path) -> set[Path]:
    """``folder`` and the job folders in it, at any depth (``hydra.sweep.subdir=${arch}/${seed}``): those
    holding Hydra's record or a finished run, and its direct subfolders (a job's log alone)."""
    if not folder.is_dir():
        return set()
    nested = {path.parent for name in (".hydra", METRICS_FILE) for path in folder.glob(f"**/{name}")}
    return {folder, *(sub for sub in folder.iterdir() if sub.is_dir()), *nested}


def run_kind(cfg: DictConfig) -> str:
    """What a run of ``cfg`` is, in words: a benchmark's table, a figure experiment or one restoration."""
    if OmegaConf.select(cfg, "benchmark.name", default=None) is not None:
        return "a benchmark's run (experiments/benchmark.py)"
    if OmegaConf.select(cfg, "experiment.runner", default=None) is not None:
        return "a figure experiment's run (+experiment=NAME)"
    return "a single restoration (run.py)"


def _job_files(run_dir: Path) -> list[Path]:
    """The files a job writes directly in its run folder: the outputs and Hydra's log."""
    names = [run_dir / name for name in OUTPUT_FILES]
    return [path for path in [*names, *run_dir.glob(RESTART_OUTPUT.format("*")), *run_dir.glob("*.log")]
            if path.is_file()]

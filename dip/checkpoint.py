"""Never lose a run: a checkpoint written atomically every N steps and on SIGINT / SIGTERM, and
resuming from it to exactly the result an uninterrupted run gives.

The checkpoint is Lightning's own (weights, ``z``, EMA and the other buffers, optimiser state, loop
progress, callback states such as early stopping's) plus what Lightning does not keep: the RNG
states (CPU and CUDA: ``reg_noise_std`` draws from them), the backtracking weights (the module's
``on_save_checkpoint``) and the settings, so that a resume with other settings is refused.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger
from torch.utils.data import DataLoader, Dataset, Sampler

from dip.errors import DipError, Interrupted, RunInterruptedError, load_fault, one_line
from dip.files import atomic_path
from dip.outputs import CHECKPOINT_NAME
from dip.run_settings import result_settings, setting_differences
from dip.signals import CaughtSignals, finished_first_on, fit_steps_done, forget_finished_first


class _StepSampler(Sampler):
    """Indices ``start, ..., steps - 1``; remembers the next one so a checkpoint can record it."""

    def __init__(self, steps: int):
        self.steps, self.start, self.next = steps, 0, 0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        start, self.start = self.start, 0
        for index in range(start, self.steps):
            self.next = index + 1
            yield index


class StepLoader(DataLoader):
    """The items of ``dataset`` (one per optimisation step) in order, resumable mid-epoch: Lightning
    saves ``state_dict`` in its checkpoints and, on resume, this loader continues at the saved step
    (a plain DataLoader would start the epoch again)."""

    def __init__(self, dataset: Dataset):
        super().__init__(dataset, batch_size=None, sampler=_StepSampler(len(dataset)))

    def state_dict(self) -> dict:
        return {"next_step": self.sampler.next}

    def load_state_dict(self, state_dict: dict) -> None:
        self.sampler.start = state_dict["next_step"]


def find_checkpoint(resume: str | None, output_dir: Path | None) -> Path | None:
    """The checkpoint to resume from: the one an interrupted run left in ``output_dir`` (it went on
    from ``resume``, if that was given), else ``resume`` (a file, or a run directory holding one),
    else None."""
    own = Path(output_dir) / CHECKPOINT_NAME if output_dir is not None else None
    if resume:
        path = Path(resume).expanduser()
        if path.is_dir():
            path = path / CHECKPOINT_NAME
        if not path.is_file():
            raise DipError(f"checkpoint not found: {path}")
        return own if own is not None and own.is_file() else path
    return own if own is not None and own.is_file() else None


def checked_resume(cfg: DictConfig, directory: Path | None,
                   extra_settings: dict | None = None) -> tuple[Path | None, Resumable, dict]:
    """The checkpoint a fit of ``cfg`` into ``directory`` continues (``find_checkpoint``; None: it starts
    afresh), what it holds (``check_resumable``: refused when it cannot be continued), and the settings the
    fit's own checkpoints are to hold: ``cfg``'s, with ``extra_settings`` (``dip.pipeline.run``'s)."""
    settings = {**result_settings(cfg), **(extra_settings or {})}
    resume = find_checkpoint(cfg.resume, directory)
    if resume is None:
        return None, Resumable(0, None), settings
    return resume, check_resumable(resume, settings, cfg.trainer.max_steps, directory), settings


@dataclass
class Resumable:
    """What a checkpoint to resume from holds beside the training state."""

    step: int
    wandb_run_id: str | None  # the W&B run it logged to, for an online logger to continue


def check_resumable(path: Path, settings: dict, max_steps: int, output_dir: Path | None) -> Resumable:
    """The step (and W&B run) the checkpoint ``path`` holds; ``DipError`` if it is unreadable, was made
    with other settings than ``settings`` (see ``result_settings``) or already holds ``max_steps`` steps,
    with advice for a checkpoint the run folder ``output_dir`` holds or for one that ``resume=`` named."""
    if output_dir is not None and Path(path) == Path(output_dir) / CHECKPOINT_NAME:
        instead = "delete it, or run into another folder"
    else:  # another folder is no help: the same resume= is read from any
        instead = "name another with resume=, or leave resume= out"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds on a damaged file
        raise DipError(f"cannot read checkpoint {path} ({load_fault(error)}): damaged, or not a checkpoint: "
                       f"{instead}") from None
    try:
        saved, step = checkpoint["dip"]["settings"], int(checkpoint["global_step"])
    except (LookupError, TypeError, ValueError):  # a PyTorch file that something else saved
        raise DipError(f"{path} is not a dip checkpoint (it lacks the run's settings and step): {instead}") from None
    if differences := setting_differences(saved, settings):
        raise DipError(f"checkpoint {path} was made with other settings ({differences}): use the same settings, "
                       f"or {instead}")
    if step >= max_steps:
        raise DipError(f"checkpoint {path} already holds {step} steps (trainer.max_steps={max_steps}): raise "
                       f"trainer.max_steps to continue it, or {instead}")
    return Resumable(step, checkpoint["dip"].get("wandb_run_id"))


class RunCheckpoint(pl.Callback):
    """Writes ``path`` atomically every ``every_n_steps`` steps (0 or None: never) and, on the first
    SIGINT or SIGTERM, at the end of the step under way, then stops the run (``interrupted`` holds the
    signal), unless that step ends the fit anyway (its last, or early stopping's): then the run
    finishes. A second SIGINT aborts at once. Restores the RNG states of a resumed run just before its
    first step. With ``keep_final`` (so that a larger ``trainer.max_steps`` continues the run later),
    the last step's checkpoint goes to ``final_path`` until ``finish`` puts it in place, once the
    outputs are written: until then, the one a run resumes is the last written every N steps."""

    def __init__(self, path: Path | None, every_n_steps: int | None, settings: dict, keep_final: bool = False):
        self.path = Path(path) if path is not None else None  # None: a run without a folder stops, writes nothing
        self.every_n_steps, self.settings = every_n_steps or 0, settings
        self.keep_final = keep_final
        self.final_path = self.path.with_name(self.path.name + ".final") if self.path is not None else None
        self.interrupted: int | None = None
        self.saved_step: int | None = None  # the step the checkpoint at ``path`` holds (None: none there)
        self.unwritten: str | None = None  # why the latest checkpoint could not be written
        self._signals = CaughtSignals()
        self._rng_to_restore: dict | None = None

    @property
    def signal_received(self) -> int | None:
        return self._signals.received

    def on_train_start(self, trainer, pl_module) -> None:
        forget_finished_first()
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp") if self.path else ():  # killed mid-write
            stale.unlink(missing_ok=True)
        self.discard_final()  # of a run killed before its outputs were written
        self.saved_step = trainer.global_step if self.path is not None and self.path.is_file() else None
        self._signals.install()  # after Lightning's own SIGTERM handler (installed when fit starts), which would raise

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._rng_to_restore is not None:
            torch.set_rng_state(self._rng_to_restore["cpu"])
            if torch.cuda.is_available() and self._rng_to_restore["cuda"]:
                torch.cuda.set_rng_state_all(self._rng_to_restore["cuda"])
            self._rng_to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        last = step >= trainer.max_steps or trainer.should_stop  # after early stopping's callback, which stops it
        received = self._signals.received
        if received is not None and not last:
            doing = "writing a checkpoint" if self.path else "stopping"
            print(f"\n{signal.Signals(received).name}: {doing} at step {step}", file=sys.stderr)
            self.save(trainer)
            self.interrupted = received
            trainer.should_stop = True
        elif self.keep_final and last:
            self.save(trainer, self.final_path)
        elif self.every_n_steps and step % self.every_n_steps == 0 and step < trainer.max_steps:
            self.save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.interrupted is None:  # a fit stopped on a signal stays stoppable at once by a second Ctrl-C
            fit_steps_done()
        if self._signals.received is not None and self.interrupted is None:
            print(file=sys.stderr)  # past the progress bar's line
            finished_first_on(self._signals.received, "at the last step")
        self._signals.restore()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._signals.restore()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
        wandb_run_id = trainer.logger.version if isinstance(trainer.logger, WandbLogger) else None
        checkpoint["dip"] = {"settings": self.settings, "rng": {"cpu": torch.get_rng_state(), "cuda": cuda},
                             "wandb_run_id": wandb_run_id}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._rng_to_restore = checkpoint["dip"]["rng"]

    def interruption(self, signum: int, step: int, max_steps: int, why: str = "") -> BaseException:
        """What ends the run that ``signum`` stopped at ``step``: ``RunInterruptedError`` naming the checkpoint
        left (when of an earlier step: ``why``, or why this step's could not be written), or ``Interrupted``
        when there is none."""
        if self.saved_step is None:
            return Interrupted(signum)
        return RunInterruptedError(signum, step, max_steps, self.path, saved_step=self.saved_step,
                                   why=self.unwritten or why)

    def finish(self) -> None:
        """The fit's outputs are written: its checkpoint is removed, or with ``keep_final`` replaced by
        the last step's (kept, when that one could not be written)."""
        if self.path is None:
            return
        if self.keep_final and self.final_path.is_file():
            os.replace(self.final_path, self.path)
        elif self.keep_final and self.saved_step is not None:  # the last step's could not be written
            print(f"the checkpoint of step {self.saved_step} stays in {self.path} to be continued from "
                  f"(trainer.max_steps larger)", file=sys.stderr)
        else:
            self.path.unlink(missing_ok=True)

    def discard_final(self) -> None:
        if self.final_path is not None:
            self.final_path.unlink(missing_ok=True)

    def save(self, trainer: pl.Trainer, path: Path | None = None) -> None:
        """Write the checkpoint (to ``path``, default ``self.path``) next to its final name, then rename:
        a reader (or a resume after a crash mid-write) only ever sees a whole checkpoint. Nothing without
        a path. One that cannot be written (a full disk) is said once, in a line, and the fit goes on:
        it is worth more than its checkpoint; ``unwritten`` says why."""
        if self.path is None:
            return
        target = path or self.path
        try:
            if trainer.logger is not None:  # the curve up to this step on disk too: a resume keeps its rows
                trainer.logger.save()
            with atomic_path(target) as tmp:
                trainer.save_checkpoint(tmp, weights_only=False)  # the optimizer too (and no log line saying so)
        except OSError as error:
            reason = error.strerror or one_line(error, 100)
            if self.unwritten is None:
                print(f"\ncannot write checkpoint {target} at step {trainer.global_step} ({reason})", file=sys.stderr)
            self.unwritten = f"its checkpoint could not be written: {reason}"
            return
        self.unwritten = None
        if target == self.path:
            self.saved_step = trainer.global_step

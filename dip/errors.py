"""Errors that reach the user as one line, without a traceback."""

from __future__ import annotations

import signal
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from dip.overrides import pasted_override


def one_line(error: BaseException, limit: int | None = None) -> str:
    """``error``'s message on one line (at most ``limit`` characters), or its type's name when it has none."""
    return " ".join(str(error).split())[:limit] or type(error).__name__


def invalid_yaml(name, error: Exception) -> str:
    """``NAME (line N) is not valid YAML: PROBLEM``, for a YAML parser's ``error`` reading the file ``name``."""
    mark = getattr(error, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark else ""
    return f"{name}{where} is not valid YAML: {getattr(error, 'problem', None) or one_line(error)}"


def kept_traceback(error: BaseException, log_file: Path, limit: int = 200) -> str:
    """One line for a bug's ``error`` (its type and message), its traceback appended to ``log_file``: the
    console keeps to one line an error, and the file keeps what a fix needs."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as log:
        log.write("".join(traceback.format_exception(error)))
    return f"{type(error).__name__}: {one_line(error, limit)} (its traceback: {log_file})"


def load_fault(error: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, on one line. Not torch's advice for a file it
    cannot unpickle (load it without ``weights_only``, which can run arbitrary code): such a file is not
    one of tensors at all."""
    if isinstance(error, OSError):
        return error.strerror or one_line(error, 80)
    if isinstance(error, RuntimeError):  # torch's own, reading a damaged archive
        return one_line(error, 80)
    return "not a PyTorch file of tensors"  # the unpickler's, on a file of another kind (KeyError, EOFError, ...)


def fail(message: str) -> NoReturn:
    """Refuse the command in one line, ``error: <message>``, with exit status 2 (as argparse does)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


class DipError(Exception):
    """A problem with the user's input or options; the message names it (and the file)."""


def check_choice(name: str, value, choices, error: type[Exception] = ValueError):
    """``value`` if it is one of ``choices``, else ``error`` naming them: ``unknown NAME 'x' (choose from: a, b)``
    (``ValueError`` where a constructor refuses it, as Hydra then reports; ``DipError`` where dip does)."""
    if value not in choices:
        raise error(f"unknown {name} '{value}' (choose from: {', '.join(choices)})")
    return value


class MemoryShortError(DipError):
    """A run needs more memory than its device has free: refused before it starts, or out of memory
    during the fit. A smaller run can still fit, which is what a packed benchmark fit falls back to."""


class UnresolvedSettingError(DipError):
    """A setting's interpolation does not resolve here (``${oc.env:PHOTOS}``, PHOTOS unset): one line in a job;
    before a sweep's jobs start, left to them, as their environment may set it (``hydra.job.env_set``, a
    launcher's)."""


class CheckpointLacksError(DipError):
    """A checkpoint lacks what the fit resuming it would record (an experiment's snapshot at a step it has
    passed); raised by the recorder, as the checkpoint is loaded, which is not told its file: the fit names it."""


class OutputsNotWrittenError(DipError):
    """A fit finished but its outputs could not be written; its last checkpoint is kept for a later run
    to finish from (which is why a packed benchmark fit that raises it is not split into fits of one)."""


class Interrupted(KeyboardInterrupt):
    """A signal stopped a run outside a fit (none under way to checkpoint): Ctrl-C, or a SIGTERM or SIGHUP
    that ``dip.cli.launch`` turns into one, or any of them after a fit finished before acting on it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    def sent_as(self, signum: int) -> Interrupted:
        """This interruption, by ``signum``: the one the user sent, passed on as another."""
        return Interrupted(signum)


def interruption_signal(interruption: BaseException) -> int:
    """The signal behind ``interruption``: an ``Interrupted``'s (or ``RunInterruptedError``'s), else SIGINT."""
    return getattr(interruption, "signum", signal.SIGINT)


class RunInterruptedError(Exception):
    """The run stopped on a signal, its checkpoint kept; re-running resumes it. ``advice`` says how
    (default: the command line's way). The checkpoint holds ``saved_step`` (default: ``step``, where the run
    stopped); an earlier step when the stop's own could not be written, which ``why`` says, or the step it
    resumed from when it stopped before its first step."""

    def __init__(self, signum: int, step: int, max_steps: int, checkpoint: Path, advice: str | None = None,
                 saved_step: int | None = None, why: str = ""):
        self.signum, self.step, self.max_steps, self.checkpoint = signum, step, max_steps, checkpoint
        self.saved_step, self.why = step if saved_step is None else saved_step, why
        self.advice = advice or (f"run the same command again with "
                                 f"{pasted_override('hydra.run.dir', checkpoint.parent)} "
                                 f"(or {pasted_override('resume', checkpoint)})")
        stopped = f"interrupted by {signal.Signals(signum).name} at step {step} of {max_steps}"
        if self.saved_step == step and not why:
            super().__init__(f"{stopped}; checkpoint written to {checkpoint}: {self.advice} to continue")
        else:
            super().__init__(f"{stopped} ({why}); the checkpoint of step {self.saved_step} is left in {checkpoint}: "
                             f"{self.advice} to continue from it")

    def continue_in(self, run_dir: Path, key: str = "hydra.run.dir") -> str:
        """The message for a run continued from ``run_dir`` rather than the checkpoint's folder: an
        experiment's (its sub-runs'), or a sweep's (``key`` hydra.sweep.dir) that the job was part of."""
        return str(self.advised(f"run the same command again with {pasted_override(key, run_dir)}"))

    def sent_as(self, signum: int) -> RunInterruptedError:
        """This interruption, by ``signum``: the one the user sent, passed on as another."""
        return type(self)(signum, self.step, self.max_steps, self.checkpoint, self.advice, self.saved_step, self.why)

    def advised(self, advice: str) -> RunInterruptedError:
        """This interruption, saying ``advice`` for how to continue."""
        return type(self)(self.signum, self.step, self.max_steps, self.checkpoint, advice, self.saved_step, self.why)

    def __reduce__(self):  # from a benchmark's worker process to the main one
        return type(self), (self.signum, self.step, self.max_steps, self.checkpoint, self.advice, self.saved_step,
                            self.why)


class FitStoppedError(Exception):
    """A signal that stops a fit while the Trainer sets it up or tears it down, or a second SIGINT during
    it: not a KeyboardInterrupt, which Lightning's Trainer answers with its own message and exit status 1."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

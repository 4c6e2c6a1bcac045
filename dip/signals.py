"""The signals that stop a run (SIGINT, SIGTERM and SIGHUP): turned into ``Interrupted`` outside a fit, noted
rather than acted on while a fit's state or outputs must be written whole, and the signal a finished run was
finished before acting on. Light, without Lightning: ``run.py`` installs its handlers before the libraries
load, and the benchmark's main process imports this before it knows there is anything to fit."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NoReturn

from dip.errors import FitStoppedError, Interrupted, interruption_signal


def raise_interrupted(signum: int, frame) -> NoReturn:
    """A SIGTERM (or SIGHUP) handler: the signal ends what runs as Ctrl-C does (a scheduler's stop, a closed
    terminal, outside a fit)."""
    raise Interrupted(signum)


def until_the_fit_listens(signum: int, frame) -> None:
    """A benchmark worker's SIGTERM (or SIGHUP) while no fit of its listens: ignored, as its main process sends
    it again until one does (``CaughtSignals`` replaces this handler, but not a script's own ``SIG_IGN``)."""


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a run as Ctrl-C does: SIGINT, SIGTERM (a scheduler's, ``timeout``'s) and SIGHUP
    (the terminal or SSH session closed), unless this process was started to ignore SIGHUP (``nohup``)."""
    ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    return (signal.SIGINT, signal.SIGTERM) if ignored else (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def interrupt_on_stop_signals() -> None:
    """SIGTERM and SIGHUP (``stop_signals``) raise ``Interrupted``, as SIGINT raises KeyboardInterrupt."""
    for signum in stop_signals()[1:]:
        signal.signal(signum, raise_interrupted)


def exit_interrupted(interruption: BaseException) -> NoReturn:
    """End the command that ``interruption`` (Ctrl-C, or a signal ``raise_interrupted`` turned into one)
    stopped before anything started: one line, and the shell's status for the signal."""
    signum = interruption_signal(interruption)
    print(f"interrupted by {signal.Signals(signum).name}", file=sys.stderr)
    raise SystemExit(128 + signum) from None


_finished_first: list[int] = []  # the signals the latest fit's run finished before acting on
_STEPS_DONE = threading.Event()  # set once the fit under way has done its steps: Lightning ends it


def fit_steps_done() -> None:
    """The fit under way has done its steps (its last, or where it stopped): a stop signal while the Trainer
    ends it is ``finished_first_on``, as after the fit, not ``FitStoppedError``."""
    _STEPS_DONE.set()


def finished_first_on(signum: int, when: str) -> None:
    """Say that the run was finished before acting on ``signum``, which came ``when``, and keep it for
    ``signal_finished_first``."""
    print(f"{signal.Signals(signum).name} {when}: the run was finished first", file=sys.stderr)
    _finished_first.append(signum)


def stopped_by(signum: int) -> None:
    """The fit under way, which has no folder to checkpoint in, stopped on ``signum``: its result so far is
    returned, and the signal kept for ``signal_finished_first``, to be acted on after it."""
    _finished_first.append(signum)


def forget_finished_first() -> None:
    """At the start of a fit: a signal an earlier fit of this process finished first is not this one's."""
    _finished_first.clear()


def signal_finished_first() -> int | None:
    """The SIGINT, SIGTERM or SIGHUP that came during the latest fit's last step or while its outputs were written
    (``None``: none), which that run finished first. A caller about to start another fit (a benchmark's
    next image, an experiment's next sub-run, a sweep's next job) stops instead: the user asked to stop."""
    return _finished_first[-1] if _finished_first else None


def set_handlers(handler, signums: Iterable[int]) -> dict:
    """Install ``handler`` for each of ``signums``, and return the handlers it replaced (for ``reset_handlers``).
    Only the main thread can handle signals: elsewhere it installs nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in signums}


def reset_handlers(replaced: dict) -> None:
    """Put back the handlers ``set_handlers`` replaced."""
    for signum, handler in replaced.items():
        signal.signal(signum, handler)


@contextmanager
def handled_by(handler, signums: Iterable[int]) -> Iterator[None]:
    """``handler`` handles ``signums`` in the block (``set_handlers``), and the handlers before it after."""
    replaced = set_handlers(handler, signums)
    try:
        yield
    finally:
        reset_handlers(replaced)


class CaughtSignals:
    """SIGINT, SIGTERM and SIGHUP (``stop_signals``) noted (``received``: the latest) instead of acted on while
    installed; a second SIGINT is acted on at once, by the handler it replaced. Off the main thread it
    installs nothing (``set_handlers``)."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}
        # ignored now, before a fit: stays ignored, as SIGINT in a job a script started in the background, nohup's
        # SIGHUP, a script's own SIG_IGN (a benchmark worker's until_the_fit_listens is the fit's to note)
        self._ignored = [signum for signum in stop_signals() if signal.getsignal(signum) == signal.SIG_IGN]

    def install(self) -> None:
        noted = [signum for signum in stop_signals() if signum not in self._ignored]
        # ignored again over Lightning's SIGTERM handler, which stops the fit (and calls SIG_IGN's number, 1, as a
        # signal's: SIGHUP's handler)
        self._previous = {**set_handlers(self._note, noted), **set_handlers(signal.SIG_IGN, self._ignored)}

    def _note(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.received = signum

    def restore(self) -> None:
        reset_handlers(self._previous)
        self._previous = {}


@contextmanager
def signals_stop_the_fit() -> Iterator[None]:
    """In the block (a Trainer's fit), SIGINT, SIGTERM and SIGHUP raise ``FitStoppedError``: Lightning would end
    the process on a KeyboardInterrupt. Within the fit's steps, ``RunCheckpoint`` notes them instead."""

    def stop(signum, frame) -> None:
        if _STEPS_DONE.is_set():  # the Trainer tears down a finished fit: it is kept, and the signal then acted on
            finished_first_on(signum, "after the last step")
            return
        raise FitStoppedError(signum)

    _STEPS_DONE.clear()

    # one ignored stays so, also a benchmark worker's, whose main process passes it on once the fit listens
    with handled_by(stop, [signum for signum in stop_signals()
                           if signal.getsignal(signum) not in (signal.SIG_IGN, until_the_fit_listens)]):
        yield


@contextmanager
def held_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP wait until the block ends, and are then left to ``signal_finished_first`` (a
    second SIGINT aborts at once): a finished fit's outputs are computed and written whole, so the run
    is not lost."""
    signals = CaughtSignals()
    signals.install()
    try:
        yield
    finally:
        signals.restore()
        if signals.received is not None:
            finished_first_on(signals.received, "after the last step")

"""SIGINT, SIGTERM and SIGHUP noted rather than acted on while a fit's state or outputs must be written whole,
and the signal a finished run was finished before acting on. Without Lightning: the benchmark's main
process imports this before it knows there is anything to fit."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from dip.errors import FitStoppedError, stop_signals

_finished_first: list[int] = []  # the signals the latest fit's run finished before acting on


def finished_first_on(signum: int, when: str) -> None:
    """Say that the run was finished before acting on ``signum``, which came ``when``, and keep it for
    ``signal_finished_first``."""
    print(f"{signal.Signals(signum).name} {when}: the run was finished first", file=sys.stderr)
    _finished_first.append(signum)


def forget_finished_first() -> None:
    """At the start of a fit: a signal an earlier fit of this process finished first is not this one's."""
    _finished_first.clear()


def signal_finished_first() -> int | None:
    """The SIGINT or SIGTERM that came during the latest fit's last step or while its outputs were written
    (``None``: none), which that run finished first. A caller about to start another fit (a benchmark's
    next image, an experiment's next sub-run, a sweep's next job) stops instead: the user asked to stop."""
    return _finished_first[-1] if _finished_first else None


class CaughtSignals:
    """SIGINT, SIGTERM and SIGHUP (``stop_signals``) noted (``received``: the latest) instead of acted on while
    installed; a second SIGINT is acted on at once, by the handler it replaced. Only the main thread can
    handle signals: elsewhere it installs nothing."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = {signum: signal.signal(signum, self._note) for signum in stop_signals()}

    def _note(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            previous = self._previous.get(signum)
            if callable(previous):
                previous(signum, frame)
            raise KeyboardInterrupt
        self.received = signum

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


@contextmanager
def signals_stop_the_fit() -> Iterator[None]:
    """In the block (a Trainer's fit), SIGINT, SIGTERM and SIGHUP raise ``FitStoppedError``: Lightning would end
    the process on a KeyboardInterrupt. Within the fit's steps, ``RunCheckpoint`` notes them instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame) -> None:
        raise FitStoppedError(signum)

    # one ignored stays so: a benchmark worker's, whose main process passes it on once the fit listens
    previous = {signum: signal.signal(signum, stop) for signum in stop_signals()
                if signal.getsignal(signum) != signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def held_signals() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, and are then left to ``signal_finished_first`` (a
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

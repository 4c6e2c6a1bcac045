"""The argument parser of the experiment scripts (``bench.py``, ``compare.py``, ``collapse_report.py``,
``early_stop_report.py``): a bad command line is one ``error: ...`` line and exit status 2, with no
usage block before it (``-h`` still prints the usage)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from dip.errors import fail


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``error: <what is wrong> (see <prog> -h)``."""

    def error(self, message: str) -> NoReturn:
        fail(f"{' '.join(message.split())} (see {self.prog} -h)")


def positive_number(text: str) -> float:
    """An option's value that must be a finite number above 0 (a threshold in dB, say)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def whole_number(least: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number >= ``least``, else argparse's one-line error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {least}, got {text!r}")
        return value
    return parse

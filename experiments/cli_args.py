"""The argument parser of the experiment scripts (``compare.py``, ``collapse_report.py``,
``early_stop_report.py``): a bad command line is one ``error: ...`` line and exit status 2, with no
usage block before it (``-h`` still prints the usage)."""

from __future__ import annotations

import argparse
import math
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line: ``error: <what is wrong> (<prog> -h)``."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        print(f"error: {text} (see {self.prog} -h)", file=sys.stderr)
        raise SystemExit(2)


def positive_number(text: str) -> float:
    """An option's value that must be a finite number above 0 (a threshold in dB, say)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value

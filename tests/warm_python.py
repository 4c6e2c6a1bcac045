"""A Python process that imports the heavy libraries once, then runs each script it is sent in a forked
child, as ``python SCRIPT ARGS`` would: its own process, working directory, environment, exit status and
output files.

Importing torch, torchmetrics and Lightning takes a fresh interpreter 6 to 9 s on a 2-core machine, longer
than most of the command-line tests' fits; a fork of this process starts in milliseconds (and imports the
rest of Lightning in a third of a second). It stays single-threaded and never runs a torch operation, so
the children fork from a state that is safe to fork. Each child is seeded afresh (``random``, numpy); the
string hash seed, fixed as an interpreter starts, is the warm Python's for every child.

Protocol (one JSON object per line): a request ``{"script", "args", "cwd", "env", "stdout", "stderr",
"timeout"}`` on standard input; the reply ``{"returncode", "timed_out"}`` on standard output.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import random
import runpy
import signal
import sys
import tempfile
import threading
import time

import numpy

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def run_script(request: dict) -> tuple[int, bool]:
    """In the child: what ``python SCRIPT ARGS`` does after start-up; the exit status, and whether an
    uncaught Ctrl-C ended it (the interpreter then dies of SIGINT)."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # chosen again from TMPDIR and the others, as a fresh interpreter would
    random.seed()  # seeded from the system, as each fresh interpreter is, not as every child of this one
    numpy.random.seed()
    for stream, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream)
    script = request["script"]
    sys.argv = [script, *request["args"]]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    status, interrupted, script_globals = 0, False, None
    try:
        script_globals = runpy.run_path(script, run_name="__main__")  # kept, as the interpreter keeps __main__'s
    except SystemExit as exited:
        status = exit_status_of(exited.code)
    except BaseException as error:  # noqa: BLE001 - the interpreter reports any uncaught exception
        sys.excepthook(type(error), error, error.__traceback__)  # a library's own hook (wandb's) included
        status, interrupted = 1, isinstance(error, KeyboardInterrupt)
    threading._shutdown()  # noqa: SLF001 - the interpreter's own exit: non-daemon threads, then atexit
    atexit._run_exitfuncs()  # noqa: SLF001
    del script_globals
    return status, interrupted


def exit_status_of(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF  # sys.exit(-1) is 255, as the system keeps the low byte
    print(code, file=sys.stderr)
    return 1


def child(request: dict) -> None:
    """Never returns: a child that did would serve requests beside its parent."""
    status = 1
    try:
        if sys.platform == "linux":  # no orphan if the warm Python is killed
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        status, interrupted = run_script(request)
        sys.stdout.flush()
        sys.stderr.flush()
        if interrupted:  # as the interpreter does
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        os._exit(status)


def wait(pid: int, timeout: float) -> tuple[int, bool]:
    """The child's return code as subprocess gives it (-N when killed by signal N); whether it ran out of time."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), True
        time.sleep(0.02)


def serve() -> None:
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(os.dup(1), "w")
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 0)
    os.dup2(quiet, 1)
    # Lightning's own weight: not Lightning, whose import sets up its logging by whether the root logger has a
    # handler yet (Hydra's job, the script's); not wandb, which makes a temporary folder as it is imported that
    # the first child's exit would remove
    import hydra  # noqa: F401
    import torch._dynamo  # noqa: F401
    import torchmetrics  # noqa: F401

    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            child(request)
        returncode, timed_out = wait(pid, request["timeout"])
        replies.write(json.dumps({"returncode": returncode, "timed_out": timed_out}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve()

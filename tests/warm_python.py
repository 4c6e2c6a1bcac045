"""A Python process that imports the heavy libraries once, then runs each script it is sent in a forked
child, as ``python SCRIPT ARGS`` would: its own process, working directory, environment, exit status and
output files.

Importing torch, torchmetrics and Lightning takes a fresh interpreter 6 to 9 s on a 2-core machine, longer
than most of the command-line tests' fits; a fork of this process starts in milliseconds (and imports the
rest of Lightning in a third of a second). It stays single-
threaded and never runs a torch operation, so the children fork from a state that is safe to fork.

Protocol (one JSON object per line): a request ``{"script", "args", "cwd", "env", "stdout", "stderr",
"timeout"}`` on standard input; the reply ``{"returncode", "timed_out"}`` on standard output.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import signal
import sys
import threading
import time
import traceback


def run_script(request: dict) -> int:
    """In the child: what ``python SCRIPT ARGS`` does after start-up; the exit status."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for stream, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), stream)
    script = request["script"]
    sys.argv = [script, *request["args"]]
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    try:
        runpy.run_path(script, run_name="__main__")
        status = 0
    except SystemExit as exited:
        status = exit_status_of(exited.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        status = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - the interpreter prints any uncaught exception
        traceback.print_exc()
        status = 1
    threading._shutdown()  # noqa: SLF001 - the interpreter's own exit: non-daemon threads, then atexit
    atexit._run_exitfuncs()  # noqa: SLF001
    return status


def exit_status_of(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def child(request: dict) -> None:
    """Never returns: a child that did would serve requests beside its parent."""
    status = 1
    try:
        status = run_script(request)
        sys.stdout.flush()
        sys.stderr.flush()
        if status < 0:  # killed by an uncaught Ctrl-C, as the interpreter does
            signal.signal(-status, signal.SIG_DFL)
            os.kill(os.getpid(), -status)
    finally:
        os._exit(status & 0xFF)


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

"""Shared fixtures: tiny images made on the fly, and a way to run ``run.py`` as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dip.wandb_files import offline_run_records

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one worker per core: a second torch thread each would only thrash
    os.environ["OMP_NUM_THREADS"] = "1"  # for the scripts the tests run too
    import torch

    torch.set_num_threads(1)


def make_png(path: Path, width: int, height: int, mode: str = "RGB", seed: int = 0) -> Path:
    """A smooth image with some edges (so that restoration has structure to find)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = 0.5 + 0.3 * np.sin(xs / 5.0) * np.cos(ys / 7.0) + 0.2 * (xs > width // 2)
    channels = 1 if mode == "L" else 3
    array = np.stack([np.roll(base, 3 * c, axis=1) for c in range(channels)], axis=-1)
    array = np.clip(array + 0.02 * rng.standard_normal(array.shape), 0, 1)
    pixels = (array * 255).astype(np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).convert(mode).save(path)
    return path


@pytest.fixture
def rgb_png(tmp_path) -> Path:
    return make_png(tmp_path / "rgb.png", 48, 40)


@pytest.fixture
def grey_png(tmp_path) -> Path:
    return make_png(tmp_path / "grey.png", 61, 47, mode="L")


def cli_environment(env: dict | None = None) -> dict:
    environment = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    environment.pop("HYDRA_FULL_ERROR", None)  # the user-facing errors are what is tested
    return environment


def assert_one_line_error(done: subprocess.CompletedProcess, *needles: str) -> None:
    """A command refused as the project promises: a non-zero exit, no traceback, one ``error:`` line, holding
    each of ``needles``."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    for needle in needles:
        assert needle in lines[0]


def run_cli(*args: str, script: str = "run.py", env: dict | None = None, timeout: int = 600,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """Run a script of the project as a user would, from the repository root: in a child forked from a
    Python that has imported the heavy libraries (``tests/warm_python.py``), or, where the test needs a
    fresh interpreter (``fresh``: what a script imports is tested) or the environment changes how one
    starts, in a new one."""
    environment = cli_environment(env)
    command = [sys.executable, str(ROOT / script), *args]
    if fresh or WarmPython.starts_differently(environment):
        return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)
    return WarmPython.shared().run(command, environment, timeout)


class WarmPython:
    """The client of one ``tests/warm_python.py`` process, started on first use and kept for the test process."""

    _shared: WarmPython | None = None
    # read as the interpreter or the libraries it has imported start (torch's TORCH_LOGS, TORCHINDUCTOR_*, ...;
    # matplotlib's; the locale), so the forked child could not honour a change
    STARTUP_PREFIXES = ("PYTHON", "OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "LD_", "TORCH", "MPL", "XDG_",
                        "HOME", "LANG", "LC_")

    def __init__(self):
        self.environment = cli_environment()
        self.process = subprocess.Popen([sys.executable, str(ROOT / "tests" / "warm_python.py")], cwd=ROOT,
                                        env=self.environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    @classmethod
    def shared(cls) -> WarmPython:
        if cls._shared is None or cls._shared.process.poll() is not None:
            cls._shared = cls()
        return cls._shared

    def stop(self) -> None:
        """Kill it (its running child dies with it) and start afresh at the next use."""
        self.process.kill()
        self.process.wait()
        WarmPython._shared = None

    @classmethod
    def starts_differently(cls, environment: dict) -> bool:
        """Whether ``environment`` differs in what is read at start-up from the warm Python's (started now if
        there is none: with the test process's environment of now)."""
        started = cls._shared.environment if cls._shared is not None else cli_environment()
        return any(started.get(key) != environment.get(key) for key in {*started, *environment}
                   if key.startswith(cls.STARTUP_PREFIXES))

    def run(self, command: list[str], environment: dict, timeout: float) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            outputs = {name: os.path.join(folder, name) for name in ("stdout", "stderr")}
            request = {"script": command[1], "args": command[2:], "cwd": str(ROOT), "env": environment,
                       "timeout": timeout, **outputs}
            try:
                self.process.stdin.write(json.dumps(request) + "\n")
                self.process.stdin.flush()
                if not select.select([self.process.stdout], [], [], timeout + 60)[0]:  # it enforces the timeout
                    raise RuntimeError(f"the warm Python did not answer in {timeout + 60} s")
                reply = json.loads(self.process.stdout.readline())
            except BaseException:  # an interrupted or failed exchange leaves the protocol out of step
                self.stop()
                raise
            stdout, stderr = (Path(outputs[name]).read_text() for name in ("stdout", "stderr"))
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired(command, timeout, stdout, stderr)
        return subprocess.CompletedProcess(command, reply["returncode"], stdout, stderr)


LIGHTNING_PROBE = """import runpy, sys
sys.argv[0] = {script!r}
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("lightning imported:", "pytorch_lightning" in sys.modules)
"""


def run_cli_probing_lightning(folder: Path, *args: str, script: str = "run.py", env: dict | None = None):
    """``run_cli`` through a probe (written into ``folder``) that prints at exit whether the script
    imported Lightning: ``lightning imported: True`` or ``False``."""
    probe = folder / "probe.py"
    probe.write_text(LIGHTNING_PROBE.format(script=str(ROOT / script)))
    return run_cli(*args, script=str(probe), env=env, fresh=True)


SIGNAL_DRIVER = """import os, runpy, signal, sys
sys.path.insert(0, {root!r})
import {module}

called = {module}.{function}

def signal_first(*args, **kwargs):
    os.kill(os.getpid(), signal.{signal})
    return called(*args, **kwargs)

{module}.{function} = signal_first
sys.argv[0] = {script!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_cli_signalled(folder: Path, where: str, signum: str, *args: str) -> subprocess.CompletedProcess:
    """``run_cli`` of run.py through a driver (written into ``folder``) that sends itself ``signum``
    (``"SIGINT"``, ``"SIGTERM"``) as each call of the function ``where`` (``"dip.pipeline.prepare"``) starts."""
    module, function = where.rsplit(".", 1)
    driver = folder / "signalled.py"
    driver.write_text(SIGNAL_DRIVER.format(root=str(ROOT), module=module, function=function, signal=signum,
                                           script=str(ROOT / "run.py")))
    return run_cli(*args, script=str(driver))


def fit_scripted(module, callback, steps: int):
    """Fit a scripted LightningModule for ``steps`` steps with one callback, as the pipeline iterates
    (a dataset of ``steps`` items, no checkpoints or logs); the Trainer."""
    import pytorch_lightning as pl

    from dip.checkpoint import StepLoader
    from dip.pipeline import StepDataset

    trainer = pl.Trainer(max_steps=steps, max_epochs=-1, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, StepLoader(StepDataset(steps)))
    return trainer


def exit_status(main, argv: list[str]) -> int:
    """The status a script's ``main(argv)`` ends with, returned or raised (``fail``)."""
    try:
        return main(argv)
    except SystemExit as exited:
        return exited.code


# What an offline W&B run recorded beside its history, which the dashboard reads (dip.wandb_files)
def offline_run_file(run_dir: Path) -> Path:
    """The run file of the single offline W&B run under ``run_dir/wandb``."""
    (run_file,) = Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")
    return run_file


def offline_summary(run_file: Path) -> dict:
    """The run's final summary (the last value written for each key)."""
    values: dict = {}
    for record in offline_run_records(run_file):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                values[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    return values


def offline_run_info(run_file: Path):
    """The run's ``RunRecord``: group, job type, tags, config."""
    for record in offline_run_records(run_file):
        if record.WhichOneof("record_type") == "run":
            return record.run
    raise ValueError(f"no run record in {run_file}")


@contextlib.contextmanager
def held_elsewhere(folder: Path) -> Iterator[None]:
    """``folder`` held by another process (``hold_folder``) for the block, as a run writing into it holds it."""
    holder = subprocess.Popen([sys.executable, "-c", f"from pathlib import Path; from dip.files import hold_folder; "
                               f"hold_folder(Path({str(folder)!r})); print('held', flush=True); input()"],
                              cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        yield
    finally:
        holder.communicate("\n", timeout=30)

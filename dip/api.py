"""The Python API: restore one image (a file or a tensor) in a few lines.

>>> from dip import restore
>>> result = restore("photo.png", task="denoising", overrides=["trainer.max_steps=500"])
>>> result.metrics["psnr"], result.restored.shape
>>> restore("photo.png", task="denoising", physics=MyBlur(sigma=2))  # a degradation built in Python
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf, open_dict

# Importing Lightning draws from Python's generator (rich's style ids): the API leaves a session's random state
# as it was, from its import on
_random_state = random.getstate()
from dip.config_checks import check_resolvable, checked_config  # noqa: E402
from dip.errors import DipError, RunInterruptedError  # noqa: E402
from dip.files import folder_held, unwritable  # noqa: E402
from dip.module import class_path  # noqa: E402
from dip.outputs import CHECKPOINT_NAME, METRICS_FILE, Result  # noqa: E402
from dip.physics import Degradation  # noqa: E402
from dip.pipeline import run  # noqa: E402
from dip.problem import problem_from_config  # noqa: E402
from dip.run_settings import tensor_name  # noqa: E402
from dip.signals import signal_finished_first  # noqa: E402

random.setstate(_random_state)


def restore(
    image: str | Path | torch.Tensor | None = None,
    *,
    task: str = "denoising",
    arch: str | None = None,
    observation: str | Path | torch.Tensor | None = None,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
    physics: Degradation | None = None,
    generator: torch.nn.Module | None = None,
) -> Result:
    """Restore ``image`` (the clean image, degraded synthetically by ``task``) or a real
    ``observation`` (then ``image``, if given, is its ground truth).

    ``overrides`` are Hydra overrides as on the command line (``"optim.lr=0.001"``). Outputs go to
    ``output_dir`` when given (and the W&B logger with them); without it nothing is written and no
    logger runs unless ``overrides`` names one.

    Objects built in Python stand in for the config's (which the config then records by class):
    ``physics``, a ``dip.physics.Degradation``, replaces the task's (``task`` still gives the steps,
    learning rate and input; its ``repr`` is recorded too, and its class names the task); ``generator``,
    a network mapping the code ``z`` (``input.channels`` channels) to the image, replaces ``arch`` (a copy
    is fitted, from the weights it has; ``seed`` still draws ``z`` and the perturbations).
    """
    _check_overrides(overrides)
    if generator is not None and not isinstance(generator, torch.nn.Module):
        raise DipError(f"generator must be a torch.nn.Module, not of type {type(generator).__name__}")
    if output_dir is not None:
        if not isinstance(output_dir, (str, os.PathLike)):
            raise DipError(f"output_dir must be a folder's path (str or pathlib.Path), not of type "
                           f"{type(output_dir).__name__}")
        output_dir = Path(output_dir).expanduser()  # as an input file's path is: not a folder named ~ here
        _check_output_dir(output_dir)
    options = [f"task={task}"] + ([f"arch={arch}"] if arch else [])
    if output_dir is None and not any(o.startswith("logger=") for o in overrides):
        options.append("logger=none")
    cfg = checked_config([*options, *overrides], output_dir=output_dir or Path.cwd())
    check_resolvable(cfg)  # this process is the job: its environment is the run's
    trainable = generator is not None and any(weight.requires_grad for weight in generator.parameters())
    if generator is not None and not trainable and not cfg.input.get("optimize"):
        frozen = " that require a gradient (requires_grad)" if next(generator.parameters(), None) is not None else ""
        raise DipError(f"generator {type(generator).__name__} has no parameters{frozen}: there is nothing to fit")
    if OmegaConf.select(cfg, "experiment.runner"):
        raise DipError("restore() makes one restoration, and +experiment=NAME a figure of several: run it with "
                       "python run.py +experiment=NAME, or dip.experiments.run_experiment(cfg, output_dir)")
    problem = problem_from_config(cfg, clean=image, observation=observation, physics=physics)
    with open_dict(cfg):
        for key, given in (("path", image), ("observation", observation)):
            if given is not None:  # in the run's settings: another image in output_dir is another run
                cfg.data[key] = _named_input(given)
        if physics is not None:
            cfg.task.physics = {"_target_": class_path(physics), "given": repr(physics)}
            cfg.task.name = type(physics).__name__  # not sr_x4's name for a x2 operator
        if generator is not None:
            parameters = sum(parameter.numel() for parameter in generator.parameters())
            cfg.arch = {"_target_": class_path(generator), "given": f"{parameters} parameters"}
            cfg.arch_name = type(generator).__name__
    folder = Path(output_dir) if output_dir is not None else None
    try:  # a run another process is writing into the folder is not mixed with this one
        with folder_held(folder) if folder is not None else nullcontext(), _session_random_state_kept():
            result = run(cfg, folder, problem, generator=generator)
    except RunInterruptedError as interruption:  # its own advice is the command line's
        raise interruption.advised(f"call restore() again with output_dir={output_dir}") from None
    # Ctrl-C returns the result so far; a scheduler's stop or a closed terminal, which the fit finished first, is
    # then acted on as the handler before the fit would have (by default, the process ends)
    if (signum := signal_finished_first()) in (signal.SIGTERM, signal.SIGHUP):
        signal.raise_signal(signum)
    return result


@contextmanager
def _session_random_state_kept() -> Iterator[None]:
    """The session's random state as the call found it: a fit seeds torch, ``random`` and numpy for its own
    draws (Lightning's ``seed_everything``, which also notes the seed in the environment)."""
    python, numpy = random.getstate(), np.random.get_state()
    noted = {key: os.environ.get(key) for key in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")}
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        for key, value in noted.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _named_input(given) -> str:
    """An image given to ``restore`` as the run's settings name it: its file as given, or a tensor by the sha256
    of its shape and values (``tensor_name``; a file's contents are compared by ``dip.run_settings``)."""
    return tensor_name(given) if isinstance(given, torch.Tensor) else str(given)


def _check_overrides(overrides) -> None:
    """Refuse ``overrides`` that are not a list of strings: one string would be read as its characters."""
    wanted = "overrides must be a list of strings like ['optim.lr=0.01']"
    if isinstance(overrides, str) or not isinstance(overrides, Sequence):
        raise DipError(f"{wanted}, not of type {type(overrides).__name__}")
    if others := [option for option in overrides if not isinstance(option, str)]:
        raise DipError(f"{wanted}, not a list holding one of type {type(others[0]).__name__}")


def _check_output_dir(output_dir: Path) -> None:
    """Refuse, before anything is made, an ``output_dir`` that no run could write into, or one that holds
    a finished run (unless a checkpoint kept there is to continue it): a call run again would replace it."""
    if problem := unwritable(output_dir):
        raise DipError(f"output_dir {output_dir}: {problem}")
    if (output_dir / METRICS_FILE).is_file() and not (output_dir / CHECKPOINT_NAME).is_file():
        raise DipError(f"output_dir {output_dir} holds a finished run (its metrics.json), which restore() does not "
                       f"replace: choose another output_dir, or delete that metrics.json to run again")

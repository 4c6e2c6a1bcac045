"""Config composition: where the configs live, the ``profile`` resolver, and the compose API."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from dip.errors import DipError, check_choice
from dip.gpus import visible_gpus, worker_count
from dip.images import BUILTIN_PREFIX

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PROFILES = ("auto", "full", "quick")


def use_full_settings(profile: str) -> bool:
    check_choice("profile", profile, PROFILES)
    return profile == "full" or (profile == "auto" and torch.cuda.is_available())


def _profile(full, quick, *, _root_):
    return full if use_full_settings(_root_.get("profile", "auto")) else quick


# how the settings name an image given to dip.api.restore as a tensor: by the sha256 of its values
TENSOR_PREFIX = "tensor:sha256:"


def image_name(path: str | None, observation: str | None, default_image: str) -> str:
    """A short name for the image a run restores (a W&B tag, a dashboard row): the file's stem, or a
    tensor's ``tensor-`` and the start of its digest."""
    source = str(observation or path or default_image)
    if source.startswith(TENSOR_PREFIX):
        return f"tensor-{source.removeprefix(TENSOR_PREFIX)[:8]}"
    return Path(source.removeprefix(BUILTIN_PREFIX)).stem


# settings that name a file or folder, relative to where the command ran
LOCATION_SETTINGS = ("data.root", "data.path", "data.observation", "data.mask", "input.path", "task.physics.weights",
                     "resume")


def absolute_locations(cfg: DictConfig, start: str | Path) -> None:
    """Make the files and folders that ``cfg`` names relative to ``start`` (the folder the command ran in)
    absolute, for a job that runs in a folder of its own (``hydra.job.chdir=true``); an interpolation
    built on one that comes before it (``input.path: ${data.root}/...``) follows it."""
    for key in LOCATION_SETTINGS:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        if (isinstance(value, str) and value not in ("", "random") and not value.startswith(BUILTIN_PREFIX)
                and not Path(value).expanduser().is_absolute()):
            OmegaConf.update(cfg, key, str(Path(start, value)))


def sweep_name(single_run_name: str) -> str:
    """The name of the multirun this job belongs to (its sweep folder's name), else ``single_run_name``."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return single_run_name


def _gpu_workers(jobs_per_gpu: int, cpu_jobs: int = 1) -> int:
    return worker_count(visible_gpus(), int(jobs_per_gpu), int(cpu_jobs))


def dotted(values: dict, prefix: str = "") -> dict:
    """Nested dicts as one level of dotted keys (``{"optim": {"lr": 0.01}}`` -> ``{"optim.lr": 0.01}``);
    lists stay values."""
    flat: dict = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def register_resolvers() -> None:
    """Registered on import too: launchers run jobs in fresh processes that import this module."""
    OmegaConf.register_new_resolver("profile", _profile, replace=True)
    OmegaConf.register_new_resolver("image_name", image_name, replace=True)
    OmegaConf.register_new_resolver("sweep_name", sweep_name, replace=True)
    OmegaConf.register_new_resolver("gpu_workers", _gpu_workers, replace=True)


# A user's own config folders (run.py --config-dir DIR, hydra.searchpath=[file://DIR], or this variable set
# by the user), searched after conf/: in the environment, so that a launcher's worker processes compose with
# them too.
CONFIG_DIRS_VARIABLE = "DIP_CONFIG_DIRS"


def named_config_dirs(arguments: Sequence[str]) -> list[Path]:
    """The config folders that command-line ``arguments`` (or a Python call's overrides) add to Hydra's
    search path; ``DipError`` for one that is not a folder (Hydra would only warn, or say a group lacks
    the option the user's folder was to give)."""
    folders, following = [], None
    for argument in arguments:
        if following:
            folders.append(argument)
        option, equals, value = argument.partition("=")
        following = option in ("--config-dir", "-cd") and not equals
        if option in ("--config-dir", "-cd") and equals:
            folders.append(value)
        elif option == "hydra.searchpath":
            folders += [entry.strip()[len("file://"):] for entry in value.strip("[]").split(",")
                        if entry.strip().startswith("file://")]
    for folder in folders:
        if not Path(folder).expanduser().is_dir():
            raise DipError(f"config folder {folder} not found (--config-dir, hydra.searchpath)")
    return [Path(folder).expanduser().absolute() for folder in folders]


def use_config_dirs(arguments: Sequence[str]) -> list[str]:
    """Note the config folders that the command line ``arguments`` add to Hydra's search path; with none
    named there, those of ``DIP_CONFIG_DIRS`` become the override to add to them, which is returned."""
    if folders := named_config_dirs(arguments):
        os.environ[CONFIG_DIRS_VARIABLE] = os.pathsep.join(map(str, folders))
        return []
    extra = config_dirs()[1:]
    if missing := [folder for folder in extra if not folder.is_dir()]:
        raise DipError(f"config folder {missing[0]} not found ({CONFIG_DIRS_VARIABLE})")
    return [searchpath_override(extra)] if extra else []


def searchpath_override(folders: Sequence[Path]) -> str:
    """The Hydra override that adds ``folders`` to the config search path."""
    return f"hydra.searchpath=[{','.join(f'file://{folder}' for folder in folders)}]"


def config_dirs(overrides: Sequence[str] = ()) -> list[Path]:
    """``conf/`` and then the user's config folders: those ``overrides`` name, else ``DIP_CONFIG_DIRS``'s."""
    if named := named_config_dirs(overrides):
        return [CONF_DIR, *named]
    extra = os.environ.get(CONFIG_DIRS_VARIABLE)
    return [CONF_DIR, *(Path(folder) for folder in extra.split(os.pathsep) if folder)] if extra else [CONF_DIR]


def config_groups(overrides: Sequence[str] = ()) -> dict[str, list[str]]:
    """Each config group and its options, read from ``conf/`` and the user's config folders."""
    groups: dict[str, set[str]] = {}
    for folder in config_dirs(overrides):
        for group in folder.iterdir() if folder.is_dir() else ():
            if group.is_dir():
                groups.setdefault(group.name, set()).update(path.stem for path in group.glob("*.yaml"))
    return {name: sorted(options) for name, options in sorted(groups.items())}


def compose_config(overrides: Sequence[str] = (), output_dir: str | Path | None = None,
                   config_name: str = "config") -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` as ``run.py`` (or, with ``benchmark``,
    ``experiments/benchmark.py``) would, outside a Hydra app.

    The result carries the ``hydra`` node (so that ``${hydra:...}`` interpolations resolve);
    ``output_dir`` fills ``paths.output_dir``, which a Hydra run takes from its run directory.
    """
    register_resolvers()
    if (extra := config_dirs()[1:]) and not any(option.startswith("hydra.searchpath=") for option in overrides):
        overrides = [*overrides, searchpath_override(extra)]
    if GlobalHydra.instance().is_initialized():  # inside run.py (an experiment's sub-runs): keep its state
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir) if output_dir is not None else None
    return cfg

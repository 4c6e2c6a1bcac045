"""Config composition: where the configs live, the ``profile`` resolver, and the compose API."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
PROFILES = ("auto", "full", "quick")


def use_full_settings(profile: str) -> bool:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}' (choose from: {', '.join(PROFILES)})")
    return profile == "full" or (profile == "auto" and torch.cuda.is_available())


def _profile(full, quick, *, _root_):
    return full if use_full_settings(_root_.get("profile", "auto")) else quick


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("profile", _profile, replace=True)


def config_groups() -> dict[str, list[str]]:
    """Each config group and its options, read from ``conf/``."""
    return {
        group.name: sorted(path.stem for path in group.glob("*.yaml"))
        for group in sorted(CONF_DIR.iterdir())
        if group.is_dir()
    }


def compose_config(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides`` as ``run.py`` would, outside a Hydra app.

    The result carries the ``hydra`` node (so that ``${hydra:...}`` interpolations resolve);
    ``output_dir`` fills ``paths.output_dir``, which a Hydra run takes from its run directory.
    """
    register_resolvers()
    if GlobalHydra.instance().is_initialized():  # inside run.py (an experiment's sub-runs): keep its state
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir) if output_dir is not None else None
    return cfg

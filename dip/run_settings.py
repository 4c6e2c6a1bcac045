"""When two runs are one: the settings that decide a run's result, compared before a checkpoint is resumed
or a finished run is reported instead of run again. Logging, paths and the device may differ."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import torch
from omegaconf import Container, DictConfig, OmegaConf

from dip.config import TENSOR_PREFIX, dotted
from dip.datasets import sha256_of
from dip.errors import DipError

# Top-level settings added after checkpoints and finished restorations were kept, with the value that a
# config without them meant: at that value they drop out of every comparison, so those still match.
IMPLIED_SETTINGS = {"backtrack_against": "last", "diverged_gradient": "keep", "metrics_every": 50}


def without_implied_settings(settings: dict) -> dict:
    """``settings`` (top-level keys as in a config, or flattened) less each of ``IMPLIED_SETTINGS`` at the
    value its absence meant, and less ``metrics_every`` when ``backtrack_db`` is null: nothing reads it then."""
    unread = {"metrics_every"} if settings.get("backtrack_db") is None else set()
    return {key: value for key, value in settings.items()
            if key not in unread and (key not in IMPLIED_SETTINGS or value != IMPLIED_SETTINGS[key])}


# Settings that change the result; the others (steps, logging, paths, device) may differ on resume.
RESULT_SETTINGS = ("seed", "observation_seed", "task", "arch", "input", "optim", "data", "regularizer", "ema_weight",
                   "backtrack_db", "backtrack_against", "diverged_gradient", "max_rollbacks", "early_stop",
                   "trainer.precision", "restarts",
                   # the Trainer's own hands on the update (absent: null, as in a run from before they counted)
                   "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm", "trainer.accumulate_grad_batches",
                   # how often a collapse is judged and max_rollbacks checked (nothing else when backtrack_db=null)
                   "metrics_every",
                   # not the result, but which weights and buffers the checkpoint holds
                   "speed.conv_bias_before_norm", "speed.batchnorm_running_stats",
                   # nor the result, but the optimizer's state: per weight, or of the one weight tensor
                   "speed.one_weight_tensor")
IGNORED_SETTINGS = ("data.root",)
# Settings that name a file: its contents decide the result too, so a file replaced at the same path makes
# another run. Its digest is a setting of its own, ``sha256(data.path)``.
INPUT_FILES = ("data.path", "data.observation", "data.mask", "input.path", "task.physics.weights")
DIGEST_SETTINGS = {f"sha256({name})": name for name in INPUT_FILES}


# An experiment's sub-run is more than its config: the image the experiment made for it to fit (fig. 2's noisy
# image, of experiment.sigma) and what its recorders record; its checkpoint keeps them (dip.experiments.common).
SUB_RUN_PREFIX = "sub_run."


def tensor_name(tensor: torch.Tensor) -> str:
    """A tensor as a setting: ``tensor:sha256:<digest of its shape and values>`` (a batch of one as its image:
    another picture may hold the same values in another shape)."""
    shape = tuple(tensor.shape[1:] if tensor.dim() == 4 and tensor.shape[0] == 1 else tensor.shape)
    values = tensor.detach().float().cpu().contiguous().numpy().tobytes()
    return f"{TENSOR_PREFIX}{hashlib.sha256(repr(shape).encode() + values).hexdigest()}"


def made_images_settings(observation: torch.Tensor | None, clean: torch.Tensor | None) -> dict[str, str | None]:
    """What a fit's checkpoint must have been made with beyond its config when its images are not one file's
    each: those images by their values (``tensor_name``; ``SUB_RUN_PREFIX``). An experiment makes them (fig.
    2's noise depends on experiment.sigma); a packed fit stacks several images, its config naming the first."""
    return {f"{SUB_RUN_PREFIX}{name}": None if image is None else tensor_name(image)
            for name, image in (("observation", observation), ("clean", clean))}


def digest_settings(digests: dict[str, str]) -> dict[str, str]:
    """``digests`` by the setting naming each file (``{"data.path": ...}``, as ``metrics.json`` keeps them)
    as settings of their own (``{"sha256(data.path)": ...}``)."""
    return {key: digests[name] for key, name in DIGEST_SETTINGS.items() if name in digests}


def file_digests(settings: dict) -> dict[str, str]:
    """The file digests among ``settings``, by the setting naming each file: ``digest_settings`` undone."""
    return {DIGEST_SETTINGS[key]: digest for key, digest in settings.items() if key in DIGEST_SETTINGS}


def input_digests(cfg: DictConfig) -> dict[str, str]:
    """The sha256 of each file that one of ``INPUT_FILES`` names, by setting (``{"data.path": ...}``)."""
    named = {name: OmegaConf.select(cfg, name, default=None) for name in INPUT_FILES}
    return {name: sha256_of(Path(value).expanduser()) for name, value in named.items()
            if isinstance(value, str) and Path(value).expanduser().is_file()}


def result_settings(cfg: DictConfig, digests: bool = True) -> dict:
    """The resolved settings that decide the result, flattened to ``{"optim.lr": 0.01, ...}``, and with
    ``digests``, those of its input files (``input_digests``; a finished run's config names its files, but
    what they held then is in its metrics). A benchmark's image is named as its dataset's (``Set5/bird.png``,
    under ``data.root``), so that its checkpoint, carried to a machine whose datasets lie elsewhere, resumes
    there."""
    nodes = {key: OmegaConf.select(cfg, key) for key in RESULT_SETTINGS}
    selected = {key: OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else node
                for key, node in nodes.items()}
    settings = {key: value for key, value in dotted(selected).items() if key not in IGNORED_SETTINGS}
    # run.py's data.path is the user's, named as given
    if OmegaConf.select(cfg, "benchmark.dataset") and isinstance(settings.get("data.path"), str):
        with contextlib.suppress(ValueError):  # an image given outside the data root
            root = Path(cfg.data.root).expanduser().absolute()  # as the benchmark names its images
            settings["data.path"] = Path(settings["data.path"]).relative_to(root).as_posix()
    if digests:
        settings.update(digest_settings(input_digests(cfg)))
    return without_implied_settings(settings)


def setting_differences(saved: dict, settings: dict) -> str:
    """The settings (as ``result_settings`` gives them) that differ between ``saved`` and ``settings``,
    as ``"seed: 0 -> 1; ..."`` (at most four), or ``""``. A file's digest (and a sub-run's own settings,
    ``SUB_RUN_PREFIX``) counts where both have one, and then the file's name does not: the same photo moved,
    or named relative instead of absolute, is the same run. A checkpoint or run from before digests were
    kept has none, and a file gone is said missing when read."""
    def both_digested(key: str) -> bool:
        return f"sha256({key})" in saved and f"sha256({key})" in settings

    def difference(key: str) -> str:
        if key in DIGEST_SETTINGS:
            name, change = DIGEST_SETTINGS[key], f"sha256 {saved[key][:12]}... -> {settings[key][:12]}..."
            if saved.get(name) != settings.get(name):
                return f"{name}: {saved.get(name)!r} -> {settings.get(name)!r}, another file's contents ({change})"
            return f"{name}: its file's contents changed, {change}"
        # a setting left out at its implied value is shown at that value
        before, after = saved.get(key, IMPLIED_SETTINGS.get(key)), settings.get(key, IMPLIED_SETTINGS.get(key))
        return f"{key}: {_shown(before)} -> {_shown(after)}"

    # a file's digest and a sub-run's own settings count where both sides have them (older records lack them)
    differences = [difference(key) for key in sorted(set(saved) | set(settings)) if saved.get(key) != settings.get(key)
                   and ((key not in DIGEST_SETTINGS and not key.startswith(SUB_RUN_PREFIX))
                        or (key in saved and key in settings))
                   and not (key in INPUT_FILES and both_digested(key))]
    return "; ".join(differences[:4]) + ("; ..." if len(differences) > 4 else "")


def _shown(value) -> str:
    """A setting's value as a difference shows it: a tensor's name by the start of its digest."""
    if isinstance(value, str) and value.startswith(TENSOR_PREFIX):
        return repr(value[:len(TENSOR_PREFIX) + 12] + "...")
    return repr(value)


def finished_run_settings(cfg: DictConfig, digests: bool = True) -> dict:
    """What a finished run's outputs depend on: ``result_settings`` and the number of steps."""
    return {**result_settings(cfg, digests), "trainer.max_steps": cfg.trainer.max_steps}


def refuse_other_settings(folder: Path, saved: dict, settings: dict) -> None:
    """``DipError`` when the run finished in ``folder`` with the flat settings ``saved`` differs from
    one with ``settings``: its outputs are kept, not replaced by those of another run."""
    if differences := setting_differences(saved, settings):
        raise DipError(f"{folder} holds a finished run with other settings ({differences}): run into another "
                       f"folder, or delete its metrics.json to replace that run")

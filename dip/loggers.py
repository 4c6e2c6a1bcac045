"""Experiment loggers: Weights & Biases (offline unless credentials exist), CSV files that a resumed
fit continues, and image logging."""

from __future__ import annotations

import csv
import netrc
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers import WandbLogger

from dip.config import dotted
from dip.images import to_pil


def flat_config(cfg: DictConfig, skip: tuple[str, ...] = ("hydra", "paths")) -> dict:
    """The resolved config as one level of dotted keys (``{"optim.lr": 0.01, ...}``), so that an
    experiment tracker can filter and group runs by any setting; lists stay values."""
    kept = {key: cfg[key] for key in cfg if key not in skip}  # resolving `hydra` outside a job would fail
    return dotted({key: OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig)
                   else value for key, value in kept.items()})


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


TAG_LENGTH = 64  # W&B refuses a longer tag (an image's file name, say), and an empty one, when the run starts


def wandb_logger(
    save_dir: str,
    project: str = "dip",
    mode: str = "auto",
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    name: str | None = None,
    continue_run: str | None = None,
) -> WandbLogger:
    """A ``WandbLogger`` that never waits on the network unless asked to.

    ``mode=auto`` logs online only when credentials exist (``WANDB_API_KEY`` or a netrc entry) and
    otherwise writes an offline run under ``save_dir/wandb`` (upload it later with ``wandb sync``).
    An explicit ``WANDB_MODE`` in the environment wins. ``continue_run``, the id of the run that a
    resumed fit logged to before, is continued online; offline, where W&B cannot resume, a new run
    starts (the dashboard joins their files).
    """
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_credentials_present() else "offline")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    continued = {"id": continue_run} if continue_run and mode == "online" else {}  # Lightning adds resume="allow"
    logger = WandbLogger(
        save_dir=save_dir,
        project=project,
        mode=mode,
        group=group,
        job_type=job_type,
        tags=[str(tag)[:TAG_LENGTH] for tag in tags or [] if str(tag)],
        name=name,
        settings={"console": "off", "silent": True},
        **continued,
    )
    # Lightning passes wandb.init anonymous=None, which recent W&B releases answer with a warning each run
    logger._wandb_init.pop("anonymous", None)
    return logger


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger (``csv/metrics.csv``: a ``step`` column and one per metric), except that
    a fit resumed at step ``resumed_from_step`` keeps the rows logged before that step. Lightning's
    writer deletes an existing ``metrics.csv``, so a resumed fit's curve would start at the resume.
    The rows from that step on go: the resumed fit logs those steps again."""

    def __init__(self, *args, resumed_from_step: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.resumed_from_step = resumed_from_step

    @property
    def experiment(self):
        if self._experiment is not None or self.resumed_from_step is None:
            return super().experiment
        path = Path(self.log_dir) / "metrics.csv"
        earlier = []
        if path.is_file():
            with path.open(newline="") as handle:
                reader = csv.DictReader(handle)
                columns = list(reader.fieldnames or [])
                earlier = [row for row in reader if row.get("step") and int(row["step"]) < self.resumed_from_step]
        with warnings.catch_warnings():  # "Previous log files ... will be deleted": not these rows
            warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
            writer = super().experiment  # deletes the file
        if earlier:
            writer.metrics_keys = sorted(columns)  # later rows append under the same header
            with path.open("w", newline="") as handle:
                rows = csv.DictWriter(handle, fieldnames=writer.metrics_keys)
                rows.writeheader()
                rows.writerows(earlier)
        return writer


class ImageLogger(pl.Callback):
    """Every ``every_n_steps`` steps, sends the observation, the latest output and the EMA to W&B."""

    def __init__(self, every_n_steps: int = 500):
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        last = step == trainer.max_steps
        if not isinstance(trainer.logger, WandbLogger) or (step % self.every_n_steps and not last):
            return
        observed = pl_module.observation if pl_module.physics.observation_is_image else pl_module.ground_truth
        images = [observed[0], pl_module.latest_output[0], pl_module.ema[0]]
        trainer.logger.log_image(
            key="images", images=[to_pil(image) for image in images],
            caption=["observation", "restored", "restored_ema"], step=step,
        )


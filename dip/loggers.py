"""Experiment loggers: Weights & Biases (offline unless credentials exist) and image logging."""

from __future__ import annotations

import json
import netrc
import os
import struct
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from dip.images import to_pil

WANDB_BLOCK = 32 * 1024


def flat_config(cfg: DictConfig, skip: tuple[str, ...] = ("hydra", "paths")) -> dict:
    """The resolved config as one level of dotted keys (``{"optim.lr": 0.01, ...}``), so that an
    experiment tracker can filter and group runs by any setting; lists stay values."""
    flat: dict = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    container = OmegaConf.to_container(cfg, resolve=True)
    walk({key: value for key, value in container.items() if key not in skip}, "")
    return flat


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(
    save_dir: str,
    project: str = "dip",
    mode: str = "auto",
    group: str | None = None,
    job_type: str | None = None,
    tags: list[str] | None = None,
    name: str | None = None,
) -> WandbLogger:
    """A ``WandbLogger`` that never waits on the network unless asked to.

    ``mode=auto`` logs online only when credentials exist (``WANDB_API_KEY`` or a netrc entry) and
    otherwise writes an offline run under ``save_dir/wandb`` (upload it later with ``wandb sync``).
    An explicit ``WANDB_MODE`` in the environment wins.
    """
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_credentials_present() else "offline")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        mode=mode,
        group=group,
        job_type=job_type,
        tags=[str(tag) for tag in tags or []],
        name=name,
        settings={"console": "off", "silent": True},
    )


class ImageLogger(pl.Callback):
    """Every ``every_n_steps`` steps, sends the observation, the latest output and the EMA to W&B."""

    def __init__(self, every_n_steps: int = 500):
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        last = step == trainer.max_steps
        if not isinstance(trainer.logger, WandbLogger) or (step % self.every_n_steps and not last):
            return
        images = [pl_module.observation[0], pl_module.latest_output[0], pl_module.ema[0]]
        trainer.logger.log_image(
            key="images", images=[to_pil(image) for image in images],
            caption=["observation", "restored", "restored_ema"], step=step,
        )


def offline_run_records(run_file: Path):
    """The ``wandb_internal_pb2.Record`` messages of an offline run file (``run-*.wandb``).

    The file is a 7-byte header (``:W&B``, magic, version), then a LevelDB log: 32 KiB blocks of
    chunks, each ``crc32c (4) | length (2, little-endian) | type (1: full, 2: first, 3: middle,
    4: last) | data``; a block's tail shorter than a chunk header is padding.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{run_file} is not a W&B run file")
    offset, pending = 7, b""
    while offset + 7 <= len(data):
        room = WANDB_BLOCK - offset % WANDB_BLOCK
        if room < 7:
            offset += room
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:  # zero padding
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def offline_history(run_file: Path) -> list[dict]:
    """The rows an offline run logged with ``log`` / ``log_metrics``, values decoded from JSON."""
    rows = []
    for record in offline_run_records(run_file):
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in record.history.item})
    return rows

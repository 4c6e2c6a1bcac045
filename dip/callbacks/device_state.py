"""A callback whose state is a few tensors on the module's device, carried in checkpoints."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


class DeviceStateCallback(pl.Callback):
    """``self.state``: named tensors kept on the device during a fit (no host sync to update them),
    saved to a checkpoint on the CPU and restored from it when a fit resumes."""

    state: dict[str, torch.Tensor]
    kept_copies: tuple[int, int]  # (weights, EMAs) it keeps copies of: what the memory check adds for it

    def summary(self) -> dict:
        """What it did, for ``metrics.json``."""
        raise NotImplementedError

    def check_module(self, pl_module: pl.LightningModule) -> None:
        """Raise ``DipError`` when this callback cannot serve ``pl_module``'s fit: called before the fit
        (``dip.pipeline.prepare``), so that nothing is written for a fit that would be refused."""

    def start_state(self, fresh: dict[str, torch.Tensor], device: torch.device) -> None:
        """Begin a fit with ``fresh`` values, except those a resumed checkpoint restored."""
        restored = self.state  # from a checkpoint, or empty
        self.state = {key: restored[key].to(device) if key in restored else value for key, value in fresh.items()}

    def state_dict(self) -> dict:
        return {key: value.detach().cpu() for key, value in self.state.items()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.state = dict(state_dict)

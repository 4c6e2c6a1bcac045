"""The restoration as a LightningModule: fit ``x = f(z)`` to one observation ``y``."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from torch import nn

from dip.images import centre_crop
from dip.inputs import InputCode, padded_size
from dip.metrics import psnr, psnr_from_mse
from dip.physics import Degradation


class DeepImagePrior(pl.LightningModule):
    """Minimises ``E(f(z + reg_noise_std * n); y)`` over the generator's weights (and ``z``).

    The generator runs on ``z`` padded to a size its depth accepts and its output is centre-cropped
    back to the image. Keeps an exponential moving average of the outputs
    (``ema = w ema + (1 - w) x``). Backtracking (the authors' rule): when the data-term PSNR drops
    by more than ``backtrack_db`` from the last good step, or the loss is not finite, the weights
    roll back to the last good ones. Every check happens on the device, so no step waits for the
    host; metrics are logged every ``metrics_every`` steps. The last good weights live in one flat
    buffer, so that remembering or restoring them costs a few kernel launches, not a few per tensor.
    """

    def __init__(
        self,
        generator: nn.Module,
        physics: Degradation,
        observation: torch.Tensor,
        code: InputCode,
        optimizer: Callable[..., torch.optim.Optimizer],
        output_size: tuple[int, int],
        ground_truth: torch.Tensor | None = None,
        ema_weight: float = 0.99,
        backtrack_db: float | None = 5.0,
        metrics_every: int = 50,
    ):
        super().__init__()
        self.generator = generator
        self.physics = physics
        self.code = code
        self.optimizer_factory = optimizer
        self.output_size = tuple(output_size)
        self.ema_weight = ema_weight
        self.backtrack_db = backtrack_db
        self.metrics_every = max(1, int(metrics_every))

        height, width = padded_size(*self.output_size, getattr(generator, "size_multiple", 1))
        z = code.make(height, width)
        if code.optimize:
            self.z = nn.Parameter(z)
        else:
            self.register_buffer("z", z)
        self.register_buffer("observation", observation)
        self.register_buffer("ground_truth", ground_truth)
        self.register_buffer("ema", torch.zeros(1, observation.shape[1], *self.output_size))
        self.register_buffer("last_good_psnr", torch.tensor(-math.inf))

    def forward(self, z: torch.Tensor | None = None) -> torch.Tensor:
        return centre_crop(self.generator(self.z if z is None else z), *self.output_size)

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    def on_train_start(self) -> None:
        weights = [p.detach() for p in self.parameters()]
        self.good_weights = torch.cat([w.flatten() for w in weights])
        self.scratch = torch.empty_like(self.good_weights)
        pieces = self.scratch.split([w.numel() for w in weights])
        self.scratch_views = [piece.view_as(w) for piece, w in zip(pieces, weights)]

    def training_step(self, batch, batch_idx):
        z = self.z
        if self.code.reg_noise_std > 0:
            z = z + self.code.reg_noise_std * torch.randn_like(z)
        x = self(z)
        loss = self.physics.data_term(x, self.observation)
        with torch.no_grad():
            self._update_ema(x.detach())
            if self.backtrack_db is not None:
                self._remember_or_flag_divergence(loss.detach())
        self.latest_output = x.detach()
        if (self.global_step + 1) % self.metrics_every == 0:
            self.log_dict(self.quality(x.detach(), loss.detach()))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.backtrack_db is not None:
            self._roll_back_if_diverged()

    def quality(self, x: torch.Tensor, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Device-side metrics of output ``x`` whose data term is ``loss``."""
        metrics = {"psnr_fit": psnr_from_mse(loss)}
        if self.ground_truth is not None:
            metrics["psnr"] = psnr(x, self.ground_truth)
            metrics["psnr_ema"] = psnr(self.ema, self.ground_truth)
        return metrics

    @torch.no_grad()
    def restored(self) -> torch.Tensor:
        """``f(z)`` with the final weights and the unperturbed code."""
        return self().clamp(0, 1)

    def _update_ema(self, x: torch.Tensor) -> None:
        x = x.to(self.ema.dtype)  # under mixed precision the output is bf16/fp16, the average float32
        if self.global_step == 0:
            self.ema.copy_(x)
        else:
            blended = torch.lerp(x, self.ema, self.ema_weight)
            self.ema.copy_(torch.where(torch.isfinite(blended), blended, self.ema))

    def _remember_or_flag_divergence(self, loss: torch.Tensor) -> None:
        fit = psnr_from_mse(loss)
        self.diverged = ~torch.isfinite(fit) | (self.last_good_psnr - fit > self.backtrack_db)
        torch._foreach_copy_(self.scratch_views, [p.detach() for p in self.parameters()])
        torch.where(self.diverged, self.good_weights, self.scratch, out=self.good_weights)
        self.last_good_psnr = torch.where(self.diverged, self.last_good_psnr, fit)

    def _roll_back_if_diverged(self) -> None:
        with torch.no_grad():
            weights = [p.detach() for p in self.parameters()]
            torch._foreach_copy_(self.scratch_views, weights)
            torch.where(self.diverged, self.good_weights, self.scratch, out=self.scratch)
            torch._foreach_copy_(weights, self.scratch_views)

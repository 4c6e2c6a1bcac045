"""Early stopping without ground truth: the windowed moving variance (ES-WMV) of Wang et al.,
"Early Stopping for Deep Image Prior" (TMLR 2023)."""

from __future__ import annotations

import math

import torch

from dip.callbacks.device_state import DeviceStateCallback
from dip.metrics import psnr


class VarianceEarlyStopping(DeviceStateCallback):
    """Stop when the running variance of the outputs has not decreased for ``patience`` steps.

    With ``x_t`` the output of step ``t`` (the one the loss saw) and ``W = window``, the variance
    after step ``t >= W`` is ``VAR_t = mean over pixels of (1/W) sum_{s=t-W+1..t} (x_s - xbar_t)^2``,
    ``xbar_t`` the mean of the window: the per-pixel variance across the last ``W`` outputs, averaged
    over pixels. It falls while the network fits the image and rises once it fits the noise; the
    chosen step is ``t* = argmin VAR_t``, and the run stops at the first check with
    ``t - t* >= patience``. When training ends the module is put back in its state of step ``t*``
    (weights and EMA), so that ``restored`` is ``f(z)`` at ``t*``, as it is at the last step without
    early stopping.

    Everything stays on the device: a ring buffer of the last ``W`` outputs, the best variance, and
    the weights and EMA at ``t*``. The host reads the chosen step only every ``check_every`` steps.
    With a ground truth it also tracks the PSNR of every output ``x_t``, to report the best PSNR of
    the run and the gap between it and the PSNR of ``x_{t*}``.
    """

    handles_copies = False  # one variance for the one output: not for packed restarts or images

    def __init__(self, window: int = 100, patience: int = 1000, check_every: int = 50):
        if window < 2 or patience < 1 or check_every < 1:
            raise ValueError(
                f"early stopping needs window >= 2, patience >= 1 and check_every >= 1, "
                f"got window={window}, patience={patience}, check_every={check_every}"
            )
        self.window, self.patience, self.check_every = int(window), int(patience), int(check_every)
        self.state: dict[str, torch.Tensor] = {}
        self.stopped_at: int | None = None
        self.psnr_final: float | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        device, x = pl_module.device, pl_module.ema
        fresh = {
            "outputs": torch.zeros(self.window, *x.shape[1:], device=device),
            "best_variance": torch.tensor(math.inf, device=device),
            "best_step": torch.tensor(-1, device=device),
            "best_weights": pl_module.flat_weights.clone(),
            "best_ema": torch.zeros_like(x),
        }
        if pl_module.ground_truth is not None:
            fresh |= {
                "psnr_at_best": torch.tensor(math.nan, device=device),
                "max_psnr": torch.tensor(-math.inf, device=device),
                "max_psnr_step": torch.tensor(-1, device=device),
            }
        self.start_state(fresh, device)

    @property
    def kept_copies(self) -> tuple[int, int]:
        """For the memory check: copies of the weights (the best ones) and images (the window, the best EMA) kept."""
        return 1, self.window + 1

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # After the loss and backward pass of step t, before the update: the weights are those of x_t.
        step, s = trainer.global_step + 1, self.state  # step: 1-based, the count of steps once this one is done
        x = pl_module.latest_output
        s["outputs"][step % self.window].copy_(x[0])
        if "max_psnr" in s:
            quality = psnr(x, pl_module.ground_truth)
            higher = quality > s["max_psnr"]
            s["max_psnr"].copy_(torch.where(higher, quality, s["max_psnr"]))
            s["max_psnr_step"].copy_(torch.where(higher, step, s["max_psnr_step"]))
        if step < self.window:
            return
        variance = s["outputs"].var(dim=0, unbiased=False).mean()
        lower = variance < s["best_variance"]
        s["best_variance"].copy_(torch.where(lower, variance, s["best_variance"]))
        s["best_step"].copy_(torch.where(lower, step, s["best_step"]))
        torch.where(lower, pl_module.flat_weights, s["best_weights"], out=s["best_weights"])
        torch.where(lower, pl_module.ema, s["best_ema"], out=s["best_ema"])
        if "max_psnr" in s:
            s["psnr_at_best"].copy_(torch.where(lower, quality, s["psnr_at_best"]))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step < self.window or step % self.check_every:
            return
        if step - int(self.state["best_step"]) >= self.patience:  # the one host sync, every check_every steps
            self.stopped_at = step
            trainer.should_stop = True

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        if self.chosen_step is None:
            return
        if pl_module.ground_truth is not None:
            self.psnr_final = float(psnr(pl_module.restored(), pl_module.ground_truth))
        pl_module.flat_weights.copy_(self.state["best_weights"])
        pl_module.ema.copy_(self.state["best_ema"])

    @property
    def chosen_step(self) -> int | None:
        """``t*``, or None before the window filled."""
        step = int(self.state["best_step"]) if self.state else -1
        return step if step >= 0 else None

    def summary(self) -> dict:
        """What ``metrics.json`` records: the chosen step and, with a ground truth, the PSNR of the
        output there, the best PSNR of the run (of the outputs the criterion saw), the gap between
        them, and the PSNR of ``f(z)`` at the last step (what the run gives without early stopping)."""
        s, chosen = self.state, self.chosen_step
        summary = {"early_stop_step": chosen, "early_stopped_at": self.stopped_at}
        if s and "max_psnr" in s:
            at_chosen, best = float(s["psnr_at_best"]), float(s["max_psnr"])
            summary |= {
                "psnr_at_early_stop": round(at_chosen, 4) if chosen else None,
                "psnr_max": round(best, 4),
                "psnr_max_step": int(s["max_psnr_step"]),
                "early_stop_gap_db": round(best - at_chosen, 4) if chosen else None,
                "psnr_final": round(self.psnr_final, 4) if self.psnr_final is not None else None,
            }
        return summary

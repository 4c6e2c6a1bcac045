"""Early stopping by Morozov's discrepancy principle: stop fitting once the output explains the
observation as closely as the clean image would, when the noise level is known (denoising)."""

from __future__ import annotations

import torch

from dip.callbacks.device_state import DeviceStateCallback
from dip.errors import DipError
from dip.metrics import per_image_psnr, rounded


class DiscrepancyStopping(DeviceStateCallback):
    """Keep each copy's output EMA (and weights) from ``delay`` steps after its residual fell to the
    noise's energy; stop the run once every copy has its step.

    For copy ``k`` (a restart, or an image packed beside others) with EMA ``x_k`` and observation
    ``y``, the residual is the data term ``r_k = mean (A(x_k) - y)^2``. The clean image ``x0`` would
    leave ``nu(x0) = E mean (y - A(x0))^2``, the energy of the noise, which the degradation knows
    (``expected_residual``) and which is evaluated at ``x_k`` in place of ``x0``. While Deep Image
    Prior fits the image ``r_k > nu``; at the first check with ``r_k <= factor * nu(x_k)`` (``s_k``,
    ``noise_level_step``) it begins to fit the noise. The EMA lags the outputs it averages, by their
    mean age ``w / (1 - w)`` for EMA weight ``w`` (99 steps at 0.99), and its PSNR went on rising for
    about that long after ``s_k`` in every curve measured (docs/robustness.md); so the EMA kept is that
    of the first check at or after ``s_k + delay`` (``t*_k``, ``early_stop_step``), ``delay`` by default
    that mean age. No ground truth is used, only the noise model.

    Everything stays on the device: the kept EMA and weights, and each copy's ``s_k`` and ``t*_k``; the
    host reads whether every copy has its ``t*`` every ``check_every`` steps. With ``stop=False`` the
    run goes on to ``trainer.max_steps`` and only keeps the outputs of ``t*``, so that one run gives
    both (the final ones are in the summary with a ground truth: ``psnr_final``, ``psnr_ema_final``).
    A copy whose ``t*`` would come after ``trainer.max_steps`` keeps the last step's outputs.
    """

    handles_copies = True  # each restart or packed image gets its own t*
    kept_copies = (1, 1)  # for the memory check: one copy of the weights, one of the EMA

    def __init__(self, factor: float = 1.0, delay: int | None = None, check_every: int = 50, stop: bool = True):
        if factor <= 0 or check_every < 1 or (delay is not None and delay < 0):
            raise ValueError(f"the discrepancy principle needs factor > 0, delay >= 0 and check_every >= 1, "
                             f"got factor={factor}, delay={delay}, check_every={check_every}")
        self.factor, self.check_every, self.stop = float(factor), int(check_every), bool(stop)
        self.delay = None if delay is None else int(delay)
        self.state: dict[str, torch.Tensor] = {}
        self.stopped_at: int | None = None
        self.final: dict[str, float | list[float]] = {}

    def check_module(self, pl_module) -> None:
        physics = pl_module.physics
        if physics.expected_residual(pl_module.observation[:1]) is None:
            raise DipError(f"early_stop=discrepancy needs a known noise level, which {type(physics).__name__} "
                           "does not have (expected_residual(y) gives None): use it with task=denoising or an "
                           "operator whose expected_residual gives the noise's, or early_stop=wmv")

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.check_module(pl_module)
        if self.delay is None:  # the mean age of the outputs in the EMA
            self.delay = round(pl_module.ema_weight / (1 - pl_module.ema_weight))

    def on_train_start(self, trainer, pl_module) -> None:
        copies = pl_module.ema.shape[0]
        fresh = {
            "noise_level_step": torch.full((copies,), -1, device=pl_module.device),
            "stopped_step": torch.full((copies,), -1, device=pl_module.device),
            "kept_ema": torch.zeros_like(pl_module.ema),
            "kept_weights": pl_module.flat_weights.clone(),
        }
        self.start_state(fresh, pl_module.device)

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # After the loss of step t, before the update: the EMA includes x_t, the weights are those of x_t.
        step, s = trainer.global_step + 1, self.state  # 1-based, the count of steps once this one is done
        if step % self.check_every:
            return
        ema = pl_module.ema.clamp(0, 1)
        residual = pl_module.physics.data_term(ema, pl_module.observation)
        reached = residual <= self.factor * pl_module.physics.expected_residual(ema)
        noise_level = s["noise_level_step"]
        noise_level.copy_(torch.where(reached & (noise_level < 0), step, noise_level))
        keep = (noise_level >= 0) & (step >= noise_level + self.delay) & (s["stopped_step"] < 0)
        s["stopped_step"].copy_(torch.where(keep, step, s["stopped_step"]))
        s["kept_ema"].copy_(torch.where(keep.view(-1, 1, 1, 1), pl_module.ema, s["kept_ema"]))
        torch.where(pl_module.per_weight(keep), pl_module.flat_weights, s["kept_weights"], out=s["kept_weights"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.stop or step % self.check_every or step >= trainer.max_steps:
            return
        if bool((self.state["stopped_step"] >= 0).all()):  # the one host sync, every check_every steps
            self.stopped_at = step
            trainer.should_stop = True

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        kept = self.state["stopped_step"] >= 0
        if pl_module.ground_truth is not None:
            outputs, emas = pl_module.restart_outputs(), pl_module.ema.clamp(0, 1)
            self.final = {"psnr_final": self._psnr(pl_module, pl_module.combine(outputs)),
                          "psnr_ema_final": self._psnr(pl_module, pl_module.combine(emas))}
            if pl_module.restarts > 1 and not pl_module.separate_images:  # each restart's own, as a run of its own
                self.final |= {"psnr_final_restarts": rounded(per_image_psnr(outputs, pl_module.ground_truth)),
                               "psnr_ema_final_restarts": rounded(per_image_psnr(emas, pl_module.ground_truth))}
        pl_module.ema.copy_(torch.where(kept.view(-1, 1, 1, 1), self.state["kept_ema"], pl_module.ema))
        torch.where(pl_module.per_weight(kept), self.state["kept_weights"], pl_module.flat_weights,
                    out=pl_module.flat_weights)

    @staticmethod
    def _psnr(pl_module, restorations: torch.Tensor) -> float | list[float]:
        values = rounded(per_image_psnr(restorations, pl_module.ground_truth))
        return values if pl_module.separate_images else values[0]

    def summary(self) -> dict:
        """What ``metrics.json`` records: each copy's ``t*``, ``early_stop_step``, and ``s``,
        ``noise_level_step`` (null where not reached; a list with several copies), ``early_stopped_at``
        (null when the run reached ``trainer.max_steps``), and with a ground truth the PSNR of ``f(z)``
        and of the EMA at the last step, which the run would have given without the principle (with
        packed restarts also each restart's: ``psnr_final_restarts``, ``psnr_ema_final_restarts``)."""

        def steps(key: str) -> int | None | list[int | None]:
            values = [None if step < 0 else step for step in self.state[key].tolist()] if self.state else [None]
            return values if len(values) > 1 else values[0]

        return {"early_stop_step": steps("stopped_step"), "noise_level_step": steps("noise_level_step"),
                "early_stopped_at": self.stopped_at, **self.final}


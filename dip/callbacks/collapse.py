"""A fit that collapses in its last steps keeps, beside its final outputs, its output EMA from before."""

from __future__ import annotations

import math

import torch

from dip.callbacks.device_state import DeviceStateCallback


class CollapseGuard(DeviceStateCallback):
    """Keep each copy's output EMA from the check where it fitted the observation best, and tell
    whether the fit ended collapsed.

    For copy ``k`` (a restart, or an image packed beside others) with EMA ``x_k`` and observation
    ``y``, every ``check_every`` steps and at the last step the residual ``r_k = mean (A(x_k) - y)^2``
    is measured and the EMA of the smallest so far (the later of equal ones) is kept, on the device.
    The fit of copy ``k`` collapsed when its last residual is more than ``drop_db`` above its best,
    ``10 log10(r_k(end) / min r_k) > drop_db`` (or not finite): the measure and threshold of
    backtracking, here over the whole fit, which a slide of many small steps (Table 1's cameraman:
    48 dB to 30 dB in 50 steps, none of them 5 dB) passes unchecked.

    The final outputs stay what they are (the authors' protocol reports them): ``ema_before_collapse``
    is the EMA with each collapsed copy's replaced by the one kept, for a file beside them. Only a
    collapse tells: a fit that goes on improving, or overfits noise, has its best residual at the end.
    """

    kept_copies = (0, 1)  # for the memory check: no weights, one copy of the EMA

    def __init__(self, drop_db: float = 5.0, check_every: int = 50):
        if drop_db <= 0 or check_every < 1:
            raise ValueError(f"a collapse needs drop_db > 0 and check_every >= 1, got {drop_db}, {check_every}")
        self.drop_db, self.check_every = float(drop_db), int(check_every)
        self.state: dict[str, torch.Tensor] = {}
        self.collapsed: list[bool] = []
        self.drops_db: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        copies, device = pl_module.ema.shape[0], pl_module.device
        fresh = {"best_residual": torch.full((copies,), math.inf, device=device),
                 "best_step": torch.full((copies,), -1, device=device),
                 "kept_ema": torch.zeros_like(pl_module.ema)}
        self.start_state(fresh, device)

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, s = trainer.global_step, self.state
        if step % self.check_every and step < trainer.max_steps:
            return
        residual = self._residual(pl_module)
        better = residual <= s["best_residual"]  # the later of equal ones; never a NaN residual
        s["best_residual"].copy_(torch.where(better, residual, s["best_residual"]))
        s["best_step"].copy_(torch.where(better, step, s["best_step"]))
        s["kept_ema"].copy_(torch.where(better.view(-1, 1, 1, 1), pl_module.ema, s["kept_ema"]))

    @torch.no_grad()
    def on_train_end(self, trainer, pl_module) -> None:
        last, best = self._residual(pl_module), self.state["best_residual"]
        drop = torch.where(last <= best, 0.0, 10 * torch.log10(last / best))  # 0 / 0, a perfect fit, is no drop
        collapsed = ~(drop <= self.drop_db) & (self.state["best_step"] >= 0)  # a NaN residual collapsed too
        self.collapsed = collapsed.tolist()
        self.drops_db = [round(value, 2) if math.isfinite(value) else None for value in drop.tolist()]

    @staticmethod
    def _residual(pl_module) -> torch.Tensor:
        return pl_module.physics.data_term(pl_module.ema.clamp(0, 1), pl_module.observation).float()

    def ema_before_collapse(self, pl_module) -> torch.Tensor | None:
        """The restorations' EMA with each collapsed copy's EMA from its best check (as
        ``pl_module.ema_output()``: averaged over restarts, one per packed image); None without a collapse."""
        if not any(self.collapsed):
            return None
        collapsed = torch.tensor(self.collapsed, device=pl_module.ema.device).view(-1, 1, 1, 1)
        return pl_module.combine(torch.where(collapsed, self.state["kept_ema"], pl_module.ema).clamp(0, 1))

    def summary(self) -> dict:
        """What ``metrics.json`` records after a collapse (nothing otherwise): each copy's step whose EMA
        was kept, ``ema_before_collapse_step`` (null for a copy that did not collapse), and how far its
        last residual ended above its best, ``collapse_drop_db`` (lists with several copies)."""
        if not any(self.collapsed):
            return {}
        steps = [int(step) if collapsed else None
                 for step, collapsed in zip(self.state["best_step"].tolist(), self.collapsed)]
        single = len(steps) == 1
        return {"ema_before_collapse_step": steps[0] if single else steps,
                "collapse_drop_db": self.drops_db[0] if single else self.drops_db}

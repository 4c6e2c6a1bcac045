"""Does a fit recover from a divergence? A controlled one: the weights are kicked off their track at
one step (each multiplied by ``1 + kick * n``, ``n`` standard normal, one seeded draw), the same kick
for each ``diverged_gradient`` rule, and the script counts the rollbacks that follow and prints where
each fit ends. ``keep`` is the authors' rule (Adam takes the kicked weights' gradient, then the weights
roll back); ``drop`` keeps that gradient out of the optimizer; ``damp`` keeps it out too, but raises
Adam's second moment to its square first.

    python experiments/rollback_kick.py task=inpainting arch=skip mask=bernoulli mask.fraction=0.5 \\
        data.path=$DIP_DATA/inpainting_heide/cameraman.png data.mode=L data.size=64 \\
        input.reg_noise_std=0.03 optim.lr=0.001 --kick-step 2000 --steps 2400 --kick 0.3 --out kick.json

Arguments that are not options are Hydra overrides, as on ``run.py``'s command line.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

from dip.config import compose_config
from dip.module import DIVERGED_GRADIENT_RULES
from dip.pipeline import run


class Kick(pl.Callback):
    """Kicks the weights before step ``step`` is taken; records each later step's divergence flag on
    the device (read once, at the end)."""

    def __init__(self, step: int, size: float, seed: int = 0):
        self.step, self.size, self.seed = step, size, seed
        self.flags: list[torch.Tensor] = []

    @torch.no_grad()
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            weights = pl_module.flat_weights
            draw = torch.Generator(device=weights.device).manual_seed(self.seed)
            noise = torch.randn(weights.shape, generator=draw, device=weights.device, dtype=weights.dtype)
            weights.addcmul_(weights, noise, value=self.size)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step > self.step:
            self.flags.append(pl_module.diverged.any())

    def summary(self, stopped: bool) -> dict:
        """The rollbacks after the kick, and after how many steps the last of them came (None for a run
        that ``max_rollbacks`` stopped, or whose last step diverged: it never recovered)."""
        flags = torch.stack(self.flags).tolist() if self.flags else []
        last_rollback = max((k for k, flag in enumerate(flags) if flag), default=-1)
        recovered = not stopped and last_rollback + 1 < len(flags)
        return {"rollbacks": sum(flags), "recovered_after_steps": last_rollback + 1 if recovered else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kick-step", type=int, default=2000)
    parser.add_argument("--kick", type=float, default=0.05, help="the kick's relative size (default 0.05)")
    parser.add_argument("--steps", type=int, default=2600)
    parser.add_argument("--rules", nargs="+", choices=DIVERGED_GRADIENT_RULES, default=DIVERGED_GRADIENT_RULES,
                        help="the diverged_gradient rules to run (default: all)")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args, overrides = parser.parse_known_args()
    if not 0 <= args.kick_step < args.steps:
        parser.error(f"--kick-step must lie in [0, --steps), got {args.kick_step} with --steps {args.steps}")
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)

    rows = {}
    for rule in args.rules:
        cfg = compose_config([*overrides, "logger=none", "trainer.enable_progress_bar=false",
                              f"trainer.max_steps={args.steps}",
                              f"diverged_gradient={rule}"])
        kick = Kick(args.kick_step, args.kick)
        metrics = run(cfg, None, callbacks=[kick]).metrics
        rows[rule] = {**kick.summary(stopped=bool(metrics.get("stop_reason"))), "steps": metrics["steps"],
                      "psnr": metrics.get("psnr"), "psnr_ema": metrics.get("psnr_ema"),
                      "stop_reason": metrics.get("stop_reason")}

    print(f"kick {args.kick} at step {args.kick_step}, {args.steps} steps; overrides: {' '.join(overrides)}")
    print("| diverged_gradient | rollbacks | recovered after | steps done | PSNR | EMA | stop |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for rule, row in rows.items():
        print(f"| {rule} | {row['rollbacks']} | {row['recovered_after_steps']} | {row['steps']} | "
              f"{row['psnr']} | {row['psnr_ema']} | {row['stop_reason'] or '-'} |")
    if args.out:
        args.out.write_text(json.dumps({"kick": args.kick, "kick_step": args.kick_step, "steps": args.steps,
                                        "overrides": overrides, "rules": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Fig. 6 (d), sensitivity to the learning rate: large-hole inpainting of one image at several rates."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dip.experiments.common import image_grid, restore_in, titled, write_csv


def run(cfg: DictConfig, output_dir: Path) -> str:
    rows, cells = [], []
    for lr in cfg.experiment.lrs:
        result = restore_in(output_dir / f"lr_{lr:g}", [f"optim.lr={lr}"])
        if not cells:
            cells.append((result.observation, "observation"))
        metrics = result.metrics
        rows.append({"lr": lr, "psnr": metrics["psnr"], "psnr_ema": metrics["psnr_ema"],
                     "psnr_fit": metrics["psnr_fit"], "steps": metrics["steps"]})
        cells.append((result.restored, titled(f"lr {lr:g}", metrics["psnr"])))
    write_csv(rows, output_dir / "fig6_inpainting_lr.csv")
    image_grid([cells], output_dir / "fig6_inpainting_lr.png", title="Inpainting at several learning rates (Fig. 6)")
    lines = ", ".join(f"lr {row['lr']:g}: {row['psnr']} dB" for row in rows)
    return f"fig6_inpainting_lr: {lines}\ngrid and numbers in {output_dir}"

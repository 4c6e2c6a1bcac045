"""Fig. 6 (d), sensitivity to the learning rate: large-hole inpainting of one image at several rates."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dip.experiments.common import SubRun, image_grid, listed, restore_each, titled, write_csv


def run(cfg: DictConfig, output_dir: Path) -> str:
    stem = cfg.experiment.name  # of the files: a config of one's own on this runner names its own
    lrs = listed(cfg, "experiment.lrs")
    results = restore_each([SubRun(output_dir / f"lr_{lr}", [f"optim.lr={lr}"]) for lr in lrs])
    rows, cells = [], []
    for lr, result in zip(lrs, results):
        if not cells:
            cells.append((result.observation, "observation"))
        metrics = result.metrics
        rows.append({"lr": lr, "psnr": metrics["psnr"], "psnr_ema": metrics["psnr_ema"],
                     "psnr_fit": metrics["psnr_fit"], "steps": metrics["steps"]})
        cells.append((result.restored, titled(f"lr {lr:g}", metrics["psnr"])))
    write_csv(rows, output_dir / f"{stem}.csv")
    image_grid([cells], output_dir / f"{stem}.png", title="Inpainting at several learning rates (Fig. 6)")
    lines = ", ".join(f"lr {row['lr']:g}: {row['psnr']} dB" for row in rows)
    return f"{stem}: {lines}\ngrid and numbers in {output_dir}"

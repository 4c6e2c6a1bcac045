"""Fig. 8, the architecture matters: inpainting with skip networks of depth 2, 4, 6, a U-Net and a ResNet."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dip.errors import DipError
from dip.experiments.common import SubRun, image_grid, listed, restore_each, titled, write_csv


def run(cfg: DictConfig, output_dir: Path) -> str:
    stem = cfg.experiment.name  # of the files: a config of one's own on this runner names its own
    archs = listed(cfg, "experiment.archs")
    arch_overrides = cfg.experiment.get("arch_overrides") or {}  # null: none
    if not isinstance(arch_overrides, DictConfig):
        raise DipError(f"experiment.arch_overrides must map an arch to its overrides, got {arch_overrides!r}")
    extras = {arch: list(arch_overrides.get(arch) or []) for arch in archs}
    results = restore_each([SubRun(output_dir / arch, [f"arch={arch}", *extras[arch]]) for arch in archs])
    rows, cells = [], []
    for arch, result in zip(archs, results):
        extra = extras[arch]
        if not cells:
            cells.append((result.observation, "observation"))
        metrics = result.metrics
        rows.append({"arch": arch, "overrides": " ".join(extra), "psnr": metrics["psnr"],
                     "psnr_ema": metrics["psnr_ema"], "ssim": metrics["ssim"], "steps": metrics["steps"],
                     "seconds": metrics["seconds"]})
        cells.append((result.restored, titled(arch, metrics["psnr"])))
    write_csv(rows, output_dir / f"{stem}.csv")
    image_grid([cells], output_dir / f"{stem}.png", title="Inpainting with different generators (Fig. 8)")
    lines = ", ".join(f"{row['arch']} {row['psnr']} dB" for row in rows)
    return f"{stem}: {lines}\ngrid and numbers in {output_dir}"

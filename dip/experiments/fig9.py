"""Fig. 9, natural pre-images: inverting AlexNet's features layer by layer, Deep Image Prior vs TV."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dip.experiments.common import image_grid, restore_in, titled, write_csv


def run(cfg: DictConfig, output_dir: Path) -> str:
    settings = cfg.experiment
    rows, grid, original = [], [], None
    for prior, overrides in settings.priors.items():
        cells = []
        for layer in settings.layers:
            result = restore_in(output_dir / f"{layer}_{prior}", [f"task.physics.layer={layer}", *overrides])
            original = result.observation
            metrics = result.metrics
            rows.append({"layer": layer, "prior": prior, "psnr": metrics["psnr"], "psnr_fit": metrics["psnr_fit"],
                         "steps": metrics["steps"]})
            cells.append((result.restored, titled(f"{layer} ({prior})", metrics["psnr"])))
        grid.append(cells)
    grid[0].insert(0, (original, "original"))
    for cells in grid[1:]:
        cells.insert(0, (None, ""))
    write_csv(rows, output_dir / "fig9_preimage.csv")
    image_grid(grid, output_dir / "fig9_preimage.png", title="AlexNet pre-images per layer (Fig. 9)")
    return f"fig9_preimage: {len(rows)} pre-images\ngrid and numbers in {output_dir}"

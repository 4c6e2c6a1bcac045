"""Fig. 9, natural pre-images: inverting AlexNet's features layer by layer, Deep Image Prior vs TV."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dip.experiments.common import SubRun, image_grid, listed, restore_each, titled, write_csv


def run(cfg: DictConfig, output_dir: Path) -> str:
    stem = cfg.experiment.name  # of the files: a config of one's own on this runner names its own
    priors, layers = listed(cfg, "experiment.priors"), listed(cfg, "experiment.layers")
    pairs = [(prior, layer) for prior in priors for layer in layers]
    results = iter(restore_each([SubRun(output_dir / f"{layer}_{prior}",
                                        [f"task.physics.layer={layer}", *priors[prior]]) for prior, layer in pairs]))
    rows, grid, original = [], [], None
    for prior in priors:
        cells = []
        for layer in layers:
            result = next(results)
            original = result.observation
            metrics = result.metrics
            rows.append({"layer": layer, "prior": prior, "psnr": metrics["psnr"], "psnr_fit": metrics["psnr_fit"],
                         "steps": metrics["steps"]})
            cells.append((result.restored, titled(f"{layer} ({prior})", metrics["psnr"])))
        grid.append(cells)
    grid[0].insert(0, (original, "original"))
    for cells in grid[1:]:
        cells.insert(0, (None, ""))
    write_csv(rows, output_dir / f"{stem}.csv")
    image_grid(grid, output_dir / f"{stem}.png", title="AlexNet pre-images per layer (Fig. 9)")
    return f"{stem}: {len(rows)} pre-images\ngrid and numbers in {output_dir}"

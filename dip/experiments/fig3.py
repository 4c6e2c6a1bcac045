"""Fig. 3, JPEG restoration over time: the image is recovered early, the artefacts fitted late."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from dip.errors import DipError
from dip.experiments.common import Snapshots, SubRun, image_grid, psnr_or_none, restore_each, titled
from dip.outputs import write_json


def run(cfg: DictConfig, output_dir: Path) -> str:
    stem = cfg.experiment.name  # of the files: a config of one's own on this runner names its own
    max_steps = cfg.trainer.max_steps
    wanted = OmegaConf.select(cfg, "experiment.snapshots")  # [] or null: the last step only
    if wanted is not None and not (isinstance(wanted, ListConfig) and all(
            isinstance(step, int) and not isinstance(step, bool) for step in wanted)):
        shown = OmegaConf.to_container(wanted) if isinstance(wanted, DictConfig) else wanted
        raise DipError(f"experiment.snapshots must list step numbers ('experiment.snapshots=[100,600]'), got "
                       f"{shown!r}")
    steps = sorted({step for step in wanted or [] if 0 < step <= max_steps} | {max_steps})
    snapshots = Snapshots(steps)
    [result] = restore_each([SubRun(output_dir / "jpeg", callbacks=[snapshots])])

    truth = result.ground_truth
    progress = [
        {"step": step, "psnr": psnr_or_none(image, truth), "psnr_fit": psnr_or_none(image, result.observation)}
        for step, image in sorted(snapshots.images.items())
    ]
    write_json({"psnr_observation": result.metrics["psnr_observation"], "snapshots": progress},
               output_dir / f"{stem}.json")
    cells = [(result.observation, titled("JPEG", result.metrics["psnr_observation"]))]
    cells += [(snapshots.images[p["step"]], titled(f"{p['step']} step{'s' if p['step'] != 1 else ''}", p["psnr"]))
              for p in progress]
    if truth is not None:
        cells.append((truth, "ground truth"))
    image_grid([cells], output_dir / f"{stem}.png", title="JPEG restoration over the steps (Fig. 3)")
    lines = ", ".join(f"{p['step']}: {p['psnr']:.2f} dB" for p in progress if p["psnr"] is not None)
    return f"{stem}: {lines or 'no ground truth (real JPEG)'}\ngrid and numbers in {output_dir}"

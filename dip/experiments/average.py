"""The paper's averaging protocol (31.00 dB in denoising): independent runs on the same observation
(``seed`` varies: other ``z`` and initial weights; ``observation_seed`` stays), their outputs averaged."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from dip.config_checks import check_whole_number
from dip.experiments.common import SubRun, image_grid, psnr_or_none, restore_each, titled
from dip.outputs import decibels, save_averages, write_json


def run(cfg: DictConfig, output_dir: Path) -> str:
    stem = cfg.experiment.name  # of the files: a config of one's own on this runner names its own
    runs = cfg.experiment.runs
    check_whole_number("experiment.runs", runs)
    # observation_seed fixed: the same noise (or mask) for every run
    results = restore_each([SubRun(output_dir / f"run{index}", [f"seed={cfg.seed + index}",
                                                                 f"observation_seed={cfg.observation_seed}"])
                            for index in range(runs)])

    truth = results[0].ground_truth
    average, average_ema = save_averages([r.restored for r in results], [r.restored_ema for r in results], output_dir)
    summary = {
        "runs": [{"seed": r.metrics["seed"], "psnr": r.metrics["psnr"], "psnr_ema": r.metrics["psnr_ema"]}
                 for r in results],
        "psnr_observation": results[0].metrics["psnr_observation"],
        "psnr_average": psnr_or_none(average, truth),
        "psnr_ema_average": psnr_or_none(average_ema, truth),
    }
    write_json(summary, output_dir / f"{stem}.json")
    cells = [(results[0].observation, titled("observation", summary["psnr_observation"]))]
    cells += [(r.restored_ema, titled(f"seed {r.metrics['seed']} (EMA)", r.metrics["psnr_ema"])) for r in results]
    cells.append((average_ema, titled("average (EMA)", summary["psnr_ema_average"])))
    image_grid([cells], output_dir / f"{stem}.png", title=f"Average of {len(results)} runs")
    scores = (f"PSNR average {decibels(summary['psnr_average'])}, of the EMAs "
              f"{decibels(summary['psnr_ema_average'])}" if truth is not None else "no ground truth to score against")
    return f"{stem}: {scores}\ngrid and numbers in {output_dir}"

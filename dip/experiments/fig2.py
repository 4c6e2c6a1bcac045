"""Fig. 2, "high impedance to noise": how fast the generator fits a natural image, the same with
noise added, with its pixels shuffled, and white noise."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from omegaconf import DictConfig

from dip.config_checks import check_whole_number
from dip.errors import DipError
from dip.experiments.common import LossRecorder, SubRun, plot_curves, restore_each, write_csv
from dip.outputs import write_json
from dip.physics import GaussianNoise, Identity
from dip.problem import build_problem

LABELS = {"natural": "natural image", "noisy": "image + noise", "shuffled": "image, pixels shuffled",
          "noise": "white noise"}


def targets(clean: torch.Tensor, sigma: float, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The four images to fit (``1 x C x H x W``): the image, plus Gaussian noise of std ``sigma``
    (0-255 scale, clipped), with its pixel positions permuted (colours kept), and uniform noise."""
    height, width = clean.shape[-2:]
    order = torch.randperm(height * width, generator=generator)
    return {
        "natural": clean,
        "noisy": GaussianNoise(sigma).observe(clean, generator),
        "shuffled": clean.flatten(2)[..., order].reshape(clean.shape),
        "noise": torch.rand(clean.shape, generator=generator),
    }


def run(cfg: DictConfig, output_dir: Path) -> str:
    stem = cfg.experiment.name  # of the files: a config of one's own on this runner names its own
    check_whole_number("experiment.record_every", cfg.experiment.record_every, most=cfg.trainer.max_steps)
    sigma = cfg.experiment.sigma
    if isinstance(sigma, bool) or not (isinstance(sigma, (int, float)) and 0 <= sigma < math.inf):
        raise DipError(f"experiment.sigma must be a finite number >= 0 (the noise std, 0-255 scale), got {sigma!r}")
    data = cfg.data
    clean = build_problem(Identity(), path=data.path, default_image=data.default_image, size=data.size,
                          mode=data.mode, seed=cfg.seed).ground_truth
    images = targets(clean, cfg.experiment.sigma, torch.Generator().manual_seed(cfg.seed))
    recorders = {name: LossRecorder(cfg.experiment.record_every) for name in images}
    # each scored against the image as fitted here (cut to data.size), not the file at full size
    restore_each([SubRun(output_dir / name, observation=image[0], clean=clean[0], callbacks=[recorders[name]])
                  for name, image in images.items()])
    curves = {name: (recorder.steps, recorder.losses()) for name, recorder in recorders.items()}

    steps = curves["natural"][0]
    write_csv([{"step": step, **{name: curves[name][1][i] for name in LABELS}} for i, step in enumerate(steps)],
              output_dir / "curves.csv")
    final = {name: curves[name][1][-1] if curves[name][1] else None for name in LABELS}
    write_json({"final_mse": final, "steps": steps[-1] if steps else 0, "sigma": sigma}, output_dir / f"{stem}.json")
    plot_curves({LABELS[name]: curve for name, curve in curves.items()}, output_dir / f"{stem}.png",
                title="Fit of f(z) to each image (Fig. 2)", ylabel="MSE")
    finals = ", ".join(f"{name} {value:.4g}" for name, value in final.items() if value is not None)
    # the loss of the last step, as the curves have it: the output before that step's update, with the code's
    # perturbation if any; each sub-run's metrics.json scores the output after it (psnr_fit)
    return f"{stem}: MSE at step {steps[-1] if steps else 0} {finals}\nplot and curves in {output_dir}"

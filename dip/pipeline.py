"""One restoration from a composed config: build, fit with Lightning, measure, write outputs."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.loggers import WandbLogger
from torch.utils.data import DataLoader, Dataset

from dip.errors import DipError
from dip.images import save_image, write_atomically
from dip.loggers import ImageLogger
from dip.metrics import psnr, ssim
from dip.module import DeepImagePrior
from dip.problem import Problem, build_problem
from dip.speed import Speed

OUTPUT_FILES = ("observation.png", "restored.png", "restored_ema.png", "metrics.json")


class StepDataset(Dataset):
    """One item per optimisation step, so that a whole run is a single epoch (one checkpoint, one
    end-of-epoch hook) rather than ``max_steps`` epochs over one image."""

    def __init__(self, steps: int):
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> int:
        return index


class FitTimer(pl.Callback):
    """Wall time of the optimisation loop alone (start-up excluded), synchronised with the device."""

    def on_train_start(self, trainer, pl_module):
        self._sync(pl_module)
        self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self._sync(pl_module)
        self.seconds = time.perf_counter() - self.start

    @staticmethod
    def _sync(pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)


class MetricsProgressBar(TQDMProgressBar):
    """The progress bar, showing the latest device-side metrics read only when it refreshes.

    (Logging with ``prog_bar=True`` instead makes Lightning copy each metric to the host after
    every step, a device synchronisation per step.)
    """

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.update({name: f"{float(value):.2f}" for name, value in trainer.callback_metrics.items()})
        return metrics


@dataclass
class Result:
    """What a restoration returns: images as ``1 x C x H x W`` tensors and the final metrics."""

    restored: torch.Tensor
    restored_ema: torch.Tensor
    observation: torch.Tensor
    ground_truth: torch.Tensor | None
    metrics: dict = field(default_factory=dict)
    output_dir: Path | None = None


def _instantiate(node: DictConfig, what: str, **kwargs):
    """Build ``node``; a constructor that rejects its settings becomes a one-line ``DipError``."""
    try:
        built = instantiate(node, _convert_="all")
        return built(**kwargs) if kwargs else built
    except DipError:
        raise
    except Exception as error:  # Hydra wraps the constructor's error: report the constructor's own
        cause = error.__cause__ or error
        raise DipError(f"invalid {what} settings: {cause}") from None


def prepare(cfg: DictConfig, clean=None, observation=None) -> tuple[Problem, DeepImagePrior]:
    """Everything that can fail on the user's input, before any file is written."""
    pl.seed_everything(cfg.seed, verbose=False)
    physics = _instantiate(cfg.task.physics, "task")
    data = cfg.data
    problem = build_problem(
        physics,
        path=clean if clean is not None else data.path,
        observation=observation if observation is not None else data.observation,
        default_image=data.default_image,
        size=data.size,
        mode=data.mode,
        seed=cfg.seed,
    )
    code = _instantiate(cfg.input, "input")
    code.prepare(problem.channels, *problem.solution_size)
    speed: Speed = _instantiate(cfg.speed, "speed")
    generator = _instantiate(cfg.arch, "arch", in_channels=code.channels, out_channels=problem.channels)
    generator = speed.prepare_generator(generator)
    module = DeepImagePrior(
        generator=generator,
        physics=problem.physics,
        observation=problem.observation,
        code=code,
        optimizer=speed.optimizer(_instantiate(cfg.optim, "optim")),
        output_size=problem.solution_size,
        ground_truth=problem.ground_truth,
        ema_weight=cfg.ema_weight,
        backtrack_db=cfg.backtrack_db,
        metrics_every=cfg.metrics_every,
    )
    return problem, module


def final_metrics(module: DeepImagePrior, problem: Problem) -> dict:
    """PSNR / SSIM of the final output and the EMA against the ground truth (null without one), and
    of the naive estimate from the observation (bicubic for super-resolution)."""
    restored, ema, truth = module.restored(), module.ema.clamp(0, 1), module.ground_truth
    fit = psnr(problem.physics.A(restored), module.observation)
    metrics = {"psnr": None, "psnr_ema": None, "ssim": None, "ssim_ema": None, "psnr_observation": None}
    if truth is not None:
        baseline = problem.physics.baseline(module.observation)
        metrics.update(
            psnr=psnr(restored, truth), psnr_ema=psnr(ema, truth), ssim=ssim(restored, truth),
            ssim_ema=ssim(ema, truth), psnr_observation=psnr(baseline, truth),
        )
    metrics["psnr_fit"] = fit
    return {key: None if value is None else round(float(value), 4) for key, value in metrics.items()}


def write_outputs(result: Result, output_dir: Path) -> None:
    """Images first, ``metrics.json`` last, each written atomically: a run directory with
    ``metrics.json`` holds a finished run."""
    save_image(result.observation[0], output_dir / "observation.png")
    save_image(result.restored[0], output_dir / "restored.png")
    save_image(result.restored_ema[0], output_dir / "restored_ema.png")
    text = json.dumps(result.metrics, indent=2, sort_keys=True) + "\n"
    write_atomically(output_dir / "metrics.json", lambda handle: handle.write(text.encode()))


def fit(cfg: DictConfig, module: DeepImagePrior, callbacks: list[pl.Callback] = ()) -> pl.Trainer:
    """Optimise ``module`` with the Trainer ``cfg`` describes (and ``callbacks``)."""
    logger = instantiate(cfg.logger) if cfg.logger and cfg.logger.get("_target_") else False
    callbacks = [MetricsProgressBar(refresh_rate=cfg.metrics_every), *callbacks, ImageLogger(cfg.image_log_every)]
    trainer: pl.Trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    loader = DataLoader(StepDataset(trainer.max_steps), batch_size=None)
    speed: Speed = _instantiate(cfg.speed, "speed")
    with warnings.catch_warnings(), speed.backends():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, train_dataloaders=loader)
    return trainer


def run(cfg: DictConfig, output_dir: Path | None, clean=None, observation=None) -> Result:
    """Restore one image as ``cfg`` says; write the outputs into ``output_dir`` unless it is None."""
    problem, module = prepare(cfg, clean, observation)
    timer = FitTimer()
    trainer = fit(cfg, module, [timer])
    logger = trainer.logger

    steps = trainer.global_step
    metrics = final_metrics(module, problem)
    metrics.update(
        steps=steps,
        seconds=round(timer.seconds, 3),
        steps_per_second=round(steps / max(timer.seconds, 1e-9), 3),
        device=str(module.device),
        task=cfg.task.name,
        arch=cfg.arch_name,
        seed=cfg.seed,
    )
    result = Result(
        restored=module.restored().cpu(),
        restored_ema=module.ema.clamp(0, 1).cpu(),
        observation=problem.observation,
        ground_truth=problem.ground_truth,
        metrics=metrics,
        output_dir=output_dir,
    )
    if isinstance(logger, WandbLogger):
        logger.experiment.summary.update({k: v for k, v in metrics.items() if v is not None})
        import wandb

        wandb.finish()
    if output_dir is not None:
        write_outputs(result, Path(output_dir))
    return result


def describe(result: Result) -> str:
    """The one-paragraph summary printed at the end of a run."""
    m = result.metrics
    lines = [f"{m['task']} with {m['arch']}: {m['steps']} steps in {m['seconds']:.1f} s "
             f"({m['steps_per_second']:.1f} steps/s on {m['device']})"]
    if m["psnr"] is not None:
        lines.append(f"PSNR observation {m['psnr_observation']:.2f} dB -> restored {m['psnr']:.2f} dB "
                     f"(EMA {m['psnr_ema']:.2f} dB), gain {m['psnr'] - m['psnr_observation']:+.2f} dB")
    else:
        lines.append(f"no ground truth: PSNR of the fit to the observation {m['psnr_fit']:.2f} dB")
    if result.output_dir is not None:
        lines.append(f"outputs in {result.output_dir}")
    return "\n".join(lines)



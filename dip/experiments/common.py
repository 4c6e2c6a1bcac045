"""What the experiments share: sub-run configs, recorders of a run's progress, plots and tables."""

from __future__ import annotations

import csv
import functools
import io
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from matplotlib.figure import Figure
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from dip.checkpoint import checked_resume
from dip.config_checks import check_settings, checked_config
from dip.earlier_runs import finished_metrics, saved_sub_run_config
from dip.errors import CheckpointLacksError, DipError, Interrupted, one_line
from dip.figures import figure_png
from dip.files import write_atomically
from dip.metrics import psnr
from dip.outputs import OUTPUTS_FILE, Result, write_outputs
from dip.pipeline import prepare
from dip.pipeline import run as restore
from dip.problem import problem_from_config
from dip.run_settings import made_images_settings
from dip.signals import signal_finished_first

log = logging.getLogger("dip")


def sub_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """The config of one sub-run: the command line's overrides followed by ``overrides``, composed as
    ``run.py`` would, with every interpolation resolved now (``${hydra:...}`` reads whichever Hydra
    config is current, and the experiment's own is restored afterwards)."""
    previous = HydraConfig.instance().cfg
    command_line = list(previous.hydra.overrides.task) if previous is not None else []
    try:
        cfg = checked_config([*command_line, *overrides], output_dir)
        with open_dict(cfg):
            cfg.pop("hydra")
        OmegaConf.resolve(cfg)
    finally:
        HydraConfig.instance().cfg = previous
    return cfg


@dataclass(frozen=True)
class SubRun:
    """One restoration of an experiment, in ``directory``: the experiment's config with ``overrides``,
    restoring ``observation`` when given (scored against ``clean`` when given), with extra Lightning
    ``callbacks``."""

    directory: Path
    overrides: Sequence[str] = ()
    observation: torch.Tensor | None = None
    clean: torch.Tensor | None = None
    callbacks: Sequence[pl.Callback] = ()


def restore_each(runs: Sequence[SubRun]) -> list[Result]:
    """Restore ``runs`` in order. Every sub-run's config is composed and checked before the first fit, so
    that a bad option, or a folder holding a run finished with other settings, costs no fit. A sub-run
    finished before with the same settings is reused (an experiment cut short continues where it
    stopped), its ``callbacks`` given what they recorded then (``_reusable``); each ``config.yaml`` is
    written once its fit has finished, beside its outputs. A signal that a sub-run finished first stops the others."""
    configs = [sub_config(run.overrides, run.directory) for run in runs]
    for cfg in configs:
        check_settings(cfg)
    reused = [_reusable(run, cfg) for run, cfg in zip(runs, configs)]
    # a checkpoint was made of the images the experiment made for it; what its recorders ask for may change,
    # within what the checkpoint recorded (LossRecorder, Snapshots)
    extra = [made_images_settings(run.observation, run.clean) for run in runs]
    for run, cfg, earlier, own in zip(runs, configs, reused, extra):
        if earlier is None:  # its input, network and packing too, built and let go: no fit before a later one fails
            prepare(cfg, problem_from_config(cfg, clean=run.clean, observation=run.observation))
            checked_resume(cfg, run.directory, own)
    results = []
    for run, cfg, earlier, own in zip(runs, configs, reused, extra):
        if earlier is not None:
            log.info(f"reusing the run finished in {run.directory}")
            results.append(earlier)
            continue
        problem = problem_from_config(cfg, clean=run.clean, observation=run.observation)
        results.append(restore(cfg, run.directory, problem, run.callbacks,
                               write=functools.partial(_write_sub_run, cfg=cfg, directory=run.directory,
                                                       callbacks=run.callbacks), extra_settings=own))
        if (signum := signal_finished_first()) is not None and len(results) < len(runs):
            raise Interrupted(signum)
    return results


REUSED_IMAGES = ("restored", "restored_ema", "observation", "ground_truth")  # what the runners read of a result


def _write_sub_run(result: Result, cfg: DictConfig, directory: Path, callbacks: Sequence[pl.Callback] = ()) -> None:
    """The sub-run's outputs, with its config, the images a later run reuses and what its ``callbacks``
    recorded, before the ``metrics.json`` that marks it finished (a fit refused or failed leaves no config
    behind)."""
    text = OmegaConf.to_yaml(cfg)
    images = {name: None if (image := getattr(result, name)) is None else image.cpu() for name in REUSED_IMAGES}
    images["recorded"] = [{"recording": callback.recording, "state": callback.state_dict()} for callback in callbacks]
    write_outputs(result, directory, {"config.yaml": lambda handle: handle.write(text.encode()),
                                      OUTPUTS_FILE: lambda handle: torch.save(images, handle)})


def _reusable(run: SubRun, cfg: DictConfig) -> Result | None:
    """The result of ``run`` finished before in its folder with ``cfg``'s settings (as ``run.py`` decides;
    ``DipError`` if with others), its recorders given what they recorded then; None to fit it: none
    finished there, or it was given another observation, or recorded other steps (or nothing)."""
    metrics = _finished_metrics(cfg, run.directory)
    if metrics is None or not (run.directory / OUTPUTS_FILE).is_file():
        return None
    saved = _finished_outputs(run.directory)
    if run.observation is not None:  # made by the experiment from settings of its own (fig. 2's noise level)
        earlier = saved["observation"]
        if earlier is None or not torch.equal(earlier.reshape(run.observation.shape), run.observation.float().cpu()):
            return None
    recorded = saved.get("recorded", [])
    if [entry["recording"] for entry in recorded] != [callback.recording for callback in run.callbacks]:
        return None
    for callback, entry in zip(run.callbacks, recorded, strict=True):
        callback.load_state_dict(entry["state"])
    return Result(**{name: saved[name] for name in REUSED_IMAGES}, metrics=metrics, output_dir=run.directory)


def _finished_metrics(cfg: DictConfig, directory: Path) -> dict | None:
    """The metrics of the run finished in ``directory`` with ``cfg``'s settings (as ``run.py`` decides), else
    None; ``DipError`` if with others, unless a checkpoint kept there continues to ``cfg``'s steps."""
    saved = saved_sub_run_config(directory)
    return finished_metrics(directory, None if saved is None else OmegaConf.create(saved), cfg)


def _finished_outputs(directory: Path) -> dict:
    try:
        return torch.load(directory / OUTPUTS_FILE)
    except Exception as error:  # torch.load raises whatever unpickling a damaged file raises
        raise DipError(f"cannot read the run finished in {directory} ({one_line(error, 200)}): delete its "
                       f"metrics.json to run it again") from None


def listed(cfg: DictConfig, key: str) -> list:
    """The list (or mapping) at ``key``, which must name at least one value: each makes a sub-run."""
    values = OmegaConf.select(cfg, key)
    if not isinstance(values, (ListConfig, DictConfig)) or len(values) == 0:
        raise DipError(f"{key} must list at least one value, got {values!r}")
    return values


class StepRecorder(pl.Callback):
    """Records something at some of a fit's steps (``record``), and its checkpointed state says the step it
    reached: a fit resumed from it refuses in one line (``CheckpointLacksError``) what it would have had to
    record at a step the checkpoint passed without recording it."""

    def __init__(self):
        self.last_step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.last_step = trainer.global_step
        self.record(trainer.global_step, pl_module, outputs)

    def record(self, step: int, pl_module, outputs) -> None:
        raise NotImplementedError

    def recorded(self) -> dict:
        """What it recorded so far, for a checkpoint."""
        raise NotImplementedError

    def load_recorded(self, recorded: dict, reached: int) -> None:
        """Continue from what a checkpoint at step ``reached`` recorded, or raise ``CheckpointLacksError``."""
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {**self.recorded(), "step": self.last_step}

    def load_state_dict(self, state_dict: dict) -> None:
        # a checkpoint from before "step" was kept: nothing checked; then a checkpoint written again before this
        # fit's first step is of the step it reached
        self.last_step = state_dict.get("step", 0)
        self.load_recorded(state_dict, self.last_step)


class LossRecorder(StepRecorder):
    """The training loss every ``every`` steps, kept on the device until the run ends (no host sync but
    at a checkpoint, which holds the curve so far: a resumed fit's curve starts at its first step)."""

    def __init__(self, every: int = 1):
        super().__init__()
        self.every = max(1, int(every))
        self.steps: list[int] = []
        self._earlier: list[float] = []  # recorded before the checkpoint this fit resumed
        self._losses: list[torch.Tensor] = []

    def record(self, step: int, pl_module, outputs) -> None:
        if step % self.every == 0:
            self.steps.append(step)
            self._losses.append(outputs["loss"].detach())

    @property
    def recording(self) -> dict:
        """What it records, for a finished sub-run's record to be reused only by a recorder of the same."""
        return {"loss_every": self.every}

    def losses(self) -> list[float]:
        return self._earlier + (torch.stack(self._losses).cpu().tolist() if self._losses else [])

    def recorded(self) -> dict:
        return {"steps": list(self.steps), "losses": self.losses()}

    def load_recorded(self, recorded: dict, reached: int) -> None:
        # the points on this run's grid (every ``every`` steps), also when the interrupted run's was finer
        if missing := sorted(set(range(self.every, reached + 1, self.every)) - set(recorded["steps"])):
            raise CheckpointLacksError(f"recorded no loss at step(s) {_listed(missing)}, where this run records one "
                                       f"every {self.every} step(s): record a multiple of the interval it recorded "
                                       f"at, or delete it to fit again")
        kept = [(step, loss) for step, loss in zip(recorded["steps"], recorded["losses"], strict=True)
                if step % self.every == 0]
        self.steps, self._earlier, self._losses = [step for step, _ in kept], [loss for _, loss in kept], []


class Snapshots(StepRecorder):
    """The output ``f(z)`` after each of ``steps`` steps (those the run reaches), also those taken before
    the checkpoint a fit resumed (its checkpoints hold them)."""

    def __init__(self, steps: Iterable[int]):
        super().__init__()
        self.steps = set(int(step) for step in steps)
        self.images: dict[int, torch.Tensor] = {}

    @property
    def recording(self) -> dict:
        """What it records, for a finished sub-run's record to be reused only by a recorder of the same."""
        return {"snapshot_steps": sorted(self.steps)}

    def record(self, step: int, pl_module, outputs) -> None:
        if step in self.steps:
            self.images[step] = pl_module.restored().detach().clone()

    def recorded(self) -> dict:
        return {"images": {step: image.cpu() for step, image in self.images.items()}}

    def load_recorded(self, recorded: dict, reached: int) -> None:
        # a snapshot asked for at a step the checkpoint has passed, and not taken then, could not be taken now
        if missing := sorted(step for step in self.steps if step <= reached and step not in recorded["images"]):
            raise CheckpointLacksError(f"(at step {reached}) holds no snapshot of step(s) {_listed(missing)}: ask for "
                                       f"those it took ({_listed(sorted(recorded['images']))}) and later ones, or "
                                       f"delete it to fit again")
        self.images = {step: image for step, image in recorded["images"].items() if step in self.steps}


def _listed(steps: list[int], shown: int = 6) -> str:
    return ", ".join(map(str, steps[:shown])) + (", ..." if len(steps) > shown else "") if steps else "none"


def psnr_or_none(image: torch.Tensor, reference: torch.Tensor | None) -> float | None:
    return None if reference is None else round(float(psnr(image.cpu(), reference.cpu())), 4)


def titled(name: str, value: float | None) -> str:
    """A grid title: the name and, when known, the PSNR."""
    return name if value is None else f"{name}\n{value:.2f} dB"


def _save_figure(figure: Figure, path: Path) -> None:
    data = figure_png(figure)
    write_atomically(path, lambda handle: handle.write(data))


def plot_curves(curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: Path, *, title: str,
                xlabel: str = "step", ylabel: str = "loss", logx: bool = True, logy: bool = False) -> None:
    """One line per curve (label -> (x, y)) in one plot, written as a PNG."""
    figure = Figure(figsize=(6, 4), dpi=120, layout="constrained")
    axes = figure.subplots()
    for label, (x, y) in curves.items():
        axes.plot(x, y, label=label)
    axes.set_xscale("log" if logx else "linear")
    axes.set_yscale("log" if logy else "linear")
    axes.set(title=title, xlabel=xlabel, ylabel=ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save_figure(figure, path)


def image_grid(rows: Sequence[Sequence[tuple[torch.Tensor | None, str]]], path: Path, *, title: str) -> None:
    """Images (``C x H x W`` or ``1 x C x H x W`` in [0, 1]) in rows, each with its title; None
    leaves a cell empty. Written as a PNG."""
    columns = max(len(row) for row in rows)
    figure = Figure(figsize=(2.4 * columns, 2.6 * len(rows)), dpi=120, layout="constrained")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for row, cells in zip(axes, rows):
        for ax in row:
            ax.axis("off")
        for ax, (image, label) in zip(row, cells):
            if image is None:
                continue
            image = image.detach().float().cpu().clamp(0, 1)
            image = image[0] if image.dim() == 4 else image
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_title(label, fontsize=9)
    figure.suptitle(title)
    _save_figure(figure, path)


def write_csv(rows: Sequence[dict], path: Path) -> None:
    """Rows of equal keys as CSV (empty cells for None), written atomically."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda handle: handle.write(text.getvalue().encode()))

"""What a restoration returns and writes: the ``Result``, its files, its one-paragraph summary.

Kept apart from :mod:`dip.pipeline` (and free of Lightning) so that the command line can clean up
after a failed run without importing the training stack.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import torch

from dip.errors import DipError, one_line
from dip.files import write_atomically
from dip.images import save_image

BEFORE_COLLAPSE_OUTPUT = "restored_ema_before_collapse.png"  # a fit that collapsed at its end: the EMA from before
METRICS_FILE = "metrics.json"  # a finished run's figures: written last, so it is what marks a run finished
OUTPUT_FILES = ("observation.png", "restored.png", "restored_ema.png", "bicubic.png", "bilinear.png",
                BEFORE_COLLAPSE_OUTPUT, METRICS_FILE)
CHECKPOINT_NAME = "checkpoint.ckpt"  # a run's training state, until it finishes (checkpoint.keep: after)
RESTART_OUTPUT = "restored_restart{}.png"  # with restarts=N, restart k's own output
OUTPUTS_FILE = "outputs.pt"  # a finished run's images at full precision, for what is computed from them later


@dataclass
class Result:
    """What a restoration returns: images as ``1 x C x H x W`` tensors and the final metrics.

    ``observation`` is the observation as a picture (the original image when the observation is a
    feature tensor); ``baseline`` the naive estimate when it differs from the observation (bicubic).
    A packed fit of N images returns ``N x C x H x W`` tensors and a list of N values for each
    per-image metric; ``image(k)`` is image ``k``'s own result.
    """

    restored: torch.Tensor
    restored_ema: torch.Tensor
    observation: torch.Tensor
    ground_truth: torch.Tensor | None
    metrics: dict = field(default_factory=dict)
    output_dir: Path | None = None
    baseline: torch.Tensor | None = None
    baseline_name: str | None = None
    alpha: torch.Tensor | None = None  # 1 x H x W: the input's alpha channel, copied into the outputs
    bits: int = 8  # bit depth of the written images (16 for a 16-bit input)
    restarts: torch.Tensor | None = None  # N x C x H x W: with restarts=N, each restart's own output
    restarts_ema: torch.Tensor | None = None  # N x C x H x W: with restarts=N, each restart's own EMA
    ema_before_collapse: torch.Tensor | None = None  # a fit that collapsed at its end: its EMA from before


    def image(self, index: int) -> Result:
        """Image ``index`` of a packed fit of several: its images and its value of each per-image metric."""
        def pick(images: torch.Tensor | None) -> torch.Tensor | None:
            return None if images is None else images[index:index + 1]

        metrics = {key: value[index] if isinstance(value, list) else value for key, value in self.metrics.items()}
        collapsed = metrics.get("ema_before_collapse_step") is not None
        return dataclasses.replace(self, restored=pick(self.restored), restored_ema=pick(self.restored_ema),
                                   observation=pick(self.observation), ground_truth=pick(self.ground_truth),
                                   baseline=pick(self.baseline), metrics=metrics,
                                   ema_before_collapse=pick(self.ema_before_collapse) if collapsed else None)


def save_averages(restored: list[torch.Tensor], restored_ema: list[torch.Tensor], folder: Path
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of independent runs' restorations (the paper's averaging, 31.00 dB in denoising), and of
    their EMAs, saved in ``folder`` as ``average.png`` and ``average_ema.png``."""
    averages = tuple(torch.stack(outputs).mean(0) for outputs in (restored, restored_ema))
    for average, name in zip(averages, ("average.png", "average_ema.png"), strict=True):
        save_image(average[0], folder / name)
    return averages


def write_outputs(result: Result, output_dir: Path,
                  files: dict[str, Callable[[BinaryIO], object]] | None = None) -> None:
    """Images and ``files`` (a name and the writer of its bytes: a benchmark's config) first, ``metrics.json``
    last, each written atomically: a run directory with ``metrics.json`` holds a finished run. ``DipError``
    naming the file when one cannot be written (a full disk, a folder in its place); those written before
    it are removed, and with them a ``metrics.json`` already there."""
    images = {"observation.png": result.observation[0], "restored.png": result.restored[0],
              "restored_ema.png": result.restored_ema[0]}
    if result.baseline_name is not None:
        images[f"{result.baseline_name}.png"] = result.baseline[0]
    if result.ema_before_collapse is not None:
        images[BEFORE_COLLAPSE_OUTPUT] = result.ema_before_collapse[0]
    for index, image in enumerate(result.restarts if result.restarts is not None else []):
        images[RESTART_OUTPUT.format(index)] = image
    written = []
    try:
        for name, image in images.items():
            save_image(image, output_dir / name, result.alpha, result.bits)
            written.append(output_dir / name)
        for name, write in (files or {}).items():
            write_atomically(output_dir / name, write)
            written.append(output_dir / name)
        write_json(result.metrics, output_dir / METRICS_FILE)
    except OSError as error:
        for path in written:
            path.unlink(missing_ok=True)
        if written:  # they replaced a finished run's (one continued), whose record no longer holds
            (output_dir / METRICS_FILE).unlink(missing_ok=True)
        raise write_error(error, output_dir) from None


def write_error(error: OSError, folder: Path) -> DipError:
    """The one line for a file that could not be written in ``folder`` (a full disk, a folder in its place)."""
    return DipError(f"cannot write {error.filename2 or error.filename or folder}: {error.strerror or one_line(error)}")


def write_json(data, path: Path) -> None:
    """``data`` as strict JSON, written atomically: a float that is not finite (a diverged or exact
    fit's PSNR) becomes null, where Python would write NaN or Infinity, which other readers refuse."""
    text = json.dumps(_finite_or_null(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    write_atomically(path, lambda handle: handle.write(text.encode()))


def _finite_or_null(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value


def decibels(value: float | None) -> str:
    """A PSNR as the summaries print it; null or not finite (a diverged or exact fit) said as such."""
    return f"{value:.2f} dB" if value is not None and math.isfinite(value) else "not finite"


def psnr_summary(metrics: dict) -> str:
    """A finished run's PSNR as its summaries say it: the restoration's (and its EMA's) against the ground
    truth, or without one, its fit to the observation."""
    if metrics.get("psnr") is not None:
        return f"PSNR {decibels(metrics['psnr'])} (EMA {decibels(metrics['psnr_ema'])})"
    return f"PSNR of the fit to the observation {decibels(metrics['psnr_fit'])}"


def describe(result: Result) -> str:
    """The one-paragraph summary printed at the end of a run."""
    m = result.metrics
    resumed = m.get("resumed_from_step")
    done = f"{m['steps']} steps" if not resumed else f"steps {resumed + 1}-{m['steps']} (resumed)"
    lines = [f"{m['task']} with {m['arch']}: {done} in {m['seconds']:.1f} s "
             f"({m['steps_per_second']:.1f} steps/s on {m['device']})"]
    if m["psnr"] is not None and m["psnr_observation"] is not None:
        lines.append(f"PSNR observation {decibels(m['psnr_observation'])} -> restored {decibels(m['psnr'])} "
                     f"(EMA {decibels(m['psnr_ema'])}), gain {m['psnr'] - m['psnr_observation']:+.2f} dB")
    elif m["psnr"] is not None:
        lines.append(psnr_summary(m))
    else:
        lines.append(f"no ground truth: {psnr_summary(m)}")
    chosen = m.get("early_stop_step")  # packed restarts: one each, null where one chose none (its last step)
    if isinstance(chosen, list) and any(step is not None for step in chosen):
        steps = ", ".join("-" if step is None else str(step) for step in chosen)
        lines.append(f"early stopping chose steps {steps} (one per restart)")
    elif chosen is not None and not isinstance(chosen, list):
        gap = m.get("early_stop_gap_db")
        gap = f", {gap:.2f} dB below the run's best ({m['psnr_max']:.2f} dB)" if gap is not None else ""
        lines.append(f"early stopping chose step {chosen}{gap}")
    if result.ema_before_collapse is not None:
        quality = f" (PSNR {m['psnr_ema_before_collapse']:.2f} dB)" if m.get("psnr_ema_before_collapse") else ""
        lines.append(f"the fit collapsed at its end, its data term {m['collapse_drop_db']} dB above its best: "
                     f"{BEFORE_COLLAPSE_OUTPUT} is its EMA from step {m['ema_before_collapse_step']}{quality}")
    if m.get("stop_reason"):
        lines.append(f"stopped: {m['stop_reason']}")
    if result.output_dir is not None:
        lines.append(f"outputs in {result.output_dir}")
    return "\n".join(lines)


def offline_wandb_line(output_dir: Path) -> str | None:
    """How to upload the offline W&B runs in ``output_dir`` (a run resumed writes one more), or None."""
    runs = sorted((output_dir / "wandb").glob("offline-run-*"))
    if not runs:
        return None
    folder = shlex.quote(str(output_dir / "wandb"))  # the shell expands the * of what is pasted
    return f"W&B: {len(runs)} offline run(s); upload with wandb sync {folder}/offline-run-*"

"""The paper's figures, each made of several restorations: ``python run.py +experiment=NAME``.

An experiment config (``conf/experiment/NAME.yaml``) names its runner in ``experiment.runner``: a
function ``run(cfg, output_dir) -> str`` that restores with :func:`dip.pipeline.run` into
sub-directories of ``output_dir``, writes its plot or image grid (PNG) and the numbers behind it
(CSV / JSON) there, and returns a one-paragraph summary.
"""

from __future__ import annotations

from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig


def run_experiment(cfg: DictConfig, output_dir: str | Path) -> str:
    """Run the experiment ``cfg.experiment.runner`` names; returns its summary."""
    runner = get_method(cfg.experiment.runner)
    return runner(cfg, Path(output_dir))

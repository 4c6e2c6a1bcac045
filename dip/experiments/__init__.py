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

from dip.errors import DipError, one_line
from dip.outputs import write_error


def run_experiment(cfg: DictConfig, output_dir: str | Path) -> str:
    """Run the experiment ``cfg.experiment.runner`` names; returns its summary."""
    try:
        runner = get_method(cfg.experiment.runner)
    except Exception as error:  # Hydra's own, wrapping the import's
        raise DipError(f"experiment.runner={cfg.experiment.runner} names no function ({one_line(error, 200)})") \
            from None
    try:
        return runner(cfg, Path(output_dir))
    except OSError as error:  # a figure or table that cannot be written; the sub-runs finished are kept
        if error.filename is None and error.filename2 is None:  # not a file's (a logger's connection, say)
            raise
        raise write_error(error, Path(output_dir)) from None

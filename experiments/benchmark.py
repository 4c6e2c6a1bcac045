"""Reproduce a table of the paper: ``python experiments/benchmark.py benchmark=set5_x4``.

Restores every image of the benchmark's dataset (under ``$DIP_DATA``) with the paper's settings and
writes ``table.md`` and ``table.csv`` into the run directory, with one sub-run per image under
``images/``. Any option of ``run.py`` can be overridden too (``trainer.max_steps=2 data.size=64``).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's dip, wherever it is installed

from dip.signals import exit_interrupted, interrupt_on_stop_signals  # noqa: E402  (light: torch and Hydra load below)

if __name__ == "__main__":  # a stop while the libraries load ends the command as Ctrl-C does
    interrupt_on_stop_signals()
try:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig

    from dip.benchmark import IncompleteTableError, run_benchmark
    from dip.cli import EARLIER_RUNS, launch
    from dip.config import CONF_DIR
    from dip.config_checks import check_resolvable
    from dip.errors import DipError, RunInterruptedError, fail, interruption_signal, pasted_override
except KeyboardInterrupt as interruption:  # nothing has started
    exit_interrupted(interruption)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="benchmark")
def benchmark(cfg: DictConfig) -> None:
    EARLIER_RUNS.job_started = True
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        EARLIER_RUNS.refuse_other_kind(run_dir, cfg)
        check_resolvable(cfg)  # in the job's own environment
        run_benchmark(cfg, run_dir)
    except DipError as error:
        if not isinstance(error, IncompleteTableError):  # once fits ran, the log (and any table) is this run's
            EARLIER_RUNS.discard(run_dir)
        fail(str(error))
    except (RunInterruptedError, KeyboardInterrupt) as interruption:
        signum = interruption_signal(interruption)
        print(f"interrupted by {signal.Signals(signum).name}: the finished images and the unfinished ones' "
              f"checkpoints are in {run_dir / 'images'} (those of fits of several images in {run_dir / 'packs'}); "
              f"run the same command again with {pasted_override('hydra.run.dir', run_dir)} to continue",
              file=sys.stderr)
        raise SystemExit(128 + signum) from None
    print((run_dir / "table.md").read_text(), end="")
    print(f"tables in {run_dir}")


if __name__ == "__main__":
    launch(benchmark, config_name="benchmark")

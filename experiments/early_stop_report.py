"""What early stopping kept, against the best and the last EMA: ``python experiments/early_stop_report.py RUN_DIR``.

For a benchmark run with ``early_stop=...`` (each image's ``RUN_DIR/images/<stem>/metrics.json``, or
with ``benchmark.runs=N`` each run's ``images/<stem>/seed<S>/metrics.json``), prints a markdown table,
a row per restoration and a mean row: the step kept, the PSNR of the EMA kept,
that of the EMA at the last step (``early_stop.stop=false`` runs on to ``trainer.max_steps``), and
the best EMA of the logged curve with its step (an oracle that knows the ground truth, read every
``metrics_every`` steps, over the steps run: of a run that stopped, only up to its stop). The curve
is the CSV logger's (``images/<stem>/csv/metrics.csv``), or ``--curves DIR``'s ``<stem>.csv`` (the
device scripts' ``curves/``; a run's ``<stem>/seed<S>.csv``). PSNRs are the pipeline's: over all
channels, no border shaved (the denoising benchmark's protocol). An image whose ``metrics.json`` or
curve cannot be read is listed under the table with its fault, and left out of the mean.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dip.benchmark import table_cell  # noqa: E402
from dip.errors import DipError, fail, one_line  # noqa: E402
from experiments.cli_args import ArgumentParser  # noqa: E402
from experiments.collapse_report import first_fault, read_curves  # noqa: E402
from experiments.compare import is_number  # noqa: E402

COLUMNS = ("image", "stop step", "EMA kept", "EMA at the end", "kept - end", "best EMA", "best step", "best - kept")


def read_metrics(path: Path) -> dict:
    """An image's ``metrics.json``; a ``DipError`` naming it and its fault when it cannot be read or lacks
    the figures a row is made of."""
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as error:  # ValueError: not UTF-8, not JSON
        raise DipError(f"{path}: {one_line(error, 200)}") from None
    if not isinstance(metrics, dict) or not is_number(metrics.get("psnr_ema")):
        raise DipError(f"{path}: no psnr_ema figure in it")
    if metrics.get("psnr_ema_final") is not None and not is_number(metrics["psnr_ema_final"]):
        raise DipError(f"{path}: psnr_ema_final is not a number")
    return metrics


def image_row(images: Path, run_dir: Path, curves_dir: Path | None) -> dict:
    """The row of the restoration in ``run_dir``: ``images/<stem>``, or ``images/<stem>/seed<S>``."""
    metrics = read_metrics(run_dir / "metrics.json")
    name = run_dir.relative_to(images)
    curve_file = curves_dir / f"{name}.csv" if curves_dir else run_dir / "csv" / "metrics.csv"
    curve = read_curves(curve_file).get("psnr_ema", []) if curve_file.is_file() else []
    # floats, which the mean row averages: a hand-written "30" reads as an int
    kept, end = float(metrics["psnr_ema"]), metrics.get("psnr_ema_final")
    end = None if end is None else float(end)
    best_step, best = max(curve, key=lambda point: point[1]) if curve else (None, None)
    image = str(metrics.get("image", name.parts[0])) + "".join(f" {part}" for part in name.parts[1:])
    return {"image": image, "stop step": metrics.get("early_stop_step"),
            "EMA kept": kept, "EMA at the end": end, "kept - end": None if end is None else kept - end,
            "best EMA": best, "best step": best_step, "best - kept": None if best is None else best - kept}


def check_folder(path: Path) -> None:
    if not path.is_dir():
        raise DipError(f"{path}: {'not a folder' if path.exists() else 'no such folder'}")


def report(run_dir: Path, curves_dir: Path | None = None) -> str:
    """The report's markdown; a ``DipError`` when there is nothing to report (no readable image)."""
    for folder in filter(None, (run_dir, curves_dir)):
        check_folder(folder)
    images = run_dir / "images"
    restorations = sorted(path.parent for pattern in ("*/metrics.json", "*/seed*/metrics.json")
                          for path in images.glob(pattern))
    if not restorations:
        raise DipError(f"no finished images (images/*/metrics.json) in {run_dir}")
    rows, unreadable = [], []
    for restoration in restorations:
        try:
            rows.append(image_row(images, restoration, curves_dir))
        except DipError as error:
            unreadable.append(str(error))
    if not rows:
        raise DipError(first_fault(unreadable))
    mean = {"image": "**mean**"}
    for column in COLUMNS[2:]:
        values = [row[column] for row in rows]
        if column != "best step" and all(isinstance(value, float) for value in values):
            mean[column] = statistics.fmean(values)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * (len(COLUMNS) - 1) + "|"]
    for row in [*rows, mean]:
        lines.append("| " + " | ".join(table_cell(row.get(column)) for column in COLUMNS) + " |")
    if unreadable:
        lines += ["", f"{len(unreadable)} image(s) left out of the table and the mean, unreadable:",
                  *(f"- {fault}" for fault in unreadable)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a benchmark run directory (holding images/<stem>/metrics.json)")
    parser.add_argument("--curves", type=Path, help="a folder of <stem>.csv curves, in place of each image's csv/")
    args = parser.parse_args(argv)
    try:
        text = report(args.run_dir, args.curves)
    except DipError as error:
        fail(str(error))
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What early stopping kept, against the best and the last EMA: ``python experiments/early_stop_report.py RUN_DIR``.

For a benchmark run with ``early_stop=...`` (each image's ``RUN_DIR/images/<stem>/metrics.json``),
prints a markdown table, a row per image and a mean row: the step kept, the PSNR of the EMA kept,
that of the EMA at the last step (``early_stop.stop=false`` runs on to ``trainer.max_steps``), and
the best EMA of the logged curve with its step (an oracle that knows the ground truth, read every
``metrics_every`` steps, over the steps run: of a run that stopped, only up to its stop). The curve
is the CSV logger's (``images/<stem>/csv/metrics.csv``), or ``--curves DIR``'s ``<stem>.csv`` (the
device scripts' ``curves/``). PSNRs are the pipeline's: over all channels, no border shaved (the
denoising benchmark's protocol).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dip.benchmark import table_cell  # noqa: E402
from experiments.compare import read_csv_curves  # noqa: E402

COLUMNS = ("image", "stop step", "EMA kept", "EMA at the end", "kept - end", "best EMA", "best step", "best - kept")


def image_row(image_dir: Path, curves_dir: Path | None) -> dict:
    metrics = json.loads((image_dir / "metrics.json").read_text())
    curve_file = curves_dir / f"{image_dir.name}.csv" if curves_dir else image_dir / "csv" / "metrics.csv"
    curve = read_csv_curves(curve_file).get("psnr_ema", []) if curve_file.is_file() else []
    kept, end = metrics["psnr_ema"], metrics.get("psnr_ema_final")
    best_step, best = max(curve, key=lambda point: point[1]) if curve else (None, None)
    return {"image": metrics.get("image", image_dir.name), "stop step": metrics.get("early_stop_step"),
            "EMA kept": kept, "EMA at the end": end, "kept - end": None if end is None else kept - end,
            "best EMA": best, "best step": best_step, "best - kept": None if best is None else best - kept}


def report(run_dir: Path, curves_dir: Path | None = None) -> str:
    image_dirs = sorted(path.parent for path in (run_dir / "images").glob("*/metrics.json"))
    if not image_dirs:
        raise SystemExit(f"error: no finished images (images/*/metrics.json) in {run_dir}")
    rows = [image_row(image_dir, curves_dir) for image_dir in image_dirs]
    mean = {"image": "**mean**"}
    for column in COLUMNS[2:]:
        values = [row[column] for row in rows]
        if column != "best step" and all(isinstance(value, float) for value in values):
            mean[column] = statistics.fmean(values)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * (len(COLUMNS) - 1) + "|"]
    for row in [*rows, mean]:
        lines.append("| " + " | ".join(table_cell(row.get(column)) for column in COLUMNS) + " |")
    return "\n".join(lines) + "\n"



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a benchmark run directory (holding images/<stem>/metrics.json)")
    parser.add_argument("--curves", type=Path, help="a folder of <stem>.csv curves, in place of each image's csv/")
    args = parser.parse_args()
    print(report(args.run_dir, args.curves), end="")


if __name__ == "__main__":
    main()

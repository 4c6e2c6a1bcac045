"""What the collapse guard would have kept, read off logged curves: ``python experiments/collapse_report.py PATH...``.

Each PATH is a curve (a CSV with ``step``, ``psnr_ema`` and ``psnr_fit_ema`` columns: the CSV logger's
``metrics.csv``, a benchmark's ``curves/<image>.csv``) or a folder searched for them. The guard's rule
(``dip.callbacks.CollapseGuard``), on the logged checks: a fit collapsed when the EMA's data-term PSNR at
its last check is more than ``--drop-db`` (backtracking's 5 dB) under its best; the EMA it keeps is that
of the best check (the later of equal ones). Prints a markdown row per curve: the EMA's PSNR at the end,
the drop, and for a collapse the step and PSNR of the EMA kept. The curves hold the combined output's
figures (restarts averaged), which the guard checks per restart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dip.benchmark import table_cell  # noqa: E402
from experiments.compare import read_csv_curves  # noqa: E402

COLUMNS = ("curve", "last step", "EMA at the end", "fit drop dB", "kept step", "EMA kept", "kept - end")


def curve_row(path: Path, drop_db: float) -> dict | None:
    curves = read_csv_curves(path)
    fit, ema = dict(curves.get("psnr_fit_ema", [])), dict(curves.get("psnr_ema", []))
    if not fit or not ema:
        return None
    last = max(fit)
    best = max(fit, key=lambda step: (fit[step], step))  # the later of equal ones
    drop = fit[best] - fit[last]
    kept = best if drop > drop_db else None
    return {"curve": str(path), "last step": last, "EMA at the end": ema[last], "fit drop dB": drop,
            "kept step": kept, "EMA kept": None if kept is None else ema[kept],
            "kept - end": None if kept is None else ema[kept] - ema[last]}


def curve_files(paths: list[Path]) -> list[Path]:
    return [file for path in paths for file in (sorted(path.rglob("*.csv")) if path.is_dir() else [path])]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--drop-db", type=float, default=5.0)
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        print(f"error: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = [row for file in curve_files(args.paths) if (row := curve_row(file, args.drop_db))]
    if not rows:
        print(f"error: no curve with psnr_ema and psnr_fit_ema columns under {', '.join(map(str, args.paths))}",
              file=sys.stderr)
        return 2
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" if column == "curve" else "---:" for column in COLUMNS) + "|")
    for row in rows:
        print("| " + " | ".join(table_cell(row[column]) for column in COLUMNS) + " |")
    collapsed = sum(row["kept step"] is not None for row in rows)
    print(f"\n{collapsed} of {len(rows)} curves collapsed (EMA's fit more than {args.drop_db} dB under its best)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

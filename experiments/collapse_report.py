"""What the collapse guard would have kept, read off logged curves: ``python experiments/collapse_report.py PATH...``.

Each PATH is a curve (a CSV with ``step``, ``psnr_ema`` and ``psnr_fit_ema`` columns: the CSV logger's
``metrics.csv``, a benchmark's ``curves/<image>.csv``) or a folder searched for them. The guard's rule
(``dip.callbacks.CollapseGuard``), on the logged checks: a fit collapsed when the EMA's data-term PSNR at
its last check is more than ``--drop-db`` (backtracking's 5 dB) under its best; the EMA it keeps is that
of the best check (the later of equal ones). Prints a markdown row per curve: the EMA's PSNR at the end,
the drop, and for a collapse the step and PSNR of the EMA kept. The curves hold the combined output's
figures (restarts averaged), which the guard checks per restart. A file it cannot read (damaged, not a
CSV) is listed under the table with its fault, and the others are still reported.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dip.benchmark import table_cell  # noqa: E402
from dip.errors import DipError, fail, one_line  # noqa: E402
from experiments.cli_args import ArgumentParser, positive_number  # noqa: E402
from experiments.compare import read_csv_curves  # noqa: E402

COLUMNS = ("curve", "last step", "EMA at the end", "fit drop dB", "kept step", "EMA kept", "kept - end")


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """``compare.read_csv_curves``, with a ``DipError`` naming the file and its fault when it cannot be
    read: missing, a folder, or text that is no curve."""
    try:
        return read_csv_curves(path)
    except OSError as error:
        raise DipError(f"{path}: {error.strerror or one_line(error, 200)}") from None
    except ValueError as error:  # it names the file
        raise DipError(one_line(error, 300)) from None


def curve_row(path: Path, drop_db: float) -> dict | None:
    """The report's row for the curve in ``path``; None when it has no EMA curves (another CSV)."""
    curves = read_curves(path)
    fit, ema = dict(curves.get("psnr_fit_ema", [])), dict(curves.get("psnr_ema", []))
    if not fit or not ema:
        return None
    last = max(fit)
    best = max(fit, key=lambda step: (fit[step], step))  # the later of equal ones
    drop = fit[best] - fit[last]
    kept = best if drop > drop_db else None
    if gap := [step for step in (last, kept) if step is not None and step not in ema]:
        raise DipError(f"{path}: no psnr_ema at step {gap[0]}, where psnr_fit_ema has one")
    return {"curve": str(path), "last step": last, "EMA at the end": ema[last], "fit drop dB": drop,
            "kept step": kept, "EMA kept": None if kept is None else ema[kept],
            "kept - end": None if kept is None else ema[kept] - ema[last]}


def curve_files(paths: list[Path]) -> list[Path]:
    return [file for path in paths for file in (sorted(path.rglob("*.csv")) if path.is_dir() else [path])]


def read_rows(files: list[Path], drop_db: float) -> tuple[list[dict], list[str]]:
    """The rows of the files that hold EMA curves, and ``file: fault`` for each one that cannot be read."""
    rows, unreadable = [], []
    for file in files:
        try:
            if row := curve_row(file, drop_db):
                rows.append(row)
        except DipError as error:
            unreadable.append(str(error))
    return rows, unreadable


def first_fault(unreadable: list[str]) -> str:
    """The first of the faults, which is all of them when one file was read, and how many more there are."""
    return unreadable[0] + (f" (and {len(unreadable) - 1} more unreadable)" if len(unreadable) > 1 else "")


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--drop-db", type=positive_number, default=5.0,
                        help="a collapse: the fit's EMA more than this many dB under its best (default: 5)")
    args = parser.parse_args(argv)
    missing = [str(path) for path in args.paths if not path.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    rows, unreadable = read_rows(curve_files(args.paths), args.drop_db)
    if not rows:
        problem = (first_fault(unreadable) if unreadable else
                   f"no curve with psnr_ema and psnr_fit_ema columns under {', '.join(map(str, args.paths))}")
        fail(problem)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "|".join("---" if column == "curve" else "---:" for column in COLUMNS) + "|")
    for row in rows:
        print("| " + " | ".join(table_cell(row[column]) for column in COLUMNS) + " |")
    collapsed = sum(row["kept step"] is not None for row in rows)
    print(f"\n{collapsed} of {len(rows)} curves collapsed (EMA's fit more than {args.drop_db} dB under its best)")
    if unreadable:
        print(f"\n{len(unreadable)} file(s) left out, unreadable:")
        print("\n".join(f"- {fault}" for fault in unreadable))
    return 0


if __name__ == "__main__":
    sys.exit(main())

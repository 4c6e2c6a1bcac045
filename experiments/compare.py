"""Compare the runs of a sweep in a static dashboard: ``python experiments/compare.py SWEEP_DIR``.

Reads what each run wrote (``metrics.json``, ``.hydra/`` or an experiment's sub-run's ``config.yaml``,
the PSNR curve from the CSV logger's ``csv/metrics.csv`` or else the W&B run files, one per start of a
resumed run, ``restored.png``), wherever it ran, and writes into SWEEP_DIR (or ``--out``):

- ``psnr_curves.png``: PSNR against the optimisation step per group (mean line, min-max band over
  the group's images and seeds);
- ``image_grid.png``: each image's restorations side by side, the best one per image framed;
- ``dashboard.html``: both figures, a table per group (final and best PSNR, steps/s, peak memory)
  and a table of every run (a folder it cannot read is a row saying why), and the jobs that failed
  (``failed_jobs.txt``). It opens from disk: no server, no network, images by relative path.

Groups are architectures unless ``--by KEY`` names another setting (``--by optim.lr``).
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from matplotlib.figure import Figure
from omegaconf import Container, OmegaConf
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dip.config import dotted, image_name, register_resolvers  # noqa: E402
from dip.errors import DipError, fail, invalid_yaml, one_line  # noqa: E402
from dip.figures import figure_png  # noqa: E402
from dip.sweeps import FAILED_JOBS, failed_job_folders, failed_jobs  # noqa: E402
from dip.wandb_files import offline_history  # noqa: E402
from experiments.cli_args import ArgumentParser  # noqa: E402

STEP_KEYS = ("step", "trainer/global_step")


@dataclass
class Run:
    """One run folder of the sweep."""

    path: Path
    name: str  # the folder, relative to the sweep
    overrides: list[str]
    config: dict  # flat, as saved in .hydra/config.yaml (interpolations unresolved) or a sub-run's config.yaml
    choices: dict  # the config-group options Hydra picked (arch, task, ...); a sub-run's: its arch
    metrics: dict | None  # metrics.json; None while unfinished
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    curve_source: str = "none"
    unreadable: str | None = None  # why the folder's files could not be read (then metrics is None)
    image_label: str | None = None  # the image's row, where its file's stem alone is ambiguous (label_images)

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    @property
    def image(self) -> str:
        if self.image_label is not None:
            return self.image_label
        data = {key: self.config.get(f"data.{key}") for key in ("path", "observation", "default_image")}
        return image_name(data["path"], data["observation"], data["default_image"] or "image")

    @property
    def observed(self) -> dict:
        """The settings that make the observation: runs alike in these restore the same degraded image."""
        return {key: value for key, value in self.config.items()
                if key.startswith(("data.", "task.", "mask.")) or key == "observation_seed"}

    def _sources(self) -> tuple[dict, ...]:
        """Where a name is looked up, in order: metrics.json, the config, Hydra's group choices."""
        return self.metrics or {}, self.config, self.choices

    def has(self, key: str) -> bool:
        return key == "image" or any(key in source for source in self._sources())

    def value(self, key: str):
        """A setting or result by name: metrics.json, then the config, then Hydra's group choices."""
        if key == "image":
            return self.image
        return next((source[key] for source in self._sources() if key in source), None)


def read_yaml(path: Path):
    """The YAML in ``path`` (None when missing); ``ValueError`` naming the file when it is not YAML."""
    try:
        return yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError as error:
        raise ValueError(invalid_yaml(path, error)) from None


def kind(value) -> str:
    """What a parsed YAML or JSON value is, in words."""
    names = {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def read_mapping(path: Path) -> dict:
    """A YAML file that holds a mapping (``{}`` when the file is missing or empty); ``ValueError``
    naming the file when it holds something else."""
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a {kind(data)}, not a mapping")
    return data


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# metrics.json's fields the page uses: numbers it needs, numbers and texts it shows when present
REQUIRED_NUMBERS = ("psnr_fit", "steps")
OPTIONAL_NUMBERS = ("psnr", "psnr_ema", "steps_per_second", "peak_mem_mb", "memory_estimate_mb")
OPTIONAL_TEXTS = ("device", "peak_mem_source")


def check_metrics(metrics, path: Path) -> dict:
    """``metrics`` (the JSON in ``path``) when it holds the fields the page uses, of the types it uses
    them as; else ``ValueError`` naming the file and the first field at fault. A PSNR that is not
    finite (a diverged or exact fit) is null; older runs wrote NaN or Infinity there, read as null."""
    if not isinstance(metrics, dict):
        raise ValueError(f"{path}: holds a {kind(metrics)}, not an object of metrics")
    for key in (*REQUIRED_NUMBERS, *OPTIONAL_NUMBERS):
        value = metrics.get(key)
        if isinstance(value, float) and not math.isfinite(value):
            metrics[key] = None
        elif value is not None and not is_number(value):
            raise ValueError(f"{path}: {key} is {json.dumps(value)[:40]}, not a finite number")
    for key in REQUIRED_NUMBERS:
        if key not in metrics or (key == "steps" and metrics[key] is None):
            raise ValueError(f"{path}: no {key}")
    for key in OPTIONAL_TEXTS:
        if metrics.get(key) is not None and not isinstance(metrics[key], str):
            raise ValueError(f"{path}: {key} is {json.dumps(metrics[key])[:40]}, not a string")
    return metrics


def read_csv_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Lightning's CSVLogger file: a ``step`` column and one column per metric, blanks elsewhere;
    ``ValueError`` naming ``path`` when its text is no such file (not UTF-8, a cell that is no number)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with path.open(newline="") as handle:
        try:
            for row in csv.DictReader(handle):
                if None in row:  # DictReader keys the cells beyond the header None
                    raise ValueError("a row has more cells than the header")
                add_row(curves, row)
        except (ValueError, OverflowError, csv.Error) as error:  # OverflowError: an infinite step
            raise ValueError(f"{path}: {one_line(error, 200)}") from None
    return latest_per_step(curves)


def latest_per_step(curves: dict[str, list[tuple[int, float]]]) -> dict[str, list[tuple[int, float]]]:
    """Each curve in step order with one value per step, the last one logged. A resumed run logs the
    steps between its last checkpoint and the interruption again, and its final result continues from
    the second pass."""
    return {key: sorted(dict(points).items()) for key, points in curves.items()}


def add_row(curves: dict, row: dict) -> None:
    step = next((row[key] for key in STEP_KEYS if row.get(key) not in (None, "")), None)
    if step is None:
        return
    for key, value in row.items():
        if key.startswith("psnr") and value not in (None, ""):
            # Lightning logs the step count before the step; the value is that of step count + 1
            curves.setdefault(key, []).append((int(float(step)) + 1, float(value)))


def read_curves(run_dir: Path) -> tuple[dict, str]:
    csv_file = run_dir / "csv" / "metrics.csv"
    if csv_file.is_file():
        return read_csv_curves(csv_file), "csv"
    # One W&B run per start of the run (a resumed run starts another): joined in the order they
    # started, which their folders' names hold (``[offline-]run-<date>_<time>-<id>``).
    run_files = sorted(run_dir.glob("wandb/*run-*/run-*.wandb"), key=lambda path: path.parent.name.split("-")[-2])
    if not run_files:
        return {}, "none"
    curves: dict = {}
    for run_file in run_files:
        for row in offline_history(run_file):
            add_row(curves, row)
    return latest_per_step(curves), "wandb"


def find_runs(sweep_dir: Path) -> list[Run]:
    """Every run folder under ``sweep_dir``: Hydra's runs, and an experiment's sub-runs (its finished fits,
    each with the ``config.yaml`` it was composed with beside its ``metrics.json``, and no ``.hydra/``) in
    place of the experiment's own folder, which holds no result of its own. A folder whose files cannot be
    read (a damaged ``metrics.json``, say) is listed as unreadable rather than stopping the dashboard."""
    recorded = {path.parent.parent for path in sweep_dir.glob("**/.hydra/config.yaml")}
    sub_runs = {path.parent for path in sweep_dir.glob("**/metrics.json")
                if (path.parent / "config.yaml").is_file() and path.parent not in recorded}
    experiments = {run_dir for run_dir in recorded if not (run_dir / "metrics.json").is_file()
                   and any(sub_run.is_relative_to(run_dir) for sub_run in sub_runs)}
    runs = []
    for run_dir in sorted((recorded - experiments) | sub_runs):
        name = str(run_dir.relative_to(sweep_dir))
        try:
            runs.append(read_run(run_dir, name))
        except (OSError, ValueError, yaml.YAMLError, csv.Error) as error:
            runs.append(Run(path=run_dir, name=name, overrides=[], config={}, choices={}, metrics=None,
                            unreadable=one_line(error, 200)))
    runs.sort(key=lambda run: [int(part) if part.isdigit() else part for part in Path(run.name).parts])
    return runs


def read_run(run_dir: Path, name: str) -> Run:
    """The run in ``run_dir``; ``ValueError`` (or the reader's own error) naming a file it cannot read."""
    metrics_file = run_dir / "metrics.json"
    try:
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    except ValueError as error:
        raise ValueError(f"{metrics_file}: {error}") from None
    if metrics is not None:
        check_metrics(metrics, metrics_file)
    hydra_file, overrides_file = run_dir / ".hydra" / "hydra.yaml", run_dir / ".hydra" / "overrides.yaml"
    choices = read_mapping(hydra_file)
    for key in ("hydra", "runtime", "choices"):
        choices = choices.get(key) or {}
        if not isinstance(choices, dict):
            raise ValueError(f"{hydra_file}: its {key} is a {kind(choices)}, not a mapping")
    overrides = read_yaml(overrides_file) or []
    if not isinstance(overrides, list):
        raise ValueError(f"{overrides_file}: holds a {kind(overrides)}, not a list of overrides")
    if (run_dir / ".hydra" / "config.yaml").is_file():
        settings = as_the_job_read_it(read_mapping(run_dir / ".hydra" / "config.yaml"), metrics)
    else:  # an experiment's sub-run: the config it was composed with (resolved), no overrides or choices of its own
        settings = dotted(read_mapping(run_dir / "config.yaml"))
        if isinstance(settings.get("arch_name"), str):
            choices = {"arch": settings["arch_name"]}
    run = Run(
        path=run_dir,
        name=name,
        overrides=[str(override) for override in overrides],
        config=settings,
        choices=choices,
        metrics=metrics,
    )
    run.curves, run.curve_source = read_curves(run_dir)
    return run


def as_the_job_read_it(config: dict, metrics: dict | None) -> dict:
    """Hydra's record of a job's config, kept as composed (``task.name: sr_x${task.physics.factor}``), as dotted
    settings with their interpolations resolved; ``profile=auto`` as the job chose it, by the device its
    ``metrics`` name (full on a GPU). A value that reads what only the job knew stays as written: its environment
    (``${oc.env:DIP_DATA}``), Hydra's (``${sweep_name:...}``, ``${hydra:job.name}``), an unfinished job's profile."""
    settings = dotted(config)
    register_resolvers()
    try:
        node = OmegaConf.create(config)
    except Exception:  # noqa: BLE001 (OmegaConf's errors on what YAML allows and it does not: shown as written)
        return settings
    if node.get("profile") == "auto":
        device = (metrics or {}).get("device")
        node.profile = None if device is None else "full" if str(device).startswith("cuda") else "quick"
    known = _known_here(settings)
    for key, written in settings.items():
        if key not in known:
            continue
        try:
            value = OmegaConf.select(node, key, throw_on_resolution_failure=True)
            settings[key] = OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value
        except Exception:  # noqa: BLE001 (the profile's own error, unknown for an unfinished job)
            settings[key] = written
    return settings


# a resolver call: ${oc.env:...}, ${sweep_name:...}; those that read only the config are known here too
RESOLVER_CALL = re.compile(r"\$\{\s*(?!(?:profile|image_name)\s*:)[^${}:]*:")
REFERENCE = re.compile(r"\$\{\s*([^${}:\s]+)\s*\}")  # ${task.physics.factor}, ${data[root]}, ${.beta}


def _known_here(settings: dict) -> set[str]:
    """The dotted ``settings`` whose interpolations resolve here as they did in the job: none calls a resolver
    that reads more than the config, and each setting they refer to is known here too (one outside the record,
    ``hydra.*``, is not)."""
    known: dict[str, bool] = {}

    def resolves(key: str) -> bool:
        if key not in known:
            known[key] = False  # a cycle resolves nowhere
            text = str(settings[key])
            referred = [[name for name in settings if name == ref or name.startswith(f"{ref}.")]
                        for ref in (_absolute(ref, key) for ref in REFERENCE.findall(text))]
            known[key] = not RESOLVER_CALL.search(text) and all(
                names and all(resolves(name) for name in names) for names in referred)
        return known[key]

    return {key for key in settings if resolves(key)}


def _absolute(reference: str, key: str) -> str:
    """An interpolation's ``reference`` as a dotted key: ``data[root]`` is ``data.root``, and ``.beta`` in
    ``optim.b2`` is ``optim.beta`` (each further dot one level up)."""
    reference = re.sub(r"\[([^\]]*)\]", r".\1", reference)
    if not reference.startswith("."):
        return reference
    levels = len(reference) - len(reference.lstrip("."))
    parent = key.split(".")[:-levels]
    return ".".join([*parent, reference.lstrip(".")])


def quality_key(runs: list[Run]) -> str:
    """PSNR against the ground truth when a run has one, else the fit to the observation. A run
    without a finite value of it (a diverged fit, say) is listed, not ranked."""
    return "psnr" if any(run.metrics.get("psnr") is not None for run in runs) else "psnr_fit"


def best_value(run: Run, key: str) -> float:
    return max([value for _, value in run.curves.get(key, [])] + [run.metrics[key]])


def mean(values) -> float | None:
    values = [value for value in values if value is not None]
    return statistics.fmean(values) if values else None


def fmt(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def plot_curves(groups: dict[str, list[Run]], key: str) -> bytes:
    figure = Figure(figsize=(7, 4.2), dpi=110)
    axes = figure.subplots()
    for label, runs in groups.items():
        by_step: dict[int, list[float]] = {}
        for run in runs:
            points = run.curves.get(key) or [(run.metrics["steps"], run.metrics[key])]
            for step, value in points:
                by_step.setdefault(step, []).append(value)
        steps = sorted(by_step)
        line = axes.plot(steps, [statistics.fmean(by_step[s]) for s in steps], marker="." if len(steps) < 30 else None,
                         label=f"{label} ({len(runs)} run{'s' * (len(runs) > 1)})")[0]
        axes.fill_between(steps, [min(by_step[s]) for s in steps], [max(by_step[s]) for s in steps],
                          color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("step")
    axes.set_ylabel(f"{key} (dB)")
    axes.set_title("mean per group; band: min-max over its runs")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure_png(figure)


def label_images(runs: list[Run]) -> None:
    """Give each image a row of its own: where runs restore different observations under one file stem
    (two folders' ``photo.png``, a sweep over the task, the crop or the noise), the stem is followed by
    the settings that tell them apart."""
    by_stem: dict[str, list[Run]] = {}
    for run in runs:
        by_stem.setdefault(run.image, []).append(run)
    for stem, alike in by_stem.items():
        keys = sorted({key for run in alike for key in run.observed})
        differing = [key for key in keys if len({repr(run.observed.get(key)) for run in alike}) > 1]
        for run in alike if differing else ():
            run.image_label = f"{stem} ({', '.join(f'{key}={run.observed.get(key)}' for key in differing)})"


def best_per_image(runs: list[Run], key: str) -> dict[str, Run]:
    best: dict[str, Run] = {}
    for run in runs:
        if run.image not in best or run.metrics[key] > best[run.image].metrics[key]:
            best[run.image] = run
    return best


def show(ax, picture: Path, title: str, winner: bool = False) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if picture.is_file():
        try:
            with Image.open(picture) as image:
                ax.imshow(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as error:  # damaged, not an image
            ax.text(0.5, 0.5, f"unreadable:\n{picture.name}\n{one_line(error, 60)}", ha="center", va="center",
                    fontsize=6, color="darkred", wrap=True, transform=ax.transAxes)
    ax.set_title(title, fontsize=7, color="darkgreen" if winner else "black")
    for spine in ax.spines.values():
        spine.set_edgecolor("limegreen" if winner else "lightgrey")
        spine.set_linewidth(4 if winner else 1)


def plot_grid(runs: list[Run], key: str, by: str, best: dict[str, Run]) -> bytes:
    """One row per image: its observation, then every run's restoration; the best one framed."""
    rows: dict[str, list[Run]] = {}
    for run in runs:
        rows.setdefault(run.image, []).append(run)
    columns = 1 + max(len(row) for row in rows.values())
    figure = Figure(figsize=(2.1 * columns, 2.5 * len(rows)), dpi=100, layout="constrained")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for axes_row, (image, image_runs) in zip(axes, rows.items()):
        show(axes_row[0], image_runs[0].path / "observation.png", f"{image}\nobservation")
        for ax, run in zip(axes_row[1:], image_runs):
            winner = best[image] is run
            show(ax, run.path / "restored.png",
                 f"{'* ' if winner else ''}{run.value(by)}: {run.metrics[key]:.2f} dB\nrun {run.name}", winner)
        for ax in axes_row[1 + len(image_runs):]:
            ax.axis("off")
    figure.suptitle(f"restored images ({key}); framed: the best run per image", fontsize=9)
    return figure_png(figure)


def group_table(groups: dict[str, list[Run]], key: str, by: str) -> str:
    rows = []
    for label, runs in groups.items():
        finals = [run.metrics[key] for run in runs]
        spread = f" &plusmn; {statistics.stdev(finals):.2f}" if len(finals) > 1 else ""
        memory = [run.metrics.get("peak_mem_mb") for run in runs if run.metrics.get("peak_mem_mb") is not None]
        sources = sorted({run.metrics.get("peak_mem_source", "?") for run in runs if run.metrics.get("peak_mem_mb")})
        rows.append(
            f"<tr><td>{html.escape(str(label))}</td><td>{len(runs)}</td>"
            f"<td>{statistics.fmean(finals):.2f}{spread}</td>"
            f"<td>{fmt(mean(best_value(run, key) for run in runs))}</td>"
            f"<td>{fmt(max(best_value(run, key) for run in runs))}</td>"
            f"<td>{fmt(mean(run.metrics.get('psnr_ema') for run in runs))}</td>"
            f"<td>{fmt(mean(run.metrics.get('steps_per_second') for run in runs), 1)}</td>"
            f"<td>{fmt(max(memory) if memory else None, 0)} {html.escape(', '.join(sources))}</td></tr>"
        )
    return (f"<table><tr><th>{html.escape(by)}</th><th>runs</th><th>final {key} (mean &plusmn; sd)</th>"
            f"<th>best {key} during the run (mean)</th><th>best {key} (max)</th><th>final psnr_ema (mean)</th>"
            "<th>steps/s (mean)</th><th>peak memory MiB (max)</th></tr>" + "".join(rows) + "</table>")


def run_table(runs: list[Run], unscored: list[Run], unfinished: list[Run], key: str, by: str, best: dict[str, Run],
              out: Path) -> str:
    rows = []
    for run in runs:
        link = html.escape(Path(os.path.relpath(run.path, out)).as_posix())
        mark = " class='best'" if best[run.image] is run else ""
        rows.append(
            f"<tr{mark}><td><a href='{link}/'>{html.escape(run.name)}</a></td>"
            f"<td>{html.escape(str(run.value(by)))}</td><td>{html.escape(run.image)}</td>"
            f"<td>{html.escape(str(run.metrics.get('seed')))}</td>"
            f"<td>{fmt(run.metrics[key])}</td><td>{fmt(best_value(run, key))}</td>"
            f"<td>{fmt(run.metrics.get('psnr_ema'))}</td><td>{run.metrics.get('steps')}</td>"
            f"<td>{fmt(run.metrics.get('steps_per_second'), 1)}</td>"
            f"<td>{fmt(run.metrics.get('peak_mem_mb'), 0)}</td><td>{fmt(run.metrics.get('memory_estimate_mb'), 0)}</td>"
            f"<td>{html.escape(run.metrics.get('device', '?'))}</td>"
            f"<td>{run.curve_source}</td><td><code>{html.escape(' '.join(run.overrides))}</code></td>"
            f"<td><img src='{link}/restored.png' alt='{html.escape(run.name)}' height='64'></td></tr>"
        )
    rows += [f"<tr class='unfinished'><td>{html.escape(run.name)}</td><td colspan='14'>finished with no finite "
             f"{key} (a diverged fit{', or no ground truth' if key == 'psnr' else ''}): "
             f"<code>{html.escape(' '.join(run.overrides))}</code></td></tr>" for run in unscored]
    rows += [f"<tr class='unfinished'><td>{html.escape(run.name)}</td><td colspan='14'>"
             + (f"unreadable: {html.escape(run.unreadable)}" if run.unreadable else
                f"unfinished: no metrics.json (<code>{html.escape(' '.join(run.overrides))}</code>)")
             + "</td></tr>" for run in unfinished]
    return (f"<table><tr><th>run</th><th>{html.escape(by)}</th><th>image</th><th>seed</th><th>final {key}</th>"
            f"<th>best {key}</th><th>psnr_ema</th><th>steps</th><th>steps/s</th><th>peak MiB</th>"
            "<th>estimated MiB</th><th>device</th><th>curve</th><th>overrides</th><th>restored</th></tr>"
            + "".join(rows) + "</table>")


STYLE = """body{font-family:sans-serif;margin:1.5em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:3px 7px;font-size:13px;text-align:left}th{background:#eee}
tr.best{background:#e6f7e6}tr.unfinished{color:#a00}img{max-width:100%}code{font-size:11px}"""


def read_failures(sweep_dir: Path) -> list[str]:
    """The sweep's failed jobs; a ``DipError`` naming the list when it cannot be read."""
    try:
        return failed_jobs(sweep_dir)
    except OSError as error:
        raise DipError(f"{sweep_dir / FAILED_JOBS}: {error.strerror or one_line(error, 200)}") from None


def no_finished_run(sweep_dir: Path, unreadable: list[Run], failures: list[str]) -> DipError:
    """Why there is no page to make: the folders that could not be read, the jobs that failed."""
    if unreadable:
        more = f" (and {len(unreadable) - 1} more unreadable)" if len(unreadable) > 1 else ""
        problem = f"no finished run it can read: {unreadable[0].unreadable}{more}"
    elif unrecorded := [path.parent for path in sweep_dir.glob("**/metrics.json")
                        if not (path.parent / ".hydra" / "config.yaml").is_file()]:
        problem = (f"no run with Hydra's record of its settings, which the dashboard compares: {len(unrecorded)} "
                   f"finished run(s) without .hydra/config.yaml (hydra.output_subdir=null?), such as {unrecorded[0]}")
    else:
        problem = "no finished run (no */metrics.json under it)"
    if failures:
        problem += f"; {len(failures)} job(s) failed, listed in {sweep_dir / FAILED_JOBS}"
    return DipError(f"{sweep_dir}: {problem}")


OUTPUTS = ("psnr_curves.png", "image_grid.png", "dashboard.html")


def check_out(out: Path) -> None:
    """A ``DipError`` when ``out`` cannot be the dashboard's folder (a file, say) or one of the files it
    writes there is a folder: checked before any work."""
    if out.exists() and not out.is_dir():
        raise DipError(f"{out}: not a folder (--out names the folder to write the dashboard into)")
    for name in OUTPUTS:
        if (out / name).is_dir():
            raise DipError(f"{out / name}: a folder, where the dashboard writes its {name}")


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into ``out`` (made if missing), each replacing its old version only once all are
    written: a failure (no permission, a full disk) leaves the old dashboard as it was and no part of
    the new one; a ``DipError`` naming the place and the fault."""
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            temporary = out / f".{name}.part"
            written.append(temporary)
            temporary.write_bytes(data)
        for temporary in written:
            os.replace(temporary, out / temporary.name[1:-len(".part")])
    except OSError as error:
        for temporary in written:
            temporary.unlink(missing_ok=True)
        place = error.filename or out
        raise DipError(f"{place}: cannot write the dashboard there ({error.strerror or one_line(error, 200)})") \
            from None


def write_dashboard(sweep_dir: Path, out: Path, by: str = "arch") -> Path:
    """Write the figures and ``dashboard.html`` for the sweep in ``sweep_dir`` into ``out``: all three
    are made first, and nothing is written when one cannot be (a ``DipError`` saying why)."""
    if not sweep_dir.is_dir():
        raise DipError(f"{sweep_dir}: {'a file, not a' if sweep_dir.exists() else 'no such'} sweep folder")
    check_out(out)
    everything = find_runs(sweep_dir)
    runs = [run for run in everything if run.finished]
    failed = failed_job_folders(sweep_dir)  # noted as failures below
    unfinished = [run for run in everything if not run.finished and run.path.resolve() not in failed]
    failures = read_failures(sweep_dir)
    if not runs:
        raise no_finished_run(sweep_dir, [run for run in unfinished if run.unreadable], failures)
    if not any(run.has(by) for run in runs):
        raise DipError(f"--by {by}: no run has a setting or result of that name (e.g. arch, optim.lr, seed, image)")
    key = quality_key(runs)
    unscored = [run for run in runs if run.metrics[key] is None]
    runs = [run for run in runs if run.metrics[key] is not None]
    if not runs:
        raise DipError(f"{sweep_dir}: no finished run has a finite {key} (every fit diverged?)")
    label_images(runs)
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(str(run.value(by)), []).append(run)
    best = best_per_image(runs, key)
    figures = {"psnr_curves.png": plot_curves(groups, key), "image_grid.png": plot_grid(runs, key, by, best)}

    notes = []
    if any(run.curve_source == "none" for run in runs):
        notes.append("Some runs logged no curve (set <code>metrics_every</code> below <code>trainer.max_steps</code> "
                     "with <code>logger=csv</code> or <code>logger=wandb</code>); they show their final value only.")
    memory_sources = {run.metrics.get("peak_mem_source") for run in runs}
    if "process_max_rss" in memory_sources:
        notes.append("Peak memory on the CPU is the process's peak resident set (start-up and earlier jobs of the "
                     "same worker included); on a GPU it is <code>torch.cuda.max_memory_allocated</code>.")
    if failures:
        notes.append(f"{len(failures)} job(s) failed (<code>{FAILED_JOBS}</code>):<ul>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in failures) + "</ul>")
    try:
        search = read_mapping(sweep_dir / "optimization_results.yaml")
    except (OSError, ValueError, yaml.YAMLError) as error:
        search = {}
        notes.append(f"The Optuna results are unreadable: {html.escape(one_line(error, 300))}")
    if search:
        notes.append(f"Optuna: best value {search.get('best_value')} with "
                     f"<code>{html.escape(json.dumps(search.get('best_params')))}</code>.")
    rel = Path(os.path.relpath(sweep_dir, out)).as_posix()
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>dip sweep {html.escape(sweep_dir.name)}</title><style>{STYLE}</style></head>
<body><h1>Sweep <code>{html.escape(sweep_dir.name)}</code></h1>
<p>{len(runs)} finished run(s){f", {len(unscored)} with no finite {key}" if unscored else ""}\
{f", {len(unfinished)} unfinished or unreadable" if unfinished else ""} in
<a href="{html.escape(rel)}/">{html.escape(str(sweep_dir))}</a>, grouped by <code>{html.escape(by)}</code>;
quality: <code>{key}</code> ({'against the ground truth' if key == 'psnr' else 'fit to the observation'}).</p>
{''.join(f'<p>{note}</p>' for note in notes)}
<h2>Per {html.escape(by)}</h2>{group_table(groups, key, by)}
<h2>PSNR during the optimisation</h2><img src="psnr_curves.png" alt="PSNR curves">
<h2>Restored images</h2><img src="image_grid.png" alt="image grid">
<h2>Runs</h2>{run_table(runs, unscored, unfinished, key, by, best, out)}
</body></html>
"""
    write_files(out, {**figures, "dashboard.html": page.encode()})
    return out / "dashboard.html"


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path, help="a multirun folder (hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, help="where to write the dashboard (default: SWEEP_DIR)")
    parser.add_argument("--by", default="arch", help="group runs by this setting (default: arch), e.g. optim.lr")
    args = parser.parse_args(argv)
    try:
        dashboard = write_dashboard(args.sweep_dir, args.out or args.sweep_dir, args.by)
    except DipError as error:
        fail(str(error))
    print(f"dashboard: {dashboard}")


if __name__ == "__main__":
    main()

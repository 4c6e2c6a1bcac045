"""The command line: ``python run.py [overrides]``, a thin Hydra app around :func:`dip.pipeline.run`."""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from dip.config import CONF_DIR, absolute_locations, compose_config, config_groups, register_resolvers, use_config_dirs
from dip.config_checks import check_resolvable, checked_config, config_message, misspelt_setting
from dip.earlier_runs import EarlierRuns, finished_metrics, job_records, rewrite_records
from dip.errors import (
    DipError,
    RunInterruptedError,
    UnresolvedSettingError,
    fail,
    interruption_signal,
    kept_traceback,
    one_line,
)
from dip.files import hold_folder, let_go, unwritable
from dip.outputs import describe, offline_wandb_line, psnr_summary
from dip.overrides import (
    home_expanded,
    hydra_quoted,
    pasted_override,
    run_folder_arguments,
    run_folders,
    setting_name,
    unquoted,
)
from dip.problem import problem_from_config
from dip.signals import exit_interrupted, interrupt_on_stop_signals, signal_finished_first
from dip.sweeps import FAILED_JOBS, record_failure, sweep_folder

log = logging.getLogger("dip")
OPTIONS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                      "--config-dir", "-cd", "--experimental-rerun"}


def _override_arguments(arguments: list[str], hydra: bool = False) -> list[str]:
    """The overrides on the command line, not Hydra's options; Hydra's own settings (``hydra.*``) too
    if ``hydra``."""
    overrides, skip_next = [], False
    for argument in arguments:
        if skip_next or (setting_name(argument).startswith("hydra") and not hydra) or argument.startswith("-"):
            skip_next = argument in OPTIONS_WITH_VALUE
            continue
        overrides.append(argument)
    return overrides


def _fixed_overrides(arguments: list[str]) -> list[str]:
    """The overrides on the command line, Hydra's settings too, that are not sweeps: what one job's config is
    composed with."""
    parser = OverridesParser.create()
    return [text for text in _override_arguments(arguments, hydra=True)
            if not parser.parse_overrides([text])[0].is_sweep_override()]


def expanded_globs(arguments: list[str]) -> list[str]:
    """``arguments`` with each ``GROUP=glob(...)`` written out as ``GROUP=choice(...)`` of the group's
    options that match: Hydra expands a glob only in a running app, and Optuna's sweeper never. One
    that matches no option is refused in one line."""
    overrides, groups = set(_override_arguments(arguments)), config_groups(arguments)
    parser, expanded = OverridesParser.create(), []
    for argument in arguments:
        try:
            override = parser.parse_overrides([argument])[0] if argument in overrides else None
        except HydraException:  # check_overrides says what is wrong with it
            override = None
        if override is None or not isinstance(override.value(), Glob):
            expanded.append(argument)
            continue
        options = override.value().filter(groups.get(override.key_or_group, []))
        if not options:
            fail(f"{argument}: matches no {override.key_or_group} (choose from: "
                 f"{', '.join(groups.get(override.key_or_group, [])) or 'none: not a config group'})")
        expanded.append(f"{override.get_key_element()}=choice({','.join(options)})")
    return expanded


def check_overrides(arguments: list[str], config_name: str = "config") -> DictConfig:
    """Reject unknown config options and keys with one line, before Hydra starts a job; else return
    the config of the overrides that are not sweeps. Globs are expanded first (``expanded_globs``).

    Hydra's own messages span several lines; each value of a sweep is checked like a single run (a
    range by its first and last values).
    """
    overrides = _override_arguments(arguments)
    try:  # Hydra's settings too: "hydra.run.dir=my runs" gets the hint, not the parser's name for its error
        OverridesParser.create().parse_overrides(_override_arguments(arguments, hydra=True))
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as error:
        fail(f"cannot parse overrides: {str(error).splitlines()[0]} (quote a value holding spaces, brackets, =, "
             f"commas, a leading ~ or letters beyond ASCII: data.path=\"'my photo (1).png'\")")
    for override in parsed:
        if override.key_or_group == "benchmark" and config_name == "config":  # run.py would restore its default image
            fail(f"{override.input_line}: the benchmarks are experiments/benchmark.py's "
                 f"(python experiments/benchmark.py benchmark=NAME)")
    fixed, checked, swept, groups = [], [], set(), config_groups(overrides)
    for override, text in zip(parsed, overrides):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(text)
            continue
        swept.add(override.key_or_group)
        if override.is_choice_sweep():
            checked += [f"{key}={value}" for value in override.sweep_string_iterator()]
        elif (override.is_add() or override.is_force_add()) and override.key_or_group not in groups:
            checked.append(f"{key}=null")  # range(), interval(): whether the key is read
        elif override.is_range_sweep():
            values = list(override.sweep_string_iterator())
            checked += list(dict.fromkeys(f"{key}={value}" for value in values[:1] + values[-1:]))
    cfg = _composed_or_fail(fixed, config_name)
    hydra_cfg = _with_hydra_choices(arguments, cfg, config_name)
    _check_search(arguments, hydra_cfg, config_name)
    multirun = bool(swept) or is_multirun(arguments, cfg)
    if config_name == "config" and multirun and _every_job_reads_this_input(cfg, arguments, swept):
        try:  # an input that every job shares and would fail on: once, not once per job or trial
            problem_from_config(cfg)
        except UnresolvedSettingError:  # each job resolves it in its own environment, and says so if it cannot
            pass
        except DipError as error:
            fail(str(error))
    for choice in checked:
        _composed_or_fail([*fixed, choice], config_name)
    _check_hydra_settings(arguments, hydra_cfg)
    return cfg


def _composed_or_fail(overrides: list[str], config_name: str) -> DictConfig:
    """``checked_config(overrides)``, its structure readable; what it refuses ends the command in one line."""
    try:
        cfg = checked_config(overrides, config_name=config_name)
        OmegaConf.to_container(cfg, resolve=False)
    except DipError as error:
        fail(str(error))
    return cfg


def _with_hydra_choices(arguments: list[str], cfg: DictConfig, config_name: str) -> DictConfig | None:
    """``cfg``, the config of the overrides that are not Hydra's, with Hydra's own config groups chosen on the
    command line too (``hydra/sweeper=optuna``, ``hydra/launcher=joblib``): composed again where there are any,
    without Hydra's settings (``hydra.*``, which the checks look at); None where that cannot be composed
    (Hydra says why when it starts)."""
    fixed = _fixed_overrides(arguments)
    if not any(setting_name(text).startswith("hydra/") for text in fixed):
        return cfg
    try:
        return compose_config([text for text in fixed if not setting_name(text).startswith("hydra.")],
                              config_name=config_name)
    except Exception:  # noqa: BLE001 (Hydra's and OmegaConf's many errors)
        return None


def _check_search(arguments: list[str], cfg: DictConfig | None, config_name: str) -> None:
    """Refuse an Optuna search of what returns no PSNR to maximise: an experiment's figure, a benchmark's table
    (every trial would fail, and the search end in "no trial finished"); and a search space
    (``+hydra.sweeper.params.X=...``) added where the sweeper has none (Hydra's assertion, as a traceback).
    ``cfg``: ``_with_hydra_choices``'s (None: nothing to check)."""
    if cfg is None:
        return
    optuna = "optuna" in str(OmegaConf.select(cfg, "hydra.sweeper._target_", default=""))
    searched = [text for text in _override_arguments(arguments, hydra=True)
                if text.lstrip("+").startswith((SEARCH_SPACE, f"{SEARCH_SPACE[:-1]}="))]
    if searched and OmegaConf.select(cfg, "hydra.sweeper.params", default=None) is None:
        fail(f"{searched[0]}: this sweeper's {SEARCH_SPACE[:-1]} is null, which Hydra cannot set or add to: "
             + ("start from +hparams_search=optuna_lr, which sets a search space" if optuna else
                "sweep values with -m KEY=A,B, or search with +hparams_search=optuna_lr"))
    if not optuna:
        return
    if OmegaConf.select(cfg, "experiment.runner") or config_name != "config":
        what = "+experiment=NAME makes a figure" if config_name == "config" else "a benchmark makes a table"
        fail(f"an Optuna search maximises one restoration's PSNR, and {what} of several: search over run.py's "
             f"settings (python run.py +hparams_search=optuna_lr ...), or sweep with -m")


def _check_hydra_settings(arguments: list[str], cfg: DictConfig | None) -> None:
    """Refuse in one line a typo in the name of one of Hydra's settings: ``+hydra.run.dri=x`` was added where
    nothing reads it (the run went to the default folder), and ``hydra.run.dri=x`` got Hydra's line without
    the name meant. ``cfg``: ``_with_hydra_choices``'s, without the settings checked (None: nothing to check)."""
    given = [text for text in _override_arguments(arguments, hydra=True)
             if setting_name(text).startswith("hydra.") and not setting_name(text).startswith(SEARCH_SPACE)]
    if not given or cfg is None:
        return
    for text in given:
        key = setting_name(text)
        if hint := misspelt_setting(key, cfg):
            fail(f"{text}: Hydra has no setting {key}{hint}")


SEARCH_SPACE = "hydra.sweeper.params."  # an Optuna search's settings, each drawn per trial


def _every_job_reads_this_input(cfg: DictConfig, arguments: list[str], swept: set[str]) -> bool:
    """Whether the jobs of a multirun of ``run.py`` whose fixed settings are ``cfg`` all restore the same
    input: no sweep over the data, task or mask (``swept``, or an Optuna search's), and no experiment
    (which reads its own)."""
    searched = [*(OmegaConf.select(cfg, SEARCH_SPACE.rstrip(".")) or {}),
                *(setting_name(argument) for argument in arguments if setting_name(argument).startswith(SEARCH_SPACE))]
    varied = {key.lstrip("+~").removeprefix(SEARCH_SPACE).partition(".")[0] for key in [*swept, *searched]}
    return not OmegaConf.select(cfg, "experiment.runner") and not varied & {"data", "task", "mask", "profile"}


def check_run_folders(arguments: list[str]) -> None:
    """Refuse in one line, before Hydra tries to make them, the run folders it could not make: no name
    (Hydra would write into the working directory), a file in the way, a name the file system refuses, or
    a place where nothing can be written."""
    for key, value in run_folder_arguments(arguments):
        if not unquoted(value).strip():
            fail(f"{key} is empty: name the folder to write into ({key}=. for the working directory)")
    for key, folder in run_folders(arguments):
        if problem := unwritable(folder):
            fail(f"{key}={folder}: {problem}")


def beside_the_overrides(arguments: list[str], added: list[str]) -> list[str]:
    """``arguments`` with the overrides ``added`` before their first override: Hydra's parser takes the
    overrides as one run of words, and refuses one after a flag's value (``arch=x --cfg job hydra.x=y``)."""
    first = next((i for i, argument in enumerate(arguments) if "=" in argument and not argument.startswith("-")),
                 len(arguments))
    return [*arguments[:first], *added, *arguments[first:]]


def is_multirun(arguments: list[str], cfg: DictConfig) -> bool:
    """Whether the command line ``arguments`` (composed as ``cfg``) ask for a sweep: ``-m``, or ``hydra.mode``."""
    return "-m" in arguments or "--multirun" in arguments \
        or str(OmegaConf.select(cfg, "hydra.mode")) == str(RunMode.MULTIRUN)


def prints_only(arguments: list[str]) -> bool:
    """Whether the command line ``arguments`` ask Hydra to print the config (``--cfg``), running nothing."""
    return any(argument in ("--cfg", "-c") or argument.startswith("--cfg=") for argument in arguments)


def pinned_folder(arguments: list[str], key: str, config_name: str = "config") -> tuple[list[str], str]:
    """``arguments`` with the folder Hydra is to write into (``key``: ``hydra.run.dir``, a sweep's
    ``hydra.sweep.dir``) named there as composed and resolved now: the folder that is checked, held and
    cleaned up is then the one Hydra uses, its ``${now:...}`` read once and ``${seed}`` or ``${task.name}``
    in it as the run's. Unchanged where the folder reads what only Hydra's job knows (``${hydra.job.name}``:
    ``known_before_the_job``). Beside them, the folder as the config gave it, before resolving
    (``outputs/${task.name}/${now:...}``; empty if it was not read). An interpolation that cannot be
    resolved (a typo) is refused in one line."""
    try:
        cfg = compose_config(_fixed_overrides(arguments), config_name=config_name)
        given = str(OmegaConf.to_container(OmegaConf.select(cfg, key.rpartition(".")[0]), resolve=False)["dir"])
    except Exception:  # noqa: BLE001 (Hydra's and OmegaConf's many errors): Hydra says what it cannot compose
        return arguments, ""
    if not known_before_the_job(given):
        return arguments, given
    try:
        folder = OmegaConf.select(cfg, key)
    except OmegaConfBaseException as error:
        fail(f"{key}={given}: {str(error).splitlines()[0]}")  # not OmegaConf's full_key and object_type lines
    if folder is None or not str(folder):
        return arguments, given
    # a config file's folder under ~ too (the command line's is expanded as it starts: home_expanded)
    return _with_folder(arguments, key, str(Path(str(folder)).expanduser())), given


def known_before_the_job(folder: str) -> bool:
    """Whether the run folder ``folder`` (as given, unresolved) names only what is known before Hydra's job
    starts: not its name or output folder (``${hydra.job.name}``), which composing alone gets wrong."""
    return not any(name in folder for name in ("hydra.job.", "hydra:job.", "runtime.output_dir"))


def held_run_folder(arguments: list[str], gives_way: bool, key: str = "hydra.run.dir") -> list[str]:
    """Hold the run folder that ``arguments`` name (``key``: a sweep's is ``hydra.sweep.dir``;
    ``dip.files.hold_folder``), refused in one line when another run or sweep holds it, unless it
    ``gives_way``: a time-stamped one (``outputs/TASK/<time>``, the default) of a run started in the same
    second as another gives way to ``<time>_2``, ``_3``, ..., named in the arguments returned."""
    folder = dict(run_folders(arguments)).get(key)
    if folder is None:
        return arguments
    others = (folder.with_name(f"{folder.name}_{number}") for number in itertools.count(2))
    for held in itertools.chain([folder], others):
        try:
            hold_folder(held)
        except DipError as error:
            if not gives_way:
                fail(str(error))
            continue
        return arguments if held == folder else _with_folder(arguments, key, str(held))


def _with_folder(arguments: list[str], key: str, folder: str) -> list[str]:
    """``arguments`` with ``key`` (``hydra.run.dir``, ``hydra.sweep.dir``) set to ``folder``, quoted so that
    Hydra reads it back as it is."""
    others = [argument for argument in arguments if setting_name(argument) != key]
    return beside_the_overrides(others, [f"{key}={hydra_quoted(folder)}"])


def taken_folder(arguments: list[str], multirun: bool, config_name: str = "config") -> list[str]:
    """``arguments`` naming the folder that Hydra is to write into as it resolves it (``pinned_folder``), held
    (``held_run_folder``: a run's, or a sweep's, whose jobs' folders would be shared by two sweeps), and noted
    in ``EARLIER_RUNS`` with the folders above it that existed: a failed or refused command then removes what
    it made, and only that."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    arguments, given = pinned_folder(arguments, key, config_name)
    if not known_before_the_job(given):  # a folder named by the job's name is not this text
        EARLIER_RUNS.note_folders(dict(run_folders(arguments)).get(key))
        return arguments
    folder = dict(run_folders(arguments)).get(key)
    if folder is not None and "${" in str(folder):  # Hydra's job names its log file after it, and resolves that
        fail(f"{key}={folder}: a folder whose name holds '${{' cannot be Hydra's: it would read it as an interpolation")
    EARLIER_RUNS.note_folders(folder)  # before holding it makes it
    arguments = held_run_folder(arguments, gives_way="${now:" in given, key=key)
    EARLIER_RUNS.folder = dict(run_folders(arguments)).get(key)
    EARLIER_RUNS.held = EARLIER_RUNS.folder is not None
    return arguments


# Hydra's flags that each say what the command does, by their long and short names
MODES = {"--run": "-r", "--multirun": "-m", "--cfg": "-c", "--info": "-i", "--shell-completion": "-sc"}


def runs_jobs(arguments: list[str]) -> bool:
    """Whether the command line ``arguments`` run (or print) jobs, not only Hydra's help, information or
    shell completion."""
    asks = ("--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion", "-sc")
    return not any(argument in asks or argument.startswith(("--info=", "--shell-completion="))
                   for argument in arguments)


def check_one_mode(arguments: list[str]) -> None:
    """Refuse in one line two of Hydra's flags that each say what the command does (``-m --cfg job``): Hydra
    does one per command, and says so in a traceback."""
    given = [f"{name} ({short})" for name, short in MODES.items()
             if any(argument in (name, short) or argument.startswith(f"{name}=") for argument in arguments)]
    if len(given) > 1:
        hint = ": to print a sweep's job config, give each swept setting one value, without -m" \
            if {"--multirun (-m)", "--cfg (-c)"} <= set(given) else ""
        fail(f"{' and '.join(given)} cannot go together: Hydra does one of them per command{hint}")


def check_launcher(arguments: list[str]) -> None:
    """Refuse in one line, before Hydra makes the sweep's folder, a launcher that cannot start here
    (its own error is a traceback); printing the config (``--cfg``) starts none."""
    if prints_only(arguments):
        return
    chosen = dict(argument.partition("=")[::2] for argument in arguments).get("hydra/launcher")
    if chosen == "ray_cluster" and importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None:
        fail("hydra/launcher=ray_cluster needs Hydra's Ray launcher, which is not installed: pip install -e '.[ray]'")
    if chosen == "slurm" and shutil.which("srun") is None:
        fail("hydra/launcher=slurm submits the jobs to SLURM, but there is no srun here: run the sweep on the "
             "cluster (hydra/launcher=local runs them as processes on this machine)")


EARLIER_RUNS = EarlierRuns()  # filled by launch, before Hydra writes anything
FAILURES_FILE: list[Path] = []  # where this process's failed sweep jobs were listed


def describe_finished(metrics: dict, output_dir: Path) -> str:
    """The line printed instead of running again what ``output_dir`` already holds."""
    return (f"already finished in {output_dir}: {metrics['steps']} steps, {psnr_summary(metrics)}; nothing to run "
            f"(delete its metrics.json to run it again)")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    EARLIER_RUNS.job_started = True
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    # the job runs in output_dir: files named relative to where the command ran, in its config as in a finished run's
    launched_from = hydra_config.runtime.cwd if hydra_config.job.chdir else None
    if launched_from:
        absolute_locations(cfg, launched_from)
    runner = OmegaConf.select(cfg, "experiment.runner")
    own_records = job_records(output_dir)  # as Hydra has just written them: another job's start may replace them
    # a sweep's job folder, held while the job runs: a run started into it meanwhile is refused, as it is here; the
    # sweep's own folder (hydra.sweep.subdir='') is its main process's to hold
    multirun = hydra_config.mode == RunMode.MULTIRUN
    in_sweep_folder = output_dir.resolve() == Path(hydra_config.sweep.dir).resolve()
    try:
        taken = not (multirun and in_sweep_folder) and hold_folder(output_dir)
    except DipError as error:  # the run there goes on, and writes its record again when it ends (rewrite_records)
        EARLIER_RUNS.put_back_records(output_dir, remove_added=False)
        return _failed_job(str(error))
    try:
        EARLIER_RUNS.refuse_unknown_run(output_dir)
    except DipError as error:  # kept; Hydra's record of this job, just written beside it, is removed
        EARLIER_RUNS.put_back_records(output_dir)
        if taken:
            let_go(output_dir)
        return _failed_job(str(error))
    try:
        EARLIER_RUNS.refuse_other_kind(output_dir, cfg)
        check_resolvable(cfg)  # in the job's own environment
        if runner:  # +experiment=NAME: a figure made of several runs
            from dip.experiments import run_experiment

            print(run_experiment(cfg, output_dir))
            rewrite_records(own_records)
            return None
        problem = problem_from_config(cfg)  # before importing Lightning: a bad input fails in seconds
        # hydra_main's own EARLIER_RUNS: a launcher with worker processes (joblib, submitit) pickles this
        # function with a copy of what it refers to, taken after launch filled it; the worker's module has
        # a fresh, empty one
        earlier = EARLIER_RUNS.finished_config(output_dir)
        if earlier is not None and launched_from:
            absolute_locations(earlier, launched_from)
        if (finished := finished_metrics(output_dir, earlier, cfg)) is not None:  # a sweep run again
            EARLIER_RUNS.discard(output_dir)  # puts back Hydra's record; the run's files are as they were
            print(describe_finished(finished, output_dir))
            return search_value(finished)
        from dip.pipeline import run

        result = run(cfg, output_dir, problem)
        rewrite_records(own_records)
    except DipError as error:
        EARLIER_RUNS.discard(output_dir)
        return _failed_job(str(error))
    except RunInterruptedError as interruption:  # the checkpoint stays, for the next run to resume
        if multirun:  # the sweep run again runs its unfinished jobs
            message = interruption.continue_in(Path(hydra_config.sweep.dir), "hydra.sweep.dir")
        else:
            message = interruption.continue_in(output_dir) if runner else str(interruption)
        print(message, file=sys.stderr)
        raise SystemExit(128 + interruption.signum) from None
    except KeyboardInterrupt as interruption:  # outside a fit (Ctrl-C, or SIGTERM: launch makes it one)
        signum = interruption_signal(interruption)
        if multirun:
            sweep = pasted_override("hydra.sweep.dir", hydra_config.sweep.dir)
            again = f": run the sweep again with {sweep} to continue"
        elif runner:  # the sub-runs finished are kept
            again = f": run the same command again with {pasted_override('hydra.run.dir', output_dir)} to continue"
        else:
            again = ""
        if not runner:  # nothing of this job worth keeping
            EARLIER_RUNS.discard(output_dir)
        print(f"interrupted by {signal.Signals(signum).name}{again}", file=sys.stderr)
        raise SystemExit(128 + signum) from None
    except Exception as error:  # a bug, ours or of a generator or operator of one's own: Python's traceback
        if not multirun:
            raise
        # the job's folder is kept, for its traceback
        return _failed_job(kept_traceback(error, output_dir / f"{hydra_config.job.name}.log"))
    finally:
        if taken:
            let_go(output_dir)
    print(describe(result))
    if not multirun and (upload := offline_wandb_line(output_dir)):  # a sweep's sums them up
        print(upload)
    if multirun and (signum := signal_finished_first()) is not None:
        print(f"{signal.Signals(signum).name}: job {hydra_config.job.num} finished first; run the sweep again with "
              f"{pasted_override('hydra.sweep.dir', hydra_config.sweep.dir)} for any jobs left", file=sys.stderr)
        raise SystemExit(128 + signum)
    return search_value(result.metrics)


def _failed_job(message: str) -> None:
    """Say and list a sweep job's failure; one bad job (a missing image, a size that does not fit) must not
    cost the others. None, to the Optuna sweeper: a failed trial. A single run's is refused (``fail``)."""
    hydra_config = HydraConfig.get()
    if hydra_config.mode != RunMode.MULTIRUN:
        fail(message)
    line = f"job {hydra_config.job.num} ({' '.join(hydra_config.overrides.task)}): {message}"
    print(f"error: {line}", file=sys.stderr)
    FAILURES_FILE.append(record_failure(sweep_folder(hydra_config), line, hydra_config.runtime.output_dir))


def search_value(metrics: dict) -> float | None:
    """What a run gives a sweeper to maximise: PSNR against the ground truth, else of the fit."""
    return metrics["psnr"] if metrics.get("psnr") is not None else metrics["psnr_fit"]


def launch(app, config_name: str = "config") -> None:
    """Start the Hydra ``app`` composing ``config_name``, its overrides checked first (unless the
    user asked for Hydra's help). What Hydra or a sweeper refuses once started is one line too,
    unless the user asked for Hydra's full tracebacks (``HYDRA_FULL_ERROR=1``)."""
    full_tracebacks = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises what it would print as a traceback, for the lines below
    interrupt_on_stop_signals()  # a scheduler's stop or a closed terminal, outside a fit, ends a job as Ctrl-C does
    logging.raiseExceptions = False  # a log file on a full disk: its handler's tracebacks would bury the one line
    try:
        register_resolvers()
        sys.argv[1:] = home_expanded(sys.argv[1:])
        check_run_folders(sys.argv[1:])
        check_one_mode(sys.argv[1:])
        check_launcher(sys.argv[1:])
        try:  # DIP_CONFIG_DIRS set by the user reaches Hydra as the search path the command line did not name
            sys.argv[1:] = beside_the_overrides(sys.argv[1:], use_config_dirs(sys.argv[1:]))
        except DipError as error:
            fail(str(error))
        sys.argv[1:] = expanded_globs(sys.argv[1:])
        if runs_jobs(sys.argv[1:]):
            cfg = check_overrides(sys.argv[1:], config_name=config_name)
            if not prints_only(sys.argv[1:]):
                sys.argv[1:] = taken_folder(sys.argv[1:], is_multirun(sys.argv[1:], cfg), config_name)
        EARLIER_RUNS.record(sys.argv[1:])
        app()
    except KeyboardInterrupt as interruption:  # outside a job (which says what it keeps): while starting or ending
        exit_interrupted(interruption)
    except HydraException as error:
        if full_tracebacks:
            raise
        fail(config_message(error))
    except ValueError as error:  # Optuna's, after the last trial, when none finished
        if full_tracebacks or "No trials are completed yet" not in str(error):
            raise
        # this process's jobs' list (Hydra's config is no longer the sweep's here), else the sweep's folder,
        # where a launcher's worker processes wrote it
        listed = FAILURES_FILE[-1] if FAILURES_FILE else sweep_folder(HydraConfig.get()) / FAILED_JOBS
        where = f": {listed} lists them" if listed.is_file() else ""
        fail(f"no trial of the search finished, each one failed{where}")
    except BrokenPipeError:  # the reader of the output left (run.py --help | head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would fail too
        raise SystemExit(1) from None
    except OSError as error:  # Hydra's own writes (its record of a run, a sweep's multirun.yaml) on a full disk
        if full_tracebacks or EARLIER_RUNS.job_started or (folder := EARLIER_RUNS.folder) is None:
            raise  # one from inside the job is a bug's, of a generator of one's own say: Python's traceback
        if folder.exists():  # a sweep's jobs finished before are kept, in folders of their own
            EARLIER_RUNS.discard(folder)
        fail(f"cannot write into {folder}: {error.strerror or one_line(error)}")
    finally:  # a folder held for the run, which Hydra then refused before the job started
        EARLIER_RUNS.remove_unused_run_folder()


def main() -> None:
    launch(hydra_main)

"""The composed config checked: an override Hydra or a config group refuses, a setting misspelt, a number out
of its range, or a node whose class rejects its settings or their types, each said in one line (``DipError``)
before anything runs."""

from __future__ import annotations

import difflib
import inspect
import itertools
import math
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from hydra._internal.utils import _locate
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import Container, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from dip.config import compose_config, config_groups, dotted, register_resolvers, use_full_settings
from dip.errors import DipError, UnresolvedSettingError, check_choice, invalid_yaml, one_line
from dip.overrides import setting_name

# What a constructor's annotation asks of a setting, as a config can give it, and how a message says it
KINDS = {bool: "true or false", int: "a whole number", float: "a finite number", str: "text"}


# Config groups a run can do without (~early_stop); the others it reads
OPTIONAL_GROUPS = ("early_stop",)
# Nodes whose settings the framework reads by name (no class is built from them with what they hold)
SETTINGS_READ_BY_NAME = ("data", "checkpoint", "benchmark", "paths")


def checked_config(overrides: Sequence[str] = (), output_dir: str | Path | None = None,
                   config_name: str = "config") -> DictConfig:
    """``compose_config``, with an override that picks an option its config group lacks, or that Hydra
    rejects, refused as a one-line ``DipError`` (Hydra's own messages span several lines)."""
    groups = config_groups(overrides)
    for option in overrides:
        key, _, value = option.lstrip("+~").partition("=")
        if key in groups and option.startswith("~") and not value:
            if key not in OPTIONAL_GROUPS:
                raise DipError(f"~{key}: a run needs a config of the {key} group (choose from: "
                               f"{', '.join(groups[key])})")
        elif key in groups:
            check_choice(key, value, groups[key], DipError)
    added_settings = _added_settings(overrides, groups, config_name)  # before: Hydra keeps the last config composed
    try:
        cfg = compose_config(overrides, output_dir, config_name)
    except HydraException as error:
        unknown = re.match(r"Could not override '([\w.]+)'", str(error))
        if unknown and unknown[1] not in groups:  # a group's own message says to add it with '+', which is right
            raise DipError(_unknown_setting(unknown[1], overrides, config_name)) from None
        raise DipError(config_message(error)) from None
    except yaml.MarkedYAMLError as error:  # a config file of one's own that is not YAML
        raise DipError(f"config file {invalid_yaml(error.problem_mark.name, error)}") from None
    except OmegaConfBaseException as error:
        raise DipError(f"invalid config: {config_message(error)}") from None
    for added, key, new_node in added_settings:  # read by nothing: a typo (+lrr=0.01, +data.maks=..., +optimm.lr=...)
        if _interpolated(key, cfg):
            continue
        if new_node:
            head, dot, rest = key.partition(".")
            close = _nearest_name(head, cfg)
            hint = f"did you mean {close}{dot}{rest}?" if close else "a typo?"
            raise DipError(f"{added}: nothing reads a setting named '{key}' ({hint}); settings are changed without "
                           f"'+' (optim.lr=0.01), config groups added with it (+experiment=NAME)")
        if "." in key and key.partition(".")[0] in SETTINGS_READ_BY_NAME:
            raise DipError(f"{added}: nothing reads a setting named '{key}'{_close_setting(key, cfg)}; settings are "
                           f"changed without '+'")
    check_interpolations(cfg)
    return cfg


def check_interpolations(cfg: DictConfig) -> None:
    """``DipError`` naming a setting whose interpolation cannot be resolved (``${nosuch}``, ``${oc.env:PHOTOS}``
    with PHOTOS unset), before Hydra makes the run's folder: OmegaConf's traceback came where the setting was first
    read. One whose value reads the environment or Hydra is left to the job, whose environment may set it
    (``hydra.job.env_set``, a launcher's) and where ``check_resolvable`` says so if it cannot."""
    written = dotted(OmegaConf.to_container(cfg, resolve=False))
    left_to_the_job: set[str] = set()  # the errors of those settings: a setting reading one of them fails alike
    for key in _settings_first(cfg):
        try:
            _resolved(cfg, key)
        except OmegaConfBaseException as error:
            message = config_message(error)
            if JOB_VALUE.search(str(written.get(str(error.full_key).partition("[")[0], ""))):
                left_to_the_job.add(message)
            elif message not in left_to_the_job:
                raise DipError(f"{error.full_key or key}: {message}") from None


JOB_VALUE = re.compile(r"oc\.env|hydra[:.]")  # what only the job resolves: its environment, Hydra's job values


def check_resolvable(cfg: DictConfig) -> None:
    """``UnresolvedSettingError`` naming a setting whose interpolation does not resolve here: in a job, where the
    run's first read of it would end in OmegaConf's traceback."""
    for key in _settings_first(cfg):
        try:
            _resolved(cfg, key)
        except OmegaConfBaseException as error:
            raise UnresolvedSettingError(f"{error.full_key or key}: {config_message(error)}") from None


def _settings_first(cfg: DictConfig) -> list[str]:
    """``cfg``'s top-level keys, those that only refer to others (``image_name: ${image_name:${data.path},...}``)
    last: an error is named by the setting the user wrote, not by one reading it."""
    return sorted(cfg, key=lambda key: OmegaConf.is_interpolation(cfg, key))


def _resolved(cfg: DictConfig, key: str) -> None:
    """Resolve ``cfg``'s top-level ``key`` (Hydra's own settings are Hydra's), raising what OmegaConf raises."""
    if key != "hydra" and isinstance(node := cfg[key], Container):
        OmegaConf.to_container(node, resolve=True)


def _added_settings(overrides: Sequence[str], groups: dict, config_name: str) -> list[tuple[str, str, bool]]:
    """``(+key, key, whether it makes a top-level node)`` for each override that adds a setting: ``+key=...``,
    and ``++key=...`` where the config lacks the key (where it has it, ``++`` sets it as a plain override does).
    Found in the config composed without them (config groups added, ``+experiment=...``, stay in it)."""
    adds = [option for option in overrides if option.startswith("+")
            and option.lstrip("+").partition("=")[0] not in groups and "@" not in option.partition("=")[0]]
    if not adds:
        return []
    try:
        before = compose_config([option for option in overrides if option not in adds], config_name=config_name)
    except Exception:  # noqa: BLE001 (the others need what is added: composing them all says what is wrong)
        return []
    added = []
    for option in adds:
        given = option.partition("=")[0]
        key = given.lstrip("+")
        if not (given.startswith("++") and _has_key(before, key)):
            added.append((given, key, key.partition(".")[0] not in before.keys()))
    return added


def _has_key(cfg: DictConfig, key: str) -> bool:
    node, _, name = _parent_node(cfg, key)
    return node is not None and name in node.keys()  # keys(): a ??? value is there too


def _interpolated(key: str, cfg: DictConfig) -> bool:
    """Whether a value of ``cfg`` refers to ``key`` (``data.path=${data.folder}/a.png``): then it is read."""
    return re.search(r"\$\{" + re.escape(key) + r"[}.:]", OmegaConf.to_yaml(cfg)) is not None


def _unknown_setting(key: str, overrides: Sequence[str], config_name: str) -> str:
    """The line for an override of a setting that the config lacks, with the nearest name it has, and for
    a class's settings, how to add one that it takes."""
    others = [option for option in overrides if setting_name(option) != key]
    try:
        cfg = compose_config(others, config_name=config_name)
    except Exception:  # noqa: BLE001 (the other overrides fail on their own: the line still names this one)
        return f"{key}: no such setting"
    parent, _, _ = _parent_node(cfg, key)
    built = parent is not None and "_target_" in parent
    added = f"; +{key}=VALUE adds one, if {parent._target_} takes it" if built else ""
    return f"{key}: no such setting{_close_setting(key, cfg)}{added}"


def misspelt_setting(key: str, cfg: DictConfig) -> str | None:
    """`` (did you mean hydra.run.dir?)`` when ``cfg`` lacks ``key`` in a node of a fixed schema (a structured
    config, as Hydra's own are) that has a setting of a name close to its, else None: a setting it has, or
    one added to an open mapping (``hydra.job.env_set.X``, ``hydra.callbacks.mine``)."""
    node, _, _ = _parent_node(cfg, key)
    if _has_key(cfg, key) or node is None or OmegaConf.get_type(node) is dict:
        return None
    return _close_setting(key, cfg) or None


def _close_setting(key: str, cfg: DictConfig) -> str:
    """`` (did you mean data.mask?)`` when ``cfg`` has a setting beside ``key`` of a name close to its, else ``""``."""
    node, parent, name = _parent_node(cfg, key)
    close = _nearest_name(name, node)
    return f" (did you mean {parent + '.' if parent else ''}{close}?)" if close else ""


def _parent_node(cfg: DictConfig, key: str) -> tuple[DictConfig | None, str, str]:
    """The node of ``cfg`` that holds (or would hold) ``key``, None where there is no such node; its path; the
    key's own name."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    return (node if isinstance(node, DictConfig) else None), parent, name


def _nearest_name(name: str, node: DictConfig | None) -> str | None:
    """The other name of ``node``'s settings closest to ``name``, if one is close."""
    names = [str(other) for other in node.keys() if other != name] if node is not None else []
    return next(iter(difflib.get_close_matches(name, names, n=1)), None)


def config_message(error: Exception) -> str:
    """The first line of a Hydra or OmegaConf message, with Hydra's "To append ..." hint (the fix) when
    it has one, or the line it ends in a colon before (an instantiation's reason); the lines after it
    list details (the config search path, the key again)."""
    first, *rest = str(error).strip().splitlines() or [type(error).__name__]
    if rest and (rest[0].startswith("To append") or first.endswith(":")):  # the fix, or the reason (instantiate's)
        return f"{first} {rest[0]}"
    if fixes := [line[3:] for line in rest if re.match(r"\d\. ", line)]:  # "Ambiguous value": its numbered ways out
        return f"{first} ({'; '.join(fixes)})".replace("\\'", "'")
    listed = next((index for index, line in enumerate(rest) if line.startswith("Available options in")), None)
    if listed is not None:
        options = [line.strip() for line in itertools.takewhile(lambda line: line.startswith("\t"), rest[listed + 1:])]
        return f"{first} (choose from: {', '.join(options)})"
    return first


def check_whole_number(key: str, value, least: int = 1, none: str | None = None, most: int | None = None) -> None:
    """``DipError`` unless the setting ``key`` is a whole number >= ``least`` (and <= ``most``, if given),
    or null, where ``none`` says what null means."""
    whole = isinstance(value, int) and not isinstance(value, bool)
    if (value is None and none) or (whole and value >= least and (most is None or value <= most)):
        return
    bounds = f">= {least}" if most is None else f"from {least} to {most}"
    also = f", or null for {none}" if none else ""
    raise DipError(f"{key} must be a whole number {bounds}{also}, got {value!r}")


def check_settings(cfg: DictConfig) -> None:
    """Refuse, in one line, the run's numbers that Lightning, torch or a callback would otherwise
    reject with a traceback (or, like ``data.size=0``, quietly read as something else)."""
    try:  # first: the steps and sizes that depend on the profile resolve through it
        use_full_settings(cfg.get("profile"))
    except ValueError as error:
        raise DipError(str(error)) from None
    check_resolvable(cfg)  # what is read next: ${oc.env:PHOTOS} with PHOTOS unset was OmegaConf's traceback
    for key in ("task.name", "task.physics._target_", "arch._target_", "input._target_", "optim._target_"):
        if OmegaConf.select(cfg, key) is None:  # a config of one's own that replaced its group without it
            raise DipError(f"the composed config has no {key}: the {key.split('.')[0]} config chosen must set it "
                           f"(a file of one's own that sets keys of several groups starts with '# @package _global_')")
    experiment = cfg.get("experiment")
    if isinstance(experiment, DictConfig) and (nested := [key for key in experiment if key in cfg]):
        chosen = OmegaConf.select(cfg, "hydra.runtime.choices.experiment", default=None) or (
            HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None)
        where = f"experiment/{chosen}.yaml" if chosen else "the experiment's file"
        raise DipError(f"{where} sets {', '.join(f'experiment.{key}' for key in nested)}, which nothing reads: a "
                       "file in conf/experiment/ that sets the run's settings starts with '# @package _global_' (its "
                       "own settings then go under experiment:)")
    if OmegaConf.select(cfg, "input.path") and _builds(cfg.input, "dip.inputs.PixelCode"):
        raise DipError(f"input {cfg.input._target_} (prior=tv, input=pixels) fits the pixels themselves, so task "
                       f"{cfg.task.name}'s input image (input.path) would be ignored: it is the code z of prior=dip")
    check_whole_number("trainer.max_steps", cfg.trainer.max_steps)
    check_whole_number("data.size", cfg.data.size, none="the whole image")
    check_whole_number("metrics_every", cfg.metrics_every)
    check_whole_number("image_log_every", cfg.image_log_every)
    check_whole_number("max_rollbacks", cfg.max_rollbacks, none="never stopping")
    for key in ("seed", "observation_seed"):  # the range numpy's generator, which Lightning seeds, takes
        check_whole_number(key, cfg.get(key), least=0, most=2**32 - 1)
    check_whole_number("restarts", cfg.restarts)
    check_whole_number("checkpoint.every_n_steps", OmegaConf.select(cfg, "checkpoint.every_n_steps"), least=0,
                       none="only on an interruption")
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise DipError(f"trainer.accelerator={accelerator}, but torch finds no CUDA GPU here "
                       f"(torch {torch.__version__}): leave it at auto, or choose cpu")
    devices = OmegaConf.select(cfg, "trainer.devices")
    one_device = devices in (1, "1") or (isinstance(devices, (list, ListConfig)) and len(devices) == 1)
    if devices is not None and not one_device:  # several would start distributed training over one image
        raise DipError(f"trainer.devices={devices}: a restoration runs on one device (a list of one GPU index, "
                       f"[2], picks which); a sweep spreads runs over the GPUs: -m ... hydra/launcher=gpus")
    for key in ("checkpoint.keep", "check_memory"):  # read as truth values: any text would count as true
        if not isinstance(value := OmegaConf.select(cfg, key), bool):
            raise DipError(f"{key} must be true or false, got {value!r}")
    for key in ("path", "observation", "mask"):  # Path("") is the working directory, or no mask at all
        if isinstance(value := cfg.data.get(key), str) and not value.strip():
            raise DipError(f"data.{key} is empty: name a file, or leave data.{key} out")
    if cfg.data.mode not in ("auto", "L", "RGB"):
        raise DipError(f"data.mode must be auto, L or RGB, got {cfg.data.mode!r}")
    for key, value in (("optim.lr", OmegaConf.select(cfg, "optim.lr")), ("backtrack_db", cfg.backtrack_db)):
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < math.inf):
            raise DipError(f"{key} must be a finite number > 0{', or null for none' if key == 'backtrack_db' else ''}, "
                           f"got {value!r}")
    if cfg.data.get("mask") is not None and "mask_file" not in cfg.task.physics:
        raise DipError(f"data.mask={cfg.data.mask} is given, but task {cfg.task.name} takes no mask (the inpainting "
                       "tasks do)")


def instantiate_settings(node: DictConfig, what: str, **kwargs):
    """Build ``node``; a constructor that rejects its settings becomes a one-line ``DipError``."""
    target = node.get("_target_")
    if kwargs and not node.get("_partial_"):  # the class would be built without them, then called with them
        raise DipError(f"{what} {target}: its config needs _partial_: true (the framework builds it with "
                       f"{', '.join(f'{name}=' for name in kwargs)} added)")
    check_setting_types(node, what)
    try:
        built = instantiate(node, _convert_="all")
        return built(**kwargs) if kwargs else built
    except DipError:
        raise
    except Exception as error:
        nested = _nested_rejecter(node, what, error)
        if nested:
            raise settings_error(error, *nested) from None
        raise settings_error(error, what, target, passed=tuple(kwargs)) from None


def _nested_rejecter(node: DictConfig, what: str, error: Exception) -> tuple[str, str] | None:
    """The settings and class of a node inside ``node`` whose constructor raised ``error`` (Hydra names it in
    its message), by the name the user sets it under: ``mask``, which ``task.physics.mask: ${mask}`` reads."""
    found = re.search(r"^Error in call to target '([\w.]+)'.*\nfull_key: ([\w.]+)$", str(error), re.DOTALL)
    if not found or not found[2].startswith(f"{what}."):
        return None
    inner = node
    try:
        for key in found[2][len(what) + 1:].split("."):
            inner = inner._get_node(key)
        read = re.fullmatch(r"\$\{([\w.]+)\}", str(inner._value())) if inner._is_interpolation() else None
    except (AttributeError, KeyError, OmegaConfBaseException):  # a path through what Hydra resolved: its own key
        read = None
    return (read[1] if read else found[2]), found[1]


def check_setting_types(node: DictConfig, what: str) -> None:
    """``DipError`` naming the setting of ``node`` (``what``: its place in the config), or of a node it
    builds, whose value is not of a kind its class's constructor declares: text where a number goes
    (``sigma=lots``), a number that is not finite (``lr=inf``), anything but true or false for a switch.
    A constructor would take most of them as they are, or fail without naming the setting."""
    try:
        parameters = _declared_parameters(_locate(node._target_))
    except Exception:  # noqa: BLE001 (no class to ask: instantiating it says so)
        parameters = {}
    for key in node:
        if str(key).startswith("_"):
            continue
        child = node._get_node(key)
        # a group's node placed by interpolation (task.physics.mask: ${mask}) is named by its group
        place = f"{what}.{key}"
        if child._is_interpolation() and (group := re.fullmatch(r"\$\{([\w.]+)\}", str(child._value()))):
            place = group[1]
        try:
            value = node[key]
        except OmegaConfBaseException:
            continue
        if isinstance(value, DictConfig) and "_target_" in value:
            check_setting_types(value, place)
        elif key in parameters and (kinds := _kinds(parameters[key].annotation)) and not _of_kind(value, kinds):
            said = " or ".join(KINDS[kind] for kind in kinds if kind in KINDS)
            if set(kinds) - {type(None)} == {str} and isinstance(value, (int, float)):  # Hydra reads a bare number
                raise DipError(f"{place} must be text, got the number {value!r}: quote it ({place}=\"'{value}'\")")
            raise DipError(f"{place} must be {said}{' (or null)' if type(None) in kinds else ''}, got {value!r}")


def _declared_parameters(target) -> dict[str, inspect.Parameter]:
    """The parameters ``target`` takes by name, a class's with those its ``__init__`` hands on to its
    bases' through ``**kwargs`` (``NoiseCode``'s ``reg_noise_std``); none where an annotation cannot be read."""
    own_inits = [vars(kind)["__init__"] for kind in inspect.getmro(target)
                 if kind is not object and "__init__" in vars(kind)] if inspect.isclass(target) else [target]
    parameters: dict[str, inspect.Parameter] = {}
    for function in own_inits:
        try:
            signature = inspect.signature(function, eval_str=True)
        except Exception:  # noqa: BLE001 (an annotation naming what its module does not import)
            return {}
        named = {name: parameter for name, parameter in signature.parameters.items()
                 if parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}
        parameters = named | parameters  # a subclass's own annotation first
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in signature.parameters.values()):
            break
    return parameters


def _kinds(annotation) -> tuple[type, ...]:
    """The kinds of ``KINDS`` (and None) an annotation allows; empty when it allows others too."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        kinds = typing.get_args(annotation)
    else:
        kinds = (annotation,)
    return kinds if all(kind in KINDS or kind is type(None) for kind in kinds) else ()


def _of_kind(value, kinds: tuple[type, ...]) -> bool:
    if value is None:  # a null where the annotation has none is the constructor's to judge (a default of None)
        return True
    if isinstance(value, bool):
        return bool in kinds
    if isinstance(value, int):
        return int in kinds or float in kinds
    if isinstance(value, float):
        return float in kinds and math.isfinite(value)
    return isinstance(value, str) and str in kinds


def _builds(node: DictConfig, class_path: str) -> bool:
    """Whether ``node`` builds an instance of the class ``class_path`` (or of a subclass)."""
    try:
        target, wanted = _locate(node._target_), _locate(class_path)
    except Exception:  # noqa: BLE001 (no class there: instantiating it says so)
        return False
    return inspect.isclass(target) and issubclass(target, wanted)


def settings_error(error: Exception, what: str, target: str, passed: tuple[str, ...] = ()) -> DipError:
    """The rejection of the ``what`` settings by ``target``'s constructor, as one line: Hydra wraps the
    constructor's error, which is reported (a ``DipError`` as it is: it already says what is wrong).
    ``passed``: the arguments the framework adds to the settings (a generator's ``in_channels``, ...)."""
    cause = error.__cause__ or error
    if isinstance(cause, DipError):
        return cause
    if isinstance(cause, MissingMandatoryValue):  # a ??? of the config (input=image's path)
        return DipError(f"{cause.full_key} must be given: {target} needs it ({cause.full_key}=...)")
    if isinstance(cause, TypeError) and (unknown := re.search(r"unexpected keyword argument '(\w+)'", str(cause))):
        if unknown[1] in passed:
            return DipError(f"{what} {target} takes no argument {unknown[1]!r}, which the framework passes: it is "
                            f"built with {', '.join(f'{name}=' for name in passed)}")
        # often a key set by one group (a task's input.path) kept when a later group (prior=tv) swaps the class
        return DipError(f"invalid {what} settings: {target} takes no setting {unknown[1]!r} "
                        f"(drop it with ~{what}.{unknown[1]}, or choose another {what.split('.')[0]})")
    return DipError(f"invalid {what} settings: {one_line(cause, 300)}")


register_resolvers()

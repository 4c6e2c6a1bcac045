"""Override values as Hydra, then OmegaConf, read them: quoted so that they read back as given (for
advice to paste into a shell, and for the run folders the command line pins), read back, and the run
folders a command line names. Light: ``dip.errors`` quotes its advice with it before the libraries load."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path


def hydra_quoted(text: str) -> str:
    """``text`` as a quoted override value that Hydra, then OmegaConf, read back as ``text``: ``${`` escaped
    (not interpolated again), and the backslashes before it, before a quote or at the end, doubled."""
    text = re.sub(r"(\\+)(?=\$\{)", lambda run: run[1] * 2, text).replace("${", "\\${")
    text = re.sub(r"(\\+)(?='|$)", lambda run: run[1] * 2, text)
    return "'" + text.replace("'", "\\'") + "'"


def pasted_override(key: str, value) -> str:
    """``key=value`` as a line of advice can give it, to be pasted into a shell: as it is where nothing in it is
    special to the shell or to Hydra, else quoted for both (``'hydra.run.dir='"'"'my runs'"'"''``)."""
    text = str(value)
    # Hydra reads letters beyond ASCII, a ~, or true, null and numbers otherwise: not a folder so named
    if re.fullmatch(r"[\w/.+:@%-]+", text, re.ASCII) and _parsed(text) == text:
        return f"{key}={text}"
    return shlex.quote(f"{key}={hydra_quoted(text)}")


RUN_FOLDER_KEYS = ("hydra.run.dir", "hydra.sweep.dir")


def setting_name(override: str) -> str:
    """The setting or config group an override names, without Hydra's ``+``, ``++`` or ``~``: ``a.b`` for
    ``++a.b=1``."""
    return override.lstrip("+~").partition("=")[0]


def run_folders(arguments: list[str]) -> list[tuple[str, Path]]:
    """The run and sweep folders that the command line ``arguments`` name, with their keys."""
    return [(key, Path(unquoted(folder))) for key, folder in run_folder_arguments(arguments) if unquoted(folder)]


def home_expanded(arguments: list[str]) -> list[str]:
    """``arguments`` with a run or sweep folder under ``~`` (``hydra.run.dir='~/runs'``) named from the home folder
    on, as an input file's path is read: Hydra would make a folder named ~ in the working directory. The rest of
    the value stays as written, its interpolations too (``~/runs/${hydra:job.name}``)."""
    return [_home_expanded(argument) if setting_name(argument) in RUN_FOLDER_KEYS else argument
            for argument in arguments]


def _home_expanded(argument: str) -> str:
    key, _, value = argument.partition("=")
    quote = value[0] if len(value) > 1 and value[0] in ("'", '"') and value.endswith(value[0]) else ""
    user, slash, rest = value[len(quote):len(value) - len(quote)].partition("/")
    home = os.path.expanduser(user) if user.startswith("~") else user
    if home == user or any(special in home for special in ("'", '"', "\\", "${")):  # an unknown user, a name to quote
        return argument
    quote = quote or "'"  # the home folder's name may hold what Hydra reads otherwise unquoted (a comma: a sweep)
    return f"{key}={quote}{home}{slash}{rest}{quote}"


def run_folder_arguments(arguments: list[str]) -> list[tuple[str, str]]:
    """``(key, value)`` of each argument that sets a run or sweep folder, with or without ``+``/``++``."""
    named = [(key.lstrip("+"), value) for key, _, value in (argument.partition("=") for argument in arguments)]
    return [(key, value) for key, value in named if key in RUN_FOLDER_KEYS]


def _parsed(value: str):
    """An override's value as Hydra's parser reads it (``None`` for null), or ``value`` itself where the parser
    refuses it (Hydra says so then)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser  # Hydra's parser, loaded when asked
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides([f"key={value}"])[0].value()
    except HydraException:
        return value


def unquoted(value: str) -> str:
    """An override's value as Hydra reads it (``''`` is empty), with OmegaConf's escaped ``\\${`` read as the
    text ``${``; the value as given where Hydra's parser refuses it (Hydra says so then)."""
    parsed = _parsed(value)
    if not isinstance(parsed, (str, int, float)):
        return value
    # an odd run of backslashes before ${ is escaped backslashes and an escaped ${; an even one, a live ${
    return re.sub(r"(\\+)(?=\$\{)", lambda run: "\\" * (len(run[1]) // 2) if len(run[1]) % 2 else run[1],
                  str(parsed))

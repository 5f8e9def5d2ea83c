"""Hydra settings an app refuses before Hydra composes: removing or changing featx's run-folder callback, and giving
Hydra's own logging a file (Hydra opens it as it composes, before any check could see where it lies); and
``--hydra-help`` with overrides of the app's config.

Example::

    check_hydra_settings("featx", parsed_overrides("featx", ["~hydra.callbacks.output_folders"]))  # exits: refused
"""

from __future__ import annotations

import argparse
from typing import List, Mapping, Optional, Sequence, Tuple

from hydra.core.override_parser.types import (
    Glob,
    Override,
)

from featx.cli.errors import fail
from featx.cli.override_checks import choice_values, override_values
from featx.spec.limits import shortened

#: featx's Hydra callback that checks the run folders before Hydra writes there (the apps' configs register it)
FEATX_CALLBACK = "hydra.callbacks.output_folders"
#: Hydra's logging of its own, which Hydra configures (opening its log files) as it composes, before any callback
HYDRA_LOGGING = "hydra.hydra_logging"
#: Hydra's own ``hydra/hydra_logging`` options that open no file (``hydra_debug`` writes one in the working directory)
HYDRA_LOGGING_CHOICES = ("default", "disabled", "none")
_CALLBACK_REFUSED = (
    f"featx's callback {FEATX_CALLBACK} checks the run folders before Hydra writes there (it refuses to replace a "
    "file of yours): it is not removed or changed; add a callback of yours beside it "
    "(+hydra.callbacks.NAME={_target_: ...})"
)
_LOG_FILE_REFUSED = (
    f"Hydra opens {HYDRA_LOGGING}'s log files as it composes, before featx can check where they lie: it takes no "
    "handler with a filename (nor an interpolation, which may give one) and hydra/hydra_logging= takes "
    f"{', '.join(HYDRA_LOGGING_CHOICES[:-1])} or {HYDRA_LOGGING_CHOICES[-1]}; a log file of the run goes in "
    "hydra.job_logging"
)


def _below(key: str, node: str) -> bool:
    """Whether ``key`` is the config node ``node`` or a key below it."""
    return key == node or key.startswith(node + ".")


def hydra_node_problem(key: str, value: object, deleting: bool = False) -> Optional[str]:
    """Why setting the config node ``key`` to ``value`` (a mapping is merged in: each key it gives is set), or
    deleting it, is refused before Hydra composes, or None: it removes or changes featx's callback
    (:data:`FEATX_CALLBACK`), or gives Hydra's own logging (:data:`HYDRA_LOGGING`) a file or an interpolation (which
    may give one): Hydra opens that file as it composes, before the callback could check where it lies."""
    nodes: List[Tuple[str, object]] = [(key, value)]
    while nodes:
        name, below = nodes.pop()
        replaced = name == "hydra" and (deleting or not isinstance(below, (Mapping, type(None))))  # null: Hydra's
        replaced |= name == "hydra.callbacks" and (deleting or not isinstance(below, Mapping))  # a mapping merges in
        if replaced or _below(name, FEATX_CALLBACK):
            return _CALLBACK_REFUSED
        if deleting:
            return None
        interpolated = isinstance(below, str) and "${" in below
        if _below(name, HYDRA_LOGGING) and (name.rpartition(".")[2] == "filename" or interpolated):
            return _LOG_FILE_REFUSED
        if isinstance(below, Mapping):
            nodes += [(f"{name}.{sub}", item) for sub, item in below.items()]
    return None


def hydra_group_problem(group: str, package: Optional[str], choices: Sequence[str]) -> Optional[str]:
    """Why choosing ``choices`` of the config group ``group`` (placed at ``package``, else at the group's own node) is
    refused before Hydra composes, or None: a ``hydra/hydra_logging`` choice other than
    :data:`HYDRA_LOGGING_CHOICES`, or a file placed at Hydra's logging or at ``hydra.callbacks`` (featx does not read
    it before Hydra composes; :func:`hydra_node_problem`)."""
    target = (group.replace("/", ".") if package is None else package).removeprefix("_global_.")
    if group == "hydra/hydra_logging" and package is None:
        return None if all(choice in HYDRA_LOGGING_CHOICES for choice in choices) else _LOG_FILE_REFUSED
    if _below(target, HYDRA_LOGGING):
        return _LOG_FILE_REFUSED
    return _CALLBACK_REFUSED if target == "hydra" or _below(target, "hydra.callbacks") else None


def check_hydra_settings(app: str, overrides: Sequence[Tuple[str, Override]], where: str = "") -> None:
    """Refuse, before Hydra composes, an override that removes or changes featx's callback (``~``, ``+``, ``++`` or
    plain) or gives Hydra's own logging a file (:func:`hydra_node_problem`, :func:`hydra_group_problem`); a callback
    of the user's beside featx's is taken. ``where`` comes before each message (the file that gives the overrides)."""
    for argument, override in overrides:
        key = override.key_or_group
        if "/" in key or override.package is not None:  # a config group: hydra/hydra_logging=disabled
            glob = isinstance(override.value(), Glob)  # its names unlisted: taken as a name of none of the choices
            problem = hydra_group_problem(key, override.package, ["glob()"] if glob else choice_values(override))
        else:  # a key: the values of one of Hydra's config are listed (an app's key is judged by its name alone)
            values = [] if override.is_delete() or not _below(key, "hydra") else override_values(override)
            problems = (hydra_node_problem(key, value, override.is_delete()) for value in values or [None])
            problem = next((problem for problem in problems if problem is not None), None)
        if problem is not None:
            fail(app, f"{where}{shortened(argument)}: {problem}")


def sets_hydra(argument: str) -> bool:
    """Whether the override ``argument`` sets Hydra's own config (``hydra.run.dir=...``, ``hydra/job_logging=...``,
    ``hydra=...``), not the app's."""
    key = argument.lstrip("+~").split("=", 1)[0]
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def check_hydra_help(app: str, flags: argparse.Namespace) -> None:
    """Refuse an override of the app's config with ``--hydra-help``: Hydra composes its help without the app's
    config, and answered ``backbone=resnet18`` with advice to append it (``+backbone=resnet18``)."""
    apps = [argument for argument in flags.overrides if not sets_hydra(argument)]
    if flags.hydra_help and apps:
        fail(
            app,
            f"{shortened(apps[0])}: --hydra-help shows Hydra's own options, composed without the app's config, so it "
            f"takes Hydra's settings only (hydra.*, hydra/...); the app's options: {app} --help",
        )

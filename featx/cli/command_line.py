"""An app's command line read with Hydra's own argument parser and checked before Hydra composes: its options
(``--config-name`` a name inside the config roots that starts from the app's config, one mode, no
``--experimental-rerun`` or ``--config-path``, a ``--cfg -p`` key the config has), its overrides
(:mod:`featx.cli.override_checks`, :mod:`featx.cli.hydra_settings`) and the user's config files they bring in
(:mod:`featx.cli.user_configs`); and for tab completion (``-sc``), the line being completed.

Example::

    flags, unplaced = hydra_flags(sys.argv[1:])
    check_flags("featx", flags, unplaced)
    check_command_line("featx", flags, sys.argv[1:], AppConfig)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import typing
from pathlib import Path, PurePosixPath
from typing import List, Sequence, Tuple

from hydra._internal.utils import get_args, get_args_parser
from hydra.plugins.completion_plugin import CompletionPlugin

from featx.cli.errors import fail
from featx.cli.hydra_settings import check_hydra_help, check_hydra_settings
from featx.cli.override_checks import (
    check_choices,
    check_deleted_keys,
    check_plain_keys,
    config_dirs,
    leaves_config_roots,
    parsed_overrides,
    problem_with,
)
from featx.cli.sweeps import (
    check_sweep_size,
    check_sweeper_params,
    group_options,
)
from featx.cli.user_configs import check_file_values, check_primary_config, check_user_backbone_files, schema_names
from featx.spec.keys import suggest
from featx.spec.limits import shortened

#: Hydra's options of which a command line takes one
_MODES = ("run", "multirun", "cfg", "info", "shell_completion")


def hydra_flags(arguments: Sequence[str]) -> Tuple[argparse.Namespace, List[str]]:
    """The command line's options as Hydra's own argument parser reads them (``--config-n`` is ``--config-name``,
    as argparse takes any unambiguous abbreviation), and the arguments it cannot place (an unknown option, overrides
    on both sides of a flag); none where it cannot parse them (Hydra then says why)."""
    parser = get_args_parser()
    try:  # --version and a parse error print (and exit) here too: Hydra says it once
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return parser.parse_known_args(list(arguments))
    except SystemExit:
        return parser.parse_known_args([])[0], []


def check_unplaced(app: str, unplaced: Sequence[str]) -> None:
    """Refuse what Hydra's parser cannot place (argparse's usage block and "unrecognized arguments")."""
    if not unplaced:
        return
    option = next((argument for argument in unplaced if argument.startswith("-")), None)
    if option is not None:
        fail(app, f"{shortened(option)}: not an option of {app} (see {app} --help)")
    fail(
        app,
        f"{shortened(unplaced[0])}: Hydra reads the overrides as one group, before or after its options "
        "(--cfg, -m, ...); put them together",
    )


def check_config_name(app: str, flags: argparse.Namespace) -> None:
    """Refuse a ``--config-name`` that leaves the config roots (Hydra would read, and ``--cfg job`` print, any YAML
    file the user can read), and one naming a schema, a backbone or a Hydra group: without an app config's run
    folders and checks, Hydra would write its files into the working directory (``outputs/``)."""
    name = flags.config_name
    if name is None:
        return
    if leaves_config_roots(name):
        fail(
            app,
            f"--config-name {shortened(name)}: a config name is a name inside the config roots, not a "
            "path; put the file in a folder and pass that folder with --config-dir",
        )
    first = PurePosixPath(name).parts[0].removesuffix(".yaml") if PurePosixPath(name).parts else ""
    not_apps = set(schema_names()) | {"backbone"}
    if first in not_apps:
        fail(
            app,
            f"--config-name {shortened(name)}: not an app config (a schema or a config group); the apps' configs "
            "are config, extract and export, or a file of yours in --config-dir whose defaults start from one",
        )


def check_package(app: str, flags: argparse.Namespace, schema: type) -> None:
    """Refuse a ``--cfg ... --package`` (``-p``) key that the shown config lacks: Hydra says so without featx's
    prefix or the valid keys. Keys below a node the schema does not type (a stage's name) are left to Hydra."""
    package = flags.package
    if not flags.cfg or package in (None, "", "_global_"):  # Hydra shows the whole config for these
        return
    keys = list(typing.get_type_hints(schema))
    shown = {"job": keys, "hydra": ["hydra"]}.get(flags.cfg, [*keys, "hydra"])
    first = package.split(".")[0]
    if first not in shown:
        where = f"no such key in the --cfg {flags.cfg} config{suggest(first, shown)}"
        fail(app, f"--package (-p) {shortened(package)}: {where} (valid: {', '.join(shown)})")
    problem = None if first == "hydra" else problem_with(package, schema, [])
    if problem is not None:
        fail(app, f"--package (-p) {problem}")


#: Hydra's shell completion commands (``--shell-completion install=bash``) and the shells it completes for
COMPLETION_COMMANDS = ("install", "uninstall", "query")
COMPLETION_SHELLS = ("bash", "zsh", "fish")


def check_completion_command(app: str, commands: Sequence[str]) -> None:
    """Refuse a ``--shell-completion`` (``-sc``) without exactly one of Hydra's commands: ``install=bash``,
    ``uninstall=zsh`` or ``query=fish`` (Hydra raises a ValueError with a traceback), or a query outside a
    completion (Hydra's KeyError for COMP_LINE). ``commands``: what Hydra's parser read as overrides (featx's
    override checks do not apply: these are no overrides)."""
    known = len(commands) == 1 and commands[0].partition("=")[::2] in {
        (command, shell) for command in COMPLETION_COMMANDS for shell in COMPLETION_SHELLS
    }
    if not known:
        fail(
            app,
            f"--shell-completion takes one of {', '.join(f'{command}=SHELL' for command in COMPLETION_COMMANDS)} "
            f'(SHELL: {", ".join(COMPLETION_SHELLS)}), e.g. eval "$({app} -sc install=bash)"; got '
            f"{' '.join(commands) or 'none'}",
        )
    if commands[0].startswith("query=") and "COMP_LINE" not in os.environ:
        fail(app, f"--shell-completion {commands[0]} is what the installed completion runs (it sets COMP_LINE)")


#: the options of a command line that say which configs Hydra reads
_LOADER_OPTIONS = ("config_dir", "config_name")


def check_completed_line(app: str, flags: argparse.Namespace, schema: type) -> List[str]:
    """For ``-sc query=SHELL``: the line being completed (``COMP_LINE``, read as Hydra's completion reads it) passes
    the checks of a command line, its options (``--config-dir``, ``--config-name``; where it gives none, the
    ``flags`` of the ``-sc`` call's own) and its words but the one being typed, else nothing is offered (exit 1,
    nothing printed over the user's prompt). Hydra composes the config from those words and prints values from it: a
    file outside the config roots, a resolver in a user's file or an alias bomb would be read unchecked. Nor is
    anything offered for a config group choice typed as a path (``backbone=../``, ``backbone=/``), whose folder's
    files Hydra would list: a group's options are names in the config roots. Returns the line's options for the
    ``-sc`` call's command line (Hydra's completion composes with the options of its own call)."""
    try:
        line = CompletionPlugin.strip_python_or_app_name(os.environ["COMP_LINE"])
        with contextlib.redirect_stderr(io.StringIO()):
            completed = get_args(line.split())
            words = completed.overrides
            if line and not line.endswith(" ") and words:
                key, equals, choice = words.pop().lstrip("+~").partition("=")
                if equals and "." not in key and (leaves_config_roots(choice) or choice.startswith(".")):
                    raise SystemExit(1)
            for name in _LOADER_OPTIONS:
                if getattr(completed, name) is None:
                    setattr(completed, name, getattr(flags, name))
            if completed.config_dir is not None and not Path(completed.config_dir).is_dir():
                raise SystemExit(1)  # Hydra's error, over the prompt
            check_flags(app, completed, [])
            check_command_line(app, completed, words, schema)
    except (SystemExit, RuntimeError):  # a featx refusal; argparse's or Hydra's failure to read the line
        raise SystemExit(1) from None
    given = {name: getattr(completed, name) for name in _LOADER_OPTIONS}
    return [f"--{name.replace('_', '-')}={value}" for name, value in given.items() if value is not None]


def check_command_line(app: str, flags: argparse.Namespace, given: Sequence[str], schema: type) -> None:
    """The checks of a command line's package and overrides against ``schema``, before Hydra composes."""
    check_package(app, flags, schema)
    overrides = parsed_overrides(app, given)
    check_sweeper_params(app, overrides)
    check_sweep_size(app, overrides, functools.partial(group_options, folders=config_dirs(flags, overrides)))
    check_hydra_settings(app, overrides)
    check_deleted_keys(app, overrides, schema)
    custom_roots = flags.config_dir is not None
    searchpath = any(override.key_or_group == "hydra.searchpath" for _, override in overrides)
    check_choices(app, overrides, custom_roots or searchpath)
    check_plain_keys(app, overrides, schema)
    check_user_backbone_files(app, overrides, config_dirs(flags, overrides), schema)
    folders = config_dirs(flags, overrides)
    check_file_values(app, check_primary_config(app, flags, folders), folders, schema, overrides)


def check_flags(app: str, flags: argparse.Namespace, unplaced: Sequence[str]) -> None:
    """The checks of a command line's options (Hydra's parser read them into ``flags``; ``unplaced``: the arguments
    it could not place) before its overrides'."""
    if flags.resolve and not (flags.cfg or flags.help):  # read as Hydra reads them: --cfg=job, -cjob, --cf job
        fail(app, "--resolve shows a config resolved: use it with --cfg job (or --cfg hydra, --cfg all) or --help")
    modes = [f"--{name.replace('_', '-')}" for name in _MODES if getattr(flags, name)]
    if len(modes) > 1:  # Hydra's own check raises a ValueError with a traceback
        fail(app, f"{' and '.join(modes)}: give one of --run, --multirun (-m), --cfg, --info, --shell-completion")
    check_unplaced(app, unplaced)
    if flags.experimental_rerun is not None:  # Hydra unpickles the file: reading it may run any code
        fail(
            app,
            "--experimental-rerun: featx does not read Hydra's pickled configs (unpickling a file runs code it holds); "
            "run the command again with the overrides the run's .hydra/overrides.yaml lists",
        )
    if flags.config_path is not None:  # the primary config's folder in place of featx's: none of its checks hold
        fail(
            app,
            f"--config-path: {app} reads its own configs; add a folder of yours with --config-dir (-cd) and name a "
            "config of yours in it with --config-name (-cn)",
        )
    check_config_name(app, flags)
    check_hydra_help(app, flags)

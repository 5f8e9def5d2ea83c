"""The config files of the user's config folders (``--config-dir``, ``hydra.searchpath``), read with featx's own reader
and checked before Hydra composes them.

- A primary config named by ``--config-name`` must start from the app's own config (its run folders and checks
  come with it), and a file named like an app config that Hydra would ignore is refused.
- The values of the primary config's chain and of the files its defaults lists bring in pass the command line's
  checks, and so does a file's ``hydra.sweeper.params`` (a second command line); no unquoted ``yes``/``no``/``on``/
  ``off`` (Hydra's loader reads them as bools); a ``hydra`` node or defaults entry that removes featx's callback or
  gives Hydra's own logging a file is refused.
- A chosen ``backbone/<name>.yaml`` is read with featx's spec reader (Hydra's loader answers a tab with a traceback),
  its resolver calls refused before Hydra composes (and tab completion prints) them.

Example::

    folders = config_dirs(flags, overrides)
    check_file_values("featx", check_primary_config("featx", flags, folders), folders, AppConfig, overrides)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    Glob,
    Override,
)
from hydra.errors import HydraException

from featx.cli.errors import fail
from featx.cli.hydra_settings import check_hydra_settings, hydra_group_problem, hydra_node_problem
from featx.cli.override_checks import check_choices, check_plain_keys, choice_values, problem_with
from featx.cli.sweeps import (
    MAX_BATCH_SIZE,
    SWEEPER_PARAMS,
    batch_size_problem,
)
from featx.errors import SpecError
from featx.spec.limits import MAX_SPEC_BYTES, shortened
from featx.spec.load import check_spec_values, refuse_resolvers
from featx.spec.overrides import duplicated_key, not_in_grammar
from featx.spec.yaml_file import read_spec_file

#: each app's packaged config, which a config of the user's (``--config-name``) must start from
APP_CONFIGS = {"featx": "config", "featx-extract": "extract", "featx-export": "export"}


def _first_default(path: Path, group: str) -> Optional[str]:
    """The config the defaults list of the config file ``path`` in ``group`` (``""``: the root) starts from
    (``_self_`` and ``override`` entries passed over; ``/config`` and ``config@_global_`` read as ``config``), or
    None."""
    try:
        content = read_spec_file(path)
    except SpecError:
        return None  # Hydra names what is wrong with the file when it composes it
    chosen = [name for name, overriding in _defaults_entries(content, group) if not overriding]
    return chosen[0] if chosen else None


def schema_names() -> List[str]:
    """The names of the configs featx stores in Hydra's ConfigStore (its schemas: ``featx_app_schema``, ...)."""
    return [entry.removesuffix(".yaml") for entry in ConfigStore.instance().repo]


def check_primary_config(app: str, flags: argparse.Namespace, folders: Sequence[Path]) -> List[Path]:
    """The primary config in the user's folders (``folders``). One named by ``--config-name`` must start from this
    app's config, directly or through files of the user's: the app's run folders and their checks come with it;
    without them, Hydra writes its files into the working directory (``outputs/``). A file named like an app config
    and meant for featx (it starts from an app config or a schema of featx's) is refused: Hydra reads featx's own
    and ignores it (a project's own ``config.yaml`` beside its ``backbone/`` is left alone). A file of the chain that
    featx's reader refuses is named with why (:func:`_read_users_config`). Returns the user's files of the chain."""
    own, apps = APP_CONFIGS[app], set(APP_CONFIGS.values())
    name = (flags.config_name or own).removesuffix(".yaml")
    seen: List[Path] = []  # the user's files of the chain, in order
    while name not in apps:
        found = _users_config(folders, name)
        if found is not None and found not in seen:
            _read_users_config(app, found)
        first = None if found is None or found in seen else _first_default(found, name.rpartition("/")[0])
        if found is not None and found not in seen:
            seen.append(found)
        if first is None:
            if seen:
                fail(
                    app,
                    f"--config-name {shortened(str(flags.config_name))}: {seen[-1]} does not start from {app}'s "
                    f"config: the first entry of its defaults list must be {own} (or a file of yours that starts "
                    "from it), whose run folders and checks the app needs (without them Hydra writes into the "
                    f"working directory){_own_backbone_advice(seen[-1], own)}",
                )
            return seen  # not a file of the user's: Hydra says it finds no such config
        name = first
    shadow = _users_config(folders, name)
    if shadow is not None and _first_default(shadow, "") in apps | set(schema_names()):
        fail(
            app,
            f"{shadow} is named like featx's app config {name}.yaml, which Hydra reads instead and ignores yours; "
            f"rename it (e.g. my_{name}.yaml) and pass --config-name my_{name}",
        )
    if name != own:
        fail(
            app,
            f"--config-name {shortened(str(flags.config_name))}: {f'{seen[-1]} starts from' if seen else 'it is'} "
            f"{name}, the config of {next(key for key, value in APP_CONFIGS.items() if value == name)}; {app} runs "
            f"from {own}",
        )
    return seen


def _own_backbone_advice(path: Path, own: str) -> str:
    """What the refusal of the user's config file ``path`` that does not start from the app's config ``own`` adds
    where the file holds its own ``backbone`` mapping (a ``--cfg job`` dump): with ``defaults: [config, _self_]``
    Hydra merges it into the config's backbone choice, whose stages the file leaves out come back."""
    try:
        holds_backbone = isinstance(read_spec_file(path).get("backbone"), Mapping)
    except SpecError:
        return ""
    if not holds_backbone:
        return ""
    return (
        f"; it holds its own backbone mapping, which {own}'s backbone choice would be merged into (keys and stages "
        f"it leaves out coming back): to run it as written, start it with defaults: [{own}, override backbone: null, "
        "_self_]"
    )


def _leaves(content: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, object]]:
    """(dotted key, value) of each value of a config file's mapping that is not itself a mapping."""
    for key, value in content.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _holds_nothing(path: Path) -> bool:
    """Whether the config file ``path`` holds no value at all (empty, or comments only), which Hydra reads as an
    empty config; a file featx's reader refuses unread (a fifo, a file too large) holds something."""
    try:
        small = path.is_file() and path.stat().st_size <= MAX_SPEC_BYTES
        return small and yaml.load(path.read_bytes(), Loader=yaml.SafeLoader) is None
    except (OSError, ValueError, RecursionError, yaml.YAMLError):
        return False


def _read_users_config(app: str, path: Path) -> Dict[str, Any]:
    """The keys of a config file of the user's, read as featx reads a spec file; what that reader refuses is one
    error naming the file: ``run: off``, which Hydra's loader reads as false where the command line's ``run=off`` is
    the string ``'off'`` (refused), an octal ``017`` (15, and 17 on the command line), a tab (Hydra's traceback). A
    file without values (comments only) is an empty config, as Hydra reads it."""
    try:
        return read_spec_file(path)
    except SpecError as error:
        if _holds_nothing(path):
            return {}
        fail(app, f"{path}: {error.message}" if error.origin is not None else error.message)  # a fifo's names it


def check_sweeper_file(
    app: str,
    path: Path,
    sweeper: Mapping[str, Any],
    overrides: Sequence[Tuple[str, Override]],
    folders: Sequence[Path],
    schema: type,
) -> None:
    """The ``hydra.sweeper`` node of the user's config file ``path``: its ``params`` (a sweep, the sweeper reads
    each as the override ``KEY=VALUE``) pass the command line's checks of its overrides (``extract.overwrite: 2``
    there replaced a folder of features), and a ``max_batch_size`` below 1 is refused. A key the command line
    (``overrides``) sets too is left out: the sweeper takes the command line's."""
    problem = batch_size_problem(sweeper.get("max_batch_size"))
    if problem is not None:
        fail(app, f"{path}: {MAX_BATCH_SIZE}: {problem}")
    params = sweeper.get("params")
    given = {override.get_key_element() for _, override in overrides}
    swept = []
    for key, value in params.items() if isinstance(params, Mapping) else ():
        if value is None or isinstance(value, (Mapping, list)):  # Hydra refuses them: a param is a string
            continue
        argument = f"{key}={value}"
        try:
            (override,) = OverridesParser.create().parse_overrides([argument])
        except (HydraException, ValueError, RecursionError) as error:
            fail(app, f"{path}: {SWEEPER_PARAMS}: {not_in_grammar(argument, error)}")
        duplicate = duplicated_key(argument)
        if duplicate is not None:
            fail(app, f"{path}: {SWEEPER_PARAMS}: {duplicate}")
        if override.get_key_element() not in given:
            swept.append((argument, override))
    check_hydra_settings(app, swept, where=f"{path}: {SWEEPER_PARAMS}: ")
    check_choices(app, swept, True, where=f"{path}: {SWEEPER_PARAMS}: ")
    check_plain_keys(app, swept, schema, where=f"{path}: {SWEEPER_PARAMS}: ")
    check_user_backbone_files(app, swept, folders, schema)


def check_file_values(
    app: str,
    files: Sequence[Path],
    folders: Sequence[Path],
    schema: type,
    overrides: Sequence[Tuple[str, Override]] = (),
) -> None:
    """The values in the user's config ``files`` (the primary config's chain) and in each file of the user's
    ``folders`` their defaults lists bring in (``defaults: [config, extra, _self_]``; ``input/small`` holds
    ``input.*``; backbone files are :func:`check_user_backbone_files`'s) pass the checks of the command line's
    (:func:`problem_with`): a flag (``run``, ``extract.overwrite``, a ``backbone:`` node's ``channels_last``) holds
    true or false, where OmegaConf takes ``2``, ``yes`` or ``on`` as true as Hydra composes (``extract.overwrite: 2``
    replaced a folder of features); a key the app lacks, or a value its type cannot hold, is named with the file,
    and so is what featx's reader refuses (:func:`_read_users_config`), and a ``hydra`` node or defaults entry that
    removes featx's callback or gives Hydra's own logging a file (:func:`_hydra_file_problem`). A file's
    ``hydra.sweeper`` is :func:`check_sweeper_file`'s (``overrides``: the command line's). What else is wrong with a
    file Hydra names."""
    queue: List[Tuple[Path, str]] = [(path, "") for path in files]  # (file, its group)
    read: List[Path] = []
    while queue:
        path, group = queue.pop(0)
        if path in read:
            continue
        if len(read) == _MAX_DEFAULTS_FILES:
            fail(app, f"{path}: the defaults lists of your config files bring in more than {_MAX_DEFAULTS_FILES} files")
        read.append(path)
        content = _read_users_config(app, path)
        problem = _hydra_file_problem(content, group)
        if problem is not None:
            fail(app, f"{path}: {problem}")
        for name, _ in _defaults_entries(content, group):
            found = _users_config(folders, name)
            if found is not None and name.split("/")[0] not in ("backbone", "hydra"):
                queue.append((found, name.rpartition("/")[0]))
        backbone = content.get("backbone")
        try:
            if not group and isinstance(backbone, Mapping):
                check_spec_values(backbone)
        except SpecError as error:
            fail(app, str(error.with_origin(str(path))))
        hydras = content.get("hydra")
        sweeper = hydras.get("sweeper") if isinstance(hydras, Mapping) and not group else None
        if isinstance(sweeper, Mapping):
            check_sweeper_file(app, path, sweeper, overrides, folders, schema)
        skipped = ("defaults",) if group else ("defaults", "hydra", "backbone")
        values = {key: value for key, value in content.items() if key not in skipped}
        for key, value in _leaves(values, group.replace("/", ".") + "." if group else ""):
            problem = problem_with(key, schema, [value])
            if problem is not None:
                fail(app, f"{path}: {problem}")


def _users_config(folders: Sequence[Path], name: str) -> Optional[Path]:
    """The first ``<name>.yaml`` in the user's config folders (:func:`_is_config_file`), or None."""
    return next((folder / f"{name}.yaml" for folder in folders if _is_config_file(folder / f"{name}.yaml")), None)


def _is_config_file(path: Path) -> bool:
    """Whether a config file of the user's is at ``path``: a file, or something else but a folder (a fifo, a device)
    in its place, which Hydra passes over ("Could not find") and featx's reader names without opening it."""
    return path.exists() and not path.is_dir()


def check_user_backbone_files(
    app: str, overrides: Sequence[Tuple[str, Override]], folders: Sequence[Path], schema: type
) -> None:
    """Read each chosen ``backbone/<name>.yaml`` of the user's config folders as featx reads a spec file: Hydra's
    loader answers a tab, a duplicate key or bytes that are not UTF-8 with a traceback. A resolver call is refused
    before Hydra composes (and tab completion prints) the file's values, and a value its key's type cannot hold is
    named with its key (Hydra names only the file: "Value 'abc' of type 'str' could not be converted to Integer")."""
    backbone_overrides = [
        override for argument, override in overrides if argument.lstrip("+").split("=", 1)[0] == "backbone"
    ]
    choices = [choice for override in backbone_overrides for choice in choice_values(override)]
    values: List[object] = [override.value() for override in backbone_overrides]  # Override.value()'s type lacks Glob
    patterns = [value for value in values if isinstance(value, Glob)]
    chosen: List[Tuple[str, Optional[Path]]] = [(f"backbone/{choice}", None) for choice in choices]  # (file, named in)
    for folder in folders:
        names = sorted(path.stem for path in (folder / "backbone").glob("*.yaml")) if patterns else []
        chosen += [(f"backbone/{name}", None) for pattern in patterns for name in pattern.filter(names)]
    read: List[str] = []
    while chosen:  # each chosen file, and the config files their defaults lists bring in (of any group)
        config, named_in = chosen.pop(0)
        if config in read:
            continue
        if "${" in config:
            fail(
                app,
                f"{named_in}: its defaults list chooses {shortened(config)} by an interpolation, whose file featx "
                "cannot read before Hydra composes it (to refuse a resolver in it); write the name",
            )
        if len(read) == _MAX_DEFAULTS_FILES:
            fail(
                app, f"{named_in}: the defaults lists of backbone files bring in more than {_MAX_DEFAULTS_FILES} files"
            )
        read.append(config)
        for path in (folder / f"{config}.yaml" for folder in folders):
            if _is_config_file(path):
                try:
                    content = read_spec_file(path)
                except SpecError as error:  # one without origin names the file itself: a fifo in its place
                    fail(app, str(error) if error.origin is not None else error.message)
                try:
                    refuse_resolvers(content)
                    if config.startswith("backbone/"):  # OmegaConf would take channels_last: 2 as true
                        check_spec_values(content)
                except SpecError as error:
                    fail(app, str(error if error.origin is not None else error.with_origin(str(path))))
                if config.startswith("backbone/"):
                    for key, value in content.items():
                        problem = None if key == "defaults" else problem_with(f"backbone.{key}", schema, [value])
                        if problem is not None:
                            fail(app, f"{path}: {problem}")
                chosen += [(name, path) for name, _ in _defaults_entries(content, config.rpartition("/")[0])]


#: the most config files the resolver check follows through defaults lists (Hydra's own composition is bounded too)
_MAX_DEFAULTS_FILES = 1000


def _defaults_entries(content: Dict[str, Any], group: str) -> List[Tuple[str, bool]]:
    """The config files (``group/name``, from the config root) the defaults list of a file in ``group`` names, each
    with whether it is an ``override`` entry, read as Hydra reads them: ``other`` and ``sub: other`` relative to
    ``group``, ``/frag/t`` and ``/frag: t`` from the root; in a key, the words before the group are keywords
    (``override``, ``optional``) and a package (``@...``) is dropped; ``_self_`` is left out. A choice made by
    interpolation (``${...}``) is kept as written: the caller cannot read its file."""
    defaults = content.get("defaults")
    entries: List[Tuple[str, bool]] = []
    for entry in defaults if isinstance(defaults, list) else []:
        if isinstance(entry, str) and entry != "_self_":
            entries.append((entry, False))
        elif isinstance(entry, dict):
            for key, options in entry.items():
                *keywords, key = str(key).split() or [""]
                for option in options if isinstance(options, list) else [options]:
                    if isinstance(option, str):
                        entries.append((f"{key.split('@', 1)[0]}/{option}", "override" in keywords))
    named = [(name.split("@", 1)[0].removesuffix(".yaml"), overriding) for name, overriding in entries]
    return [(name[1:] if name.startswith("/") else f"{group}/{name}".lstrip("/"), o) for name, o in named]


def _hydra_file_problem(content: Dict[str, Any], group: str) -> Optional[str]:
    """Why the user's config file ``content`` (of the config group ``group``) is refused before Hydra composes, or
    None: the ``hydra`` node of a file at the root, or a file its defaults list brings in (by its group, or placed by
    a package: ``- /hydra/job_logging@hydra.hydra_logging: default``), removes or changes featx's callback or gives
    Hydra's own logging a file (:func:`hydra_node_problem`, :func:`hydra_group_problem`)."""
    if not group and "hydra" in content:
        problem = hydra_node_problem("hydra", content["hydra"])
        if problem is not None:
            return problem
    for name, _ in _defaults_entries(content, group):
        problem = hydra_group_problem(name.rpartition("/")[0], None, [name.rpartition("/")[2]])
        if problem is not None:
            return problem
    defaults = content.get("defaults")
    for entry in defaults if isinstance(defaults, list) else []:
        for text in entry if isinstance(entry, dict) else [entry]:
            package = str(text).partition("@")[2] if "@" in str(text) else None
            problem = None if package is None else hydra_group_problem("", package, [])
            if problem is not None:
                return problem
    return None

"""One line for an error of Hydra's or OmegaConf's as an app composes its config: its message's lines joined, the
OmegaConf error it wraps, the options of a config group it cannot find, and a stage key's own refusal.

Example::

    try:
        hydra_main()
    except HydraException as error:
        fail("featx", hydra_error_line(error))
"""

from __future__ import annotations

import dataclasses
import re
import traceback
import typing
from pathlib import Path
from typing import Optional

import yaml
from omegaconf import DictConfig
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
)

from featx.cli.override_checks import unknown_key
from featx.errors import first_line
from featx.spec.keys import suggest
from featx.spec.limits import quoted
from featx.spec.schema import StageSpec
from featx.spec.yaml_file import yaml_problem

#: the lines OmegaConf adds below its message (where in the config): left out of the one line
_CONTEXT_LINES = ("full_key:", "object_type=", "reference_type=")
#: Hydra's answer to ``backbone.stages.c3.slice=...`` for a stage its file gives by ``modules`` (or the reverse),
#: whose hint (``+backbone.stages.c3.slice``) gives a stage with both
_OTHER_STAGE_FORM = re.compile(r"Could not override '((backbone\.stages\.([^.']+))\.(slice|modules))'")


def _unknown_stage(error: BaseException) -> Optional[str]:
    """The refusal of ``backbone.stages.c9.modules=...`` for a stage the backbone's file lacks (Hydra's answer, "Key
    'c9' is not in struct", points to ``+``, which adds a stage), naming the file's stages, or of a key a stage
    lacks (``backbone.stages.c3.modlues``); else None."""
    cause = error.__cause__
    key = str(getattr(cause, "full_key", ""))
    stages = getattr(cause, "parent_node", None)
    refused = isinstance(cause, (ConfigKeyError, ConfigAttributeError))  # setting a key below it, or it
    if not (refused and key.startswith("backbone.stages.") and isinstance(stages, DictConfig)):
        return None
    if not str(error).startswith((f"Could not override '{key}.", f"Could not override '{key}'")):
        return None
    if key.count(".") == 3:  # a key of a stage the file has (slice.0 of a stage given by modules: Hydra's words)
        keys = [field.name for field in dataclasses.fields(StageSpec)]
        return None if key.rpartition(".")[2] in keys else unknown_key(key, keys)
    if key.count(".") != 2:
        return None
    name, known = key.rpartition(".")[2], [str(stage) for stage in stages.keys()]
    return (
        f"{key}: the backbone has no stage {quoted(name)}{suggest(name, known)} (stages: {', '.join(known)}); "
        f"+{key}={{modules: [...]}} adds one"
    )


def hydra_error_line(error: BaseException) -> str:
    """One line for an error of Hydra's (composing the config) or OmegaConf's: its message's lines joined, the
    OmegaConf error it wraps, and the options Hydra lists for a config group it cannot find (the config search path
    it also lists left out)."""
    other_form = _OTHER_STAGE_FORM.search(str(error))
    missing = getattr(error.__cause__, "full_key", None)  # the key OmegaConf did not find: the form, not the stage
    if other_form is not None and missing == other_form.group(1):
        _, stage, name, given = other_form.groups()
        written = "modules" if given == "slice" else "slice"
        return (
            f"{stage}.{given}: the stage {name} is given by '{written}' in its file, and a stage takes one of "
            f"'slice' or 'modules': replace it with ~{stage}.{written} +{stage}.{given}=..."
        )
    stage = _unknown_stage(error)
    if stage is not None:
        return stage
    message, options, listing = [], [], False
    for text in str(error).splitlines():
        if text.startswith(("Available options in", "Config search path")):
            listing = text.startswith("Available options in")
        elif text.startswith("\t"):
            if listing:
                options.append(text.strip())
        elif text.strip() and not text.strip().startswith(_CONTEXT_LINES):
            listing = False
            message.append(text.strip())
    if isinstance(error, yaml.YAMLError):  # a config file of a search path featx does not read itself
        mark = getattr(error, "problem_mark", None)
        return f"{getattr(mark, 'name', 'a config file')}: not valid YAML: {yaml_problem(error)}"
    line = " ".join(message) or type(error).__name__
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and first_line(cause) not in line:
        line = f"{line.rstrip('.')}: {first_line(cause)}"
    unknown = next((e for e in (error, cause, error.__context__) if isinstance(e, ConfigKeyError)), None)
    schema = getattr(unknown, "object_type", None)
    if unknown is not None and dataclasses.is_dataclass(schema):  # a typo in a file of a config folder
        valid = list(typing.get_type_hints(schema))
        line = f"{line}{suggest(str(unknown.key), valid)} (valid keys: {', '.join(valid)})"
    return f"{line} (available: {', '.join(options)})" if options else line


def raised_in_featx(error: BaseException) -> bool:
    """Whether ``error`` was raised in (or passed through) featx's own code, an app's task or a callback, below the
    call of the Hydra app: else Hydra's own code (or a library it calls, such as logging) raised it."""
    package = Path(__file__).resolve().parent.parent
    frames = traceback.extract_tb(error.__traceback__)[1:]  # the first: run_app's own call of the Hydra app
    return any(Path(frame.filename).resolve().is_relative_to(package) for frame in frames)

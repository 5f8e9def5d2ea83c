"""The size of a sweep, counted without listing its jobs: Hydra's sweeper lists every job (and composes each one
to check it) before the first runs, so ``range(1,100000000)`` fills the memory and ``glob(*)`` times a range runs
for hours before anything is said.

Example::

    overrides = parsed_sweep_arguments(["input.height=range(32,64)", "backbone=glob(resnet*)"])
    check_sweep_size("featx", overrides, options_of=lambda group: ["resnet18", "resnet50", "vgg16"])  # 64 jobs
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, Override, RangeSweep
from hydra.errors import HydraException

from featx.cli.errors import fail
from featx.spec.config_files import config_dir
from featx.spec.limits import shortened

#: the most jobs one sweep may run
MAX_SWEEP_JOBS = 10_000
#: the config key of the sweeps a config file gives
SWEEPER_PARAMS = "hydra.sweeper.params"
#: the config key of how many jobs Hydra's sweeper launches at a time (null: all)
MAX_BATCH_SIZE = "hydra.sweeper.max_batch_size"


def group_options(group: str, folders: Sequence[Path]) -> List[str]:
    """The options of the config group ``group`` (``backbone``, ``hydra/job_logging``): the ``<group>/*.yaml`` of
    featx's packaged configs, of Hydra's own and of the user's config ``folders``."""
    hydra_configs = importlib.util.find_spec("hydra.conf")
    hydras = list(hydra_configs.submodule_search_locations or []) if hydra_configs is not None else []
    roots = [config_dir(), *map(Path, hydras), *folders]
    return sorted({path.stem for root in roots for path in (Path(root) / group).glob("*.yaml")})


def sweep_length(override: Override, options_of: Callable[[str], List[str]]) -> Optional[int]:
    """How many values a sweep gives, counted without listing them: a ``choice``, a ``range``, or a ``glob`` of a
    config group (counted among ``options_of(group)``); None for what gives no jobs (Hydra's sweeper refuses
    ``interval``)."""
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return len(value.list)
    if isinstance(value, Glob):
        return len(value.filter(options_of(override.key_or_group)))
    if isinstance(value, RangeSweep) and value.step and value.start is not None and value.stop is not None:
        count = (value.stop - value.start) / value.step
        if math.isnan(count):  # range(1,nan): counted as endless, as range(1,inf) is
            return MAX_SWEEP_JOBS + 1
        return MAX_SWEEP_JOBS + 1 if math.isinf(count) else max(0, math.ceil(count))
    return None


def check_sweep_size(
    app: str, overrides: Sequence[Tuple[str, Override]], options_of: Callable[[str], List[str]]
) -> None:
    """Refuse a sweep of ``overrides`` ((argument, parsed override) pairs; a later one replaces an earlier one of the
    same key, as the command line replaces a config's ``hydra.sweeper.params``) of more than
    :data:`MAX_SWEEP_JOBS` jobs, or with a ``range()`` of step 0 (Python's own error, without the key, was all Hydra
    said); ``options_of(group)`` lists a config group's options."""
    by_key = {override.key_or_group: (argument, override) for argument, override in overrides}
    for argument, override in by_key.values():
        value = override.value() if override.is_sweep_override() else None
        if isinstance(value, RangeSweep) and value.step == 0:
            fail(app, f"{shortened(argument)}: the step of a range() must not be 0; range(START,STOP,STEP)")
    lengths = {
        key: sweep_length(override, options_of) for key, (_, override) in by_key.items() if override.is_sweep_override()
    }
    jobs = 1
    for length in lengths.values():
        jobs *= max(length or 1, 1)
        if jobs > MAX_SWEEP_JOBS:
            sweeps = [by_key[key][0] for key, counted in lengths.items() if counted]
            fail(
                app,
                f"the sweep {' '.join(sweeps)} has more than {MAX_SWEEP_JOBS:,} jobs ({jobs:,} or more); "
                "sweep fewer values",
            )


def batch_size_problem(value: object) -> Optional[str]:
    """Why ``value`` cannot be :data:`MAX_BATCH_SIZE`, or None: a number (or its text, which OmegaConf converts)
    below 1, which Hydra's sweeper asserts against (``AssertionError``, without a message). What OmegaConf cannot
    convert to a number it names itself."""
    try:
        number = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    except ValueError:
        return None
    if number is None or number > 0:
        return None
    return "the sweep launches its jobs in batches of this many; give a number from 1 up, or null for all at once"


def check_sweeper_params(app: str, overrides: Sequence[Tuple[str, Override]]) -> None:
    """Refuse ``hydra.sweeper.params`` (or a key under it) set on the command line: Hydra refuses a key under it
    and OmegaConf answers a whole mapping with an internal error (``AttributeError``, ``Unexpected type annotation``);
    the command line gives a sweep as the key itself. ``hydra.sweeper.params=null`` (a config's sweep left out) is
    taken. A :data:`MAX_BATCH_SIZE` below 1 is refused naming its override (:func:`batch_size_problem`)."""
    for argument, override in overrides:
        key = override.key_or_group  # without its +, ++ or ~: Hydra's parser keeps those in override.type
        problem = batch_size_problem(override.value()) if key == MAX_BATCH_SIZE else None
        if problem is not None:
            fail(app, f"{shortened(argument)}: {problem}")
        below = key == SWEEPER_PARAMS or key.startswith(SWEEPER_PARAMS + ".")
        if below and not (key == SWEEPER_PARAMS and override.value() is None):
            fail(
                app,
                f"{shortened(argument)}: hydra.sweeper.params is for a config file; on the command line give the "
                "sweep itself, e.g. -m backbone.seed=range(0,3)",
            )


def parsed_sweep_arguments(arguments: Iterable[str]) -> List[Tuple[str, Override]]:
    """(argument, parsed override) for each of ``arguments`` Hydra's grammar reads (it refuses the others itself)."""
    parsed = []
    for argument in arguments:
        try:
            parsed.append((argument, OverridesParser.create().parse_overrides([argument])[0]))
        except HydraException:
            continue
    return parsed

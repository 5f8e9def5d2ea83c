"""``featx-list``: the backbone configs there are, one row each (model, stages, strides, channels, parameters).

Rows come from the backbones' plans (the plan cache's, else measured on the meta device), so nothing is allocated. A
file of the user's folders is composed as the ``featx`` app composes ``backbone=NAME`` (it may extend another file:
``defaults: [resnet18, _self_]``; :mod:`featx.cli.user_backbones`); featx's packaged files are read as they are.

Examples::

    featx-list                          # every packaged backbone
    featx-list 'resnet*' '*_fpn'        # names matching shell-style patterns
    featx-list --config-dir my_configs  # also my_configs/backbone/*.yaml (a Hydra search-path root)
    featx-list --timm 'convnext*'       # timm models matching the patterns, as featx.propose would slice them
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from featx.cli.output import reader_may_stop, status_line
from featx.errors import FeatxError
from featx.files import printable_path
from featx.spec.config_files import backbone_files, config_dir
from featx.spec.keys import suggest
from featx.spec.limits import shortened
from featx.version import __version__

if TYPE_CHECKING:
    from omegaconf import DictConfig

# torch and torchvision are imported where the listing needs them (describe, _list_timm): not by --help or a
# refused command line

_COLUMNS = ("name", "model", "stages", "strides", "channels", "params", "notes")
_WIDTHS = (26, 20, 14, 18, 26, 8, 0)  # each column's least width


def _widths(names: Sequence[str], models: Sequence[str]) -> Tuple[int, ...]:
    """The columns' widths for a listing of ``names`` and ``models``: the name and model columns as wide as the
    longest shown (the rows are printed as they are made, so the widths are set before the first)."""
    longest = [max((len(printable_path(value)) for value in values), default=0) for values in (names, models)]
    return tuple(max(width, least) for width, least in zip(longest, _WIDTHS[:2], strict=True)) + _WIDTHS[2:]


def _row(values: Sequence[str], widths: Sequence[int]) -> str:
    """One line of the table: a file's name holding a line break or terminal escapes (or bytes that are not UTF-8)
    is shown escaped, so it cannot forge a row of its own."""
    cells = (printable_path(value).ljust(width) for value, width in zip(values, widths, strict=True))
    return "  ".join(cells).rstrip()


#: what a row describes: a packaged file, the node composed from a file of the user's, or why the app refuses it
_Source = Union[Path, "DictConfig", FeatxError]


def _model_of(source: _Source) -> str:
    """The model ``source``'s spec names, or ``""`` for one that does not load (its row shows the error)."""
    from featx.spec.load import load_spec

    try:
        return "" if isinstance(source, FeatxError) else load_spec(source).model
    except FeatxError:
        return ""


def _is_users(path: Path) -> bool:
    """Whether the backbone file ``path`` is in a config folder of the user's, not featx's packaged ``conf/``."""
    return path.parent.parent != config_dir()


def _sources(files: Mapping[str, List[Path]], names: Sequence[str], roots: Sequence[Path]) -> Dict[str, _Source]:
    """What each of ``names`` lists: its packaged file as it is (its plan may be cached), or its file of the user's
    config folders ``roots`` composed as the ``featx`` app composes it (Hydra set up only for such files)."""
    sources: Dict[str, _Source] = {name: files[name][0] for name in names}
    users = [name for name in names if _is_users(files[name][0])]
    if users:
        from featx.cli.user_backbones import composed_backbones

        sources.update(composed_backbones(users, roots))
    return sources


def describe(source: Union[Path, Mapping[str, Any]]) -> List[str]:
    """The table cells for the spec file or spec ``source``, from its plan (the plan cache's, or made on the meta
    device): nothing is allocated, and with a cached plan not even the model is constructed. ``params`` counts the
    kept layers' parameters (BatchNorm's affine included, whatever the norm policy) and the neck's."""
    from featx.construct.builder import check_names, make_neck, plan_spec
    from featx.nn.backbone import output_info
    from featx.spec.load import load_spec

    loaded = load_spec(source)
    check_names(loaded)  # what featx.build refuses before it plans
    spec, plan = plan_spec(loaded)
    stages = [info.name for info in plan.stages]
    neck = make_neck(spec, plan, meta=True)
    feature_info = output_info(plan.returned(spec), spec.output_names, neck)
    params = plan.parameters + (sum(p.numel() for p in neck.parameters()) if neck is not None else 0)
    notes = []
    if spec.fpn is not None:
        kind = "fpn" if spec.fpn.style == "fpn" else "simple pyramid"
        notes.append(
            f"{kind} {spec.fpn.out_channels}" + (f" +{spec.fpn.extra_blocks}" if spec.fpn.extra_blocks else "")
        )
    if spec.tokens is not None:
        notes.append("tokens" + (f" at stride {spec.tokens.stride}" if spec.tokens.stride else ""))
    if spec.input_size is not None:
        notes.append(f"input {spec.input_size[0]}x{spec.input_size[1]} only")
    if spec.out_features is not None:
        notes.append(f"returns {', '.join(spec.out_features)}")
    return [
        spec.model,
        stages[0] if len(stages) == 1 else f"{stages[0]}..{stages[-1]}",
        ",".join(str(info.stride) for info in feature_info),
        ",".join(str(info.channels) for info in feature_info),
        f"{params / 1e6:.1f}M",
        "; ".join(notes),
    ]


def main(argv: Optional[List[str]] = None) -> None:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(prog="featx-list", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("patterns", nargs="*", help="shell-style name patterns (default: all; --timm needs some)")
    parser.add_argument("--version", action="version", version=f"featx-list {__version__}")
    parser.add_argument(
        "--config-dir",
        type=Path,
        action="append",
        default=[],
        help="a config root holding backbone/*.yaml, as given to hydra.searchpath (repeatable)",
    )
    parser.add_argument(
        "--timm",
        action="store_true",
        help="list timm models matching the patterns instead, each as featx.propose('timm:NAME') slices it",
    )
    with reader_may_stop(parser.prog):  # --help's text too
        _list(parser, parser.parse_args(argv))


def _list(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The listing ``main`` was asked for."""
    overrides = [pattern for pattern in args.patterns if "=" in pattern]
    if overrides:
        parser.exit(
            2,
            f"featx-list: error: {shortened(overrides[0])}: featx-list takes name patterns, not overrides; it lists "
            "the configs as written (featx backbone=NAME KEY=VALUE run=false shows one with overrides)\n",
        )
    if args.timm:
        if args.config_dir:
            parser.exit(
                2,
                "featx-list: error: --config-dir: --timm lists timm's models, not config files; give one of --timm and "
                "--config-dir\n",
            )
        if not args.patterns:
            parser.exit(2, "featx-list: error: --timm needs name patterns (timm has over 1,000 models): 'convnext*'\n")
        _list_timm(parser, args.patterns)
        return
    args.patterns = args.patterns or ["*"]
    for root in args.config_dir:
        if not (root / "backbone").is_dir():
            parser.exit(1, f"featx-list: error: --config-dir {root}: no backbone/ folder in it\n")
    # featx's packaged configs come first in the app's search path; hydra.searchpath entries follow
    files = backbone_files([config_dir(), *args.config_dir])
    names = [name for name in sorted(files) if any(fnmatch.fnmatchcase(name, p) for p in args.patterns)]
    _check_each_matches(parser, args.patterns, sorted(files), "backbone")
    from featx.cache_folder import cache_disabled, user_cache_dir

    try:  # the cache's variables, once: each row's plan would say it again
        if not cache_disabled():
            user_cache_dir()
    except FeatxError as error:
        parser.exit(1, f"featx-list: error: {error}\n")
    from featx.models.timm_models import TIMM_INSTALL, TimmNotInstalled

    sources = _sources(files, names, args.config_dir)
    widths = _widths(names, [_model_of(sources[name]) for name in names])
    print(_row(_COLUMNS, widths))
    failures = needing_timm = 0
    for name in names:
        used, *ignored = files[name]
        source = sources[name]
        try:
            if isinstance(source, FeatxError):  # the app refuses the file: its row says why, as a plan's error
                raise source
            cells = describe(source)
        except TimmNotInstalled:  # a packaged timm_* file on an install without the optional extra: no failure
            needing_timm += 1
            cells = ["", "", "", "", "", f"needs timm: {TIMM_INSTALL}"]
        except FeatxError as error:
            failures += 1
            cells = ["", "", "", "", "", f"error: {error}"]
        if ignored:
            cells[-1] = "; ".join(filter(None, [cells[-1], f"ignored duplicate: {', '.join(map(str, ignored))}"]))
        if _is_users(used):
            cells[-1] = "; ".join(filter(None, [cells[-1], f"from {used}"]))
        print(_row([name, *cells], widths), flush=True)
    counts = [
        f", {needing_timm} {'needs' if needing_timm == 1 else 'need'} timm" if needing_timm else "",
        f", {failures} failed to plan" if failures else "",
    ]
    status_line(f"{len(names)} backbone{'' if len(names) == 1 else 's'}" + "".join(counts))
    if failures:
        sys.exit(1)


def _check_each_matches(
    parser: argparse.ArgumentParser, patterns: List[str], names: List[str], what: str, prefix: str = ""
) -> None:
    """Exit with an error naming the first of ``patterns`` that matches none of ``names`` (a typo must not shorten
    the listing silently); a pattern is matched without ``prefix``."""
    for pattern in patterns:
        bare = pattern.removeprefix(prefix)
        if not any(fnmatch.fnmatchcase(name, bare) for name in names):
            parser.exit(1, f"featx-list: error: no {what} matches {shortened(pattern)}{suggest(bare, names)}\n")


def _list_timm(parser: argparse.ArgumentParser, patterns: List[str]) -> None:
    """One row per timm model matching ``patterns``: its proposed spec, or why featx proposes none."""
    from featx.construct.propose import propose
    from featx.models.timm_models import TIMM_INSTALL, TIMM_PREFIX, TimmNotInstalled, matching_timm_models

    try:
        models = matching_timm_models(patterns)
    except TimmNotInstalled:
        parser.exit(1, f"featx-list: error: --timm lists timm's models, and timm is not installed: {TIMM_INSTALL}\n")
    except FeatxError as error:
        parser.exit(1, f"featx-list: error: {error}\n")
    names = [model.removeprefix(TIMM_PREFIX) for model in models]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern.removeprefix(TIMM_PREFIX)) for name in names):
            parser.exit(1, f"featx-list: error: {_unmatched_timm_pattern(pattern)}\n")
    widths = _widths(models, models)  # a proposal's model is the timm name
    print(_row(_COLUMNS, widths))
    unproposed = 0
    for model in models:
        try:
            cells = describe(propose(model))
        except FeatxError as error:
            unproposed += 1
            cells = [model, "", "", "", "", f"no proposal: {error}"]
        print(_row([model, *cells], widths), flush=True)
    status_line(
        f"{len(models)} timm model{'' if len(models) == 1 else 's'}"
        + (f", {unproposed} without a proposal" if unproposed else "")
    )


def _unmatched_timm_pattern(pattern: str) -> str:
    """Why the timm pattern ``pattern`` matches no model timm lists: a deprecated name (what to write instead), a
    pretrained tag (patterns match model names), or a typo (the closest of timm's names)."""
    from featx.models.timm_models import TIMM_PREFIX, deprecated_name_advice, timm_models

    bare = pattern.removeprefix(TIMM_PREFIX)
    advice = deprecated_name_advice(bare)
    if advice is not None:
        return advice
    names = timm_models()
    architecture, dot, _ = bare.partition(".")
    if dot and any(fnmatch.fnmatchcase(name, architecture) for name in names):
        return (
            f"no timm model matches {shortened(pattern)}: patterns match model names, and pretrained tags are not "
            f"listed (featx-list --timm {shortened(architecture)})"
        )
    return f"no timm model matches {shortened(pattern)}{suggest(bare, names)}"


if __name__ == "__main__":
    main()

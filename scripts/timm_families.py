"""Which timm families featx proposes a backbone for: one small model per family (timm's module), proposed with
``featx.propose`` and built on the meta device; the table is written as a generated page.

A family counts when it has a model of at most 100 M parameters; its smallest-named candidates (tiny, small, ...)
are tried in turn until one fits. Nothing is downloaded and nothing allocated.

    python scripts/timm_families.py                                   # print the table
    python scripts/timm_families.py --output docs/results/timm.md     # also write it as the docs page
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import timm
from timm.models._registry import _model_to_module

import featx
from featx.construct.propose import analyse
from featx.files import write_generated_page
from featx.models.meta_construction import construct_on_meta

TITLE = "# timm families as featx backbones (generated)"
MAX_PARAMETERS = 100_000_000
#: name fragments of small variants, most preferred first
SMALL = ("atto", "femto", "pico", "nano", "tiny", "small", "mini", "xxs", "xs", "_s", "b0", "18", "_t", "lite0", "050")
CANDIDATES = 4
SECONDS_PER_MODEL = 180  # an LSTM (Sequencer) has no shape-only path on meta: ~40 s


def _smallness(name: str) -> Tuple[int, int]:
    rank = next((index for index, fragment in enumerate(SMALL) if fragment in name), len(SMALL))
    return rank, len(name)


class _TimedOut(BaseException):
    """Raised by the alarm; a BaseException, so that no ``except Exception`` inside featx or timm takes it."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _TimedOut()


def _parameters(name: str) -> int:
    model, _ = construct_on_meta(f"timm:{name}")
    return sum(parameter.numel() for parameter in model.parameters())


def _family_row(family: str, names: List[str]) -> Optional[List[str]]:
    """The table row of ``family``, or ``None`` when none of its candidates has at most 100 M parameters."""
    for name in sorted(names, key=_smallness)[:CANDIDATES]:
        signal.alarm(SECONDS_PER_MODEL)
        try:
            if _parameters(name) > MAX_PARAMETERS:
                continue
            proposal = analyse(f"timm:{name}")
            backbone = featx.build(proposal.spec, overrides=["device=meta"])
        except (featx.FeatxError, _TimedOut) as error:
            reason = "timed out" if isinstance(error, _TimedOut) else str(error).split(", and what follows")[0]
            return [family, f"`{name}`", "no", "", "", reason.replace("|", "/")]
        finally:
            signal.alarm(0)
        kind = "tokens" if proposal.spec.tokens else "maps"
        stages, size = backbone.stage_info, backbone.spec.input_size
        notes = [f"input {size[0]}x{size[1]} only"] if size else []
        if proposal.ends_early:
            notes.append(
                f"ends before the model's last features ({stages[-1].name}: {stages[-1].channels} channels, "
                f"num_features {proposal.model_features})"
            )
        return [
            family,
            f"`{name}`",
            "partly" if proposal.ends_early else "yes",
            f"{kind}: {', '.join(stage.name for stage in stages)}",
            ", ".join(str(stage.stride) for stage in stages),
            "; ".join(notes),
        ]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, help="also write the table as this generated page")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    signal.signal(signal.SIGALRM, _on_alarm)
    families: Dict[str, List[str]] = {}
    for name in timm.list_models():
        families.setdefault(_model_to_module[name], []).append(name)
    rows, too_large = [], []
    for family in sorted(families):
        row = _family_row(family, families[family])
        if row is None:
            too_large.append(family)
        else:
            rows.append(row)
            print(" | ".join(row), flush=True)
    proposed = sum(row[2] == "yes" for row in rows)
    partly = sum(row[2] == "partly" for row in rows)
    command = shlex.join(
        ["python", "scripts/timm_families.py", *(["--output", str(args.output)] if args.output else [])]
    )
    lines = [
        TITLE,
        "",
        f"Written by `{command}` with timm {timm.__version__} and featx {featx.__version__}: one model per timm family "
        "(timm's module) of at most 100 M parameters, proposed with `featx.propose` and built on the meta device.",
        "",
        f"**{proposed} of {len(rows)} families** with such a model get a backbone from `featx.propose`, "
        f"{partly} more one that ends before the model's last features (`partly`: the rest is no chain of single "
        f"feature maps); {len(too_large)} families have no model that small ({', '.join(too_large) or 'none'}).",
        "",
        "| family | model | proposed | stages | strides | notes |",
        "|---|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
    ]
    text = "\n".join(lines)
    if args.output:
        try:
            write_generated_page(args.output, text, "--output")
        except featx.FeatxError as error:
            sys.exit(f"timm_families.py: {error}")
    print(f"{proposed} of {len(rows)} families proposed, {partly} partly", file=sys.stderr)


if __name__ == "__main__":
    main()

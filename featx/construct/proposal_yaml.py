"""A proposal as a commented ``conf/backbone`` file: what ``featx-propose`` prints and the zoo files are made of.

Example::

    text = proposal_yaml(analyse("resnet50"), command="featx-propose resnet50")
    Path("my_configs/backbone/resnet50_c2c5.yaml").write_text(text)
"""

from __future__ import annotations

import re
import textwrap
from typing import Any, List, Sequence

import yaml

from featx.construct.propose import Proposal
from featx.files import printable_path
from featx.models.published_weights import published_weights_summary
from featx.models.registry import library_version
from featx.spec.load import SCHEMA_DEFAULTS
from featx.spec.schema import SPEC_KEYS

_WIDTH = 116
#: stage lines up to this width get their comments aligned; longer ones are followed by theirs
_ALIGNED = 110
#: what a YAML comment cannot hold as it is: a line break (YAML's include ``\x85``, ``\u2028``, ``\u2029``: the
#: comment would end there) or a character YAML takes in no file (control characters, surrogates, ``\uffff``)
_NOT_IN_COMMENT = re.compile("[^\t\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _flow(value: Any) -> str:
    """``value`` as one line of flow-style YAML (``{modules: [conv1, bn1]}``, ``null``, ``[224, 224]``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
    return text.removesuffix("...").strip()


def _comment(text: str) -> List[str]:
    """``text`` as comment lines, with what a comment cannot hold escaped (``\\u2028``): the file loads as written."""
    text = _NOT_IN_COMMENT.sub(lambda found: repr(found.group())[1:-1], text)
    return ["# " + line for line in textwrap.wrap(text, _WIDTH - 2)]


def _header(proposal: Proposal, command: str, notes: Sequence[str]) -> List[str]:
    spec, stages = proposal.spec, proposal.stages
    summary = (
        f"{spec.model} as {', '.join(s.name for s in stages)}: strides {', '.join(str(s.stride) for s in stages)}; "
        f"channels {', '.join(str(s.channels) for s in stages)}"
    )
    if spec.fpn is not None and spec.fpn.style == "simple":
        summary += (
            f"; simple feature pyramid (ViTDet) to {spec.fpn.out_channels} channels, p2..p5 from {stages[-1].name}"
        )
    elif spec.fpn is not None:
        summary += f"; FPN to {spec.fpn.out_channels} channels (levels p{{log2 stride}})"
    lines = _comment(summary + ".")
    lines += _comment(f"Written by `{printable_path(command)}` ({library_version(spec.model)}).")
    for stage in stages:
        members = stage.paths[0] if len(stage.paths) == 1 else f"{stage.paths[0]} .. {stage.paths[-1]}"
        lines += _comment(f"  {stage.name}: {members} (stride {stage.stride}, {stage.channels} channels)")
    if proposal.left_out:
        lines += _comment(
            f"Left out between the stages: {', '.join(proposal.left_out)} (their outputs are not feature maps: "
            "auxiliary heads that the model's own forward runs in training only)."
        )
    if proposal.ends_early:
        why = proposal.chain_end or "it works on other shapes than single feature maps, or fuses several maps"
        lines += _comment(
            f"The stages end before the model's own last features: {stages[-1].name} has {stages[-1].channels} "
            f"channels, the model's num_features is {proposal.model_features} (what follows cannot be cut into "
            f"stages: {why})."
        )
    if proposal.head:
        lines += _comment(
            f"Not part of the backbone: {', '.join(proposal.head)} (the modules after the stages: pooling, classifier)."
        )
    for note in notes:
        lines += _comment(note)
    return lines + _comment(published_weights_summary(spec.model))


def proposal_yaml(proposal: Proposal, command: str, notes: Sequence[str] = ()) -> str:
    """The spec of ``proposal`` as YAML with a header saying what the stages are and what they leave out.

    ``command`` is how it was made (shown in the header, as :func:`~featx.files.printable_path` shows a path: bytes
    that are not UTF-8 and control characters escaped); ``notes`` are extra paragraphs for the header (what the
    model's own forward does beyond running the stages). Every spec key is written, in the schema's order.
    """
    data = proposal.spec.to_dict()
    lines = _header(proposal, command, notes)
    lines += ["defaults:", *(f"  - {entry}" for entry in SCHEMA_DEFAULTS), ""]
    for key in SPEC_KEYS:
        if key != "stages":
            lines.append(f"{key}: {_flow(data[key])}")
            continue
        lines.append("stages:")
        widths = [len(f"  {name}: {_flow(value)}") for name, value in data["stages"].items()]
        width = max([w for w in widths if w <= _ALIGNED] or [0])
        for stage in proposal.stages:
            entry = f"  {stage.name}: {_flow(data['stages'][stage.name])}"
            lines.append(f"{entry.ljust(width)}  # stride {stage.stride}, {stage.channels} channels")
    return "\n".join(lines) + "\n"

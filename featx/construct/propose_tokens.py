"""Proposing the spec of a token model (a plain ViT): what :func:`featx.propose` does for a model whose feature
chain stops after the patch embedding, because everything after it works on token sequences.

Found on the meta device, without model-specific code:

- the patch embedding: the one module of the feature chain (its output is the only feature map: torchvision's
  N×C×h×w, timm's N×h×w×C with ``dynamic_img_size``), else the first module the forward runs on the image, if it
  returns tokens (timm's ``PatchEmbed``);
- the token parameters: parameters shaped ``1×k×C`` with the embedding's width; the longest is the position
  embedding, the others are prefix tokens (in registration order), and the position embedding's length says
  whether it has entries for them;
- the blocks: the longest ``nn.Sequential``/``ModuleList`` whose children the model's own forward (at the position
  embedding's size) runs on the token sequence; the modules it runs on the tokens between the embedding and the
  blocks (dropout) open the first stage, those after the blocks (the final norm) close the last one.

The blocks are cut into four stages of equal depth (``blocks1``..``blocks4``) after an ``embed`` stage.

Example::

    found = propose_token_stages(model, chain_links)     # model: torchvision's vit_b_16 on meta, in eval mode
    found.spec.tokens    # TokenSpec(embed='conv_proj', prefix=['class_token'], position='encoder.pos_embedding')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from featx.construct.execution_order import (
    Call,
    Shape,
    frontier,
    has_no_forward,
    recorded_calls,
    runs_children_in_order,
)
from featx.construct.token_layout import patch_stride
from featx.errors import SpecError
from featx.nn.feature_info import FeatureInfo, StageInfo
from featx.spec.schema import BackboneSpec, StageSpec, TokenSpec

#: how many stages the blocks are cut into (fewer when there are fewer blocks)
BLOCK_STAGES = 4


@dataclass(frozen=True)
class TokenStages:
    """What was found: the spec's structural keys (``model``, ``source``, ``tokens``, ``stages``,
    ``out_features``), the stages, and the modules after them (the classifier)."""

    spec: BackboneSpec
    stages: Tuple[StageInfo, ...]
    head: Tuple[str, ...]
    grid: Optional[int] = None  # the side of the patch grid, where the model takes one input size only


def _token_parameters(model: nn.Module, channels: int) -> Optional[Tuple[List[str], str, int]]:
    """``(prefix paths, position path, prefix token count)`` among the parameters shaped ``1×k×channels``: the
    position embedding is the longest; prefix tokens are those held where it is held or by the model itself (a
    head's attention-pooling query, SigLIP's ``attn_pool.latent``, is no prefix token)."""
    found = [
        (path, int(parameter.shape[1]))
        for path, parameter in model.named_parameters()
        if parameter.dim() == 3 and parameter.shape[0] == 1 and parameter.shape[2] == channels
    ]
    if not found:
        return None
    position, _ = max(found, key=lambda item: item[1])
    owners = {"", position.rpartition(".")[0]}
    prefix = [(path, count) for path, count in found if path != position and path.rpartition(".")[0] in owners]
    return [path for path, _ in prefix], position, sum(count for _, count in prefix)


def _square_grid(cells: int) -> Optional[int]:
    if cells <= 0:  # more prefix tokens than position entries: not a layout featx recognises
        return None
    side = math.isqrt(cells)
    return side if side * side == cells else None


def _block_container(model: nn.Module, calls: Sequence[Call], token_shape: Shape) -> Optional[str]:
    """The container with the most children, each called on the token sequence and returning it."""
    on_tokens = {call.path for call in calls if call.input_shape == token_shape and call.output_shape == token_shape}
    best: Optional[Tuple[int, str]] = None
    for path, module in model.named_modules():
        children = [f"{path}.{name}" if path else name for name, _ in module.named_children()]
        if len(children) < 2 or not (runs_children_in_order(module) or has_no_forward(module)):
            continue
        if all(child in on_tokens for child in children) and (best is None or len(children) > best[0]):
            best = (len(children), path)
    return best[1] if best else None


def _groups(blocks: Sequence[str]) -> List[Tuple[int, int]]:
    """``[start, end)`` of :data:`BLOCK_STAGES` groups of blocks as equal as can be."""
    count = min(BLOCK_STAGES, len(blocks))
    bounds = [round(len(blocks) * index / count) for index in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _token_embedding(model: nn.Module, crop: int) -> Optional[Tuple[str, int]]:
    """``(path, channels)`` of the first module the model's own forward runs on the image, if it returns tokens
    (``1×L×C``: an embedding that flattens its patches itself, timm's ``PatchEmbed``)."""
    calls, _, _ = recorded_calls(model, (crop, crop))
    image = calls[0].input_shape if calls else None
    for call in calls:
        if call.input_shape != image:
            return None
        if call.output_shape is not None and len(call.output_shape) == 3:
            return call.path, call.output_shape[2]
    return None


class TokenModelRefused(Exception):
    """A token model featx recognises but cannot cut into stages, and why."""


def propose_token_stages(model: nn.Module, links: Sequence[FeatureInfo], crop: int) -> Optional[TokenStages]:
    """The token spec of ``model`` (on meta, eval mode) whose feature chain is ``links`` (the patch map of
    torchvision's ViT or of a timm ViT made with ``dynamic_img_size``; none for an embedding that returns tokens,
    measured at the ``crop`` size); ``None`` if it is not a token model featx recognises; :class:`TokenModelRefused`
    for one it recognises but cannot cut."""
    if len(links) == 1:
        embed, channels = links[0].name, links[0].channels
    elif links:
        return None
    else:
        found = _token_embedding(model, crop)
        if found is None:
            return None
        embed, channels = found
    parameters = _token_parameters(model, channels)
    if parameters is None:
        return None
    prefix, position, prefix_count = parameters
    length = int(model.get_parameter(position).shape[1])
    covers_prefix = _square_grid(length - prefix_count) is not None
    side = _square_grid(length - prefix_count) or _square_grid(length)
    if side is None:
        return None
    try:
        measured = patch_stride(model, embed, 3, (crop,))
        patch = measured.stride
    except SpecError:
        return None
    calls, _, _ = recorded_calls(model, (side * patch, side * patch))  # what ran before a failure still counts
    token_shape = (1, prefix_count + side * side, channels)
    blocks_path = _block_container(model, calls, token_shape)
    if blocks_path is None:
        return None
    parts = blocks_path.split(".")
    containers = [".".join(parts[:end]) for end in range(1, len(parts) + 1)]
    first_calls: Dict[str, Call] = {}
    for call in calls:
        first_calls.setdefault(call.path, call)
    names = frontier([call.path for call in calls], set(containers))
    level = [first_calls[name] for name in names]
    blocks = [f"{blocks_path}.{name}" for name, _ in model.get_submodule(blocks_path).named_children()]
    if embed not in names or blocks[0] not in names:
        return None
    start, first_block = names.index(embed), names.index(blocks[0])
    if start != 0 or names[first_block : first_block + len(blocks)] != blocks:
        return None

    def on_tokens(call: Call) -> bool:
        return call.input_shape == token_shape and call.output_shape == token_shape

    before = level[1:first_block]
    if not all(on_tokens(call) for call in before):
        return None
    after: List[str] = []
    for call in level[first_block + len(blocks) :]:
        if not on_tokens(call):
            break
        after.append(call.path)
    stage_specs: Dict[str, StageSpec] = {"embed": StageSpec(modules=[embed, *(call.path for call in before)])}
    member_paths: Dict[str, Tuple[str, ...]] = {"embed": tuple(stage_specs["embed"].modules or ())}
    groups = _groups(blocks)
    for number, (first, end) in enumerate(groups, start=1):
        name = f"blocks{number}"
        last = number == len(groups)
        paths = tuple(blocks[first:end]) + (tuple(after) if last else ())
        stage_specs[name] = StageSpec(modules=list(paths)) if last and after else StageSpec(slice=[first, end])
        member_paths[name] = paths
    used = {embed, *(call.path for call in before), *blocks, *after}
    extra = next(
        (first_calls[path] for path in sorted(used) if path in first_calls and first_calls[path].extra_arguments), None
    )
    if extra is not None:
        raise TokenModelRefused(
            f"a token model whose forward calls {extra.path!r} with more than the tokens (arguments: "
            f"{', '.join(extra.extra_arguments)}, e.g. a rotary position embedding); featx's stages give each module "
            "the previous one's output only"
        )
    head = tuple(
        dict.fromkeys(call.path.split(".")[0] for call in level if call.path not in used and "." not in call.path)
    )
    spec = BackboneSpec(
        model="",
        source=blocks_path,
        tokens=TokenSpec(embed=embed, prefix=prefix, position=position, position_covers_prefix=covers_prefix),
        stages=stage_specs,
        out_features=[f"blocks{len(groups)}"],
    )
    stages = tuple(StageInfo(name, channels, patch, paths, ", ".join(paths)) for name, paths in member_paths.items())
    return TokenStages(spec, stages, head, side if measured.one_size else None)

"""A spec's ``tokens`` checked against its model: the patch embedding, prefix tokens and position embedding found,
and the token geometry (patch stride, the position embedding's grid) measured on the meta device.

Example::

    layout = resolve_tokens(meta_vit, spec, members, 3, (224, 224))   # spec.tokens: {embed: conv_proj, ...}
    layout.patch, layout.grid, layout.prefix_count                     # (16, (14, 14), 1)
    embedding = layout.embedding(model)                                # over the model's own modules
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from featx.construct.members import StageMembers, find_module
from featx.construct.probe import Size, meta_input
from featx.errors import SpecError, first_line
from featx.models.registry import default_crop_size
from featx.nn.tokens import Grid, TokenEmbedding
from featx.spec.keys import key_path, suggest
from featx.spec.limits import quoted
from featx.spec.schema import BackboneSpec, TokenSpec

#: the side of the meta image the patch stride is measured at: a multiple of every patch size up to 16 and of 32
_MEASURING_SIDE = 2**5 * 3**2 * 5 * 7


@dataclass(frozen=True)
class TokenLayout:
    """``spec`` found in a model: ``patch`` is the stride of the token maps (``tokens.stride``, else the embedding's
    own ``embed_patch``), ``grid`` the patch grid of the position embedding, ``prefix_count`` the number of prefix
    tokens; ``embed_returns_tokens`` when the embedding puts the channels last (timm's ``PatchEmbed``): it flattens its
    patches into tokens itself, or returns an N×h×w×C map (``dynamic_img_size``)."""

    spec: TokenSpec
    patch: int
    embed_patch: int
    grid: Grid
    prefix_count: int
    embed_returns_tokens: bool = False

    @property
    def parameter_paths(self) -> Tuple[str, ...]:
        """The parameters the embedding holds besides its module: the prefix tokens and the position embedding."""
        return (*self.spec.prefix, *([self.spec.position] if self.spec.position else []))

    @property
    def reproduced_containers(self) -> Tuple[str, ...]:
        """Modules whose forward featx reproduces rather than calls: the owners of the token parameters (they add
        the position embedding, then run their children in order)."""
        return tuple(sorted({path.rpartition(".")[0] for path in self.parameter_paths} - {""}))

    @property
    def native_size(self) -> Size:
        """The input size the model's own forward takes with the position embedding as it is."""
        return self.grid[0] * self.embed_patch, self.grid[1] * self.embed_patch

    @property
    def stage_size(self) -> Size:
        """The input size at which the stages give the blocks what the model's own forward at
        :attr:`native_size` gives them (larger when ``tokens.stride`` resizes the image)."""
        return self.grid[0] * self.patch, self.grid[1] * self.patch

    @property
    def resized_modules(self) -> Tuple[str, ...]:
        """The patch embedding when it gets a resized image (``tokens.stride``), else nothing."""
        return (self.spec.embed,) if self.patch != self.embed_patch else ()

    def embedding(self, model: nn.Module) -> TokenEmbedding:
        """A :class:`TokenEmbedding` holding ``model``'s own patch embedding and token parameters."""
        position = model.get_parameter(self.spec.position) if self.spec.position else None
        prefix = [model.get_parameter(path) for path in self.spec.prefix]
        return TokenEmbedding(
            model.get_submodule(self.spec.embed),
            prefix,
            position,
            self.grid,
            self.spec.position_covers_prefix,
            resize=(self.embed_patch, self.patch),
            returns_tokens=self.embed_returns_tokens,
            resample_like="timm" if _from_timm(model) else "torchvision",
        )


def _from_timm(model: nn.Module) -> bool:
    """Whether ``model``'s class is, or derives from, one of timm's (whose forward resamples as timm does)."""
    return any(cls.__module__.partition(".")[0] == "timm" for cls in type(model).__mro__)


def _find_parameter(model: nn.Module, path: str, *key: str) -> nn.Parameter:
    owner_path, _, name = path.rpartition(".")
    owner = find_module(model, owner_path, key_path(*key)) if owner_path else model
    parameter = owner._parameters.get(name)
    if parameter is None:
        names = [own for own, value in owner._parameters.items() if value is not None]
        where = f"{quoted(owner_path)}" if owner_path else "the model root"
        raise SpecError(
            key_path(*key),
            f"{quoted(path)} not found: {where} has no parameter {quoted(name)}{suggest(name, names)} "
            f"(its own parameters: {', '.join(names) or '(none)'})",
        )
    if parameter.dim() != 3 or parameter.shape[0] != 1:
        raise SpecError(
            key_path(*key),
            f"{quoted(path)} has shape {tuple(parameter.shape)}; token parameters are 1 x tokens x channels",
        )
    return parameter


def _embedding_output(model: nn.Module, embed: str, in_channels: int, size: Size) -> torch.Tensor:
    with torch.no_grad():
        output = model.get_submodule(embed)(meta_input(size, in_channels))
    if not isinstance(output, torch.Tensor) or output.dim() not in (3, 4):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise SpecError(
            key_path("tokens", "embed"),
            f"{quoted(embed)} returns {shape} for a {size[0]}x{size[1]} image; the patch embedding must return an "
            "N x C x h x w patch map or N x h*w x C tokens",
        )
    return output


def _fixed_size_output(
    model: nn.Module, embed: str, in_channels: int, sides: Sequence[int]
) -> Tuple[int, torch.Tensor]:
    """The first of ``sides`` (squares) the embedding runs at, and its output there; SpecError with its failure at
    the first side when it runs at none."""
    failure: Optional[Exception] = None
    for side in sides:
        try:
            return side, _embedding_output(model, embed, in_channels, (side, side))
        except SpecError:
            raise
        except Exception as at_size:  # noqa: BLE001 - its failure at the size it should take says what is wrong
            failure = failure or at_size
    assert failure is not None
    raise SpecError(
        key_path("tokens", "embed"),
        f"{quoted(embed)} fails on a {sides[0]}x{sides[0]} image: {type(failure).__name__}: {first_line(failure)}",
    )


class PatchEmbedding(NamedTuple):
    """What :func:`patch_stride` measures of a patch embedding."""

    stride: int
    channels: int
    returns_tokens: bool  # channels last: N×h·w×C tokens or an N×h×w×C map (timm's PatchEmbed), not N×C×h×w
    one_size: bool  # it takes one image size only (it checks the size)


def _channels_last(model: nn.Module, embed: str, in_channels: int, side: int, shape: Tuple[int, ...]) -> bool:
    """Whether ``embed``'s 4-d output ``shape`` for a ``side``×``side`` image is N×h×w×C rather than N×C×h×w: the
    dimension a twice-as-wide image doubles is the width; for an embedding that takes one size only, the two equal
    dimensions are the square grid. SpecError where neither tells (C == h at its one size)."""
    try:
        wide = tuple(_embedding_output(model, embed, in_channels, (side, 2 * side)).shape)
    except Exception:  # noqa: BLE001 - it takes one size only (or not this one): its shape at the one size tells
        wide = None
    if wide in ((shape[0], shape[1], 2 * shape[2], shape[3]), (shape[0], shape[1], shape[2], 2 * shape[3])):
        return wide[2] != shape[2]
    if shape[1] == shape[2] == shape[3]:
        raise SpecError(
            key_path("tokens", "embed"),
            f"{quoted(embed)} maps a {side}x{side} image to {shape} and takes no other size: featx cannot tell "
            "whether that is N x C x h x w or N x h x w x C (an embedding that takes other sizes is measured at a "
            "wider image too)",
        )
    return shape[1] == shape[2]


def patch_stride(model: nn.Module, embed: str, in_channels: int, fixed_sides: Sequence[int] = (224,)) -> PatchEmbedding:
    """The patch embedding at ``embed`` measured from its output for a large meta image (and a twice-as-wide one for
    a 4-d output: N×C×h×w or N×h×w×C); one that takes one size only is measured at the first of ``fixed_sides`` it
    takes."""
    try:
        side, output = _MEASURING_SIDE, _embedding_output(model, embed, in_channels, (_MEASURING_SIDE,) * 2)
    except SpecError:
        raise
    except Exception:  # noqa: BLE001 - any failure means the module is no patch embedding (at this size)
        side, output = _fixed_size_output(model, embed, in_channels, fixed_sides)
    shape = tuple(int(length) for length in output.shape)
    returns_tokens = len(shape) == 3 or _channels_last(model, embed, in_channels, side, shape)
    grid = shape[1:-1] if returns_tokens else shape[2:]  # (L,) for N×L×C tokens
    cells = math.prod(grid)
    rows = math.isqrt(cells)
    if rows * rows != cells or grid[0] != grid[-1] or side % rows:
        found = f"{cells} tokens" if len(shape) == 3 else f"{grid[0]}x{grid[1]} patches"
        raise SpecError(
            key_path("tokens", "embed"),
            f"{quoted(embed)} maps a {side}x{side} image to {found}: not a square grid of whole patches",
        )
    channels = shape[-1] if returns_tokens else shape[1]
    return PatchEmbedding(side // rows, channels, returns_tokens, side != _MEASURING_SIDE)


def _grid(tokens: int, patch: int, evaluation: Size) -> Optional[Grid]:
    """The patch grid of ``tokens`` position entries: a square if it is one (a spec's own ``input_size`` may happen to
    have as many patches), else the evaluation size's grid if that fits."""
    side = math.isqrt(tokens)
    if side * side == tokens:
        return side, side
    evaluated = (evaluation[0] // patch, evaluation[1] // patch)
    return evaluated if evaluated[0] * evaluated[1] == tokens else None


#: the most prefix tokens a position embedding's surplus entries are taken for in a hint (DINOv2: 1 + 4 registers)
_MAX_MISSING_PREFIX = 8


def _missing_prefix_hint(entries: int, covers_prefix: bool, prefix_count: int, patch: int, evaluation: Size) -> str:
    """Where ``entries`` patch entries of a position embedding are no patch grid but a few (k) fewer would be:
    that the spec leaves out k prefix tokens with entries of their own, else nothing."""
    for missing in range(1, min(_MAX_MISSING_PREFIX, entries - 1) + 1):
        grid = _grid(entries - missing, patch, evaluation)
        if grid is None:
            continue
        many = missing > 1
        if covers_prefix:
            cause = f"tokens.prefix may be missing {missing} token{'s' if many else ''}"
        elif missing == prefix_count:
            cause = "tokens.position_covers_prefix may be wrong (set true: the prefix tokens' entries come first)"
        else:
            cause = (
                "tokens.prefix and tokens.position_covers_prefix may be wrong "
                f"({missing} prefix token{'s' if many else ''} with position entries)"
            )
        return f"; {missing} entr{'ies' if many else 'y'} fewer would be a {grid[0]}x{grid[1]} grid: {cause}"
    return ""


def resolve_tokens(
    model: nn.Module, spec: BackboneSpec, members: Sequence[StageMembers], in_channels: int, evaluation: Size
) -> TokenLayout:
    """Check ``spec.tokens`` against ``model`` (on meta) and measure its geometry; SpecError naming the key."""
    tokens: TokenSpec = spec.tokens
    find_module(model, tokens.embed, key_path("tokens", "embed"))
    first = members[0]
    if first.paths[0] != tokens.embed:
        raise SpecError(
            key_path("tokens", "embed"),
            f"{quoted(tokens.embed)} must be the first module of the first stage ({quoted(first.name)} starts with "
            f"{quoted(first.paths[0])}): the patch embedding starts the token sequence",
        )
    # a spec's input_size is the size before tokens.stride resizes it: a one-size embedding takes the crop size
    sides = dict.fromkeys((evaluation[0], default_crop_size(spec.model)))
    measured = patch_stride(model, tokens.embed, in_channels, tuple(sides))
    patch, channels = measured.stride, measured.channels
    prefix = [_find_parameter(model, path, "tokens", f"prefix[{i}]") for i, path in enumerate(tokens.prefix)]
    registered = [path for path, _ in model.named_parameters() if path in tokens.prefix]
    if list(tokens.prefix) != registered:
        raise SpecError(
            key_path("tokens", "prefix"),
            f"{list(tokens.prefix)} is not in the order the model registers them ({registered}): featx puts the "
            "prefix tokens in front in the listed order, and torchvision and timm models concatenate them in the "
            "order they register them",
        )
    prefix_count = sum(int(token.shape[1]) for token in prefix)
    shaped: List[Tuple[str, nn.Parameter, Tuple[str, ...]]] = [
        (path, prefix[i], ("tokens", f"prefix[{i}]")) for i, path in enumerate(tokens.prefix)
    ]
    grid: Optional[Grid] = (evaluation[0] // patch, evaluation[1] // patch)
    if tokens.position is not None:
        position = _find_parameter(model, tokens.position, "tokens", "position")
        shaped.append((tokens.position, position, ("tokens", "position")))
        covered = prefix_count if tokens.position_covers_prefix else 0
        length = int(position.shape[1])
        if length <= covered:
            raise SpecError(
                key_path("tokens", "position"),
                f"{quoted(tokens.position)} has {length} entries but the prefix tokens alone are {covered}: no "
                "entries are left for the patches (check tokens.prefix and tokens.position_covers_prefix)",
            )
        grid = _grid(length - covered, patch, evaluation)
        if grid is None:
            hint = _missing_prefix_hint(
                length - covered, tokens.position_covers_prefix, prefix_count, patch, evaluation
            )
            raise SpecError(
                key_path("tokens", "position"),
                f"{quoted(tokens.position)} has {length - covered} patch entries (after {covered} prefix ones): not "
                f"the patch grid of {evaluation[0]}x{evaluation[1]} images at patch stride {patch}, nor a square "
                f"grid{hint}",
            )
    for path, parameter, key in shaped:
        if parameter.shape[2] != channels:
            raise SpecError(
                key_path(*key),
                f"{quoted(path)} has {parameter.shape[2]} channels but the patch embedding {quoted(tokens.embed)} "
                f"returns {channels}",
            )
    assert grid is not None
    if tokens.stride is not None and not patch / 2 <= tokens.stride <= patch * 2:
        raise SpecError(
            key_path("tokens", "stride"),
            f"{tokens.stride} resizes the image by {patch}/{tokens.stride} before the patch-{patch} embedding; give a "
            f"stride in {-(-patch // 2)}..{patch * 2} (within a factor 2 of the patch: more would multiply the "
            "tokens, and attention's memory with their square), or null",
        )
    layout = TokenLayout(tokens, tokens.stride or patch, patch, grid, prefix_count, measured.returns_tokens)
    if spec.input_size is not None and measured.one_size:
        _check_embedding_takes(model, layout, (spec.input_size[0], spec.input_size[1]), in_channels)
    return layout


def _check_embedding_takes(model: nn.Module, layout: TokenLayout, size: Size, in_channels: int) -> None:
    """SpecError naming ``input_size`` when the patch embedding, one that takes one size only (timm's
    ``PatchEmbed``), fails on the image a spec's ``input_size`` gives it (resized by ``tokens.stride``)."""
    given = (size[0] * layout.embed_patch // layout.patch, size[1] * layout.embed_patch // layout.patch)
    try:
        _embedding_output(model, layout.spec.embed, in_channels, given)
    except SpecError:
        raise
    except Exception as error:  # noqa: BLE001 - the embedding's refusal of this size
        taken = "x".join(map(str, layout.stage_size))
        resized = f" (resized to {given[0]}x{given[1]} by tokens.stride {layout.patch})" if given != size else ""
        raise SpecError(
            key_path("input_size"),
            f"{size[0]}x{size[1]}: the patch embedding {quoted(layout.spec.embed)} fails on this size{resized}: "
            f"{type(error).__name__}: {first_line(error).rstrip('.')}; the model takes {taken} images (leave "
            "input_size out to get it)",
        ) from None

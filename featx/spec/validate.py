"""The checks of a backbone spec that need no model: fixed choices, slice shapes, stage names, ``out_features``,
``reinit``, ``frozen_stages``, the form of ``tokens``. Checks that need the model (slice ends, module paths, execution
order, token parameters) are in :mod:`featx.construct`.

Example::

    validate_spec(BackboneSpec(model="vgg16", stages={"c1": StageSpec(slice=[0, 4])}, norm="bn"))
    # SpecError: backbone.norm: unknown value 'bn' (valid: frozen, eval, train, sync)
"""

from __future__ import annotations

import re
from typing import List, Optional, Sequence, Tuple

from featx.errors import SpecError
from featx.spec.keys import key_path, suggest
from featx.spec.limits import (
    MAX_CHANNELS,
    MAX_SEED,
    MAX_SIDE,
    MAX_STAGE_MODULES,
    MAX_STAGES,
    quoted,
    shortened,
    unknown_home,
)
from featx.spec.schema import (
    DEVICE_CHOICES,
    EXTRA_BLOCKS,
    FPN_STYLES,
    LAYOUTS,
    NORM_POLICIES,
    OUTPUT_NAMES,
    BackboneSpec,
    TokenSpec,
)

#: the devices a spec may name: ``cuda:N`` with N in ASCII digits and no leading zero, as ``torch.device`` takes it
#: (Python's ``\d`` matches any script's digits, and torch refuses ``cuda:01``)
_DEVICE_PATTERN = re.compile(r"auto|cpu|mps|meta|cuda(:(0|[1-9][0-9]{0,3}))?")
MAX_NAME_CHARS = 64
#: the largest ``tokens.stride``: patches wider than this are no patches
MAX_PATCH = 1024
_STAGE_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,%d}" % (MAX_NAME_CHARS - 1))


def _check_choice(value: Optional[str], choices: Sequence[str], *parts: str, allow_null: bool = False) -> None:
    if value is None and allow_null:
        return
    if value not in choices:
        valid = ", ".join((["null"] if allow_null else []) + list(choices))
        raise SpecError(
            key_path(*parts), f"unknown value {quoted(value)}{suggest(str(value), choices)} (valid: {valid})"
        )


def _validate_slice(name: str, bounds: List[int], previous: Optional[Tuple[str, int]]) -> None:
    """``previous`` is ``(name, end)`` of the stage just before when that one is a slice too, else ``None``;
    a first stage passes ``("the input", 0)`` since nothing may be skipped before it."""
    key = key_path("stages", name, "slice")
    if len(bounds) != 2:
        raise SpecError(key, f"expected [start, end], got {list(bounds)}")
    start, end = bounds
    if start < 0:
        raise SpecError(key, f"start {start} is negative; slices count children from 0")
    if end < 0:
        raise SpecError(key, f"end {end} is negative; slices count children from 0")
    if end <= start:
        raise SpecError(key, f"[{start}, {end}] is empty; end is exclusive and must be greater than start")
    if previous is None:
        return
    previous_name, previous_end = previous
    if start < previous_end:
        raise SpecError(key, f"[{start}, {end}] overlaps {previous_name}, which ends at {previous_end}")
    if start > previous_end:
        raise SpecError(
            key,
            f"starts at {start} but {previous_name} ends at {previous_end}: children {previous_end}..{start - 1} "
            "would never run (stages feed each other, so slices must be contiguous)",
        )


#: what no stage may be called: the neck's parameter group and attribute
RESERVED_STAGE_NAME = "neck"
#: the attributes of torch's ``nn.ModuleDict`` (torch 2.14), which no stage may be called: ``backbone.stages`` is one,
#: and torch adds no module under such a name. Listed so that the spec layer checks them without importing torch
MODULE_DICT_NAMES = frozenset(
    """
    T_destination __annotations__ __call__ __class__ __contains__ __delattr__ __delitem__ __dict__ __dir__
    __doc__ __eq__ __format__ __ge__ __getattr__ __getattribute__ __getitem__ __getstate__ __gt__ __hash__
    __init__ __init_subclass__ __iter__ __le__ __len__ __lt__ __module__ __ne__ __new__ __reduce__ __reduce_ex__
    __repr__ __setattr__ __setitem__ __setstate__ __sizeof__ __str__ __subclasshook__ __weakref__ _apply
    _backward_hooks _backward_pre_hooks _buffers _call_impl _compiled_call_impl _forward_hooks
    _forward_hooks_always_called _forward_hooks_with_kwargs _forward_pre_hooks _forward_pre_hooks_with_kwargs
    _get_backward_hooks _get_backward_pre_hooks _get_name _is_full_backward_hook _load_from_state_dict
    _load_state_dict_post_hooks _load_state_dict_pre_hooks _maybe_warn_non_full_backward_hook _modules
    _named_members _non_persistent_buffers_set _parameters _register_load_state_dict_pre_hook
    _register_state_dict_hook _replicate_for_data_parallel _save_to_state_dict _slow_forward _state_dict_hooks
    _state_dict_pre_hooks _version _wrapped_call_impl add_module apply bfloat16 buffers call_super_init children
    clear compile cpu cuda double dump_patches eval extra_repr float forward get_buffer get_extra_state
    get_parameter get_submodule half ipu items keys load_state_dict modules mtia named_buffers named_children
    named_modules named_parameters parameters pop register_backward_hook register_buffer register_forward_hook
    register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module register_parameter
    register_state_dict_post_hook register_state_dict_pre_hook requires_grad_ set_extra_state set_submodule
    share_memory state_dict to to_empty train training type update values xpu zero_grad
    """.split()
)


def module_dict_name_error(name: str) -> SpecError:
    """The error for a stage called by a name of ``nn.ModuleDict``'s own: ``raise module_dict_name_error("keys")``."""
    return SpecError(
        key_path("stages", name),
        f"{name!r} is a name of nn.ModuleDict's own (backbone.stages holds the stages); give the stage another name",
    )


def _validate_stages(spec: BackboneSpec) -> None:
    if not spec.stages:
        raise SpecError(key_path("stages"), "no stages; give at least one stage as name: {slice: [start, end]}")
    if len(spec.stages) > MAX_STAGES:
        raise SpecError(key_path("stages"), f"{len(spec.stages)} stages; a spec may have at most {MAX_STAGES}")
    previous: Optional[Tuple[str, int]] = ("the input", 0)
    for name, stage in spec.stages.items():
        if not _STAGE_NAME_PATTERN.fullmatch(name):
            raise SpecError(
                key_path("stages", shortened(name)),
                f"a stage name must be an identifier of at most {MAX_NAME_CHARS} characters (letters, digits, _)",
            )
        if name in MODULE_DICT_NAMES:
            raise module_dict_name_error(name)
        if name == RESERVED_STAGE_NAME:
            raise SpecError(
                key_path("stages", name),
                "'neck' is the name of the neck's parameter group (param_groups()) and of its modules "
                "(backbone.neck); give the stage another name",
            )
        if (stage.slice is None) == (stage.modules is None):
            raise SpecError(key_path("stages", name), "give exactly one of 'slice' or 'modules'")
        if stage.slice is not None:
            _validate_slice(name, list(stage.slice), previous)
            previous = (f"stage {quoted(name)}", stage.slice[1])
            continue
        if not stage.modules:
            raise SpecError(key_path("stages", name, "modules"), "empty list; name at least one module path")
        if len(stage.modules) > MAX_STAGE_MODULES:
            raise SpecError(
                key_path("stages", name, "modules"),
                f"{len(stage.modules)} module paths; a stage may list at most {MAX_STAGE_MODULES}",
            )
        for position, path in enumerate(stage.modules):
            if not path or any(not part for part in path.split(".")):
                raise SpecError(
                    key_path("stages", name, f"modules[{position}]"), f"{quoted(path)} is not a module path"
                )
        previous = None


def _check_path(path: object, *parts: str) -> None:
    if not isinstance(path, str) or not path or any(not part for part in path.split(".")):
        raise SpecError(key_path(*parts), f"{quoted(path)} is not a module or parameter path")


def _validate_tokens(tokens: TokenSpec, layout: str) -> None:
    _check_path(tokens.embed, "tokens", "embed")
    for position, path in enumerate(tokens.prefix):
        _check_path(path, "tokens", f"prefix[{position}]")
        if path in tokens.prefix[:position]:
            raise SpecError(key_path("tokens", f"prefix[{position}]"), f"{quoted(path)} is listed twice")
    if tokens.position is not None:
        _check_path(tokens.position, "tokens", "position")
    if tokens.stride is not None and not 1 <= tokens.stride <= MAX_PATCH:
        raise SpecError(
            key_path("tokens", "stride"),
            f"must be a patch stride in 1..{MAX_PATCH}, or null for the embedding's own, got {tokens.stride}",
        )
    if layout != "nchw":
        raise SpecError(
            key_path("layout"),
            f"{quoted(layout)} with tokens: a token model's stages return token sequences, which featx turns into "
            "N x C x H x W maps; use layout: nchw",
        )


def _validate_outputs(spec: BackboneSpec) -> None:
    names = list(spec.stages)
    if spec.out_features is not None:
        if not spec.out_features:
            raise SpecError(key_path("out_features"), "empty list; use null to return every stage")
        for position, name in enumerate(spec.out_features):
            if name not in spec.stages:
                raise SpecError(
                    key_path(f"out_features[{position}]"),
                    f"unknown stage {quoted(name)}{suggest(name, names)} (stages: {', '.join(names)})",
                )
        order = [names.index(name) for name in spec.out_features]
        if order != sorted(set(order)):
            raise SpecError(
                key_path("out_features"),
                f"{list(spec.out_features)} must name distinct stages in stage order ({', '.join(names)})",
            )
    kept = names[: names.index(spec.returned_stages[-1]) + 1]
    for position, name in enumerate(spec.reinit):
        if name in spec.reinit[:position]:
            raise SpecError(key_path(f"reinit[{position}]"), f"{quoted(name)} is listed twice")
        if name not in kept:
            raise SpecError(
                key_path(f"reinit[{position}]"),
                f"{quoted(name)} is not a kept stage{suggest(name, kept)} (kept stages: {', '.join(kept)})",
            )
    if not 0 <= spec.frozen_stages <= len(kept):
        raise SpecError(
            key_path("frozen_stages"),
            f"{spec.frozen_stages} is out of range; valid: 0..{len(kept)} (kept stages: {', '.join(kept)})",
        )


def validate_spec(spec: BackboneSpec) -> None:
    """Raise :class:`SpecError` for the first problem found without looking at the model."""
    if not spec.model:
        raise SpecError(key_path("model"), "empty; name a torchvision classification model, e.g. resnet50")
    if spec.source == "":
        raise SpecError(
            key_path("source"), "empty; name the container whose children slice counts, or null for the model's own"
        )
    _validate_stages(spec)
    if spec.source is not None and all(stage.slice is None for stage in spec.stages.values()):
        raise SpecError(
            key_path("source"),
            f"{quoted(spec.source)} is the container whose children slice counts, but no stage has a slice (every "
            "stage names its modules); remove source (null), or give stages as slices",
        )
    _validate_outputs(spec)
    home = unknown_home(spec.weights) if spec.weights is not None else None
    if home is not None:
        raise SpecError(key_path("weights"), home)
    if not 0 <= spec.seed <= MAX_SEED:
        raise SpecError(key_path("seed"), f"must be in 0..{MAX_SEED} (it seeds the random init), got {spec.seed}")
    _check_choice(spec.norm, NORM_POLICIES, "norm")
    _check_choice(spec.layout, LAYOUTS, "layout")
    _check_choice(spec.output_names, OUTPUT_NAMES, "output_names")
    if spec.tokens is not None:
        _validate_tokens(spec.tokens, spec.layout)
    if spec.input_size is not None and (
        len(spec.input_size) != 2 or not all(1 <= side <= MAX_SIDE for side in spec.input_size)
    ):
        raise SpecError(
            key_path("input_size"),
            f"expected [height, width] of sizes in 1..{MAX_SIDE}, or null; got {quoted(list(spec.input_size))}",
        )
    if not _DEVICE_PATTERN.fullmatch(spec.device):
        raise SpecError(
            key_path("device"), f"unknown device {quoted(spec.device)} (valid: {', '.join(DEVICE_CHOICES)})"
        )
    if spec.fpn is not None:
        if not 1 <= spec.fpn.out_channels <= MAX_CHANNELS:
            raise SpecError(
                key_path("fpn", "out_channels"),
                f"must be a channel count in 1..{MAX_CHANNELS}, got {spec.fpn.out_channels}",
            )
        _check_choice(spec.fpn.extra_blocks, EXTRA_BLOCKS, "fpn", "extra_blocks", allow_null=True)
        _check_choice(spec.fpn.style, FPN_STYLES, "fpn", "style")

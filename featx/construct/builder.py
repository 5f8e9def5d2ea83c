"""``featx.build``, ``featx.load`` and ``featx.save``: one generic builder from any backbone spec (or a checkpoint that
to a :class:`~featx.nn.backbone.Backbone`.

The path of a build: spec (:mod:`featx.spec`) → model on the meta device (:mod:`featx.models`) → plan: stages,
channels, strides (:mod:`featx.construct.plan`) → kept layers materialised, weights loaded
(:mod:`featx.construct.meta_model`) → neck and :class:`Backbone` (:mod:`featx.nn`) → device.

Example::

    import featx, torch
    bb = featx.build("resnet50_fpn", overrides=["fpn.out_channels=128", "frozen_stages=1"])
    feats = bb(torch.randn(1, 3, 224, 224))
    same = featx.load(featx.save(bb, "runs/bb.pt"))

``featx.save`` is here too: a saved file holds the spec and the weights, and ``featx.load`` rebuilds the spec, so
``save`` first checks that the spec builds the backbone it is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from featx.construct.checkpoint import (
    Checkpoint,
    PathLike,
    load_saved_backbone,
    read_checkpoint,
    saved_spec,
    write_backbone_file,
)
from featx.construct.device import resolve_device
from featx.construct.meta_model import MetaModel
from featx.construct.model_structure import structure_differences
from featx.construct.plan import BackbonePlan, check_neck, plan_backbone
from featx.construct.plan_cache import cached_plan
from featx.construct.weights import UnreadableWeightsError, backbone_state_hint
from featx.errors import ArgumentError, DeviceError, FeatxError, SpecError, WeightsError
from featx.files import file_path_argument, refuse_interpolation_in_path
from featx.models.legacy_keys import current_keys
from featx.models.meta_construction import on_meta, registrations_untouched
from featx.models.published_weights import published_weights_file, published_weights_id
from featx.models.registry import check_model_name
from featx.models.weights_enums import is_weights_file
from featx.nn.backbone import Backbone, backbone_of
from featx.nn.feature_info import FeatureInfo
from featx.nn.fpn import FeaturePyramid, level_name
from featx.nn.simple_pyramid import SimpleFeaturePyramid
from featx.spec.keys import key_path
from featx.spec.limits import expand_home, quoted, shortened
from featx.spec.load import SpecSource, attributed, load_spec, load_spec_and_origin
from featx.spec.schema import BackboneSpec

#: held while a build draws from torch's CPU generator (seeded, then restored): one build at a time per process
_SEEDED_CONSTRUCTION = threading.RLock()  # reentrant: a registered model's constructor may build in its thread
#: while a build holds the lock, what it changes of torch's process-wide state: the caller's default dtype and the
#: CPU generator's state, which a process forked meanwhile (by another thread) gets back
_CALLERS_STATE: List[Tuple[torch.dtype, torch.Tensor]] = []


def _after_fork_in_child() -> None:
    """A child forked while another thread of its parent built a backbone: that thread is gone, and with it the
    build that held the lock and would have put torch's default dtype and generator back. The child gets a lock of
    its own (it waited forever for the parent thread's) and the caller's torch state."""
    global _SEEDED_CONSTRUCTION
    _SEEDED_CONSTRUCTION = threading.RLock()
    if _CALLERS_STATE:  # the outermost build's caller (a nested build records the outer build's state)
        dtype, generator = _CALLERS_STATE[0]
        _CALLERS_STATE.clear()
        torch.set_default_dtype(dtype)
        torch.set_rng_state(generator)


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def _seeded_construction() -> Iterator[None]:
    """One build at a time draws from torch's generator in a process (a nested build in the same thread goes on);
    the caller's torch state is recorded for a child forked meanwhile."""
    with _SEEDED_CONSTRUCTION:
        _CALLERS_STATE.append((torch.get_default_dtype(), torch.get_rng_state()))
        try:
            yield
        finally:
            if _CALLERS_STATE:  # (emptied in a child forked by this very build)
                _CALLERS_STATE.pop()


def _exists(path: Path) -> bool:
    """Whether ``path`` names something; False also for a name no file can have (too long for the file system)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _weights_path(spec: BackboneSpec) -> Path:
    """The local file the spec's ``weights`` names (an enum member's file is fetched into the cache if absent)."""
    assert spec.weights is not None
    if not is_weights_file(spec.weights):
        return published_weights_file(spec.model, spec.weights)
    if "://" in spec.weights:
        raise SpecError(
            "backbone.weights",
            f"{quoted(spec.weights)} is a URL; featx reads weights from the torch hub cache (by enum name) or from "
            "local files: download it and name the file",
        )
    return expand_home(spec.weights)


def make_neck(spec: BackboneSpec, plan: BackbonePlan, meta: bool) -> Optional[nn.Module]:
    """The neck ``spec.fpn`` asks for on top of the planned stages (on the meta device if ``meta``), or None."""
    if spec.fpn is None:
        return None
    torchvision_names = spec.output_names == "torchvision"
    returned = plan.returned(spec)
    with on_meta() if meta else contextlib.nullcontext():
        if spec.fpn.style == "simple":
            return SimpleFeaturePyramid([info.output for info in returned], spec.fpn, torchvision_names)
        levels = [
            FeatureInfo(str(index) if torchvision_names else level_name(info.stride), info.channels, info.stride)
            for index, info in enumerate(returned)
        ]
        return FeaturePyramid(levels, spec.fpn, torchvision_names)


def plan_spec(spec: BackboneSpec, meta: Optional[MetaModel] = None) -> Tuple[BackboneSpec, BackbonePlan]:
    """``spec`` as built (a fixed-size model's ``input_size`` filled in) and its plan, from the plan cache or made on
    ``meta`` (the model on the meta device, constructed here if not given and needed); the neck checked against the
    stages."""
    model = meta.model if meta is not None else lambda: MetaModel.create(spec.model).model
    plan = cached_plan(spec, lambda planned: plan_backbone(spec, planned), model)
    check_neck(spec, plan)
    return plan.built_spec(spec), plan


def _assemble(spec: BackboneSpec, checkpoint: Optional[Checkpoint], saved: Optional[BackboneSpec] = None) -> Backbone:
    """Build ``spec``; ``checkpoint`` holds its weights (already read; on ``device: meta`` a :func:`save` file is
    checked, not loaded), ``None`` for random init or ``device: meta``; ``saved`` is the spec a :func:`save` file was
    saved from (:func:`saved_spec`), given with such a checkpoint.

    Everything random (the kept layers' init, the neck's, ``reinit``) draws from a generator seeded with
    ``spec.seed``, so a spec builds the same network in every process; the global RNG is left as it was. A random
    init (no checkpoint) draws in float32 whatever torch's default dtype, then takes that dtype, as torch's own
    modules do; a checkpoint's values are loaded in the default dtype (a float64 file is not rounded).
    """
    dtype = torch.get_default_dtype()
    draw_dtype = torch.float32 if checkpoint is None else dtype  # under another dtype one seed draws other numbers
    # a build inside a model constructor featx runs is a build of its own; torch's default dtype is the process's
    # one, so builds in other threads wait (the lock) while it is changed
    with registrations_untouched(), _seeded_construction(), _default_dtype(draw_dtype):
        device = resolve_device(spec.device)
        meta = MetaModel.create(spec.model)
        spec, plan = plan_spec(spec, meta)
        # drawn from the CPU generator alone: torch.manual_seed would also reseed (and leave reseeded) every CUDA/MPS
        # generator. The generator is the process's one: builds in other threads wait for it.
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(spec.seed)
            model = meta.model if device.type == "meta" else meta.materialise(plan.kept_paths, checkpoint)
            # made on the CPU whatever the caller's default device (torch.set_default_device, `with
            # torch.device(...)`); not around materialise, which does so where it constructs or loads: torch's device
            # mode costs every torch call in it, and copying a checkpoint's tensors makes nothing on the default device
            with torch.device("cpu"):
                # a saved file's FPN holds its values; a file without one gives the trunk to an FPN drawn here
                neck = make_neck(
                    spec, plan, meta=device.type == "meta" or (saved is not None and saved.fpn is not None)
                )
                backbone = Backbone(
                    plan.stage_containers(model), plan.stages, spec, neck, plan.in_channels, copied=plan.changed_later
                )
                if checkpoint is not None and saved is not None:  # on meta: checked, not filled
                    load_saved_backbone(backbone, spec, checkpoint, saved, values=device.type != "meta")
                if spec.reinit:
                    backbone.reinit(*spec.reinit)
        if checkpoint is not None:
            checkpoint.check_unchanged()  # every tensor the backbone keeps is copied by now
        backbone.to(device)
        if spec.channels_last:
            backbone.to(memory_format=torch.channels_last)
        if draw_dtype != dtype:  # drawn in float32: the parameters take the caller's default dtype
            backbone.to(dtype)
    return backbone.train()


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype is ``dtype`` inside the block, the caller's again after it."""
    caller = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(caller)


def build(source: SpecSource, overrides: Optional[Sequence[str]] = None) -> Backbone:
    """Build the backbone ``source`` describes: a packaged name (``"resnet50_fpn"``), a ``.yaml`` path, a mapping,
    a ``DictConfig`` or a :class:`~featx.spec.schema.BackboneSpec`; ``overrides`` use Hydra's grammar relative to
    the backbone node (``["fpn.out_channels=128"]``).

    ``device: meta`` builds the structure only (no memory, no weights read): enough for ``feature_info``, parameter
    counts and output shapes, e.g. ``featx.build("resnet50_fpn", overrides=["device=meta"])``.

    Raises :class:`~featx.errors.SpecError` for an invalid spec, :class:`~featx.errors.WeightsError` for weights
    that cannot be had or do not fit, :class:`~featx.errors.DeviceError` for a device this machine lacks.
    """
    spec, origin = load_spec_and_origin(source, overrides)
    try:
        return _build_spec(spec)
    except SpecError as error:  # the model's checks: a spec file's own value is named with the file
        raise attributed(error, origin, overrides) from None


def _published_name_meant(spec: BackboneSpec) -> Optional[str]:
    """The published weights name a ``weights`` value that reads as a file (it has a suffix) but is none may mean:
    timm's own ``model.tag`` form (``mobilenetv3_small_050.lamb_in1k``, also with ``timm:``, or as the Hugging Face
    hub names it, ``timm/resnet18.a1_in1k`` and ``hf-hub:timm/resnet18.a1_in1k``), or a member of torchvision's enum
    in lower case (``ResNet18_Weights.imagenet1k_v1``)."""
    assert spec.weights is not None
    value = spec.weights.removeprefix("hf-hub:").removeprefix("timm:").removeprefix("timm/")
    model = spec.model.removeprefix("timm:")
    candidates = [value[len(model) + 1 :]] if value.startswith(model + ".") else []
    if "_Weights." in value:
        candidates.append(value.rpartition(".")[2].upper())
    for candidate in candidates:
        try:
            published_weights_id(spec.model, candidate)
        except SpecError:
            continue
        return candidate
    return None


def check_names(spec: BackboneSpec) -> None:
    """SpecError for a model featx does not build, then for a weights name (not a file) the model does not publish:
    nothing is read, so a misspelt name is refused on ``device: meta`` too (and by featx-list), and a model before its
    weights. (A stage name a Backbone cannot hold is refused by ``load_spec``.)"""
    check_model_name(spec.model)
    if spec.weights is not None and not is_weights_file(spec.weights):
        published_weights_id(spec.model, spec.weights)


def _build_spec(spec: BackboneSpec) -> Backbone:
    """Build a loaded spec: its weights read (a published name from the hub cache, or a file), then assembled."""
    check_names(spec)
    if spec.weights is None or resolve_device(spec.device).type == "meta":
        return _assemble(spec, None)
    path = _weights_path(spec)
    try:
        checkpoint = read_checkpoint(path)
    except WeightsError as error:
        meant = _published_name_meant(spec) if is_weights_file(spec.weights) and not _exists(path) else None
        if meant is not None:
            raise WeightsError(f"{error}; for {spec.model}'s published weights {meant} write weights={meant}") from None
        if is_weights_file(spec.weights):
            raise
        cached = f"the hub cache's copy of {published_weights_id(spec.model, spec.weights)}"
        if isinstance(error, UnreadableWeightsError):  # a file that reads but holds something else downloaded whole
            # the Hugging Face hub cache's file is a link to its blob, which the hub links again if only the link goes
            target = os.path.realpath(path)
            delete = "it" if target == os.path.abspath(path) else f"{target} (the file it links to)"
            cached += f", perhaps a download that stopped midway: delete {delete} and build again to download it afresh"
        raise WeightsError(f"{error} ({cached})") from None
    if checkpoint.saved is None:  # a state dict as torchvision publishes them: its legacy key names renamed
        return _assemble(spec, dataclasses.replace(checkpoint, state=current_keys(spec.model, checkpoint.state)))
    saved = saved_spec(checkpoint)
    _check_reinit_again(spec, saved, checkpoint.path)
    return _assemble(spec, checkpoint, saved)


def _check_reinit_again(spec: BackboneSpec, saved: BackboneSpec, path: Path) -> None:
    """WeightsError when ``spec`` re-initialises a stage that ``saved``, the spec the :func:`save` file ``path`` was
    saved from, re-initialised too: the file holds that stage as trained since, which a second draw would replace
    (featx.load clears ``reinit``). A stage only ``spec`` re-initialises (a new head) is drawn on purpose."""
    shared = [name for name in spec.reinit if name in saved.reinit]
    if not shared:
        return
    names = ", ".join(shared)
    raise WeightsError(
        f"{key_path('reinit')}: {path} was saved from a spec that re-initialises {names} too, and holds "
        f"{'its' if len(shared) == 1 else 'their'} values as trained after that re-initialisation, which "
        f"re-initialising again would discard; drop {names} from reinit to keep the file's values (reinit=[] keeps "
        f"every stage as the file holds it, as featx.load({str(path)!r}) does), or call "
        f"bb.reinit({', '.join(map(repr, shared))}) on the built backbone for fresh ones"
    )


def _as_load_argument(error: WeightsError) -> WeightsError:
    """``error``, named ``backbone.weights`` by the reading and loading code, as :func:`load`'s own argument (it was
    given a path, no spec key): ``load(): path: ...``; other keys' errors as they are."""
    weights_key = f"{key_path('weights')}: "
    if not str(error).startswith(weights_key):
        return error
    return type(error)(f"load(): path: {str(error).removeprefix(weights_key)}")


def load(path: PathLike, overrides: Optional[Sequence[str]] = None) -> Backbone:
    """Rebuild the backbone saved at ``path`` by :func:`featx.save` from its embedded spec (plus ``overrides``) and
    load its weights; the file is read once.

    The spec's ``frozen_stages`` apply again; freezing changed at run time (``bb.unfreeze()``) is not saved.
    """
    path = file_path_argument(path, "load(): path")
    refuse_interpolation_in_path(path, "load(): path")
    try:
        checkpoint = read_checkpoint(path)
    except WeightsError as error:  # the file is load()'s argument, not a spec's weights key
        raise _as_load_argument(error) from None
    if checkpoint.saved is None:  # a Backbone's own state_dict() goes to bb.load_state_dict, not to weights:
        hint = backbone_state_hint(list(checkpoint.state), str(path))
        advice = hint or f"; build a spec with weights: {path} instead"
        raise WeightsError(f"load(): path: {path} has no featx spec: it was not written by featx.save{advice}")
    weights = str(path) if is_weights_file(str(path)) else os.path.join(os.curdir, path)  # ./DEFAULT: a file
    file_spec = dict(checkpoint.saved["spec"], weights=weights, reinit=[])
    try:
        saved = spec = load_spec(file_spec)  # the file's own spec, its errors attributed to the file
    except SpecError as error:
        raise error.with_origin(str(path)) from None
    if overrides:
        spec = load_spec(file_spec, overrides)
    if spec.weights != weights:
        raise ArgumentError(
            f"load(): overrides may not change weights (got {spec.weights!r}): the checkpoint {path} is the weights; "
            "to build its spec with other weights, pass the spec to featx.build"
        )
    try:  # on device: meta too, the file is checked against the spec (overrides it cannot give are refused)
        return _assemble(spec, checkpoint, saved)  # the file's spec, parsed above
    except SpecError as error:  # the model checks of the file's own spec (overrides are checked above)
        raise (error if overrides else error.with_origin(str(path))) from None
    except WeightsError as error:  # the file's tensors, as read_checkpoint's errors above
        raise _as_load_argument(error) from None
    except DeviceError as error:
        if spec.device != saved.device:
            raise  # the caller's override
        kept = [override for override in overrides or () if not override.lstrip("+~").startswith("device=")]
        raise DeviceError(
            f"{path} was saved on {spec.device}: {error} (featx.load({str(path)!r}, overrides={[*kept, 'device=cpu']}))"
        ) from None


def _check_rebuilds_as_saved(backbone: Backbone) -> None:
    """Refuse ``backbone`` unless its spec builds the same modules (what :func:`load` would give back)."""
    try:
        rebuilt = build(backbone.spec, overrides=["device=meta"])
    except FeatxError as error:
        raise ArgumentError(
            f"save(): featx.load rebuilds a saved backbone from its spec, and this backbone's spec does not build "
            f"({error}); nothing was written"
        ) from None
    differences = structure_differences(backbone, rebuilt)
    if differences:
        where, have, want = differences[0]
        more = f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""
        raise ArgumentError(
            f"save(): the backbone's modules differ from what its spec builds, and featx.load rebuilds the spec: "
            f"{where or 'the backbone'} is {shortened(have)} where the spec builds {shortened(want)}{more}. Change "
            "the spec to build this network, or save the state_dict with torch.save; nothing was written"
        )


def save(backbone: nn.Module, path: PathLike, *, overwrite: bool = False) -> Path:
    """Write ``backbone``'s weights, resolved spec and library versions to ``path``, for :func:`load`.

    ``.safetensors`` paths are written with safetensors (the metadata as JSON), anything else with ``torch.save``
    (plain data only, so ``weights_only=True`` reads it). The file appears whole or not at all; an existing file
    is kept unless ``overwrite=True``. A backbone whose modules differ from what its spec builds (a layer replaced
    or added by hand, the neck removed, a ``forward`` replaced) is refused, naming the first difference: it would
    load as another network. ``torch.compile(bb)`` is saved as the backbone it wraps.
    """
    backbone = backbone_of(backbone, "save")  # torch.compile's and DistributedDataParallel's wrappers prefix every key
    _check_rebuilds_as_saved(backbone)
    return write_backbone_file(backbone, path, overwrite=overwrite)

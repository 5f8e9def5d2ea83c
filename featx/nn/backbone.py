"""The module ``featx.build`` returns: stages run in order, named feature maps out, channels and strides known.

Example::

    bb = featx.build("resnet50_fpn")
    feats = bb(torch.randn(2, 3, 224, 224))
    {name: tuple(t.shape) for name, t in feats.items()}
    # {'p2': (2, 256, 56, 56), 'p3': (2, 256, 28, 28), 'p4': (2, 256, 14, 14), 'p5': (2, 256, 7, 7)}
    bb.feature_info   # [FeatureInfo(name='p2', channels=256, stride=4), ...]
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
import os
import re
import sys
from collections import OrderedDict
from typing import AbstractSet, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor, nn

from featx.errors import ArgumentError, DeviceError, FeatxError, InputShapeError, SpecError, first_line
from featx.nn.feature_info import FeatureInfo, StageInfo
from featx.nn.freezing import apply_norm_policy, pin_kept_layers, set_stage_frozen
from featx.nn.reinit import reinit_
from featx.nn.tensor_places import first_meta_tensor, first_other_tensor
from featx.nn.tokens import tokens_to_map
from featx.spec.keys import key_path, suggest
from featx.spec.limits import MAX_CHANNELS, quoted, real_value
from featx.spec.load import load_spec
from featx.spec.schema import BackboneSpec
from featx.spec.validate import module_dict_name_error


def output_info(
    returned: Sequence[StageInfo], output_names: str, neck: Optional[nn.Module], caller: str = "Backbone()"
) -> List[FeatureInfo]:
    """The outputs of a backbone returning the stages ``returned`` through ``neck`` (or none), named as
    ``output_names`` says: the neck's own ``feature_info``, else the stages' outputs."""
    neck_info = getattr(neck, "feature_info", None)
    if neck is not None and neck_info is None:
        raise ArgumentError(f"{caller}: the neck {type(neck).__name__} has no feature_info describing its outputs")
    if neck_info is not None:
        return list(neck_info)
    if output_names == "torchvision":  # '0', '1', ... as torchvision's detection backbones name them
        return [FeatureInfo(str(i), r.channels, r.stride) for i, r in enumerate(returned)]
    return [r.output for r in returned]


class Backbone(nn.Module):
    """Stages (``self.stages``, an ``nn.ModuleDict``) applied in order, plus an optional neck (``self.neck``).

    Built by :func:`featx.build`, or by hand from modules: ``Backbone(stages, stage_info, spec, neck)``, where
    ``stage_info`` describes each stage (:class:`StageInfo`, in stage order) and ``spec`` says the norm policy,
    frozen stages, layout and which stages are returned. The stages get ``spec.norm`` and the first
    ``spec.frozen_stages`` are frozen. ``forward(x)`` takes ``N×C×H×W`` and returns an ``OrderedDict`` of
    ``N×C×h×w`` maps, shallow to deep, described by :attr:`feature_info`. The outputs of the stages named in
    ``copied`` are returned as copies: a later stage changes them in place (one that starts with
    ``ReLU(inplace=True)``), as the plan found. ``in_channels`` (``C``, what the first layer takes) is checked on
    every input; after replacing the first layer (``bb.stages.c2.conv1 = nn.Conv2d(4, 64, 7, 2, 3)``, RGB-D) set
    ``bb.in_channels = 4``.
    """

    def __init__(
        self,
        stages: Mapping[str, nn.Module],
        stage_info: Sequence[StageInfo],
        spec: BackboneSpec,
        neck: Optional[nn.Module] = None,
        in_channels: int = 3,
        *,
        copied: Sequence[str] = (),
    ) -> None:
        super().__init__()
        _check_arguments(stages, stage_info, spec, in_channels, copied)
        check_stage_names(stages)
        self.stages = nn.ModuleDict({name: apply_norm_policy(stage, spec.norm) for name, stage in stages.items()})
        self._spec = copy.deepcopy(spec)  # the caller's object may change later: this backbone does not
        self.stage_info: Tuple[StageInfo, ...] = tuple(stage_info)
        self.in_channels = int(in_channels)
        self._frozen: Set[str] = set()
        self._copied = frozenset(copied)
        self.feature_info: List[FeatureInfo] = []
        self._output_names: Dict[str, str] = {}  # returned stage -> the key of its map (the neck's input or output)
        self.neck = neck  # sets feature_info and _output_names (see __setattr__)
        self._nhwc = spec.layout == "nhwc"
        # a token model's stages return token sequences laid out on the grid of this patch stride
        self._patch: Optional[int] = self.stage_info[0].stride if spec.tokens is not None else None
        self._input_size = tuple(spec.input_size) if spec.input_size is not None else None
        if spec.frozen_stages:
            self.freeze(*tuple(self.stages)[: spec.frozen_stages])
        pin_kept_layers(self.stages, self._frozen, spec.norm)

    @property
    def spec(self) -> BackboneSpec:
        """The resolved spec the backbone was built from, as a copy: edit it to build a variant
        (``variant = bb.spec; variant.norm = "train"; featx.build(variant)``); the backbone keeps its own."""
        return copy.deepcopy(self._spec)

    @spec.setter
    def spec(self, value: object) -> None:
        raise ArgumentError(
            "Backbone.spec describes how the backbone was built and cannot be replaced; build another backbone from a "
            "spec with featx.build(spec)"
        )

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Unpickle, also a backbone pickled by an earlier featx (its spec kept as the attribute ``spec``)."""
        if "spec" in state:
            state["_spec"] = state.pop("spec")
        super().__setstate__(state)

    def __copy__(self) -> "Backbone":
        """A shallow copy (``copy.copy(bb)``) with its own tables of modules, parameters and buffers, which share
        the modules and tensors themselves: assigning one's ``neck`` leaves the other's outputs as they were (torch's
        copy shared the tables, so ``variant.neck = None`` removed ``bb``'s neck too)."""
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        for table in ("_modules", "_parameters", "_buffers"):
            clone.__dict__[table] = self.__dict__[table].copy()
        return clone

    def __setattr__(self, name: str, value: Any) -> None:
        """Assigning ``neck`` (a module or ``None``) also re-describes the outputs: ``feature_info`` and the keys
        the returned stages' maps get follow the new neck, or the stages themselves without one. ``in_channels`` is
        checked as :class:`Backbone`'s argument is."""
        if name == "in_channels":
            integral = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if not integral or not 1 <= int(value) <= MAX_CHANNELS:
                raise ArgumentError(f"Backbone.in_channels must be an integer in 1..{MAX_CHANNELS}, got {value!r:.80}")
            value = int(value)
        if name == "neck" and "stage_info" in self.__dict__:
            again = "neck" in self._modules or "neck" in self.__dict__  # else __init__ assigns it
            caller = "Backbone.neck" if again else "Backbone()"
            feature_info, output_names = self._outputs_through(value, caller)
            super().__setattr__(name, value)
            self.feature_info, self._output_names = feature_info, output_names
            return
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        """``del bb.neck`` removes the neck as ``bb.neck = None`` does: the outputs are the returned stages."""
        if name == "neck":
            self.neck = None
            return
        super().__delattr__(name)

    def add_module(self, name: str, module: Optional[nn.Module]) -> None:
        """``add_module("neck", m)`` (and ``register_module``) sets the neck as ``bb.neck = m`` does."""
        if name == "neck":
            self.neck = module
            return
        super().add_module(name, module)

    def _outputs_through(self, neck: Optional[nn.Module], caller: str) -> Tuple[List[FeatureInfo], Dict[str, str]]:
        """(``feature_info``, returned stage -> the key of its map) for the outputs through ``neck`` (or none): the
        neck's input names as keys, or the output names without a neck."""
        if neck is not None and not isinstance(neck, nn.Module):
            raise ArgumentError(f"{caller}: the neck must be a torch.nn.Module or None, got {type(neck).__name__}")
        returned = [info for info in self.stage_info if info.name in set(self._spec.returned_stages)]
        feature_info = output_info(returned, self._spec.output_names, neck, caller)
        input_names = getattr(neck, "input_names", None)
        keys = list(input_names) if input_names is not None else [info.name for info in feature_info]
        checked = [("input_names", keys)] if input_names is not None else []
        for what, names in (*checked, ("feature_info", [info.name for info in feature_info])):
            twice = next((name for index, name in enumerate(names) if name in names[:index]), None)
            if twice is not None:  # one key in the maps' dict: a map would replace another
                raise ArgumentError(f"{caller}: the neck's {what} name {twice!r} twice; every map needs its own name")
        if len(keys) < len(returned) or (input_names is not None and len(keys) != len(returned)):
            raise ArgumentError(
                f"{caller}: {len(returned)} returned stages ({', '.join(r.name for r in returned)}) but the neck "
                f"names {len(keys)} inputs ({', '.join(keys)}); give the neck input_names, one per returned stage"
            )
        takes = getattr(neck, "input_info", None)  # featx's necks say which widths and strides they take
        if takes is not None and [(i.channels, i.stride) for i in takes] != [(r.channels, r.stride) for r in returned]:
            wanted = ", ".join(f"{info.channels} channels at stride {info.stride}" for info in takes)
            given = ", ".join(f"{info.name}={info.channels} at {info.stride}" for info in returned)
            raise ArgumentError(f"{caller}: the neck takes maps of {wanted}, the returned stages give {given}")
        return feature_info, dict(zip([r.name for r in returned], keys[: len(returned)], strict=True))

    @property
    def out_channels(self) -> Optional[int]:
        """The channel count shared by all outputs (what torchvision's detection models read), else ``None``:
        torchvision's detectors check only that the attribute exists, and fail inside torch on ``None`` (a
        ``TypeError`` of ``'NoneType' and 'int'``); :mod:`featx.detection` refuses such a backbone, naming the widths.
        Example: ``featx.build("resnet18_fpn").out_channels == 256``."""
        channels = {info.channels for info in self.feature_info}
        return channels.pop() if len(channels) == 1 else None

    @property
    def frozen_stage_names(self) -> Tuple[str, ...]:
        """The stages :meth:`freeze` froze (or the spec's ``frozen_stages``), in stage order, and not unfrozen
        since: they stay in eval mode across ``train()``. :meth:`freeze` set their parameters' ``requires_grad`` to
        ``False``; ``requires_grad_`` of your own may since have changed their parameters (it changes parameters
        alone, as in PyTorch, and a stage it makes trainable stays listed here and in eval mode)."""
        return tuple(name for name in self.stages if name in self._frozen)

    def train(self, mode: bool = True) -> "Backbone":
        """Like ``nn.Module.train``, but frozen stages (and, with ``norm: eval``, all norm layers) stay in eval.

        They are pinned to eval mode again here (and their statistics kept through ``update_bn``), for layers put in
        by hand since the last call (``nn.SyncBatchNorm.convert_sync_batchnorm`` makes new ones)."""
        if not isinstance(mode, bool):  # torch's refusal (a ValueError too) came from deep inside nn.Module
            raise ArgumentError(f"train(): mode must be True or False, got {mode!r:.80}")
        pin_kept_layers(self.stages, self._frozen, self._spec.norm)
        return super().train(mode)

    def _select(self, names: Sequence[str], method: str, *, empty_means_all: bool = True) -> List[str]:
        if not names and empty_means_all:
            return list(self.stages)
        stages = list(self.stages)
        if not names:
            raise ArgumentError(f"{method}(): name at least one stage (stages: {', '.join(stages)})")
        for name in names:
            if not isinstance(name, str) or name not in self.stages:
                raise ArgumentError(
                    f"{method}(): unknown stage {name!r:.80}{suggest(str(name), stages)} (stages: {', '.join(stages)})"
                    + ("" if isinstance(name, str) else f"; pass names as separate arguments: {method}('a', 'b')")
                )
        return list(names)

    def freeze(self, *names: str) -> "Backbone":
        """Freeze these stages (no names: all): ``requires_grad=False`` at any depth, eval mode across ``train()``.

        Example: ``bb.freeze("c2", "c3")``.
        """
        for name in self._select(names, "freeze"):
            set_stage_frozen(self.stages[name], True, self._spec.norm)
            self._frozen.add(name)
        pin_kept_layers(self.stages, self._frozen, self._spec.norm)
        return self

    def unfreeze(self, *names: str) -> "Backbone":
        """Make these stages (no names: all) trainable again and let them follow ``train()``/``eval()``.

        Norm layers then follow the ``norm`` policy: with ``frozen`` they are ``FrozenBatchNorm2d`` and stay fixed
        (they have no parameters); with ``eval`` their affine terms train but their statistics stay fixed; with
        ``train``/``sync`` they train fully. Example (progressive unfreezing): ``bb.unfreeze("c3")``.
        """
        named = self._select(names, "unfreeze")
        for name in named:
            set_stage_frozen(self.stages[name], False, self._spec.norm)
            self._frozen.discard(name)
        pin_kept_layers(self.stages, self._frozen, self._spec.norm)
        for name in named:
            self.stages[name].train(self.training)  # its norm layers stay in eval mode with norm: eval or frozen
        return self

    def reinit(self, *names: str) -> "Backbone":
        """Re-initialise these stages: convs and linears N(0, 0.01) with zero bias, norm layers to identity.

        Example: ``bb.reinit("c5")``.
        """
        for name in self._select(names, "reinit", empty_means_all=False):
            reinit_(self.stages[name])
        return self

    def param_groups(
        self, lr: float, decay: float = 1.0, names: Optional[Sequence[str]] = None
    ) -> List[Dict[str, Any]]:
        """Parameter groups for ``torch.optim``: one per stage with trainable parameters, plus ``neck``.

        The deepest stage (and the neck) get ``lr``, a stage ``k`` stages shallower ``lr * decay**k``; frozen
        parameters are left out. Each group has a ``name``. ``names`` picks groups and their order: an optimizer
        state matches groups by position, so a resumed run rebuilds the groups in the order it saved them (stages
        unfrozen later were added at the end). Example::

            torch.optim.AdamW(bb.param_groups(1e-4, decay=0.5))
            saved = torch.load("optimizer.pt")                # a state of that optimizer, groups added since
            opt = torch.optim.AdamW(bb.param_groups(1e-4, decay=0.5, names=[g["name"] for g in saved["param_groups"]]))
            opt.load_state_dict(saved)
        """
        rates = {key: _positive_finite(value, key) for key, value in (("lr", lr), ("decay", decay))}
        deepest = len(self.stages) - 1
        groups = []
        for index, (name, stage) in enumerate(self.stages.items()):
            params = [p for p in stage.parameters() if p.requires_grad]
            if params:
                try:
                    rate = rates["lr"] * rates["decay"] ** (deepest - index)
                except OverflowError:
                    rate = math.inf
                if not 0 < rate < math.inf:  # decay ** depth past a float's range
                    raise ArgumentError(
                        f"param_groups(): lr={lr!r:.40} with decay={decay!r:.40} gives stage {name!r} a learning rate "
                        f"of {rate}; choose a decay nearer 1"
                    )
                groups.append({"name": name, "params": params, "lr": rate})
        if self.neck is not None:
            params = [p for p in self.neck.parameters() if p.requires_grad]
            if params:
                groups.append({"name": "neck", "params": params, "lr": rates["lr"]})
        return groups if names is None else _picked(groups, names)

    def _check_input(self, x: Tensor) -> Tensor:
        """``x``, or an InputShapeError for what the stages cannot take faithfully (see :func:`checked_batch`), on
        another device, or of another floating dtype outside autocast. Under ``torch.fx`` tracing the shape checks
        are recorded in the graph, which runs them on every input."""
        if torch.compiler.is_exporting() or torch.jit.is_tracing():
            return x  # an exporter's stand-in inputs: the exported program checks nothing (torch.compile guards these)
        checked = checked_batch(x, self._spec.model, self.in_channels, self._patch, self._input_size)
        if isinstance(x, torch.fx.Proxy):
            return checked
        reference = next(itertools.chain(self.parameters(), self.buffers()), None)
        if reference is None:
            return x
        model = self._spec.model
        if x.device != reference.device:
            raise InputShapeError(
                f"featx backbone {model!r} is on {reference.device}, the input on {x.device}; move one of them "
                f"(x.to({str(reference.device)!r}))"
            )
        device_type = x.device.type
        autocast = _autocast_on(device_type)
        self._check_neck_tensors(reference, autocast)
        if device_type != "meta" and (meta := first_meta_tensor(self)) is not None:
            raise ArgumentError(
                f"featx backbone {model!r}: {meta} is on the meta device (it holds no values) and the input on "
                f"{x.device}: torch would compute with uninitialised memory; give it values (load_state_dict(..., "
                "assign=True) with every key, or bb.to_empty(device=...) then load them)"
            )
        low = reference.dtype in _LOW_PRECISION
        if autocast and low and (autocast_dtype := torch.get_autocast_dtype(device_type)) != reference.dtype:
            raise InputShapeError(  # torch fails on the mix: batch_norm's "mixed dtype (CPU)", layer_norm's ...
                f"featx backbone {model!r} computes in {reference.dtype} and autocast in {autocast_dtype}, which "
                f"torch's layers cannot mix; run under torch.autocast({device_type!r}, dtype={reference.dtype}) or "
                f"convert the backbone (bb.to({autocast_dtype}))"
            )
        cast = autocast and x.dtype in _AUTOCAST_CASTS and reference.dtype in _AUTOCAST_CASTS  # never float64 layers
        if x.dtype != reference.dtype and not cast:
            uncast = x.dtype if x.dtype not in _AUTOCAST_CASTS else reference.dtype
            castable = x.dtype in _AUTOCAST_CASTS and reference.dtype in _AUTOCAST_CASTS
            # autocast in another low precision than the layers' fails (above): name theirs
            suggestion = f"torch.autocast({device_type!r}, dtype={reference.dtype})" if low else "torch.autocast"
            raise InputShapeError(
                f"featx backbone {model!r} computes in {reference.dtype}, the input is {x.dtype}; convert it "
                f"(x.to({reference.dtype}))"
                + (f" (autocast does not cast {uncast})" if autocast or not castable else f" or run under {suggestion}")
            )
        return x

    def _check_neck_tensors(self, reference: Tensor, autocast: bool) -> None:
        """ArgumentError when featx's own neck is on another device than the stages' ``reference`` or in another dtype
        autocast does not cast. A neck of yours may move or cast its inputs itself; a neck on the meta device is named
        by the check of every tensor (:func:`~featx.nn.tensor_places.first_meta_tensor`)."""
        if self.neck is None:
            return
        tensors = itertools.chain(self.neck.parameters(), self.neck.buffers())
        neck = next((tensor for tensor in tensors if tensor.is_floating_point()), None)
        if neck is None or neck.device.type == "meta" or getattr(self.neck, "input_info", None) is None:
            return  # (a neck on meta: the check of every tensor names it)
        cast = autocast and neck.dtype in _AUTOCAST_CASTS and reference.dtype in _AUTOCAST_CASTS
        if neck.device != reference.device or (neck.dtype != reference.dtype and not cast):
            moved = neck.device != reference.device
            where, stages = (neck.device, reference.device) if moved else (neck.dtype, reference.dtype)
            to, preposition = (repr(str(reference.device)), "on") if moved else (str(reference.dtype), "in")
            raise ArgumentError(
                f"featx backbone {self._spec.model!r}: its neck ({type(self.neck).__name__}) is {preposition} {where}, "
                f"the stages {preposition} {stages}; move them together (bb.to({to}))"
            )

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        x = self._check_input(x)
        features: "OrderedDict[str, Tensor]" = OrderedDict()
        tracing = torch.compiler.is_compiling() or torch.jit.is_tracing() or isinstance(x, torch.fx.Proxy)
        given = x.shape  # named in an error: x is each stage's output below
        grid = (x.shape[2] // self._patch, x.shape[3] // self._patch) if self._patch is not None else None
        where, part = "", None  # the stage running (or the neck) and its module
        try:
            for name, stage in self.stages.items():
                where, part = f"stage {name!r}", stage
                x = stage(x)
                if name in self._output_names:
                    features[self._output_names[name]] = self._as_map(x.clone() if name in self._copied else x, grid)
            where, part = "the neck", self.neck
            return self.neck(features) if self.neck is not None else features
        except (RuntimeError, ValueError) as error:
            if tracing:
                raise
            if isinstance(error, RuntimeError) and _is_too_small(error):
                raise InputShapeError(
                    f"featx backbone {self._spec.model!r}: the input is too small for {where} "
                    f"({first_line(error)}); give a larger input"
                ) from None
            if isinstance(error, ValueError) and _ONE_VALUE_PER_CHANNEL in str(error):
                raise InputShapeError(
                    f"featx backbone {self._spec.model!r}: {where} normalises its batch in training mode and gets one "
                    f"value per channel ({first_line(error)}); give more than one image or a larger input, or use "
                    "norm: eval or frozen (or call .eval())"
                ) from None
            if isinstance(error, RuntimeError) and _INFERENCE_TENSOR in str(error) and where != "the neck":
                raise InputShapeError(
                    f"featx backbone {self._spec.model!r}: {where} trains and cannot save its input for backward, an "
                    "inference tensor (made under torch.inference_mode()); give x.clone() made outside inference "
                    "mode, or run the backbone under torch.inference_mode() or torch.no_grad()"
                ) from None
            channels = _CHANNELS.search(str(error)) if isinstance(error, RuntimeError) else None
            if channels is not None and where != "the neck" and _raised_in_library_code(error):
                raise self._channel_error(where, given, channels, error) from error
            if isinstance(error, ValueError) and _SYNC_NEEDS_GPU in str(error):
                raise self._sync_error(where, x.device) from None
            mixing = isinstance(error, RuntimeError) and _MIXED.search(str(error)) and _raised_in_library_code(error)
            mix = self._mixed_tensors(part, x, features) if mixing else None
            if mix is not None:
                raise ArgumentError(
                    f"featx backbone {self._spec.model!r}: {where} computes with {mix}, which its layers cannot mix "
                    f"({first_line(error)}); convert or move the whole backbone together (bb.to(...))"
                ) from error
            if where == "the neck" or not _is_about_sizes(error) or not _raised_in_library_code(error):
                raise  # not the input's shape: a neck or hook of yours, memory (what a batch-size search catches), ...
            if self._widths_disagree(error, given):
                raise InputShapeError(
                    f"featx backbone {self._spec.model!r}: {where} has layers whose channels do not match "
                    f"({first_line(error)}); a layer replaced by hand must give the channels the layers after it take"
                ) from error
            raise InputShapeError(
                f"featx backbone {self._spec.model!r}: {where} failed on the {'x'.join(map(str, given))} input "
                f"({type(error).__name__}: {first_line(error)}); the model may take only some input sizes "
                "(multiples of its largest stride) or inputs of another kind"
            ) from error

    def _mixed_tensors(self, part: Optional[nn.Module], x: Tensor, features: Mapping[str, Tensor]) -> Optional[str]:
        """What a stage or featx's neck (``part``) that failed computes with in another dtype or device than its
        input (``x`` for a stage, the returned ``features`` for the neck): ``"float32 inputs on cpu and
        layer4.0.conv1.weight in float16 on cpu"``; None where they agree, under autocast (which casts), and for a
        neck of the caller's (it may move or cast its inputs itself)."""
        if part is None or _autocast_on(x.device.type):
            return None
        if part is self.neck:
            if getattr(self.neck, "input_info", None) is None or not features:
                return None
            x = next(iter(features.values()))
        other = first_other_tensor(part, x)
        if other is None:
            return None
        name, dtype, device = other
        return f"{_dtype_name(x.dtype)} inputs on {x.device} and {name} in {_dtype_name(dtype)} on {device}"

    def _sync_error(self, where: str, device: torch.device) -> FeatxError:
        """The error for SyncBatchNorm layers of ``where`` training on an input on ``device`` (not CUDA) in a process
        group: a SpecError naming ``norm`` where the spec's ``norm: sync`` made them, else a DeviceError naming
        ``convert_sync_batchnorm`` (layers put in by hand, which the spec's norm did not make)."""
        if self._spec.norm == "sync":
            return SpecError(
                key_path("norm"),
                f"sync: {where} synchronises its BatchNorm statistics across processes, which torch does on CUDA "
                f"devices only, and the input is on {device}; use norm: train, eval or frozen off the GPU",
            )
        return DeviceError(
            f"featx backbone {self._spec.model!r}: {where} has SyncBatchNorm layers the spec did not make (its "
            f"norm is {self._spec.norm}; nn.SyncBatchNorm.convert_sync_batchnorm makes them), which "
            f"synchronise their statistics across processes on CUDA devices only, and the input is on {device}; "
            "convert only a backbone that trains on the GPU, or run these layers in eval mode"
        )

    def _channel_error(
        self, where: str, given: torch.Size, refusal: "re.Match[str]", error: Exception
    ) -> InputShapeError:
        """The InputShapeError for a layer of ``where`` refusing its input's channel count (torch's ``refusal``): the
        backbone's input (``given``) reaching a first layer that takes other channels than ``bb.in_channels``, or a
        layer inside taking another width than the layer before it gives."""
        model = self._spec.model
        if tuple(map(int, refusal.group(1).split(","))) == tuple(given):
            return InputShapeError(
                f"featx backbone {model!r}: {where} takes another number of channels than bb.in_channels = "
                f"{self.in_channels} ({first_line(error)}); after replacing the first layer, set bb.in_channels to "
                "the channels it takes"
            )
        return InputShapeError(
            f"featx backbone {model!r}: {where} has a layer that takes another number of channels than the layer "
            f"before it gives ({first_line(error)}); a layer replaced by hand must take the channels its input has"
        )

    def _widths_disagree(self, error: Exception, given: torch.Size) -> bool:
        """Whether a stage's error is two ``N×C×H×W`` tensors of different channels (a residual sum after a layer
        replaced by hand) on an input of a size the backbone takes (its ``input_size``, else each side a multiple of
        its largest stride): the layers' widths, not the input's size. Token and channels-last stages lay out
        other dimensions there (tokens, rows), which the input's size sets."""
        if self._nhwc or self._patch is not None or not _CHANNEL_DIMENSION.search(str(error)):
            return False
        if self._input_size is not None:
            return tuple(given[2:]) == self._input_size
        stride = max(info.stride for info in self.stage_info)
        return given[2] % stride == 0 and given[3] % stride == 0

    def _as_map(self, x: Tensor, grid: Optional[Tuple[int, int]]) -> Tensor:
        """A stage's output as ``N×C×h×w``: channels-last maps permuted, a token model's tokens laid out on ``grid``."""
        if grid is not None:
            return tokens_to_map(x, grid)
        return x.permute(0, 3, 1, 2) if self._nhwc else x


def _check_arguments(stages: object, stage_info: object, spec: object, in_channels: object, copied: object) -> None:
    """ArgumentError naming the first argument of a hand-made :class:`Backbone` that is not what it must be."""
    if (
        not isinstance(stages, Mapping)
        or not stages
        or not all(isinstance(name, str) and isinstance(module, nn.Module) for name, module in stages.items())
    ):
        raise ArgumentError(f"Backbone(): stages must be a non-empty mapping of name to nn.Module, got {stages!r:.80}")
    if not isinstance(stage_info, (list, tuple)) or not all(isinstance(info, StageInfo) for info in stage_info):
        raise ArgumentError(f"Backbone(): stage_info must be a list of StageInfo, got {stage_info!r:.80}")
    if list(stages) != [info.name for info in stage_info]:
        raise ArgumentError(
            f"Backbone(): stage_info names {[info.name for info in stage_info]} but stages are {list(stages)}"
        )
    if not isinstance(spec, BackboneSpec):
        raise ArgumentError(f"Backbone(): spec must be a featx.BackboneSpec, got {type(spec).__name__}")
    load_spec(spec.to_dict())  # a spec made by hand is checked as featx.build checks one (SpecError naming the key)
    if list(stages) != list(spec.stages)[: len(stages)]:  # the first stages of the spec (the returned ones at least)
        raise ArgumentError(
            f"Backbone(): stages are {list(stages)}, but the spec's stages are {list(spec.stages)}; give the spec "
            "the module was built from (its first stages, up to the deepest it returns)"
        )
    missing = [name for name in spec.returned_stages if name not in stages]
    if missing:
        raise ArgumentError(f"Backbone(): the spec returns {', '.join(missing)}, which stages lack")
    integral = isinstance(in_channels, numbers.Integral) and not isinstance(in_channels, bool)
    if not integral or not 1 <= int(in_channels) <= MAX_CHANNELS:  # type: ignore[call-overload]
        raise ArgumentError(f"Backbone(): in_channels must be an integer in 1..{MAX_CHANNELS}, got {in_channels!r:.80}")
    if not isinstance(copied, (list, tuple, frozenset, set)) or not all(
        isinstance(name, str) and name in stages for name in copied
    ):
        raise ArgumentError(
            f"Backbone(): copied must be a list of stage names ({', '.join(stages)}), got {copied!r:.80}"
        )


def check_stage_names(stages: Iterable[str]) -> None:
    """SpecError for a stage name ``nn.ModuleDict`` has as an attribute (``training``, ``keys``): ``bb.stages``
    holds the stages, and torch cannot add a module under such a name. Example: ``check_stage_names(["c2", "keys"])``
    raises SpecError naming ``backbone.stages.keys``."""
    container = nn.ModuleDict()
    taken = next((name for name in stages if hasattr(container, name)), None)
    if taken is not None:
        raise module_dict_name_error(taken)


def _positive_finite(value: object, key: str) -> float:
    """``value`` as a float if it is a positive finite real number (numpy's too), else ArgumentError naming ``key``."""
    number = real_value(value)
    if not 0 < number < math.inf:
        raise ArgumentError(f"param_groups(): {key} must be a positive finite number, got {value!r:.80}")
    return number


def _picked(groups: List[Dict[str, Any]], names: Sequence[str]) -> List[Dict[str, Any]]:
    """The ``groups`` named in ``names``, in that order; ArgumentError for a name without a group (unknown, or a
    stage without trainable parameters) or named twice."""
    by_name = {group["name"]: group for group in groups}
    iterable = isinstance(names, (list, tuple)) or (  # in an order: not a set, whose order changes between runs
        isinstance(names, Iterable) and not isinstance(names, (str, bytes, Mapping, AbstractSet))
    )
    # a generator is read once, and no further than one name past the groups (an endless one would fill the memory)
    names = list(itertools.islice(names, len(by_name) + 1)) if iterable else names
    if not iterable or not all(isinstance(name, str) for name in names):
        raise ArgumentError(
            f"param_groups(): names must be a list of group names such as {list(by_name)}, in the order the groups "
            f"are wanted (an optimizer matches them by position), got {type(names).__name__}"
        )
    for name in names:
        if name not in by_name:
            raise ArgumentError(
                f"param_groups(): no group {name!r:.80}: the groups are those with trainable parameters "
                f"({', '.join(by_name) or 'none'}); unfreeze a stage before naming it"
            )
    if len(set(names)) < len(names):
        raise ArgumentError(f"param_groups(): names lists a group twice: {quoted(list(names))}")
    return [by_name[name] for name in names]


#: the input dtypes autocast casts for the layers it runs in lower precision (float64 it leaves alone)
_AUTOCAST_CASTS = (torch.float32, torch.float16, torch.bfloat16)
#: the dtypes autocast computes in; layers in one of them run under autocast of that dtype alone
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _autocast_on(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (off for a device type autocast does not know, such as meta)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:
        return False


def checked_batch(
    x: Tensor, model: str, in_channels: int, patch: Optional[int], input_size: Optional[Tuple[int, ...]]
) -> Tensor:
    """``x`` when the stages can take it faithfully, else an InputShapeError: a tensor ``N×C×H×W`` with the first
    layer's channels, floating point, not empty, sides that are multiples of a token model's ``patch``, and the
    spec's ``input_size`` where it sets one. Wrapped for ``torch.fx``: a traced backbone's graph calls it on every
    input (a ViT traced at 224x224 would otherwise crop a 40x40 input to 32x32 without a word)."""
    if not isinstance(x, Tensor):
        raise InputShapeError(
            f"featx backbone {model!r} takes a tensor (N, {in_channels}, H, W), got {type(x).__name__}"
        )
    if x.is_nested or x.layout != torch.strided:
        kind = "a nested tensor" if x.is_nested else f"a {x.layout} tensor"
        raise InputShapeError(
            f"featx backbone {model!r} takes a dense tensor (N, {in_channels}, H, W), got {kind}; convert it "
            "(x.to_dense(), or torch.stack of a nested tensor's images)"
        )
    if x.dim() != 4 or x.shape[1] != in_channels or not x.is_floating_point():
        channels = x.dim() == 4 and x.shape[1] != in_channels
        raise InputShapeError(
            f"featx backbone {model!r} expects a floating-point batch of shape "
            f"(N, {in_channels}, H, W), got {tuple(x.shape)} {x.dtype}"
            + ("; the channel count is bb.in_channels (set it after replacing the first layer)" if channels else "")
        )
    if x.numel() == 0:
        raise InputShapeError(f"featx backbone {model!r} got an empty batch of shape {tuple(x.shape)}")
    if patch is not None and (x.shape[2] % patch or x.shape[3] % patch):
        raise InputShapeError(
            f"featx backbone {model!r} takes inputs whose sides are multiples of {patch} (the pixels a patch covers), "
            f"got {x.shape[2]}x{x.shape[3]}"
        )
    if input_size is not None and tuple(x.shape[2:]) != input_size:
        raise InputShapeError(
            f"featx backbone {model!r} takes inputs of exactly "
            f"{input_size[0]}x{input_size[1]} (its spec's input_size), got {x.shape[2]}x{x.shape[3]}"
        )
    return x


torch.fx.wrap("checked_batch")

#: what torch says when a pooling or convolution window does not fit its (shrunken) input
_TOO_SMALL = ("Output size is too small", "Kernel size can't be greater than actual input size")
#: what torch says when an allocation fails (on the CPU a plain RuntimeError)
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "not enough memory")
#: what SyncBatchNorm says in training mode, in a process group, about an input off the GPU
_SYNC_NEEDS_GPU = "SyncBatchNorm expected input tensor to be on GPU"
#: what torch says when a layer whose parameters train gets a tensor made under torch.inference_mode()
_INFERENCE_TENSOR = "Inference tensors cannot be saved for backward"
#: what a convolution says about its input's channel count; group 1 is the input's shape
_CHANNELS = re.compile(r"expected input\[([\d, ]+)\] to have \d+ channels")
#: what torch says when two tensors of an elementwise operation differ in their second dimension
_CHANNEL_DIMENSION = re.compile(r"must match the size of tensor b \(\d+\) at non-singleton dimension 1$", re.M)
#: what torch's layers say when their tensors and input differ in dtype or device (not memory or anything else)
_MIXED = re.compile(
    r"expected scalar type|should be the same|same device|same dtype|mixed dtype|on the expected device", re.IGNORECASE
)
#: what torch's batch_norm says in training mode when a channel has one value (a batch of one 1x1 map)
_ONE_VALUE_PER_CHANNEL = "Expected more than 1 value per channel when training"


def _is_about_sizes(error: Exception) -> bool:
    """Whether a stage's error is about the sizes of its tensors (timm's DLA-34 at a size no multiple of 32: "The
    size of tensor a (17) must match the size of tensor b (16)"), not about memory or anything else."""
    message = str(error).lower()
    running_out = isinstance(error, torch.OutOfMemoryError) or any(text in message for text in _OUT_OF_MEMORY)
    return not running_out and ("size" in message or "shape" in message)


def _raised_in_library_code(error: BaseException) -> bool:
    """Whether ``error`` was raised in the code of torch, torchvision, timm or featx alone (a layer refusing its
    input's size), with no code of the caller's on the way (a forward hook, a module of theirs, also one that calls
    torch), whose errors keep their type."""
    libraries = [sys.modules.get(name) for name in ("torch", "torchvision", "timm", "featx")]
    folders = tuple(os.path.dirname(module.__file__) + os.sep for module in libraries if module and module.__file__)
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback is not None:
        if not os.path.abspath(traceback.tb_frame.f_code.co_filename).startswith(folders):
            return False
        traceback = traceback.tb_next
    return True


def _is_too_small(error: RuntimeError) -> bool:
    return any(text in str(error) for text in _TOO_SMALL)


def backbone_of(module: object, caller: str) -> Backbone:
    """The featx Backbone ``module`` is or wraps (``torch.compile``'s ``_orig_mod``, DistributedDataParallel's or
    DataParallel's ``module``); else :class:`ArgumentError` from ``caller``. Example:
    ``backbone_of(torch.compile(nn.DataParallel(bb)), "save") is bb``."""
    while not isinstance(module, Backbone):  # compile(DataParallel(bb)) or DataParallel(compile(bb)), ...
        if isinstance(wrapped := getattr(module, "_orig_mod", None), torch.nn.Module):
            module = wrapped
        elif isinstance(module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
            module = module.module
        else:
            break
    if not isinstance(module, Backbone):
        raise ArgumentError(f"{caller}(): expected a featx Backbone (featx.build(...)), got {type(module).__name__}")
    return module

"""The backbone spec: the schema of a ``conf/backbone/*.yaml`` file, as dataclasses.

The dataclasses double as the Hydra/OmegaConf structured-config schema (see :mod:`featx.spec.hydra_store`), so
unknown keys and wrong types fail while composing. The checks that need no model are in
:mod:`featx.spec.validate`; those that need the model in :mod:`featx.construct.members`.

Example::

    spec = BackboneSpec(model="resnet34", stages={"c4": StageSpec(modules=["conv1", "bn1", "layer1"])})
    spec.to_dict()["stages"]     # {'c4': {'modules': ['conv1', 'bn1', 'layer1']}}
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

NORM_POLICIES = ("frozen", "eval", "train", "sync")
LAYOUTS = ("nchw", "nhwc")
EXTRA_BLOCKS = ("maxpool", "p6p7")
FPN_STYLES = ("fpn", "simple")
OUTPUT_NAMES = ("featx", "torchvision")
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps", "meta")


@dataclass
class StageSpec:
    """One stage: ``slice`` over the source container's children **or** ``modules`` (paths from the model root)."""

    slice: Optional[List[int]] = None
    modules: Optional[List[str]] = None

    def to_dict(self) -> Dict[str, Any]:
        """The keys that are set, as plain data: ``{"slice": [0, 4]}`` or ``{"modules": ["layer1"]}`` (both, or
        values of other types, are kept for the checks to refuse: a ``"02"`` is not ``[0, 2]``)."""
        stage = {key: value for key, value in (("slice", self.slice), ("modules", self.modules)) if value is not None}
        return {key: list(value) if isinstance(value, (list, tuple)) else value for key, value in stage.items()}


@dataclass
class TokenSpec:
    """How a token model (a plain ViT) turns an image into the token sequence its blocks take.

    ``embed`` (a module path) maps the image to an ``N×C×h×w`` patch map, which is flattened to ``h·w`` tokens;
    the ``prefix`` parameters (each ``1×k×C``: class, distillation or register tokens) are put before them in
    order; ``position`` (a ``1×L×C`` parameter) is added to the whole sequence, or with
    ``position_covers_prefix: false`` to the patch tokens only, before the prefix is put in front. A stage's token
    output becomes an ``N×C×h×w`` map again (prefix tokens dropped). ``stride`` (default: the embedding's own
    patch size) runs the embedding at another stride by resizing the image first: ``stride: 16`` on a patch-14
    model gives a stride-16 map.
    """

    embed: str = MISSING
    prefix: List[str] = field(default_factory=list)
    position: Optional[str] = None
    position_covers_prefix: bool = True
    stride: Optional[int] = None


@dataclass
class FpnSpec:
    """The optional neck on top of the returned stages: torchvision's FPN (``style: fpn``) or ViTDet's simple
    feature pyramid from the one returned map (``style: simple``)."""

    out_channels: int = 256
    extra_blocks: Optional[str] = None
    style: str = "fpn"


@dataclass
class BackboneSpec:
    """A backbone as data; see the config reference in ``docs/config.md``.

    ``fpn`` holds an :class:`FpnSpec` or ``None``, ``tokens`` a :class:`TokenSpec` or ``None``. They are typed
    ``Any`` in the schema because OmegaConf cannot override a field of a typed node that is ``None``
    (``backbone.fpn.out_channels=128`` on ``fpn: null``); :func:`featx.spec.load.load_spec` checks their keys and
    types instead.
    """

    model: str = MISSING
    weights: Optional[str] = None
    seed: int = 0
    source: Optional[str] = None
    tokens: Any = None
    stages: Dict[str, StageSpec] = MISSING
    out_features: Optional[List[str]] = None
    output_names: str = "featx"
    frozen_stages: int = 0
    reinit: List[str] = field(default_factory=list)
    norm: str = "frozen"
    fpn: Any = None
    layout: str = "nchw"
    input_size: Optional[List[int]] = None
    device: str = "auto"
    channels_last: bool = False

    @property
    def returned_stages(self) -> List[str]:
        """Names of the stages whose outputs are returned (or fed to the FPN), in stage order."""
        return list(self.out_features) if self.out_features is not None else list(self.stages)

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (dicts, lists, scalars) that rebuilds this spec: ``build(spec.to_dict())``; each stage holds
        only the key that is set."""
        data = dataclasses.asdict(self)
        if isinstance(self.stages, dict):  # a hand-made spec may hold plain mappings: validation names them
            data["stages"] = {
                name: stage.to_dict() if isinstance(stage, StageSpec) else stage for name, stage in self.stages.items()
            }
        return data


#: The spec's keys in their file order: what featx writes when it dumps a spec.
SPEC_KEYS = tuple(spec_field.name for spec_field in dataclasses.fields(BackboneSpec))

"""The schemas of the apps' primary configs (``conf/config.yaml``, ``conf/export.yaml``, ``conf/extract.yaml``):
what each app reads besides the ``backbone`` node. Plain dataclasses, registered in Hydra's ConfigStore by
:mod:`featx.spec.hydra_store`, so a typo on the command line fails while composing.

Example::

    options = ExtractOptions(input="photos/", output="feats/", pooling="avg")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from featx.spec.load import INSTANTIATE_TARGET
from featx.spec.schema import BackboneSpec


@dataclass
class BackboneNode(BackboneSpec):
    """The schema of a composed ``backbone`` node: the spec plus its instantiate target.

    Its stages are untyped here, so a composed (and dumped: ``--cfg job``) config holds each stage as written, with
    the one key it sets; :func:`featx.spec.load.load_spec` checks their keys and types when the backbone is built.
    """

    stages: Dict[str, Any] = MISSING
    _target_: str = INSTANTIATE_TARGET


@dataclass
class InputConfig:
    """The random batch the ``featx`` app runs through the backbone."""

    batch_size: int = 1
    height: Optional[int] = None  # None: the backbone's input_size, else 224
    width: Optional[int] = None


@dataclass
class AppConfig:
    """The primary config of the ``featx`` app; ``run: false`` builds on the meta device (structure only)."""

    backbone: Any = MISSING
    input: InputConfig = field(default_factory=InputConfig)
    run: bool = True


@dataclass
class ExportOptions:
    """What the ``featx-export`` app writes: format (torchscript, exported, onnx), file, example input, options."""

    format: str = "onnx"
    path: str = MISSING
    height: Optional[int] = None  # None: the backbone's input_size, else 224
    width: Optional[int] = None
    batch_size: int = 1
    dynamic: bool = True
    overwrite: bool = False


@dataclass
class ExportAppConfig:
    """The primary config of the ``featx-export`` app."""

    backbone: Any = MISSING
    export: ExportOptions = field(default_factory=ExportOptions)


@dataclass
class ExtractOptions:
    """The ``extract`` node of the ``featx-extract`` config (see ``conf/extract.yaml`` for each key)."""

    input: str = MISSING
    output: str = MISSING
    transform: str = "auto"
    decode: str = "cpu"
    size: List[int] = field(default_factory=lambda: [224, 224])
    batch_size: int = 32
    workers: int = 2
    outputs: Optional[List[str]] = None
    pooling: str = "avg"
    dtype: str = "float32"
    shard_size: int = 1024
    overwrite: bool = False
    progress: bool = True


@dataclass
class ExtractAppConfig:
    """The primary config of the ``featx-extract`` app."""

    backbone: Any = MISSING
    extract: ExtractOptions = field(default_factory=ExtractOptions)

"""torchvision's weights enums as the ``weights`` key names them (``DEFAULT``, ``IMAGENET1K_V2``): the member, and the
file it is cached in (``$TORCH_HOME/hub/checkpoints/<file name of its url>``), downloaded only when absent.

Example::

    path = enum_weights_file("resnet50", "IMAGENET1K_V2")     # .../hub/checkpoints/resnet50-11ad3fa6.pth
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch

from featx.errors import SpecError, WeightsError, first_line
from featx.files import environment_flag
from featx.models.registry import weights_enum
from featx.spec.keys import key_path, suggest
from featx.spec.limits import quoted, shortened

#: Set to 1 to never download: a weights enum missing from the cache is then an immediate WeightsError.
OFFLINE_VARIABLE = "FEATX_OFFLINE"


#: an enum member named with its enum, as torchvision's ``get_weight`` takes it: ``ResNet50_Weights.IMAGENET1K_V2``
#: (members are upper case: ``ResNet18_Weights.pth`` is a file)
_QUALIFIED_NAME = re.compile(r"^(\w+_Weights)\.([A-Z][A-Z0-9_]*)$")


def is_weights_file(value: str) -> bool:
    """Whether a ``weights`` value names a file (it has a folder separator or a suffix: ``ckpt/r50.pth``,
    ``./DEFAULT``) rather than an enum member (``DEFAULT``, ``IMAGENET1K_V1``, ``ResNet50_Weights.IMAGENET1K_V1``).
    A bare word is always an enum name, even when a file of that name is in the working directory."""
    if _QUALIFIED_NAME.match(value):
        return False
    return "/" in value or os.sep in value or bool(Path(value).suffix)


def cached_weights_path(url: str) -> Path:
    """Where torchvision's loader caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def enum_member(model: str, name: str) -> Any:
    """The torchvision weights enum member ``name`` (``DEFAULT`` or a member name) of ``model``; SpecError if none."""
    try:
        enum: Any = weights_enum(model)
    except ValueError:  # a builder the user's code registered without a weights argument
        raise SpecError(
            key_path("weights"),
            f"{quoted(name)}: torchvision publishes no weights for {model} (its builder takes no weights enum); "
            "give null (random init) or a .pth/.pt/.safetensors path",
        ) from None
    qualified = _QUALIFIED_NAME.match(name)
    if qualified and qualified.group(1) != enum.__name__:
        raise SpecError(
            key_path("weights"),
            f"{quoted(name)} names a member of {qualified.group(1)}, but {model}'s weights are {enum.__name__} "
            f"(valid: null, DEFAULT, {', '.join(member.name for member in enum)})",
        )
    name = qualified.group(2) if qualified else name
    if name == "DEFAULT":
        return enum.DEFAULT
    members = [member.name for member in enum]
    if name not in members:
        raise SpecError(
            key_path("weights"),
            f"{quoted(name)} is not a weights name of {model}{suggest(name, members)} "
            f"(valid: null, DEFAULT, {', '.join(members)}; or a path to a checkpoint file: ./NAME for one in the "
            "working directory)",
        )
    return enum[name]


def offline() -> bool:
    """Whether :data:`OFFLINE_VARIABLE` forbids downloading weights."""
    return environment_flag(OFFLINE_VARIABLE)


def download_to_cache(url: str, path: Path, label: str) -> Path:
    """Download ``url`` to the cache file ``path`` (unless offline); ``label`` names the weights in errors."""
    where = f"Place the file at {path} (get it from {url})"
    if offline():
        raise WeightsError(
            f"{key_path('weights')}: {label} is not in the torch hub cache and {OFFLINE_VARIABLE} forbids "
            f"downloading. {where}"
        )
    # the hub's file names end in the first hex digits of the file's SHA-256 (resnet18-f37072fd.pth), which
    # torchvision's own loader checks on download: a file that does not match is not cached
    named = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=named.group(1) if named else None, progress=True)
    except (URLError, OSError) as error:
        raise WeightsError(
            f"{key_path('weights')}: {label} is not in the torch hub cache and could not be downloaded "
            f"({error}). {where}"
        ) from None
    except RuntimeError as error:  # torch.hub's "invalid hash value (expected ..., got ...)"
        raise WeightsError(
            f"{key_path('weights')}: the download of {label} from {url} is not the published file "
            f"({first_line(error)}); nothing was cached. {where}"
        ) from None
    return path


def enum_weights_file(model: str, name: str) -> Path:
    """The cached file of ``model``'s weights ``name``, downloaded into the cache if nothing is at its name (unless
    offline)."""
    member = enum_member(model, name)
    path = cached_weights_path(member.url)
    try:
        # something at the name that is no file (a folder, a fifo, a dangling link) is read, and refused as such,
        # never downloaded over
        os.lstat(path)
        cached = True
    except (FileNotFoundError, NotADirectoryError):
        cached = False
    except OSError as error:  # e.g. a TORCH_HOME longer than the file system takes
        raise WeightsError(
            f"{key_path('weights')}: the torch hub cache file {shortened(str(path))} of {model} {member} cannot be "
            f"looked up ({error.strerror}); set TORCH_HOME to a folder you can read"
        ) from None
    return path if cached else download_to_cache(member.url, path, f"{model} {member}")

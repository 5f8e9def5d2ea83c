"""torchvision's weights enums as the ``weights`` key names them (``DEFAULT``, ``IMAGENET1K_V2``): the member, and the
file it is cached in (``$TORCH_HOME/hub/checkpoints/<file name of its url>``), downloaded only when absent.

A cached file is checked against the first hex digits of its SHA-256 that its name ends in (``resnet18-f37072fd.pth``)
before it is used: another network placed under the official name is refused. A file that passed is remembered in
featx's user cache (``verified-weights/`` beside ``plans/``) by its identity (:mod:`featx.file_records`), so it is
hashed again only when it changes; with the cache off (``FEATX_NO_CACHE``) or unwritable, every use hashes it.

Example::

    path = enum_weights_file("resnet50", "IMAGENET1K_V2")     # .../hub/checkpoints/resnet50-11ad3fa6.pth
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any, Optional, Tuple
from urllib.error import URLError
from urllib.parse import urlparse

import torch

from featx.errors import SpecError, WeightsError, first_line
from featx.file_records import recalled_facts, records_folder, remember_facts, same_file
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
    """Where torchvision's loader caches ``url``: ``$TORCH_HOME/hub/checkpoints/<file name>``, as an absolute path
    (a relative or empty ``TORCH_HOME`` is taken from the working directory, as torch takes it)."""
    return Path(os.path.abspath(torch.hub.get_dir())) / "checkpoints" / os.path.basename(urlparse(url).path)


def named_hash_prefix(path: Path) -> Optional[str]:
    """The first hex digits of the SHA-256 that a torch hub file name ends in (``resnet18-f37072fd.pth``:
    ``f37072fd``, found as torch's ``HASH_REGEX`` finds it), or None for a name without them."""
    named = torch.hub.HASH_REGEX.search(path.name)
    return named.group(1) if named and named.group(1) else None


#: the folder of featx's user cache (beside ``plans``) holding the SHA-256 of each hub cache file found to match the
#: hash in its name (:mod:`featx.file_records`)
VERIFIED_FOLDER = "verified-weights"


def _hashed(path: Path) -> Optional[Tuple[str, os.stat_result]]:
    """The SHA-256 of the regular file ``path`` and its status, unchanged while it was read; None for something
    that is no regular file, cannot be opened, or changed meanwhile (the reader then says what is there)."""
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a fifo is never waited on
    except OSError:
        return None
    try:
        before = os.fstat(handle)
        if not stat.S_ISREG(before.st_mode):
            return None
        digest = hashlib.sha256()
        for block in iter(lambda: os.read(handle, 1 << 20), b""):
            digest.update(block)
        after = os.fstat(handle)
    except OSError:
        return None
    finally:
        os.close(handle)
    return (digest.hexdigest(), before) if same_file(before, after) else None


def check_named_hash(path: Path, label: str, url: str) -> None:
    """WeightsError unless the torch hub cache file ``path`` (of ``label``, published at ``url``) has the SHA-256
    its name begins (:func:`named_hash_prefix`); a name without one, or something at it that is no readable
    regular file, is left to the reader. A file found to match is remembered (see the module docstring)."""
    prefix = named_hash_prefix(path)
    if prefix is None:
        return
    absolute = Path(os.path.abspath(path))
    folder = records_folder(VERIFIED_FOLDER)
    try:
        status = os.stat(absolute)
    except OSError:
        return
    if folder is not None and stat.S_ISREG(status.st_mode):
        recorded = (recalled_facts(folder, absolute, status) or {}).get("sha256")
        if type(recorded) is str and recorded.startswith(prefix):
            return
    hashed = _hashed(absolute)
    if hashed is None:
        return
    digest, status = hashed
    if not digest.startswith(prefix):
        raise WeightsError(
            f"{key_path('weights')}: the torch hub cache file {path} is not the published file of {label}: its name "
            f"says its SHA-256 starts with {prefix}, and it starts with {digest[: len(prefix)]} (another file placed "
            f"or copied under its name, or a damaged one). Delete it and build online to download it, or place the "
            f"file published at {url} there"
        )
    if folder is not None:
        remember_facts(folder, absolute, status, {"sha256": digest})


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
            f"{quoted(name)} is not a weights name of {model}{suggest(name, ['DEFAULT', *members])} "
            f"(valid: null, DEFAULT, {', '.join(members)}; or a path to a checkpoint file: ./NAME for one in the "
            "working directory)",
        )
    return enum[name]


def offline() -> bool:
    """Whether :data:`OFFLINE_VARIABLE` forbids downloading weights."""
    return environment_flag(OFFLINE_VARIABLE)


def download_to_cache(url: str, path: Path, label: str, hash_prefix: Optional[str]) -> Path:
    """Download ``url`` to the cache file ``path`` (unless offline); ``label`` names the weights in errors. With
    ``hash_prefix`` (torchvision's files: :func:`named_hash_prefix`), torch.hub's downloader checks the file's
    SHA-256 begins with it, as torchvision's own loader does; timm's loader checks none (its file names need not end
    in a hash: ``IN1K-vit.h.14-300e.pth.tar``)."""
    where = f"Place the file at {path} (get it from {url})"
    if offline():
        raise WeightsError(
            f"{key_path('weights')}: {label} is not in the torch hub cache and {OFFLINE_VARIABLE} forbids "
            f"downloading. {where}"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=True)
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


def cached_or_downloaded(url: str, path: Path, label: str, hash_prefix: Optional[str]) -> Path:
    """``path``, the torch hub cache file of ``url``, downloaded first (:func:`download_to_cache`) only where nothing
    is at its name: something there that is no file (a folder, a fifo, a dangling link) is read, and refused as
    such, never downloaded over."""
    try:
        os.lstat(path)
        return path
    except (FileNotFoundError, NotADirectoryError):
        return download_to_cache(url, path, label, hash_prefix)
    except OSError as error:  # e.g. a TORCH_HOME longer than the file system takes
        raise WeightsError(
            f"{key_path('weights')}: the torch hub cache file {shortened(str(path))} of {label} cannot be looked up "
            f"({error.strerror}); set TORCH_HOME to a folder you can read"
        ) from None


def enum_weights_file(model: str, name: str) -> Path:
    """The cached file of ``model``'s weights ``name``, downloaded into the cache if nothing is at its name (unless
    offline), and checked against the hash in its name (:func:`check_named_hash`)."""
    member = enum_member(model, name)
    path = cached_weights_path(member.url)
    label = f"{model} {member}"
    cached_or_downloaded(member.url, path, label, named_hash_prefix(path))
    check_named_hash(path, label, member.url)
    return path

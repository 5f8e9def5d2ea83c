"""featx's user cache folder: where it is, whether it is turned off, and which files in it may be trusted.

The folder is ``$FEATX_CACHE_DIR``, else ``$XDG_CACHE_HOME/featx``, else ``~/.cache/featx``; ``FEATX_NO_CACHE=1``
turns it off. It holds the plan cache (``plans/``, :mod:`featx.construct.plan_cache`) and the records of torch hub
files found to match the hash in their name (``verified-weights/``, :mod:`featx.models.weights_enums`) and of
checkpoints whose tensor records were checked (``checked-checkpoints/``, :mod:`featx.file_records`). Anything
in it is used only when it is the user's own regular file, writable by no one else: whoever can write the folder
could otherwise choose what featx believes.

Example::

    folder = None if cache_disabled() else user_cache_dir()
    plans = None if folder is None else folder / "plans"
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Optional

from featx.errors import ArgumentError
from featx.files import environment_flag
from featx.spec.limits import expand_home

DIR_VARIABLE = "FEATX_CACHE_DIR"
DISABLE_VARIABLE = "FEATX_NO_CACHE"


def cache_disabled() -> bool:
    """Whether ``FEATX_NO_CACHE`` says yes (:func:`~featx.files.environment_flag`)."""
    return environment_flag(DISABLE_VARIABLE)


def user_cache_dir() -> Optional[Path]:
    """featx's cache folder on this machine (see the module docstring), or None where there is none (no home folder:
    a container user without one); a relative ``XDG_CACHE_HOME`` is ignored, as its specification says.
    ArgumentError for a ``FEATX_CACHE_DIR`` that is not an absolute path (featx never writes relative to the working
    directory)."""
    if os.environ.get(DIR_VARIABLE):
        folder = expand_home(os.environ[DIR_VARIABLE])  # ~user of no user: as written, then refused as relative
        if not folder.is_absolute():
            raise ArgumentError(
                f"{DIR_VARIABLE}={os.environ[DIR_VARIABLE]!r}: featx's cache folder must be an absolute path (or "
                f"unset: $XDG_CACHE_HOME/featx, else ~/.cache/featx; {DISABLE_VARIABLE}=1 turns the cache off)"
            )
        return folder
    xdg = Path(os.environ.get("XDG_CACHE_HOME", ""))
    if xdg.is_absolute():
        return xdg / "featx"
    try:
        home = Path.home()
    except RuntimeError:  # no HOME and no passwd entry
        return None
    return home / ".cache" / "featx" if home.is_absolute() else None


def is_own_regular_file(path: Path, own: bool) -> bool:
    """Whether ``path`` is a regular file itself (not a link, device or fifo: never read /dev/zero, never wait on a
    fifo) and, with ``own``, owned by this user and writable by no other user, group included (where the system has
    user ids). OSError where ``path`` cannot be examined."""
    status = path.lstat()
    if not stat.S_ISREG(status.st_mode):
        return False
    user = getattr(os, "geteuid", None)
    if not own or user is None:
        return True
    return status.st_uid == user() and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)

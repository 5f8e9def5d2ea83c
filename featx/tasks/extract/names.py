"""The names featx-extract gives its files in an output folder, and the test for them: everything else there is the
user's (listed as input when the folder holds the input, never written or removed).

Example::

    is_own_name("featx-manifest.jsonl")    # True
    is_own_name("featx-logo.png")          # False: a user's image with a featx-like name
"""

from __future__ import annotations

import re

INFO_FILE = "featx-extract.json"
CONFIG_FILE = "featx-config.yaml"
MANIFEST_FILE = "featx-manifest.jsonl"
LOCK_FILE = ".featx-extract.lock"
SHARD_DIR = "featx-shards"

_ROOT_FILES = (INFO_FILE, CONFIG_FILE, MANIFEST_FILE)
#: an entry of the output folder featx made: its files and shard folder, and write_atomically's temporary files of
#: the ones it rewrites (``.<name>.<random>.partial``)
_OWN_NAME = re.compile(
    "|".join(re.escape(name) for name in (*_ROOT_FILES, LOCK_FILE, SHARD_DIR))
    + r"|\.(?:"
    + "|".join(re.escape(name) for name in _ROOT_FILES)
    + r")\.[0-9a-f-]+\.partial"
)


def is_own_name(name: str) -> bool:
    """Whether ``name`` (an entry directly in an output folder) is one featx-extract writes there."""
    return _OWN_NAME.fullmatch(name) is not None

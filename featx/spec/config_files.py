"""Where featx's packaged configs live, in a wheel and in a source checkout alike.

The top-level ``conf/`` directory of the repository is shipped as the package ``featx.conf``
(see ``pyproject.toml``), so it is found through the import system in both cases::

    config_dir() / "backbone" / "resnet50.yaml"
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, List, Sequence, Set


def config_dir() -> Path:
    """The directory holding ``config.yaml`` and ``backbone/``."""
    spec = importlib.util.find_spec("featx.conf")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("featx.conf is not installed: reinstall featx (pip install .)")
    return Path(next(iter(spec.submodule_search_locations)))


def backbone_names() -> List[str]:
    """Names of the packaged backbone specs (``conf/backbone/*.yaml``), sorted."""
    return sorted(path.stem for path in (config_dir() / "backbone").glob("*.yaml"))


def backbone_files(config_roots: Sequence[Path]) -> Dict[str, List[Path]]:
    """Every ``backbone/<name>.yaml`` under ``config_roots`` (Hydra search-path roots, highest priority first), by
    name; a name with more than one file is shadowed: Hydra uses the first and ignores the others."""
    found: Dict[str, List[Path]] = {}
    seen: Set[Path] = set()  # a file met twice (its root given twice, or linked from another root) is one file
    for root in config_roots:
        for path in sorted((Path(root) / "backbone").glob("*.yaml")):
            if path.resolve() not in seen:
                seen.add(path.resolve())
                found.setdefault(path.stem, []).append(path)
    return found

"""Whether a model builder is its library's own code, not a function the user's code registered under a library's
name (timm's ``register_model`` replaces an existing name with a warning; ``functools.wraps`` copies the module and
name of the function it wraps; a library's own decorator may wrap the user's function). Only a library's own
builders may use plans cached for the library's version.

Example::

    import torchvision
    is_library_code(torchvision.models.get_model_builder("resnet50"), torchvision)   # True
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any


def package_folder(package: ModuleType) -> str:
    """The folder of ``package``'s files (links resolved), ending in the path separator."""
    return os.path.dirname(os.path.realpath(str(package.__file__))) + os.sep


def is_library_code(function: Any, package: ModuleType) -> bool:
    """Whether ``function`` and every function it wraps (its ``__wrapped__`` chain: a user's builder under one of the
    library's own decorators) have their code in ``package``'s files."""
    folder, seen = package_folder(package), set()
    while function is not None and id(function) not in seen:
        seen.add(id(function))
        code = getattr(function, "__code__", None)
        if code is None or not os.path.realpath(code.co_filename).startswith(folder):
            return False
        function = getattr(function, "__wrapped__", None)
    return True

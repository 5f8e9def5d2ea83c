"""Whether a model builder is its library's own code, not a function the user's code registered under a library's
name (timm's ``register_model`` replaces an existing name with a warning; ``functools.wraps`` copies the module and
name of the function it wraps). Only a library's own builders may use plans cached for the library's version.

Example::

    import torchvision
    is_library_code(torchvision.models.get_model_builder("resnet50"), torchvision)   # True
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any


def _folder(package: ModuleType) -> str:
    return os.path.dirname(os.path.realpath(str(package.__file__)))


def is_library_code(function: Any, package: ModuleType) -> bool:
    """Whether ``function`` is what its module exports under its name and its code lies in ``package``'s files."""
    module = sys.modules.get(str(getattr(function, "__module__", None)))
    if module is None or getattr(module, str(getattr(function, "__name__", "")), None) is not function:
        return False
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    return os.path.realpath(code.co_filename).startswith(_folder(package) + os.sep)

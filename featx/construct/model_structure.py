"""A fingerprint of a model's structure, so that a cached plan is used only for a model built as the one it was
made from: the module tree (paths, classes, ``extra_repr``: widths, kernels, strides), every parameter's and
buffer's shape, and where each module's ``forward`` code lives. A library class patched at run time (a block's
``expansion``, a ``forward`` replaced by the user's) gives another fingerprint, where the library's version does not
change.

Example::

    from featx.construct.meta_model import MetaModel
    structure_fingerprint(MetaModel.create("resnet50").model)   # '3f1c...' (64 hex digits)
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any, Dict

from torch import nn

from featx.models.library_code import package_folder

#: the libraries whose files a code location is given relative to (so one installed anywhere gives one fingerprint)
_LIBRARIES = ("torch", "torchvision", "timm")


def _library_folders() -> Dict[str, str]:
    """The folders of the imported :data:`_LIBRARIES`."""
    imported = {name: sys.modules[name] for name in _LIBRARIES if getattr(sys.modules.get(name), "__file__", None)}
    return {name: package_folder(module) for name, module in imported.items()}


def _code_location(function: Any, folders: Dict[str, str]) -> str:
    """``library/relative/file.py:line qualname`` of ``function``'s code (an absolute file outside the libraries)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return repr(type(function))
    file = os.path.realpath(code.co_filename)
    for name, folder in folders.items():
        if file.startswith(folder):
            file = name + "/" + file[len(folder) :].replace(os.sep, "/")
            break
    return f"{file}:{code.co_firstlineno} {getattr(function, '__qualname__', '')}"


def structure_fingerprint(model: nn.Module) -> str:
    """A SHA-256 over ``model``'s module tree, tensor shapes and forward code locations (see the module docstring)."""
    folders = _library_folders()
    digest = hashlib.sha256()
    locations: Dict[type, str] = {}  # per class: resolving a file's links costs a system call per folder
    for path, module in model.named_modules():
        kind = type(module)
        if kind not in locations:
            locations[kind] = _code_location(kind.forward, folders)
        tensors = [
            f"{name}{tuple(tensor.shape) if tensor is not None else None}"
            for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
        ]
        line = (
            f"{path}|{kind.__module__}.{kind.__qualname__}|{module.extra_repr()}|"
            f"{locations[kind]}|{','.join(tensors)}\n"
        )
        digest.update(line.encode())
    return digest.hexdigest()

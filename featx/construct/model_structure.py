"""A model's structure: its module tree (paths, classes, ``extra_repr``: widths, kernels, strides) and every
parameter's and buffer's shape.

- :func:`structure_fingerprint`: a hash of it plus where the code of each module's methods lives (``forward`` and
  the helpers it calls), the values their closures hold and the functions they call by a global name or through a
  module (``F.max_pool2d``, ``torch.nn.functional.relu``), and so on down, so that a cached plan is used only for a
  model built as the one it was made from (a library class patched at run time, a block's ``expansion``, a
  ``forward`` or a helper such as ResNet's ``_forward_impl`` or Swin's ``_patch_merging_pad`` replaced by the
  user's, or ``torch.nn.functional.max_pool2d`` replaced by a lambda or a wrapper, gives another fingerprint where
  the library's version does not change).
- :func:`structure_differences`: where two modules' trees differ, module by module, in class, ``extra_repr``,
  tensor shapes and the plain settings a module keeps outside its ``extra_repr`` (``FrozenBatchNorm2d.eps``,
  ``StochasticDepth.p``, Swin's ``shift_size``): ``featx.save`` compares a backbone with what its spec builds.

Example::

    from featx.construct.meta_model import MetaModel
    structure_fingerprint(MetaModel.create("resnet50").model)   # '3f1c...' (64 hex digits)
    structure_differences(edited_backbone, featx.build(edited_backbone.spec, overrides=["device=meta"]))
    # [('stages.c2.relu', 'SiLU(inplace=True)', 'ReLU(inplace=True)')]
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
import types
from typing import Any, Dict, List, Optional, Tuple

from torch import nn

from featx.models.library_code import package_folder

#: the libraries whose files a code location is given relative to (so one installed anywhere gives one fingerprint)
_LIBRARIES = ("torch", "torchvision", "timm")


def _library_folders() -> Dict[str, str]:
    """The folders of the imported :data:`_LIBRARIES`, then Python's own library and the environment's packages
    (a method wrapped by ``contextlib`` or ``typing_extensions`` gives the wrapper's code, there)."""
    imported = {name: sys.modules[name] for name in _LIBRARIES if getattr(sys.modules.get(name), "__file__", None)}
    folders = {name: package_folder(module) for name, module in imported.items()}
    paths = sysconfig.get_paths()
    for name, key in (("site-packages", "purelib"), ("python", "stdlib")):
        folders.setdefault(name, os.path.join(os.path.realpath(paths[key]), ""))
    return folders


@functools.lru_cache(maxsize=4096)
def _real_file(file: str) -> str:
    """``file`` with its links resolved (a system call per folder: once per file); a name that is no path
    (``<frozen posixpath>``, ``<string>``) as it is, not taken from the working directory."""
    return os.path.realpath(file) if os.path.isabs(file) else file


def _code_location(function: Any, folders: Dict[str, str]) -> str:
    """``library/relative/file.py:line qualname`` of ``function``'s code (an absolute file outside the libraries)."""
    code = getattr(function, "__code__", None)
    if code is None:
        return repr(type(function))
    file = _real_file(code.co_filename)
    for name, folder in folders.items():
        if file.startswith(folder):
            file = name + "/" + file[len(folder) :].replace(os.sep, "/")
            break
    return f"{file}:{code.co_firstlineno} {getattr(function, '__qualname__', '')}"


def _tensor_shapes(module: nn.Module) -> str:
    return ",".join(
        f"{name}{tuple(tensor.shape) if tensor is not None else None}"
        for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
    )


def _names_used(code: types.CodeType) -> List[str]:
    """The global and attribute names ``code`` reads, with those of the functions, lambdas and comprehensions in it."""
    names = list(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names.extend(_names_used(constant))
    return names


def _reached(function: types.FunctionType) -> Dict[str, object]:
    """What ``function`` may reach by the names its code reads: a global of its module (``_pair``) and, through a
    module it reaches so, an attribute of that module (``F.max_pool2d``, ``torch.nn.functional.relu``), by its
    dotted name. Every name read is looked up in every such module's namespace (nothing runs; a name read off
    something else, ``self.stride``, may find a function too: that costs a lookup, and changes nothing). Modules of
    a class of their own (``torch.ops``, whose namespace fills as operators are used) are not followed."""
    names = list(dict.fromkeys(_names_used(function.__code__)))
    module_globals = function.__globals__
    reached = {name: module_globals[name] for name in names if name in module_globals}
    modules = [(name, value) for name, value in reached.items() if type(value) is types.ModuleType]
    followed = {id(module) for _, module in modules}
    while modules:
        path, module = modules.pop(0)
        namespace = vars(module)
        for name in names:
            if name not in namespace:
                continue
            value = namespace[name]
            if type(value) is not types.ModuleType:
                reached.setdefault(f"{path}.{name}", value)
            elif id(value) not in followed:
                followed.add(id(value))
                modules.append((f"{path}.{name}", value))
    return reached


def _value_description(value: object, folders: Dict[str, str], described: Dict[int, str]) -> str:
    """A value as it shapes the computation: a function's code (:func:`_function_code`), a bound method's or a
    ``functools.partial``'s function and what it holds, a builtin's qualified name, a plain value's repr, a class's
    name; other objects by their type alone (their repr may hold an address)."""
    if isinstance(value, types.FunctionType):
        return _function_code(value, folders, described)
    if isinstance(value, types.MethodType):
        bound = (value.__func__, value.__self__)
        return f"method({', '.join(_value_description(item, folders, described) for item in bound)})"
    if isinstance(value, functools.partial):
        held = [_value_description(item, folders, described) for item in (value.func, *value.args)]
        held += [
            f"{key}={_value_description(item, folders, described)}" for key, item in sorted(value.keywords.items())
        ]
        return f"partial({', '.join(held)})"
    if isinstance(value, types.BuiltinFunctionType):
        return f"builtin {getattr(value, '__module__', None)}.{value.__qualname__}"
    if isinstance(value, (bool, int, float, str, type(None))):
        return repr(value)
    kind = value if isinstance(value, type) else type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def _function_code(function: types.FunctionType, folders: Dict[str, str], described: Dict[int, str]) -> str:
    """Where ``function``'s code lives and a hash of the values its closure holds and, the same way, of what it calls
    by a global name or through a module's attribute (``_patch_merging_pad``, ``F.max_pool2d``,
    ``torch.nn.functional.relu``): a function, a builtin or other callable replaced there, or a closure over another
    setting, changes it, where the method's own location does not. ``described`` keeps each function's description
    for the next caller (a function reached again while it is described gives its location)."""
    if id(function) in described:
        return described[id(function)]
    location = _code_location(function, folders)
    described[id(function)] = location
    parts = []
    for cell in function.__closure__ or ():
        try:
            parts.append(_value_description(cell.cell_contents, folders, described))
        except ValueError:  # a cell not filled yet
            parts.append("<empty>")
    for name, value in _reached(function).items():
        if callable(value) and not isinstance(value, type):
            parts.append(f"{name}=({_value_description(value, folders, described)})")
    described[id(function)] = f"{location} {hashlib.sha256(' '.join(parts).encode()).hexdigest()}"
    return described[id(function)]


def _class_code(kind: type, folders: Dict[str, str], described: Dict[int, str]) -> str:
    """The code of every method of ``kind`` and its bases below ``nn.Module`` (:func:`_function_code`): ``forward``
    and the helpers it calls (ResNet's ``_forward_impl``, ViT's ``_process_input``), so that patching any of them
    shows."""
    methods = []
    for base in kind.__mro__:
        if base in (nn.Module, object):
            continue
        for name, value in sorted(vars(base).items()):
            function = getattr(value, "__func__", value)  # a staticmethod's or classmethod's function
            if isinstance(function, types.FunctionType):
                methods.append(f"{base.__qualname__}.{name}={_function_code(function, folders, described)}")
            elif callable(function) and hasattr(function, "__code__"):
                methods.append(f"{base.__qualname__}.{name}={_code_location(function, folders)}")
    return ";".join(methods)


def structure_fingerprint(model: nn.Module) -> str:
    """A SHA-256 over ``model``'s module tree, tensor shapes and methods' code (see the module docstring)."""
    folders = _library_folders()
    digest = hashlib.sha256()
    locations: Dict[type, str] = {}  # per class: resolving a file's links costs a system call per folder
    described: Dict[int, str] = {}  # per function, for every class whose methods reach it
    for path, module in model.named_modules():
        kind = type(module)
        if kind not in locations:
            locations[kind] = _class_code(kind, folders, described)
        line = (
            f"{path}|{kind.__module__}.{kind.__qualname__}|{module.extra_repr()}|"
            f"{locations[kind]}|{_tensor_shapes(module)}\n"
        )
        digest.update(line.encode())
    return digest.hexdigest()


def _described(module: nn.Module) -> str:
    """``Class(extra_repr)``, and whether its ``forward`` was replaced on the instance. SyncBatchNorm counts as the
    BatchNorm2d it converts (``nn.SyncBatchNorm.convert_sync_batchnorm`` before DDP: the same tensors, and the same
    computation on one device)."""
    kind = "BatchNorm2d" if isinstance(module, nn.SyncBatchNorm) else type(module).__qualname__
    replaced = " with its forward replaced" if "forward" in vars(module) else ""
    return f"{kind}({module.extra_repr()}){replaced}"


#: attributes that are no setting of the network: the mode, and switches between implementations of the same
#: computation (timm's gradient checkpointing and fused attention, DenseNet's memory-efficient layers)
_NOT_SETTINGS = frozenset({"training", "grad_checkpointing", "fused_attn", "memory_efficient"})


def _is_plain(value: object) -> bool:
    if isinstance(value, (bool, int, float, str, type(None))):
        return True
    return isinstance(value, (tuple, list)) and all(_is_plain(item) for item in value)


def _settings(module: nn.Module) -> Dict[str, str]:
    """The plain values (numbers, text, tuples of them) a module keeps in its public attributes, by name: what its
    forward reads besides tensors, which its ``extra_repr`` need not show (``FrozenBatchNorm2d.eps``)."""
    return {
        name: repr(value)
        for name, value in vars(module).items()
        if not name.startswith("_") and name not in _NOT_SETTINGS and _is_plain(value)
    }


#: a module as compared: its description (:func:`_described`), its own tensors' shapes and its settings
_Described = Tuple[str, str, Dict[str, str]]


def _shown(side: Optional[_Described], other: Optional[_Described]) -> str:
    """How a difference names one side: its description, or its class and what differs where only tensors or
    settings do."""
    if side is None:
        return "nothing"
    description, shapes, settings = side
    if other is not None and other[0] == description:
        kind = description.partition("(")[0]
        if other[1] != shapes:
            return f"{kind} holding {shapes or 'no tensors'}"
        differing = [name for name in dict.fromkeys([*settings, *other[2]]) if settings.get(name) != other[2].get(name)]
        return f"{kind} with " + ", ".join(
            f"{name}={settings[name]}" if name in settings else f"no plain {name}" for name in differing
        )
    return description


def structure_differences(have: nn.Module, want: nn.Module) -> List[Tuple[str, str, str]]:
    """``(path, what have holds there, what want holds there)`` for every module path where the two trees differ in
    class, ``extra_repr``, tensor shapes, an instance-level ``forward`` or a setting ``want``'s module keeps
    (:func:`_settings`: attributes ``have`` alone holds, a tag added by hand, are not compared); ``"nothing"`` where
    one has no module."""
    want_modules = {
        path: (_described(module), _tensor_shapes(module), _settings(module)) for path, module in want.named_modules()
    }
    have_modules: Dict[str, _Described] = {}
    for path, module in have.named_modules():
        compared = want_modules[path][2] if path in want_modules else {}
        settings = {name: value for name, value in _settings(module).items() if name in compared}
        have_modules[path] = (_described(module), _tensor_shapes(module), settings)
    return [
        (
            path,
            _shown(have_modules.get(path), want_modules.get(path)),
            _shown(want_modules.get(path), have_modules.get(path)),
        )
        for path in dict.fromkeys([*have_modules, *want_modules])
        if have_modules.get(path) != want_modules.get(path)
    ]

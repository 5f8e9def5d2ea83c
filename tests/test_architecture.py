"""The layering docs/architecture.md states: ``spec/`` imports no other layer (its Hydra ``_target_`` reaches the
builder only when called), ``models/`` and ``nn/`` only ``spec/``, besides the shared modules any layer may use."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "featx"
SHARED = ("featx.errors", "featx.files", "featx.cache_folder", "featx.file_records")


def _featx_imports(tree: ast.AST, package: str, module_level_only: bool) -> Iterator[Tuple[int, str]]:
    """(line, module) of each ``featx`` import in ``tree``, the code of a module of ``package`` (relative imports
    resolved against it; ``from featx import nn`` is ``featx.nn``); with ``module_level_only``, not those inside
    functions or under ``if TYPE_CHECKING:`` (which run only when called, or never)."""
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if module_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if module_level_only and isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            continue
        if isinstance(node, ast.ImportFrom):
            parts = package.split(".")[: len(package.split(".")) + 1 - node.level] if node.level else []
            module = ".".join([*parts, *([node.module] if node.module else [])])
            names = (
                [f"{module}.{alias.name}" for alias in node.names] if module == "featx" or not node.module else [module]
            )
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            names = []
        yield from ((node.lineno, name) for name in names if name == "featx" or name.startswith("featx."))
        pending.extend(ast.iter_child_nodes(node))


def _package(path: Path) -> str:
    """The package a featx source file's relative imports start from: ``featx/models/registry.py``: featx.models."""
    return ".".join(path.relative_to(PACKAGE.parent).parent.parts)


def _within(name: str, allowed: Tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in allowed)


@pytest.mark.parametrize(
    ("layer", "allowed", "module_level_only"),
    [
        ("spec", ("featx.spec", "featx.errors"), True),
        ("models", ("featx.models", "featx.spec", *SHARED), False),
        ("nn", ("featx.nn", "featx.spec", *SHARED), False),
    ],
)
def test_a_lower_layer_imports_no_higher_one(layer, allowed, module_level_only):
    crossings = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        for path in sorted((PACKAGE / layer).rglob("*.py"))
        for line, name in _featx_imports(ast.parse(path.read_text(encoding="utf-8")), _package(path), module_level_only)
        if not _within(name, allowed)
    ]
    assert crossings == []


def test_the_layering_check_sees_a_crossing():
    """The check itself: an import of construct/ from a models/ module, also one inside a function or a relative
    one, is found."""
    tree = ast.parse("import os\ndef f():\n    from featx.construct.plan_cache import user_plans_dir\n")
    assert list(_featx_imports(tree, "featx.models", module_level_only=False)) == [(3, "featx.construct.plan_cache")]
    assert list(_featx_imports(tree, "featx.models", module_level_only=True)) == []
    relative = ast.parse("from ..construct.plan_cache import cached_plan\nfrom .. import nn\nfrom . import registry\n")
    assert sorted(_featx_imports(relative, "featx.models", module_level_only=True)) == [
        (1, "featx.construct.plan_cache"),
        (2, "featx.nn"),
        (3, "featx.models.registry"),
    ]
    assert list(_featx_imports(ast.parse("from featx import construct\n"), "featx.nn", False)) == [
        (1, "featx.construct")
    ]

"""scripts/mutation.py stays applicable: each mutant's text occurs exactly once in its module and the mutated module
compiles (a mutant whose text the code no longer holds, or one left cut into a re-indented line, would abort the
run), and each module has the tests that guard it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutation_module():
    spec = importlib.util.spec_from_file_location("mutation", ROOT / "scripts" / "mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("mutation", module)
    spec.loader.exec_module(module)
    return module


def test_every_mutant_applies_once_and_its_module_has_guards():
    mutation = _mutation_module()
    for mutant in mutation.MUTANTS:
        source = (ROOT / "featx" / mutant.module).read_text()
        assert source.count(mutant.old) == 1, f"{mutant.module}: {mutant.bug}"
        compile(source.replace(mutant.old, mutant.new), mutant.module, "exec")
        assert mutant.new != mutant.old and mutant.module in mutation.GUARDS, mutant.bug
        assert all((ROOT / guard).is_file() for guard in mutation.GUARDS[mutant.module]), mutant.module

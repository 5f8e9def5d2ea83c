"""scripts/mutation.py stays applicable: each mutant's text occurs exactly once in its module and the mutated module
compiles (a mutant whose text the code no longer holds, or one left cut into a re-indented line, would abort the
run), and each module has the tests that guard it."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
from pathlib import Path

import pytest

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


def test_the_docs_count_the_mutants_there_are_and_give_each_a_row():
    """README and docs/testing.md say how many bugs scripts/mutation.py plants, and docs/testing.md's table has one
    row per mutant (module, planted bug): a number typed by hand would outlive the mutants it counted."""
    mutation = _mutation_module()
    count = len(mutation.MUTANTS)
    for page in ("README.md", "docs/testing.md"):
        assert f"`scripts/mutation.py` plants {count}" in (ROOT / page).read_text().replace("\n", " "), page
    lines = (ROOT / "docs" / "testing.md").read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith("| module | planted bug")) + 2
    rows = [line.split(" | ")[:2] for line in itertools.takewhile(lambda line: line.startswith("| `"), lines[start:])]
    planted = sorted((cell.split("`")[1], bug) for cell, bug in rows)
    assert planted == sorted((mutant.module, mutant.bug) for mutant in mutation.MUTANTS)


def test_json_never_replaces_a_users_file_and_bad_choices_are_refused_before_any_mutant(tmp_path, capsys):
    """--json was written with write_text after the first mutant: over a file of the user's, or through a link;
    --only naming no module ran nothing and printed an empty table."""
    mutation = _mutation_module()
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}\n')
    link = tmp_path / "link.json"
    link.symlink_to(notes)
    for path in (notes, link):
        with pytest.raises(SystemExit) as refused:
            mutation.main(["--only", "no-such-module", "--json", str(path)])
        assert refused.value.code == 2
        assert f"argument --json: {path} exists and is not a results file this script wrote" in capsys.readouterr().err
    assert notes.read_text() == '{"mine": 1}\n'
    with pytest.raises(SystemExit) as refused:
        mutation.main(["--only", "no-such-module"])
    assert refused.value.code == 2
    refusal = "argument --only: no mutant's module contains no-such-module (modules: __init__.py, cache_folder.py, "
    assert refusal in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mutation.main(["--workers", "0"])
    assert "argument --workers: 0 is not a whole number >= 1" in capsys.readouterr().err
    own = tmp_path / "own.json"
    record = {
        "module": "files.py",
        "bug": "b",
        "status": "killed",
        "seconds": 1.0,
        "killed_by": "t",
        "equivalent": None,
    }
    mutation._write_results(own, [record])
    assert mutation.is_results_file(own) and json.loads(own.read_text()) == [record]
    assert not mutation.is_results_file(notes) and not mutation.is_results_file(link)

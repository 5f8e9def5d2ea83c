"""Docs are code, shell too: every fenced ``bash`` block of README.md and docs/*.md runs, line by line, as a user
would type it, in a fresh working directory holding the files the commands name (``photos/``), offline; each line
must exit 0. A line that is one of featx's console scripts with plain words runs as that script in this process
(``helpers.run_in_process``: no second import of torch); any other line runs in bash.

A block that cannot run here is marked by the comment on the line before its fence, which this test reads:
``<!-- docs-test: not run (REASON) -->``, where REASON starts with ``network`` (downloads weights), ``gpu``,
``installs`` (creates a virtual environment: CI runs it) or ``minutes`` (a benchmark or a training run; the reason
names the test that runs a smaller one). Every other block runs.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
from helpers import APP_MODULES, run_in_process
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BASH_BLOCK = re.compile(
    r"(?:^(<!-- docs-test: not run \((?P<reason>[^)]*)\) -->)\n)?^```bash\n(?P<body>.*?)^```", re.S | re.M
)
REASONS = ("network", "gpu", "installs", "minutes")


def bash_blocks(page: Path) -> List[Tuple[str, str]]:
    """``(reason it is not run or "", body)`` of each bash block of ``page``."""
    return [(match["reason"] or "", match["body"]) for match in BASH_BLOCK.finditer(page.read_text())]


def lines_of(body: str) -> List[str]:
    """The commands of a block: continuations joined, comment-only and empty lines dropped."""
    joined = body.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


RUN = [(page.name, body) for page in PAGES for reason, body in bash_blocks(page) if not reason]


def test_every_skipped_block_says_why_in_the_known_words():
    reasons = [reason for page in PAGES for reason, _ in bash_blocks(page) if reason]
    assert reasons and all(reason.startswith(REASONS) for reason in reasons), reasons
    assert all("tests/" in reason for reason in reasons if reason.startswith("minutes")), reasons


def _console_script_words(line: str) -> Optional[List[str]]:
    """The words of ``line`` as bash splits them, when it is one of featx's console scripts with nothing for bash to
    do but split words (no pipe, redirection, variable, or glob outside quotes); None for a line bash must run."""
    words = shlex.split(line, comments=True)
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", line.split(" #", 1)[0])
    if not words or words[0] not in APP_MODULES or re.search(r"[|&;<>$`\\(){}*?\[~]", unquoted):
        return None
    return words


def _prepare(folder: Path, temp_dir: Path) -> dict:
    """The working directory's files and the environment the commands see (``temp_dir`` short: DataLoader workers
    put sockets there; the plan cache on, in ``temp_dir``)."""
    (folder / "photos").mkdir()
    for index, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (48, 40), colour).save(folder / f"photos/{index}.jpg")
    bin_dir = str(Path(sys.executable).parent)
    environment = {key: value for key, value in os.environ.items() if key != "FEATX_NO_CACHE"}
    return {
        **environment,
        "FEATX_CACHE_DIR": str(temp_dir / "featx-cache"),  # the plan cache on, as a user has it
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "TMPDIR": str(temp_dir),
        "TORCH_HOME": str(folder / "torch-home"),
        "FEATX_OFFLINE": "1",
        "HYDRA_FULL_ERROR": "0",
        "PYTHONPATH": str(ROOT),
    }


@pytest.mark.slow
@pytest.mark.parametrize("page_name", sorted({name for name, _ in RUN}))
def test_shell_examples_run(page_name: str, tmp_path: Path) -> None:
    """A page's blocks run in order in one working directory (a later block may use what an earlier one wrote)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="featx-docs-", dir="/tmp" if Path("/tmp").is_dir() else None))
    try:
        env = _prepare(tmp_path, temp_dir)
        (tmp_path / "scripts").symlink_to(ROOT / "scripts")
        for body in (body for name, body in RUN if name == page_name):
            for line in lines_of(body):
                words = _console_script_words(line)
                if words is not None:  # featx's own command of plain words: run as its console script, here
                    result = run_in_process(words[0], words[1:], tmp_path, env)
                else:
                    result = subprocess.run(
                        ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
                    )
                assert result.returncode == 0, f"{page_name}: {line}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)

"""Docs are code: every Python example in README.md and docs/*.md runs, and every ``featx``, ``featx-export`` and
``featx-extract`` command line in them is composed by Hydra with featx's own configs.

A page's Python blocks run in order in one namespace, in a fresh working directory holding the files the examples
name (a spec file, a state dict, a cached enum file, a finished extraction), offline. ``print(x)  # text ...``
lines are checked: the printed output must contain the comment's text (up to a trailing ``...``).
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
import torchvision
from helpers import stand_in_for_published
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

import featx
from featx.spec.apps import ExtractOptions
from featx.tasks.extract.run import extract

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: each Hydra app and the primary config it composes
APP_CONFIGS = {"featx": "config", "featx-export": "export", "featx-extract": "extract"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
PRINTED = re.compile(r"^\s*print\(.*\)\s*#\s*(.+?)\s*(?:\.\.\.)?$", re.M)


def blocks_of_text(text: str, language: str) -> List[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def blocks(page: Path, language: str) -> List[str]:
    return blocks_of_text(page.read_text(), language)


def command_lines(page: Path) -> List[List[str]]:
    """The Hydra app command lines of a page's bash blocks, as argument lists (comments and continuations gone)."""
    commands = []
    for block in blocks(page, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            words = shlex.split(line)
            if words[:3] == ["python", "-m", "featx"]:
                words = ["featx", *words[3:]]
            if words and words[0] in APP_CONFIGS:
                commands.append(words)
    return commands


def _write_resnet18_spec(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("model: resnet18\nstages:\n  c2: {modules: [conv1, bn1, relu, maxpool, layer1]}\n")


def _write_config_files(page_text: str, folder: Path) -> None:
    """Write each YAML block whose first line is ``# <path>.yaml`` to that path below ``folder``."""
    for block in blocks_of_text(page_text, "yaml"):
        first = block.splitlines()[0]
        if first.startswith("# ") and first.endswith(".yaml"):
            target = folder / first[2:]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block)


def _prepare(page_text: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create, in ``folder`` (the examples' working directory), the files the page's examples name."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("TORCH_HOME", str(folder / "torch-home"))
    monkeypatch.setenv("FEATX_OFFLINE", "1")
    if "path/to/my_backbone.yaml" in page_text:
        _write_resnet18_spec(folder / "path/to/my_backbone.yaml")
    _write_config_files(page_text, folder)
    if "IMAGENET1K_V2" in page_text or "checkpoints/resnet50.pth" in page_text:
        weights = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
        cached = folder / "torch-home/hub/checkpoints" / Path(weights.url).name
        cached.parent.mkdir(parents=True)
        torch.save(torchvision.models.resnet50().state_dict(), cached)
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints/resnet50.pth").hardlink_to(cached)  # before the record: a new link changes the ctime
        stand_in_for_published(cached, monkeypatch)
    if '"runs/' in page_text:
        (folder / "runs").mkdir()
    if 'read_features("feats/")' in page_text:
        (folder / "photos").mkdir()
        for index, colour in enumerate(("red", "green")):
            Image.new("RGB", (40, 30), colour).save(folder / f"photos/{index}.png")
        options = ExtractOptions(input="photos", output="feats", workers=0, progress=False, size=[64, 64])
        extract(featx.load_spec("resnet50", overrides=["device=cpu"]), options)


@pytest.mark.parametrize("page", [page for page in PAGES if blocks(page, "python")], ids=lambda page: page.name)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = page.read_text()
    _prepare(text, tmp_path, monkeypatch)
    namespace: Dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(blocks(page, "python")):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, f"{page.name}[python block {number}]", "exec"), namespace)
        for expected in PRINTED.findall(block):
            assert expected in printed.getvalue(), (page.name, number, expected, printed.getvalue())


def _expanded(arguments: List[str]) -> List[List[str]]:
    """A sweep's overrides as the jobs it runs (choice sweeps only); flags left out."""
    overrides = [argument for argument in arguments if not argument.startswith("-") and "=" in argument]
    jobs: List[List[str]] = [[]]
    for override, text in zip(OverridesParser.create().parse_overrides(overrides), overrides, strict=True):
        if override.is_sweep_override() and "glob(" not in text:
            values = list(override.sweep_string_iterator())
            jobs = [job + [f"{override.key_or_group}={value}"] for job in jobs for value in values]
        elif not override.is_sweep_override():
            jobs = [job + [text] for job in jobs]
    return jobs


COMMANDS: List[Tuple[str, List[str]]] = [(page.name, words) for page in PAGES for words in command_lines(page)]


def test_the_docs_show_command_lines_of_every_app() -> None:
    shown = {words[0] for _, words in COMMANDS}
    assert shown == set(APP_CONFIGS), shown


@pytest.mark.parametrize("page_name, words", COMMANDS, ids=[" ".join(words)[:60] for _, words in COMMANDS])
def test_command_lines_compose(page_name: str, words: List[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if any("my_configs" in word for word in words):
        _write_config_files((ROOT / "docs/apps.md").read_text(), tmp_path)
    for overrides in _expanded(words[1:]):
        GlobalHydra.instance().clear()
        with initialize_config_module("featx.conf", version_base="1.3"):
            cfg = compose(APP_CONFIGS[words[0]], overrides=overrides)
        featx.load_spec(cfg.backbone)

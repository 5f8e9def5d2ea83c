"""scripts/bench_extract.py on a tiny run: every row measured (the decode=gpu rows only with CUDA), the goals computed
from the measured rates, the page naming its command; the generated JPEGs are the same for one seed."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def bench_extract() -> ModuleType:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    return importlib.import_module("bench_extract")


def test_a_tiny_run_measures_every_row_and_writes_its_page(bench_extract, tmp_path):
    page = tmp_path / "extract.md"
    arguments = ["--images=6", "--workers=0", "--batch-size=4", "--size=64", "--backbone=resnet18", "--device=cpu"]
    rates, table = bench_extract.main([*arguments, f"--output={page}"])
    assert list(rates) == [
        "decode alone, cpu",
        "decode alone, gpu",
        "in memory, gpu: nvJPEG only",
        "in memory, gpu: nvJPEG and the transform",
        "featx-extract decode=cpu",
        "featx-extract decode=gpu",
        "hand-written loop",
    ]
    assert [row for row, rate in rates.items() if rate is None] == [
        "decode alone, gpu",
        "in memory, gpu: nvJPEG only",
        "in memory, gpu: nvJPEG and the transform",
        "featx-extract decode=gpu",
    ]
    assert all(rate > 0 for rate in rates.values() if rate is not None)
    assert "| featx-extract decode=gpu / featx-extract decode=cpu | needs CUDA | >= 3.0: not measured |" in table
    ratio = rates["featx-extract decode=cpu"] / rates["hand-written loop"]
    assert f"| featx-extract decode=cpu / hand-written loop | {ratio:.2f} | - |" in table
    text = page.read_text()
    assert text.startswith(
        "# Extraction throughput (generated)\n\nWritten by `python scripts/bench_extract.py " + " ".join(arguments)
    )
    assert text.endswith(table)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_goals_are_ratios_of_the_measured_rates(bench_extract):
    arguments = ["--images=8", "--workers=2", "--batch-size=4", "--size=64", "--backbone=resnet18", "--device=cuda"]
    rates, table = bench_extract.main(arguments)
    assert all(rate is not None and rate > 0 for rate in rates.values())
    ratio = rates["featx-extract decode=gpu"] / rates["featx-extract decode=cpu"]
    met = "met" if ratio >= 3.0 else "not met"
    assert f"| featx-extract decode=gpu / featx-extract decode=cpu | {ratio:.2f} | >= 3.0: {met} |" in table


def test_the_generated_jpegs_depend_on_the_seed_only(bench_extract, tmp_path):
    first = bench_extract.write_jpegs(tmp_path / "a", 3)
    again = bench_extract.write_jpegs(tmp_path / "b", 3)
    other = bench_extract.write_jpegs(tmp_path / "c", 3, seed=1)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    assert first[0].read_bytes() != other[0].read_bytes()
    with Image.open(first[0]) as image:
        assert image.format == "JPEG" and 450 <= image.width < 550 and 330 <= image.height < 420
        assert np.asarray(image).std() > 20  # not a flat image: something to decode

"""scripts/bench_extract.py on a tiny run: every row measured (the decode=gpu rows only with CUDA), the goals computed
from the measured rates, the page naming its command; the generated JPEGs are the same for one seed."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch
from helpers import load_script
from PIL import Image


@pytest.fixture(scope="module")
def bench_extract() -> ModuleType:
    return load_script("bench_extract")


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
        "featx-extract decode=cpu, norm=eval",
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
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.split("\n\n")[0].splitlines()]
    rows = {row[0]: row[1:] for row in cells[2:]}
    assert cells[0] == ["row", "images/s", "first batch after (s)", "images/s after the first batch"]
    for row in ("decode alone, cpu", "hand-written loop"):  # DataLoader rows: when the first batch came, and after
        assert float(rows[row][1]) > 0 and float(rows[row][2]) > 0
    assert rows["featx-extract decode=cpu"][1:] == ["-", "-"]
    assert rows["featx-extract decode=gpu"] == ["needs CUDA"] * 3
    text = page.read_text()
    assert text.startswith(
        "# Extraction throughput (generated)\n\nWritten by `python scripts/bench_extract.py " + " ".join(arguments)
    )
    assert text.endswith(table)


def test_the_rate_after_the_first_batch_leaves_that_batch_out(bench_extract):
    one = bench_extract.Pass(seconds=3.0, first_batch=0.5, first_handled=1.0)
    assert bench_extract._after_first_batch(one, images=10, batch_size=4) == 3.0  # 6 images in the last 2 s
    assert bench_extract._after_first_batch(one, images=4, batch_size=4) is None  # nothing after the first batch
    assert bench_extract._after_first_batch(bench_extract.Pass(3.0), images=10, batch_size=4) is None  # no DataLoader


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

"""The apps' tables: the featx app's (featx/cli/report.py), what each row says it covers matches what it counts,
and featx-list's (featx/cli/catalog.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import List

import pytest
import torchvision

import featx
from featx.cli import catalog
from featx.cli.report import format_report, measure
from featx.spec.config_files import config_dir


def test_a_token_models_embed_row_names_the_tokens_and_position_embedding_it_counts():
    """The embed stage holds the class token and the position embedding (the table counted them under a covers
    cell that listed conv_proj and encoder.dropout only)."""
    backbone = featx.build("vit_b_16", overrides=["device=meta"])
    report = measure(backbone, batch_size=1, height=224, width=224, build_seconds=0.0, title="vit_b_16")
    embed = report.rows[0]
    reference = torchvision.models.vit_b_16()
    counted = sum(p.numel() for p in reference.conv_proj.parameters())
    assert embed.params == counted + reference.class_token.numel() + reference.encoder.pos_embedding.numel()
    table = format_report(report).splitlines()
    assert table[3].split()[:7] == [
        "embed",
        "conv_proj,",
        "encoder.dropout",
        "+",
        "class_token,",
        "encoder.pos_embedding",
        "768",
    ]
    assert "+" not in table[4]  # blocks1 holds no token parameters


def test_a_stage_without_token_parameters_shows_only_what_it_covers():
    backbone = featx.build("resnet18", overrides=["device=meta"])
    report = measure(backbone, batch_size=1, height=64, width=64, build_seconds=0.0, title="resnet18")
    assert [row.holds for row in report.rows] == ["", "", "", ""]
    assert format_report(report).splitlines()[3].split()[:4] == ["*", "c2", "conv1,", "bn1,"]


def test_a_meta_device_forward_says_why_it_did_not_run_without_naming_run_false():
    """``featx backbone=resnet18 backbone.device=meta`` (run left true) said "run=false: meta device"."""
    backbone = featx.build("resnet18", overrides=["device=meta"])
    report = measure(backbone, batch_size=1, height=64, width=64, build_seconds=0.0, title="resnet18")
    assert format_report(report).splitlines()[-1] == (
        "device meta | input 1x3x64x64 | build 0.00 s | forward - (meta device: structure only) | "
        "* = returned output (as: under that key)"
    )


# --- featx-list (featx/cli/catalog.py) --------------------------------------------------------------------------


def _column_starts(line: str) -> List[int]:
    """Where each cell of a featx-list line starts (the cells before notes hold no spaces)."""
    return [match.start() for match in re.finditer(r"\S+", line)]


def _assert_aligned(out: str, rows: int) -> None:
    """``out`` holds ``rows`` rows under the header, each cell up to notes starting where its column's name does."""
    header, *lines = out.splitlines()
    assert len(lines) == rows, out
    starts = _column_starts(header)
    for line in lines:
        assert _column_starts(line)[:6] == starts[:6], f"\n{header}\n{line}"


def test_featx_list_columns_stay_aligned_with_long_names_and_models(tmp_path, capsys):
    """A name over 26 characters (a file of the user's) or a model over 20 (timm_swin_tiny's
    timm:swin_tiny_patch4_window7_224) pushed the rest of its row right of the header's columns."""
    pytest.importorskip("timm")
    (tmp_path / "backbone").mkdir()
    long_name = "a_resnet18_named_beyond_the_name_column"
    (tmp_path / "backbone" / f"{long_name}.yaml").write_text((config_dir() / "backbone" / "resnet18.yaml").read_text())
    catalog.main([long_name, "timm_swin_tiny", "resnet18", "--config-dir", str(tmp_path)])
    out = capsys.readouterr().out
    _assert_aligned(out, 3)
    assert out.splitlines()[1].startswith(f"{long_name}  resnet18 ")


def test_featx_list_timm_columns_stay_aligned_with_long_model_names(capsys):
    """--timm rows of a model name over 26 characters pushed the rest of their row right of the header's columns."""
    pytest.importorskip("timm")
    catalog.main(["--timm", "timm:resnet18", "timm:swin_tiny_patch4_window7_224"])
    out = capsys.readouterr().out
    _assert_aligned(out, 2)
    assert out.splitlines()[2].startswith(
        "timm:swin_tiny_patch4_window7_224  timm:swin_tiny_patch4_window7_224  c2..c5"
    )


def test_featx_list_config_dir_without_backbone_folder_exits_1(tmp_path, capsys):
    """Exit status 2 is for a command line the parser cannot read; a folder without backbone/ exited 2."""
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["--config-dir", str(tmp_path / "nodir")])
    assert exit_info.value.code == 1
    assert (
        capsys.readouterr().err == f"featx-list: error: --config-dir {tmp_path / 'nodir'}: no backbone/ folder in it\n"
    )


def test_featx_list_names_a_backbone_file_that_is_a_fifo(tmp_path, capsys):
    """A FIFO at backbone/pipe.yaml is listed with an error naming it, not taken as missing (nor read, blocking)."""
    (tmp_path / "backbone").mkdir()
    os.mkfifo(tmp_path / "backbone" / "pipe.yaml")
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["pipe", "--config-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    (row,) = capsys.readouterr().out.splitlines()[1:]
    path = tmp_path / "backbone" / "pipe.yaml"
    assert row.split(None, 1) == [
        "pipe",
        f"error: backbone: {path} is not a regular file (a device, fifo or socket), not a spec file; from {path}",
    ]


def test_the_title_says_weights_on_the_meta_device_were_not_loaded(tmp_path):
    """``backbone.device=meta`` (run left true) builds the structure only: the title said ``weights: IMAGENET1K_V1``
    as if they had been loaded."""
    command = [sys.executable, "-m", "featx", "backbone=resnet18", "backbone.device=meta"]
    command += ["backbone.weights=IMAGENET1K_V1", "input.height=64", "input.width=64", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| weights: IMAGENET1K_V1 (not loaded: meta device) |" in done.stdout.splitlines()[0], done.stdout

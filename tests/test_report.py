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
from helpers import run_in_process

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
        f"error: {path} is not a regular file (a device, fifo or socket), not a spec file; from {path}",
    ]


def test_featx_list_composes_a_users_file_as_the_featx_app_does(tmp_path, capsys):
    """A file extending a packaged one (docs/apps.md's ``defaults: [resnet18, _self_]``), which ``featx
    hydra.searchpath=[file://DIR] backbone=NAME`` composes, was listed as an error (featx's reader takes a file on its
    own) and featx-list exited 1; so was a file extending one of another config folder, and one that refers to its
    own value (``${.frozen_stages}``)."""
    mine, base = tmp_path / "mine", tmp_path / "base"
    (mine / "backbone").mkdir(parents=True)
    (base / "backbone").mkdir(parents=True)
    extending = mine / "backbone" / "resnet18_c3.yaml"
    extending.write_text("defaults: [resnet18, _self_]\nout_features: [c2, c3]\n")
    (base / "backbone" / "my_r18.yaml").write_text((config_dir() / "backbone" / "resnet18.yaml").read_text())
    chained = mine / "backbone" / "my_r18_c2.yaml"
    chained.write_text("defaults: [my_r18, _self_]\nout_features: [c2]\nseed: ${.frozen_stages}\n")
    catalog.main(["resnet18_c3", "my_r18_c2", "--config-dir", str(mine), "--config-dir", str(base)])
    captured = capsys.readouterr()
    reference = torchvision.models.resnet18()
    stem = [reference.conv1, reference.bn1, reference.layer1]
    c2 = sum(p.numel() for module in stem for p in module.parameters())
    c3 = c2 + sum(p.numel() for p in reference.layer2.parameters())
    rows = {line.split()[0]: line.split() for line in captured.out.splitlines()[1:]}
    assert rows["resnet18_c3"] == ["resnet18_c3", "resnet18", "c2..c3", "4,8", "64,128", f"{c3 / 1e6:.1f}M"] + [
        "returns", "c2,", "c3;", "from", str(extending)
    ]  # fmt: skip
    assert rows["my_r18_c2"] == ["my_r18_c2", "resnet18", "c2", "4", "64", f"{c2 / 1e6:.1f}M"] + [
        "returns", "c2;", "from", str(chained)
    ]  # fmt: skip
    assert captured.err == "2 backbones\n"


def _make_fifo(path):
    os.mkfifo(path)


@pytest.mark.parametrize(
    ("folder", "name", "pattern"),
    [("a 'b', c", "it's=x", "it*"), ("back\\slash\\", "ends\\", "end*"), ("q\\'", "x\\'y", "x*")],
    ids=["quotes-commas-equals", "trailing-backslashes", "backslash-before-quote"],
)
def test_featx_list_composes_a_file_whose_names_hold_hydras_special_characters(tmp_path, capsys, folder, name, pattern):
    """featx-list gives Hydra a user's folder and backbone name as quoted override values: a quote, a comma, an equals
    sign or a backslash before a quote or at the end, unescaped, would end the value early (another folder or name)
    or make the override unparsable. The file extends a packaged one, which Hydra alone can compose."""
    (tmp_path / folder / "backbone").mkdir(parents=True)
    (tmp_path / folder / "backbone" / f"{name}.yaml").write_text("defaults: [resnet18, _self_]\nout_features: [c2]\n")
    catalog.main(["--config-dir", str(tmp_path / folder), pattern])
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 1 and rows[0].split()[1:4] == ["resnet18", "c2", "4"], rows
    assert rows[0].endswith(f"from {tmp_path / folder / 'backbone' / name}.yaml"), rows


@pytest.mark.parametrize(
    "files, message",
    [
        (
            {"bad.yaml": "defaults: [no_such_backbone, _self_]\n"},
            "In 'backbone/bad': Could not load 'backbone/no_such_backbone'.",
        ),
        (  # Hydra would open the fifo, and wait for a writer for ever
            {"bad.yaml": "defaults: [pipe, _self_]\n", "pipe.yaml": _make_fifo},
            "{folder}/pipe.yaml is not a regular file (a device, fifo or socket), not a spec file",
        ),
        (  # OmegaConf takes 2 as true as Hydra composes
            {"bad.yaml": "defaults: [resnet18, _self_]\nchannels_last: 2\n"},
            "{folder}/bad.yaml: backbone.channels_last: must be true or false, got 2",
        ),
        (
            {"bad.yaml": "defaults: [resnet18, _self_]\nout_features: [c9]\n"},
            "backbone.out_features[0]: unknown stage 'c9' (stages: c2, c3, c4, c5)",
        ),
        (  # Hydra's own code raises a ValueError
            {"bad.yaml": "defaults: 5\n"},
            "ValueError: Invalid defaults list in 'backbone/bad', defaults must be a list (got int)",
        ),
    ],
    ids=["missing default", "fifo default", "flag", "stage", "defaults not a list"],
)
def test_featx_list_names_what_the_featx_app_refuses_in_a_users_file(files, message, tmp_path, capsys):
    """A file of the user's that Hydra cannot compose, or that the app refuses, is one row with featx's error (the
    app's own words), never a traceback or a wait, and the exit status is 1."""
    folder = tmp_path / "backbone"
    folder.mkdir()
    for name, content in files.items():
        content(folder / name) if callable(content) else (folder / name).write_text(content)
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["bad", "--config-dir", str(tmp_path)])
    assert exit_info.value.code == 1
    captured = capsys.readouterr()
    (row,) = captured.out.splitlines()[1:]
    assert row.split(None, 1) == ["bad", f"error: {message.format(folder=folder)}; from {folder / 'bad.yaml'}"]
    assert captured.err == "1 backbone, 1 failed to plan\n"
    app = run_in_process("featx", [f"hydra.searchpath=[file://{tmp_path}]", "backbone=bad", "run=false"], tmp_path)
    assert app.returncode == 1
    assert app.stderr.startswith(f"featx: error: {message.format(folder=folder)}")


def test_featx_list_refuses_config_dir_with_timm(capsys):
    """``--timm`` lists timm's models: a ``--config-dir`` beside it was ignored, even one that does not exist."""
    with pytest.raises(SystemExit) as exit_info:
        catalog.main(["--timm", "--config-dir", "nonexist", "resnet18"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "featx-list: error: --config-dir: --timm lists timm's models, not config files; give one of --timm and "
        "--config-dir\n"
    )


def test_featx_list_counts_one_timm_model_in_the_singular(capsys):
    """The count line said ``1 timm models``."""
    pytest.importorskip("timm")
    catalog.main(["--timm", "timm:resnet18"])
    assert capsys.readouterr().err == "1 timm model\n"


def test_the_title_says_weights_on_the_meta_device_were_not_loaded(tmp_path):
    """``backbone.device=meta`` (run left true) builds the structure only: the title said ``weights: IMAGENET1K_V1``
    as if they had been loaded."""
    command = [sys.executable, "-m", "featx", "backbone=resnet18", "backbone.device=meta"]
    command += ["backbone.weights=IMAGENET1K_V1", "input.height=64", "input.width=64", f"hydra.run.dir={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| weights: IMAGENET1K_V1 (not loaded: meta device) |" in done.stdout.splitlines()[0], done.stdout

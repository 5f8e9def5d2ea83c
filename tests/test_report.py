"""The app's table (featx/cli/report.py): what each row says it covers matches what it counts."""

from __future__ import annotations

import torchvision

import featx
from featx.cli.report import format_report, measure


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

"""A built backbone traces, exports and compiles, with outputs equal to eager."""

from __future__ import annotations

import pytest
import torch

import featx

from conftest import resnet18_spec

SPECS = {
    "plain": resnet18_spec(),
    "fpn": resnet18_spec(fpn={"out_channels": 16, "extra_blocks": "p6p7"}),
}


def _assert_same(eager, other):
    assert list(eager) == list(other)
    for name in eager:
        torch.testing.assert_close(other[name], eager[name], rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("kind", list(SPECS))
def test_torch_jit_trace_matches_eager(kind):
    backbone = featx.build(SPECS[kind]).eval()
    x = torch.randn(1, 3, 64, 64)
    traced = torch.jit.trace(backbone, x, strict=False)
    with torch.inference_mode():
        _assert_same(backbone(x), traced(x))


@pytest.mark.parametrize("kind", list(SPECS))
def test_torch_export_matches_eager(kind):
    backbone = featx.build(SPECS[kind]).eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(backbone, (x,)).module()
    with torch.inference_mode():
        _assert_same(backbone(x), exported(x))


@pytest.mark.slow
def test_torch_compile_matches_eager():
    backbone = featx.build(SPECS["fpn"]).eval()
    x = torch.randn(1, 3, 64, 64)
    compiled = torch.compile(backbone)
    with torch.no_grad():
        _assert_same(backbone(x), compiled(x))

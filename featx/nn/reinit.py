"""Re-initialising layers for fine-tuning: convs and linears (attention's query/key/value projections included) to
N(0, 0.01) with zero bias, norm layers to their initial state (identity: BatchNorm, LayerNorm, GroupNorm, RMSNorm,
InstanceNorm, torchvision's FrozenBatchNorm2d, timm's norm layers; ConvNeXt-V2's GlobalResponseNorm to zero). Parameters
of other kinds keep their values: a ConvNeXt block's layer scale, Swin's relative position bias tables and logit
scales, a token model's class token and position embedding.

Example::

    reinit_(backbone.stages["c5"])
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.modules.conv import _ConvNd
from torchvision.ops.misc import FrozenBatchNorm2d

WEIGHT_STD = 0.01


def _is_other_norm(layer: nn.Module) -> bool:
    """A norm layer of another library (timm's RmsNorm2d, EvoNorm2d, ...) that restores its init itself: its class
    is named as a norm and has ``reset_parameters``."""
    return "Norm" in type(layer).__name__ and callable(getattr(layer, "reset_parameters", None))


def reinit_(module: nn.Module) -> None:
    """Re-initialise every conv, linear, attention projection and norm layer below ``module`` in place."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (_ConvNd, nn.Linear)) or type(layer).__name__ == "CondConv2d":
                conv: Any = layer  # timm's CondConv2d (one kernel per expert) is a plain nn.Module
                conv.weight.normal_(0.0, WEIGHT_STD)
                if conv.bias is not None:
                    conv.bias.zero_()
            elif isinstance(layer, nn.MultiheadAttention):  # its query/key/value projection, a linear held as tensors
                for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                    weight = getattr(layer, name)
                    if weight is not None:
                        weight.normal_(0.0, WEIGHT_STD)
                for name in ("in_proj_bias", "bias_k", "bias_v"):
                    bias = getattr(layer, name)
                    if bias is not None:
                        bias.zero_()  # out_proj is an nn.Linear, met on its own
            elif isinstance(layer, _NormBase):
                # the class's method: a layer featx keeps in eval has a no-op reset_running_stats of its own (for
                # update_bn, see featx.nn.freezing.pin_kept_layers), also one pickled by an earlier featx
                type(layer).reset_running_stats(layer)  # mean 0, variance 1
                layer.reset_parameters()  # weight 1, bias 0
            elif isinstance(layer, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or _is_other_norm(layer):
                cast(Any, layer).reset_parameters()  # weight 1, bias 0
            elif type(layer).__name__ == "GlobalResponseNorm":  # timm's (ConvNeXt-V2): x + weight * N(x) + bias
                for parameter in layer.parameters(recurse=False):
                    parameter.zero_()
            elif isinstance(layer, FrozenBatchNorm2d):
                layer.weight.fill_(1.0)
                layer.bias.zero_()
                layer.running_mean.zero_()
                layer.running_var.fill_(1.0)

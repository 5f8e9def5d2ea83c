"""Re-initialising layers for fine-tuning: convs and linears to N(0, 0.01) with zero bias, norm layers to identity.

Example::

    reinit_(backbone.stages["c5"])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torchvision.ops.misc import FrozenBatchNorm2d

WEIGHT_STD = 0.01


def reinit_(module: nn.Module) -> None:
    """Re-initialise every conv, linear and norm layer below ``module`` in place."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (_ConvNd, nn.Linear)):
                layer.weight.normal_(0.0, WEIGHT_STD)
                if layer.bias is not None:
                    layer.bias.zero_()
            elif isinstance(layer, (_BatchNorm, nn.LayerNorm, nn.GroupNorm)):
                layer.reset_parameters()  # weight 1, bias 0 (and running statistics 0 / 1)
            elif isinstance(layer, FrozenBatchNorm2d):
                layer.weight.fill_(1.0)
                layer.bias.zero_()
                layer.running_mean.zero_()
                layer.running_var.fill_(1.0)

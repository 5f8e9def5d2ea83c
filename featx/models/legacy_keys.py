"""The key names of torchvision's own published weights files where they predate its modules' current names.

torchvision renames them when it loads its weights: DenseNet's builder rewrites ``denselayer1.norm.1.weight`` to
``denselayer1.norm1.weight`` (its ``_DenseLayer`` once named its layers ``norm.1``; the published files keep
those names), and ViT's ``MLPBlock`` loads ``mlp.linear_1``/``mlp.linear_2`` as ``mlp.0``/``mlp.3`` (the block was an
``MLP`` later). featx reads the tensors itself, so it renames the same keys, and only those, before fitting them.

Example::

    current_keys("densenet121", {"features.denseblock1.denselayer1.norm.1.weight": w})
    # {"features.denseblock1.denselayer1.norm1.weight": w}
"""

from __future__ import annotations

import re
from typing import Dict, Mapping, Pattern, Tuple, TypeVar

from featx.models.timm_models import is_timm_model

Value = TypeVar("Value")

#: (torchvision model name prefix, legacy key pattern, replacement): DenseNet's dotted layer names, ViT's MLP
_RENAMES: Tuple[Tuple[str, Pattern[str], str], ...] = (
    (
        "densenet",
        re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.([12]\.(?:weight|bias|running_mean|running_var))$"),
        r"\1\2",
    ),
    ("vit_", re.compile(r"^(.*\.mlp\.)linear_1\.(weight|bias)$"), r"\g<1>0.\2"),
    ("vit_", re.compile(r"^(.*\.mlp\.)linear_2\.(weight|bias)$"), r"\g<1>3.\2"),
)


def current_keys(model: str, state: Mapping[str, Value]) -> Dict[str, Value]:
    """``state`` with the legacy keys of torchvision's published ``model`` files renamed as torchvision renames them
    on loading; a key whose current name is in ``state`` too is left as it is (the fit check then names it)."""
    renames = [(pattern, replacement) for prefix, pattern, replacement in _RENAMES if model.startswith(prefix)]
    if is_timm_model(model) or not renames:
        return dict(state)
    renamed: Dict[str, Value] = {}
    for key, value in state.items():
        new = next((pattern.sub(replacement, key) for pattern, replacement in renames if pattern.match(key)), key)
        renamed[new if new not in state else key] = value
    return renamed

"""Token models as backbones: the patch embedding that starts a plain ViT's token sequence, and the conversion of a
stage's tokens back into a feature map.

:class:`TokenEmbedding` runs the model's own patch embedding, flattens the patch map into tokens, puts the prefix
tokens (class, distillation, register tokens) in front and adds the position embedding, resampled bicubically
when the input's patch grid differs from the one the embedding was made for. :func:`tokens_to_map` drops the
prefix tokens and lays the rest out on the patch grid.

Example::

    vit = torchvision.models.vit_b_16()
    embedding = TokenEmbedding(vit.conv_proj, [vit.class_token], vit.encoder.pos_embedding, grid=(14, 14))
    tokens = vit.encoder.layers(embedding(torch.randn(1, 3, 320, 256)))      # 1 x (1 + 20*16) x 768
    tokens_to_map(tokens, (20, 16)).shape                                     # (1, 768, 20, 16)
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional

Grid = Tuple[int, int]


def resample_position(
    position: Tensor, prefix_count: int, grid: Grid, new_grid: Grid, like: str = "torchvision"
) -> Tensor:
    """``position`` (``1×(prefix_count + h·w)×C`` for ``grid`` = (h, w)) for ``new_grid``: the prefix entries
    kept, the grid entries resampled bicubically as the library ``like`` does: ``torchvision`` with corners aligned
    (its ``interpolate_embeddings``), ``timm`` antialiased without (its ``resample_abs_pos_embed``).

    There is no shortcut for ``new_grid == grid``: torch's resampling copies the values exactly then, and without a
    branch on the size an exported program stays valid for every input size."""
    channels = position.shape[-1]
    prefix, patches = position[:, :prefix_count], position[:, prefix_count:]
    patches = patches.reshape(1, grid[0], grid[1], channels).permute(0, 3, 1, 2)
    if like == "timm":  # in float32 and back, as timm does (no antialiased bicubic kernel for half types)
        resampled = functional.interpolate(patches.float(), size=new_grid, mode="bicubic", antialias=True)
        patches = resampled.to(patches.dtype)
    else:
        patches = functional.interpolate(patches, size=new_grid, mode="bicubic", align_corners=True)
    patches = patches.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], channels)
    return torch.cat([prefix, patches], dim=1)


class TokenEmbedding(nn.Module):
    """Image → token sequence: ``embed`` (the model's patch embedding, returning ``N×C×h×w``), flattened to ``h·w``
    tokens, the ``prefix`` parameters (each ``1×k×C``) put in front, ``position`` added. With
    ``returns_tokens`` the embedding puts the channels last (as timm's ``PatchEmbed``): it returns the ``N×h·w×C``
    tokens itself (row-major), their grid the input size over the patch stride ``resize[0]``, or the ``N×h×w×C``
    map (``dynamic_img_size``), flattened row-major into them as timm's own forward does.

    ``grid`` is the patch grid ``position`` was made for; other grids get it resampled
    (:func:`resample_position`) as the library the model's class comes from (``resample_like``) does.
    ``position_covers_prefix`` says whether ``position`` has entries for the prefix tokens (added after they are put
    in front: torchvision's ViT) or only for the patches (added before).
    ``resize = (patch, stride)`` resizes the image by ``patch / stride`` first (bilinear, antialiased), so a
    patch-``patch`` embedding covers ``stride`` input pixels.
    """

    def __init__(
        self,
        embed: nn.Module,
        prefix: Sequence[nn.Parameter],
        position: Optional[nn.Parameter],
        grid: Grid,
        position_covers_prefix: bool = True,
        resize: Optional[Tuple[int, int]] = None,
        returns_tokens: bool = False,
        resample_like: str = "torchvision",
    ) -> None:
        super().__init__()
        self.resample_like = resample_like
        if returns_tokens and resize is None:
            raise ValueError("an embedding that returns tokens needs resize=(patch, stride) for its grid")
        self.returns_tokens = returns_tokens
        self.embed_patch = resize[0] if resize is not None else None
        self.resize = resize if resize is not None and resize[0] != resize[1] else None
        self.embed = embed
        self.prefix = nn.ParameterList(prefix)
        self.position = position
        self.grid = (int(grid[0]), int(grid[1]))
        self.position_covers_prefix = position_covers_prefix
        self.prefix_count = sum(int(token.shape[1]) for token in prefix)

    def _position(self, grid: Grid) -> Tensor:
        assert self.position is not None
        covered = self.prefix_count if self.position_covers_prefix else 0
        return resample_position(self.position, covered, self.grid, grid, self.resample_like)

    def forward(self, x: Tensor) -> Tensor:
        if self.resize is not None:
            patch, stride = self.resize
            size = (x.shape[2] * patch // stride, x.shape[3] * patch // stride)
            x = functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self.returns_tokens:
            assert self.embed_patch is not None
            tokens = self.embed(x)
            if tokens.dim() == 4:  # N×h×w×C
                batch, height, width = tokens.shape[:3]
                tokens = tokens.flatten(1, 2)
            else:
                batch, height, width = tokens.shape[0], x.shape[2] // self.embed_patch, x.shape[3] // self.embed_patch
        else:
            patches = self.embed(x)
            batch, _, height, width = patches.shape
            tokens = patches.flatten(2).transpose(1, 2)
        if self.position is not None and not self.position_covers_prefix:
            tokens = tokens + self._position((height, width))
        if len(self.prefix):
            tokens = torch.cat([*(token.expand(batch, -1, -1) for token in self.prefix), tokens], dim=1)
        if self.position is not None and self.position_covers_prefix:
            tokens = tokens + self._position((height, width))
        return tokens


def tokens_to_map(tokens: Tensor, grid: Grid) -> Tensor:
    """``N×L×C`` tokens → the ``N×C×h×w`` map of their last ``h·w`` (the patch tokens; the prefix is dropped)."""
    batch, _, channels = tokens.shape
    patches = tokens[:, tokens.shape[1] - grid[0] * grid[1] :]
    return patches.transpose(1, 2).reshape(batch, channels, grid[0], grid[1])

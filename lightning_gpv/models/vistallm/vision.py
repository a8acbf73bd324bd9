"""The image encoder: a timm ``Eva`` trunk (EVA-CLIP through open_clip), read at an intermediate block.

open_clip's ``EVA01-g-14`` vision tower is a ``TimmModel`` around timm's ``eva_giant_patch14_224``; this
module builds the same timm class with explicit dimensions (tiny ones for tests, the giant ones under
``torch.device("meta")`` to count parameters) and takes pretrained weights from open_clip when asked.
Blocks after the feature layer, the final norm and the head are pruned: they never influence the output.
"""

from __future__ import annotations

import timm
import torch
from torch import nn


def build_eva_trunk(
    *,
    timm_name: str,
    image_size: int,
    patch_size: int,
    width: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
) -> nn.Module:
    """A randomly initialised timm ``Eva`` trunk without classification head.

    Args:
        timm_name: timm architecture (``"eva_giant_patch14_224"``); the other arguments override it.
        image_size: Input side in pixels.
        patch_size: Patch side in pixels.
        width: Token width.
        depth: Number of blocks.
        num_heads: Attention heads.
        mlp_ratio: MLP width over ``width``.
    """
    return timm.create_model(
        timm_name,
        pretrained=False,
        img_size=image_size,
        patch_size=patch_size,
        embed_dim=width,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        num_classes=0,
    )


def sincos_position_table(grid: int, width: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings of a ``grid x grid`` patch grid, unit amplitude.

    A quarter of the channels each hold ``sin(x f)``, ``cos(x f)``, ``sin(y f)``, ``cos(y f)`` with
    frequencies ``f = 100^(-k / (width / 4))``; extra channels (``width`` not divisible by 4) are zero.

    Returns:
        ``(grid * grid, width)`` table, row-major over the grid (the order of timm's patch tokens).
    """
    quarter = width // 4
    ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    freq = 100.0 ** (-torch.arange(quarter, dtype=torch.float32) / max(quarter, 1))
    x = xs.reshape(-1, 1).float() * freq
    y = ys.reshape(-1, 1).float() * freq
    table = torch.zeros(grid * grid, width)
    table[:, : 4 * quarter] = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
    return table


@torch.no_grad()
def use_sincos_positions(trunk: nn.Module) -> None:
    """Replace a trunk's learned patch position embeddings by :func:`sincos_position_table`.

    Randomly initialised, frozen encoders (tiny configs) need it: timm's learned table starts at std 0.02,
    about 3% of the patch features, and a frozen encoder never makes it larger, so the QFormer gets almost
    no position signal to localise objects with. Prefix (CLS) positions are set to zero.
    """
    pos = trunk.pos_embed
    if pos is None:
        raise ValueError("the trunk has no absolute position embedding")
    grid_h, grid_w = trunk.patch_embed.grid_size
    if grid_h != grid_w:
        raise ValueError(f"sin-cos positions need a square patch grid, got {grid_h} x {grid_w}")
    prefix = pos.shape[1] - grid_h * grid_w
    pos.zero_()
    pos[0, prefix:] = sincos_position_table(grid_h, pos.shape[2]).to(pos.dtype)


def load_open_clip_trunk(model_name: str, pretrained: str) -> nn.Module:
    """The pretrained timm trunk of an open_clip timm-backed vision tower (downloads on first use).

    Args:
        model_name: open_clip model name, e.g. ``"EVA01-g-14"``.
        pretrained: open_clip pretrained tag, e.g. ``"laion400m_s11b_b41k"``.
    """
    import open_clip

    clip = open_clip.create_model(model_name, pretrained=pretrained)
    trunk = getattr(clip.visual, "trunk", None)
    if trunk is None:
        raise ValueError(f"open_clip model {model_name!r} has no timm trunk (not a timm-backed tower)")
    return trunk


class EvaFeatures(nn.Module):
    """Token features of one intermediate block of an ``Eva`` trunk.

    Args:
        trunk: A timm ``Eva`` model (see :func:`build_eva_trunk`, :func:`load_open_clip_trunk`).
        feature_index: 0-based block whose output is returned; later blocks are pruned.
        keep_prefix_tokens: Prepend the CLS token to the patch tokens.
    """

    def __init__(self, trunk: nn.Module, *, feature_index: int, keep_prefix_tokens: bool) -> None:
        super().__init__()
        depth = len(trunk.blocks)
        if not 0 <= feature_index < depth:
            raise ValueError(f"feature_index {feature_index} out of range for {depth} blocks")
        trunk.prune_intermediate_layers([feature_index], prune_norm=True, prune_head=True)
        self.trunk = trunk
        self.feature_index = feature_index
        self.keep_prefix_tokens = keep_prefix_tokens
        self.width = int(trunk.embed_dim)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass (only matters when the trunk trains)."""
        self.trunk.set_grad_checkpointing(enable)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Encode images.

        Args:
            pixel_values: ``(N, 3, S, S)`` normalised images.

        Returns:
            ``(N, P, D_v)`` tokens of block ``feature_index`` before any norm: ``P = (S / patch)^2``, plus 1
            with the CLS token first when ``keep_prefix_tokens``.
        """
        (out,) = self.trunk.forward_intermediates(
            pixel_values,
            indices=[self.feature_index],
            return_prefix_tokens=True,
            norm=False,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        patches, prefix = out
        return torch.cat([prefix, patches], dim=1) if self.keep_prefix_tokens else patches

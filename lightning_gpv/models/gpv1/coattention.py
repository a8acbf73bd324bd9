"""ViLBERT co-attention (Lu et al. 2019) as GPV-1 uses it: bi-directional cross-attention only.

Each layer lets the text stream attend to the regions and the regions attend to the text (each stream
has its own query projection, the other stream supplies keys and values), then per stream:
residual + layer norm, feed-forward (GELU) with residual + layer norm. There is no intra-modal
self-attention (the reference uses ViLBERT's ``BertConnectionLayer`` alone).

Padding: the query's padding tokens are masked out as keys when the regions attend to the text. The
reference passes no mask, so its regions also attend to ``[PAD]`` tokens and a sample's output depends
on the longest query in its batch; ``mask_text_padding=False`` reproduces that.
"""

from __future__ import annotations

import torch
from torch import nn

_LN_EPS = 1e-12  # BERT's layer-norm epsilon


class _FeedForward(nn.Module):
    def __init__(self, hidden: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=_LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.fc2(nn.functional.gelu(self.fc1(x)))))


class _CrossAttention(nn.Module):
    """Queries from one stream, keys/values from the other, then dropout + residual + layer norm."""

    def __init__(self, hidden: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=_LN_EPS)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, key_padding_mask: torch.Tensor | None
    ) -> torch.Tensor:
        out, _ = self.attn(queries, keys, keys, key_padding_mask=key_padding_mask, need_weights=False)
        return self.norm(queries + self.dropout(out))


class CoAttentionLayer(nn.Module):
    """One co-attention layer over a text stream and a region stream of the same width.

    Args:
        hidden: Width of both streams.
        num_heads: Attention heads.
        ffn_dim: Feed-forward width of each stream.
        dropout: Dropout on attention weights and residual branches.
    """

    def __init__(self, hidden: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.text_from_regions = _CrossAttention(hidden, num_heads, dropout)
        self.regions_from_text = _CrossAttention(hidden, num_heads, dropout)
        self.text_ffn = _FeedForward(hidden, ffn_dim, dropout)
        self.region_ffn = _FeedForward(hidden, ffn_dim, dropout)

    def forward(
        self,
        text: torch.Tensor,
        regions: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attend both ways (both from the layer's inputs), then the feed-forward blocks.

        Args:
            text: ``(B, T, hidden)`` query tokens.
            regions: ``(B, R, hidden)`` region descriptors.
            text_padding_mask: ``(B, T)`` bool, True on padding tokens (masked as keys); None = no mask.

        Returns:
            ``(text, regions)`` with the input shapes.
        """
        new_text = self.text_from_regions(text, regions, None)
        new_regions = self.regions_from_text(regions, text, text_padding_mask)
        return self.text_ffn(new_text), self.region_ffn(new_regions)


class CoAttention(nn.Module):
    """A stack of :class:`CoAttentionLayer` with independent weights (3 layers in the paper)."""

    def __init__(self, hidden: int, num_layers: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CoAttentionLayer(hidden, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )

    def forward(
        self,
        text: torch.Tensor,
        regions: torch.Tensor,
        text_padding_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Co-attended ``(text (B, T, hidden), regions (B, R, hidden))``; see ``CoAttentionLayer``."""
        for layer in self.layers:
            text, regions = layer(text, regions, text_padding_mask)
        return text, regions

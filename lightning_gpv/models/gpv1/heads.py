"""GPV-1's relatedness head, relevance, and relevance conditioning.

* Relatedness: ``Linear(hidden, 2)`` on the co-attended regions: is the region related to the task?
* Relevance logits = DETR objectness logits + relatedness logits (summed as logits, as the reference);
  the relevance score of a box is ``softmax(relevance_logits)[..., 0]``. Index 0 = relevant/object,
  index 1 = not relevant (DETR's no-object class). The paper's text says "sigmoid"; a 2-way softmax over
  these logits is the sigmoid of their difference.
* Relevance conditioning: learned vectors ``v_rel`` and ``v_nrel`` weighted by the (not detached)
  relevance probabilities are added to the co-attended regions before the text decoder, so that text
  supervision reaches the relatedness and objectness heads. Paper Table 5 ablates it.
"""

from __future__ import annotations

import torch
from torch import nn

RELEVANT, NOT_RELEVANT = 0, 1


class RelatednessHead(nn.Module):
    """``(B, R, hidden)`` co-attended regions -> ``(B, R, 2)`` relatedness logits."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, 2)

    def forward(self, regions: torch.Tensor) -> torch.Tensor:
        return self.proj(regions)


def relevance_scores(relevance_logits: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` relevance logits -> ``(...)`` probability that each box is relevant."""
    return relevance_logits.float().softmax(dim=-1)[..., RELEVANT]


class RelevanceConditioning(nn.Module):
    """Adds ``p_rel * v_rel + p_nrel * v_nrel`` to each region (``v`` learned, initialized ``0.1 * N(0, 1)``).

    Args:
        hidden: Region width.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(0.1 * torch.randn(2, hidden))

    def forward(self, regions: torch.Tensor, relevance_logits: torch.Tensor) -> torch.Tensor:
        """Condition ``(B, R, hidden)`` regions on ``(B, R, 2)`` relevance logits (same shape out)."""
        probs = relevance_logits.softmax(dim=-1).to(regions.dtype)
        return regions + probs @ self.tokens.to(regions.dtype)

"""VistaLLM's answer loss: next-token cross-entropy, optionally with Gaussian soft targets on coordinates.

The paper trains with plain cross-entropy: a coordinate token one bin off the target costs as much as one
on the other side of the image. With ``coord_label_sigma > 0`` every answer token that is a coordinate bin
``b`` gets the soft target ``q_k ∝ exp(-(k - b)² / (2 σ²))`` over the coordinate tokens ``k`` instead
(ordinal label smoothing), which tells a from-scratch model which wrong bins are nearly right. Other answer
tokens keep their one-hot target.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
"""Label of tokens outside the loss (prompt, visual tokens, padding)."""


def coordinate_soft_targets(bins: torch.Tensor, num_bins: int, sigma: float) -> torch.Tensor:
    """Gaussian soft targets over ``num_bins`` bins centred on ``bins``.

    Args:
        bins: ``(N,)`` integer bins in ``[0, num_bins)``.
        num_bins: Coordinate bins.
        sigma: Standard deviation in bins (> 0).

    Returns:
        ``(N, num_bins)`` float32 rows summing to 1 (truncated at the ends of the bin range).
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    k = torch.arange(num_bins, device=bins.device, dtype=torch.float32)
    distance = k[None, :] - bins.to(torch.float32)[:, None]
    return torch.softmax(-(distance**2) / (2.0 * sigma**2), dim=-1)


def answer_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    coord_token_ids: torch.Tensor | None = None,
    coord_label_sigma: float = 0.0,
) -> torch.Tensor:
    """Mean loss over the answer tokens.

    Args:
        logits: ``(N, V)`` next-token logits (any float dtype; computed in float32).
        targets: ``(N,)`` token ids, ``IGNORE_INDEX`` outside the answer.
        coord_token_ids: ``(num_bins,)`` vocabulary ids of the coordinate tokens in bin order; needed
            when ``coord_label_sigma > 0``.
        coord_label_sigma: Standard deviation, in bins, of the soft targets of coordinate tokens; 0 is the
            plain cross-entropy of the paper.

    Returns:
        Scalar: the cross-entropy of every answer token against its (soft) target, averaged over the
        answer tokens (NaN when there are none, as ``F.cross_entropy``).
    """
    logits = logits.float()
    if coord_label_sigma <= 0:
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    if coord_token_ids is None:
        raise ValueError("coord_label_sigma > 0 needs coord_token_ids")
    keep = targets != IGNORE_INDEX
    logits, targets = logits[keep], targets[keep]
    log_p = logits.log_softmax(dim=-1)
    loss = -log_p.gather(1, targets[:, None]).squeeze(1)
    ids = coord_token_ids.to(targets.device)
    # bin of each target token, -1 when it is not a coordinate
    bin_of = torch.full((log_p.shape[-1],), -1, dtype=torch.long, device=targets.device)
    bin_of[ids] = torch.arange(ids.numel(), device=targets.device)
    bins = bin_of[targets]
    soft = coordinate_soft_targets(bins.clamp(min=0), ids.numel(), coord_label_sigma)
    coord_loss = -(soft * log_p[:, ids]).sum(dim=-1)
    return torch.where(bins >= 0, coord_loss, loss).mean()

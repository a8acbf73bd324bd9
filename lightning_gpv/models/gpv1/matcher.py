"""DETR's Hungarian matcher, for GPV-1's binary relevance classes.

The cost of assigning prediction ``i`` to ground-truth box ``j`` is

    cost_class * (-p_i(relevant)) + cost_bbox * L1(b_i, g_j) + cost_giou * (-GIoU(b_i, g_j)),

with boxes in normalized ``cxcywh`` for L1 and ``xyxy`` for GIoU; the assignment minimizing the total
cost is found per image by :func:`scipy.optimize.linear_sum_assignment`. GPV-1 uses the costs 1, 5, 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from scipy.optimize import linear_sum_assignment

from lightning_gpv.geometry.boxes import box_convert, generalized_box_iou
from lightning_gpv.models.gpv1.heads import RELEVANT


@dataclass(frozen=True)
class HungarianMatcher:
    """One-to-one matching of predicted to ground-truth boxes.

    Attributes:
        cost_class: Weight of ``-p(relevant)``.
        cost_bbox: Weight of the L1 distance of normalized ``cxcywh`` boxes.
        cost_giou: Weight of ``-GIoU``.
    """

    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0

    @torch.no_grad()
    def __call__(
        self, logits: torch.Tensor, boxes: torch.Tensor, targets: list[torch.Tensor]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match each image's predictions to its ground truth.

        Args:
            logits: ``(B, R, 2)`` relevance logits (index 0 = relevant).
            boxes: ``(B, R, 4)`` predicted normalized ``cxcywh`` boxes.
            targets: ``B`` tensors of shape ``(k_b, 4)``, ground truth in normalized ``cxcywh``
                (``k_b`` may be 0).

        Returns:
            ``B`` pairs ``(pred_idx, target_idx)`` of int64 tensors of length ``min(R, k_b)``, on the CPU;
            ``pred_idx`` is sorted.
        """
        if len(targets) != logits.shape[0]:
            raise ValueError(f"{len(targets)} target sets for a batch of {logits.shape[0]}")
        prob = logits.float().softmax(-1)[..., RELEVANT]
        out = []
        for b, tgt in enumerate(targets):
            if len(tgt) == 0:
                empty = torch.zeros(0, dtype=torch.long)
                out.append((empty, empty))
                continue
            pred, tgt = boxes[b].float(), tgt.to(boxes.device).float()
            cost = (
                self.cost_bbox * torch.cdist(pred, tgt, p=1)
                - self.cost_class * prob[b][:, None]
                - self.cost_giou
                * generalized_box_iou(box_convert(pred, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
        return out

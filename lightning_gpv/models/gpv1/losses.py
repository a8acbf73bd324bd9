"""GPV-1's training losses: DETR's Hungarian loss on box samples, per-task text NLL on text samples.

Total loss = ``sum_task text_weight[task] * text_loss[task]`` + ``weight_ce * loss_ce`` +
``weight_bbox * loss_bbox`` + ``weight_giou * loss_giou``, each term over the samples of the batch that
have that kind of target:

* Text (captioning, VQA, classification): per sample, the sum over answer tokens of the NLL of the next
  token (teacher forcing); per task, the mean over that task's samples. Captioning is weighted 0.05
  (= 1/20, its answers are about 20 words long), other tasks 1. ``__pad__`` targets are ignored (the
  reference counted them: ``ignore_padding=False`` reproduces that).
* Boxes (localization, referring expressions): predictions are matched to ground truth by
  :class:`~lightning_gpv.models.gpv1.matcher.HungarianMatcher`; ``loss_ce`` is the cross-entropy of the
  relevance logits over all queries of those samples (matched = relevant, others = not relevant,
  weighted 0.1); ``loss_bbox`` (L1 of normalized ``cxcywh``) and ``loss_giou`` (``1 - GIoU``) are summed
  over matched pairs and divided by the number of ground-truth boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lightning_gpv.geometry.boxes import box_convert, generalized_box_iou
from lightning_gpv.models.gpv1.heads import NOT_RELEVANT, RELEVANT
from lightning_gpv.models.gpv1.matcher import HungarianMatcher
from lightning_gpv.models.gpv1.vocab import PAD_ID


@dataclass
class GPV1LossConfig:
    """Loss weights and matcher costs (the paper's values as defaults).

    Attributes:
        cost_class: Matcher weight of ``-p(relevant)``.
        cost_bbox: Matcher weight of the L1 box distance.
        cost_giou: Matcher weight of ``-GIoU``.
        weight_ce: Weight of the relevance cross-entropy.
        weight_bbox: Weight of the L1 box loss.
        weight_giou: Weight of the GIoU loss.
        no_object_weight: Cross-entropy weight of the not-relevant class (DETR's ``eos_coef``).
        text_weights: Text-loss weight per task name; tasks not listed get 1.
        ignore_padding: Leave ``__pad__`` targets out of the text loss.
    """

    cost_class: float = 1.0
    cost_bbox: float = 5.0
    cost_giou: float = 2.0
    weight_ce: float = 1.0
    weight_bbox: float = 5.0
    weight_giou: float = 2.0
    no_object_weight: float = 0.1
    text_weights: dict[str, float] = field(default_factory=lambda: {"captioning": 0.05})
    ignore_padding: bool = True


def text_nll(logits: torch.Tensor, answer_ids: torch.Tensor, *, ignore_padding: bool = True) -> torch.Tensor:
    """Per-sample answer NLL, summed over tokens.

    Args:
        logits: ``(B, L, V)`` decoder logits for inputs ``answer_ids`` (position ``t`` predicts ``t+1``).
        answer_ids: ``(B, L)`` ``[__cls__, words..., __stop__, __pad__...]``.
        ignore_padding: Leave out positions whose target is ``__pad__``.

    Returns:
        ``(B,)`` float32.
    """
    targets = answer_ids[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    if ignore_padding:
        nll = nll.masked_fill(targets == PAD_ID, 0.0)
    return nll.sum(dim=1)


def localization_losses(
    logits: torch.Tensor,
    boxes: torch.Tensor,
    targets: list[torch.Tensor],
    matcher: HungarianMatcher,
    no_object_weight: float = 0.1,
) -> dict[str, torch.Tensor]:
    """DETR's Hungarian loss (no auxiliary losses).

    Args:
        logits: ``(N, R, 2)`` relevance logits of the box samples.
        boxes: ``(N, R, 4)`` predicted normalized ``cxcywh``.
        targets: ``N`` tensors ``(k, 4)`` of ground truth in normalized ``cxcywh``.
        matcher: The Hungarian matcher.
        no_object_weight: Cross-entropy weight of the not-relevant class.

    Returns:
        ``{"loss_ce", "loss_bbox", "loss_giou"}`` scalars.
    """
    indices = matcher(logits, boxes, targets)
    classes = torch.full(logits.shape[:2], NOT_RELEVANT, dtype=torch.long, device=logits.device)
    batch_idx = torch.cat([torch.full_like(p, b) for b, (p, _) in enumerate(indices)]).to(logits.device)
    pred_idx = torch.cat([p for p, _ in indices]).to(logits.device)
    classes[batch_idx, pred_idx] = RELEVANT
    class_weight = logits.new_ones(2, dtype=torch.float32)
    class_weight[NOT_RELEVANT] = no_object_weight
    loss_ce = F.cross_entropy(logits.float().transpose(1, 2), classes, weight=class_weight)
    num_boxes = max(sum(len(t) for t in targets), 1)
    matched_pred = boxes[batch_idx, pred_idx].float()
    matched_tgt = torch.cat([t.to(boxes.device)[j] for t, (_, j) in zip(targets, indices)]).float()
    loss_bbox = F.l1_loss(matched_pred, matched_tgt, reduction="sum") / num_boxes
    giou = generalized_box_iou(
        box_convert(matched_pred, "cxcywh", "xyxy"), box_convert(matched_tgt, "cxcywh", "xyxy")
    )
    loss_giou = (1 - torch.diagonal(giou)).sum() / num_boxes
    return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


class GPV1Criterion:
    """Combines the text and box losses of a batch that mixes tasks.

    Args:
        config: Weights and costs.
    """

    def __init__(self, config: GPV1LossConfig | None = None) -> None:
        self.config = config or GPV1LossConfig()
        c = self.config
        self.matcher = HungarianMatcher(c.cost_class, c.cost_bbox, c.cost_giou)

    def __call__(
        self,
        *,
        tasks: Sequence[str],
        answer_logits: torch.Tensor | None,
        answer_ids: torch.Tensor | None,
        has_text: torch.Tensor,
        relevance_logits: torch.Tensor,
        boxes: torch.Tensor,
        target_boxes: Sequence[torch.Tensor],
        has_boxes: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Losses of one batch.

        Args:
            tasks: ``B`` task names.
            answer_logits: ``(B, L, V)`` teacher-forced logits (None when no sample has text).
            answer_ids: ``(B, L)`` answer ids (rows of samples without text are ignored).
            has_text: ``(B,)`` bool, samples with a text target.
            relevance_logits: ``(B, R, 2)``.
            boxes: ``(B, R, 4)`` predicted normalized ``cxcywh``.
            target_boxes: ``B`` tensors ``(k, 4)`` normalized ``cxcywh`` (ignored where not ``has_boxes``).
            has_boxes: ``(B,)`` bool, samples with a box target.

        Returns:
            ``"loss"`` (the weighted total), ``"loss_text/<task>"`` per task present (unweighted mean over
            its samples), and ``"loss_ce"``, ``"loss_bbox"``, ``"loss_giou"`` when box samples exist.
        """
        c = self.config
        total = relevance_logits.new_zeros((), dtype=torch.float32)
        out: dict[str, torch.Tensor] = {}
        if answer_logits is not None and answer_ids is not None and bool(has_text.any()):
            nll = text_nll(answer_logits, answer_ids, ignore_padding=c.ignore_padding)
            for task in sorted({t for t, h in zip(tasks, has_text.tolist()) if h}):
                sel = torch.tensor([t == task and bool(h) for t, h in zip(tasks, has_text.tolist())])
                loss = nll[sel.to(nll.device)].mean()
                out[f"loss_text/{task}"] = loss
                total = total + c.text_weights.get(task, 1.0) * loss
        if bool(has_boxes.any()):
            idx = has_boxes.nonzero().flatten()
            loc = localization_losses(
                relevance_logits[idx],
                boxes[idx],
                [target_boxes[i] for i in idx.tolist()],
                self.matcher,
                c.no_object_weight,
            )
            out.update(loc)
            total = total + c.weight_ce * loc["loss_ce"] + c.weight_bbox * loc["loss_bbox"]
            total = total + c.weight_giou * loc["loss_giou"]
        out["loss"] = total
        return out

"""What scores each task: the evaluation table of every model family.

:func:`evaluation_table` maps each task of a family to its :class:`MetricSpec` s: a torchmetrics factory,
the update that feeds it a batch of :class:`EvalItem` s (predictions and targets in original-image pixels,
boxes xyxy), and optionally a per-sample score for records. :func:`answer_well_formed` checks that a
generated answer has the shape its task expects. :class:`~lightning_gpv.metrics.evaluation.Evaluator`
runs the table per loader.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchvision.ops import box_iou

from lightning_gpv.geometry import Mask
from lightning_gpv.metrics.captioning import CIDErD
from lightning_gpv.metrics.classification import ClassificationAccuracy, NLVRScore
from lightning_gpv.metrics.grounding import GRECScore, LocalizationAP, ReferringAccuracy, query_ap
from lightning_gpv.metrics.segmentation import CoSegScore, GRESScore, MaskIoU
from lightning_gpv.metrics.vqa import VQAAccuracy, gpv1_vqa_accuracy, vqa_answer_accuracy
from lightning_gpv.tasks.catalogue import Family, Task
from lightning_gpv.tasks.samples import Prediction, Target


@dataclass(frozen=True)
class EvalItem:
    """One scored sample.

    Attributes:
        prediction: The model's answer (boxes and masks in original-image pixels, xyxy).
        target: The ground truth, same conventions.
        image_sizes: ``(height, width)`` of each input image, original pixels.
        metadata: The sample's metadata (NLVR2 ``identifier``, co-segmentation ``group``, COCO-SCE ``sce``).
    """

    prediction: Prediction
    target: Target
    image_sizes: tuple[tuple[int, int], ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


Update = Callable[[Metric, Sequence[EvalItem]], None]
"""Adds a batch of one task's items to a metric."""
Score = Callable[[EvalItem], float]
"""One sample's score, for per-sample records."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of a task.

    Attributes:
        name: Log name of a metric that returns one value; ``None`` for one that returns a dict, whose keys
            are the log names (``MaskIoU``: ``mIoU``, ``oIoU``).
        factory: Builds a fresh metric.
        update: Adds items to it.
        score: Per-sample score written into records (``None``: corpus-level only, e.g. CIDEr-D).
    """

    name: str | None
    factory: Callable[[], Metric]
    update: Update
    score: Score | None = None


EvaluationTable = Mapping[Task, tuple[MetricSpec, ...]]


# ------------------------------------------------------------------------------------------------------
# Updates and per-sample scores


def _ids(items: Sequence[EvalItem]) -> list[str]:
    return [it.prediction.sample_id for it in items]


def _references(target: Target) -> list[str]:
    return list(target.answers) or ([target.text] if target.text else [""])


def _update_text(metric: Metric, items: Sequence[EvalItem]) -> None:
    """Free text against every reference (VQA's ten answers, all captions)."""
    metric.update(
        [it.prediction.text for it in items], [_references(it.target) for it in items], ids=_ids(items)
    )


def _update_class(metric: Metric, items: Sequence[EvalItem]) -> None:
    metric.update(
        [it.prediction.text for it in items], [it.target.text or "" for it in items], ids=_ids(items)
    )


def _update_ranked_boxes(metric: Metric, items: Sequence[EvalItem]) -> None:
    """Ranked boxes with scores against all target boxes of the query (per-query AP)."""
    boxes = [torch.from_numpy(it.prediction.boxes) for it in items]
    scores = [
        torch.from_numpy(it.prediction.scores)
        if it.prediction.scores is not None
        else torch.linspace(1.0, 0.0, len(it.prediction.boxes))  # ranked, best first
        for it in items
    ]
    metric.update(boxes, scores, [torch.from_numpy(it.target.boxes) for it in items], ids=_ids(items))


def _first_box(boxes: np.ndarray) -> np.ndarray:
    return boxes[0] if len(boxes) else np.zeros(4, np.float32)


def _update_top_box(metric: Metric, items: Sequence[EvalItem]) -> None:
    """Top-1 box against the target box; no parsed box counts as a miss (an empty box)."""
    pred = torch.tensor(np.stack([_first_box(it.prediction.boxes) for it in items]))
    target = torch.tensor(np.stack([_first_box(it.target.boxes) for it in items]))
    metric.update(pred, target, ids=_ids(items))


def _update_box_sets(metric: Metric, items: Sequence[EvalItem]) -> None:
    metric.update([torch.from_numpy(it.prediction.boxes) for it in items],
                  [torch.from_numpy(it.target.boxes) for it in items], ids=_ids(items))  # fmt: skip


def _union(masks: Sequence[Mask], size: tuple[int, int]) -> torch.Tensor | None:
    """Union of masks as an ``(H, W)`` bool tensor, or ``None`` when there is none."""
    if not masks:
        return None
    out = np.zeros(size, dtype=bool)
    for mask in masks:
        out |= mask.to_array()
    return torch.from_numpy(out)


def _update_union_masks(metric: Metric, items: Sequence[EvalItem]) -> None:
    """Union of the predicted masks against the union of the target masks, at the original resolution."""
    metric.update([_union(it.prediction.masks, it.image_sizes[0]) for it in items],
                  [_union(it.target.masks, it.image_sizes[0]) for it in items], ids=_ids(items))  # fmt: skip


def _update_nlvr(metric: Metric, items: Sequence[EvalItem]) -> None:
    identifiers = []
    for it in items:
        identifier = str(it.metadata.get("identifier", ""))
        if len(identifier.split("-")) != 4:  # not an NLVR2 identifier: one sentence group per sample
            identifier = "x-" + it.prediction.sample_id.replace("-", "_") + "-0-0"
        identifiers.append(identifier)
    answers = [it.prediction.text.strip().rstrip(".") for it in items]
    metric.update(answers, [it.target.text or "" for it in items], identifiers)


def _per_image(masks: Sequence[Mask], owners: np.ndarray | None, image: int, size: tuple[int, int]) -> Any:
    owners = owners if owners is not None else np.zeros(len(masks), np.int64)
    return _union([m for m, o in zip(masks, owners) if int(o) == image], size)


def _update_coseg(metric: Metric, items: Sequence[EvalItem]) -> None:
    """One row per input image; CoSeg groups by object class, AttCoSeg by sample."""
    pred_masks, target_masks, groups, ids = [], [], [], []
    for it in items:
        p, t = it.prediction, it.target
        group = str(it.metadata.get("group", it.metadata.get("group_id", p.sample_id)))
        for i, size in enumerate(it.image_sizes):
            pred_masks.append(_per_image(p.masks, p.mask_image, i, size))
            target = _per_image(t.masks, t.mask_image, i, size)
            target_masks.append(target if target is not None else torch.zeros(size, dtype=torch.bool))
            groups.append(group)
            ids.append(f"{p.sample_id}/{i}")
    metric.update(pred_masks, target_masks, groups, ids=ids)


def _score_vqa(item: EvalItem) -> float:
    return vqa_answer_accuracy(item.prediction.text, _references(item.target))


def _score_vqa_gpv1(item: EvalItem) -> float:
    return gpv1_vqa_accuracy(item.prediction.text, _references(item.target))


def _score_class(item: EvalItem) -> float:
    return float(item.prediction.text.lower().strip() == (item.target.text or "").lower().strip())


def _score_top_box(item: EvalItem) -> float:
    """IoU of the top-1 box with the target box (0 without a predicted box)."""
    if not len(item.prediction.boxes) or not len(item.target.boxes):
        return 0.0
    pred = torch.from_numpy(item.prediction.boxes[:1]).double()
    return float(box_iou(pred, torch.from_numpy(item.target.boxes[:1]).double())[0, 0])


def _score_ranked_boxes(item: EvalItem) -> float:
    """Per-query AP@0.5 of the ranked boxes (0 without target boxes)."""
    pred, target = item.prediction, item.target
    if not len(target.boxes) or not len(pred.boxes):
        return 0.0
    iou = box_iou(torch.from_numpy(pred.boxes).double(), torch.from_numpy(target.boxes).double())
    scores = pred.scores if pred.scores is not None else np.linspace(1.0, 0.0, len(pred.boxes))
    return query_ap(iou, torch.as_tensor(scores, dtype=torch.float64))


def _score_mask_iou(item: EvalItem, empty: float = 0.0) -> float:
    """IoU of the unions of predicted and target masks; ``empty`` when both are empty."""
    size = item.image_sizes[0]
    pred, target = _union(item.prediction.masks, size), _union(item.target.masks, size)
    pred = pred if pred is not None else torch.zeros(size, dtype=torch.bool)
    target = target if target is not None else torch.zeros(size, dtype=torch.bool)
    union = int((pred | target).sum())
    return int((pred & target).sum()) / union if union else empty


def evaluation_table(family: Family, vqa_variant: str = "official") -> dict[Task, tuple[MetricSpec, ...]]:
    """The metrics of every task ``family`` is evaluated on, as its paper reports them.

    GPV-1 scores localization and referring expressions by per-query AP@0.5 over its ranked boxes and
    classification by exact match; VistaLLM scores REC by top-1 Acc@0.5 and segmentation by mask IoU.

    Args:
        family: The model family.
        vqa_variant: ``"official"`` VQA accuracy or GPV-1's lower-case-only ``"gpv1"`` variant.
    """
    vqa_score = _score_vqa_gpv1 if vqa_variant == "gpv1" else _score_vqa
    # partial, not lambda: a module is pickled whole by spawn-based launchers (ddp_spawn).
    vqa = MetricSpec("accuracy", partial(VQAAccuracy, variant=vqa_variant), _update_text, vqa_score)
    cider = MetricSpec("cider", CIDErD, _update_text)
    # The dict-valued metrics log their own keys: ap; mIoU, oIoU; GREC/GRES rates; NLVR2 accuracy and
    # consistency; co-segmentation jaccard and precision.
    if family is Family.GPV1:
        ranked = MetricSpec(None, LocalizationAP, _update_ranked_boxes, _score_ranked_boxes)
        classification = MetricSpec("accuracy", ClassificationAccuracy, _update_class, _score_class)
        return {
            Task.VQA: (vqa,),
            Task.CAPTIONING: (cider,),
            Task.CLASSIFICATION: (classification,),
            Task.LOCALIZATION: (ranked,),
            Task.REC: (ranked,),
        }
    coseg = MetricSpec(None, CoSegScore, _update_coseg)
    gres_score = partial(_score_mask_iou, empty=1.0)  # an empty answer to a no-target expression is right
    return {
        Task.CAPTIONING: (cider,),
        Task.VQA: (vqa,),
        Task.REC: (MetricSpec("acc@0.5", ReferringAccuracy, _update_top_box, _score_top_box),),
        Task.RES: (MetricSpec(None, MaskIoU, _update_union_masks, _score_mask_iou),),
        Task.GREC: (MetricSpec(None, GRECScore, _update_box_sets),),
        Task.GRES: (MetricSpec(None, GRESScore, _update_union_masks, gres_score),),
        Task.NLVR2: (MetricSpec(None, NLVRScore, _update_nlvr),),
        Task.COSEG: (coseg,),
        Task.ATTCOSEG: (coseg,),
    }


def answer_well_formed(prediction: Prediction, num_points: int) -> bool:
    """Whether a generated answer parsed cleanly into what its task expects.

    REC: exactly one box; GREC: any number of boxes; RES, CoSeg, AttCoSeg: at least one mask, each with
    ``num_points`` points; GRES: any number of such masks; AttCoSeg also names two images; other tasks:
    non-empty text. Nothing may have been dropped by the parser.
    """
    if prediction.dropped:
        return False
    task = prediction.task
    masks_ok = all(len(m.polygons[0]) == num_points for m in prediction.masks if m.polygons)
    if task is Task.REC:
        return len(prediction.boxes) == 1
    if task is Task.GREC:
        return True
    if task is Task.GRES:
        return masks_ok
    if task in (Task.RES, Task.COSEG):
        return bool(prediction.masks) and masks_ok
    if task is Task.ATTCOSEG:
        return len(prediction.selected_images) == 2 and len(prediction.masks) == 2 and masks_ok
    return bool(prediction.text.strip())


__all__ = [
    "EvalItem",
    "EvaluationTable",
    "MetricSpec",
    "Score",
    "Update",
    "answer_well_formed",
    "evaluation_table",
]

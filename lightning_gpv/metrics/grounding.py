"""Box grounding metrics: GPV-1 localization AP, REC accuracy, gRefCOCO's GREC score.

All boxes are ``xyxy`` in absolute pixels (``x1 <= x2``, ``y1 <= y2``), one tensor per sample.

Inputs are checked: a box tensor that is not ``(k, 4)``, scores that do not match the boxes, or batches of
different lengths raise ``ValueError``; non-numeric inputs (``None``, strings) raise ``TypeError``. A target
box with a non-finite coordinate raises ``ValueError`` (targets come from the data). A predicted box with a
non-finite coordinate, or a non-finite score (``nan`` and ``+-inf``), is a miss: it overlaps nothing (IoU 0)
and a non-finite score ranks last; see each class for how a miss enters its counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_gpv.geometry.boxes import box_iou, generalized_box_iou
from lightning_gpv.metrics._sync import DedupMetric, SampleIds, check_batch, check_lengths, describe

__all__ = ["GRECScore", "LocalizationAP", "ReferringAccuracy", "query_ap"]


def _as_float(where: str, name: str, value: Any) -> Tensor:
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{where}: {name} must be a numeric tensor, got {describe(value)}")
    try:
        return torch.as_tensor(
            value.detach() if isinstance(value, Tensor) else value, dtype=torch.float64
        ).cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{where}: {name} must be a numeric tensor, got {describe(value)}") from err


def _check_boxes(where: str, name: str, value: Any, rows: str = "k", target: bool = False) -> Tensor:
    """``value`` as a float64 ``(rows, 4)`` tensor (an empty input is ``(0, 4)``); targets must be finite."""
    out = _as_float(where, name, value)
    if out.numel() == 0:
        return out.reshape(0, 4)
    if out.ndim != 2 or out.shape[1] != 4:
        raise ValueError(f"{where}: {name} must be ({rows}, 4), got {tuple(out.shape)}")
    if target:
        bad = ~torch.isfinite(out).all(dim=1)
        if bool(bad.any()):
            row = int(torch.nonzero(bad)[0])
            raise ValueError(f"{where}: {name} must be finite, got {out[row].tolist()} in row {row}")
    return out


def _check_scores(where: str, name: str, value: Any, n: int) -> Tensor:
    out = _as_float(where, name, value)
    if out.ndim > 1 or out.numel() != n:
        raise ValueError(f"{where}: {name} must be ({n},) (one score per box), got {tuple(out.shape)}")
    return out.reshape(-1)


def _finite_rows(boxes: Tensor) -> Tensor:
    return torch.isfinite(boxes).all(dim=1)


def _paired_iou(a: Tensor, b: Tensor, generalized: bool = False) -> Tensor:
    """IoU (or GIoU) of ``a[i]`` with ``b[i]``; shapes ``(N, 4)`` -> ``(N,)``."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    wh = (torch.minimum(a[:, 2:], b[:, 2:]) - torch.maximum(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = area_a + area_b - inter
    iou = torch.where(union > 0, inter / torch.where(union > 0, union, 1.0), 0.0)
    if not generalized:
        return iou
    hull_wh = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])).clamp(min=0)
    hull = hull_wh[:, 0] * hull_wh[:, 1]
    return iou - torch.where(hull > 0, (hull - union) / torch.where(hull > 0, hull, 1.0), 0.0)


def _gpv1_legacy_boxes(boxes: Tensor, width: int, height: int) -> Tensor:
    """GPV-1's pixel boxes: the relative top-left ``(x, y, w, h)`` passed to Object-Detection-Metrics is
    read as a *centre*, so every box is shifted by half its size, rounded (half to even) and clipped."""
    x = boxes[:, 0] / width
    y = boxes[:, 1] / height
    w = (boxes[:, 2] - boxes[:, 0]) / width
    h = (boxes[:, 3] - boxes[:, 1]) / height
    x1 = torch.round((2 * x - w) * width / 2)
    y1 = torch.round((2 * y - h) * height / 2)
    x2 = x1 + torch.round(w * width)
    y2 = y1 + torch.round(h * height)
    x1, y1 = x1.clamp(min=0), y1.clamp(min=0)
    x2 = torch.where(x2 >= width, torch.full_like(x2, width - 1), x2)
    y2 = torch.where(y2 >= height, torch.full_like(y2, height - 1), y2)
    return torch.stack([x1, y1, x2, y2], dim=1)


def _pixel_iou(a: Tensor, b: Tensor) -> Tensor:
    """Object-Detection-Metrics' IoU on inclusive integer pixel boxes (+1 in widths and heights)."""
    disjoint = (
        (a[:, None, 0] > b[None, :, 2])
        | (b[None, :, 0] > a[:, None, 2])
        | (a[:, None, 3] < b[None, :, 1])
        | (a[:, None, 1] > b[None, :, 3])
    )
    inter = (
        torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ) * (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1]) + 1)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(disjoint, 0.0, inter / union)


def query_ap(iou: Tensor, scores: Tensor, iou_threshold: float = 0.5) -> float:
    """Every-point interpolated AP of one query (Object-Detection-Metrics' ``GetPascalVOCMetrics``).

    Args:
        iou: ``(k, m)`` IoU of the k predictions with the m >= 1 targets.
        scores: ``(k,)`` prediction scores; ties keep the input order (stable sort). A non-finite score
            ranks last and its prediction is a false positive; a ``nan`` IoU counts as 0.

    Each prediction, in descending score order, is matched to the target it overlaps most (first one on
    ties); it is a true positive when that IoU >= ``iou_threshold`` and the target is not taken yet, and a
    false positive otherwise (duplicates included).
    """
    k, m = iou.shape
    if k == 0:
        return 0.0
    finite = torch.isfinite(scores)
    ranked = torch.where(finite, scores, torch.full_like(scores, -torch.inf))
    order = torch.sort(ranked, descending=True, stable=True).indices
    iou = torch.where(finite[order, None], iou[order].nan_to_num(0.0), 0.0)
    best_iou, best = iou.max(dim=1)
    hit = (best_iou >= iou_threshold) & (best_iou > 0)
    # A hit is a true positive iff it is the first hit on its target (a prediction's best target does not
    # depend on which targets are already taken).
    tp = torch.zeros(k, dtype=torch.bool)
    hit_idx = torch.nonzero(hit).reshape(-1)
    if hit_idx.numel():
        first = torch.full((m,), k, dtype=torch.int64).scatter_reduce(
            0, best[hit_idx], hit_idx, reduce="amin"
        )
        tp[first[first < k]] = True
    tp_cum = torch.cumsum(tp.to(torch.float64), 0)
    fp_cum = torch.cumsum((~tp).to(torch.float64), 0)
    recall = tp_cum / m
    precision = tp_cum / (tp_cum + fp_cum)
    mrec = torch.cat([torch.zeros(1, dtype=torch.float64), recall, torch.ones(1, dtype=torch.float64)])
    mpre = torch.cat([torch.zeros(1, dtype=torch.float64), precision, torch.zeros(1, dtype=torch.float64)])
    mpre = torch.flip(torch.cummax(torch.flip(mpre, [0]), 0).values, [0])
    steps = torch.nonzero(mrec[1:] != mrec[:-1]).reshape(-1) + 1
    return float(((mrec[steps] - mrec[steps - 1]) * mpre[steps]).sum())


class LocalizationAP(DedupMetric):
    """GPV-1's localization metric: per-query AP@0.5 (Object-Detection-Metrics, every-point interpolation,
    greedy by score, duplicates are false positives), averaged over queries; ``compute()`` -> ``{"ap": ...}``.

    GPV-1 scores its 100 ranked boxes per query (one image x category, or one RefCOCO+ sentence) against all
    target boxes of the query. Queries without any target box have an undefined AP (the original code
    divides by zero) and are skipped.

    Box-centre quirk: GPV-1 passes relative top-left ``(x, y, w, h)`` boxes to Object-Detection-Metrics with
    ``CoordinatesType.Relative``, whose conversion reads ``(x, y)`` as the box *centre*; every box (prediction
    and target alike) is therefore shifted left and up by half its size, rounded to integer pixels, clipped
    to the image, and IoUs use the inclusive ``+1`` pixel convention. This metric uses the boxes as given
    (continuous xyxy IoU) unless ``gpv1_box_quirk=True``, which reproduces the quirk and then needs
    ``image_sizes`` in ``update``.

    ``update(pred_boxes, pred_scores, target_boxes, ids=None, image_sizes=None)``: per query a ``(k, 4)`` xyxy
    tensor, ``(k,)`` scores and an ``(m, 4)`` xyxy tensor; ``image_sizes`` are ``(height, width)`` pairs.

    Non-finite values: a predicted box with a non-finite coordinate overlaps nothing (a false positive at its
    rank); a prediction with a non-finite score ranks last and is a false positive. Either can only lower
    the AP. A non-finite target coordinate raises ``ValueError``.
    """

    def __init__(self, iou_threshold: float = 0.5, gpv1_box_quirk: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.iou_threshold = iou_threshold
        self.gpv1_box_quirk = gpv1_box_quirk
        self._add_cat_state("ap", torch.float64)
        self._add_cat_state("valid", torch.uint8)

    def update(
        self,
        pred_boxes: Sequence[Tensor],
        pred_scores: Sequence[Tensor],
        target_boxes: Sequence[Tensor],
        ids: SampleIds = None,
        image_sizes: Sequence[tuple[int, int]] | Tensor | None = None,
    ) -> None:
        """Score a batch of queries."""
        where = "LocalizationAP.update"
        named = (("pred_boxes", pred_boxes), ("pred_scores", pred_scores), ("target_boxes", target_boxes))
        lengths = [(name, check_batch(where, name, value)) for name, value in named]
        if self.gpv1_box_quirk and image_sizes is None:
            raise ValueError(f"{where}: gpv1_box_quirk=True needs image_sizes=(height, width) per query.")
        if image_sizes is not None:
            lengths.append(("image_sizes", check_batch(where, "image_sizes", image_sizes)))
        check_lengths(where, *lengths)
        aps, valid = [], []
        for i, (boxes, scores, targets) in enumerate(zip(pred_boxes, pred_scores, target_boxes)):
            boxes = _check_boxes(where, f"pred_boxes[{i}]", boxes)
            scores = _check_scores(where, f"pred_scores[{i}]", scores, boxes.shape[0])
            targets = _check_boxes(where, f"target_boxes[{i}]", targets, rows="m", target=True)
            finite = _finite_rows(boxes)
            boxes = torch.where(finite[:, None], boxes, 0.0)
            if targets.shape[0] == 0:
                aps.append(0.0)
                valid.append(0)
                continue
            if self.gpv1_box_quirk:
                height, width = (int(v) for v in image_sizes[i])  # type: ignore[index]
                iou = _pixel_iou(
                    _gpv1_legacy_boxes(boxes, width, height), _gpv1_legacy_boxes(targets, width, height)
                )
            else:
                iou = box_iou(boxes, targets)
            iou = torch.where(finite[:, None], iou, 0.0)
            aps.append(query_ap(iou, scores, self.iou_threshold))
            valid.append(1)
        self._append("ap", torch.tensor(aps, dtype=torch.float64))
        self._append("valid", torch.tensor(valid, dtype=torch.uint8))
        self._append_ids(ids, len(aps))

    def compute(self) -> dict[str, Tensor]:
        """``{"ap": mean per-query AP}`` over de-duplicated queries with targets (0 when there are none)."""
        states, keep = self._gather_states(["ap", "valid"])
        ap = states["ap"][keep & states["valid"].bool()]
        return {"ap": ap.mean() if ap.numel() else torch.zeros((), dtype=torch.float64)}


class ReferringAccuracy(DedupMetric):
    """REC Acc@0.5: fraction of expressions whose top-1 box overlaps the target box with IoU >= 0.5.

    Args:
        iou_threshold: 0.5.
        iou_type: ``"iou"`` (default) or ``"giou"`` (MDETR's Precision@1 thresholds generalized IoU).
        strict: use ``>`` instead of ``>=`` (Shikra/VistaLLM ``rec.py``).

    ``update(pred_boxes, target_boxes, ids=None)``: ``(N, 4)`` xyxy tensors (other shapes raise
    ``ValueError``). A predicted box with a non-finite coordinate is a miss (IoU 0); a non-finite target
    coordinate raises ``ValueError``.
    """

    def __init__(
        self,
        iou_threshold: float = 0.5,
        iou_type: Literal["iou", "giou"] = "iou",
        strict: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if iou_type not in ("iou", "giou"):
            raise ValueError(f"Unknown iou_type {iou_type!r}.")
        self.iou_threshold = iou_threshold
        self.iou_type = iou_type
        self.strict = strict
        self._add_cat_state("correct", torch.uint8)

    def update(self, pred_boxes: Tensor, target_boxes: Tensor, ids: SampleIds = None) -> None:
        """Score a batch of ``N`` expressions."""
        where = "ReferringAccuracy.update"
        pred = _check_boxes(where, "pred_boxes", pred_boxes, rows="N")
        target = _check_boxes(where, "target_boxes", target_boxes, rows="N", target=True)
        if pred.shape != target.shape:
            raise ValueError(
                f"{where}: target_boxes must be ({pred.shape[0]}, 4) like pred_boxes, "
                f"got {tuple(target.shape)}"
            )
        finite = _finite_rows(pred)
        iou = _paired_iou(
            torch.where(finite[:, None], pred, 0.0), target, generalized=self.iou_type == "giou"
        )
        correct = iou > self.iou_threshold if self.strict else iou >= self.iou_threshold
        correct &= finite
        self._append("correct", correct.to(torch.uint8))
        self._append_ids(ids, len(pred))

    def compute(self) -> Tensor:
        """Accuracy over de-duplicated expressions (0 when empty)."""
        states, keep = self._gather_states(["correct"])
        correct = states["correct"][keep].to(torch.float64)
        return correct.mean() if correct.numel() else torch.zeros((), dtype=torch.float64)


def grec_sample(
    pred_boxes: Tensor,
    target_boxes: Tensor,
    pred_scores: Tensor | None = None,
    score_threshold: float = 0.7,
    iou_threshold: float = 0.5,
) -> tuple[bool, int]:
    """gRefCOCO's per-sample rule; returns ``(correct, n_kept_predictions)``.

    Predictions with a score below ``score_threshold`` are dropped (when scores are given). A no-target
    sample (no target box) is correct iff no prediction is left. Otherwise predictions and targets are
    matched greedily on generalized IoU (global maximum first, its row and column then zeroed, at most
    ``min(#pred, #target)`` times, stopping at the first maximum below ``iou_threshold``) and the sample is
    correct iff F1 = 1, i.e. every prediction and every target is matched.

    A prediction with a non-finite box coordinate or score is kept whatever its score and matches nothing,
    so its sample is wrong. The count returned includes these predictions.
    """
    where = "grec_sample"
    pred = _check_boxes(where, "pred_boxes", pred_boxes)
    target = _check_boxes(where, "target_boxes", target_boxes, rows="m", target=True)
    scores = None if pred_scores is None else _check_scores(where, "pred_scores", pred_scores, pred.shape[0])
    correct, kept, invalid = _grec_checked(pred, target, scores, score_threshold, iou_threshold)
    return correct, kept + invalid


def _grec_checked(
    pred: Tensor, target: Tensor, scores: Tensor | None, score_threshold: float, iou_threshold: float
) -> tuple[bool, int, int]:
    """:func:`grec_sample` on checked tensors: ``(correct, n_kept_finite, n_non_finite)``."""
    finite = _finite_rows(pred)
    if scores is not None:
        finite &= torch.isfinite(scores)
        pred = pred[finite & (scores >= score_threshold)]
    else:
        pred = pred[finite]
    invalid = int((~finite).sum())
    k, m = pred.shape[0], target.shape[0]
    if m == 0:
        return k == 0 and invalid == 0, k, invalid
    if k == 0:
        return False, 0, invalid
    giou = generalized_box_iou(pred, target)
    tp = 0
    for _ in range(min(k, m)):
        flat = int(torch.argmax(giou))
        if float(giou.reshape(-1)[flat]) < iou_threshold:
            break
        tp += 1
        giou[flat // m, :] = 0.0
        giou[:, flat % m] = 0.0
    return (tp == k and tp == m and invalid == 0), k, invalid


class GRECScore(DedupMetric):
    """Generalized REC (gRefCOCO, ``RefExpEvaluator.summarize``): keys ``"precision"`` (fraction of samples
    with F1 = 1, the paper's Precision@(F1=1, IoU>=0.5)), ``"N_acc"`` (no-target samples predicted empty) and
    ``"T_acc"`` (target samples with at least one prediction). Both accuracies are 0 when undefined.

    VistaLLM's port (``grec.py``) computes F1 inside the matching loop, so a sample whose best GIoU is below
    the threshold silently reuses the previous sample's F1; this metric follows the gRefCOCO rule.

    ``update(pred_boxes, target_boxes, pred_scores=None, ids=None)``: per sample a ``(k, 4)`` xyxy tensor of
    predictions, a ``(m, 4)`` xyxy tensor of targets (``m = 0`` for a no-target expression) and optionally
    ``(k,)`` scores, thresholded at ``score_threshold`` (0.7).

    A prediction with a non-finite box coordinate or score is a miss in every count: it is kept whatever its
    score and matches no target (the sample is wrong; on a no-target sample it is a prediction, against
    ``N_acc``) and it earns no ``T_acc`` credit. A non-finite target coordinate raises ``ValueError``.
    """

    def __init__(self, score_threshold: float = 0.7, iou_threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self._add_cat_state("correct", torch.uint8)
        self._add_cat_state("no_target", torch.uint8)
        self._add_cat_state("predicted", torch.uint8)

    def update(
        self,
        pred_boxes: Sequence[Tensor],
        target_boxes: Sequence[Tensor],
        pred_scores: Sequence[Tensor] | None = None,
        ids: SampleIds = None,
    ) -> None:
        """Score a batch of expressions."""
        where = "GRECScore.update"
        lengths = [("pred_boxes", check_batch(where, "pred_boxes", pred_boxes))]
        lengths.append(("target_boxes", check_batch(where, "target_boxes", target_boxes)))
        if pred_scores is not None:
            lengths.append(("pred_scores", check_batch(where, "pred_scores", pred_scores)))
        check_lengths(where, *lengths)
        correct, no_target, predicted = [], [], []
        for i, (pred, target) in enumerate(zip(pred_boxes, target_boxes)):
            pred = _check_boxes(where, f"pred_boxes[{i}]", pred)
            target = _check_boxes(where, f"target_boxes[{i}]", target, rows="m", target=True)
            scores = None
            if pred_scores is not None:
                scores = _check_scores(where, f"pred_scores[{i}]", pred_scores[i], pred.shape[0])
            ok, kept, invalid = _grec_checked(pred, target, scores, self.score_threshold, self.iou_threshold)
            is_empty = target.shape[0] == 0
            correct.append(int(ok))
            no_target.append(int(is_empty))
            predicted.append(int(kept > 0 or (is_empty and invalid > 0)))
        self._append("correct", torch.tensor(correct, dtype=torch.uint8))
        self._append("no_target", torch.tensor(no_target, dtype=torch.uint8))
        self._append("predicted", torch.tensor(predicted, dtype=torch.uint8))
        self._append_ids(ids, len(correct))

    def compute(self) -> dict[str, Tensor]:
        """``{"precision", "N_acc", "T_acc"}`` over de-duplicated samples."""
        states, keep = self._gather_states(["correct", "no_target", "predicted"])
        correct = states["correct"][keep].bool()
        nt = states["no_target"][keep].bool()
        predicted = states["predicted"][keep].bool()
        return {
            "precision": _fraction(correct.sum(), correct.numel()),
            "N_acc": _fraction((nt & ~predicted).sum(), nt.sum()),
            "T_acc": _fraction((~nt & predicted).sum(), (~nt).sum()),
        }


def _fraction(num: Tensor | int, den: Tensor | int) -> Tensor:
    num_t = torch.as_tensor(num, dtype=torch.float64)
    den_t = torch.as_tensor(den, dtype=torch.float64)
    return num_t / den_t if float(den_t) > 0 else torch.zeros((), dtype=torch.float64)

"""Mask metrics: RES (mIoU / oIoU), GRES (ReLA), co-segmentation (Jaccard / precision).

Masks are bool ``H x W`` tensors; polygons and the resolution rules are described in
:mod:`lightning_gpv.metrics.masks` (``canvas_size``, ``normalized`` and ``rasterizer`` are passed there).

Inputs are checked: batches that are not sequences raise ``TypeError``, batches of different lengths and
malformed masks or polygons raise ``ValueError`` naming the argument. A target polygon with a non-finite
coordinate raises ``ValueError`` (targets come from the data); a predicted polygon with a non-finite
coordinate makes that prediction a miss, scored as described by each class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_gpv.metrics._sync import (
    DedupMetric,
    SampleIds,
    check_batch,
    check_lengths,
    check_strings,
    describe,
    stable_hash,
)
from lightning_gpv.metrics.grounding import _fraction
from lightning_gpv.metrics.masks import MaskLike, Rasterizer, _is_mask, _polygon_list, mask_pair

__all__ = ["CoSegScore", "GRESScore", "MaskIoU"]


class _MaskMetric(DedupMetric):
    def __init__(
        self,
        canvas_size: tuple[int, int] | None = None,
        normalized: bool = False,
        rasterizer: Rasterizer = "coco",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.canvas_size = canvas_size
        self.normalized = normalized
        self.rasterizer: Rasterizer = rasterizer

    def _pairs(
        self, preds: Sequence[MaskLike], targets: Sequence[MaskLike]
    ) -> list[tuple[Tensor | None, Tensor | None, bool]]:
        """``(pred, target, pred_invalid)`` per sample; a non-finite prediction becomes ``None``."""
        where = f"{type(self).__name__}.update"
        n = check_batch(where, "pred_masks", preds)
        check_lengths(where, ("pred_masks", n), ("target_masks", check_batch(where, "target_masks", targets)))
        out = []
        for i, (pred, target) in enumerate(zip(preds, targets)):
            if not _finite_polygons(where, f"target_masks[{i}]", target):
                raise ValueError(f"{where}: target_masks[{i}] has a non-finite polygon coordinate")
            invalid = not _finite_polygons(where, f"pred_masks[{i}]", pred)
            try:
                pair = mask_pair(
                    None if invalid else pred, target, self.canvas_size, self.normalized, self.rasterizer
                )
            except ValueError as err:
                raise ValueError(f"{where}: sample {i}: {err}") from err
            out.append((*pair, invalid))
        return out


def _finite_polygons(where: str, name: str, obj: MaskLike) -> bool:
    """Check the type of a mask-like input; False when it is a polygon input with a non-finite coordinate."""
    if obj is None or _is_mask(obj):
        return True
    if isinstance(obj, (str, bytes)) or not isinstance(obj, (Sequence, Tensor, np.ndarray)):
        raise TypeError(f"{where}: {name} must be a bool H x W mask, polygons or None, got {describe(obj)}")
    try:
        polygons = _polygon_list(obj)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {name}: {err}") from err
    return all(bool(np.isfinite(p).all()) for p in polygons)


def _counts(pred: Tensor | None, target: Tensor | None) -> tuple[int, int, int, int]:
    """``(intersection, union, |pred|, |target|)`` in pixels; ``None`` counts as empty."""
    if pred is None and target is None:
        return 0, 0, 0, 0
    if pred is None:
        n = int(target.sum())  # type: ignore[union-attr]
        return 0, n, 0, n
    if target is None:
        n = int(pred.sum())
        return 0, n, n, 0
    inter = int((pred & target).sum())
    p, t = int(pred.sum()), int(target.sum())
    return inter, p + t - inter, p, t


class MaskIoU(_MaskMetric):
    """Referring-expression segmentation: ``{"mIoU": mean per-sample I/U, "oIoU": sum(I) / sum(U)}``.

    A sample whose union is empty (empty prediction and empty target) has IoU 0, as in ReLA and VistaLLM;
    use :class:`GRESScore` when no-target expressions are part of the benchmark.

    ``update(pred_masks, target_masks, ids=None)``: lists of bool ``H x W`` masks (or polygons / ``None`` for
    an unparsable prediction). A prediction with a non-finite polygon coordinate scores as ``None`` (IoU 0,
    the target area enters the union).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_cat_state("inter", torch.int64)
        self._add_cat_state("union", torch.int64)

    def update(
        self, pred_masks: Sequence[MaskLike], target_masks: Sequence[MaskLike], ids: SampleIds = None
    ) -> None:
        """Accumulate per-sample intersections and unions."""
        counts = [_counts(p, t) for p, t, _ in self._pairs(pred_masks, target_masks)]
        self._append("inter", torch.tensor([c[0] for c in counts], dtype=torch.int64))
        self._append("union", torch.tensor([c[1] for c in counts], dtype=torch.int64))
        self._append_ids(ids, len(counts))

    def compute(self) -> dict[str, Tensor]:
        """``{"mIoU", "oIoU"}`` over de-duplicated samples (0 when empty)."""
        states, keep = self._gather_states(["inter", "union"])
        inter = states["inter"][keep].to(torch.float64)
        union = states["union"][keep].to(torch.float64)
        iou = torch.where(union > 0, inter / union.clamp(min=1), 0.0)
        return {
            "mIoU": iou.mean() if iou.numel() else torch.zeros((), dtype=torch.float64),
            "oIoU": _fraction(inter.sum(), union.sum()),
        }


class GRESScore(_MaskMetric):
    """Generalized RES with ReLA's rules (``ReferEvaluator.evaluate``), as fractions in [0, 1].

    A target that is ``None`` or an empty mask marks a no-target expression; a prediction that is ``None``
    or empty is a "no target" prediction (ReLA's separate no-target head). Per sample:

    * no-target sample: predicted empty -> IoU 1 (TP); otherwise IoU 0 and the predicted area enters the
      cumulative union (FN);
    * target sample: predicted empty -> intersection forced to 0 (FP); otherwise TN; IoU = I/U (0 if U = 0).

    Keys: ``"gIoU"`` (mean IoU over all samples), ``"cIoU"`` (sum I / sum U), ``"N_acc"`` = TP / (TP + FN),
    ``"T_acc"`` = TN / (TN + FP) (both 0 when there is no no-target sample, as in ReLA), and
    ``"Pr@0.7"``, ``"Pr@0.8"``, ``"Pr@0.9"`` (fraction of target samples with IoU >= threshold).
    ReLA compares masks at its 480 x 480 test resolution; VistaLLM rasterizes 1000 x 1000 contours.

    A prediction with a non-finite polygon coordinate is a miss in every count: on a no-target sample it is a
    non-empty prediction (IoU 0, FN; nothing enters the union), on a target sample an empty one (IoU 0, FP).
    """

    thresholds = (0.7, 0.8, 0.9)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name, dtype in (("inter", torch.int64), ("union", torch.int64), ("iou", torch.float64)):
            self._add_cat_state(name, dtype)
        self._add_cat_state("no_target", torch.uint8)
        self._add_cat_state("pred_empty", torch.uint8)

    def update(
        self, pred_masks: Sequence[MaskLike], target_masks: Sequence[MaskLike], ids: SampleIds = None
    ) -> None:
        """Accumulate one row per expression."""
        inter, union, iou, nt, empty = [], [], [], [], []
        for pred, target, invalid in self._pairs(pred_masks, target_masks):
            i, u, p, t = _counts(pred, target)
            no_target, pred_empty = t == 0, p == 0
            if invalid and no_target:
                pred_empty = False
            if no_target:
                i, u, value = 0, (0 if pred_empty else u), (1.0 if pred_empty else 0.0)
            else:
                if pred_empty:
                    i = 0
                value = i / u if u > 0 else 0.0
            inter.append(i)
            union.append(u)
            iou.append(value)
            nt.append(int(no_target))
            empty.append(int(pred_empty))
        self._append("inter", torch.tensor(inter, dtype=torch.int64))
        self._append("union", torch.tensor(union, dtype=torch.int64))
        self._append("iou", torch.tensor(iou, dtype=torch.float64))
        self._append("no_target", torch.tensor(nt, dtype=torch.uint8))
        self._append("pred_empty", torch.tensor(empty, dtype=torch.uint8))
        self._append_ids(ids, len(iou))

    def compute(self) -> dict[str, Tensor]:
        """The GRES dictionary over de-duplicated samples."""
        states, keep = self._gather_states(["inter", "union", "iou", "no_target", "pred_empty"])
        iou = states["iou"][keep]
        nt = states["no_target"][keep].bool()
        empty = states["pred_empty"][keep].bool()
        has_nt = bool(nt.any())
        out = {
            "gIoU": iou.mean() if iou.numel() else torch.zeros((), dtype=torch.float64),
            "cIoU": _fraction(states["inter"][keep].sum(), states["union"][keep].sum()),
            "N_acc": _fraction((nt & empty).sum(), nt.sum())
            if has_nt
            else torch.zeros((), dtype=torch.float64),
            "T_acc": _fraction((~nt & ~empty).sum(), (~nt).sum())
            if has_nt
            else torch.zeros((), dtype=torch.float64),
        }
        target_iou = iou[~nt]
        for thr in self.thresholds:
            out[f"Pr@{thr}"] = _fraction((target_iou >= thr).sum(), target_iou.numel())
        return out


class CoSegScore(_MaskMetric):
    """Co-segmentation Jaccard and precision from per-group pixel histograms (MCANet's protocol).

    For each group (object class / image set) a 2 x 2 foreground/background confusion histogram is summed
    over all pixels of all its images; per group ``J = TP / (TP + FP + FN)`` (foreground IoU) and
    ``P = (TP + TN) / #pixels`` (pixel accuracy). ``compute()`` returns ``{"jaccard", "precision"}``, the
    unweighted means over groups. (Some older papers average per image instead; that is not this metric.)
    A group whose prediction and ground truth are both empty has an undefined Jaccard and is left out of
    the Jaccard mean.

    ``update(pred_masks, target_masks, groups, ids=None)``: bool masks (``None`` prediction = empty) and one
    group name per image. A prediction with a non-finite polygon coordinate gets every pixel wrong (it
    scores as the complement of its target).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in ("group", "tp", "fp", "fn", "tn"):
            self._add_cat_state(name, torch.int64)

    def update(
        self,
        pred_masks: Sequence[MaskLike],
        target_masks: Sequence[MaskLike],
        groups: Sequence[str],
        ids: SampleIds = None,
    ) -> None:
        """Accumulate per-image confusion counts."""
        where = "CoSegScore.update"
        rows = []
        pairs = self._pairs(pred_masks, target_masks)
        groups = check_strings(where, "groups", groups)
        check_lengths(where, ("pred_masks", len(pairs)), ("groups", len(groups)))
        for i, (pred, target, invalid) in enumerate(pairs):
            if target is None:
                raise ValueError(
                    f"{where}: target_masks[{i}] must be a mask (an empty mask for no foreground), got None"
                )
            if invalid:
                pred = ~target
            pred = torch.zeros_like(target) if pred is None else pred
            tp = int((pred & target).sum())
            fp = int((pred & ~target).sum())
            fn = int((~pred & target).sum())
            rows.append((tp, fp, fn, target.numel() - tp - fp - fn))
        self._append("group", torch.tensor([stable_hash(g) for g in groups], dtype=torch.int64))
        for k, name in enumerate(("tp", "fp", "fn", "tn")):
            self._append(name, torch.tensor([r[k] for r in rows], dtype=torch.int64))
        self._append_ids(ids, len(rows))

    def compute(self) -> dict[str, Tensor]:
        """``{"jaccard", "precision"}`` averaged over groups (0 when empty)."""
        states, keep = self._gather_states(["group", "tp", "fp", "fn", "tn"])
        group = states["group"][keep]
        if group.numel() == 0:
            zero = torch.zeros((), dtype=torch.float64)
            return {"jaccard": zero, "precision": zero.clone()}
        _, gid = torch.unique(group, return_inverse=True)
        num_groups = int(gid.max()) + 1

        def per_group(name: str) -> Tensor:
            out = torch.zeros(num_groups, dtype=torch.float64)
            return out.index_add_(0, gid, states[name][keep].to(torch.float64))

        tp, fp, fn, tn = (per_group(n) for n in ("tp", "fp", "fn", "tn"))
        union = tp + fp + fn
        defined = union > 0
        jaccard = (
            (tp[defined] / union[defined]).mean()
            if bool(defined.any())
            else torch.zeros((), dtype=torch.float64)
        )
        precision = ((tp + tn) / (tp + fp + fn + tn).clamp(min=1)).mean()
        return {"jaccard": jaccard, "precision": precision}

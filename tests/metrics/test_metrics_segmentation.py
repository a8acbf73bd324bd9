"""Mask metrics: RES mIoU/oIoU, ReLA's GRES rules, co-segmentation J/P, and the polygon path."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from lightning_gpv.metrics import CoSegScore, GRESScore, MaskIoU, polygons_to_mask


def _mask(h: int, w: int, rects: list[tuple[int, int, int, int]]) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    for y1, x1, y2, x2 in rects:
        m[y1:y2, x1:x2] = True
    return m


def test_mask_iou_hand_example() -> None:
    gt = [_mask(10, 10, [(0, 0, 4, 4)]), _mask(10, 10, [(0, 0, 10, 10)]), _mask(10, 10, [(5, 5, 7, 7)])]
    pred = [_mask(10, 10, [(0, 0, 4, 2)]), _mask(10, 10, [(0, 0, 5, 10)]), None]  # IoU 0.5, 0.5, 0
    metric = MaskIoU()
    metric.update(pred, gt, ids=["a", "b", "c"])
    metric.update(pred[:1], gt[:1], ids=["a"])  # sampler padding
    out = metric.compute()
    assert out["mIoU"].item() == pytest.approx(1 / 3)
    assert out["oIoU"].item() == pytest.approx((8 + 50) / (16 + 100 + 4))


def test_mask_iou_empty_union_counts_zero() -> None:
    metric = MaskIoU()
    metric.update([torch.zeros(3, 3, dtype=torch.bool)], [torch.zeros(3, 3, dtype=torch.bool)])
    assert metric.compute()["mIoU"].item() == 0.0


def _reference_gres(samples: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """ReLA's ReferEvaluator.evaluate restated (pred_nt = empty prediction, gt_nt = empty target)."""
    acc_i = acc_u = acc_iou = 0.0
    pr = {0.7: 0, 0.8: 0, 0.9: 0}
    nt = {"TP": 0, "TN": 0, "FP": 0, "FN": 0}
    total = not_empty = empty = 0
    for pred, gt in samples:
        i, u = np.logical_and(pred, gt).sum(), np.logical_or(pred, gt).sum()
        pred_nt, gt_nt = not pred.any(), not gt.any()
        if gt_nt:
            empty += 1
            if pred_nt:
                nt["TP"] += 1
                acc_iou += 1
            else:
                nt["FN"] += 1
                acc_u += u
        else:
            if pred_nt:
                nt["FP"] += 1
                i = 0
            else:
                nt["TN"] += 1
            this = 0.0 if u == 0 else i / u
            acc_iou += this
            acc_i += i
            acc_u += u
            not_empty += 1
            for t in pr:
                pr[t] += this >= t
        total += 1
    out = {"gIoU": acc_iou / total, "cIoU": acc_i / acc_u}
    out["T_acc"] = nt["TN"] / (nt["TN"] + nt["FP"]) if empty else 0.0
    out["N_acc"] = nt["TP"] / (nt["TP"] + nt["FN"]) if empty else 0.0
    for t in pr:
        out[f"Pr@{t}"] = pr[t] / not_empty
    return out


def test_gres_matches_rela_rules() -> None:
    rng = np.random.default_rng(0)
    samples = []
    for k in range(120):
        gt = np.zeros((16, 16), bool) if k % 5 == 0 else rng.random((16, 16)) < rng.uniform(0.05, 0.6)
        if k % 7 == 0:
            pred = np.zeros((16, 16), bool)
        else:
            pred = gt.copy() if k % 3 == 0 else gt ^ (rng.random((16, 16)) < 0.1)
        samples.append((pred, gt))
    metric = GRESScore()
    for start in range(0, 120, 25):
        chunk = samples[start : start + 25]
        metric.update([torch.from_numpy(p) for p, _ in chunk], [torch.from_numpy(g) for _, g in chunk])
    out = {k: v.item() for k, v in metric.compute().items()}
    assert set(out) == {"gIoU", "cIoU", "N_acc", "T_acc", "Pr@0.7", "Pr@0.8", "Pr@0.9"}
    assert out == pytest.approx(_reference_gres(samples))


def test_gres_none_means_no_target_and_accuracies_default_to_zero() -> None:
    metric = GRESScore()
    metric.update([None, _mask(4, 4, [(0, 0, 2, 2)])], [None, None])
    out = metric.compute()
    assert out["gIoU"].item() == 0.5  # TP counts 1, FN counts 0
    assert out["N_acc"].item() == 0.5
    only_targets = GRESScore()
    only_targets.update([_mask(4, 4, [(0, 0, 2, 2)])], [_mask(4, 4, [(0, 0, 2, 2)])])
    out = only_targets.compute()
    assert out["N_acc"].item() == 0.0 and out["T_acc"].item() == 0.0  # as ReLA without empty samples
    assert out["Pr@0.9"].item() == 1.0


def test_coseg_per_group_histograms() -> None:
    metric = CoSegScore()
    a_gt = [_mask(10, 10, [(0, 0, 5, 10)]), _mask(10, 10, [(0, 0, 10, 10)])]
    a_pred = [_mask(10, 10, [(0, 0, 5, 10)]), _mask(10, 10, [(0, 0, 5, 10)])]
    b_gt, b_pred = [_mask(10, 10, [(0, 0, 2, 2)])], [None]
    metric.update(a_pred + b_pred, a_gt + b_gt, groups=["cat", "cat", "dog"])
    out = metric.compute()
    # cat: TP 100, FP 0, FN 50, TN 50 -> J = 100/150, P = 150/200; dog: TP 0, FN 4, TN 96 -> J = 0, P = 0.96
    assert out["jaccard"].item() == pytest.approx((100 / 150 + 0.0) / 2)
    assert out["precision"].item() == pytest.approx((150 / 200 + 0.96) / 2)
    # Not the per-image average (cat images: J = 1 and 0.5).
    assert out["jaccard"].item() != pytest.approx(((1.0 + 0.5) / 2 + 0.0) / 2)


def test_polygons_coco_and_cv2_rasterizers() -> None:
    square = [[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]
    coco = polygons_to_mask(square, 12, 12)
    expected = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(square, 12, 12))).astype(bool)
    assert torch.equal(coco, torch.from_numpy(expected))
    # VistaLLM: normalized coordinates x 1000, truncated, filled with cv2.drawContours on 1000 x 1000.
    rng = random.Random(0)
    poly = [rng.random() for _ in range(32)]
    ours = polygons_to_mask([poly], 1000, 1000, normalized=True, rasterizer="cv2")
    pts = (torch.tensor(poly) * 1000).to(torch.long).reshape(-1, 1, 2).numpy().astype(np.int32)
    canvas = cv2.drawContours(np.zeros((1000, 1000), np.uint8), (pts,), 0, 255, -1)
    assert torch.equal(ours, torch.from_numpy(canvas > 0))


def test_polygon_resolution_rules() -> None:
    gt = _mask(12, 12, [(2, 2, 8, 8)])
    metric = MaskIoU()
    metric.update([[[2.0, 2.0, 8.0, 2.0, 8.0, 8.0, 2.0, 8.0]]], [gt])  # rasterized on the target's grid
    assert metric.compute()["mIoU"].item() > 0.7
    with pytest.raises(ValueError, match="grid"):
        MaskIoU().update([[[0.1, 0.1, 0.9, 0.1, 0.9, 0.9]]], [[[0.1, 0.1, 0.9, 0.1, 0.9, 0.9]]])
    canvas = MaskIoU(canvas_size=(100, 100), normalized=True)
    canvas.update([[[0.1, 0.1, 0.9, 0.1, 0.9, 0.9]]], [[[0.1, 0.1, 0.9, 0.1, 0.9, 0.9]]])
    assert canvas.compute()["mIoU"].item() == 1.0
    with pytest.raises(ValueError, match="differ"):
        MaskIoU().update([_mask(5, 5, [])], [gt])
    with pytest.raises(ValueError, match="bool or uint8"):  # a 0/1 float mask is not read as coordinates
        MaskIoU().update([gt.float()], [gt])
    points = MaskIoU()
    points.update(
        [torch.tensor([[2.0, 2.0], [8.0, 2.0], [8.0, 8.0], [2.0, 8.0]])], [gt]
    )  # one (P, 2) polygon
    assert points.compute()["mIoU"].item() > 0.7

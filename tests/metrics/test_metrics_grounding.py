"""Localization AP (GPV-1 / Object-Detection-Metrics), REC accuracy and gRefCOCO's GREC score."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import generalized_box_iou as tv_giou

from lightning_gpv.geometry.boxes import box_iou, generalized_box_iou
from lightning_gpv.metrics import GRECScore, LocalizationAP, ReferringAccuracy
from lightning_gpv.metrics.grounding import _gpv1_legacy_boxes


def _boxes(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


# --- A restatement of Object-Detection-Metrics' GetPascalVOCMetrics for one image and one class -----------
def _voc_iou_abs(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    if a[0] > b[2] or b[0] > a[2] or a[3] < b[1] or a[1] > b[3]:
        return 0.0
    inter = (min(a[2], b[2]) - max(a[0], b[0]) + 1) * (min(a[3], b[3]) - max(a[1], b[1]) + 1)
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def _relative_to_abs(size: tuple[int, int], box: tuple[float, float, float, float]) -> tuple[float, ...]:
    w_img, h_img = size
    x_in = round((2 * box[0] - box[2]) * w_img / 2)
    y_in = round((2 * box[1] - box[3]) * h_img / 2)
    x_end = x_in + round(box[2] * w_img)
    y_end = y_in + round(box[3] * h_img)
    return (
        max(x_in, 0),
        max(y_in, 0),
        min(x_end, w_img - 1) if x_end >= w_img else x_end,
        min(y_end, h_img - 1) if y_end >= h_img else y_end,
    )


def _reference_ap(preds: list, scores: list, gts: list, iou_fn) -> float:  # type: ignore[no-untyped-def]
    dets = sorted(zip(scores, range(len(preds))), key=lambda d: d[0], reverse=True)
    seen = [0] * len(gts)
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, (_, idx) in enumerate(dets):
        best, jmax = 2.2250738585072014e-308, -1
        for j, g in enumerate(gts):
            iou = iou_fn(preds[idx], g)
            if iou > best:
                best, jmax = iou, j
        if best >= 0.5 and not seen[jmax]:
            tp[d], seen[jmax] = 1, 1
        else:
            fp[d] = 1
    acc_tp, acc_fp = np.cumsum(tp), np.cumsum(fp)
    rec = list(acc_tp / len(gts))
    prec = list(np.divide(acc_tp, acc_fp + acc_tp))
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    return float(
        sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
    )


def _random_query(rng: random.Random, w: int = 640, h: int = 480) -> tuple[list, list, list]:
    def box() -> list[float]:
        x1, y1 = rng.uniform(0, w - 20), rng.uniform(0, h - 20)
        return [x1, y1, min(w, x1 + rng.uniform(5, 200)), min(h, y1 + rng.uniform(5, 200))]

    gts = [box() for _ in range(rng.randint(1, 3))]
    preds = []
    for _ in range(rng.randint(0, 12)):
        if gts and rng.random() < 0.5:  # jittered copy of a target, so that hits happen
            g = rng.choice(gts)
            preds.append([c + rng.uniform(-15, 15) for c in g])
        else:
            preds.append(box())
    scores = [rng.choice([0.1, 0.5, 0.9, rng.random()]) for _ in preds]  # ties on purpose
    return preds, scores, gts


def test_hand_computed_ap() -> None:
    metric = LocalizationAP()
    gt = _boxes([[0, 0, 10, 10], [20, 20, 30, 30]])
    preds = _boxes([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]])  # TP, duplicate (FP), TP
    metric.update([preds], [torch.tensor([0.9, 0.8, 0.7])], [gt])
    assert metric.compute()["ap"].item() == pytest.approx(0.5 + 0.5 * 2 / 3)
    metric.update([_boxes([])], [torch.zeros(0)], [gt])  # no prediction: AP 0
    metric.update([preds], [torch.ones(3)], [_boxes([])])  # no target: skipped
    assert metric.compute()["ap"].item() == pytest.approx((0.5 + 0.5 * 2 / 3) / 2)


@pytest.mark.parametrize("quirk", [False, True])
def test_matches_object_detection_metrics_restatement(quirk: bool) -> None:
    rng = random.Random(int(quirk))
    metric = LocalizationAP(gpv1_box_quirk=quirk)
    expected = []
    for _ in range(60):
        preds, scores, gts = _random_query(rng)
        if quirk:  # GPV-1 hands the library relative top-left (x, y, w, h) boxes as "centres"
            rel = lambda b: (b[0] / 640, b[1] / 480, (b[2] - b[0]) / 640, (b[3] - b[1]) / 480)  # noqa: E731
            p_abs = [_relative_to_abs((640, 480), rel(b)) for b in preds]
            g_abs = [_relative_to_abs((640, 480), rel(b)) for b in gts]
            expected.append(_reference_ap(p_abs, scores, g_abs, _voc_iou_abs))
        else:
            cont = lambda a, b: box_iou(_boxes([a]), _boxes([b]))[0, 0].item()  # noqa: E731
            expected.append(_reference_ap(preds, scores, gts, cont))
        metric.update([_boxes(preds)], [torch.tensor(scores)], [_boxes(gts)], image_sizes=[(480, 640)])
    assert metric.compute()["ap"].item() == pytest.approx(float(np.mean(expected)), abs=1e-12)


def test_gpv1_box_centre_quirk() -> None:
    # Reference example: GT (0, 0, .5, .5) relative on a 640 x 480 image becomes (0, 0, 160, 120).
    assert _gpv1_legacy_boxes(_boxes([[0, 0, 320, 240]]), 640, 480).tolist() == [[0, 0, 160, 120]]
    with pytest.raises(ValueError):
        LocalizationAP(gpv1_box_quirk=True).update([_boxes([])], [torch.zeros(0)], [_boxes([[0, 0, 1, 1]])])


def test_iou_helpers_match_torchvision() -> None:
    rng = torch.Generator().manual_seed(0)
    a = torch.rand(7, 4, generator=rng, dtype=torch.float64) * 100
    b = torch.rand(5, 4, generator=rng, dtype=torch.float64) * 100
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    assert torch.allclose(box_iou(a, b), tv_box_iou(a, b))
    assert torch.allclose(generalized_box_iou(a, b), tv_giou(a, b))


def test_referring_accuracy_thresholds() -> None:
    pred = _boxes([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    target = _boxes([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 10]])  # IoU 1, exactly 0.5, 0
    metric = ReferringAccuracy()
    metric.update(pred, target, ids=[1, 2, 3])
    metric.update(pred[:1], target[:1], ids=[1])  # repeated by the sampler
    assert metric.compute().item() == pytest.approx(2 / 3)
    strict = ReferringAccuracy(strict=True)
    strict.update(pred, target)
    assert strict.compute().item() == pytest.approx(1 / 3)
    giou = ReferringAccuracy(iou_type="giou")
    giou.update(pred, target)
    assert giou.compute().item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        ReferringAccuracy().update(pred, target[:2])


# --- gRefCOCO's RefExpEvaluator.summarize, restated -------------------------------------------------------
def _reference_grec(samples: list[tuple[list, list, list]]) -> dict[str, float]:
    correct, nt = 0, {"TP": 0, "TN": 0, "FP": 0, "FN": 0}
    for preds, scores, gts in samples:
        kept = [p for p, s in sorted(zip(preds, scores), key=lambda x: -x[1]) if s >= 0.7]
        if not gts:
            nt["FN" if kept else "TP"] += 1
            f1 = 0.0 if kept else 1.0
        else:
            nt["TN" if kept else "FP"] += 1
            tp = 0
            if kept:
                giou = tv_giou(_boxes(kept), _boxes(gts))
                for _ in range(min(len(kept), len(gts))):
                    value, index = torch.topk(giou.flatten(), 1)
                    if value < 0.5:
                        break
                    tp += 1
                    giou[index // len(gts), :] = 0.0
                    giou[:, index % len(gts)] = 0.0
            f1 = 2 * tp / (2 * tp + (len(kept) - tp) + (len(gts) - tp))
        correct += f1 >= 1.0
    return {
        "precision": correct / len(samples),
        "T_acc": nt["TN"] / max(nt["TN"] + nt["FP"], 1),
        "N_acc": nt["TP"] / max(nt["TP"] + nt["FN"], 1),
    }


def test_grec_rules() -> None:
    gt2 = [[0, 0, 10, 10], [20, 20, 30, 30]]
    samples = [
        ([], [], []),  # no target, no prediction: correct (N TP)
        ([[0, 0, 5, 5]], [0.9], []),  # no target, one prediction: wrong (N FN)
        ([[0, 0, 5, 5]], [0.5], []),  # ... dropped by the 0.7 score threshold: correct
        (gt2, [0.9, 0.8], gt2),  # perfect
        (gt2 + [[0, 0, 10, 10]], [0.9, 0.8, 0.75], gt2),  # duplicate: F1 < 1
        (gt2 + [[0, 0, 10, 10]], [0.9, 0.8, 0.1], gt2),  # low-score duplicate dropped
        ([[100, 100, 110, 110]], [0.9], gt2[:1]),  # first best GIoU < 0.5: wrong (VistaLLM's port reuses F1)
        ([], [], gt2[:1]),  # target but nothing predicted (T FP)
    ]
    metric = GRECScore()
    metric.update(
        [_boxes(p) for p, _, _ in samples],
        [_boxes(g) for _, _, g in samples],
        pred_scores=[torch.tensor(s) for _, s, _ in samples],
    )
    out = {k: v.item() for k, v in metric.compute().items()}
    assert out == pytest.approx(_reference_grec(samples))
    assert out["precision"] == pytest.approx(4 / 8)
    assert out["N_acc"] == pytest.approx(2 / 3)
    assert out["T_acc"] == pytest.approx(4 / 5)


def test_grec_random_against_restatement() -> None:
    rng = random.Random(3)
    samples = []
    for _ in range(80):
        preds, scores, gts = _random_query(rng)
        if rng.random() < 0.2:
            gts = []
        samples.append((preds, scores, gts))
    metric = GRECScore()
    metric.update(
        [_boxes(p) for p, _, _ in samples],
        [_boxes(g) for _, _, g in samples],
        pred_scores=[torch.tensor(s) for _, s, _ in samples],
        ids=list(range(80)),
    )
    metric.update(
        [_boxes(samples[0][0])], [_boxes(samples[0][2])], pred_scores=[torch.tensor(samples[0][1])], ids=[0]
    )
    out = {k: v.item() for k, v in metric.compute().items()}
    assert out == pytest.approx(_reference_grec(samples))


def test_grec_without_scores_keeps_every_box() -> None:
    metric = GRECScore()
    metric.update([_boxes([[0, 0, 10, 10]])], [_boxes([[0, 0, 10, 10]])])
    assert metric.compute()["precision"].item() == 1.0
